"""LTX-Video on a CPU: t2v_nb against diffusers' LTXPipeline on the tiny random twin (tests/tiny_ltx.py).

    python benchmarks/ltx_bench.py [--rounds 10] [--threads 1]

The same components run by diffusers' `LTXPipeline` and by t2v_nb (record=None, "default", "all" = with every
attention map), text encoding and the denoising loop without the decode (output_type="latent"), interleaved in
rotating order, CPU time of one torch thread, ratios paired per round, median with a bootstrap interval (as
bench.py and wan_bench.py). Also the largest difference of the latents. Prints a markdown table and writes it
to benchmarks/out/ltx_results.md. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import measure as ms  # noqa: E402

OUT = os.path.join(HERE, "out")
PROMPT = "a red circle moving right"
# 17 frames at 256x256 -> 3 x 8 x 8 = 192 tokens
BENCH = dict(num_frames=17, height=256, width=256, num_inference_steps=10, guidance_scale=3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import tiny_ltx

    import t2v_nb

    parts = tiny_ltx.components()
    ref = tiny_ltx.reference(parts)
    pipe = t2v_nb.StepwisePipeline(**parts, defaults={"fps": tiny_ltx.FPS})
    clock = ms.UNetClock(parts["transformer"])  # CPU time inside the transformer, to tell the loop's own apart
    steps = BENCH["num_inference_steps"]

    def diffusers_run():
        out = ref(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", frame_rate=tiny_ltx.FPS,
                  **BENCH).frames  # packed [1, N, C]
        return out

    def ours(record):
        return lambda: pipe.start(PROMPT, seed=0, record=record, **BENCH).finish(progress=False).latents

    variants = {"diffusers": diffusers_run, "record=None": ours(None), "record=default": ours("default"),
                "record=all": ours("all")}
    from t2v_nb.families.ltx import pack

    same = (variants["diffusers"]() - pack(variants["record=default"]())).abs().max().item()
    res = ms.interleaved(variants, args.rounds, clock, steps)
    cpu, outside = res["cpu"], res["outside"]
    base = cpu["diffusers"]
    rows = [("1a", f"diffusers LTXPipeline, tiny twin (2 blocks, 2 x 8 wide), {BENCH['height']}x{BENCH['width']}x"
                   f"{BENCH['num_frames']} (192 tokens), {steps} steps Euler, cfg {BENCH['guidance_scale']} "
                   f"(text + loop, no decode)", f"{ms.med(base):.3f} s CPU",
             ms.spread(base) + f"; outside the transformer {ms.med(outside['diffusers']):.2f} ms/step")]
    for k, n in zip("bcd", list(cpu)[1:]):
        ratios = [x / b for x, b in zip(cpu[n], base)]
        lo, hi = ms.median_ci(ratios)
        goal = " (goal <= 1.02)" if n == "record=default" else (" (every attention map)" if n == "record=all" else "")
        rows.append((f"1{k}", f"t2v_nb {n} / diffusers, CPU time, paired per round{goal}", f"{ms.med(ratios):.3f}x",
                     ms.spread(ratios) + f", 95% CI of the median {lo:.3f}-{hi:.3f}; outside the transformer "
                     f"{ms.med(outside[n]):.2f} ms/step"))
    rows.append(("1e", "same latents as diffusers (max abs difference, record=default)", f"{same:.1e}", ""))
    table = "| # | what | value | detail |\n|---|---|---|---|\n" + "\n".join(f"| {' | '.join(r)} |" for r in rows)
    header = f"LTX-Video, CPU, {args.threads} thread(s), {args.rounds} rounds (torch {torch.__version__})\n\n"
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ltx_results.md"), "w") as f:
        f.write(header + table + "\n")
    print(header + table)


if __name__ == "__main__":
    main()
