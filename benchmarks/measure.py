"""How bench.py and gpu_bench.py measure: CPU-time clocks, interleaved rounds, statistics, memory, FLOPs.

On a shared machine wall time swings with the background load; the CPU time of a one-thread process
(`time.process_time`) barely does, so comparisons use it. Compared variants run interleaved in
rotating order, ratios are taken per round, and medians come with a bootstrap interval.
"""

from __future__ import annotations

import random
import statistics
import time

import torch

med = statistics.median


def median_ci(xs, n=2000):
    """95% bootstrap interval of the median (seeded, so the table is reproducible from the raw numbers)."""
    rng = random.Random(0)
    meds = sorted(med(rng.choices(xs, k=len(xs))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def spread(xs, fmt="{:.3f}"):
    return f"median {fmt.format(med(xs))}, min {fmt.format(min(xs))}, max {fmt.format(max(xs))} (n={len(xs)})"


class UNetClock:
    """CPU seconds spent inside `unet.forward`, added up, so the time outside the UNet can be told apart."""

    def __init__(self, unet):
        self.total, self._t0 = 0.0, 0.0
        unet.register_forward_pre_hook(lambda *a: setattr(self, "_t0", time.process_time()))
        unet.register_forward_hook(lambda *a: setattr(self, "total", self.total + time.process_time() - self._t0))


def interleaved(variants: dict, rounds: int, clock: UNetClock, steps: int) -> dict:
    """Run each variant once per round, in an order rotated every round; round 0 only warms up.

    Returns {"wall": {name: [s]}, "cpu": {name: [s]}, "outside": {name: [CPU ms per step outside the UNet]}}.
    CPU time (time.process_time, one torch thread) is what the comparison uses: on a shared machine it
    barely moves with the background load, while wall time swings by tens of percent.
    """
    names = list(variants)
    out = {key: {n: [] for n in names} for key in ("wall", "cpu", "outside")}
    for r in range(rounds + 1):
        for n in names[r % len(names):] + names[: r % len(names)]:
            clock.total = 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            variants[n]()
            cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            if r:
                out["wall"][n].append(wall)
                out["cpu"][n].append(cpu)
                out["outside"][n].append((cpu - clock.total) / steps * 1e3)
    return out


def rss_kib() -> dict:
    """VmRSS (now) and VmHWM (peak since the last reset) of this process, in KiB (Linux)."""
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) for k, v in (ln.split(":", 1) for ln in f) if k in ("VmRSS", "VmHWM")}


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            return f.write("5") == 1
    except OSError:
        return False


def per_frame(fn, frames: int, repeats: int) -> list[float]:
    """CPU seconds per frame of `fn`, which handles `frames` frames per call; one warm-up call first."""
    fn()
    out = []
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        out.append((time.process_time() - c0) / frames)  # CPU seconds per frame
    return out


def count_flops(fn) -> int:
    """FLOPs of `fn()` (matmuls, convolutions, attention; 1 multiply-add = 2), e.g. on meta tensors."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def count_ops(fn) -> int:
    """How many aten operations `fn()` dispatches (views included)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Count():
        fn()
    return Count.n
