"""Named hook points, hooks that belong to a run, and the `Trace` of recorded tensors.

Every value the pipeline computes on its way from prompt to video passes through a named point.
At each point the run (1) calls the hooks registered under that name, in order, each of which
may read the value or return a tensor of the same shape to replace it, then (2) records the value
into the run's `Trace` if that name is being recorded.

The points, with their shapes (B: batch = 1 prompt, L: the text encoder's length (77 for CLIP, 226
for CogVideoX's T5, 512 for Wan's UMT5), D: text width, C: latent channels, F': latent frames (F for
models without temporal compression), h x w: latent size, F x H x W: video frames and pixels,
S: steps recorded):

    text.input_ids              [B, L]             token ids the text encoder reads
    text.embeddings             [B, L, D]          text embeddings of the prompt, as the denoiser reads them
    text.negative_embeddings    [B, L, D]          ... of the negative prompt ("" by default)
    latents.initial             [B, C, F', h, w]   starting noise (already scaled by the scheduler)
    step.latents                [B, C, F', h, w]   x_t entering the step
    step.noise_pred_uncond      [B, C, F', h, w]   model output for the negative prompt
    step.noise_pred_text        [B, C, F', h, w]   model output for the prompt
    step.noise_pred             [B, C, F', h, w]   after classifier-free guidance
    step.pred_x0                [B, C, F', h, w]   the model's current guess of the clean latents
    step.next_latents           [B, C, F', h, w]   x_{t-1}, what the scheduler returns
    decode.frames               [B, F, H, W, 3]    decoded video, float in [0, 1]
    attn.cross.<layer>          opt-in, see t2v_nb.attention
    attn.temporal.<layer>       opt-in, see t2v_nb.attention

What `step.noise_pred*` hold depends on `pipe.prediction_type` (diffusers' convention: `noise_pred` is
whatever the model outputs): "epsilon" the noise, "v_prediction" the velocity v = a eps - s x0,
"flow" the flow velocity (noise - x0), from which x0 = x_t - sigma_t v.

Hooks belong to the run. `pipe.start(...)` copies the hooks active at that moment (those of every
enclosing `with pipe.hooks({...})` block, plus `start(..., hooks={...})`) into the run, and the run
uses exactly those for all its steps: also for steps run after the `with` block ended, in later
cells, or in the studio's background thread. Hooks added after a run started never reach it.
`run.record()["hooks"]` lists every hook that fired, with the steps it fired at.

In the trace, `step.*` and `attn.*` values are stacked over steps: `trace["step.pred_x0"]` is
[S, B, C, F', h, w].
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from typing import Any, Callable, Iterable, Iterator

import torch

__all__ = ["HOOK_POINTS", "STEP_POINTS", "HookContext", "Hooks", "Trace", "check_name"]

HOOK_POINTS: dict[str, str] = {
    "text.input_ids": "[B, L] token ids",
    "text.embeddings": "[B, L, D] text embeddings of the prompt",
    "text.negative_embeddings": "[B, L, D] text embeddings of the negative prompt",
    "latents.initial": "[B, C, F', h, w] starting noise",
    "step.latents": "[B, C, F', h, w] x_t entering the step",
    "step.noise_pred_uncond": "[B, C, F', h, w] model output for the negative prompt",
    "step.noise_pred_text": "[B, C, F', h, w] model output for the prompt",
    "step.noise_pred": "[B, C, F', h, w] model output after guidance (eps, v or flow velocity)",
    "step.pred_x0": "[B, C, F', h, w] predicted clean latents",
    "step.next_latents": "[B, C, F', h, w] x_{t-1}",
    "decode.frames": "[B, F, H, W, 3] decoded video in [0, 1]",
}
STEP_POINTS = tuple(n for n in HOOK_POINTS if n.startswith("step."))
# Attention points are named after the UNet's layers, e.g. "attn.cross.up_blocks.1.attentions.0".
ATTENTION_PREFIXES = ("attn.cross.", "attn.temporal.")
_PER_STEP = ("step.",) + ATTENTION_PREFIXES  # recorded once per denoising step

HookFn = Callable[[torch.Tensor, "HookContext"], "torch.Tensor | None"]


def check_name(name: str, known: Iterable[str] = ()) -> str:
    """Return `name` if it is a hook point, else raise a ValueError that suggests the closest names.

    `known` adds names that exist for this model only (its attention layers).
    """
    if not isinstance(name, str):
        raise TypeError(f"A hook name must be a str like 'step.pred_x0', not {type(name).__name__} ({name!r}).")
    known = list(known)
    if name in HOOK_POINTS or name in known:
        return name
    if name.startswith(ATTENTION_PREFIXES) and not known:
        return name  # attention layer names are checked against the model when capture starts
    candidates = list(HOOK_POINTS) + known
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown hook point {name!r}.{hint} Valid names: {', '.join(HOOK_POINTS)}, "
                     f"and attention layers as 'attn.cross.<layer>' / 'attn.temporal.<layer>'.")


@dataclasses.dataclass
class HookContext:
    """What a hook is told besides the value: where in the run it is called."""

    name: str
    step: int | None  # index of the denoising step, None outside the loop
    timestep: int | None  # the scheduler's timestep t, None outside the loop
    run: Any  # the Run being computed


class Hooks:
    """Hooks by point name: a pipeline's active ones (temporary, see `scope`), or a run's own copy of them."""

    def __init__(self):
        self._fns: dict[str, list[HookFn]] = {}
        self.fired: dict[tuple[str, str], list] = {}  # (point, hook name) -> the steps it fired at

    def copy(self, more: dict | None = None, known: Iterable[str] = ()) -> "Hooks":
        """A new `Hooks` with the hooks active now (plus `more`), which later changes to this one do not reach."""
        new = Hooks()
        new._fns = {name: list(fns) for name, fns in self._fns.items() if fns}
        for name, fn in _checked(more or {}, known):
            new._fns.setdefault(name, []).append(fn)
        return new

    def merge(self, other: "Hooks") -> "Hooks":
        """Add the hooks of `other` that this one does not have yet (the same function is not added twice)."""
        for name, fns in other._fns.items():
            mine = self._fns.setdefault(name, [])
            mine.extend(fn for fn in fns if not any(fn is m for m in mine))
        return self

    def forget(self, from_step: int) -> None:
        """Drop the record of firings at steps >= `from_step` (a step that did not complete, or a branch)."""
        for key, steps in list(self.fired.items()):
            steps[:] = [s for s in steps if s is None or s < from_step]
            if not steps:
                del self.fired[key]

    def report(self) -> list[dict]:
        """What fired: [{"point", "hook", "steps"}], `steps` None for points outside the denoising loop."""
        return [{"point": point, "hook": hook, "steps": None if steps == [None] * len(steps) else steps}
                for (point, hook), steps in self.fired.items()]

    def __bool__(self) -> bool:
        return any(self._fns.values())

    def names(self) -> list[str]:
        return [n for n, fns in self._fns.items() if fns]

    @contextlib.contextmanager
    def scope(self, hooks: dict[str, HookFn | list[HookFn]], known: Iterable[str] = ()) -> Iterator[None]:
        """Add `hooks` for the duration of a `with` block; they are removed on exit, error or not."""
        added = _checked(hooks, known)
        try:
            for name, fn in added:
                self._fns.setdefault(name, []).append(fn)
            yield
        finally:
            for name, fn in added:
                self._fns[name].remove(fn)

    def fire(self, name: str, value: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        """Run the hooks of `name` on `value`; a hook that returns a tensor replaces the value."""
        for fn in self._fns.get(name, ()):
            out = fn(value, ctx)
            self.fired.setdefault((name, _label(fn)), []).append(ctx.step)
            if out is None:
                continue
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"The hook {getattr(fn, '__name__', fn)!r} on {name!r} returned "
                                f"{type(out).__name__}; return None to only read, or a tensor to replace the value.")
            if out.shape != value.shape:
                raise ValueError(f"The hook {getattr(fn, '__name__', fn)!r} on {name!r} returned shape "
                                 f"{tuple(out.shape)}, but the value has shape {tuple(value.shape)}.")
            value = out.to(device=value.device, dtype=value.dtype)
        return value


def _checked(hooks, known: Iterable[str]) -> list[tuple[str, HookFn]]:
    """[(name, fn)] from {name: fn or [fns]}, every name checked and every fn callable."""
    if not isinstance(hooks, dict):
        raise TypeError(f"hooks must be a dict {{name: fn}}, not {type(hooks).__name__}.")
    added: list[tuple[str, HookFn]] = []
    known = list(known)
    for name, fns in hooks.items():
        check_name(name, known)
        for fn in fns if isinstance(fns, (list, tuple)) else [fns]:
            if not callable(fn):
                raise TypeError(f"The hook for {name!r} must be callable as fn(value, ctx), not {fn!r}.")
            added.append((name, fn))
    return added


def _label(fn) -> str:
    """A hook's name for the run record: module.qualname (lambdas and partials as Python names them)."""
    inner = getattr(fn, "func", fn)
    name = getattr(inner, "__qualname__", None) or type(inner).__name__
    module = getattr(inner, "__module__", None)
    return f"{module}.{name}" if module and module != "__main__" else name


