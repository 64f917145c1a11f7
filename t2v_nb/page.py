"""One run as one self-contained web page: scrub its steps and frames in any browser, with no kernel.

    >>> page = run.to_html("run.html")             # writes the file, returns the Page
    >>> page                                        # in Jupyter: the same page inline (it needs no kernel)
    >>> page.save_contact_sheet("run.png")          # steps x frames as one picture, where scripts are stripped

The page holds what the run has: the linear previews of x_t and of the predicted clean latents (x0) at every
step, the VAE decodes of x0 (at every step when the budget allows, else every k-th), the final video, the
guidance parts (unconditional, text, their difference, guided) and the prompt's word heat maps when attention
was captured, the noise level of each step, the token table and the run record, each with a line of plain
words. What the run lacks (no decode, no attention, a run stopped early) is listed at the top of the page.
Images are sprite sheets (one per view and step, frames side by side) embedded as base64 PNG, or WebP where
frames are large; the page makes no request (its Content-Security-Policy forbids them).

The size budget (`max_mb`, default 15 MB, counted as the file's bytes):
1. The previews of every step come first (the step slider must show each step): lossless PNG at the latent
   grid's size (at most 64 px a side); if they would take more than 40% of the budget, WebP, then at most 32 px a side.
2. Guidance parts and word maps at every step if they fit in 25% of the budget, else every k-th step.
3. The final video at its size (up to 512 px a side).
4. The VAE decodes of x0 fill what is left: at full size if that allows at least 5 of them (or every step of
   a shorter run), else at 256, 128 or 64 px a side; every k-th step, the last step always among them.
   `decode_every=k` fixes k instead. Only the chosen steps are decoded.
5. If the page still comes out too large, decoded steps are dropped (every other one, the last kept) and, as
   the last resort, a warning says by how much it is over.
Measured (benchmarks/page_bench.py; tests/test_page.py checks the limits): a toy-shapes run (20 steps, 8 frames,
64x64, attention captured) keeps everything at every step in 1.4 MB; a run of 50 steps x 16 frames at 256x256
(synthetic tensors, a random VAE whose noise-like frames compress worst) gets its previews at every step, guidance
at every 3rd, and 17 decoded steps at 256 px in 14.3 MB.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os
import pathlib
import uuid
import warnings

import numpy as np
import torch

from . import page_template, viz
from .preview import StepDecoder, guidance_parts

__all__ = ["Page", "build", "export", "EXPLAIN"]

EXPLAIN = {
    "xt": "The noisy latents x_t as they enter this step, through the cheap linear preview: at step 0 pure "
          "noise, at the last step almost the finished video.",
    "x0": "The model's guess, at this step, of the finished video (the predicted clean latents x0), through "
          "the linear preview. Early guesses are blurry averages; they sharpen as the noise goes.",
    "decoded": "The same guess through the real VAE decoder: the video the model would give if it stopped here.",
    "final": "The video the run made: its last latents through the VAE decoder.",
    "guidance": "Classifier-free guidance at this step, as the clean video each prediction implies: without the "
                "prompt, with it, how much they differ (brighter = more), and the mix the step used "
                "(unconditional + scale x difference).",
    "words": "Where each word of the prompt is looked at in this frame at this step: cross-attention to the "
             "word's token, averaged over the recorded layers, scaled 0..1 over the frames (red = most).",
}
_GUIDANCE_ROWS = ["unconditional (negative prompt)", "with the prompt", "|prompt - unconditional|", "guided (used)"]
_GUIDANCE_EXPLAIN = ["The clean video the prediction without the prompt implies.",
                     "The clean video the prediction with the prompt implies.",
                     "How much the two differ at each pixel (brighter = more): what the words add.",
                     "Unconditional + scale x difference: what this step used."]
_ORDER = ["xt", "x0", "decoded", "final", "guidance", "words"]
_LIVE_SIDE, _DECODE_SIDES = 64, (512, 256, 128, 64)
_MB = 10**6


# ---------------------------------------------------------------------------------------------- the page


@dataclasses.dataclass(repr=False)
class Page:
    """A run as one self-contained HTML page. `html` is the page; `save` writes it; in Jupyter it shows inline.

    Attributes:
        html: the whole page as a string.
        title: its title (the prompt).
        parts: bytes each part takes in the page (views, schedule, record, ...).
        decoded_steps: the steps whose predicted x0 was VAE-decoded for the page.
        missing: what the run lacks, as the page says it (empty for a complete run with attention).
        contact_sheet: PNG bytes of steps x frames (up to 8 steps, evenly spaced): the fallback picture.
    """

    html: str
    title: str
    parts: dict
    decoded_steps: list
    missing: list
    contact_sheet: bytes

    @property
    def nbytes(self) -> int:
        """Size of the page file in bytes."""
        return len(self.html.encode("utf-8"))

    def __repr__(self) -> str:
        return (f"Page({self.title!r}, {self.nbytes / _MB:.2f} MB, decoded steps {self.decoded_steps}, "
                f"{len(self.missing)} {'note' if len(self.missing) == 1 else 'notes'} on what is missing)")

    def save(self, path, overwrite: bool = False) -> pathlib.Path:
        """Write the page to `path` (.html); an existing file is replaced only with overwrite=True."""
        path = _check_path(path, overwrite, ".html")
        return _write(path, self.html.encode("utf-8"), overwrite)

    def save_contact_sheet(self, path, overwrite: bool = False) -> pathlib.Path:
        """Write the contact sheet (steps x frames) to `path` (.png)."""
        path = _check_path(path, overwrite, ".png")
        return _write(path, self.contact_sheet, overwrite)

    def _repr_html_(self) -> str:
        """The page in a sandboxed iframe (scripts only: no access to the notebook), then the contact sheet,
        which stays visible where a notebook viewer strips iframes and scripts."""
        sheet = base64.b64encode(self.contact_sheet).decode("ascii")
        return (f"<iframe srcdoc=\"{html.escape(self.html, quote=True)}\" sandbox=\"allow-scripts\" "
                f"title=\"{html.escape(self.title)}\" style=\"width:100%;height:900px;border:1px solid #ddd\">"
                f"</iframe><details><summary>contact sheet: the same run as one picture (steps x frames)"
                f"</summary><img src=\"data:image/png;base64,{sheet}\" alt=\"contact sheet\"></details>")


def export(run, path, *, overwrite: bool = False, **options) -> Page:
    """Check `path`, build the page of `run` (`build`'s options) and write it; returns the `Page`."""
    path = _check_path(path, overwrite, ".html")
    _check_run(run)
    page = build(run, **options)
    _write(path, page.html.encode("utf-8"), overwrite)
    return page


def build(run, *, max_mb: float = 15.0, decode: bool = True, decode_every: int | None = None,
          title: str | None = None) -> Page:
    """The page of `run` (see the module's docstring for what it holds and how it keeps under `max_mb`).

    Args:
        run: a `Run` with at least one step done.
        max_mb: the page's size budget in MB (10**6 bytes).
        decode: VAE-decode the predicted x0 of some steps and, for a finished run, the final video
            (False: previews only, unless the run's trace already holds its decoded frames).
        decode_every: decode every k-th step (the last always); default: as often as the budget allows.
        title: the page's title; default: the prompt.
    """
    _check_run(run)
    if not (isinstance(max_mb, (int, float)) and max_mb > 0):
        raise ValueError(f"max_mb must be a positive number of megabytes, got {max_mb!r}.")
    if decode_every is not None and (isinstance(decode_every, bool) or not isinstance(decode_every, int)
                                     or decode_every < 1):
        raise ValueError(f"decode_every must be None or a positive int (decode every k-th step), got {decode_every!r}.")
    limit, missing = int(max_mb * _MB), []
    views = _preview_views(run, int(0.4 * limit), missing)
    views += _extras(run, int(0.25 * limit), missing)
    final = _final_view(run, decode, missing)
    views += [final] if final else []
    room = int(0.97 * limit) - _size(views) - 60_000  # the rest of the page: template, tables, plots
    decoded = _decoded_view(run, room, decode_every, missing) if decode else None
    if not decode:
        missing.append("No VAE decodes of the predicted x0 (exported with decode=False): only the linear previews.")
    views += [decoded] if decoded else []
    page = _assemble(run, views, missing + _decoded_note(decoded, run.i), title)
    while page.nbytes > limit and decoded and len(decoded["sprites"]) > 1:
        kept = sorted(decoded["sprites"])[::-1][::2]  # every other decoded step, the last kept
        decoded["sprites"] = {k: decoded["sprites"][k] for k in sorted(kept)}
        page = _assemble(run, views, missing + _decoded_note(decoded, run.i), title)
    if page.nbytes > limit:
        warnings.warn(f"The page is {page.nbytes / _MB:.1f} MB, over the budget of {max_mb:g} MB: the previews of "
                      f"every step alone take more. Export fewer steps or frames, or raise max_mb.", stacklevel=2)
    return page


# ---------------------------------------------------------------------------------------------- checks


def _check_run(run) -> None:
    if getattr(run, "i", 0) < 1:
        raise ValueError("This run has no step yet, so there is nothing to show: call run.step() or run.finish() "
                         "first, then export it.")
    recorded = next((len(run.trace[n]) for n in ("step.latents", "step.pred_x0") if n in run.trace), run.i)
    if recorded != run.i:
        raise ValueError(f"This run's trace holds {recorded} steps but the run has done {run.i}: a run made by "
                         f"run.branch(k) records only from step k on, and the page needs every step. Export the run "
                         f"it was branched from, or start a new run with these settings.")


def _check_path(path, overwrite: bool, suffix: str) -> pathlib.Path:
    """The path as a Path, after checking its ending, its folder and (without overwrite) that it is new."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or a path, not {type(path).__name__} ({path!r}).")
    path = pathlib.Path(path).expanduser()
    if path.suffix.lower() != suffix:
        raise ValueError(f"The path {str(path)!r} does not end with {suffix}; name the file like 'run{suffix}'.")
    folder = path.parent if str(path.parent) else pathlib.Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"The folder {str(folder)!r} does not exist; create it first "
                                f"(os.makedirs({str(folder)!r})) or choose another path.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} exists; pass overwrite=True to replace it, or choose another name.")
    return path


def _write(path: pathlib.Path, data: bytes, overwrite: bool) -> pathlib.Path:
    """Write `data` to a hidden temporary file beside `path`, then move it into place in one step: a failure
    leaves no half-written file (and an old file, if any, as it was)."""
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    try:
        tmp.write_bytes(data)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{str(path)!r} appeared while the page was written; pass overwrite=True.")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------- images


def _u8(frames) -> np.ndarray:
    """float [..., H, W, C] in [0, 1] -> uint8."""
    a = frames.detach().float().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames, np.float32)
    return (np.clip(a, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _shrink(frames: np.ndarray, side: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> at most `side` pixels on the longest side (area-averaged); smaller ones unchanged."""
    H, W = frames.shape[1:3]
    if max(H, W) <= side:
        return frames
    from PIL import Image

    size = (max(1, round(W * side / max(H, W))), max(1, round(H * side / max(H, W))))
    box = getattr(Image, "Resampling", Image).BOX
    mode = "L" if frames.shape[-1] == 1 else "RGB"
    out = [np.asarray(Image.fromarray(f[..., 0] if mode == "L" else f, mode).resize(size, box)) for f in frames]
    return np.stack(out).reshape(len(frames), size[1], size[0], -1)


def _sprite(grid: np.ndarray, fmt: str = "png") -> str:
    """uint8 [rows, F, H, W, C] -> a data URL of one image: frames left to right, rows top to bottom."""
    from PIL import Image

    R, F, H, W, C = grid.shape
    sheet = grid.transpose(0, 2, 1, 3, 4).reshape(R * H, F * W, C)
    buf = io.BytesIO()
    image = Image.fromarray(sheet[..., 0] if C == 1 else sheet, "L" if C == 1 else "RGB")
    if fmt == "png":
        image.save(buf, format="png")
    else:
        image.save(buf, format="webp", quality=80, method=4)
    return f"data:image/{fmt};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _view(key: str, label: str, group: str, sprites: dict, shape, *, latent: bool, smooth: bool = False,
          rows: list | None = None, explain: str | None = None, still: bool = False,
          row_explain: list | None = None) -> dict:
    """One view of the page: a sprite per step ({step: data URL}) of frames [rows, F, H, W, C]."""
    R, F, H, W = shape[:4]
    return {"key": key, "label": label, "group": group, "sprites": sprites, "rows": R, "frames": F, "h": H, "w": W,
            "latent": latent, "smooth": smooth, "still": still, "explain": explain or EXPLAIN[key],
            "row_labels": rows, "row_explain": row_explain}


