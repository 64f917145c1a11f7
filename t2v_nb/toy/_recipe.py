"""The shape both toy training recipes share (`train` for toy-shapes, `train_flow` for toy-shapes-flow): a
resumable stage loop with a budget, its clocks, checkpoints written whole, the run's log, a clean stop on Ctrl-C
or SIGTERM, and the latent cache. Each recipe keeps only its models, batches and losses.

A stage's state (a dict in its checkpoint) uses one meaning per word:

- ``step``: optimizer steps done;
- ``seconds``: wall-clock time of those steps; ``seconds_by_device``: the same per device type;
- ``cpu_seconds``: the process's CPU time (all threads) in the steps that ran on a CPU, the recipe's "CPU-hours",
  which a busy shared machine does not inflate;
- ``budget_seconds`` (stages budgeted in minutes only): what a time budget counts, CPU time of the steps that ran
  on a CPU and wall time of those on an accelerator, so a busy CPU trains as long as an idle one, only later.

The log (``<workdir>/log.jsonl``) writes them as ``minutes``, ``cpu_minutes`` and ``budget_minutes``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import Callable, Iterable

import numpy as np
import torch

# The clocks of `timed`, as module attributes so that a test can put fake ones in.
wall_clock = time.perf_counter
cpu_clock = time.process_time


def _on_cpu(tree):
    """`tree` (dicts, lists, tuples of tensors and other values) with every tensor on the CPU."""
    if isinstance(tree, dict):
        return {k: _on_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_on_cpu(v) for v in tree)
    return tree.cpu() if torch.is_tensor(tree) else tree


def save(obj, path: str) -> None:
    """torch.save with every tensor on the CPU (a run trained on a GPU goes on on a machine without one, and
    back), through a temporary file, so that a stop mid-write leaves the previous checkpoint whole."""
    tmp = path + ".tmp"
    torch.save(_on_cpu(obj), tmp)
    os.replace(tmp, path)


def load(path: str) -> dict | None:
    """The checkpoint at `path` with its tensors on the CPU, or None where there is none yet."""
    return torch.load(path, weights_only=False, map_location="cpu") if os.path.exists(path) else None


def log(workdir: str, **row) -> None:
    """Append `row` (with the time) to `<workdir>/log.jsonl` and print it as `key=value` pairs."""
    row["time"] = time.time()
    with open(os.path.join(workdir, "log.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")
    print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "time"),
          flush=True)


class Stop:
    """True once Ctrl-C or SIGTERM came (after `install`): the loops finish the current step, checkpoint and
    return, so that running the same command again carries on."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested

    def _on_signal(self, signum, frame) -> None:
        self.requested = True

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)


class Budget:
    """How long a stage trains, counted across resumptions: `steps` optimizer steps, or `minutes` of budget
    time (``state["budget_seconds"]``, see the module's docstring). Exactly one of the two."""

    def __init__(self, steps: int | None = None, minutes: float | None = None):
        if (steps is None) == (minutes is None):
            raise ValueError(f"A budget is steps or minutes, got steps={steps!r}, minutes={minutes!r}.")
        self.steps, self.minutes = steps, minutes

    def left(self, state: dict) -> bool:
        if self.steps is not None:
            return state["step"] < self.steps
        return state.get("budget_seconds", 0.0) < self.minutes * 60


@contextlib.contextmanager
def timed(state: dict, device: torch.device, budget: bool = False):
    """Add the time of the step run inside to `state` (its keys: the module's docstring); `budget`: also to
    ``budget_seconds``."""
    t0, c0 = wall_clock(), cpu_clock()
    yield
    wall, cpu = wall_clock() - t0, cpu_clock() - c0
    on_cpu = device.type == "cpu"
    state["seconds"] = state.get("seconds", 0.0) + wall
    by_device = state.setdefault("seconds_by_device", {})
    by_device[device.type] = by_device.get(device.type, 0.0) + wall
    if on_cpu:
        state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + cpu
    if budget:
        state["budget_seconds"] = state.get("budget_seconds", 0.0) + (cpu if on_cpu else wall)


def time_columns(state: dict) -> dict:
    """The log's time columns of a stage's state: minutes, cpu_minutes and (where budgeted so) budget_minutes."""
    row = {"minutes": state.get("seconds", 0.0) / 60, "cpu_minutes": state.get("cpu_seconds", 0.0) / 60}
    if "budget_seconds" in state:
        row["budget_minutes"] = state["budget_seconds"] / 60
    return row


# What an export's training record (model_index.json) means by its minutes (`minutes_record`).
MINUTES = ("<stage>_minutes: wall time of the training steps; <stage>_cpu_minutes: CPU time (all threads) of those "
           "that ran on a CPU; <stage>_budget_minutes: what a budget in minutes counts, CPU time on a CPU, wall time "
           "on a GPU")


def minutes_record(stage: str, state: dict) -> dict:
    """A stage's time for an export's record (see MINUTES), in minutes to 0.1, with the steps its wall time
    leaves out where the state says so (`untimed_steps`)."""
    record = {f"{stage}_minutes": round(state.get("seconds", 0.0) / 60, 1),
              f"{stage}_cpu_minutes": round(state.get("cpu_seconds", 0.0) / 60, 1)}
    if "budget_seconds" in state:
        record[f"{stage}_budget_minutes"] = round(state["budget_seconds"] / 60, 1)
    if state.get("untimed_steps"):
        record[f"{stage}_untimed_steps"] = state["untimed_steps"]
    return record


