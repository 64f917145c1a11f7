"""t2v_nb's loop against diffusers' own TextToVideoSDPipeline, on the same tiny components."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import SMALL, tiny_components

import t2v_nb

diffusers = pytest.importorskip("diffusers")
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import TextToVideoSDPipeline
except ImportError:  # deprecated in diffusers; gone in some future release
    TextToVideoSDPipeline = None
needs_reference = pytest.mark.skipif(
    TextToVideoSDPipeline is None,
    reason="this diffusers no longer ships the deprecated TextToVideoSDPipeline, the reference implementation")


def reference_frames(parts, prompt, guidance_scale, negative_prompt=None, seed=0, **kw) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = TextToVideoSDPipeline(**parts)
    ref.set_progress_bar_config(disable=True)
    out = ref(prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale,
              generator=torch.Generator().manual_seed(seed), output_type="np", **kw)
    return out.frames[0]  # [F, H, W, 3]


def ours(parts, prompt, guidance_scale, negative_prompt="", seed=0, **kw) -> np.ndarray:
    pipe = t2v_nb.StepwisePipeline(**parts)
    return pipe.generate(prompt, seed=seed, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
                         progress=False, **kw).frames


@needs_reference
@pytest.mark.parametrize("scheduler", ["ddim", "dpm++", "euler", "lms", "pndm", "unipc", "euler-a", "heun"])
@pytest.mark.parametrize("guidance_scale", [1.0, 7.5])
def test_same_frames_as_diffusers(scheduler, guidance_scale):
    parts = tiny_components(scheduler=scheduler)
    kw = dict(num_frames=3, height=16, width=16, num_inference_steps=3)
    ref = reference_frames(parts, "a red circle moving right", guidance_scale, **kw)
    got = ours(parts, "a red circle moving right", guidance_scale, **kw)
    assert got.shape == ref.shape == (3, 16, 16, 3)
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-5
    assert ref.std() > 1e-3  # the comparison is not between two blank videos


@needs_reference
def test_same_frames_with_negative_prompt_and_v_prediction():
    parts = tiny_components(scheduler="dpm++", prediction_type="v_prediction")
    kw = dict(num_frames=2, height=16, width=16, num_inference_steps=3)
    ref = reference_frames(parts, "a cat", 5.0, negative_prompt="blurry", seed=3, **kw)
    got = ours(parts, "a cat", 5.0, negative_prompt="blurry", seed=3, **kw)
    assert np.abs(got - ref).max() < 1e-5


@needs_reference
def test_same_frames_after_save_and_load(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parts = tiny_components(scheduler="ddim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TextToVideoSDPipeline(**parts).save_pretrained(tmp_path / "model")
    pipe = t2v_nb.load(str(tmp_path / "model"), device="cpu")
    assert type(pipe.unet).__name__ == "UNet3DConditionModel"
    kw = dict(num_frames=3, height=16, width=16, num_inference_steps=3)
    got = pipe.generate("a red circle", seed=1, guidance_scale=7.5, progress=False, **kw).frames
    ref = reference_frames(parts, "a red circle", 7.5, seed=1, **kw)
    assert np.abs(got - ref).max() < 1e-5
