"""Pictures of what the model computed: arrays in, a matplotlib `Figure` or an HTML string out.

Every function here is pure. It builds a `matplotlib.figure.Figure` directly (not through pyplot),
so nothing is shown by force and no global figure state is left behind: return the figure as the
last expression of a notebook cell and Jupyter draws it (as PNG, also when pyplot was never
imported); `fig.savefig("x.png")` writes it.
Inputs may be torch tensors (any device or dtype) or numpy arrays.

    >>> run = pipe.start("a red circle moving right", seed=0).finish()
    >>> token_table_html(run.text.tokens, run.text.input_ids)       # stage 1: what the model reads
    >>> noise_schedule(run.scheduler, run.timesteps)                # stage 2: the noise it removes
    >>> latent_stats(run.trace)                                     # ... step by step
    >>> trajectory_pca(run.trace)                                   # ... as a path
"""

from __future__ import annotations

import html
import io
import math
import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .families.base import MARKER_NAMES as _SHORT
from .families.base import SPECIAL_TOKEN, WORD_END, WORD_START, token_joins

__all__ = [
    "token_table_html", "token_table", "embedding_norms", "token_similarity", "prompt_similarity",
    "noise_schedule", "schedule_table_html", "latent_stats", "steps_frames_grid", "latent_channels",
    "word_heatmaps", "temporal_attention", "trajectory_pca", "guidance_parts",
]

_WORD_END_MARK = "␣"  # how a word end or start is shown: "red</w>" -> "red␣", "\u2581red" -> "␣red"
_DIVERGING = "RdBu_r"  # negative blue, zero white, positive red
_NO_TICKS = {"xticks": [], "yticks": []}


# ---------------------------------------------------------------------------------------- helpers


class _Figure(Figure):
    """A Figure that Jupyter shows as a PNG even when neither pyplot nor `%matplotlib inline` is loaded."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def _np(x: Any) -> np.ndarray:
    """A torch tensor (any device/dtype) or array-like -> numpy array (floats as float32)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    a = np.asarray(x)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


def _shape_error(name: str, a: np.ndarray, form: str, fix: str = "") -> ValueError:
    return ValueError(f"{name} has shape {tuple(a.shape)}, which is not of the form {form}.{' ' + fix if fix else ''}")


def _images(x: Any) -> np.ndarray:
    """Images as float in [0, 1] (uint8 images are divided by 255)."""
    a = _np(x)
    return np.clip(a / 255.0 if a.dtype == np.uint8 else a.astype(np.float32), 0.0, 1.0)


_joins = token_joins  # a lone T5 word start is shown as a word start of nothing (as "␣")


def _show_token(tok: str) -> str:
    """'red</w>' -> 'red␣' (CLIP); '▁red' -> '␣red' (T5); '<|startoftext|>' -> '<start>'; '</s>' -> '<end>'."""
    if tok in _SHORT:
        return _SHORT[tok]
    word, joins = _joins(tok)
    return {"end": word + _WORD_END_MARK, "start": _WORD_END_MARK + word}.get(joins, tok)


def _token_role(tok: str, pos: int, n: int) -> str:
    if SPECIAL_TOKEN.match(tok):
        return "start of text" if pos == 0 and tok != "</s>" else ("end of text" if pos == n - 1 else "special")
    return {"end": "word end", "start": "word start"}.get(_joins(tok)[1], "")


def _positions(embeddings: Any, n: int, name: str = "embeddings") -> np.ndarray:
    """[1, L, D] or [L, D] -> [L, D], checking that the first n (>= 1) positions are real tokens."""
    e = _np(embeddings)
    e = e[0] if e.ndim == 3 and e.shape[0] == 1 else e
    if e.ndim != 2:
        raise _shape_error(name, e, "[1, L, D] or [L, D]", "For a batch, pass one prompt: embeddings[0].")
    if not 0 < n <= len(e):
        raise ValueError(f"Got {n} tokens for {name} of shape {tuple(e.shape)}: expected 1 to {len(e)} tokens "
                         f"(run.text.tokens).")
    return e


def _cosine(a: np.ndarray) -> np.ndarray:
    """Cosine similarity between the rows of a [N, D] array -> [N, N]."""
    unit = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def _labelled_matrix(fig: Figure, ax, m: np.ndarray, labels: Sequence[str], cbar: str, annotate: bool = False):
    """A [N, N] similarity in -1..1 with labelled rows and columns; `annotate` writes the values in."""
    im = ax.imshow(m, cmap=_DIVERGING, vmin=-1, vmax=1)
    ax.set_xticks(range(len(labels)), labels, **({"rotation": 30, "ha": "right"} if annotate else {"rotation": 90}))
    ax.set_yticks(range(len(labels)), labels)
    fig.colorbar(im, ax=ax, shrink=0.8, label=cbar)
    if annotate:
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9, color="white" if abs(v) > 0.6 else "black")
    return im


def _alphas_cumprod(scheduler: Any) -> np.ndarray:
    ac = getattr(scheduler, "alphas_cumprod", scheduler)
    if not hasattr(ac, "__len__") or isinstance(ac, str):
        raise TypeError(f"Expected a diffusers scheduler with `alphas_cumprod` (or that array), got "
                        f"{type(scheduler).__name__}.")
    ac = _np(ac).astype(np.float64)
    if ac.ndim != 1 or len(ac) < 2:
        raise _shape_error("alphas_cumprod", ac, "[T] with T >= 2 training timesteps")
    return ac


