"""AnimateDiff: a Stable Diffusion 1.5 UNet with motion modules inserted between its layers.

Components as in diffusers' `AnimateDiffPipeline`: a CLIP tokenizer and text encoder, a
`UNet2DConditionModel` plus a `MotionAdapter` (combined into a `UNetMotionModel` on load, as that
pipeline does) or a ready `UNetMotionModel`, the SD `AutoencoderKL` applied frame by frame. The UNet
runs each frame as an image, so it takes the text embeddings once per frame; its motion modules add a
sinusoidal frame position to their input and attend over frames, up to `motion_max_seq_length` frames.
The scheduler sees the latents as [B, C, F, h, w], as that pipeline hands them over.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import Family
from .modelscope import CLIP_TEXT, CLIP_TOKENIZERS, SD_VAE, UNET_SETTINGS

__all__ = ["AnimateDiffFamily"]


class AnimateDiffFamily(Family):
    name = "animatediff"
    pipeline_classes = ("AnimateDiffPipeline",)
    slots = {"tokenizer": CLIP_TOKENIZERS, "text_encoder": CLIP_TEXT,
             "unet": {("diffusers", "UNetMotionModel"), ("diffusers", "UNet2DConditionModel")}, "vae": SD_VAE}
    optional_slots = {"motion_adapter": {("diffusers", "MotionAdapter")}}
    temporal_transformer_types = ("AnimateDiffTransformer3D", "TransformerTemporalModel")
    # The motion modules' schedule, as diffusers' AnimateDiff docs set it over a Stable Diffusion base's DDIM config
    assembled_scheduler_config = {"beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "linspace",
                                  "steps_offset": 1}

    @classmethod
    def accepts(cls, classes: dict[str, str]) -> bool:
        if classes.get("unet") == "UNet2DConditionModel" and classes.get("motion_adapter") is None:
            return False  # an image model: Stable Diffusion without motion modules
        return super().accepts(classes)

    @classmethod
    def prepare(cls, parts: dict[str, Any]) -> dict[str, Any]:
        from diffusers import UNet2DConditionModel, UNetMotionModel
        from diffusers.utils import logging

        if isinstance(parts["unet"], UNet2DConditionModel):  # as AnimateDiffPipeline.__init__ does
            level = logging.get_verbosity()
            logging.set_verbosity_error()  # from_unet2d's .to() warns about an empty list of fp32 modules
            try:
                parts = {**parts, "unet": UNetMotionModel.from_unet2d(parts["unet"], parts["motion_adapter"])}
            finally:
                logging.set_verbosity(level)
        return parts

    def default_settings(self) -> dict:
        return {**super().default_settings(), **UNET_SETTINGS}

    @property
    def max_frames(self) -> int | None:
        return self.denoiser.config.get("motion_max_seq_length")

    def call_model(self, x: torch.Tensor, t, embeddings: torch.Tensor) -> torch.Tensor:
        embeddings = embeddings.repeat_interleave(x.shape[2], dim=0)  # [B' * F, L, D]: once per frame
        return self.denoiser(x, t, encoder_hidden_states=embeddings, return_dict=False)[0]

    def default_preview(self):
        from .modelscope import ModelScopeFamily

        return ModelScopeFamily.default_preview(self)
