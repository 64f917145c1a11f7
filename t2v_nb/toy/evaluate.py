"""Score a text-to-video generator on the moving-shapes task, from the pixels alone.

For every caption "a {color} {shape} moving {direction}" the generator makes a video, and `detect`
reads three things back out of it, with no model involved:

* colour: the nearest reference colour in `data.COLORS` to the foreground's chromaticity
  (RGB divided by its largest channel, so the renderer's random shade does not matter);
* shape: how well the foreground mask matches each ideal shape as `data.coverage` draws it (IoU
  with the template at the fitted position and size, see `template_iou`), median over frames; the
  best template names the shape if its IoU reaches `MIN_IOU`, else the shape is None: a
  four-pointed star, a ring or a pinched square is none of the three (the renderer's own shapes,
  blurred and noisy, score >= 0.92; such impostors <= 0.89);
* direction: from a least-squares line through the mask's centroid over frames; the axis that moved
  most and its sign ("up" is negative y, as image rows grow downwards).

The foreground is the largest connected blob of pixels far from the background colour (the median of
each frame's border): further than half the frame's top contrast and than four times the border's
noise, on a lightly smoothed copy of the frame so noise and soft edges do not fray it. An attribute
is None when it cannot be read: no blob of a plausible size in at least half the frames (a blank or
noisy video), or, for direction, a displacement under `MIN_DISPLACEMENT` pixels.

`evaluate` scores a generator over clips and seeds and reports per-attribute and joint accuracy for
the combinations seen in training and for the held-out ones:

    >>> from t2v_nb.toy import data, evaluate
    >>> report = evaluate.evaluate(lambda prompt, seed: data.render(data.parse_caption(prompt), seed),
    ...                            progress=False)
    >>> report.accuracy["held_out"]["joint"]
    1.0
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterable, Sequence

import numpy as np

from t2v_nb.toy import data

__all__ = ["Detection", "Row", "Report", "detect", "evaluate", "template_iou", "MIN_DISPLACEMENT", "MIN_IOU"]

MIN_DISPLACEMENT = 3.0  # pixels the centroid must travel over the clip to count as motion
MIN_IOU = 0.91  # smallest template IoU that names a shape (the renderer's own, blurred and noisy: >= 0.92)
MIN_CONTRAST = 0.08  # smallest RGB distance from the background that can count as foreground
ATTRIBUTES = ("color", "shape", "direction")
_NAMES = list(data.COLORS)
_REF_CHROMA = np.array([np.array(c) / max(c) for c in data.COLORS.values()])  # [5, 3]


@dataclasses.dataclass
class Detection:
    """What `detect` read from a video. Attributes are None when they could not be read.

    Attributes:
        color: Name from `data.COLORS`, or None.
        shape: Name from `data.SHAPES`, or None.
        direction: Name from `data.DIRECTIONS`, or None.
        displacement: Centroid travel (dx, dy) in pixels over the clip, from a least-squares fit.
        fill: Median fill ratio of the blob in its bounding box (data: circle 0.78, square 1.0, triangle 0.54).
        taper: Median narrow-end / wide-end width ratio of the blob (triangle ~0.2, others ~1); diagnostic.
        corners: Median diagonal / axis extent ratio of the blob (square ~1.41, circle ~1); diagnostic.
        rgb: Median RGB of the blob's core.
        foreground: Mean fraction of the frame covered by the blob.
        frames: Number of frames in which a blob was found.
        iou: Shape name -> median over frames of the blob's IoU with that ideal template (fitted
            position and size); the shape is the best one, if it reaches `MIN_IOU`.
    """

    color: str | None
    shape: str | None
    direction: str | None
    displacement: tuple[float, float] | None = None
    fill: float | None = None
    taper: float | None = None
    corners: float | None = None
    rgb: tuple[float, float, float] | None = None
    foreground: float = 0.0
    frames: int = 0
    iou: dict[str, float] | None = None


def _as_video(video: np.ndarray) -> np.ndarray:
    """Checks the shape and converts to float32 in [0, 1]. [F, H, W, 3]."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or min(video.shape) == 0:
        raise ValueError(f"Expected a video of shape [F, H, W, 3], got shape {video.shape}.")
    if np.issubdtype(video.dtype, np.integer):
        return np.clip(video.astype(np.float32) / 255.0, 0.0, 1.0)
    return np.clip(np.nan_to_num(video.astype(np.float32)), 0.0, 1.0)


