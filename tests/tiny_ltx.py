"""Tiny random LTX-Video 0.9 components (LTXPipeline's classes at toy size), built offline, for the contract suite.

The tokenizer is `t2v_nb.toy.tiny.t5_tokenizer` (T5-style, no sentencepiece, no hub) at LTXPipeline's 128
positions; the text encoder a 2-layer `T5EncoderModel`; the transformer a 2-layer `LTXVideoTransformer3DModel`
(patch size 1: one token per latent voxel); the VAE an `AutoencoderKLLTXVideo` with the real compression (8x in
time, 32x in space: a patchify of 4, then three 2x down-samplings), 8 latent channels, a timestep-conditioned
decoder, and random per-channel latents_mean / latents_std (so the normalization is exercised); the scheduler
flow-matching Euler with dynamic shifting (mu from the token count), shift_terminal 0.1.
Sizes: 9 frames at 64x96 -> latents [1, 8, 2, 2, 3] -> 12 tokens; OTHER: 17 frames at 96x64 -> 18 tokens.
"""

from __future__ import annotations

import torch

import t2v_nb

NAME = "ltx"
SCHEDULERS = ("euler",)
SAVED = {"scheduler": "euler",
         "classes": {"transformer": "LTXVideoTransformer3DModel", "scheduler": "FlowMatchEulerDiscreteScheduler"},
         "defaults": {"num_frames": 161, "fps": 25.0}}  # LTXPipeline's defaults
SMALL = dict(num_frames=9, height=64, width=96, num_inference_steps=3)
OTHER = dict(num_frames=17, height=96, width=64, num_inference_steps=4)  # another token count: another shift mu
FPS = 25.0


def make_scheduler(name: str = "euler"):
    from diffusers import FlowMatchEulerDiscreteScheduler

    base = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                           base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)
    if name == "euler":
        return base
    from t2v_nb.schedulers import make_scheduler as by_name

    return by_name(name, base)


def components(seed: int = 0, scheduler: str = "euler", timestep_conditioning: bool = True) -> dict:
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from t2v_nb.toy.tiny import perturb_weights, t5_tokenizer

    tok = t5_tokenizer(model_max_length=128)
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                           num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    torch.manual_seed(seed + 1)
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, num_attention_heads=2,
                                             attention_head_dim=8, cross_attention_dim=16, num_layers=2,
                                             caption_channels=32)
    perturb_weights(transformer, scale=0.05)  # random init leaves the output near zero
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8,) * 4, decoder_block_out_channels=(8,) * 4,
                                layers_per_block=(1,) * 5, decoder_layers_per_block=(1,) * 5,
                                timestep_conditioning=timestep_conditioning, decoder_inject_noise=(False,) * 5)
    with torch.no_grad():
        vae.latents_mean.copy_(torch.randn(8) * 0.1)
        vae.latents_std.copy_(torch.rand(8) + 0.5)
    for m in (text_encoder, transformer, vae):
        m.eval().requires_grad_(False)
    return {"tokenizer": tok, "text_encoder": text_encoder, "transformer": transformer, "vae": vae,
            "scheduler": make_scheduler(scheduler)}


def tiny_pipe(**kw) -> t2v_nb.StepwisePipeline:
    return t2v_nb.StepwisePipeline(**components(**kw), defaults={"fps": FPS})


def reference(parts: dict):
    from diffusers import LTXPipeline

    pipe = LTXPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_frames(parts: dict, prompt: str, seed: int, guidance_scale: float, negative_prompt=None, **kw):
    out = reference(parts)(prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, frame_rate=FPS,
                           generator=torch.Generator().manual_seed(seed), output_type="np", **kw)
    return out.frames[0]  # [F, H, W, 3]
