"""The toy-shapes-flow model's parts: Wan 2.1's own classes, tiny, built offline.

Same task as toy-shapes (moving shapes, `t2v_nb.toy.data`), but the diffusion-transformer
generation's parts, as diffusers' `WanPipeline` loads them:

* tokenizer: a T5-style Unigram tokenizer over "\u2581word" pieces (the toy's words, plus single
  letters so any text tokenizes), built with the `tokenizers` library, no sentencepiece, no hub;
* text encoder: `UMT5EncoderModel` (Wan's class), tiny, frozen at its seeded random init;
* VAE: `AutoencoderKLWan`, causal 3-D convolutions, 4x spatial and NO temporal compression
  (`temperal_downsample` all False): 64x64 RGB frames -> 4 x 16 x 16 latents, one latent frame per frame;
* transformer: `WanTransformer3DModel`, patches (1, 2, 2) -> 8 x 8 tokens per frame (one token covers
  8 x 8 pixels), 3-D RoPE;
* scheduler: `FlowMatchEulerDiscreteScheduler` with a shift (rectified flow: x_t = (1 - s) x0 + s noise).

Frame count: 8, as toy-shapes. Two quirks of diffusers' Wan classes at no temporal compression:
`WanPipeline` rounds any `num_frames` with `num_frames % vae_scale_factor_temporal != 1` to
`n // f * f + 1`, which for f = 1 is always n + 1 (ask diffusers for 7 frames to get 8); and the
VAE's encoder reads frames in chunks of 1, 4, 4, ... and drops a partial last chunk (encode 9 frames,
keep the first 8 latent frames: the encoder is causal, so they do not see the 9th).
"""

from __future__ import annotations

import re

from . import data

NUM_FRAMES = 8  # as toy-shapes (see the module docstring for diffusers' rounding)
TEXT_LENGTH = 16  # max_sequence_length: the captions take <= 8 tokens; Wan's real model uses 512
SHIFT = 3.0  # flow shift of the sigma schedule, in training and sampling
SPATIAL = 4  # VAE downsampling: 64x64 frames -> 16x16 latents (the first recipe's 8 gave 8x8; see README_flow)

TEXT_ENCODER_CONFIG = dict(
    d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
    relative_attention_max_distance=16, feed_forward_proj="gated-gelu", dropout_rate=0.0,
    tie_word_embeddings=False, is_encoder_decoder=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)
VAE_CONFIG = dict(
    base_dim=16, z_dim=4, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
    temperal_downsample=[False, False], dropout=0.0, scale_factor_temporal=1, scale_factor_spatial=SPATIAL,
)
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=4, out_channels=4,
    text_dim=64, freq_dim=64, ffn_dim=512, num_layers=4, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64,
)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=SHIFT)


def caption_words() -> list[str]:
    """Every word the toy's captions use."""
    words = set(data.COLORS) | set(data.SHAPES) | set(data.DIRECTIONS)
    for t in data.TEMPLATES:
        words |= {w for w in re.sub(r"\{\w+\}", " ", t).split()}
    return sorted(words)


def build_tokenizer(max_length: int = TEXT_LENGTH):
    """A T5-style tokenizer: Unigram over "\u2581word" pieces, `</s>` appended, pad id 0, eos 1, unk 2.

    Each caption word is one piece; other text falls back to single letters (or `<unk>`).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    words = [("\u2581" + w, -2.0) for w in caption_words()]
    letters = [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    letters += [("\u2581" + c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + [("\u2581", -9.0)]
    tok = Tokenizer(models.Unigram(specials + words + letters, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tok, extra_ids=0, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.model_max_length = max_length
    return fast


def build_text_encoder(vocab_size: int, seed: int = 0):
    """A tiny `UMT5EncoderModel` at a seeded random init (the toy keeps it frozen there)."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    model = UMT5EncoderModel(UMT5Config(vocab_size=vocab_size, **TEXT_ENCODER_CONFIG))
    return model.eval().requires_grad_(False)


def build_vae(seed: int = 0):
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    z = VAE_CONFIG["z_dim"]
    return AutoencoderKLWan(**VAE_CONFIG, latents_mean=[0.0] * z, latents_std=[1.0] * z)


def build_transformer(seed: int = 0):
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**TRANSFORMER_CONFIG)


def build_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG)


def param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())
