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

__all__ = ["ModelScopeFamily", "sd_vae_preview"]

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
            return sd_vae_preview()  # the SD-family VAE of ModelScope / ZeroScope
        return None


def sd_vae_preview():
    """Factors for the Stable-Diffusion-family VAE (ModelScope and ZeroScope use it), on scaled latents.

    These are ComfyUI's published SD1.5 `latent_rgb_factors` (which map to [-1, 1]), rescaled to
    [0, 1] — a known reference, not fitted by t2v_nb. Refit them for a model with
    `fit_linear_preview(pipe.vae, latents)` on a GPU.
    """
    import numpy as np

    from ..preview import LinearPreview

    to_pm1 = np.array([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
                       [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]], np.float32)
    return LinearPreview(to_pm1 / 2, np.full(3, 0.5, np.float32), "ComfyUI SD1.5 latent_rgb_factors (reference)")
