"""Sweeps: one video per combination of prompts x seeds x generate settings, written to a folder.

    result = t2v_nb.sweep("toy-shapes", prompts=["a red circle moving right"], seeds=[0, 1, 2],
                          guidance_scale=[1, 3, 7], out="sweeps/guidance")
    t2v_nb.viz.contact_sheet(result)      # rows and columns are the swept axes
    print(result.table())                 # the manifest as a text table

Every setting of `pipe.start` except the prompt and the seed can be swept: pass a list of values
(`num_inference_steps=[4, 8, 20]`, `scheduler=["ddim", "euler"]`, `guidance_interval=[None, [700, 1000]]`).
Each combination writes `<id>.mp4`, its record `<id>.mp4.json`, its frames `<id>.frames.npy` (uint8
[F, H, W, 3], what the MP4 encodes) and, with `pred_x0=True`, `<id>.pred_x0.png` (the predicted clean
video at some of the steps). The id names the combination (prompt, seed, a hash of the model and the
settings), so the same combination always lands in the same files.

Then one JSON line in a manifest: the combination, its files and their sizes, the seconds it took. The
line is written last, so a combination counts as done only when its line is there and its files have
the sizes the line gives; an interrupted sweep, run again, skips what is done and redoes the rest.

From a terminal, one process or several (each process takes its share of the grid, on its own device,
and writes its own manifest, `manifest.<rank>.jsonl`; reading merges them):

    python -m t2v_nb.sweep sweep.yaml
    accelerate launch --multi_gpu --num_processes 2 -m t2v_nb.sweep sweep.yaml

The seed belongs to the combination (`torch.Generator().manual_seed(seed)` on the CPU, as `pipe.start`
draws it), so a combination's frames do not depend on which process made it, or in what order (on one
kind of device with one thread count: tested on the CPU, one process against two, byte for byte). On a
machine without a GPU, keep `--multi_gpu`: the processes then share the CPU (accelerate's `--cpu` starts
one process unless MPI is set up). `t2v_nb.sweep` is this module, callable as its function `sweep`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import difflib
import hashlib
import itertools
import json
import math
import numbers
import os
import pathlib
import re
import sys
import time
import types
import uuid

__all__ = ["sweep", "SweepResult", "SWEEPABLE", "check_grid", "combinations", "combination_id", "read_manifests",
           "is_complete", "make_one", "process_state", "read_config", "main"]

# The settings of `pipe.start` a sweep can vary (the prompt and the seed have their own arguments).
SWEEPABLE = ("num_frames", "height", "width", "num_inference_steps", "guidance_scale", "guidance_interval",
             "negative_prompt", "scheduler", "eta")
_NOT_SWEEPABLE = {"prompt": "pass prompts=[...]", "seed": "pass seeds=[...]",
                  "record": "a sweep records only what pred_x0=True needs",
                  "hooks": "hooks are functions, which a manifest cannot name: use pipe.hooks(...) around the sweep",
                  "progress": "a sweep shows one progress bar over the whole grid"}
_PRED_X0_ROWS = 8  # steps shown in the pred-x0 picture (evenly spaced, first and last included)
MANIFEST = "manifest.jsonl"


# ------------------------------------------------------------------------------------------ the grid


def _axis(name: str, values, what: str = "values") -> list:
    """`values` as a non-empty list without repeats, or a clear error."""
    if isinstance(values, (str, bytes, dict, set, frozenset)) or not isinstance(values, (list, tuple, range)):
        kind = "a set (no order)" if isinstance(values, (set, frozenset)) else f"{type(values).__name__} {values!r}"
        raise TypeError(f"{name} must be a list of {what}, e.g. {name}=[{values!r}], not {kind}.")
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: give at least one value (an empty axis makes an empty grid).")
    seen = [_canon(v, name) for v in values]
    repeats = sorted({s for s in seen if seen.count(s) > 1})
    if repeats:
        raise ValueError(f"{name} lists {', '.join(repeats)} more than once; each combination is made once.")
    return values


def _canon(value, name: str = "value") -> str:
    """The value as canonical JSON (how combinations are compared, hashed and written)."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise TypeError(f"{name} holds {value!r} ({type(value).__name__}), which a manifest cannot write; use numbers, "
                        f"strings, None or lists of them (a scheduler by its short name).") from None


