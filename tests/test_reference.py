"""t2v_nb's loop against diffusers' own TextToVideoSDPipeline, on the same tiny components: with a negative prompt and
v-prediction. Every scheduler, and a saved directory, are compared in the family contract suite (test_families.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from conftest import tiny_components

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
def test_same_frames_with_negative_prompt_and_v_prediction():
    parts = tiny_components(scheduler="dpm++", prediction_type="v_prediction")
    kw = dict(num_frames=2, height=16, width=16, num_inference_steps=3)
    ref = reference_frames(parts, "a cat", 5.0, negative_prompt="blurry", seed=3, **kw)
    got = ours(parts, "a cat", 5.0, negative_prompt="blurry", seed=3, **kw)
    assert np.abs(got - ref).max() < 1e-5