def _size(views: list) -> int:
    return sum(len(u) for v in views for u in v["sprites"].values())


# ---------------------------------------------------------------------------------------------- views


def _preview_views(run, budget: int, missing: list) -> list:
    """x_t and predicted x0 through the linear preview, at every step done (see the budget, point 1)."""
    factors, names = run.pipe.preview, {"xt": "step.latents", "x0": "step.pred_x0"}
    if factors is None:
        missing.append("No linear preview factors for this model: x_t and x0 are shown only where decoded.")
        return []
    have = {k: n for k, n in names.items() if n in run.trace}
    for key in set(names) - set(have):
        missing.append(f"{names[key]} was not recorded, so the {'x_t' if key == 'xt' else 'x0'} preview is missing "
                       f"(start the run with the default record).")
    frames = {k: [_u8(factors(run.trace.step(n, s))[0]) for s in range(run.i)] for k, n in have.items()}
    for fmt, side in (("png", _LIVE_SIDE), ("webp", _LIVE_SIDE), ("webp", 32)):
        views = []
        for key, per_step in frames.items():
            sprites = {s: _sprite(_shrink(f, side)[None], fmt) for s, f in enumerate(per_step)}
            shape = (1, *_shrink(per_step[0], side).shape)
            label = "x_t (noisy latents)" if key == "xt" else "predicted x0 (preview)"
            views.append(_view(key, label, "main", sprites, shape, latent=True))
        if _size(views) <= budget:
            break
    return views


