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
    """t2v_nb.toy.tiny's LTX parts with 8 latent channels (the model's layout is 128), and `scheduler`."""
    from t2v_nb.toy.tiny import ltx_parts

    parts = ltx_parts(seed, channels=8, timestep_conditioning=timestep_conditioning)
    for name in ("text_encoder", "transformer", "vae"):
        parts[name].eval().requires_grad_(False)
    return {**parts, "scheduler": make_scheduler(scheduler)}


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
