"""Opt-in capture of attention maps: which words each pixel looks at, and which frames each frame looks at.

Where the layers are and how a map is read from a layer's inputs is the model family's business
(`family.attention_modules()`, `family.attention_observer(...)`, see `t2v_nb.families`); this module
does the rest for every family: wrapping the layers' processors for one step, keeping only the
prompt's guidance branch, averaging, handing the maps to the run's hooks and trace, and reading them
back (`word_maps`, `temporal_matrix`). Below, the UNet families (ModelScope, AnimateDiff: their observer is
`t2v_nb.families.unet.UNetObserver`); the diffusion transformers document their own layouts in their family
modules.

A video UNet has two kinds of attention worth watching:

* cross-attention (text -> image): in every spatial transformer, `attn2` lets each latent pixel of
  each frame read the 77 token embeddings of the prompt;
* temporal self-attention (frame x frame): in ModelScope's `transformer_in` and `temp_attentions`
  and in AnimateDiff's `motion_modules`, both `attn1` and `attn2` let each pixel of a frame read the
  same pixel in every frame (in temporal transformers `attn2` gets no text, so it is self-attention too).

Each such layer is a hook point named `attn.<kind>.<module path in unet.named_modules()>`:

    attn.cross.<layer>      [B, F, h_l, w_l, T]   for each frame and each pixel of the layer's grid,
                                                  the share of attention given to each of the T = 77
                                                  token positions (the text's `run.text.tokens`
                                                  index them); rows sum to 1 over T
    attn.temporal.<layer>   [B, F, F]             query frame x key frame; rows sum to 1 over key frames

e.g. `attn.cross.up_blocks.1.attentions.0.transformer_blocks.0.attn2` and
`attn.temporal.transformer_in.transformer_blocks.0.attn1`. B = 1 (the prompt's half of the guided
batch; the negative prompt's half is left out), F = frames, h_l x w_l = the layer's grid (the latent
size halved once per downsampling above it). Both are averaged over heads; the temporal map is also
averaged over all pixels. They are computed in float32 and handed over in the UNet's dtype. In the
trace they are stacked over steps: [S, B, F, h_l, w_l, T] and [S, B, F, F].

How: during the model call(s) of a step, each wanted layer's attention processor is wrapped by one
that recomputes softmax(q k^T * scale) from the layer's own inputs, norms and projections, averages it
at once, and then lets the original processor compute the layer's output as always. So the video is
bitwise the same with or without capture. The maps are read-only observations: a hook on an
`attn.*` point may return a replacement (it goes into the trace), but it never feeds back into the
UNet. The original processors are put back when the call ends, also when it raises.

Memory: per layer only the averaged map is kept. A trace with record="all" holds, per step,
sum over cross layers of F*h_l*w_l*77 numbers: about 33 MB in float32 for ModelScope at 256x256 and
16 frames; record only the layers you need (`record=[...names]`) for long runs at large sizes.

    >>> run = pipe.start("a red circle moving right", record="all").finish()
    >>> word_maps(run, ["red", "circle"]).shape        # [2, F, H', W']
    >>> temporal_matrix(run).shape                     # [F, F]
"""

from __future__ import annotations

import contextlib
import difflib
import numbers
from typing import Any, Iterable, Iterator, Sequence

import torch

from .families.unet import UNetObserver  # public here since turn 2; the UNet families' observer
from .hooks import check_name

__all__ = ["attention_points", "attention_layers", "capture", "word_maps", "temporal_matrix", "UNetObserver"]


def attention_points(pipe) -> list[str]:
    """Every attention hook point of `pipe`: `attn.cross.<path>` and `attn.temporal.<path>`, in order."""
    return pipe.attention_names()


def attention_layers(pipe, height: int | None = None, width: int | None = None,
                     num_frames: int | None = None) -> dict[str, dict]:
    """The attention hook points of `pipe` with what they hold at a given video size.

    Returns:
        {name: {"kind": "cross" | "temporal", "resolution": (h_l, w_l), "heads": int, "shape": tuple}},
        where `shape` is the hook value's shape; sizes default to `pipe.defaults`.
    """
    d, fam = pipe.defaults, pipe.family
    _, F, h, w = fam.latent_shape(num_frames or d["num_frames"], height or d["height"], width or d["width"])
    T = fam.text_length
    out = {}
    for kind, path, module in fam.attention_modules():
        res = fam.attention_resolution(path, h, w)
        shape = (1, F, *res, T) if kind == "cross" else (1, F, F)
        out[f"attn.{kind}.{path}"] = {"kind": kind, "resolution": res, "heads": module.heads, "shape": shape}
    return out


