"""The bundled toy-shapes-flow model (Wan 2.1's classes, flow matching): what ships, that t2v_nb and diffusers'
WanPipeline load it offline and make the same video, and what it has learned (measured figures: toy README_flow)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from t2v_nb.models import toy_model_dir
from t2v_nb.toy import data, evaluate

from conftest import needs_toy, preview_colour_errors, toy_sample

WEIGHTS = toy_model_dir("toy-shapes-flow")
pytestmark = needs_toy("toy-shapes-flow")


@pytest.fixture(scope="module")
def pipe(flow_toy_pipe):
    return flow_toy_pipe


def test_ships_in_wan_pipelines_layout_under_10_mb():
    index = json.load(open(os.path.join(WEIGHTS, "model_index.json")))
    assert index["_class_name"] == "WanPipeline"
    for name in ("tokenizer", "text_encoder", "transformer", "vae", "scheduler"):
        assert name in index and os.path.isdir(os.path.join(WEIGHTS, name))
    files = [os.path.join(d, f) for d, _, fs in os.walk(WEIGHTS) for f in fs]
    assert not any(f.endswith((".bin", ".pt", ".pth", ".ckpt")) for f in files)  # safetensors only
    assert sum(os.path.getsize(f) for f in files) < 10 * 2**20
    assert os.path.isfile(os.path.join(WEIGHTS, "preview.json"))
    assert index["training"]["transformer_steps"] > 0  # the export says how far it was trained


def test_loads_offline_with_its_defaults(pipe, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pipe.family.name == "wan" and pipe.prediction_type == "flow"
    assert type(pipe.transformer).__name__ == "WanTransformer3DModel"
    assert (pipe.defaults["height"], pipe.defaults["width"], pipe.defaults["num_frames"]) == (64, 64, 8)
    assert pipe.family.text_length == 16  # the length it was trained with, not WanPipeline's 512
    assert pipe.family.temporal_factor == 1 and pipe.preview is not None
    run = pipe.start("a red circle moving right", seed=0)
    assert tuple(run.latents.shape) == (1, 4, 8, 16, 16)  # one latent frame per video frame, 4x smaller frames
    assert run.text.embeddings.shape[1] == 16


def test_wan_pipeline_loads_it_and_makes_the_same_video(pipe):
    """diffusers' own WanPipeline, asked for 7 frames (it makes n + 1 with no temporal compression) and
    max_sequence_length 16, gives t2v_nb's frames exactly."""
    from diffusers import WanPipeline

    from t2v_nb.toy.train_flow import generate

    ref = WanPipeline.from_pretrained(WEIGHTS, local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    theirs = generate(ref, "a blue square moving up", 3)
    ours = pipe.generate("a blue square moving up", seed=3, progress=False).frames
    assert ours.shape == theirs.shape == (8, 64, 64, 3)
    assert np.abs(ours - theirs).max() < 1e-5


def test_vae_round_trip_keeps_the_colour(pipe):
    """encode_video -> decode_latents on a rendered clip: the shape comes back in its colour."""
    clip = data.render(data.Clip("blue", "square", "left"), seed=0)  # [F, 64, 64, 3]
    back = pipe.decode_latents(pipe.encode_video(clip))[0].numpy()
    shape = np.abs(clip - clip[:, :1, :1]).sum(-1) > 0.3  # the square's pixels
    assert np.abs(back[shape].mean(0) - np.array(data.COLORS["blue"])).max() < 0.15, back[shape].mean(0)
    assert np.abs(back - clip).mean() < 0.05


def test_linear_preview_is_colour_true_on_the_shape(pipe):
    """The flow toy's VAE was trained with a linear colour read-out, so its linear preview shows each colour."""
    wrong = preview_colour_errors(pipe)
    assert not wrong, "\n".join(wrong)


SAMPLE, SAMPLE_SEED = toy_sample()


@pytest.mark.slow
def test_meets_the_accuracy_targets_on_a_fixed_sample(pipe):
    """Issue 37's targets with the strict evaluator at the defaults: joint >= 0.90 seen, >= 0.75 held out
    (measured on all 60 captions x 3 seeds in README_flow.md; this is the tests' smaller sample, 24 videos)."""
    report = evaluate.evaluate(lambda prompt, seed: pipe.generate(prompt, seed=seed, record=None, progress=False).frames,
                               SAMPLE, seeds=(SAMPLE_SEED,), progress=False)
    assert report.counts["seen"] == 18 and report.counts["held_out"] == 6
    assert report.accuracy["all"]["color"] == 1.0 and report.accuracy["all"]["direction"] == 1.0, report.summary()
    assert report.accuracy["seen"]["joint"] >= 0.90, report.summary()
    assert report.accuracy["held_out"]["joint"] >= 0.75, report.summary()
