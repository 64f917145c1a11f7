"""Tiny random Wan 2.1 components (WanPipeline's classes at toy size), built offline, for the contract suite.

The tokenizer is t2v_nb.toy.tiny's T5-style one (no sentencepiece, no hub). The text encoder is a 2-layer
`UMT5EncoderModel`, the transformer a 2-layer `WanTransformer3DModel` (patch (1, 2, 2)), the VAE an `AutoencoderKLWan` with the
real compression (4x in time, 8x in space) but 3 base channels.
"""

from __future__ import annotations

import torch

import t2v_nb
from t2v_nb.toy.tiny import perturb_weights, t5_tokenizer

NAME = "wan"
SCHEDULERS = ("unipc", "euler")
SAVED = {"scheduler": "unipc", "classes": {"transformer": "WanTransformer3DModel", "scheduler": "UniPCMultistepScheduler"},
         "defaults": {"num_frames": 81, "fps": 16.0}}  # WanPipeline's defaults, not a UNet's
SMALL = dict(num_frames=9, height=32, width=32, num_inference_steps=3)  # 3 latent frames of 4x4, 2x2 patches
FLOW_SHIFT = 3.0


def make_scheduler(name: str = "unipc", shift: float = FLOW_SHIFT):
    """UniPC in flow_prediction mode (as the Wan 2.1 repositories configure it) or flow-matching Euler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    if name == "unipc":
        return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                       num_train_timesteps=1000, solver_order=2, predict_x0=True,
                                       solver_type="bh2", lower_order_final=True, final_sigmas_type="zero",
                                       timestep_spacing="linspace")
    if name == "euler":
        return FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=1000)
    from t2v_nb.schedulers import make_scheduler as by_name

    return by_name(name, make_scheduler("unipc", shift))


def components(seed: int = 0, scheduler: str = "unipc", encoder: str = "umt5") -> dict:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    tok = t5_tokenizer(512)
    torch.manual_seed(seed)
    cfg = dict(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8, relative_attention_max_distance=32, pad_token_id=0,
               eos_token_id=1, decoder_start_token_id=0, feed_forward_proj="gated-gelu")
    text_encoder = (UMT5EncoderModel(UMT5Config(**cfg)) if encoder == "umt5" else T5EncoderModel(T5Config(**cfg)))
    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32)
    perturb_weights(transformer, scale=0.05)  # random init leaves the output near zero
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    for m in (text_encoder, transformer, vae):
        m.eval().requires_grad_(False)
    return {"tokenizer": tok, "text_encoder": text_encoder, "transformer": transformer, "vae": vae,
            "scheduler": make_scheduler(scheduler)}


def tiny_pipe(**kw) -> t2v_nb.StepwisePipeline:
    return t2v_nb.StepwisePipeline(**components(**kw))


def reference(parts: dict):
    from diffusers import WanPipeline

    pipe = WanPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_frames(parts: dict, prompt: str, seed: int, guidance_scale: float, negative_prompt=None, **kw):
    out = reference(parts)(prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
                           generator=torch.Generator().manual_seed(seed), output_type="np", **kw)
    return out.frames[0]  # [F, H, W, 3]