class _Capture:
    """The state of one step's capture: which guidance branch the model is computing now, and the sums."""

    def __init__(self, guided: bool):
        self.guided, self.current = guided, None
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.dtypes: dict[str, torch.dtype] = {}

    @contextlib.contextmanager
    def branch(self, name: str) -> Iterator[None]:
        """Mark the model calls inside: "text" (measured), "uncond" (not), "both" ([uncond, text] batched)."""
        if name not in ("text", "uncond", "both"):
            raise ValueError(f"branch must be 'text', 'uncond' or 'both', not {name!r}.")
        before, self.current = self.current, name
        try:
            yield
        finally:
            self.current = before

    def add(self, name: str, value: torch.Tensor, dtype: torch.dtype) -> None:
        self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.counts[name] = self.counts.get(name, 0) + 1
        self.dtypes[name] = dtype


class _Wrapper:
    """An attention processor that measures the map (when the text branch runs), then lets the original
    processor compute the layer's output exactly as without capture."""

    def __init__(self, original, name: str, observer, state: _Capture):
        self.original, self.name, self.observer, self.state = original, name, observer, state
        # diffusers' Attention.forward passes a processor only the keyword arguments its `__call__` names
        # (CogVideoX: image_rotary_emb). Show it the original's: calls still go to _Wrapper.__call__.
        self.__call__ = original.__call__

    def __call__(self, attn, hidden_states, *args, **kwargs):
        branch = self.state.current
        if branch in ("text", "both"):
            with torch.no_grad():
                half = branch == "both" and self.state.guided
                value = self.observer.measure(attn, hidden_states, args, kwargs, half)
            self.state.add(self.name, value, hidden_states.dtype)
        return self.original(attn, hidden_states, *args, **kwargs)


@contextlib.contextmanager
def capture(run, i: int, t: int, names: Sequence[str]) -> Iterator[Any]:
    """Measure the attention of the layers `names` during the model call(s) inside the `with` block.

    Yields the `branch(name)` marker the family wraps its model calls in. When the block ends normally,
    each layer's map (averaged over its measured calls, normally one) goes to `run.emit(name, value, i, t)`:
    the run's hooks on that name, then the trace. The layers' original processors are restored on exit,
    error or not; after an error nothing is emitted.
    """
    pipe = run.pipe
    known = pipe.attention_names()
    state = _Capture(run.guidance)
    installed: list[tuple[Any, Any]] = []
    try:
        for name in names:
            if name not in known:
                check_name(name, known)  # raises, with the closest names
        layers = [(*name.split(".", 2)[1:], name) for name in names]  # (kind, path, name)
        modules = [pipe.denoiser.get_submodule(path) for _, path, _ in layers]
        observers = pipe.family.attention_observers(
            [(kind, name, attn) for (kind, _, name), attn in zip(layers, modules)], run)
        for (_, _, name), attn, observer in zip(layers, modules, observers):
            installed.append((attn, attn.processor))
            attn.set_processor(_Wrapper(attn.processor, name, observer, state))
        yield state.branch
    finally:
        for attn, original in reversed(installed):
            attn.set_processor(original)
    for name in names:
        if name in state.sums:
            run.emit(name, (state.sums[name] / state.counts[name]).to(state.dtypes[name]), i, t)


# ---------------------------------------------------------------------- reading the trace


def _trace(trace_or_run):
    return getattr(trace_or_run, "trace", trace_or_run)


def _pick_layers(trace, prefix: str, layers: Iterable[str] | None) -> list[str]:
    present = [n for n in trace.names() if n.startswith(prefix)]
    if layers is None:
        if not present:
            raise ValueError(f"The trace holds no '{prefix}*' maps. Start the run with record='all', or "
                             f"record=[...] naming the layers (see attention_layers(pipe)).")
        return present
    chosen = [layers] if isinstance(layers, str) else list(layers)
    for n in chosen:
        if n not in present:
            close = difflib.get_close_matches(n, present, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"{n!r} is not among the recorded '{prefix}*' maps.{hint}")
    if not chosen:
        raise ValueError("layers is empty; pass None for all recorded layers.")
    return chosen


