"""Tiny diffusion transformers with RANDOM weights, built offline, to show how Wan 2.1, CogVideoX and LTX-Video
work on a CPU.

    pipe = tiny_pipeline("wan")          # or "cogvideox", "ltx"
    run = pipe.start("a red ball rolling left", seed=0)

The weights are random: the pictures these pipelines make mean nothing. What is real is everything around
the weights: the component classes of diffusers' `WanPipeline` and `CogVideoXPipeline`, the shapes (latent
channels, the causal VAE's 4x temporal and 8x spatial compression, 2x2 patches), the schedules (Wan: flow
matching with UniPC and shift 3; CogVideoX: v-prediction DDIM with zero terminal SNR and an SNR shift of 3,
trailing timesteps, as in the real models' scheduler configs), the text layout (Wan: 512 positions, the mask,
the embeddings trimmed and zero-padded; CogVideoX: the transformer's `max_text_seq_length` positions, here 32
instead of 226, padded and encoded without a mask) and the attention layouts (Wan: space-time self-attention
with 3-D RoPE plus cross-attention; CogVideoX: one joint text + video self-attention per block).

Defaults: 17 frames at 64x64 -> latents [1, 16, 5, 8, 8] (5 latent frames, 8x8) -> a 4x4 patch grid, so
5 x 4 x 4 = 80 video tokens per layer. About a second per video on one CPU thread.

LTX-Video ("ltx"): LTXPipeline's classes with the real latent layout: a VAE with 128 latent channels and the
real compression (8x in time, 32x in space: one latent voxel per 8 frames x 32 x 32 pixels), a transformer with
patch size 1 (one token per voxel) over 128 T5 positions, flow-matching Euler with a shift that depends on the
token count (base_shift 0.95, max_shift 2.05, shift_terminal 0.1) and a timestep-conditioned (denoising) decoder.
Defaults: 17 frames at 128x192 -> latents [1, 128, 3, 4, 6] -> 72 tokens, 25 fps, guidance 3.

The tokenizers are T5-style, made with the `tokenizers` library (a Unigram model over "\u2581word" pieces and
single characters, a Metaspace pre-tokenizer, `</s>` appended), so no sentencepiece model and no download is
needed: any English text tokenizes, the words below as one piece each.
"""

from __future__ import annotations

import string

import torch

__all__ = ["tiny_pipeline", "t5_tokenizer", "perturb_weights", "FAMILIES", "WORDS", "LTX_TEXT_LENGTH"]

FAMILIES = ("wan", "cogvideox", "ltx")
WORDS = ("a an the of and in on with at red green blue yellow white black circle square triangle ball car dog "
         "cat bird boat moving rolling flying bouncing left right up down fast slow slowly quickly big small "
         "street sky water night sunset").split()
COGVIDEOX_TEXT_LENGTH = 32  # the tiny transformer's max_text_seq_length (226 on CogVideoX-2b)
_DEFAULTS = {"num_frames": 17, "height": 64, "width": 64, "num_inference_steps": 10}
LTX_TEXT_LENGTH = 128  # LTXPipeline's max_sequence_length


def t5_tokenizer(model_max_length: int = 512):
    """A T5-style fast tokenizer: <pad> 0, </s> 1, <unk> 2, then "\u2581word" pieces and single characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -6.0)]
    pieces += [("\u2581" + w, -2.0) for w in WORDS]
    pieces += [(c, -8.0) for c in string.ascii_letters + string.digits + string.punctuation]
    model = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    model.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    model.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    model.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                         special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=model, extra_ids=0, pad_token="<pad>", eos_token="</s>",
                           unk_token="<unk>", model_max_length=model_max_length)


def _t5_config(vocab_size: int) -> dict:
    return dict(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                relative_attention_num_buckets=8, relative_attention_max_distance=32, pad_token_id=0,
                eos_token_id=1, decoder_start_token_id=0, feed_forward_proj="gated-gelu")


@torch.no_grad()
def perturb_weights(*modules: torch.nn.Module, scale: float = 0.05) -> None:
    """Add N(0, scale^2) noise to every weight of `modules`, in order (from torch's global generator).

    diffusers zero-initializes some output layers (and random init leaves many outputs near zero), so a tiny
    random model made as-is does little; after this every part does something."""
    for module in modules:
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def _wan_parts(seed: int) -> dict:
    """WanPipeline's classes: UMT5 (2 layers, 32 wide), a 2-block WanTransformer3DModel (2 heads x 24, patches
    1x2x2, RoPE 8 + 8 + 8 channels per head for frame, row, column), the causal VAE (4x time, 8x space, 16
    latent channels, Wan 2.1's latent mean/std), UniPC in flow_prediction mode with shift 3."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = t5_tokenizer(512)
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(**_t5_config(len(tokenizer))))
    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=24, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=96, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=64)
    perturb_weights(transformer)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000, solver_order=2, predict_x0=True,
                                        solver_type="bh2", lower_order_final=True, final_sigmas_type="zero",
                                        timestep_spacing="linspace")
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "transformer": transformer, "vae": vae,
            "scheduler": scheduler}


