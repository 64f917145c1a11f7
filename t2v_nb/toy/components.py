"""The toy-shapes model's parts, built from scratch: tokenizer, text encoder, UNet, VAE, scheduler.

Same families as ModelScope text-to-video (CLIP tokenizer + CLIP text encoder, a 3-D UNet over
`[B, C, F, h, w]` latents, the SD-style `AutoencoderKL`, a DDIM scheduler with ModelScope's betas),
only tiny. The one departure is the scheduler's settings (zero terminal SNR, v-prediction, "trailing"
timesteps; see SCHEDULER_CONFIG). The UNet comes in two kinds: ModelScope's `UNet3DConditionModel`
(the shipped model) and, for comparison, AnimateDiff's `UNetMotionModel`. See `t2v_nb/toy/README.md`
for the measurements behind these choices.

The tokenizer keeps CLIP's byte-level BPE but only the merges that the toy's words need, so those
words get exactly the token ids' *strings* the full CLIP tokenizer gives, while any other text still
tokenizes (into smaller pieces) instead of failing.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import re

from . import data

# Every word the captions use.
CAPTION_WORDS = sorted(
    {w for t in data.TEMPLATES for w in t.replace("{color}", "").replace("{shape}", "").replace("{direction}", "").split()}
    | set(data.COLORS) | set(data.SHAPES) | set(data.DIRECTIONS)
)

TEXT_ENCODER_CONFIG = dict(
    hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=64,
)
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=1, norm_num_groups=8,
    block_out_channels=(16, 32, 64, 64),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
# The UNet, in two kinds: ModelScope's `UNet3DConditionModel` ("3d") and AnimateDiff's `UNetMotionModel`
# ("motion", whose temporal attention adds sinusoidal frame positions). Note the 3d trap: its
# `attention_head_dim` is the number of heads.
UNET_CONFIGS = {
    "3d": dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        cross_attention_dim=64, attention_head_dim=4, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    ),
    "motion": dict(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        cross_attention_dim=64, num_attention_heads=4, norm_num_groups=8,
        motion_num_attention_heads=4, motion_max_seq_length=32,
        down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
        up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"),
    ),
}
UNET_CLASSES = {"3d": "UNet3DConditionModel", "motion": "UNetMotionModel"}
# ModelScope's betas (scaled linear, 0.00085-0.012), rescaled to zero terminal SNR, with v-prediction and
# "trailing" timesteps so that sampling starts from pure noise at t = 999 (Lin et al. 2024, "Common Diffusion
# Noise Schedules and Sample Steps are Flawed"). With ModelScope's own schedule (epsilon, alpha_bar_999 =
# 0.0047) the noisiest training latents still carry the clip's layout, so the toy learned to take its direction
# of motion from the starting noise instead of the caption: same seed, same direction, whatever the prompt.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
    rescale_betas_zero_snr=True, timestep_spacing="trailing",
)


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    # CLIP's vocabulary lists the printable bytes first, then the remapped ones, in that order.
    order = printable + [b for b in range(256) if b not in printable]
    return {b: mapping[b] for b in order}


def clip_bpe_file() -> str:
    """Path of CLIP's BPE merges file as shipped in the `open_clip_torch` wheel (found, not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("Building the toy tokenizer needs CLIP's merges file from the open_clip_torch wheel: "
                          "pip install -e \".[train]\" (or pip install --no-deps open_clip_torch)")
    return os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")


def char_tokenizer(max_length: int = 77):
    """A CLIPTokenizer over CLIP's 512 byte symbols (no merges) + the two specials, built offline.

    Any text tokenizes (one token per byte); enough for models with random weights (tests, benchmarks).
    """
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    tok.model_max_length = max_length
    return tok


def _merges_for(words: list[str], ranks: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
    """The merges CLIP's BPE applies to spell each word."""
    used = set()
    for word in words:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda p: ranks.get(p, float("inf")))
            if best not in ranks:
                break
            used.add(best)
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
    return used