def _box3(video: np.ndarray) -> np.ndarray:
    """3x3 box blur of each frame, edges repeated. [F, H, W, C] -> [F, H, W, C]."""
    h, w = video.shape[1:3]
    pad = np.pad(video, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    return sum(pad[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0


def _largest_blobs(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of each frame's mask. [F, H, W] bool -> [F, H, W] bool."""
    f, h, w = mask.shape
    n = mask.size
    labels = np.where(mask, np.arange(n).reshape(mask.shape), n)  # label = smallest index in blob
    while True:
        new = labels.copy()
        for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)):
            src = labels[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
            dst = new[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            np.minimum(dst, src, out=dst)
        new[~mask] = n
        flat = np.append(new.ravel(), n)
        new = flat[flat[new]]  # pointer jumping: a label's own label is in the same blob
        if np.array_equal(new, labels):
            break
        labels = new
    counts = np.bincount(labels[mask], minlength=n + 1)[:n].reshape(f, h * w)
    best = counts.argmax(axis=1) + np.arange(f) * h * w  # [F]
    return mask & (labels == best[:, None, None])


def _geometry(blob: np.ndarray) -> tuple[float, float, float, float, float]:
    """Centroid x, centroid y, fill ratio, taper and corner ratio of one frame's blob. [H, W] bool.

    The corner ratio is the blob's extent along the diagonals over its extent along the axes: a square
    reaches ~1.41 (its corners), a circle ~1; ragged edges move it by a pixel at most.
    """
    ys, xs = np.nonzero(blob)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = blob[y0:y1, x0:x1]
    fill = box.sum() / box.size
    taper = 1.0
    for widths in (box.sum(axis=1), box.sum(axis=0)):  # row widths, then column heights
        q = max(1, len(widths) // 4)
        ends = sorted([widths[:q].mean(), widths[-q:].mean()])
        taper = min(taper, ends[0] / max(ends[1], 1e-6))
    diagonal = max(np.ptp(xs + ys), np.ptp(xs - ys)) / np.sqrt(2) + np.sqrt(2)  # a pixel spans sqrt(2)
    corners = diagonal / max(x1 - x0, y1 - y0)
    return float(xs.mean()), float(ys.mean()), float(fill), float(taper), float(corners)


# Each template's area in units of r**2 and how far its centroid sits below its centre (in r), as
# `data.coverage` draws them: circle of radius r; square of half side 0.85 r; triangle from cy - r to
# cy + 0.8 r with a base 2.1 r wide (its centroid is 2/3 of the way down from the apex).
_TEMPLATE_AREA = {"circle": math.pi, "square": 1.7**2, "triangle": 0.5 * 1.8 * 2.1}
_TEMPLATE_DROP = {"circle": 0.0, "square": 0.0, "triangle": 0.2}
_SCALES = np.array([0.88, 0.94, 1.0, 1.06, 1.12])
_SHIFTS = np.array([-0.5, 0.0, 0.5])


def template_iou(blob: np.ndarray, shape: str) -> float:
    """Best IoU of one frame's blob ([H, W] bool) with the ideal `shape` as `data.coverage` draws it.

    The template starts with the blob's area and centroid, then the best of a small grid around that
    (size x0.88..1.12, centre +-0.5 pixel) is kept. The template goes through what the blob went through
    (the 3x3 blur of `detect`, then half contrast), so the renderer's own shapes score >= 0.95 at every
    size while a four-pointed star, a ring or a pinched square scores well below `MIN_IOU`.
    """
    ys, xs = np.nonzero(blob)
    r0 = math.sqrt(len(xs) / _TEMPLATE_AREA[shape])
    cx0, cy0 = xs.mean() + 0.5, ys.mean() + 0.5 - _TEMPLATE_DROP[shape] * r0  # pixel centres are at +0.5
    side = int(math.ceil(2.6 * r0 * _SCALES[-1])) + 4  # a square crop that holds every candidate
    x0, y0 = int(round(cx0)) - side // 2, int(round(cy0)) - side // 2
    crop = np.zeros((side, side), bool)
    h, w = blob.shape
    sy, sx = slice(max(y0, 0), min(y0 + side, h)), slice(max(x0, 0), min(x0 + side, w))
    crop[sy.start - y0:sy.stop - y0, sx.start - x0:sx.stop - x0] = blob[sy, sx]
    s, dy, dx = np.meshgrid(_SCALES, _SHIFTS, _SHIFTS, indexing="ij")  # [5, 5, 5] candidates
    cover = data.coverage(shape, (cx0 - x0 + dx).ravel(), (cy0 - y0 + dy).ravel(), (r0 * s).ravel(), side,
                          ss=2)  # [K, side, side]
    tmpl = _box3(cover[..., None])[..., 0] >= 0.5  # [K, side, side]
    inter = (tmpl & crop).sum(axis=(1, 2))
    union = (tmpl | crop).sum(axis=(1, 2)) + (len(xs) - crop.sum())  # blob pixels outside the crop
    return float((inter / np.maximum(union, 1)).max())


def _classify_shape(ious: dict[str, float]) -> str | None:
    """The template the blob matches best, or None when it matches none of them well (a star, a ring)."""
    best = max(ious, key=ious.get)
    return best if ious[best] >= MIN_IOU else None


def background_distance(video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's colour distance [F, H, W] from its frame's background (the median of the border pixels),
    and the border pixels' own distances [F, B]."""
    border = np.concatenate([video[:, 0], video[:, -1], video[:, 1:-1, 0], video[:, 1:-1, -1]], axis=1)
    background = np.median(border, axis=1)  # [F, 3]
    return (np.linalg.norm(video - background[:, None, None], axis=-1),
            np.linalg.norm(border - background[:, None], axis=-1))


def detect(video: np.ndarray, min_displacement: float = MIN_DISPLACEMENT) -> Detection:
    """Reads the colour, shape and direction of motion of the one shape in a video.

    Args:
        video: [F, H, W, 3], float in [0, 1] (values outside are clipped) or integer (uint8) in
            [0, 255].
        min_displacement: Pixels the shape must travel over the clip for a direction to be read.

    Returns:
        The detection; attributes that cannot be read are None.

    Raises:
        ValueError: If `video` is not shaped [F, H, W, 3].
    """
    video = _as_video(video)
    f, h, w, _ = video.shape
    smooth = _box3(video)  # the mask is drawn on a lightly smoothed copy, so noise gives clean edges
    dist, border_dist = background_distance(smooth)
    noise = np.median(border_dist, axis=1) / 1.54  # per-channel sigma, if the noise is Gaussian
    level = np.percentile(dist.reshape(f, -1), 99.5, axis=1)  # contrast of the brightest blob
    threshold = np.maximum(np.maximum(0.5 * level, 4.0 * noise), MIN_CONTRAST)  # [F]
    blobs = _largest_blobs(dist > threshold[:, None, None])
    area = blobs.sum(axis=(1, 2))
    valid = (area >= max(6, 0.002 * h * w)) & (area <= 0.4 * h * w)  # [F]
    needed = max(1, math.ceil(f / 2))
    if valid.sum() < needed:
        return Detection(None, None, None, foreground=float(area.mean() / (h * w)), frames=int(valid.sum()))

    t = np.flatnonzero(valid)
    geo = np.array([_geometry(blobs[i]) for i in t])  # [T, 5]: cx, cy, fill, taper, corners
    fill, taper, corners = (float(v) for v in np.median(geo[:, 2:], axis=0))
    cores = []
    for i in t:  # mean colour of the blob's inner half, away from blended edges
        d = dist[i][blobs[i]]
        cores.append(video[i][blobs[i]][d >= np.median(d)].mean(axis=0))
    rgb = np.median(np.array(cores), axis=0)
    chroma = rgb / max(float(rgb.max()), 1e-6)
    color = _NAMES[int(np.linalg.norm(_REF_CHROMA - chroma, axis=1).argmin())]

    direction, displacement = None, None
    if len(t) >= 2:
        slope = np.polyfit(t.astype(float), geo[:, :2], 1)[0]  # [2]: pixels per frame in x, y
        dx, dy = (float(s) * (f - 1) for s in slope)
        displacement = (dx, dy)
        if max(abs(dx), abs(dy)) >= min_displacement:  # the axis that moved most, and its sign
            if abs(dx) >= abs(dy):
                direction = "right" if dx > 0 else "left"
            else:
                direction = "down" if dy > 0 else "up"
    iou = {name: float(np.median([template_iou(blobs[i], name) for i in t])) for name in data.SHAPES}
    return Detection(color, _classify_shape(iou), direction, displacement, fill, taper, corners,
                     tuple(float(c) for c in rgb), float(area[valid].mean() / (h * w)), int(valid.sum()), iou)


@dataclasses.dataclass
class Row:
    """One scored video: the clip asked for, the seed, what was detected and which attributes match."""

    clip: data.Clip
    seed: int
    detection: Detection
    correct: dict[str, bool]  # "color", "shape", "direction", "joint"


@dataclasses.dataclass
class Report:
    """Accuracy of a generator, per attribute and joint, for the seen and held-out combinations.

    Attributes:
        accuracy: group ("seen", "held_out", "all") -> attribute ("color", "shape", "direction",
            "joint") -> fraction correct, or None for a group with no samples.
        counts: group -> number of scored videos.
        rows: Every scored video, in order.
    """

    accuracy: dict[str, dict[str, float | None]]
    counts: dict[str, int]
    rows: list[Row]

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of the whole report, rows included."""
        rows = []
        for s in self.rows:
            det = dataclasses.asdict(s.detection)
            det = {k: list(v) if isinstance(v, tuple) else v for k, v in det.items()}
            rows.append({"clip": dataclasses.asdict(s.clip), "prompt": data.caption(s.clip),
                         "held_out": s.clip.held_out, "seed": s.seed, "detection": det,
                         "correct": dict(s.correct)})
        return {"accuracy": self.accuracy, "counts": self.counts, "rows": rows}

    def mean_iou(self) -> dict[str, float]:
        """Per shape asked for, the mean IoU of the detected blob with that shape's template (videos with no
        blob left out)."""
        ious = {s: [r.detection.iou[s] for r in self.rows if r.clip.shape == s and r.detection.iou]
                for s in data.SHAPES}
        return {s: float(np.mean(v)) for s, v in ious.items() if v}

    def summary(self) -> str:
        """A small table: one row per group, one column per attribute."""
        cols = (*ATTRIBUTES, "joint")
        lines = [f"{'group':<9}{'n':>5}" + "".join(f"{c:>11}" for c in cols)]
        for group, acc in self.accuracy.items():
            cells = "".join(f"{'-' if acc[c] is None else f'{acc[c]:.3f}':>11}" for c in cols)
            lines.append(f"{group:<9}{self.counts[group]:>5}" + cells)
        return "\n".join(lines)


def evaluate(generate: Callable[[str, int], np.ndarray], clips: Iterable[data.Clip] | None = None,
             seeds: Sequence[int] = (0, 1, 2), progress: bool = True) -> Report:
    """Scores `generate` on each clip's canonical caption, once per seed.

    Args:
        generate: (prompt, seed) -> video [F, H, W, 3], float in [0, 1] or uint8.
        clips: The combinations to ask for; all 60 of `data.all_clips()` by default.
        seeds: Seeds passed to `generate` for every clip.
        progress: Show a tqdm progress bar.

    Returns:
        The report; a clip counts as "held_out" if `clip.held_out`, else as "seen".
    """
    clips = data.all_clips() if clips is None else list(clips)
    jobs = [(clip, int(seed)) for clip in clips for seed in seeds]
    if progress:
        from tqdm.auto import tqdm
        jobs = tqdm(jobs, desc="evaluate", unit="video")
    rows = []
    for clip, seed in jobs:
        det = detect(np.asarray(generate(data.caption(clip), seed)))
        correct = {a: getattr(det, a) == getattr(clip, a) for a in ATTRIBUTES}
        correct["joint"] = all(correct.values())
        rows.append(Row(clip, seed, det, correct))

    groups = {"seen": [r for r in rows if not r.clip.held_out],
              "held_out": [r for r in rows if r.clip.held_out], "all": rows}
    accuracy = {g: {a: (sum(r.correct[a] for r in rs) / len(rs) if rs else None)
                    for a in (*ATTRIBUTES, "joint")} for g, rs in groups.items()}
    return Report(accuracy, {g: len(rs) for g, rs in groups.items()}, rows)


def main(argv=None) -> int:
    """Score a model (default: the bundled toy-shapes) with its default sampler settings."""
    import argparse
    import json
    import time

    p = argparse.ArgumentParser(description="Score a toy-shapes model: colour, shape and direction from pixels.")
    p.add_argument("--model", default="toy-shapes", help="preset or model directory")
    p.add_argument("--seeds", type=int, default=3, help="seeds per caption (0..N-1)")
    p.add_argument("--guidance-scale", type=float, help="instead of the model's default")
    p.add_argument("--steps", type=int, help="denoising steps, instead of the model's default")
    p.add_argument("--guidance-interval", metavar="LOW,HIGH|none",
                   help="timesteps where guidance applies, instead of the model's default; 'none': every step")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args(argv)

    import t2v_nb

    pipe = t2v_nb.load(args.model)
    kwargs = {} if args.guidance_scale is None else {"guidance_scale": args.guidance_scale}
    if args.steps is not None:
        if args.steps < 1:
            p.error(f"--steps must be at least 1, not {args.steps}")
        kwargs["num_inference_steps"] = args.steps
    if args.guidance_interval is not None:
        text = args.guidance_interval.strip().lower()
        try:
            kwargs["guidance_interval"] = None if text == "none" else tuple(float(v) for v in text.split(","))
        except ValueError:
            p.error(f"--guidance-interval takes LOW,HIGH or none, not {args.guidance_interval!r}")
    t0 = time.time()
    report = evaluate(lambda prompt, seed: pipe.generate(prompt, seed=seed, progress=False, **kwargs).frames,
                      seeds=range(args.seeds))
    print(report.summary())
    print("mean template IoU: " + ", ".join(f"{s} {v:.3f}" for s, v in report.mean_iou().items()))
    print(f"{report.counts['all']} videos in {time.time() - t0:.0f} s with {pipe}, {kwargs or 'default settings'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.to_dict(), f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
