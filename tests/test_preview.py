"""Linear previews, cached step decodes, guidance split into parts."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from conftest import SMALL, tiny_pipe

from t2v_nb.preview import LinearPreview, StepDecoder, fit_linear_preview, guidance_parts, linear_preview


class LinearVAE(torch.nn.Module):
    """A 'VAE' whose decoder is exactly linear per pixel (then upsampled 2x): the fit must recover it."""

    def __init__(self, matrix, bias):
        super().__init__()
        self.config = types.SimpleNamespace(scaling_factor=0.5)
        self.m, self.b = torch.tensor(matrix), torch.tensor(bias)

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def dtype(self):
        return torch.float32

    def decode(self, z):
        rgb01 = torch.einsum("nchw,cd->ndhw", z * self.config.scaling_factor, self.m) + self.b[None, :, None, None]
        out = torch.nn.functional.interpolate(rgb01 * 2 - 1, scale_factor=2, mode="nearest")
        return types.SimpleNamespace(sample=out)


def test_fit_recovers_a_linear_decoder():
    rng = np.random.default_rng(0)
    matrix = rng.normal(0, 0.05, (4, 3)).astype(np.float32)
    bias = np.array([0.4, 0.5, 0.6], np.float32)
    latents = torch.randn(3, 4, 2, 5, 5)  # small values keep the decode inside [0, 1] (no clamping)
    fit = fit_linear_preview(LinearVAE(matrix, bias), latents)
    assert np.allclose(fit.matrix, matrix, atol=1e-4) and np.allclose(fit.bias, bias, atol=1e-4)
    images = fit(latents)  # [N, F, h, w, 3]
    assert images.shape == (3, 2, 5, 5, 3) and images.dtype == np.float32


class TwoRegimeVAE(LinearVAE):
    """Linear, but with a different map where latent channel 0 is above 1 (the 'subject') than elsewhere."""

    def __init__(self, matrix, bias, subject_matrix):
        super().__init__(matrix, bias)
        self.subject = LinearVAE(subject_matrix, bias)

    def decode(self, z):
        inside = torch.nn.functional.interpolate((z[:, :1] * self.config.scaling_factor > 1).float(), scale_factor=2)
        out = inside * self.subject.decode(z).sample + (1 - inside) * super().decode(z).sample
        return types.SimpleNamespace(sample=out)


def test_foreground_weighting_fits_the_subject_not_the_background():
    """Frames that are mostly background with a small subject that decodes by another map: the weighted fit
    gives the subject's colours more truly than the plain fit, which spends itself on the background."""
    bias = np.array([0.1, 0.1, 0.1], np.float32)
    vae = TwoRegimeVAE(np.full((4, 3), 0.02, np.float32), bias,
                       np.array([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [0.0, 0.0, 0.3], [0.0, 0.1, 0.1]], np.float32))
    g = torch.Generator().manual_seed(0)
    latents = 0.3 * torch.randn(16, 4, 1, 16, 16, generator=g)  # [N, C, F, h, w] (scaled): background
    subject = torch.rand(16, 4, 1, 2, 2, generator=g) + torch.tensor([2.5, 0, 0, 0])[:, None, None, None]
    latents[:, :, :, 3:5, 3:5] = subject  # a 2x2 subject per frame, channel 0 in [2.5, 3.5]
    truth = vae.subject.decode(subject[:, :, 0] / 0.5).sample / 2 + 0.5  # [N, 3, 4, 4]
    truth = torch.nn.functional.avg_pool2d(truth, 2).permute(0, 2, 3, 1).numpy()  # [N, 2, 2, 3]
    errors = {}
    for fg in (0.0, 30.0):
        fit = fit_linear_preview(vae, latents, foreground=fg)
        errors[fg] = np.abs(fit(subject)[:, 0] - truth).mean()
    assert errors[30.0] < 0.5 * errors[0.0], errors