def build_tokenizer(words: list[str] = CAPTION_WORDS, bpe_path: str | None = None):
    """A CLIPTokenizer with the 512 byte tokens, the CLIP merges `words` need, and the two specials."""
    from transformers import CLIPTokenizer

    with gzip.open(bpe_path or clip_bpe_file(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")[1:49152 - 256 - 2 + 1]  # the file's header line, then CLIP's merges
    all_merges = [tuple(line.split()) for line in lines]
    ranks = {m: i for i, m in enumerate(all_merges)}
    words = [w.lower() for w in words if re.fullmatch(r"[a-z]+", w.lower())]
    used = _merges_for(words, ranks)
    merges = [m for m in all_merges if m in used]  # CLIP's order = merge priority

    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = CLIPTokenizer(vocab=vocab, merges=list(merges))
    tok.model_max_length = TEXT_ENCODER_CONFIG["max_position_embeddings"]
    return tok


def build_text_encoder(vocab_size: int, seed: int = 0):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab_size, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                            pad_token_id=vocab_size - 1, **TEXT_ENCODER_CONFIG)
    return CLIPTextModel(config)


VAE_SCALE_FACTOR = 8  # the 8x8-latent VAE's (the model shipped until 2026-12-01); the shipped one's is 4


def vae_config(scale_factor: int = VAE_SCALE_FACTOR) -> dict:
    """The toy VAE's config for a spatial `scale_factor` (pixels per latent pixel): 8 (the earlier VAE, 8x8
    latents) or 4 (16x16 latents: one downsampling fewer, the last of the 8 VAE's blocks left out)."""
    if scale_factor not in (4, 8):
        raise ValueError(f"VAE scale factor must be 4 or 8, got {scale_factor!r}.")
    n = int(math.log2(scale_factor)) + 1  # blocks: each but the last halves the resolution
    return {**VAE_CONFIG, "block_out_channels": VAE_CONFIG["block_out_channels"][:n],
            "down_block_types": VAE_CONFIG["down_block_types"][:n], "up_block_types": VAE_CONFIG["up_block_types"][:n]}


def vae_scale_factor(vae) -> int:
    """Pixels per latent pixel of an AutoencoderKL, from its config (as diffusers' pipelines compute it)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def build_vae(seed: int = 0, scale_factor: int = VAE_SCALE_FACTOR):
    import torch
    from diffusers import AutoencoderKL

    config = vae_config(scale_factor)
    torch.manual_seed(seed)
    return AutoencoderKL(**config)


UNET_CHANNELS = 32  # the shipped UNet's width: channels of its first block (the second has twice as many)


# The blocks without attention that a UNet for 16x16 latents puts in front of (down) and behind (up) the 8x8 one's.
_PLAIN_BLOCKS = {"3d": ("DownBlock3D", "UpBlock3D"), "motion": ("DownBlockMotion", "UpBlockMotion")}


def unet_config(kind: str = "3d", channels: int = UNET_CHANNELS, sample_size: int = 8) -> dict:
    """The toy UNet's config. `channels` sets its width (first block; the others have twice as many).

    `sample_size` is the latent size: 8 (a VAE with scale factor 8) or 16 (scale factor 4, the shipped model's). For 16 the
    UNet gets one more level in front, at 16x16, of ResNets and temporal convolutions only (blocks
    (c, 2c, 2c)): attention at 16x16 made a training step 4.5x as slow as the 8x8 UNet's, the plain level
    2.2x (1 CPU thread, batch 32). Its 8x8 and 4x4 levels are as the 8x8 UNet's, but twice as wide at 8x8.
    """
    if kind not in UNET_CONFIGS:
        raise ValueError(f"Unknown UNet kind {kind!r}; expected one of {list(UNET_CONFIGS)}.")
    groups = UNET_CONFIGS[kind]["norm_num_groups"]
    if not isinstance(channels, int) or channels <= 0 or channels % groups:
        raise ValueError(f"UNet channels must be a positive multiple of {groups} (its GroupNorm groups), got {channels!r}.")
    config = {**UNET_CONFIGS[kind], "block_out_channels": (channels, 2 * channels)}
    if sample_size == 16:
        down, up = _PLAIN_BLOCKS[kind]
        config.update(sample_size=16, block_out_channels=(channels, 2 * channels, 2 * channels),
                      down_block_types=(down, *config["down_block_types"]), up_block_types=(*config["up_block_types"], up))
    elif sample_size != 8:
        raise ValueError(f"UNet sample size (latent size) must be 8 or 16, got {sample_size!r}.")
    return config


def build_unet(seed: int = 0, kind: str = "3d", channels: int = UNET_CHANNELS, sample_size: int = 8):
    """A fresh toy UNet (`unet_config`). A training step of the 3d kind at 64 channels took 2.4x the time of
    one at 32 (2 CPU threads, batch 32), with 3.9x the parameters."""
    import torch
    import diffusers

    config = unet_config(kind, channels, sample_size)
    torch.manual_seed(seed)
    return getattr(diffusers, UNET_CLASSES[kind])(**config)


def unet_kind(unet) -> str:
    """"3d" or "motion", from a UNet's class."""
    for kind, cls in UNET_CLASSES.items():
        if type(unet).__name__ == cls:
            return kind
    raise TypeError(f"Not a toy UNet: {type(unet).__name__}")


def warm_start(unet, state_dict: dict) -> list[str]:
    """Copy into `unet` every tensor of `state_dict` with the same name and size (reshaped where only the
    shape differs, as 1x1 convolutions vs linear layers). Returns the names of `unet`'s tensors left as they were.

    Moves what one kind of toy UNet learned in its spatial layers (2-D ResNets, spatial attention) to the
    other kind, whose temporal layers start fresh.
    """
    own = unet.state_dict()
    copied = {name: value.reshape(own[name].shape).to(own[name].dtype) for name, value in state_dict.items()
              if name in own and own[name].numel() == value.numel()}
    unet.load_state_dict({**own, **copied})
    return [n for n in own if n not in copied]


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def save_slow_tokenizer_files(tokenizer, folder: str) -> None:
    """Write `vocab.json` and `merges.txt` next to `tokenizer.json`.

    transformers 5 saves a CLIPTokenizer as `tokenizer.json` only; transformers 4.x's `CLIPTokenizer`
    (the slow class that model_index.json names, as ModelScope's does) reads these two files, so with
    them the folder loads under both.
    """
    import json

    spec = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(spec["vocab"], f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