class Trace:
    """Recorded tensors of one run, on the CPU. `trace[name]`; `step.*` names are stacked over steps.

        >>> run.trace["step.pred_x0"].shape   # [S, B, C, F, h, w]
        >>> run.trace.names()
    """

    def __init__(self, record: Iterable[str]):
        self.record = frozenset(record)
        self._once: dict[str, torch.Tensor] = {}
        self._steps: dict[str, list[torch.Tensor]] = {}
        self._stacked: dict[str, torch.Tensor] = {}

    def wants(self, name: str) -> bool:
        return name in self.record or (name.startswith(ATTENTION_PREFIXES) and "attn.*" in self.record)

    def add(self, name: str, value: torch.Tensor) -> None:
        """Keep a detached CPU copy of `value` (once per run, or one per step for `step.*`)."""
        value = value.detach().to("cpu", copy=True)
        if name.startswith(_PER_STEP):
            self._steps.setdefault(name, []).append(value)
            self._stacked.pop(name, None)
        else:
            self._once[name] = value

    def truncate(self, num_steps: int) -> None:
        """Forget what was recorded from step `num_steps` on (a step that did not complete, or a branch)."""
        for name, values in self._steps.items():
            if len(values) > num_steps:
                del values[num_steps:]
                self._stacked.pop(name, None)

    def names(self) -> list[str]:
        return sorted(set(self._once) | {n for n, v in self._steps.items() if v})

    def __contains__(self, name: object) -> bool:
        return name in self._once or bool(self._steps.get(name))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.names())

    def __iter__(self):
        return iter(self.names())

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self._once:
            return self._once[name]
        if self._steps.get(name):
            if name not in self._stacked:
                self._stacked[name] = torch.stack(self._steps[name])
            return self._stacked[name]
        check_name(name)  # a typo -> ValueError with suggestions
        if not self.wants(name):
            raise KeyError(f"{name!r} was not recorded in this run (recording: {sorted(self.record) or 'nothing'}). "
                           f"Start the run with record='all' or record=[..., {name!r}].")
        raise KeyError(f"{name!r} has no value yet: no step has run (call run.step() or run.finish()).")

    def step(self, name: str, i: int) -> torch.Tensor:
        """The value of `name` at step `i`, without stacking all steps."""
        if not self._steps.get(name):
            return self[name]  # raises the right error
        return self._steps[name][i]

    def nbytes(self) -> int:
        """Memory held by the trace, in bytes."""
        tensors = list(self._once.values()) + [t for v in self._steps.values() for t in v]
        return sum(t.numel() * t.element_size() for t in tensors)

    def __repr__(self) -> str:
        return f"Trace({', '.join(self.names())}; {self.nbytes() / 2**20:.1f} MiB)"
