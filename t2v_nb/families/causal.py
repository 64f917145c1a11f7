"""What the families with a causal video VAE share (Wan 2.1, CogVideoX, LTX-Video): the frame arithmetic and
the whole-clip decode.

A causal VAE encodes video frame 0 alone into latent frame 0, then each next `k` frames into one more latent
frame (k = `temporal_factor`: 4 for Wan and CogVideoX, 8 for LTX-Video). So a clip has F = k (F' - 1) + 1
frames, F' latent frames, and decodes whole: its convolutions carry state from frame to frame.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

__all__ = ["CausalFrames", "decode_clip"]


class CausalFrames:
    """Mixin for a `Family` whose VAE is causal in time, `temporal_factor` frames per latent frame after the first."""

    temporal_factor: int

    def latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.temporal_factor + 1

    def decoded_frames(self, latent_frames: int) -> int:
        return (latent_frames - 1) * self.temporal_factor + 1

    def latent_index(self, frame: int) -> int:
        """The latent frame that video frame `frame` comes from (k = 4: frame 0 -> 0, frames 1-4 -> 1, ...)."""
        return 0 if frame == 0 else (frame - 1) // self.temporal_factor + 1

    def check_frames(self, num_frames: int, model: str) -> None:
        """Raise a ValueError, with the two nearest valid counts, unless `num_frames` is k n + 1 (n >= 0)."""
        k = self.temporal_factor
        if num_frames >= 1 and (num_frames - 1) % k == 0:
            return
        lower = max(1, (num_frames - 1) // k * k + 1)
        hint = f"num_frames={lower} or num_frames={lower + k}"
        raise ValueError(f"num_frames must be {k}k + 1 (1, {1 + k}, {1 + 2 * k}, ...) for {model}: its VAE turns "
                         f"frame 0 alone and then each {k} frames into one latent frame; got {num_frames}; try {hint}.")


def decode_clip(vae, decode: Callable[[], torch.Tensor]) -> torch.Tensor:
    """`decode()`: the whole clip in one causal decode. After a GPU out-of-memory error it runs once more with the
    VAE's spatial tiling on (`vae.enable_tiling()`, which stays on), unless tiling was on already."""
    try:
        return decode()
    except torch.OutOfMemoryError:
        if getattr(vae, "use_tiling", True):
            raise
        torch.cuda.empty_cache()
        warnings.warn("Out of GPU memory decoding the clip; decoding again in tiles (pipe.vae.enable_tiling(), which "
                      "stays on).")
        vae.enable_tiling()
        return decode()