def _cogvideox_parts(seed: int) -> dict:
    """CogVideoXPipeline's classes as in CogVideoX-2b: T5 (2 layers, 32 wide), a 2-block
    CogVideoXTransformer3DModel (2 heads x 16, patch 2, sin-cos positions, 32 text positions), the causal VAE
    (4x time, 8x space, 16 latent channels), CogVideoX's DDIM (v-prediction, zero terminal SNR, SNR shift 3)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer(COGVIDEOX_TEXT_LENGTH)
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(**_t5_config(len(tokenizer))))
    torch.manual_seed(seed + 1)
    h, w = _DEFAULTS["height"] // 8, _DEFAULTS["width"] // 8  # the latent size the sin-cos table is made for
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16, time_embed_dim=16,
        text_embed_dim=32, num_layers=2, sample_width=w, sample_height=h, sample_frames=_DEFAULTS["num_frames"],
        patch_size=2, temporal_compression_ratio=4, max_text_seq_length=COGVIDEOX_TEXT_LENGTH,
        use_rotary_positional_embeddings=False)
    perturb_weights(transformer)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8), latent_channels=16, layers_per_block=1, norm_num_groups=2,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        temporal_compression_ratio=4, sample_height=_DEFAULTS["height"], sample_width=_DEFAULTS["width"])
    scheduler = CogVideoXDDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       clip_sample=False, prediction_type="v_prediction",
                                       rescale_betas_zero_snr=True, set_alpha_to_one=True, snr_shift_scale=3.0,
                                       steps_offset=0, timestep_spacing="trailing")
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "transformer": transformer, "vae": vae,
            "scheduler": scheduler}


def ltx_parts(seed: int = 0, channels: int = 128, timestep_conditioning: bool = True) -> dict:
    """LTXPipeline's classes: T5 (2 layers, 32 wide) over 128 positions, a 2-block LTXVideoTransformer3DModel (2
    heads x 8, patch size 1, `channels` in and out), AutoencoderKLLTXVideo with `channels` latent channels (blocks 8
    wide; a 4x4 patchify, then 2x down-samplings to 8x in time, 32x in space), per-channel latents mean and std
    (random here), a timestep-conditioned decoder; flow-matching Euler with dynamic (size-dependent) shifting."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = t5_tokenizer(LTX_TEXT_LENGTH)
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(**_t5_config(len(tokenizer))))
    torch.manual_seed(seed + 1)
    transformer = LTXVideoTransformer3DModel(in_channels=channels, out_channels=channels, num_attention_heads=2,
                                             attention_head_dim=8, cross_attention_dim=16, num_layers=2,
                                             caption_channels=32)
    perturb_weights(transformer)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLLTXVideo(latent_channels=channels, block_out_channels=(8,) * 4,
                                decoder_block_out_channels=(8,) * 4, layers_per_block=(1,) * 5,
                                decoder_layers_per_block=(1,) * 5, timestep_conditioning=timestep_conditioning,
                                decoder_inject_noise=(False,) * 5)
    with torch.no_grad():
        vae.latents_mean.copy_(torch.randn(channels) * 0.1)
        vae.latents_std.copy_(torch.rand(channels) + 0.5)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "transformer": transformer, "vae": vae,
            "scheduler": scheduler}


def tiny_pipeline(family: str = "wan", seed: int = 0):
    """A `StepwisePipeline` of the `family` ("wan", "cogvideox" or "ltx") with tiny random weights, built offline.

    Random weights: the videos are noise-like and mean nothing; the shapes, schedules and attention layouts
    are the real models'. `seed` seeds the weights (the same seed gives the same model). Defaults: 17 frames,
    64x64, 10 steps, guidance 5 (Wan) or 6 (CogVideoX), as on the real models' cards; LTX-Video: 17 frames at
    128x192 (72 tokens), 10 steps, guidance 3, 25 fps (LTXPipeline's guidance and frame rate).

    >>> pipe = tiny_pipeline("wan")
    >>> pipe.start("a red ball", seed=0).latents.shape
    torch.Size([1, 16, 5, 8, 8])
    """
    from ..pipeline import StepwisePipeline

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}, got {family!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, not {type(seed).__name__} ({seed!r}).")
    parts = {"wan": _wan_parts, "cogvideox": _cogvideox_parts, "ltx": ltx_parts}[family](seed)
    for name in ("text_encoder", "transformer", "vae"):
        parts[name].eval().requires_grad_(False)
    settings = {"wan": {"guidance_scale": 5.0, "fps": 16.0}, "cogvideox": {"guidance_scale": 6.0, "fps": 8.0},
                "ltx": {"guidance_scale": 3.0, "fps": 25.0, "height": 128, "width": 192}}
    return StepwisePipeline(**parts, family=family, defaults={**_DEFAULTS, **settings[family]},
                            source={"source": f"t2v_nb.toy.tiny_pipeline({family!r}, seed={seed}): random weights"})
