"""The two bundled toys, one default video each: t2v_nb's loop and the model's own diffusers pipeline.

    python benchmarks/toy_bench.py [--threads 2] [--repeats 7]

toy-shapes (UNet3D, DPM-Solver++ at the preset's steps and guidance) against diffusers' TextToVideoSDPipeline, and
toy-shapes-flow (WanTransformer3DModel, flow-matching Euler at the preset's steps and guidance) against WanPipeline: 8 frames
of 64x64, text encoding and VAE decode included, record=default for t2v_nb. Interleaved rounds in rotating
order after one warm-up each; medians with min and max. The issue's goal for the flow toy: under 1 s per
video on 2 CPU cores. A benchmark reports; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

PROMPT = "a red circle moving right"


def _diffusers_pipes():
    import diffusers

    from t2v_nb.models import PRESETS, toy_model_dir
    from t2v_nb.toy import train_flow

    diffusers.utils.logging.set_verbosity_error()
    out = {}
    ms = diffusers.TextToVideoSDPipeline.from_pretrained(toy_model_dir("toy-shapes"), local_files_only=True)
    ms.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(ms.scheduler.config)
    ms.set_progress_bar_config(disable=True)
    # both guide every step (t2v_nb's preset since 2026-12-01; before, it guided only while t >= 700 but computed
    # both branches at every step all the same), so the model work per video is the same on both sides
    out["toy-shapes"] = lambda: ms(PROMPT, num_frames=8, height=64, width=64, num_inference_steps=PRESETS["toy-shapes"].num_inference_steps,
                                   guidance_scale=PRESETS["toy-shapes"].guidance_scale,
                                   generator=torch.Generator().manual_seed(0), output_type="np")
    wan = diffusers.WanPipeline.from_pretrained(toy_model_dir("toy-shapes-flow"), local_files_only=True)
    wan.set_progress_bar_config(disable=True)
    out["toy-shapes-flow"] = lambda: train_flow.generate(wan, PROMPT, 0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", help="also write the raw seconds here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import t2v_nb

    jobs = {}
    for name, ref in _diffusers_pipes().items():
        pipe = t2v_nb.load(name, device="cpu")
        jobs[f"t2v_nb {name}"] = lambda pipe=pipe: pipe.generate(PROMPT, seed=0, progress=False)
        jobs[f"diffusers {name}"] = ref
    times = {k: [] for k in jobs}
    for fn in jobs.values():
        fn()  # warm-up
    names = list(jobs)
    for r in range(args.repeats):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            jobs[k]()
            times[k].append(time.perf_counter() - t0)
    print(f"{args.threads} torch threads, {os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.2f}, "
          f"torch {torch.__version__}")
    print("| what | median s/video | min | max |\n|---|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {np.median(v):.3f} | {min(v):.3f} | {max(v):.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(times, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