def _num_steps(trace, name: str) -> int:
    n = 0
    with contextlib.suppress(IndexError):
        while trace.step(name, n) is not None:  # Trace.step reads one step without stacking all of them
            n += 1
    return n


def _pick(index, size: int, what: str) -> list[int]:
    if index is None:
        return list(range(size))
    chosen = [int(index)] if isinstance(index, numbers.Integral) else [int(k) for k in index]
    for k in chosen:
        if not -size <= k < size:
            raise ValueError(f"{what} {k} is out of range: there are {size}.")
    return [k % size for k in chosen]


def _token_positions(trace_or_run, tokens) -> list[list[int]]:
    items = [tokens] if isinstance(tokens, (numbers.Integral, str)) else list(tokens)
    text = getattr(trace_or_run, "text", None)
    out = []
    for item in items:
        if isinstance(item, str):
            if text is None:
                raise TypeError(f"To look up the word {item!r}, pass the Run (it has the token table), "
                                f"not only its trace; or pass token indices.")
            plain = [w.lower() for w in text.words]
            where = [k for k, tok in enumerate(plain) if tok == item.lower()]
            if not where:
                raise ValueError(f"{item!r} is not a token of this prompt; its tokens are {text.tokens}. "
                                 f"Pass a token or its index.")
            out.append(where)
        else:
            out.append([int(item)])
    return out


def word_maps(trace_or_run, tokens, layers: Iterable[str] | None = None, steps=None, frames=None,
              resolution: tuple[int, int] | None = None) -> torch.Tensor:
    """Where each chosen word is looked at, in each frame: cross-attention averaged over layers and steps.

    Args:
        trace_or_run: a `Run` (or its `Trace`) recorded with `attn.cross.*` maps (record="all").
        tokens: a token index (position in `run.text.tokens`, 0 is the start marker), a token's text
            (needs the Run; every occurrence is averaged), or a list of them.
        layers: `attn.cross.*` names; default all recorded.
        steps, frames: indices (int or list, negative allowed); default all.
        resolution: (H', W') of the result; default the largest grid among the layers.

    Returns:
        float32 [n_words, F', H', W'] on the CPU: each layer's map, averaged over the steps, resized
        bilinearly to (H', W'), then averaged over the layers with equal weight.
    """
    trace = _trace(trace_or_run)
    names = _pick_layers(trace, "attn.cross.", layers)
    positions = _token_positions(trace_or_run, tokens)
    per_layer = []
    for name in names:
        chosen = _pick(steps, _num_steps(trace, name), "step")
        m = sum(trace.step(name, s)[0].float() for s in chosen) / len(chosen)  # [F, h_l, w_l, T]
        m = m[_pick(frames, m.shape[0], "frame")]
        per_layer.append(torch.stack([m[..., p].mean(-1) for p in positions]))  # [n_words, F', h_l, w_l]
    if resolution is None:
        resolution = max((m.shape[-2:] for m in per_layer), key=lambda s: s[0] * s[1])
    if len(resolution) != 2:
        raise ValueError(f"resolution {resolution!r} is not of the form (height, width).")
    size = (int(resolution[0]), int(resolution[1]))
    out = 0
    for m in per_layer:
        if tuple(m.shape[-2:]) != size:
            n, F = m.shape[:2]
            m = torch.nn.functional.interpolate(m.flatten(0, 1)[:, None], size=size, mode="bilinear",
                                                align_corners=False).view(n, F, *size)
        out = out + m
    return out / len(per_layer)  # [n_words, F', H', W']


def temporal_matrix(trace_or_run, layers: Iterable[str] | None = None, steps=None) -> torch.Tensor:
    """How much each frame attends to each other frame: float32 [F, F] (rows: query frames, sum to 1).

    The `attn.temporal.*` maps of `layers` (default all recorded), averaged over `steps` (default all)
    and then over the layers with equal weight.
    """
    trace = _trace(trace_or_run)
    names = _pick_layers(trace, "attn.temporal.", layers)
    total = 0
    for name in names:
        chosen = _pick(steps, _num_steps(trace, name), "step")
        total = total + sum(trace.step(name, s)[0].float() for s in chosen) / len(chosen)
    return total / len(names)
