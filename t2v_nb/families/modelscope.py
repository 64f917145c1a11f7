"""ModelScope text-to-video (1.7B), its fine-tunes (ZeroScope v2) and the toy-shapes model.

Components as in diffusers' (deprecated) `TextToVideoSDPipeline`: a CLIP tokenizer and text encoder,
`UNet3DConditionModel` (2-D convolutions and attention per frame, plus temporal convolutions and a
temporal transformer over frames), the Stable Diffusion `AutoencoderKL` applied frame by frame. Latents
are [B, 4, F, H/8, W/8]: no temporal compression. The scheduler sees the frames as a batch of images
([B*F, C, h, w]), as that pipeline does, so stochastic samplers draw the same noise.
"""

from __future__ import annotations

import torch

from .base import Family

__all__ = ["ModelScopeFamily"]

CLIP_TOKENIZERS = {("transformers", "CLIPTokenizer"), ("transformers", "CLIPTokenizerFast")}
CLIP_TEXT = {("transformers", "CLIPTextModel")}
SD_VAE = {("diffusers", "AutoencoderKL")}
# ModelScope's settings (16 frames at 8 fps, 25 steps, guidance 9), also AnimateDiff's until it has its own
UNET_SETTINGS = {"num_frames": 16, "num_inference_steps": 25, "guidance_scale": 9.0, "fps": 8.0}


class ModelScopeFamily(Family):
    name = "modelscope"
    pipeline_classes = ("TextToVideoSDPipeline",)
    slots = {"tokenizer": CLIP_TOKENIZERS, "text_encoder": CLIP_TEXT,
             "unet": {("diffusers", "UNet3DConditionModel")}, "vae": SD_VAE}
    temporal_transformer_types = ("TransformerTemporalModel",)

    def default_settings(self) -> dict:
        return {**super().default_settings(), **UNET_SETTINGS}

    def to_scheduler(self, x: torch.Tensor) -> torch.Tensor:
        B, C, F, h, w = x.shape
        return x.permute(0, 2, 1, 3, 4).reshape(B * F, C, h, w)  # frames as images [B*F, C, h, w]

    def from_scheduler(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        B, C, F, h, w = like.shape
        return x.reshape(B, F, C, h, w).permute(0, 2, 1, 3, 4)  # [B, C, F, h, w]

    def default_preview(self):
        vae = self.pipe.vae.config
        sd = vae.latent_channels == 4 and list(vae.block_out_channels) == [128, 256, 512, 512]
        if sd and abs(vae.scaling_factor - 0.18215) < 1e-6:
            from ..preview import sd_vae_preview

            return sd_vae_preview()  # the SD-family VAE of ModelScope / ZeroScope
        return None