def test_fitting_with_latent_noise_reads_noisy_latents_better():
    """Sampled latents can keep noise that the decoder ignores. Fitted on noisy copies of the latents, the
    factors give smaller weights to the channels that carry little colour, so on noisy latents their colours
    come closer to the clean decode than those of the plain fit (which is exact only on clean latents)."""
    matrix = np.array([[0.1, 0.05, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1], [0.1, 0.1, 0.1]], np.float32)
    vae = LinearVAE(matrix, np.array([0.5, 0.5, 0.5], np.float32))
    g = torch.Generator().manual_seed(0)
    spread = torch.tensor([1.0, 0.2, 0.2, 0.2])[None, :, None, None, None]  # channel 0 holds most of the colour
    latents = spread * torch.randn(8, 4, 2, 8, 8, generator=g)  # [N, C, F, h, w] (scaled)
    test = spread * torch.randn(8, 4, 2, 8, 8, generator=g)
    truth = LinearPreview(matrix, vae.b.numpy())(test)  # the decode averaged to the latent grid
    noisy = test + 0.5 * torch.randn(test.shape, generator=g)
    plain = fit_linear_preview(vae, latents)
    robust = fit_linear_preview(vae, latents, latent_noise=0.5)
    assert np.allclose(plain(test), truth, atol=1e-3)  # the plain fit is exact on clean latents
    errors = {name: np.abs(fit(noisy) - truth).mean() for name, fit in (("plain", plain), ("robust", robust))}
    assert errors["robust"] < 0.7 * errors["plain"], errors
    assert np.abs(robust.matrix[1:3]).max() < 0.5 * np.abs(matrix[1:3]).max()  # the weak channels shrink
    with pytest.raises(ValueError, match="latent_noise"):
        fit_linear_preview(vae, latents, latent_noise=-1.0)


def test_linear_preview_save_load(tmp_path):
    p = LinearPreview(np.eye(4, 3, dtype=np.float32), np.zeros(3, np.float32), "test")
    p.save(tmp_path / "p.json")
    q = LinearPreview.load(tmp_path / "p.json")
    assert np.array_equal(p.matrix, q.matrix) and q.source == "test"


def test_step_decoder_caches_and_matches_full_decode():
    pipe = tiny_pipe()
    run = pipe.start("a", **SMALL).finish(progress=False)
    dec = StepDecoder(run, chunk_size=1)
    a = dec(2)
    assert a.shape == (3, 16, 16, 3) and dec.decodes == 1
    for _ in range(3):
        dec(2)
        dec(0)
    assert dec.decodes == 2  # scrubbing back and forth decoded each step once
    whole = pipe.decode_latents(run.trace.step("step.pred_x0", 2))[0].numpy()
    assert np.abs(a - whole).max() < 1e-5  # chunked by frames = all at once
    sub = dec(2, frames=[1])
    assert np.abs(sub[0] - whole[1]).max() < 1e-5


def test_linear_preview_of_a_run():
    pipe = tiny_pipe()
    run = pipe.start("a", **SMALL).finish(progress=False)
    with pytest.raises(ValueError, match="fit_linear_preview"):
        linear_preview(run)
    pipe.preview = LinearPreview(np.full((4, 3), 0.1, np.float32), np.full(3, 0.5, np.float32))
    assert linear_preview(run).shape == (3, 3, 8, 8, 3)  # [S, F, h, w, 3]
    assert linear_preview(run, step=1).shape == (3, 8, 8, 3)


def test_guidance_parts_recombine():
    pipe = tiny_pipe(scheduler="dpm++")
    run = pipe.start("a red circle", **SMALL).finish(progress=False)
    g = run.params["guidance_scale"]
    for space in ("noise", "x0"):
        parts = guidance_parts(run, 1, space=space)
        assert set(parts) == {"uncond", "text", "difference", "guided"}
        assert torch.allclose(parts["uncond"] + g * parts["difference"], parts["guided"], atol=1e-4)
    assert torch.allclose(guidance_parts(run, 1)["guided"], run.trace.step("step.pred_x0", 1), atol=1e-4)
    no_cfg = pipe.start("a", guidance_scale=1.0, **{k: v for k, v in SMALL.items()}).finish(progress=False)
    with pytest.raises(ValueError, match="no guidance"):
        guidance_parts(no_cfg, 0)


def test_the_familys_fit_equals_fit_linear_preview_for_a_2d_vae():
    pipe = tiny_pipe()
    latents = torch.randn(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a, b = pipe.family.fit_preview(latents), fit_linear_preview(pipe.vae, latents)
    np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-4)
    np.testing.assert_allclose(a.bias, b.bias, atol=1e-4)
