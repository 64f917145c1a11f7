"""Tiny ModelScope-family components (UNet3DConditionModel) for the family contract suite."""

from __future__ import annotations

import warnings

import torch

from conftest import tiny_components

import t2v_nb

NAME = "modelscope"
SCHEDULERS = ("ddim", "dpm++", "euler", "lms", "pndm", "unipc", "euler-a", "heun")
# test_families' directory round trip: the scheduler saved, the classes and defaults t2v_nb.load finds
SAVED = {"scheduler": "ddim", "classes": {"unet": "UNet3DConditionModel", "scheduler": "DDIMScheduler"}}
SMALL = dict(num_frames=3, height=16, width=16, num_inference_steps=3)


def components(seed: int = 0, scheduler: str = "ddim") -> dict:
    return tiny_components(seed=seed, unet_kind="3d", scheduler=scheduler)


def tiny_pipe(**kw) -> t2v_nb.StepwisePipeline:
    return t2v_nb.StepwisePipeline(**components(**kw))


def reference(parts: dict):
    from diffusers import TextToVideoSDPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = TextToVideoSDPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pipeline_frames(pipeline, prompt: str, seed: int, guidance_scale: float, **kw):
    """One video from a diffusers video pipeline, seeded as t2v_nb seeds: float32 [F, H, W, 3]."""
    out = pipeline(prompt, guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed),
                   output_type="np", **kw)
    return out.frames[0]  # [F, H, W, 3]


def reference_frames(parts: dict, prompt: str, seed: int, guidance_scale: float, **kw):
    return pipeline_frames(reference(parts), prompt, seed, guidance_scale, **kw)
