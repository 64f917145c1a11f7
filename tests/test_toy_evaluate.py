"""Tests for t2v_nb.toy.evaluate: the pixel-only detector (strict shape templates) and the generator scorer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from t2v_nb.toy import data
from t2v_nb.toy.evaluate import MIN_IOU, Detection, Report, detect, evaluate, template_iou

SEEDS = (0, 1)
ATTRS = ("color", "shape", "direction")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def _blur(video: np.ndarray) -> np.ndarray:
    """3x3 box blur of each frame, edges repeated. [F, H, W, 3]."""
    h, w = video.shape[1:3]
    pad = np.pad(video, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return (sum(pad[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9).astype(np.float32)


def _noisy(video: np.ndarray, seed: int, sigma: float = 0.05) -> np.ndarray:
    noise = np.random.default_rng(1000 + seed).normal(0.0, sigma, video.shape)
    return np.clip(video + noise, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def ground_truth() -> list[tuple[data.Clip, int, np.ndarray]]:
    return [(clip, seed, data.render(clip, seed)) for clip in data.all_clips() for seed in SEEDS]


def _score(cases, transform) -> tuple[dict[str, float], list]:
    """Per-attribute accuracy of detect() on transformed videos, and the misses."""
    hits = dict.fromkeys(ATTRS, 0)
    misses = []
    for i, (clip, seed, video) in enumerate(cases):
        det = detect(transform(video, i))
        for a in ATTRS:
            hits[a] += getattr(det, a) == getattr(clip, a)
        if any(getattr(det, a) != getattr(clip, a) for a in ATTRS):
            misses.append((clip, seed, det))
    return {a: hits[a] / len(cases) for a in ATTRS}, misses


def test_detect_is_exact_on_clean_ground_truth(ground_truth):
    assert len(ground_truth) == 60 * len(SEEDS)
    acc, misses = _score(ground_truth, lambda v, i: v)
    assert acc == dict.fromkeys(ATTRS, 1.0), misses[:5]


@pytest.mark.parametrize("name, transform", [
    ("noise", lambda v, i: _noisy(v, i)),
    ("blur", lambda v, i: _blur(v)),
    ("blur+noise", lambda v, i: _noisy(_blur(v), i)),
])
def test_detect_is_robust_to_noise_and_blur(ground_truth, name, transform):
    acc, misses = _score(ground_truth, transform)
    assert all(acc[a] >= 0.95 for a in ATTRS), (name, acc, misses[:5])


@pytest.mark.parametrize("shape", data.SHAPES)
@pytest.mark.parametrize("r", [0.11 * 64, 0.135 * 64, 0.16 * 64])  # the renderer's smallest, middle, largest
def test_renderer_shapes_match_their_template_at_every_size_and_place(shape, r):
    rng = np.random.default_rng(int(r * 10))
    cx = rng.uniform(r + 1.5, 64 - r - 1.5, 8)  # anywhere the renderer may put them, off the pixel grid
    cy = rng.uniform(r + 1.5, 64 - r - 1.5, 8)
    cover = data.coverage(shape, cx, cy, np.full(8, r), 64)  # [8, 64, 64]
    video = (0.06 + cover[..., None] * (np.array(data.COLORS["green"]) - 0.06)).astype(np.float32)
    det = detect(video)
    assert det.shape == shape and det.iou[shape] >= 0.95, det.iou
    assert all(det.iou[other] < MIN_IOU for other in data.SHAPES if other != shape), det.iou


def _impostor(inside, r: float = 10.0, color=(0.92, 0.16, 0.12)) -> np.ndarray:
    """A moving shape that is none of the three: `inside(x, y, r)` relative to its centre, drawn at 4x4
    supersampling like the renderer. [8, 64, 64, 3]."""
    sub = (np.arange(256) + 0.5) / 4
    frames = []
    for f in range(8):
        cx, cy = 18 + 4 * f, 30.3
        cover = inside(sub[None, :] - cx, sub[:, None] - cy, r).reshape(64, 4, 64, 4).mean(axis=(1, 3))
        frames.append(0.05 + cover[..., None] * (np.array(color) - 0.05))
    return np.array(frames, np.float32)


def _star(x, y, r):  # four-pointed star: |x|^p + |y|^p <= r^p with p < 1 (concave sides)
    return np.abs(x) ** 0.6 + np.abs(y) ** 0.6 <= (1.2 * r) ** 0.6


def _ring(x, y, r):
    return (x**2 + y**2 <= r**2) & (x**2 + y**2 >= (0.55 * r) ** 2)


def _pinched_square(x, y, r):  # a square whose sides bow inwards by 40% of the half side (fill ~0.7)
    h = 0.85 * r
    bow = lambda u: h * (1 - 0.4 * (1 - (np.clip(np.abs(u), 0, h) / h) ** 2))
    return (np.abs(x) <= bow(y)) & (np.abs(y) <= bow(x))


def _diamond(x, y, r):  # a square on its corner
    return np.abs(x) + np.abs(y) <= 1.1 * r


@pytest.mark.parametrize("inside", [_star, _ring, _pinched_square, _diamond])
@pytest.mark.parametrize("r", [7.0, 10.0])
def test_stars_rings_and_pinched_squares_are_no_shape(inside, r):
    det = detect(_impostor(inside, r))
    assert det.color == "red" and det.direction == "right"  # the blob is found ...
    assert det.shape is None, det.iou  # ... but it is none of the three shapes
    assert max(det.iou.values()) < MIN_IOU


def test_template_iou_of_an_exact_template_is_one():
    blob = data.coverage("triangle", 30.2, 28.7, 9.0, 64) >= 0.5
    blob = detect(np.repeat(blob[None, ..., None] * np.ones(3, np.float32), 8, axis=0))
    assert blob.shape == "triangle"
    square = data.coverage("square", 32.0, 32.0, 9.0, 64) >= 0.5  # [64, 64] bool, no blur
    assert template_iou(square, "square") > 0.85 and template_iou(square, "circle") < MIN_IOU


def test_detect_accepts_uint8_and_reports_diagnostics():
    clip = data.Clip("yellow", "square", "up")
    video = data.render(clip, seed=4)
    det = detect((video * 255).round().astype(np.uint8))
    assert (det.color, det.shape, det.direction) == ("yellow", "square", "up")
    assert det.frames == video.shape[0]
    dx, dy = det.displacement
    assert dy < -10 and abs(dx) < 1  # moved up by many pixels, not sideways
    assert 0.01 < det.foreground < 0.15
    from_float = detect(video)  # quantising moves the diagnostics a little, not the answer
    assert (from_float.color, from_float.shape, from_float.direction) == (det.color, det.shape, det.direction)
    assert abs(from_float.displacement[1] - dy) < 1.0


@pytest.mark.parametrize("clip", [
    data.Clip("red", "triangle", "up"), data.Clip("green", "circle", "left"),
    data.Clip("blue", "square", "down"), data.Clip("white", "triangle", "right"),
])
def test_reversing_frames_flips_direction(clip):
    video = data.render(clip, seed=7)
    forward, backward = detect(video), detect(video[::-1])
    assert forward.direction == clip.direction
    assert backward.direction == OPPOSITE[clip.direction]
    assert (backward.color, backward.shape) == (clip.color, clip.shape)
    np.testing.assert_allclose(backward.displacement, -np.array(forward.displacement), atol=1e-6)


@pytest.mark.parametrize("value", [0.0, 0.3, 1.0])
def test_blank_video_has_no_attributes(value):
    det = detect(np.full((8, 64, 64, 3), value, np.float32))
    assert (det.color, det.shape, det.direction) == (None, None, None)
    assert det.frames == 0


@pytest.mark.parametrize("video", [
    np.random.default_rng(0).random((8, 64, 64, 3)),  # uniform noise
    np.clip(0.1 + np.random.default_rng(1).normal(0.0, 0.05, (8, 64, 64, 3)), 0, 1),  # noisy dark
])
def test_noise_video_has_no_attributes(video):
    det = detect(video)
    assert (det.color, det.shape, det.direction) == (None, None, None)


def test_static_shape_has_no_direction():
    clip = data.Clip("blue", "circle", "right")
    first = data.render(clip, seed=3)[:1]
    for video in (np.repeat(first, 8, axis=0), _noisy(np.repeat(first, 8, axis=0), 0)):
        det = detect(video)
        assert (det.color, det.shape, det.direction) == ("blue", "circle", None)
        assert max(abs(d) for d in det.displacement) < 1.0


def test_motion_below_min_displacement_has_no_direction():
    video = data.render(data.Clip("red", "square", "right"), seed=0)
    still = np.repeat(video[:1], 8, axis=0)
    still[4:] = np.roll(still[4:], 2, axis=2)  # a 2-pixel jump right halfway through
    assert detect(still).direction is None
    assert detect(still, min_displacement=1.0).direction == "right"


@pytest.mark.parametrize("shape", [(64, 64, 3), (8, 3, 64, 64), (8, 64, 64, 4), (8, 64, 64), (0, 64, 64, 3)])
def test_bad_shape_raises(shape):
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        detect(np.zeros(shape, np.float32))


def _ground_truth_generator(calls: list | None = None):
    def generate(prompt: str, seed: int) -> np.ndarray:
        if calls is not None:
            calls.append((prompt, seed))
        return data.render(data.parse_caption(prompt), seed)
    return generate


def test_evaluate_ground_truth_is_perfect():
    calls = []
    report = evaluate(_ground_truth_generator(calls), seeds=(0, 1), progress=False)
    assert isinstance(report, Report)
    assert report.counts == {"seen": 54 * 2, "held_out": 6 * 2, "all": 120}
    for group in ("seen", "held_out", "all"):
        assert report.accuracy[group] == {"color": 1.0, "shape": 1.0, "direction": 1.0, "joint": 1.0}
    # Every clip is asked for once per seed, with its canonical caption.
    assert sorted(calls) == sorted((data.caption(c), s) for c in data.all_clips() for s in (0, 1))
    assert len(report.rows) == 120
    assert all(isinstance(r.detection, Detection) and r.correct["joint"] for r in report.rows)
    assert sum(r.clip.held_out for r in report.rows) == 12
    d = json.loads(json.dumps(report.to_dict()))
    assert d["accuracy"]["held_out"]["joint"] == 1.0 and len(d["rows"]) == 120
    assert d["rows"][0]["prompt"] == data.caption(report.rows[0].clip)


def test_evaluate_wrong_direction_scores_zero_direction():
    def generate(prompt: str, seed: int) -> np.ndarray:
        clip = data.parse_caption(prompt)
        return data.render(data.Clip(clip.color, clip.shape, OPPOSITE[clip.direction]), seed)

    report = evaluate(generate, seeds=(5,), progress=False)
    assert report.counts == {"seen": 54, "held_out": 6, "all": 60}
    for group in ("seen", "held_out"):
        assert report.accuracy[group] == {"color": 1.0, "shape": 1.0, "direction": 0.0, "joint": 0.0}
    assert all(r.detection.direction == OPPOSITE[r.clip.direction] for r in report.rows)
    json.dumps(report.to_dict())
    lines = report.summary().splitlines()
    assert len(lines) == 4 and "direction" in lines[0] and "joint" in lines[0]
    held = next(line for line in lines if line.startswith("held_out")).split()
    assert held == ["held_out", "6", "1.000", "1.000", "0.000", "0.000"]


def test_evaluate_subset_leaves_empty_group_undefined():
    clips = data.seen_clips()[:3]
    report = evaluate(_ground_truth_generator(), clips=clips, seeds=(0,), progress=True)
    assert report.counts == {"seen": 3, "held_out": 0, "all": 3}
    assert report.accuracy["seen"]["joint"] == 1.0
    assert report.accuracy["held_out"] == dict.fromkeys(("color", "shape", "direction", "joint"), None)
    assert json.loads(json.dumps(report.to_dict()))["accuracy"]["held_out"]["joint"] is None
    assert "-" in report.summary().splitlines()[2]