def _check_value(name: str, v) -> None:
    """Type checks that need no model (the model's own checks run on every combination before any work)."""
    if name == "scheduler" and not isinstance(v, str):
        raise TypeError(f"scheduler values must be short names (see t2v_nb.schedulers.SCHEDULERS), not "
                        f"{type(v).__name__}: a manifest names the sampler of each result.")
    if name == "negative_prompt" and not isinstance(v, str):
        raise TypeError(f"negative_prompt values must be str (\"\" for none), not {v!r}.")
    if name == "eta" and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)):
        raise ValueError(f"eta values must be finite numbers, not {v!r}.")
    if name == "guidance_interval" and v is not None:
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or len(v) != 2:
            raise ValueError(f"guidance_interval values must be None or [t_low, t_high], not {v!r}; a list of them: "
                             f"guidance_interval=[None, [700, 1000]].")


def _as_float(name: str, value):
    """Settings that are floats (guidance_scale, eta, the ends of guidance_interval) as floats."""
    real = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)  # noqa: E731
    if name in ("guidance_scale", "eta") and real(value):
        return float(value)
    if name == "guidance_interval" and value is not None and all(real(v) for v in value):
        return [float(v) for v in value]
    return value


def _same(a, b) -> bool:
    """Whether two swept values are the same (numbers by value: 3 == 3.0)."""
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (a, b)):
        return float(a) == float(b)
    return _canon(a) == _canon(b)


def check_grid(prompts, seeds, settings: dict) -> dict[str, list]:
    """The axes of the grid in order (prompt, the settings as given, seed), checked: raises before any work."""
    unknown = [n for n in settings if n not in SWEEPABLE]
    for name in unknown:
        if name in _NOT_SWEEPABLE:
            raise ValueError(f"{name!r} cannot be swept as a setting: {_NOT_SWEEPABLE[name]}.")
        close = difflib.get_close_matches(name, SWEEPABLE, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"Unknown setting {name!r}.{hint} A sweep can vary: {', '.join(SWEEPABLE)}.")
    prompts = _axis("prompts", [prompts] if isinstance(prompts, str) else prompts, "prompts (str)")
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise TypeError(f"prompts must be non-empty strings, got {p!r}.")
    seeds = _axis("seeds", seeds, "ints")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or not 0 <= int(s) < 2**63:
            raise ValueError(f"seeds must be ints in [0, 2**63), got {s!r}: the seed belongs to each combination, "
                             f"so every result can be made again.")
    axes = {"prompt": prompts}
    for name, values in settings.items():
        axes[name] = _axis(name, values)
        for v in axes[name]:
            _check_value(name, v)
        axes[name] = _axis(name, [_as_float(name, v) for v in axes[name]])  # 3 and 3.0: one value, one id
    axes["seed"] = [int(s) for s in seeds]
    return axes


def combinations(axes: dict[str, list]) -> list[dict]:
    """Every combination of the axes, the last axis varying fastest."""
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def _model_key(pipe) -> dict:
    """What, besides the combination, decides the frames: where the weights came from and a fingerprint of them,
    their dtype, the default sampler and settings. Not the device: every process of a sweep gets the same ids."""
    from .schedulers import scheduler_name

    return _jsonable({"source": pipe.source, "family": pipe.family.name, "dtype": str(pipe.dtype).replace("torch.", ""),
                      "weights": _fingerprint(pipe.denoiser), "scheduler": scheduler_name(pipe.scheduler),
                      "defaults": pipe.defaults})