def _every(n: int, per_step: int, budget: int) -> list[int]:
    """The steps to show when each costs `per_step` bytes and all together may cost `budget`: every k-th, the
    last included."""
    k = max(1, math.ceil(n * per_step / max(budget, 1)))
    return list(range(n - 1, -1, -k))[::-1]


def _nth(steps: list[int], n: int) -> str:
    """"every 3rd step" for steps [1, 4, 7, ...]; "the last step" for one."""
    if len(steps) < 2:
        return "the last step"
    k = steps[1] - steps[0]
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"every {k}{suffix} step"


def _extras(run, budget: int, missing: list) -> list:
    """Guidance parts and word maps, at every step if they fit in `budget` bytes, else every k-th (point 2)."""
    makers = []
    if not run.guidance:
        missing.append("No guidance parts: the run has guidance_scale = 1 (no unconditional branch).")
    elif run.pipe.preview is None or not all(n in run.trace for n in (
            "step.latents", "step.noise_pred_uncond", "step.noise_pred_text", "step.noise_pred")):
        missing.append("No guidance parts: they need the linear preview and the default record.")
    else:
        makers.append(_guidance_view)
    if any(n.startswith("attn.cross.") for n in run.trace.names()):
        makers.append(_words_view)
    else:
        missing.append("No word heat maps: attention was not captured (start the run with record='all').")
    views = []
    for make in makers:
        last = make(run, [run.i - 1])
        steps = _every(run.i, _size([last]), budget // len(makers))
        views.append(make(run, steps))
        if len(steps) < run.i:
            missing.append(f"{views[-1]['label'].capitalize()} at {_nth(steps, run.i)} only ({len(steps)} of "
                           f"{run.i}), to keep the page small.")
    return views


def _guidance_view(run, steps: list[int]) -> dict:
    import matplotlib

    factors, sprites, shape = run.pipe.preview, {}, None
    magma = matplotlib.colormaps["magma"]
    for s in steps:
        parts = guidance_parts(run, s, "x0")  # each [B, C, F', h, w]
        diff = parts["difference"][0].float().norm(dim=0).numpy()  # [F', h, w]
        diff = magma(diff / max(float(diff.max()), 1e-12))[..., :3]
        grid = np.stack([_u8(factors(parts[k])[0]) for k in ("uncond", "text")] + [_u8(diff)]
                        + [_u8(factors(parts["guided"])[0])])  # [4, F', h, w, 3]
        grid = np.stack([_shrink(g, _LIVE_SIDE) for g in grid])
        sprites[s], shape = _sprite(grid), grid.shape
    return _view("guidance", "guidance parts", "guidance", sprites, shape, latent=True, rows=_GUIDANCE_ROWS,
                 row_explain=_GUIDANCE_EXPLAIN)


def _word_positions(run) -> list[tuple[int, str]]:
    text = run.text
    return [(p, w) for p, (w, special) in enumerate(zip(text.words, text.special)) if not special]


def _words_view(run, steps: list[int]) -> dict:
    from .attention import word_maps

    positions, sprites, shape = _word_positions(run), {}, None
    if not positions:
        return _view("words", "word heat maps", "words", {}, (0, 1, 1, 1), latent=True, rows=[])
    for s in steps:
        m = word_maps(run, [p for p, _ in positions], steps=[s]).numpy()  # [n_words, F', h', w']
        lo, hi = m.min(axis=(1, 2, 3), keepdims=True), m.max(axis=(1, 2, 3), keepdims=True)
        m = (m - lo) / np.maximum(hi - lo, 1e-12)  # each word to 0..1 over the frames
        grid = np.stack([_shrink(_u8(w[..., None]), 32) for w in m])  # [n_words, F', h', w', 1]
        sprites[s], shape = _sprite(grid), grid.shape
    return _view("words", "word heat maps", "words", sprites, shape, latent=True,
                 rows=[f"{p}: {w}" for p, w in positions])


def _final_view(run, decode: bool, missing: list) -> dict | None:
    """The final video: the run's decode (`run.decode()`), or with decode=False the decoded frames its trace
    holds from an earlier `run.decode()`, if any."""
    if not run.done:
        how = "interrupted" if run.interrupted else "stopped"
        missing.append(f"The run {how} after {run.i} of {run.num_steps} steps: there is no final video, and the "
                       f"steps after {run.i - 1} are not in the page.")
        return None
    if decode:
        frames = run.decode().frames  # [F, H, W, 3]
    elif "decode.frames" in run.trace:
        frames = run.trace["decode.frames"][0]  # [F, H, W, 3]
    else:
        missing.append("No final video (exported with decode=False and the run was never decoded).")
        return None
    frames = _shrink(_u8(frames), _DECODE_SIDES[0])
    fmt = "png" if frames.shape[1] * frames.shape[2] <= 128 * 128 else "webp"
    return _view("final", "final video", "main", {-1: _sprite(frames[None], fmt)}, (1, *frames.shape),
                 latent=False, smooth=True, still=True)


def _decoded_view(run, room: int, decode_every: int | None, missing: list) -> dict | None:
    """VAE decodes of the predicted x0 of every k-th step, at the largest size that fits `room` (point 4)."""
    if "step.pred_x0" not in run.trace:
        missing.append("step.pred_x0 was not recorded: no decoded steps.")
        return None
    decoder, S = StepDecoder(run), run.i
    last = _u8(decoder(S - 1))  # [F, H, W, 3]
    side, steps = _DECODE_SIDES[-1], [S - 1]
    for side in [min(max(last.shape[1:3]), _DECODE_SIDES[0])] + [d for d in _DECODE_SIDES if d < max(last.shape[1:3])]:
        fmt = "png" if side <= 128 and last.shape[1] * last.shape[2] <= 128 * 128 else "webp"
        cost = len(_sprite(_shrink(last, side)[None], fmt))
        steps = _every(S, cost, room) if decode_every is None else list(range(S - 1, -1, -decode_every))[::-1]
        if cost <= room and (len(steps) >= min(S, 5) or decode_every is not None):
            break
    if room < len(_sprite(_shrink(last, side)[None], fmt)) and decode_every is None:
        missing.append("No decoded steps: the previews and the final video fill the size budget (raise max_mb).")
        return None
    sprites = {s: _sprite(_shrink(_u8(decoder(s)), side)[None], fmt) for s in steps}
    shape = (1, *_shrink(last, side).shape)
    view = _view("decoded", "predicted x0 (VAE decode)", "main", sprites, shape, latent=False, smooth=True)
    view["reduced_to"] = side if side < max(last.shape[1:3]) else None
    return view


def _decoded_note(view: dict | None, n: int) -> list[str]:
    """What the page says when not every step is decoded, or not at full size."""
    if view is None or (len(view["sprites"]) == n and not view["reduced_to"]):
        return []
    steps = sorted(view["sprites"])
    smaller = f", at most {view['reduced_to']} px a side" if view["reduced_to"] else ""
    return [f"Decoded x0 at {len(steps)} of {n} steps ({_nth(steps, n)}, the last included){smaller}: the slider "
            f"shows the nearest decoded step between them."]


# ---------------------------------------------------------------------------------------------- the rest


def _noise_levels(run) -> tuple[str, list[float]]:
    """(name, the noise level at each of the run's timesteps): σ of a flow-matching schedule (x_t = (1-σ) x0 +
    σ noise), else the noise scale √(1-ᾱ_t) of x_t = √ᾱ_t x0 + √(1-ᾱ_t) noise. Both go from ~1 (noise) to 0."""
    sched, ts = run.scheduler, [float(t) for t in run.timesteps]
    if run.pipe.prediction_type == "flow":
        sigmas = getattr(sched, "sigmas", None)
        T = float(sched.config.num_train_timesteps)
        if sigmas is not None and len(sigmas) >= len(ts):
            return "noise level \u03c3", [float(s) for s in sigmas[: len(ts)]]
        return "noise level \u03c3", [t / T for t in ts]
    ac = torch.as_tensor(sched.alphas_cumprod).double().cpu().numpy()  # [T]
    return "noise scale \u221a(1-\u0101_t)", [float(np.sqrt(1 - np.interp(t, np.arange(len(ac)), ac))) for t in ts]


def _schedule_svg(noise: list[float], done: int) -> tuple[str, list[tuple[float, float]]]:
    """A small SVG chart of the noise level per step (done steps filled), and each step's point in it."""
    W, H, pad = 420, 150, 30
    n = len(noise)
    pts = [(pad + (W - 2 * pad) * (i / max(n - 1, 1)), H - pad - (H - 2 * pad) * min(max(v, 0.0), 1.0))
           for i, v in enumerate(noise)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    dots = "".join(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='2.5' fill='{'#1f77b4' if i < done else '#fff'}' "
                   f"stroke='#1f77b4'/>" for i, (x, y) in enumerate(pts))
    axes = (f"<line x1='{pad}' y1='{H - pad}' x2='{W - pad}' y2='{H - pad}' stroke='#999'/>"
            f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{H - pad}' stroke='#999'/>"
            f"<text x='{pad - 4}' y='{pad + 4}' text-anchor='end' font-size='10'>1</text>"
            f"<text x='{pad - 4}' y='{H - pad + 4}' text-anchor='end' font-size='10'>0</text>"
            f"<text x='{W / 2}' y='{H - 6}' text-anchor='middle' font-size='11'>denoising step (0 .. {n - 1})</text>")
    svg = (f"<svg width='{W}' height='{H}' viewBox='0 0 {W} {H}' role='img' aria-label='noise level per step'>"
           f"{axes}<polyline points='{line}' fill='none' stroke='#1f77b4'/>{dots}"
           f"<circle id='t2v-marker' r='6' fill='none' stroke='#e22' stroke-width='2'/></svg>")
    return svg, pts


def _png_of(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _record_html(run) -> str:
    """The run record as a summary table and the whole JSON (credential-like entries left out)."""
    from .video import _json_default, _scrub

    rec = _scrub(run.record(), [])
    model = rec.get("model", {})
    rows = [("prompt", rec["prompt"]), ("negative prompt", rec["negative_prompt"] or "(none)"), ("seed", rec["seed"]),
            ("steps done", f"{rec['steps_done']} of {rec['num_inference_steps']}"),
            ("size", f"{rec['num_frames']} frames of {rec['width']}x{rec['height']}"),
            ("guidance scale", rec["guidance_scale"]), ("scheduler", rec["scheduler"]),
            ("model", model.get("preset") or model.get("source") or "components"),
            ("family, dtype, device", f"{rec['family']}, {rec['dtype']}, {rec['device']}"),
            ("versions", ", ".join(f"{k} {v}" for k, v in rec["versions"].items()))]
    table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    full = html.escape(json.dumps(rec, indent=1, default=_json_default))
    return (f"<table class='t2v-summary'>{table}</table><details><summary>the whole record (JSON: everything needed "
            f"to make this video again)</summary><pre>{full}</pre></details>")


def _data(run, views: list, noise_name: str, noise: list, pts: list) -> str:
    """The page's JSON, safe inside a <script> element."""
    import matplotlib

    steps = [{"t": int(round(float(run.timesteps[i]))), "noise": noise[i], "guided": run.guided_at(run.timesteps[i]),
              "x": round(pts[i][0], 1), "y": round(pts[i][1], 1)} for i in range(run.i)]
    F = run.params["num_frames"]
    turbo = matplotlib.colormaps["turbo"](np.linspace(0, 1, 9))[:, :3]
    data = {"num_frames": F, "fps": float(run.pipe.defaults.get("fps") or 8.0), "total": run.num_steps,
            "latent_index": [run.pipe.family.latent_index(f) for f in range(F)], "steps": steps,
            "noise_name": noise_name, "guidance": bool(run.guidance),
            "colormap": np.round(turbo * 255).astype(int).tolist(), "views": views}
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")


def _sections(run, views: list, svg: str) -> list[tuple[str, str]]:
    keys = {v["key"] for v in views}
    strip = "<p class='t2v-note'>All frames of this step (click one to pick it):</p><canvas id='t2v-strip'></canvas>"
    out = [("The denoising, step by step", f"<div class='t2v-views' id='t2v-box-main'></div>{strip}")]
    if "guidance" in keys:
        out.append(("Guidance: what the prompt adds", f"<p class='t2v-note'>{html.escape(EXPLAIN['guidance'])}</p>"
                                                       "<div class='t2v-views' id='t2v-box-guidance'></div>"))
    if "words" in keys:
        out.append(("Where each word looks", f"<p class='t2v-note'>{html.escape(EXPLAIN['words'])}</p>"
                                             "<div class='t2v-views' id='t2v-box-words'></div>"))
    schedule = _png_of(viz.noise_schedule(run.scheduler, run.timesteps))
    out.append(("The noise at each step", f"{svg}<p class='t2v-note'>How much noise x_t still holds at each step "
                "(filled: steps done; red: the step shown). The sampler removes it a little at a time.</p>"
                f"<details><summary>the whole schedule (every training timestep)</summary>"
                f"<img src='{schedule}' alt='noise schedule'></details>"))
    out.append(("The tokens the text encoder reads", "<p class='t2v-note'>The prompt as the model reads it: cut into "
                "tokens, each a number (its id), between start and end markers. The word heat maps use these "
                "positions.</p>" + viz.token_table_html(run.text.tokens, run.text.input_ids)))
    out.append(("The run record", "<p class='t2v-note'>The settings that made this run: with the same model and "
                "library versions they give the same video again.</p>" + _record_html(run)))
    return out


def _assemble(run, views: list, missing: list, title: str | None) -> Page:
    views = sorted(views, key=lambda v: _ORDER.index(v["key"]))
    noise_name, noise = _noise_levels(run)
    svg, pts = _schedule_svg(noise, run.i)
    title = title or run.params["prompt"] or "(empty prompt)"
    model = run.pipe.source.get("preset") or run.pipe.source.get("source") or run.pipe.family.name
    p = run.params
    subtitle = html.escape(f"{model} \u00b7 seed {p['seed']} \u00b7 {run.i} of {run.num_steps} steps \u00b7 "
                           f"{p['num_frames']} frames of {p['width']}x{p['height']} \u00b7 made with t2v_nb")
    data = _data(run, views, noise_name, noise, pts)
    text = page_template.render(title=title, data_json=data, subtitle=subtitle, missing=missing,
                                sections=_sections(run, views, svg), num_steps=run.i, num_frames=p["num_frames"])
    parts = {v["key"]: sum(len(u) for u in v["sprites"].values()) for v in views}
    parts["rest"] = len(text.encode("utf-8")) - sum(parts.values())
    decoded = next((v for v in views if v["key"] == "decoded"), None)
    return Page(text, title, parts, sorted(decoded["sprites"]) if decoded else [], list(missing),
                _contact_sheet(run, views))


def _contact_sheet(run, views: list) -> bytes:
    """Steps x frames as one PNG: up to 8 evenly spaced steps, the decoded x0 where decoded, else its preview."""
    from PIL import Image, ImageDraw

    by_key = {v["key"]: v for v in views}
    rows = np.unique(np.linspace(0, run.i - 1, min(run.i, 8)).round().astype(int))
    cell, label_w, F = 64, 96, run.params["num_frames"]
    cell_w = max(8, round(cell * run.params["width"] / run.params["height"]))
    sheet = Image.new("RGB", (label_w + F * (cell_w + 2), len(rows) * (cell + 2) + 2), "white")
    draw = ImageDraw.Draw(sheet)
    for r, s in enumerate(rows):
        v = by_key.get("decoded") if s in by_key.get("decoded", {"sprites": {}})["sprites"] else by_key.get("x0")
        if v is None:
            continue
        strip = Image.open(io.BytesIO(base64.b64decode(v["sprites"][s].split(",", 1)[1]))).convert("RGB")
        y = 2 + r * (cell + 2)
        draw.text((4, y + 4), f"step {s}\nt={int(run.timesteps[s])}\n{'decoded' if v['key'] == 'decoded' else 'preview'}",
                  fill="black")
        for f in range(F):
            lf = run.pipe.family.latent_index(f) if v["latent"] else f
            lf = min(lf, v["frames"] - 1)
            tile = strip.crop((lf * v["w"], 0, (lf + 1) * v["w"], v["h"])).resize((cell_w, cell), Image.NEAREST)
            sheet.paste(tile, (label_w + f * (cell_w + 2), y))
    buf = io.BytesIO()
    sheet.save(buf, format="png", optimize=True)
    return buf.getvalue()
