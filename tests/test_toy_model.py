"""The bundled toy-shapes model: what ships, that it loads offline, and what it has learned."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import t2v_nb
from t2v_nb.models import toy_model_dir
from t2v_nb.toy import data, evaluate

WEIGHTS = toy_model_dir()
pytestmark = pytest.mark.skipif(not os.path.isfile(os.path.join(WEIGHTS, "model_index.json")),
                                reason="the toy-shapes weights are not in this checkout (t2v_nb/toy/weights)")


@pytest.fixture(scope="module")
def pipe():
    return t2v_nb.load("toy-shapes")


def test_ships_in_the_diffusers_layout_under_20_mb():
    index = json.load(open(os.path.join(WEIGHTS, "model_index.json")))
    for name in ("tokenizer", "text_encoder", "unet", "vae", "scheduler"):
        assert name in index and os.path.isdir(os.path.join(WEIGHTS, name))
    files = [os.path.join(d, f) for d, _, fs in os.walk(WEIGHTS) for f in fs]
    assert not any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files)  # safetensors only
    assert sum(os.path.getsize(f) for f in files) < 20 * 2**20
    assert os.path.isfile(os.path.join(WEIGHTS, "preview.json"))


def test_loads_offline_with_its_defaults(pipe, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert type(pipe.unet).__name__ == "UNet3DConditionModel"
    assert (pipe.defaults["height"], pipe.defaults["width"], pipe.defaults["num_frames"]) == (64, 64, 8)
    assert pipe.preview is not None
    assert pipe.tokenizer.model_max_length == pipe.text_encoder.config.max_position_embeddings == 77


def test_caption_words_are_whole_clip_tokens(pipe):
    from t2v_nb.toy.components import CAPTION_WORDS

    for word in CAPTION_WORDS:
        assert pipe.tokenizer.tokenize(word) == [word + "</w>"]


def test_generates_finite_frames_and_the_preview_tracks_the_decode(pipe):
    run = pipe.start("a red circle moving right", seed=0).finish(progress=False)
    video = run.decode()
    assert video.frames.shape == (8, 64, 64, 3) and np.isfinite(video.frames).all()
    # The linear preview of the final latents, at latent resolution, against the decoded frames pooled
    # to the same resolution: the preview is a rough but real picture of the video.
    approx = pipe.preview(run.latents)[0]  # [F, 8, 8, 3]
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(video.frames).permute(0, 3, 1, 2), 8)
    pooled = pooled.permute(0, 2, 3, 1).numpy()
    assert np.abs(approx - pooled).mean() < 0.1


def test_diffusers_pipeline_loads_it_and_makes_the_same_video(pipe):
    """The toy keeps ModelScope's classes, so diffusers' own pipeline loads the directory; same seed, same latents."""
    import warnings

    from diffusers import TextToVideoSDPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the pipeline is deprecated
        ref = TextToVideoSDPipeline.from_pretrained(WEIGHTS)
    assert type(ref.unet).__name__ == "UNet3DConditionModel"
    params = dict(num_inference_steps=5, guidance_scale=7.5, height=64, width=64, num_frames=8)
    # DDIM, the scheduler the directory names, on both sides
    ours = pipe.start("a red circle moving right", seed=0, scheduler="ddim", **params).finish(progress=False)
    theirs = ref("a red circle moving right", generator=torch.Generator().manual_seed(0), output_type="latent",
                 **params).frames
    assert torch.allclose(ours.latents.float(), theirs.float(), atol=1e-4)


def test_meets_the_accuracy_targets_on_a_fixed_sample(pipe):
    """Issue 3's targets, joint accuracy >= 85% on seen and >= 65% on held-out combinations (default sampler
    settings), on a fixed sample: every third seen combination and every held-out one, seeds 100 and 101
    (the full evaluation, `python -m t2v_nb.toy.evaluate`, uses seeds 0-2)."""
    clips = data.seen_clips()[::3] + data.held_out_clips()
    report = evaluate.evaluate(lambda prompt, seed: pipe.generate(prompt, seed=seed, progress=False).frames,
                               clips, seeds=(100, 101), progress=False)
    assert report.counts["seen"] == 36 and report.counts["held_out"] == 12
    assert report.accuracy["seen"]["joint"] >= 0.85, report.summary()
    assert report.accuracy["held_out"]["joint"] >= 0.65, report.summary()
