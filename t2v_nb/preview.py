"""Cheap latent -> RGB previews, and what they are fitted on.

A VAE decoder is a deep network, but its output colours are, to a first approximation, a linear
function of the latent channels at each position. `fit_linear_preview` finds that function (a
[C, 3] matrix and a bias) by least squares against the VAE's own decodes, so a preview of every frame
of every step costs one small matrix product instead of a decoder pass.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

__all__ = ["LinearPreview", "fit_linear_preview"]


@dataclasses.dataclass
class LinearPreview:
    """RGB ~= latents @ matrix + bias, per latent pixel. matrix [C, 3], bias [3], for scaled latents."""

    matrix: np.ndarray  # [C, 3]
    bias: np.ndarray  # [3]
    source: str = ""  # what it was fitted on

    def __call__(self, latents) -> np.ndarray:
        """[..., C, F, h, w] (scaled) latents -> float32 [..., F, h, w, 3] in [0, 1]."""
        z = torch.as_tensor(latents).detach().float().cpu().numpy()
        z = np.moveaxis(z, -4, -1)  # [..., F, h, w, C]
        return np.clip(z @ self.matrix + self.bias, 0.0, 1.0).astype(np.float32)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump({"matrix": self.matrix.tolist(), "bias": self.bias.tolist(), "source": self.source}, f, indent=1)

    @classmethod
    def load(cls, path: str) -> "LinearPreview":
        with open(path) as f:
            d = json.load(f)
        return cls(np.asarray(d["matrix"], np.float32), np.asarray(d["bias"], np.float32), d.get("source", ""))


@torch.no_grad()
def fit_linear_preview(vae, latents: torch.Tensor, source: str = "") -> LinearPreview:
    """Fit a LinearPreview for `vae` on its own decodes of `latents` ([N, C, F, h, w], scaled).

    Each decoded frame is averaged down to the latent grid (one RGB value per latent pixel), then
    least squares finds the [C, 3] matrix and bias that best map latents to those colours.
    """
    N, C, F, h, w = latents.shape
    z = latents.permute(0, 2, 1, 3, 4).reshape(N * F, C, h, w)  # [N*F, C, h, w]
    images = vae.decode((z / vae.config.scaling_factor).to(vae.device, vae.dtype)).sample.float().cpu()
    images = (images / 2 + 0.5).clamp(0, 1)  # [N*F, 3, H, W]
    images = torch.nn.functional.adaptive_avg_pool2d(images, (h, w))  # [N*F, 3, h, w]
    X = z.float().cpu().permute(0, 2, 3, 1).reshape(-1, C).numpy()  # [P, C]
    Y = images.permute(0, 2, 3, 1).reshape(-1, 3).numpy()  # [P, 3]
    X1 = np.concatenate([X, np.ones((len(X), 1), np.float32)], axis=1)
    sol, *_ = np.linalg.lstsq(X1, Y, rcond=None)  # [C + 1, 3]
    return LinearPreview(sol[:C].astype(np.float32), sol[C].astype(np.float32), source)