def _schedule(scheduler: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(t, signal scale, noise scale, flow) on the training timesteps: √ᾱ_t and √(1-ᾱ_t) for a diffusion
    schedule; 1 - σ and σ with σ = t / T for a flow-matching scheduler (x_t = (1 - σ) x_0 + σ noise,
    timestep t = T σ)."""
    from .schedulers import prediction_type

    if hasattr(scheduler, "config") and prediction_type(scheduler) == "flow":
        T = int(scheduler.config.num_train_timesteps)
        t_all = np.arange(T + 1, dtype=np.float64)
        sigma = t_all / T
        return t_all, 1 - sigma, sigma, True
    ac = _alphas_cumprod(scheduler)  # [T]
    return np.arange(len(ac), dtype=np.float64), np.sqrt(ac), np.sqrt(1 - ac), False


def _per_step(trace: Any, name: str) -> np.ndarray:
    """trace[name] as numpy [S, ...]; `trace` may be a Trace, a dict or a Run."""
    trace = getattr(trace, "trace", trace)
    if name not in trace:
        names = trace.names() if hasattr(trace, "names") else sorted(trace)
        raise ValueError(f"{name!r} is not in the trace (it holds: {', '.join(names) or 'nothing'}). "
                         f"Record it: pipe.start(..., record=[..., {name!r}]).")
    a = _np(trace[name])
    if a.ndim < 2:
        raise _shape_error(f"trace[{name!r}]", a, "[S, ...] (one value per denoising step)")
    return a


def _ids(ids: Any, n: int) -> list[int] | None:
    """The first `n` token ids (of a [n] list or the whole [1, 77] input_ids), or None."""
    if ids is None:
        return None
    out = [int(i) for i in _np(ids).reshape(-1)[:n]]
    if len(out) < n:
        raise ValueError(f"Got {len(out)} ids for {n} tokens; pass one id per token (or run.text.input_ids).")
    return out


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], styles: Sequence[str] = (),
                caption: str = "") -> str:
    """An HTML table with inline styles (they survive notebook sanitizers); cells are HTML already."""
    cell = "padding:2px 10px;border:1px solid #ccc;"
    out = [f"<caption style='caption-side:bottom;color:#666'>{caption}</caption>" if caption else "",
           "<tr>" + "".join(f"<th style='{cell}'>{h}</th>" for h in head) + "</tr>"]
    for r, row in enumerate(rows):
        style = styles[r] if r < len(styles) else ""
        out.append(f"<tr style='{style}'>" + "".join(f"<td style='{cell}'>{v}</td>" for v in row) + "</tr>")
    return f"<table style='border-collapse:collapse'>{''.join(out)}</table>"


def _grid(row_labels: Sequence[str], col_labels: Sequence[str], H: int, W: int,
          extra_w: float = 0.9) -> tuple[Figure, np.ndarray]:
    """A figure with a grid of tick-free image axes of aspect H:W, rows and columns labelled."""
    rows, cols = len(row_labels), len(col_labels)
    cell = min(1.8, 13.0 / cols)
    fig = _Figure(figsize=(cols * cell + extra_w, rows * cell * H / W + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, subplot_kw=_NO_TICKS)
    for ax, label in zip(axes[:, 0], row_labels):
        ax.set_ylabel(label)
    for ax, label in zip(axes[0], col_labels):
        ax.set_title(label, fontsize=9)
    return fig, axes


def _panels(fig: Figure, n: int, max_cols: int, **subplot_kw) -> list:
    """n axes in rows of at most `max_cols`; the unused ones of the last row are removed."""
    cols = min(n, max_cols)
    axes = list(fig.subplots(math.ceil(n / cols), cols, squeeze=False, subplot_kw=subplot_kw).flat)
    for ax in axes[n:]:
        ax.remove()
    return axes[:n]


# ---------------------------------------------------------------------------------- 1. the text


def token_table_html(tokens: Sequence[str], ids: Any = None) -> str:
    """An HTML table of the tokens the text encoder reads: position, token, id, role.

    A trailing `</w>` (CLIP's "this token ends a word") is shown as ␣; start and end markers are
    shaded. `ids` may be the whole `[1, 77]` `input_ids`: only the first `len(tokens)` are shown.

    Example: `IPython.display.HTML(token_table_html(run.text.tokens, run.text.input_ids))`
    """
    n, id_list = len(tokens), _ids(ids, n=len(tokens))
    rows, styles = [], []
    for pos, tok in enumerate(tokens):
        role = _token_role(tok, pos, n)
        word, joins = _joins(tok)
        mark = f"<b style='color:#c33'>{_WORD_END_MARK}</b>"
        shown = {"end": html.escape(word) + mark, "start": mark + html.escape(word)}.get(joins, html.escape(tok))
        rows.append([str(pos), f"<code>{shown}</code>"] + ([str(id_list[pos])] if id_list else []) + [role])
        styles.append("background:#e8eefc" if role.endswith("of text") else "")
    head = ["position", "token"] + (["id"] if id_list else []) + ["note"]
    t5 = any(_joins(t)[1] == "start" for t in tokens)
    caption = (f"{n} tokens; {_WORD_END_MARK} marks " + (f"<code>{WORD_START}</code>, the start of a word" if t5 else
                                                         f"<code>{html.escape(WORD_END)}</code>, the end of a word"))
    return _html_table(head, rows, styles, caption)


def token_table(tokens: Sequence[str], ids: Any = None) -> Figure:
    """The token table of `token_table_html` as a figure (for saving or printing).

    Example: `token_table(run.text.tokens, run.text.input_ids).savefig("tokens.png")`
    """
    n, id_list = len(tokens), _ids(ids, n=len(tokens))
    cols = ["position", "token"] + (["id"] if id_list else []) + ["note"]
    cells = [[str(p), _show_token(t)] + ([str(id_list[p])] if id_list else []) + [_token_role(t, p, n)]
             for p, t in enumerate(tokens)]
    fig = _Figure(figsize=(4.5, 0.24 * (n + 1) + 0.5), layout="constrained")
    ax = fig.add_subplot()
    ax.axis("off")
    widths = {"position": 0.6, "token": 1.0, "id": 0.5, "note": 1.0}
    ax.table(cellText=cells or [[""] * len(cols)], colLabels=cols, cellLoc="left", bbox=(0, 0, 1, 1),
             colWidths=[widths[c] for c in cols])
    ax.set_title(f"The {n} tokens the text encoder reads\n({_WORD_END_MARK} = end of a word)", fontsize=10)
    return fig


def embedding_norms(embeddings: Any, tokens: Sequence[str], n_padding: int = 3) -> Figure:
    """Bar chart of the L2 norm of the text encoder's output at each of the L positions.

    Prompt tokens are coloured, padding positions grey; the x axis names the prompt tokens and
    the first `n_padding` padding positions, then "…".

    Example: `embedding_norms(run.text.embeddings, run.text.tokens)`
    """
    n = len(tokens)
    e = _positions(embeddings, n)  # [L, D]
    norms = np.linalg.norm(e, axis=-1)  # [L]
    k = min(n_padding, len(e) - n)
    fig = _Figure(figsize=(min(14.0, max(6.0, 0.14 * len(e) + 1.5)), 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(n), norms[:n], color="tab:blue", label="prompt tokens")
    ax.bar(np.arange(n, len(e)), norms[n:], color="0.7", label="padding")
    labels = [_show_token(t) for t in tokens] + ["pad"] * k + (["…"] if n + k < len(e) else [])
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
    ax.set_xlim(-0.7, len(e) - 0.3)
    ax.set_xlabel(f"token position (the prompt, then padding up to {len(e)})")
    ax.set_ylabel("L2 norm of the embedding")
    ax.set_title("How large the text encoder's output is at each position")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def token_similarity(embeddings: Any, tokens: Sequence[str]) -> Figure:
    """Heat map of the cosine similarity between the embeddings at the prompt's token positions.

    Example: `token_similarity(run.text.embeddings, run.text.tokens)`
    """
    n = len(tokens)
    e = _positions(embeddings, n)  # [L, D]
    side = min(12.0, max(4.5, 0.3 * n + 2.5))
    fig = _Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.add_subplot()
    _labelled_matrix(fig, ax, _cosine(e[:n]), [_show_token(t) for t in tokens], "cosine similarity")
    ax.set_xlabel("token")
    ax.set_ylabel("token")
    ax.set_title("How alike the tokens' embeddings are (1 = same direction)")
    return fig


def prompt_similarity(embeddings_list: Sequence[Any], prompts: Sequence[str], pool: str = "mean",
                      lengths: Sequence[int] | None = None) -> Figure:
    """Cosine similarity between several prompts, each pooled to one vector.

    pool="mean" averages the embedding over positions: over the first `lengths[i]` (the prompt's
    tokens, `len(run.text.tokens)`) if given, else over all L positions, padding included.
    pool="eos" takes the end-of-text position `lengths[i] - 1` (CLIP's pooled output); it needs
    `lengths`. Already pooled `[D]` vectors are used as they are.

    Example: `prompt_similarity([r.text.embeddings for r in runs], [r.params["prompt"] for r in runs])`
    """
    if len(embeddings_list) != len(prompts) or not prompts:
        raise ValueError(f"Got {len(embeddings_list)} embeddings and {len(prompts)} prompts; pass one of each per "
                         f"prompt (at least one).")
    if pool not in ("mean", "eos") or (pool == "eos" and lengths is None):
        raise ValueError(f"pool must be 'mean' or 'eos' (the latter with lengths=[len(tokens), ...]), got {pool!r}.")
    vectors = []
    for i, emb in enumerate(embeddings_list):
        e = _np(emb)
        if e.ndim == 1:
            vectors.append(e)
            continue
        n = len(e[0] if e.ndim == 3 else e) if lengths is None else int(lengths[i])
        e = _positions(e, n, f"embeddings_list[{i}]")  # [L, D]
        vectors.append(e[:n].mean(0) if pool == "mean" else e[n - 1])
    if len({v.shape for v in vectors}) > 1:
        raise ValueError(f"The prompts' vectors differ in size: {[v.shape for v in vectors]}; use one text encoder.")
    labels = [p if len(p) <= 28 else p[:27] + "…" for p in prompts]
    labels = [p if p.strip() else repr(p) for p in labels]  # show the empty prompt as ''
    side = max(4.5, 0.9 * len(prompts) + 3)
    fig = _Figure(figsize=(side + 1.6, side), layout="constrained")
    ax = fig.add_subplot()
    _labelled_matrix(fig, ax, _cosine(np.stack(vectors)), labels, "cosine similarity", annotate=True)
    ax.set_xlabel("prompt")
    ax.set_ylabel("prompt")
    how = "mean over tokens" if pool == "mean" else "end-of-text token"
    ax.set_title(f"How alike the prompts' embeddings are\n(cosine similarity of the {how})")
    return fig


# ------------------------------------------------------------------------------------ 2. the noise


def noise_schedule(scheduler: Any, timesteps: Any = None) -> Figure:
    """The signal and noise in x_t = √ᾱ_t·x_0 + √(1-ᾱ_t)·noise, and their ratio, at each training timestep.

    `scheduler` is a diffusers scheduler (or its `alphas_cumprod` array, ᾱ). For a flow-matching scheduler
    (Wan, toy-shapes-flow) the mix is x_t = (1-σ)·x_0 + σ·noise with σ = t / T. The `timesteps` a
    run visits are marked with dots and vertical lines.

    Example: `noise_schedule(run.scheduler, run.timesteps)`
    """
    t_all, signal, noise, flow = _schedule(scheduler)
    snr = np.where(noise > 1e-6, signal**2 / np.maximum(noise**2, 1e-20), np.nan)  # flow's σ = 0 at t = 0: no finite SNR
    fig = _Figure(figsize=(7.5, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(t_all, signal, label="signal scale 1-σ" if flow else "signal scale √ᾱ_t")
    top.plot(t_all, noise, label="noise scale σ = t / T" if flow else "noise scale √(1-ᾱ_t)")
    bottom.semilogy(t_all, snr, color="tab:green", label="SNR = (1-σ)² / σ²" if flow else "SNR = ᾱ_t / (1-ᾱ_t)")
    if timesteps is not None:
        ts = _np(timesteps).astype(np.float64).reshape(-1)
        for ax in (top, bottom):
            for t in ts:
                ax.axvline(t, color="0.8", lw=0.8, zorder=0)
        top.plot(ts, np.interp(ts, t_all, signal), "o", color="tab:blue", ms=4)
        top.plot(ts, np.interp(ts, t_all, noise), "o", color="tab:orange", ms=4)
        bottom.plot(ts, np.interp(ts, t_all, snr), "o", color="tab:green", ms=4,
                    label=f"the {len(ts)} timesteps this run visits")
    top.set_ylabel("scale factor")
    top.set_title("How much of x_t is signal and how much is noise")
    top.legend(fontsize=8)
    bottom.set_ylabel("signal-to-noise ratio (log scale)")
    end = "pure noise" if flow or noise[-1] > 1 - 1e-9 else "almost pure noise"
    bottom.set_xlabel(f"timestep t (0 = clean image, {t_all[-1]:.0f} = {end})")
    bottom.legend(fontsize=8)
    return fig


def schedule_table_html(scheduler: Any, timesteps: Any) -> str:
    """An HTML table with one row per denoising step: timestep t, ᾱ_t (or σ for flow matching), signal and
    noise scales, SNR.

    Example: `IPython.display.HTML(schedule_table_html(run.scheduler, run.timesteps))`
    """
    t_all, signal, noise, flow = _schedule(scheduler)
    ts = _np(timesteps).astype(np.float64).reshape(-1)
    rows = []
    sigmas = _np(getattr(scheduler, "sigmas", [])).astype(np.float64).reshape(-1) if flow else np.zeros(0)
    for i, t in enumerate(ts):
        a, s = float(np.interp(t, t_all, signal)), float(np.interp(t, t_all, noise))
        if i < len(sigmas) and len(sigmas) >= len(ts):  # the scheduler's own σ (integer timesteps round it)
            a, s = 1 - float(sigmas[i]), float(sigmas[i])
        level = s if flow else a * a
        rows.append([str(i), f"{t:g}", f"{level:.4f}", f"{a:.4f}", f"{s:.4f}", f"{a * a / max(s * s, 1e-20):.3g}"])
    head = ["σ", "signal 1-σ", "noise σ"] if flow else ["ᾱ_t", "signal √ᾱ_t", "noise √(1-ᾱ_t)"]
    return _html_table(["step", "timestep t", *head, "SNR"], rows)


def latent_stats(trace: Any, names: Sequence[str] = ("step.latents", "step.pred_x0")) -> Figure:
    """Mean, mean ± std and min..max of recorded `step.*` tensors at each denoising step, one panel each.

    `trace` is `run.trace` (or a dict name -> [S, ...] array, or the run).

    Example: `latent_stats(run.trace, names=("step.latents", "step.noise_pred"))`
    """
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("names is empty; pass names of step.* tensors in the trace, e.g. ('step.latents',).")
    fig = _Figure(figsize=(7.5, 2.6 * len(names) + 0.6), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        a = _per_step(trace, name)
        flat = a.reshape(len(a), -1).astype(np.float64)  # [S, N]
        steps, mean, std = np.arange(len(a)), flat.mean(1), flat.std(1)
        ax.fill_between(steps, flat.min(1), flat.max(1), color="tab:blue", alpha=0.15, label="min .. max")
        ax.fill_between(steps, mean - std, mean + std, color="tab:blue", alpha=0.35, label="mean ± std")
        ax.plot(steps, mean, "o-", color="tab:blue", ms=3, label="mean")
        ax.set_title(name)
        ax.set_ylabel("value")
        ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("denoising step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("How the recorded tensors' values spread at each step")
    return fig


def trajectory_pca(trace: Any, name: str = "step.latents", also: Sequence[str] = ("step.pred_x0",)) -> Figure:
    """The path the latents take through denoising, projected to 2-D by PCA, with steps numbered.

    Each step's tensor is flattened to one point; one PCA (numpy SVD of the centred points) is fitted
    on all series together, so the paths share axes. `trace` is `run.trace` (series `name` and the
    recorded names in `also`) or one [S, ...] array (then `also` is not used).

    Example: `trajectory_pca(run.trace, "step.latents", also=("step.pred_x0",))`
    """
    also = [also] if isinstance(also, str) else also
    if isinstance(trace, (torch.Tensor, np.ndarray)):
        series = {name: _np(trace)}
        if series[name].ndim < 2:
            raise _shape_error("trace", series[name], "[S, ...] (one tensor per denoising step)")
    else:
        source = getattr(trace, "trace", trace)
        for missing in [n for n in also if n not in source]:
            warnings.warn(f"{missing!r} is not in the trace; its path is left out.", stacklevel=2)
        series = {n: _per_step(trace, n) for n in (name, *also) if n == name or n in source}
    flat = [s.reshape(len(s), -1).astype(np.float32) for s in series.values()]  # each [S, N]
    if len({f.shape[1] for f in flat}) > 1:
        raise ValueError(f"The series differ in size: {[tuple(s.shape) for s in series.values()]}.")
    x = np.concatenate(flat)  # [S_total, N]
    centred = x - x.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = np.zeros((2, x.shape[1]), np.float32)
    pcs[: len(vt[:2])] = vt[:2]  # the first two principal directions (zero if there are fewer)
    coords = centred @ pcs.T  # [S_total, 2]
    share = np.pad(sv[:2] ** 2, (0, 2 - len(sv[:2]))) / max(float((sv**2).sum()), 1e-30)
    fig = _Figure(figsize=(7, 6), layout="constrained")
    ax = fig.add_subplot()
    start, span = 0, max(float(np.ptp(coords, axis=0).max()), 1e-12)
    for (label, s), color in zip(series.items(), ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]):
        p = coords[start : start + len(s)]
        start += len(s)
        ax.plot(p[:, 0], p[:, 1], "o-", color=color, ms=4, lw=1, label=label)
        for i in range(len(p) - 1):
            ax.annotate("", xy=p[i + 1], xytext=p[i], arrowprops=dict(arrowstyle="->", color=color, lw=1.2))
        last = None
        for i in range(len(p)):  # number the steps, skipping those that would overprint the last number
            if last is None or np.linalg.norm(p[i] - last) > 0.03 * span:
                ax.annotate(str(i), p[i], textcoords="offset points", xytext=(4, 4), fontsize=8, color=color)
                last = p[i]
    ax.set_xlabel(f"principal component 1 ({share[0]:.0%} of the variance)")
    ax.set_ylabel(f"principal component 2 ({share[1]:.0%} of the variance)")
    ax.set_title("The path through denoising (2-D PCA; numbers are steps)")
    ax.legend(fontsize=8)
    return fig


def guidance_parts(uncond: Any, text: Any, guided: Any, preview_fn: Callable | None = None,
                   frame: int = 0) -> Figure:
    """Classifier-free guidance in four panels: unconditional, text-conditioned, what the words add, guided.

    Inputs are latents `[B, C, F, h, w]` / `[C, F, h, w]` (e.g. the step's `noise_pred_uncond`,
    `noise_pred_text`, `noise_pred`, or their predicted x0) or images `[F, H, W, 3]`. Latents are
    shown through `preview_fn` (latents -> images [..., F, h, w, 3], e.g. `pipe.preview`) if given,
    else as their first three channels rescaled to RGB. The third panel is the per-pixel L2 norm of
    (text - uncond) over channels (over RGB for images).

    Example: `guidance_parts(x0_uncond, x0_text, step.pred_x0, preview_fn=pipe.preview)`
    """
    u, c, g = (_np(v) for v in (uncond, text, guided))
    if not u.shape == c.shape == g.shape:
        raise ValueError(f"uncond, text and guided must have one shape, got {u.shape}, {c.shape}, {g.shape}.")
    as_images = preview_fn is None and u.ndim == 4 and u.shape[-1] == 3  # [F, H, W, 3]
    if not as_images and u.ndim not in (4, 5):
        raise _shape_error("uncond", u, "[B, C, F, h, w], [C, F, h, w] (latents) or [F, H, W, 3] (images)")
    if not as_images:
        u, c, g = (v[0] if v.ndim == 5 else v for v in (u, c, g))  # [C, F, h, w]
    n_frames = u.shape[0 if as_images else 1]
    if not -n_frames <= frame < n_frames:
        raise ValueError(f"frame={frame} is out of range for {n_frames} frames.")
    how = ""
    if as_images:
        panels = [_images(v[frame]) for v in (u, c, g)]
        diff = np.linalg.norm(c[frame] - u[frame], axis=-1)  # [H, W]
    elif preview_fn is not None:
        outs = [_np(preview_fn(v)) for v in (uncond, text, guided)]  # each [..., F, h, w, 3]
        panels = [_images(o.reshape(-1, *o.shape[-4:])[0, frame]) for o in outs]
    else:  # a crude look without a preview: channels 0-2 as RGB, on one scale
        rgb = [np.moveaxis(v[:3, frame], 0, -1) for v in (u, c, g)]  # [h, w, <=3]
        rgb = [np.repeat(p[..., :1], 3, -1) if p.shape[-1] < 3 else p for p in rgb]
        lo, hi = min(p.min() for p in rgb), max(p.max() for p in rgb)
        panels = [(p - lo) / max(hi - lo, 1e-12) for p in rgb]
        how = " (latent channels 0-2 as RGB)"
    if not as_images:
        diff = np.linalg.norm(c[:, frame] - u[:, frame], axis=0)  # [h, w]
    fig = _Figure(figsize=(13, 3.8), layout="constrained")
    axes = fig.subplots(1, 4, subplot_kw=_NO_TICKS)
    titles = ["unconditional (negative prompt)", "text-conditioned", "|text - unconditional|\n(what the words add)",
              "guided"]
    for ax, title, img in zip(axes, titles, panels[:2] + [None] + panels[2:]):
        if img is None:
            im = ax.imshow(diff, cmap="magma", vmin=0, interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.8, label="L2 norm over channels")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=10)
    # A latent grid (a linear preview, or raw channels) is one cell per latent pixel, not per video pixel.
    unit = "pixels" if as_images or panels[0].shape[0] != u.shape[-2] else "latent pixels"
    fig.supxlabel(f"width ({unit})")
    fig.supylabel(f"height ({unit})")
    fig.suptitle(f"Classifier-free guidance, frame {frame}{how}")
    return fig


# ---------------------------------------------------------------------------- 3. frames and maps


def steps_frames_grid(images: Any, step_labels: Sequence[str] | None = None,
                      frame_labels: Sequence[str] | None = None, title: str = "Every frame at each denoising step",
                      max_rows: int | None = 8, row_title: str | None = None) -> Figure:
    """A grid of images: one row per step, one column per frame.

    `images` is [S, F, H, W, 3], floats in [0, 1] or uint8 (e.g. previews of `trace["step.pred_x0"]`).
    With more than `max_rows` steps, evenly spaced steps are shown (first and last included) and
    the title says so. The rows need not be steps (seeds, clips, settings): `step_labels` names them.
    `row_title` is the side title of the rows; by default "denoising step ↓" when the rows are the
    unlabelled steps, and none when `step_labels` names them.

    Example: `steps_frames_grid(pipe.preview(run.trace["step.pred_x0"][:, 0]))`
    """
    a = _np(images)
    if a.ndim != 5 or a.shape[-1] != 3:
        raise _shape_error("images", a, "[S, F, H, W, 3] (steps, frames, height, width, RGB)")
    S, F, H, W, _ = a.shape
    for labels, count, what in ((step_labels, S, "step_labels"), (frame_labels, F, "frame_labels")):
        if labels is not None and len(labels) != count:
            raise ValueError(f"{what} has {len(labels)} labels for {count} {what.split('_')[0]}s.")
    rows = np.arange(S)
    if max_rows is not None and S > max_rows:
        rows = np.unique(np.linspace(0, S - 1, max(max_rows, 1)).round().astype(int))
        title = f"{title} (showing {len(rows)} of {S} {'steps' if step_labels is None else 'rows'}, evenly spaced)"
    fig, axes = _grid([step_labels[s] if step_labels is not None else f"step {s}" for s in rows],
                      frame_labels if frame_labels is not None else [f"frame {f}" for f in range(F)], H, W)
    for r, s in enumerate(rows):
        for f in range(F):
            axes[r, f].imshow(_images(a[s, f]), interpolation="nearest")
    fig.supxlabel("frame (time →)")
    if row_title is None and step_labels is None:
        row_title = "denoising step ↓"
    if row_title:
        fig.supylabel(row_title)
    fig.suptitle(title)
    return fig


def latent_channels(latents: Any, frame: int = 0) -> Figure:
    """Each latent channel of one frame as an image, on one symmetric colour scale (blue -, red +).

    `latents` is [C, F, h, w] or [B, C, F, h, w] (then the first batch element is shown).

    Example: `latent_channels(run.latents, frame=0)`
    """
    z = _np(latents)
    if z.ndim == 5:
        z = z[0]
    if z.ndim != 4:
        raise _shape_error("latents", z, "[C, F, h, w] or [B, C, F, h, w]")
    C, F = z.shape[:2]
    if not -F <= frame < F:
        raise ValueError(f"frame={frame} is out of range for latents of shape {tuple(z.shape)} ({F} frames).")
    x = z[:, frame].astype(np.float32)  # [C, h, w]
    v = max(float(np.abs(x).max()), 1e-12)
    cols, rows = min(C, 4), math.ceil(C / 4)
    fig = _Figure(figsize=(2.6 * cols + 1.2, 2.6 * rows * x.shape[1] / x.shape[2] + 0.7), layout="constrained")
    axes = _panels(fig, C, 4, **_NO_TICKS)
    for ch, ax in enumerate(axes):
        im = ax.imshow(x[ch], cmap=_DIVERGING, vmin=-v, vmax=v, interpolation="nearest")
        ax.set_title(f"channel {ch}\nmean {x[ch].mean():+.2f}, std {x[ch].std():.2f}", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8, label="latent value")
    fig.supxlabel("latent width (x)")
    fig.supylabel("latent height (y)")
    fig.suptitle(f"The {C} latent channels of frame {frame}")
    return fig


_WORD_HUE = (0.8, 0.05, 0.05)  # the one colour of the word maps' overlay (a red)


def _on_off_ratios(maps: np.ndarray, mask: Any, up: np.ndarray) -> list[float]:
    """Each word's mean attention on `mask` over its mean off it; `mask` is on the maps' grid or the frames'."""
    on = _np(mask).astype(bool)
    for m in (maps, up):
        if on.shape == m.shape[1:]:
            return [float(w[on].mean() / max(float(w[~on].mean()), 1e-12)) if on.any() and (~on).any() else float("nan")
                    for w in m]
    raise _shape_error("mask", on, f"[F, h, w] = {tuple(maps.shape[1:])} (the maps' grid) or "
                                   f"[F, H, W] = {tuple(up.shape[1:])} (the frames')", "True where the shape is.")


def word_heatmaps(frames: Any, maps: Any, words: Sequence[str], alpha: float = 0.75, *,
                  mask: Any = None, ratios: Sequence[float] | None = None) -> Figure:
    """Where each word looks in each frame: attention laid over the frames, in greyscale, in one colour.

    `frames` [F, H, W, 3]; `maps` [n_words, F, h, w] (e.g. cross-attention to each word's token), upsampled
    (bilinear) to the frames. The frames are drawn in grey, the attention as one hue whose opacity grows with it,
    on ONE scale shared by all words and frames (from the smallest to the largest value of `maps`): a word that
    takes more attention than another is drawn stronger. `mask` (bool, [F, h, w] on the maps' grid or [F, H, W]:
    True where the shape is) labels each row with the word's on-shape / off-shape ratio (its mean attention on
    the mask over its mean attention off it); `ratios` gives those numbers instead (one per word).

    Example: `word_heatmaps(video.frames, maps, ["red", "circle"], mask=on_shape)`
    """
    import matplotlib.colors

    img, m = _images(frames), _np(maps).astype(np.float32)
    if img.ndim != 4 or img.shape[-1] != 3:
        raise _shape_error("frames", img, "[F, H, W, 3]")
    if m.ndim != 4 or m.shape[1] != img.shape[0]:
        raise _shape_error("maps", m, f"[n_words, F, h, w] with F = {img.shape[0]} frames")
    if len(words) != len(m):
        raise ValueError(f"Got {len(words)} words for {len(m)} maps (maps has shape {tuple(m.shape)}).")
    if mask is not None and ratios is not None:
        raise ValueError("Pass mask= (the ratios are computed) or ratios= (given), not both.")
    n, F, H, W = len(m), img.shape[0], img.shape[1], img.shape[2]
    up = torch.nn.functional.interpolate(torch.from_numpy(m).reshape(n * F, 1, *m.shape[2:]), size=(H, W),
                                         mode="bilinear", align_corners=False).reshape(n, F, H, W).numpy()
    if mask is not None:
        ratios = _on_off_ratios(m, mask, up)
    if ratios is not None:
        ratios = [float(r) for r in _np(ratios).reshape(-1)]
        if len(ratios) != n:
            raise ValueError(f"Got {len(ratios)} ratios for {n} words; pass one on/off ratio per word.")
    labels = list(words) if ratios is None else [f"{w}\non/off {r:.2f}" for w, r in zip(words, ratios)]
    lo, hi = float(m.min()), float(m.max())  # one scale for every word and frame
    hue = matplotlib.colors.ListedColormap([(*_WORD_HUE, a) for a in np.linspace(0, alpha, 256)], name="word_hue")
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)  # [F, H, W] luminance
    grey = 0.5 + 0.5 * (grey - grey.min()) / max(float(np.ptp(grey)), 1e-12)  # light greys: the overlay reads on them
    fig, axes = _grid(labels, [f"frame {f}" for f in range(F)], H, W, extra_w=1.6)
    for r in range(n):
        for f in range(F):
            axes[r, f].imshow(grey[f], cmap="gray", vmin=0, vmax=1)
            im = axes[r, f].imshow(up[r, f], cmap=hue, vmin=lo, vmax=max(hi, lo + 1e-12))
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention to the word (one scale for all words)")
    fig.supxlabel("frame (time →)")
    fig.supylabel("word" + ("" if ratios is None else " · attention on the shape / off it"))
    fig.suptitle("Where each word of the prompt looks, frame by frame")
    return fig


def temporal_attention(matrix: Any, titles: Sequence[str] | None = None) -> Figure:
    """Frame-to-frame attention as heat maps: query frame (rows) x key frame (columns), one per matrix.

    `matrix` is one [F, F] array or a list of them (e.g. per layer or per step).

    Example: `temporal_attention([m.mean(0) for m in maps], titles=layer_names)`
    """
    mats = [matrix] if isinstance(matrix, (torch.Tensor, np.ndarray)) else list(matrix)
    mats = [_np(m) for m in mats]
    for i, m in enumerate(mats):
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise _shape_error(f"matrix[{i}]" if len(mats) > 1 else "matrix", m, "[F, F] (query frame, key frame)")
    if not mats or (titles is not None and len(titles) != len(mats)):
        raise ValueError(f"Got {len(mats)} matrices and {None if titles is None else len(titles)} titles; "
                         f"pass at least one matrix and one title per matrix.")
    fig = _Figure(figsize=(4.2 * min(len(mats), 3), 3.6 * math.ceil(len(mats) / 3) + 0.5), layout="constrained")
    for i, ax in enumerate(_panels(fig, len(mats), 3)):
        im = ax.imshow(mats[i], cmap="viridis", vmin=0)
        fig.colorbar(im, ax=ax, shrink=0.8, label="attention weight")
        ax.set_title(titles[i] if titles is not None else f"matrix {i}", fontsize=10)
        ax.set_xlabel("key frame (looked at)")
        ax.set_ylabel("query frame (looking)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Temporal attention: how much each frame looks at each other frame")
    return fig


# ------------------------------------------------------------------------------------------ 4. sweeps


def _sheet_value(value: Any) -> str:
    """How one swept value is written on a contact sheet (long prompts wrapped)."""
    import json
    import textwrap

    if isinstance(value, str):
        return textwrap.fill(value, 26) if value else '""'
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value)


def _sheet_axes(result: Any, entries: list, rows: Any, cols: Any) -> tuple[list[str], list[str]]:
    """The axes of the sheet's rows and columns: those given, else the varying axes (the last one as columns)."""
    from .sweep import _canon

    varying = [a for a in result.axes if len({_canon(e["combination"].get(a)) for e in entries}) > 1]
    given = {"rows": rows, "cols": cols}
    for key, value in given.items():
        given[key] = None if value is None else [value] if isinstance(value, str) else list(value)
        for name in given[key] or []:
            if name not in result.axes:
                raise ValueError(f"{key}={value!r}: {name!r} is not an axis of this sweep; its axes: "
                                 f"{', '.join(result.axes)}.")
    rows, cols = given["rows"], given["cols"]
    if rows is None and cols is None:
        rows, cols = varying[:-1], varying[-1:]
    elif cols is None:
        cols = [a for a in varying if a not in rows]
    elif rows is None:
        rows = [a for a in varying if a not in cols]
    if set(rows) & set(cols):
        raise ValueError(f"{sorted(set(rows) & set(cols))} cannot be both rows and columns.")
    left = [a for a in varying if a not in rows + cols]
    if left:
        raise ValueError(f"{', '.join(left)} vary but are neither rows nor columns: add them to rows= or cols=, or "
                         f"pick one value with where={{{left[0]!r}: ...}}.")
    return rows, cols


def _sheet_image(frames: np.ndarray, cell: str, max_frames: int) -> np.ndarray:
    """One result's picture: up to `max_frames` evenly spaced frames side by side (white gaps), or the middle one."""
    F, H, W, _ = frames.shape  # uint8 [F, H, W, 3]
    if cell == "middle":
        return frames[F // 2]
    picked = np.unique(np.linspace(0, F - 1, min(F, max_frames)).round().astype(int))
    gap = np.full((H, max(1, W // 32), 3), 255, np.uint8)
    return np.concatenate([part for f in picked for part in (frames[f], gap)][:-1], axis=1)  # [H, k*W + gaps, 3]


def contact_sheet(sweep: Any, rows: str | Sequence[str] | None = None, cols: str | Sequence[str] | None = None,
                  cell: str = "strip", max_frames: int = 8, where: dict | None = None, path: Any = None,
                  title: str | None = None) -> Figure:
    """A sweep's results side by side: rows and columns are swept axes, each cell one video.

    `sweep` is what `t2v_nb.sweep` returned, or its folder. By default the last axis that varies (the seed, if
    swept) makes the columns and the other varying axes the rows (their combinations, one row each). `where`
    keeps only the results with these values (`where={"seed": 0}`), e.g. to fix an axis that is neither rows nor
    columns. A cell shows up to `max_frames` evenly spaced frames in a row (time left to right, cell="strip") or
    the middle frame (cell="middle"); a combination not made (yet) is a grey cell. `path` also saves it as PNG.

    Example: `contact_sheet("sweeps/guidance", rows="guidance_scale", cols="seed", path="sheet.png")`
    """
    import itertools

    from .sweep import SweepResult, _canon

    result = sweep if isinstance(sweep, SweepResult) else SweepResult.load(sweep)
    if cell not in ("strip", "middle"):
        raise ValueError(f"cell must be 'strip' (frames in a row) or 'middle' (the middle frame), not {cell!r}.")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise ValueError(f"max_frames must be a positive int, not {max_frames!r}.")
    for name in where or {}:
        if name not in result.axes:
            raise ValueError(f"where={where!r}: {name!r} is not an axis of this sweep; its axes: {', '.join(result.axes)}.")
    entries = result.find(**where) if where else list(result.entries)
    if not entries:
        raise ValueError(f"No results to show{f' with {where}' if where else ''} in {str(result.folder)!r}.")
    row_axes, col_axes = _sheet_axes(result, entries, rows, cols)

    def values(axes: list[str]) -> list[tuple]:  # the value combinations present, in the axes' order
        present = [[v for v in result.axes[a] if any(_canon(e["combination"].get(a)) == _canon(v) for e in entries)]
                   for a in axes]
        return list(itertools.product(*present))

    row_keys, col_keys = values(row_axes), values(col_axes)
    cells = {(tuple(_canon(e["combination"].get(a)) for a in row_axes),
              tuple(_canon(e["combination"].get(a)) for a in col_axes)): e for e in entries}
    images = {k: _sheet_image(result.frames(e), cell, max_frames) for k, e in cells.items()}
    h, w = next(iter(images.values())).shape[:2]
    cw = min(15.0 / len(col_keys), 0.9 * w / h if cell == "strip" else 1.8)
    fig = _Figure(figsize=(len(col_keys) * cw + (1.8 if row_axes else 0.4), len(row_keys) * cw * h / w + 1.2),
                  layout="constrained")
    axes = fig.subplots(len(row_keys), len(col_keys), squeeze=False, subplot_kw=_NO_TICKS)
    label = lambda names, key: "\n".join(f"{n}={_sheet_value(v)}" for n, v in zip(names, key))  # noqa: E731
    for r, rk in enumerate(row_keys):
        for c, ck in enumerate(col_keys):
            ax = axes[r, c]
            img = images.get((tuple(map(_canon, rk)), tuple(map(_canon, ck))))
            ax.imshow(img if img is not None else np.full((h, w, 3), 235, np.uint8), interpolation="nearest")
            if img is None:
                ax.text(0.5, 0.5, "not made", transform=ax.transAxes, ha="center", va="center", color="0.4")
            if c == 0 and row_axes:
                ax.set_ylabel(label(row_axes, rk), rotation=0, ha="right", va="center", fontsize=8)
            if r == 0 and col_axes:
                ax.set_title(label(col_axes, ck), fontsize=8)
    fixed = [a for a in result.axes if a not in row_axes + col_axes]
    common = ", ".join(f"{a}={_sheet_value(entries[0]['combination'].get(a))}".replace("\n", " ") for a in fixed)
    fig.suptitle(title or f"{len(entries)} results ({'frames left to right' if cell == 'strip' else 'middle frame'})"
                 + (f"\n{common}" if common else ""), fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")  # the row labels stand left of the axes
    return fig


__all__ += ["contact_sheet"]
