"""Moving-shapes videos: the synthetic data the toy-shapes model is trained on.

Every video shows one shape (circle, square or triangle) of one colour on a plain dark background,
moving in a straight line (left, right, up or down) across the clip. The caption names all three.
Everything is drawn with numpy from a seed, so the same seed always gives the same video.

Some colour-shape-direction combinations are never shown in training (`HELD_OUT`); every single
word still is, in other combinations, so the tutorials can ask the model for a composition it never saw.

    >>> from t2v_nb.toy import data
    >>> clip = data.render(data.Clip("red", "circle", "right"), seed=0)
    >>> clip.shape   # [F, H, W, 3], float32 in [0, 1]
    (8, 64, 64, 3)
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

__all__ = [
    "COLORS", "SHAPES", "DIRECTIONS", "HELD_OUT", "TEMPLATES", "Clip",
    "all_clips", "seen_clips", "held_out_clips", "caption", "coverage", "render", "sample_batch",
]

NUM_FRAMES = 8
SIZE = 64

# Colour name -> RGB in [0, 1]. Picked to stay apart in hue and brightness on a dark background.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.16, 0.12),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.20, 0.35, 0.98),
    "yellow": (0.95, 0.85, 0.10),
    "white": (0.95, 0.95, 0.95),
}
SHAPES = ("circle", "square", "triangle")
# Direction name -> unit motion (dx, dy) in image coordinates (y grows downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

# Never rendered for training. Each word still appears in many training combinations.
HELD_OUT: tuple[tuple[str, str, str], ...] = (
    ("red", "triangle", "up"),
    ("green", "circle", "left"),
    ("blue", "square", "down"),
    ("yellow", "triangle", "right"),
    ("white", "circle", "down"),
    ("green", "square", "up"),
)

# Caption paraphrases used in training; the first one is the canonical form used for evaluation.
TEMPLATES = (
    "a {color} {shape} moving {direction}",
    "a {color} {shape} going {direction}",
    "a {color} {shape} moves {direction}",
    "{color} {shape} moving {direction}",
)


@dataclasses.dataclass(frozen=True)
class Clip:
    """What a video shows: one shape of one colour moving in one direction."""

    color: str
    shape: str
    direction: str

    def __post_init__(self):
        if self.color not in COLORS:
            raise ValueError(f"Unknown color {self.color!r}; expected one of {sorted(COLORS)}.")
        if self.shape not in SHAPES:
            raise ValueError(f"Unknown shape {self.shape!r}; expected one of {list(SHAPES)}.")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"Unknown direction {self.direction!r}; expected one of {list(DIRECTIONS)}.")

    @property
    def held_out(self) -> bool:
        return (self.color, self.shape, self.direction) in HELD_OUT


def all_clips() -> list[Clip]:
    """All 60 colour x shape x direction combinations."""
    return [Clip(*c) for c in itertools.product(COLORS, SHAPES, DIRECTIONS)]


def seen_clips() -> list[Clip]:
    """The combinations the model is trained on."""
    return [c for c in all_clips() if not c.held_out]


def held_out_clips() -> list[Clip]:
    """The combinations the model never sees in training."""
    return [c for c in all_clips() if c.held_out]


def caption(clip: Clip, template: int = 0) -> str:
    """The caption of `clip`; template 0 is the canonical "a {color} {shape} moving {direction}"."""
    return TEMPLATES[template].format(color=clip.color, shape=clip.shape, direction=clip.direction)


def parse_caption(text: str) -> Clip | None:
    """The clip a caption names, or None when it does not name exactly one colour, shape, direction."""
    words = text.lower().replace(",", " ").split()
    found = []
    for vocab in (COLORS, SHAPES, DIRECTIONS):
        hits = [w for w in words if w in vocab]
        if len(set(hits)) != 1:
            return None
        found.append(hits[0])
    return Clip(*found)


def coverage(shape: str, cx, cy, r, size: int = SIZE, ss: int = 4) -> np.ndarray:
    """Fraction of each pixel covered by the shape, by `ss` x `ss` supersampling.

    `cx`, `cy` (centre, pixels) and `r` (the shape's "radius", pixels) are numbers, giving [size, size],
    or arrays of one shape S, giving [*S, size, size]: many placements at once (the evaluator fits
    these templates to what a model drew).
    """
    cx, cy, r = (np.asarray(v, np.float64)[..., None, None] for v in (cx, cy, r))  # [*S, 1, 1]
    coords = (np.arange(size * ss) + 0.5) / ss  # sub-pixel centres, in pixels
    x = coords[None, :]
    y = coords[:, None]
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r**2
    elif shape == "square":
        h = r * 0.85  # half side, so a square and a circle of one "size" look as big
        inside = (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    elif shape == "triangle":
        # Upright isosceles triangle: apex at the top, base at the bottom.
        top, bottom = cy - r, cy + r * 0.8
        half_width = (y - top) / (bottom - top) * r * 1.05
        inside = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half_width)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {list(SHAPES)}.")
    inside = np.broadcast_to(inside, (*cx.shape[:-2], size * ss, size * ss))
    return inside.reshape(*inside.shape[:-2], size, ss, size, ss).mean(axis=(-3, -1))


def render(clip: Clip, seed: int | np.random.Generator = 0, num_frames: int = NUM_FRAMES,
           size: int = SIZE) -> np.ndarray:
    """Draw one video of `clip`. Returns float32 [F, H, W, 3] in [0, 1].

    The path is set by the caption: a shape "moving right" starts near the left edge and ends near the
    right edge. What the caption does not say is random: the shape's size, its shade, its place across
    the motion, how far it travels, and the background's darkness.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    r = rng.uniform(0.11, 0.16) * size  # "radius" in pixels
    margin = r + 1.5
    span = size - 2 * margin  # room the centre has to move in
    travel = rng.uniform(0.6, 0.85) * span  # how far the centre moves, in pixels
    start = margin + rng.uniform(0.0, span - travel)  # measured from the edge the shape leaves
    across = rng.uniform(margin + 2, size - margin - 2)  # the other coordinate, fixed
    shade = rng.uniform(0.8, 1.0)
    background = rng.uniform(0.0, 0.12) * np.ones(3) + rng.uniform(-0.02, 0.02, size=3)
    color = np.clip(np.array(COLORS[clip.color]) * shade, 0, 1)

    dx, dy = DIRECTIONS[clip.direction]
    video = np.empty((num_frames, size, size, 3), np.float32)  # [F, H, W, 3]
    for f in range(num_frames):
        along = start + travel * f / max(num_frames - 1, 1)
        # Position along the motion, measured from the edge the shape leaves.
        pos = along if (dx + dy) > 0 else size - along
        cx, cy = (pos, across) if dx != 0 else (across, pos)
        cov = coverage(clip.shape, cx, cy, r, size)[..., None]  # [H, W, 1]
        video[f] = (1 - cov) * background + cov * color
    return np.clip(video, 0.0, 1.0)


def sample_batch(rng: np.random.Generator, n: int, split: str = "train", num_frames: int = NUM_FRAMES,
                 size: int = SIZE, paraphrase: bool = True) -> tuple[np.ndarray, list[str], list[Clip]]:
    """Draw `n` random videos from a split ("train": seen combinations, "held_out", or "all").

    Returns (videos [n, F, H, W, 3] float32, captions, clips).
    """
    pools = {"train": seen_clips(), "held_out": held_out_clips(), "all": all_clips()}
    if split not in pools:
        raise ValueError(f"Unknown split {split!r}; expected one of {list(pools)}.")
    pool = pools[split]
    clips = [pool[i] for i in rng.integers(0, len(pool), size=n)]
    templates = rng.integers(0, len(TEMPLATES), size=n) if paraphrase else np.zeros(n, int)
    captions = [caption(c, int(t)) for c, t in zip(clips, templates)]
    videos = np.stack([render(c, rng, num_frames, size) for c in clips])
    return videos, captions, clips