def mean_loss(losses: list) -> float:
    """The mean of a log interval's losses: Python floats, or detached tensors (which an accelerator need not
    copy to the CPU at every step)."""
    return torch.stack(losses).mean().item() if torch.is_tensor(losses[0]) else float(np.mean(losses))


def run_stage(workdir: str, stage: str, state: dict, step: Callable[[], object], *, budget: Budget,
              device: torch.device, save: Callable[[], None], stop: Stop, log_every: int,
              row: Callable[[], dict] = dict, checkpoint_minutes: float = 3.0, deadline: float | None = None,
              before_step: Callable[[], None] | None = None, checkpoint_now: Callable[[], bool] = lambda: False,
              after_checkpoint: Callable[[], None] | None = None) -> None:
    """The loop of every training stage: `step()` (one optimizer step; returns its loss, a float or a detached
    tensor) until `budget` is spent, `stop` is set or the wall clock (time.time) passes `deadline`.

    Each step is timed into `state` (`timed`) and counted in ``state["step"]``. Every `log_every` steps a log row:
    the stage, the step, the mean loss, `time_columns` and `row()`'s entries. `save()` writes a checkpoint every
    `checkpoint_minutes` of wall time and after any step where `checkpoint_now()` is true, then
    `after_checkpoint()` runs (an evaluation that reads it). `before_step()` runs before each step. The caller
    saves once more at the end, with whatever it adds when the budget is spent."""
    last_checkpoint, losses = time.time(), []
    while budget.left(state) and not stop and (deadline is None or time.time() < deadline):
        if before_step is not None:
            before_step()
        with timed(state, device, budget=budget.minutes is not None):
            loss = step()
        state["step"] += 1
        losses.append(loss)
        if state["step"] % log_every == 0:
            log(workdir, stage=stage, step=state["step"], loss=mean_loss(losses), **time_columns(state), **row())
            losses = []
        if time.time() - last_checkpoint > 60 * checkpoint_minutes or checkpoint_now():
            save()
            last_checkpoint = time.time()
            if after_checkpoint is not None:
                after_checkpoint()


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float, clip: list | None = None) -> None:
    """One step of `opt` on `loss` at learning rate `lr`; `clip`: the parameters whose gradient norm is clipped
    to 1 first."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    opt.step()


@torch.no_grad()
def ema_update(ema_params: list, live_params: list, step: int, decay: float) -> None:
    """Move the EMA copies towards the live parameters after step `step` (0-based); the decay warms up,
    (1 + step) / (10 + step), so the average forgets the random init quickly, up to `decay`."""
    torch._foreach_lerp_(ema_params, live_params, 1 - min(decay, (1 + step) / (10 + step)))


def crops_around(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator, size: int = 32,
                 grid: int = 8) -> np.ndarray:
    """The VAEs' training crops: a size x size crop of each image (a frame [H, W, 3] or a clip [F, H, W, 3]) around
    the mean place of its mask [H, W] (True on the shape), moved by up to 8 pixels at random, at offsets on the
    latent grid (`grid` pixels). [N, ..., size, size, 3]"""
    h = masks.shape[1]
    out = np.empty((*images.shape[:-3], size, size, 3), np.float32)
    for k, (image, mask) in enumerate(zip(images, masks)):
        ys, xs = np.nonzero(mask)
        cy, cx = (ys.mean(), xs.mean()) if len(ys) else (h / 2, h / 2)
        y0 = int(np.clip(grid * round((cy - size / 2 + rng.integers(-8, 9)) / grid), 0, h - size))
        x0 = int(np.clip(grid * round((cx - size / 2 + rng.integers(-8, 9)) / grid), 0, h - size))
        out[k] = image[..., y0:y0 + size, x0:x0 + size, :]
    return out


LATENTS = "latents.pt"  # the latent cache in a work directory


def encode_dataset(workdir: str, chunks: Iterable, encode: Callable, num_videos: int, stop: Stop,
                   device: torch.device, extra: Callable[[torch.Tensor], dict] = lambda mean: {}) -> dict | None:
    """Stage 2 of both recipes: the training videos encoded once, so the denoiser's stage spends its time on the
    denoiser. `chunks`: (clips, their indices in data.all_clips()) in order; `encode(clips)`: the posterior's
    (mean, std) [n, C, F, h, w]. Writes <workdir>/latents.pt: mean and std in half precision, the clip indices
    and `extra(mean)`'s entries, and returns it; or nothing is saved and None returned when `stop` comes first
    (the cache is then rebuilt from the start next time)."""
    means, stds, clip_ids = [], [], []
    t0 = time.time()
    for k, (clips, ids) in enumerate(chunks):
        if stop:
            return None
        with torch.no_grad():
            mean, std = encode(clips.to(device))
        means.append(mean.half().cpu())
        stds.append(std.half().cpu())
        clip_ids += ids
        if k % 20 == 0:
            print(f"encoded {len(clip_ids)}/{num_videos} videos ({time.time() - t0:.0f} s)", flush=True)
    mean = torch.cat(means)
    cache = {"mean": mean, "std": torch.cat(stds), "clip": torch.tensor(clip_ids), **extra(mean)}
    save(cache, os.path.join(workdir, LATENTS))
    log(workdir, stage="latents", videos=num_videos, seconds=time.time() - t0, device=str(device),
        **{k: v for k, v in cache.items() if not torch.is_tensor(v)})
    return cache
