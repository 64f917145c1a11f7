"""Tiny AnimateDiff components (a Stable Diffusion UNet2DConditionModel + a MotionAdapter) for the contract suite."""

from __future__ import annotations

import torch

from conftest import tiny_components

import t2v_nb
from t2v_nb.toy.tiny import perturb_weights

NAME = "animatediff"
SCHEDULERS = ("ddim", "dpm++", "euler")
SAVED = {"scheduler": "dpm++", "classes": {"unet": "UNetMotionModel", "scheduler": "DPMSolverMultistepScheduler"}}
SMALL = dict(num_frames=3, height=16, width=16, num_inference_steps=3)


def components(seed: int = 0, scheduler: str = "ddim") -> dict:
    from diffusers import MotionAdapter, UNet2DConditionModel

    parts = tiny_components(seed=seed, unet_kind="3d", scheduler=scheduler)  # tokenizer, text encoder, VAE
    torch.manual_seed(seed + 10)
    unet = UNet2DConditionModel(
        sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=24,
        attention_head_dim=4, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    adapter = MotionAdapter(block_out_channels=(16, 32), motion_layers_per_block=1, motion_norm_num_groups=8,
                            motion_num_attention_heads=2, motion_max_seq_length=8)
    perturb_weights(unet, adapter, scale=0.02)  # random init leaves many outputs near zero (motion out layers: 0)
    for m in (unet, adapter):
        m.eval().requires_grad_(False)
    parts["unet"], parts["motion_adapter"] = unet, adapter
    return parts


def tiny_pipe(**kw) -> t2v_nb.StepwisePipeline:
    return t2v_nb.StepwisePipeline(**components(**kw))


def reference(parts: dict):
    from diffusers import AnimateDiffPipeline

    pipe = AnimateDiffPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_frames(parts: dict, prompt: str, seed: int, guidance_scale: float, **kw):
    from tiny_modelscope import pipeline_frames

    return pipeline_frames(reference(parts), prompt, seed, guidance_scale, **kw)
