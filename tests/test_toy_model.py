"""The bundled toy-shapes model: what ships, that it loads offline, and what it has learned."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from t2v_nb.models import toy_model_dir
from t2v_nb.toy import data, evaluate

from conftest import needs_toy, preview_colour_errors, toy_sample

WEIGHTS = toy_model_dir()
pytestmark = needs_toy("toy-shapes")


@pytest.fixture(scope="module")
def pipe(toy_pipe):
    return toy_pipe


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


def test_tokenizer_folder_has_the_slow_tokenizer_files():
    """model_index.json names the slow CLIPTokenizer (as ModelScope's does); transformers 4.x builds it from
    vocab.json + merges.txt (transformers 5 from tokenizer.json), so the folder carries both, the same BPE.
    Checked by hand: transformers 4.57.6 loads it and gives the same ids as 5.x."""
    folder = os.path.join(WEIGHTS, "tokenizer")
    spec = json.load(open(os.path.join(folder, "tokenizer.json"), encoding="utf-8"))["model"]
    assert json.load(open(os.path.join(folder, "vocab.json"), encoding="utf-8")) == spec["vocab"]
    lines = open(os.path.join(folder, "merges.txt"), encoding="utf-8").read().splitlines()
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    assert lines[0].startswith("#version") and lines[1:] == merges


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
    approx = pipe.preview(run.latents)[0]  # [F, h, w, 3]
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(video.frames).permute(0, 3, 1, 2), pipe.vae_scale_factor)
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
    # diffusers guides every step, as the preset does (since 2026-12-01); say so explicitly all the same
    ours = pipe.start("a red circle moving right", seed=0, scheduler="ddim", guidance_interval=None,
                      **params).finish(progress=False)
    theirs = ref("a red circle moving right", generator=torch.Generator().manual_seed(0), output_type="latent",
                 **params).frames
    assert torch.allclose(ours.latents.float(), theirs.float(), atol=1e-4)


# The tests on the fixed sample are heavy (24 videos, 48 for the guidance comparison): `make test-slow` runs them.
# Under pytest-xdist this module runs whole on one worker (conftest.ONE_WORKER), which makes the sample once.
on_the_sample = pytest.mark.slow


SAMPLE, SAMPLE_SEED = toy_sample()


@pytest.fixture(scope="module")
def sample_videos(pipe) -> dict:
    """The fixed sample, made once with the default sampler settings: {clip: (finished run, decoded frames)}, for
    the accuracy tests (the frames) and the preview test (the final latents and the frames)."""
    videos = {}
    for clip in SAMPLE:
        run = pipe.start(data.caption(clip), seed=SAMPLE_SEED, record=None).finish(progress=False)
        videos[clip] = (run, run.decode().frames)
    return videos


@pytest.fixture(scope="module")
def sample_report(sample_videos):
    """The strict evaluator on the fixed sample."""
    frames = {data.caption(clip): video for clip, (_, video) in sample_videos.items()}
    report = evaluate.evaluate(lambda prompt, seed: frames[prompt], SAMPLE, seeds=(SAMPLE_SEED,), progress=False)
    assert report.counts["seen"] == 18 and report.counts["held_out"] == 6
    return report


@on_the_sample
def test_learned_colour_and_direction(sample_report):
    """What the shipped model has learned: the colour and the direction the caption names."""
    acc = sample_report.accuracy["all"]
    assert acc["color"] >= 0.9 and acc["direction"] >= 0.85, sample_report.summary()


@on_the_sample
def test_guiding_every_step_names_more_shapes_than_only_the_early_steps(pipe, sample_report):
    """The preset guides every step (its default since 2026-12-01) because, for these weights, that names more
    of the asked-for shapes than guiding only while t >= 700 (the old default, which helped the 8x8 model);
    colour and direction hold either way (toy README, 'Status')."""
    early = evaluate.evaluate(lambda prompt, seed: pipe.generate(prompt, seed=seed, guidance_interval=(700, 1000),
                                                                 progress=False).frames,
                              SAMPLE, seeds=(SAMPLE_SEED,), progress=False)
    every = sample_report.accuracy["all"]
    assert every["shape"] > early.accuracy["all"]["shape"] + 0.05, (sample_report.summary(), early.summary())
    assert early.accuracy["all"]["color"] >= every["color"] - 0.05


@on_the_sample
def test_meets_the_accuracy_targets_on_a_fixed_sample(sample_report):
    """Issue 13's targets with the strict evaluator: joint >= 0.90 seen, >= 0.75 held out (measured on all 60
    captions x 3 seeds in the toy README; this is the tests' smaller sample)."""
    assert sample_report.accuracy["seen"]["joint"] >= 0.90, sample_report.summary()
    assert sample_report.accuracy["held_out"]["joint"] >= 0.75, sample_report.summary()


@on_the_sample
def test_linear_preview_is_colour_true_on_the_shape(pipe, sample_videos):
    """Issue 13: per colour, the preview's hue within 30 degrees of the decoded frames' and saturation >= 0.35
    on the shape (a circle and a square of the sample); white stays white (low saturation, bright)."""
    wrong = preview_colour_errors(pipe, sample_videos)
    assert not wrong, "\n".join(wrong)
