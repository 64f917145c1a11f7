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

__all__ = ["LinearPreview", "fit_linear_preview", "least_squares", "sd_vae_preview", "StepDecoder", "linear_preview", "guidance_parts"]


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


def sd_vae_preview() -> LinearPreview:
    """ComfyUI's published SD1.5 factors for the Stable-Diffusion-family VAE (ModelScope and ZeroScope use it),
    on scaled latents, RGB in [0, 1]: the ModelScope family's (`t2v_nb.families.modelscope.sd_vae_preview`)."""
    from .families.modelscope import sd_vae_preview as factors

    return factors()


def least_squares(X: np.ndarray, Y: np.ndarray, source: str = "", weights: np.ndarray | None = None) -> LinearPreview:
    """The `LinearPreview` that best maps latent pixels X [P, C] to their colours Y [P, 3] (least squares, with a
    bias; `weights` [P] weigh each pixel). Every family's preview fit ends here."""
    C = X.shape[1]
    X1 = np.concatenate([X, np.ones((len(X), 1), np.float32)], axis=1)
    if weights is not None:
        sw = np.sqrt(weights)[:, None]  # [P, 1]: weighted least squares
        X1, Y = X1 * sw, Y * sw
    sol, *_ = np.linalg.lstsq(X1, Y, rcond=None)  # [C + 1, 3]
    return LinearPreview(sol[:C].astype(np.float32), sol[C].astype(np.float32), source)


@torch.no_grad()
def fit_linear_preview(vae, latents: torch.Tensor, source: str = "", foreground: float = 0.0,
                       latent_noise: float = 0.0, seed: int = 0) -> LinearPreview:
    """Fit a LinearPreview for `vae` on its own decodes of `latents` ([N, C, F, h, w], scaled).

    Each decoded frame is averaged down to the latent grid (one RGB value per latent pixel), then
    least squares finds the [C, 3] matrix and bias that best map latents to those colours.

    `foreground` > 0 weights each latent pixel by 1 + foreground * (distance of its colour from its
    frame's median colour): where the frames are mostly plain background (the toy's dark 64x64 frames are
    ~95% background), an unweighted fit spends itself on the background and washes the subject's colours
    out. The weights cannot add what the latents do not hold linearly: see the toy README.

    `latent_noise` > 0 fits the factors to read latents with Gaussian noise of that standard deviation
    added (seeded by `seed`) while the colours they must give are still the decodes of the clean
    latents. Use it where sampled latents keep noise that the decoder ignores (the toy's decoder was
    tuned to ignore noise up to 0.5): least squares then gives the noise-only directions smaller
    weights, and the preview shows less of it as coloured speckle on the background.
    """
    if latent_noise < 0:
        raise ValueError(f"latent_noise must be >= 0, got {latent_noise!r}.")
    N, C, F, h, w = latents.shape
    z = latents.permute(0, 2, 1, 3, 4).reshape(N * F, C, h, w)  # [N*F, C, h, w]
    images = vae.decode((z / vae.config.scaling_factor).to(vae.device, vae.dtype)).sample.float().cpu()
    images = (images / 2 + 0.5).clamp(0, 1)  # [N*F, 3, H, W]
    images = torch.nn.functional.adaptive_avg_pool2d(images, (h, w))  # [N*F, 3, h, w]
    z = z.float().cpu()
    if latent_noise:
        z = z + latent_noise * torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    X = z.permute(0, 2, 3, 1).reshape(-1, C).numpy()  # [P, C]
    Y = images.permute(0, 2, 3, 1).reshape(-1, 3).numpy()  # [P, 3]
    background = images.flatten(2).median(dim=2).values  # [N*F, 3]
    contrast = (images - background[:, :, None, None]).norm(dim=1).reshape(-1).numpy()  # [P]
    return least_squares(X, Y, source, 1.0 + foreground * contrast)


class StepDecoder:
    """Full VAE decodes of a run's recorded steps, cached: scrubbing back and forth decodes each once.

        >>> dec = StepDecoder(run)
        >>> frames = dec(5)                      # pred_x0 of step 5 -> float32 [F, H, W, 3]
        >>> frames = dec(5, "step.latents")      # x_t entering step 5

    Decoding goes `chunk_size` frames at a time (on a T4 a whole 16-frame ModelScope clip at once
    can run out of memory; see `StepwisePipeline.decode_latents`).
    """

    def __init__(self, run, chunk_size: int | None = None, max_items: int = 256):
        self.run, self.chunk_size, self.max_items = run, chunk_size, max_items
        self._cache: dict[tuple[str, int, tuple | None], np.ndarray] = {}
        self.decodes = 0  # how many VAE decodes were done (not served from the cache)

    def __call__(self, step: int, name: str = "step.pred_x0", frames=None) -> np.ndarray:
        key = (name, int(step), None if frames is None else tuple(int(f) for f in frames))
        if key not in self._cache:
            latents = self.run.trace.step(name, int(step))  # [B, C, F, h, w] on the CPU
            pipe = self.run.pipe
            images = pipe.decode_latents(latents.to(pipe.device), frames, self.chunk_size)  # [B, F, H, W, 3]
            if len(self._cache) >= self.max_items:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = images[0].cpu().numpy()
            self.decodes += 1
        return self._cache[key]


def linear_preview(run, name: str = "step.pred_x0", step: int | None = None) -> np.ndarray:
    """The linear latent -> RGB preview of a recorded value: [F, h, w, 3] for one step, [S, F, h, w, 3] for all.

    Uses the factors fitted for the model's VAE (`pipe.preview`); they ship with each preset.
    """
    factors = run.pipe.preview
    if factors is None:
        raise ValueError("This model has no linear preview factors: fit them with pipe.preview = "
                         "pipe.family.fit_preview(latents) (the loop's latents, e.g. run.latents), or for a 2-D VAE "
                         "with t2v_nb.preview.fit_linear_preview(pipe.vae, latents).")
    latents = run.trace[name] if step is None else run.trace.step(name, step)
    out = factors(latents)  # [..., B, F, h, w, 3]
    return out[:, 0] if step is None else out[0]


def guidance_parts(run, step: int, space: str = "x0") -> dict[str, torch.Tensor]:
    """Classifier-free guidance of one step split into its parts, each [B, C, F, h, w] on the CPU.

    Keys: "uncond" (the prediction for the negative prompt), "text" (for the prompt), "difference"
    (text - uncond: what the words add), "guided" (what the step used: uncond + g * difference, or the
text part alone at a step outside the run's `guidance_interval`). With space="x0" each
    noise prediction is turned into the clean latents it implies at this step (what a preview can
    show); with space="noise" they are the raw UNet outputs. Needs the run to record `step.latents`,
    `step.noise_pred_uncond`, `step.noise_pred_text`, `step.noise_pred` (the default recording).
    """
    from .schedulers import pred_x0

    if space not in ("x0", "noise"):
        raise ValueError(f"space must be 'x0' or 'noise', not {space!r}.")
    if not run.guidance:
        raise ValueError("This run has no guidance (guidance_scale == 1): there is no unconditional branch.")
    tr = run.trace
    parts = {"uncond": tr.step("step.noise_pred_uncond", step), "text": tr.step("step.noise_pred_text", step),
             "guided": tr.step("step.noise_pred", step)}
    if space == "x0":
        x = tr.step("step.latents", step)
        t = run.timesteps[step]
        sched = run.scheduler
        parts = {k: pred_x0(sched, None, x, v, t, step).cpu() for k, v in parts.items()}  # on the CPU
    parts["difference"] = parts["text"] - parts["uncond"]
    return parts