def _fingerprint(module) -> str:
    """A hash of a few values of the first, middle and last weight tensors: retrained weights under the same
    name get other ids (and are made again, not taken for the old results). Reads 48 numbers, not the model."""
    params = list(module.parameters())
    picked = [params[0], params[len(params) // 2], params[-1]] if params else []
    values = [p.detach().flatten()[:16].float().cpu().tolist() for p in picked]
    return hashlib.sha256(json.dumps([len(params), values]).encode()).hexdigest()[:16]


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def combination_id(model_key: dict, combo: dict) -> str:
    """A file-name-safe id: the prompt's first words, the seed, and a hash of the model and the combination."""
    digest = hashlib.sha256(_canon({"model": model_key, "combination": combo}).encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9]+", "_", combo["prompt"].lower()).strip("_")[:32].rstrip("_") or "prompt"
    return f"{slug}-s{combo['seed']}-{digest}"


# -------------------------------------------------------------------------------------- the manifest


def read_manifests(folder) -> dict[str, dict]:
    """Every entry of the folder's manifests (`manifest.jsonl`, `manifest.<rank>.jsonl`) by id; a line cut off
    by an interrupt is skipped; of two entries for one id the later one counts."""
    entries: dict[str, dict] = {}
    for path in sorted(pathlib.Path(folder).glob("manifest*.jsonl")):
        for line in path.read_text("utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of an interrupted write
            if isinstance(entry, dict) and "id" in entry:
                old = entries.get(entry["id"])
                if old is None or entry.get("finished", "") >= old.get("finished", ""):
                    entries[entry["id"]] = entry
    return entries


def is_complete(folder, entry: dict | None) -> bool:
    """Whether a manifest entry's files are all there, each with the size the entry gives."""
    if not entry:
        return False
    folder = pathlib.Path(folder)
    sizes = entry.get("bytes", {})
    files = entry.get("files", {}).values()
    return all((folder / f).is_file() and (folder / f).stat().st_size == sizes.get(f) for f in files)


def _append_line(path: pathlib.Path, entry: dict) -> None:
    """Append one JSON line and flush it to disk; a line left unfinished by an interrupt is ended first."""
    text = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                text = "\n" + text
        f.write(text.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


@dataclasses.dataclass
class SweepResult:
    """The results of a sweep: its folder, its axes (name -> values, in grid order) and one manifest entry per
    combination made (`entries`, in grid order). `SweepResult.load(folder)` reads a folder back."""

    folder: pathlib.Path
    axes: dict[str, list]
    entries: list[dict]
    missing: list[dict] = dataclasses.field(default_factory=list)  # combinations of the grid not (yet) made

    @classmethod
    def load(cls, folder) -> "SweepResult":
        """The complete results in `folder`, whichever sweeps and processes made them; the axes are the values
        found (numbers ascending, other values in the order first seen)."""
        folder = pathlib.Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{str(folder)!r} is not a folder; give the out= folder of a sweep.")
        entries = [e for e in read_manifests(folder).values() if is_complete(folder, e)]
        if not entries:
            raise ValueError(f"{str(folder)!r} holds no complete sweep results (no manifest*.jsonl line whose files "
                             f"are all there).")
        entries.sort(key=lambda e: (e.get("finished", ""), e["id"]))
        axes: dict[str, list] = {}
        for e in entries:
            for name, value in e["combination"].items():
                values = axes.setdefault(name, [])
                if _canon(value) not in map(_canon, values):
                    values.append(value)
        for name, values in axes.items():
            if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
                values.sort()
        return cls(folder, axes, entries)

    @property
    def swept(self) -> list[str]:
        """The axes with more than one value."""
        return [name for name, values in self.axes.items() if len(values) > 1]

    def path(self, entry: dict, kind: str = "video") -> pathlib.Path:
        """The file of one result: kind "video", "record", "frames" or "pred_x0"."""
        return self.folder / entry["files"][kind]

    def frames(self, entry: dict):
        """One result's frames, uint8 [F, H, W, 3]: from its .frames.npy, else decoded from its MP4."""
        import numpy as np

        if "frames" in entry["files"]:
            return np.load(self.path(entry, "frames"))
        from .video import Video

        return Video.load(self.path(entry, "video")).to_uint8()

    def video(self, **values):
        """The one result with these values as a `Video` (frames from its .frames.npy, else its MP4; the record
        from its sidecar): `result.video(seed=0, guidance_scale=3)`."""
        from .video import Video

        found = self.find(**values)
        if len(found) != 1:
            raise ValueError(f"{len(found)} results have {values}; name values of {', '.join(self.swept)} so that "
                             f"exactly one does.")
        meta = json.loads(self.path(found[0], "record").read_text("utf-8"))
        frames = self.frames(found[0]).astype("float32") / 255.0  # [F, H, W, 3]
        return Video(frames, fps=meta.get("fps", 8.0), record=meta.get("record", {}))

    def find(self, **values) -> list[dict]:
        """The entries whose combination has these values: `result.find(seed=0, guidance_scale=3)`."""
        return [e for e in self.entries if all(_same(e["combination"].get(k), v) for k, v in values.items())]

    def rows(self) -> list[dict]:
        """The manifest as a list of flat dicts, one per result: the combination, then id, seconds, video file."""
        return [{**e["combination"], "id": e["id"], "seconds": e.get("seconds"), "video": e["files"]["video"]}
                for e in self.entries]

    def table(self) -> str:
        """The manifest as a text table: the swept axes, the seconds and the video file of each result."""
        rows = self.rows()
        cols = [*(self.swept or list(self.axes)[:1]), "seconds", "video"]
        cells = [[r[c] if c == "video" else f"{r[c]:.2f}" if c == "seconds" and r[c] is not None else _short(r[c])
                  for c in cols] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        if self.missing:
            lines.append(f"({len(self.missing)} of {len(self.missing) + len(rows)} combinations not made yet)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        axes = ", ".join(f"{k} x{len(v)}" for k, v in self.axes.items())
        return f"SweepResult({str(self.folder)!r}, {len(self.entries)} results; {axes})"


def _short(value, width: int = 40) -> str:
    text = value if isinstance(value, str) else _canon(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------------------------------- processes


class _OneProcess:
    """The part of accelerate's `PartialState` a sweep uses, for a plain (not launched) process."""

    num_processes, process_index, is_main_process, device = 1, 0, True, None

    def wait_for_everyone(self) -> None:
        pass

    def split_between_processes(self, items):
        import contextlib

        return contextlib.nullcontext(items)


def process_state(cpu: bool | None = None):
    """accelerate's `PartialState` when launched as several processes (`accelerate launch`, `torchrun`: WORLD_SIZE
    > 1), else a one-process stand-in. `cpu` (default: when ACCELERATE_USE_CPU is set or no CUDA GPU is
    visible) makes the processes share the CPU, with the gloo backend."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _OneProcess()
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    if cpu is None:
        cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def _pipeline(model, device, dtype, load_kwargs: dict | None):
    from .pipeline import StepwisePipeline

    if isinstance(model, StepwisePipeline):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a StepwisePipeline, a preset name, a hub id or a model directory, "
                        f"not {type(model).__name__}.")
    from .models import load

    if device is not None and str(device).startswith("cpu"):
        device = "cpu"  # accelerate names it cpu:0
    return load(model, device=device, dtype=dtype, **(load_kwargs or {}))


def _check_combinations(pipe, grid: list[dict]) -> None:
    """The model's own checks (sizes, steps, guidance, sampler names) on every combination, before any work."""
    from . import schedulers

    for name in {c["scheduler"] for c in grid if "scheduler" in c}:
        schedulers.make_scheduler(name, pipe.scheduler)
    checked = ("negative_prompt", "num_frames", "height", "width", "num_inference_steps", "guidance_scale",
               "guidance_interval")
    for combo in grid:
        try:
            pipe.check_inputs(prompt=combo["prompt"], seed=combo["seed"], **{k: combo[k] for k in checked if k in combo})
        except (TypeError, ValueError) as e:
            raise type(e)(f"In the combination {_canon(combo)}: {e}") from None


# ------------------------------------------------------------------------------------ making results


def _replace_atomically(path: pathlib.Path, write) -> None:
    """`write(tmp)` to a hidden file beside `path` (same suffix), then rename it to `path`."""
    tmp = path.parent / f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_pred_x0(pipe, run, path: pathlib.Path) -> None:
    """The predicted clean video at up to 8 evenly spaced steps, VAE-decoded, one row per step, as a PNG."""
    import numpy as np
    import torch

    from . import viz

    x0 = run.trace["step.pred_x0"]  # [S, B, C, F', h, w]
    steps = np.unique(np.linspace(0, len(x0) - 1, min(len(x0), _PRED_X0_ROWS)).round().astype(int))
    with torch.no_grad():
        images = torch.cat([pipe.decode_latents(x0[s].to(pipe.device)) for s in steps])  # [rows, F, H, W, 3]
    labels = [f"step {s}\nt={int(run.timesteps[s])}" for s in steps]
    fig = viz.steps_frames_grid(images, step_labels=labels, max_rows=None,
                                title=f"predicted clean video at each step: {run.params['prompt']!r}, seed {run.params['seed']}")
    _replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=80))


def make_one(pipe, combo: dict, folder: pathlib.Path, cid: str, *, pred_x0: bool = False, frames: bool = True) -> dict:
    """Make one combination's video and write its files; returns its manifest entry (not yet written)."""
    import numpy as np

    start = time.perf_counter()
    settings = {k: v for k, v in combo.items() if k not in ("prompt", "seed")}
    run = pipe.start(combo["prompt"], seed=combo["seed"], record=["step.pred_x0"] if pred_x0 else None, **settings)
    video = run.finish(progress=False).decode()
    files = {"video": f"{cid}.mp4", "record": f"{cid}.mp4.json"}
    video.save(folder / files["video"], overwrite=True)
    if frames:
        files["frames"] = f"{cid}.frames.npy"
        _replace_atomically(folder / files["frames"], lambda tmp: np.save(tmp, video.to_uint8()))  # [F, H, W, 3]
    if pred_x0:
        files["pred_x0"] = f"{cid}.pred_x0.png"
        _save_pred_x0(pipe, run, folder / files["pred_x0"])
    return {"id": cid, "combination": combo, "files": files,
            "bytes": {f: (folder / f).stat().st_size for f in files.values()},
            "seconds": round(time.perf_counter() - start, 3),
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds"),
            "device": str(pipe.device)}


def sweep(model, prompts, seeds, out, *, pred_x0: bool = False, frames: bool = True, overwrite: bool = False,
          progress: bool = True, device=None, dtype=None, cpu: bool | None = None, load_kwargs: dict | None = None,
          **settings) -> SweepResult:
    """Make one video per combination of `prompts` x `seeds` x the settings' values, into the folder `out`.

    Args:
        model: a `StepwisePipeline`, or what `t2v_nb.load` takes (a preset name, hub id or model directory;
            loaded on this process's device, with `device`, `dtype` and `load_kwargs` if given).
        prompts, seeds: lists (one prompt may be a str).
        out: the folder (created if missing); results already there are kept and skipped.
        pred_x0: also write `<id>.pred_x0.png`, the predicted clean video at up to 8 steps (VAE-decoded).
        frames: also write `<id>.frames.npy`, the frames as uint8 [F, H, W, 3] (what the contact sheet reads).
        overwrite: make every combination again, even those already done.
        progress: show a progress bar over the grid.
        cpu: when launched as several processes, share the CPU instead of one GPU each (see `process_state`).
        **settings: lists of values for `pipe.start`'s settings (`SWEEPABLE`), e.g. `guidance_scale=[1, 3, 7]`;
            a setting not given keeps the model's default.

    Returns:
        A `SweepResult` over this grid (`.entries`, `.table()`, `t2v_nb.viz.contact_sheet(result)`). Launched as
        several processes, each makes its share; all return the whole grid's result.

    >>> result = sweep("toy-shapes", prompts=["a red circle moving right"], seeds=[0, 1],
    ...                guidance_scale=[1, 3], out="sweeps/a")  # doctest: +SKIP
    """
    axes = check_grid(prompts, seeds, settings)  # 1. the grid: errors before any work
    state = process_state(cpu)  # 2. this process and its device
    pipe = _pipeline(model, device if device is not None else state.device, dtype, load_kwargs)
    grid = combinations(axes)
    _check_combinations(pipe, grid)  # 3. the model's checks on every combination
    folder = pathlib.Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    key = _model_key(pipe)
    ids = [combination_id(key, c) for c in grid]
    done = read_manifests(folder)
    todo = [i for i, cid in enumerate(ids) if overwrite or not is_complete(folder, done.get(cid))]
    state.wait_for_everyone()  # 4. every process has listed what is left before any process writes
    with state.split_between_processes(todo) as mine:
        _make_share(pipe, [(grid[i], ids[i]) for i in mine], folder, state, len(grid) - len(todo),
                    len(grid), pred_x0=pred_x0, frames=frames, progress=progress)
    state.wait_for_everyone()  # 5. every share written
    entries = read_manifests(folder)
    made = [entries[c] for c in ids if is_complete(folder, entries.get(c))]
    missing = [g for g, c in zip(grid, ids) if not is_complete(folder, entries.get(c))]
    return SweepResult(folder, axes, made, missing)


def _make_share(pipe, jobs: list, folder: pathlib.Path, state, skipped: int, total: int, **how) -> None:
    """Make this process's combinations, each written before its manifest line, with a progress bar."""
    from tqdm.auto import tqdm

    many = state.num_processes > 1
    manifest = folder / (f"manifest.{state.process_index}.jsonl" if many else MANIFEST)
    bar = tqdm(total=len(jobs) if many else total, initial=0 if many else skipped, disable=not how.pop("progress"),
               desc=f"sweep, process {state.process_index}" if many else "sweep", position=state.process_index)
    with bar:
        for combo, cid in jobs:
            entry = make_one(pipe, combo, folder, cid, **how)
            entry["process"] = state.process_index
            _append_line(manifest, entry)
            bar.update(1)


# -------------------------------------------------------------------------------------------- the CLI

_CONFIG_KEYS = ("model", "out", "prompts", "seeds", "settings", "pred_x0", "frames", "overwrite", "dtype", "device",
                "cpu", "contact_sheet")


def read_config(path) -> dict:
    """A sweep config from JSON (.json) or YAML (.yaml, .yml; needs pyyaml): the keys of `_CONFIG_KEYS`."""
    path = pathlib.Path(path)
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise ValueError(f"{str(path)!r}: a sweep config is .json, .yaml or .yml, not {path.suffix!r}.")
    text = path.read_text("utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ImportError(f"Reading {str(path)!r} needs pyyaml: 'pip install pyyaml', or write the config as JSON.") from None
        config = yaml.safe_load(text)
    else:
        config = json.loads(text)
    if not isinstance(config, dict):
        raise ValueError(f"{str(path)!r} must hold a mapping of {', '.join(_CONFIG_KEYS)}; got {type(config).__name__}.")
    unknown = [k for k in config if k not in _CONFIG_KEYS]
    if unknown:
        raise ValueError(f"{str(path)!r}: unknown key(s) {', '.join(map(repr, unknown))}; a config takes "
                         f"{', '.join(_CONFIG_KEYS)} (settings: {{name: [values]}}).")
    if not isinstance(config.get("settings", {}), dict):
        raise ValueError(f"{str(path)!r}: settings must be a mapping of setting name -> list of values.")
    return config


def _parse_set(text: str) -> tuple[str, list]:
    """"guidance_scale=1,3,7" -> ("guidance_scale", [1, 3, 7]); a JSON list after = is read as JSON
    ("guidance_interval=[null, [700, 1000]]"); items that are not JSON stay strings ("scheduler=ddim,euler")."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--set takes NAME=VALUE,VALUE,... (e.g. guidance_scale=1,3,7), not {text!r}.")
    if rest.lstrip().startswith("["):
        try:
            values = json.loads(rest)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"--set {name}: {rest!r} is not a JSON list ({e}).") from None
        return name.strip(), values

    def item(s: str):
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            return s.strip()

    return name.strip(), [item(s) for s in rest.split(",")]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m t2v_nb.sweep", description=(
        "Make one video per combination of prompts x seeds x settings into a folder, resumably. Under "
        "`accelerate launch` (or torchrun) the processes share the grid, one device each."))
    p.add_argument("config", nargs="?", help="a .json or .yaml config (flags given here override it)")
    p.add_argument("--model", help="preset, hub id or model directory (default toy-shapes)")
    p.add_argument("--out", help="folder to write to (default sweeps/<model>)")
    p.add_argument("--prompt", action="append", dest="prompts", help="a prompt (repeat for several)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds, e.g. --seeds 0 1 2")
    p.add_argument("--set", action="append", type=_parse_set, default=[], metavar="NAME=V1,V2",
                   help=f"a swept setting, repeatable: one of {', '.join(SWEEPABLE)}")
    p.add_argument("--pred-x0", action="store_true", default=None, help="also write each pred-x0 picture")
    p.add_argument("--no-frames", dest="frames", action="store_false", default=None, help="no .frames.npy files")
    p.add_argument("--overwrite", action="store_true", default=None, help="remake results already done")
    p.add_argument("--dtype", help="float32, float16 or bfloat16 (default: the model's default on the device)")
    p.add_argument("--device", help="one process only: cpu, cuda, cuda:N (launched: each process's own)")
    p.add_argument("--cpu", action="store_true", default=None, help="launched processes share the CPU")
    p.add_argument("--no-contact-sheet", dest="contact_sheet", action="store_false", default=None,
                   help="do not write contact_sheet.png when done")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    config = read_config(args.config) if args.config else {}
    for key in ("model", "out", "prompts", "seeds", "pred_x0", "frames", "overwrite", "dtype", "device", "cpu",
                "contact_sheet"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    settings = {**config.get("settings", {}), **dict(args.set)}
    model = config.get("model", "toy-shapes")
    out = config.get("out") or os.path.join("sweeps", re.sub(r"[^A-Za-z0-9_.-]+", "_", str(model)))
    if "prompts" not in config or "seeds" not in config:
        raise SystemExit("A sweep needs prompts and seeds: --prompt TEXT --seeds 0 1, or prompts/seeds in the config.")
    result = sweep(model, config["prompts"], config["seeds"], out, pred_x0=bool(config.get("pred_x0", False)),
                   frames=bool(config.get("frames", True)), overwrite=bool(config.get("overwrite", False)),
                   progress=not args.quiet, device=config.get("device"), dtype=config.get("dtype"),
                   cpu=config.get("cpu"), **settings)
    if process_state().process_index == 0:
        print(result.table())
        if config.get("contact_sheet", True) and result.entries:
            from .viz import contact_sheet

            contact_sheet(result, path=result.folder / "contact_sheet.png")
            print(f"contact sheet: {result.folder / 'contact_sheet.png'}")
    return 0


class _CallableModule(types.ModuleType):
    """This module, callable as its function `sweep`: `t2v_nb.sweep(...)` makes a sweep, and `t2v_nb.sweep` is
    still the module (`t2v_nb.sweep.SweepResult`), whichever way it was imported."""

    def __call__(self, *args, **kwargs) -> SweepResult:
        return sweep(*args, **kwargs)

    @property
    def __signature__(self):
        import inspect

        return inspect.signature(sweep)


if __name__ == "__main__":  # run the imported module's main, so that its classes are the ones viz and others see
    from t2v_nb.sweep import main as _main

    sys.exit(_main())
else:
    sys.modules[__name__].__class__ = _CallableModule
