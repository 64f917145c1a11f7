"""t2v_nb's benchmarks on a CPU: loop overhead against diffusers, the toy model, previews, trace memory, FLOPs.

Prints one markdown table and writes it to benchmarks/out/results.md, with the raw numbers in
benchmarks/out/results.json. What each row means: benchmarks/README.md. Run with `make bench` or

    python benchmarks/bench.py [--rounds 15] [--threads 1] [--no-sd-vae]

Timings on a shared machine are noisy: every timed thing is repeated and reported as a median (or
minimum, where the row says so); the pipelines being compared are measured interleaved, in rotating
order, so background load falls on all of them alike. FLOPs are counted with
`torch.utils.flop_counter.FlopCounterMode` on `meta` tensors: shapes only, no weights, no time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
import timeit
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure as ms  # noqa: E402
import modelscope_config as msc  # noqa: E402

import t2v_nb  # noqa: E402
from t2v_nb import hooks as _hooks  # noqa: E402
from t2v_nb import schedulers as _sched  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
PROMPT = "a red circle moving right"
# the toy preset's sizes and steps; guidance 7.5 as these rows were first measured (the toy preset says 3 now;
# the scale does not change the work: both branches are computed at every step)
TOY = dict(num_frames=8, height=64, width=64, num_inference_steps=20, guidance_scale=7.5)
PEAK_TFLOPS = {  # dense fp16 tensor-core peaks, vendor datasheets
    "T4": (65.0, "NVIDIA T4 datasheet, fp16/fp32-accumulate tensor core"),
    "H100 SXM": (989.4, "NVIDIA H100 datasheet, fp16 tensor core dense (1,979 with sparsity)"),
}
ROWS: list[tuple[str, str, str, str, str]] = []  # (#, what, value, spread / detail, goal)
RAW: dict = {}


def row(num, what, value, detail="", goal=""):
    ROWS.append((str(num), what, value, detail, goal))
    print(f"  {num:<4} {what}: {value}  {detail}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- 1. loop overhead vs diffusers


def _null_unet(sample, timestep, encoder_hidden_states=None, cross_attention_kwargs=None, return_dict=False):
    return (sample * 0.1,)  # a "UNet" that costs one multiply: what is left is the loop's own work


def bench_overhead(rounds: int, meta) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import TextToVideoSDPipeline

        parts = msc.toy_ms_components(scheduler="dpm++")
        ref = TextToVideoSDPipeline(**parts)
    ref.set_progress_bar_config(disable=True)
    pipe = t2v_nb.StepwisePipeline(**parts)
    clock = ms.UNetClock(parts["unet"])
    steps = TOY["num_inference_steps"]

    def diffusers_run():
        return ref(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **TOY).frames

    def ours(record):
        return lambda: pipe.start(PROMPT, seed=0, record=record, **TOY).finish(progress=False).latents

    variants = {"diffusers": diffusers_run, "record=None": ours(None), "record=default": ours("default"),
                "record=all": ours("all")}
    same = (variants["diffusers"]() - variants["record=default"]()).abs().max().item()
    res = ms.interleaved(variants, rounds, clock, steps)
    parts["unet"].forward = _null_unet  # the same loops around a UNet that does nothing
    del variants["record=all"]  # (no attention layer runs)
    null = ms.interleaved(variants, 3 * rounds, clock, steps)["cpu"]
    del parts["unet"].forward
    RAW["overhead"] = {**res, "null_unet_cpu_seconds": null, "max_abs_diff_latents": same}
    cpu, wall, outside = res["cpu"], res["wall"], res["outside"]
    base = cpu["diffusers"]
    row("1a", "diffusers TextToVideoSDPipeline, toy-size UNet3D, 64x64x8, 20 steps dpm++, cfg 7.5 (text + loop)",
        f"{ms.med(base):.3f} s CPU", ms.spread(base) + f"; wall median {ms.med(wall['diffusers']):.3f} s; "
        f"outside the UNet {ms.med(outside['diffusers']):.2f} ms/step")
    for k, n in zip("bcd", list(cpu)[1:]):
        ratios = [x / b for x, b in zip(cpu[n], base)]
        walls = [x / b for x, b in zip(wall[n], wall["diffusers"])]
        lo, hi = ms.median_ci(ratios)
        row(f"1{k}", f"t2v_nb {n} / diffusers, CPU time, paired per round", f"{ms.med(ratios):.3f}x",
            ms.spread(ratios) + f", 95% CI of the median {lo:.3f}-{hi:.3f}; wall-time ratio median {ms.med(walls):.3f} "
            f"(min {min(walls):.3f}, max {max(walls):.3f}); outside the UNet {ms.med(outside[n]):.2f} ms/step",
            "<= 1.03" if n == "record=default" else "")
    row("1e", "same latents as diffusers (max abs difference, record=default)", f"{same:.1e}")
    nb = null["diffusers"]
    for k, n in zip("fg", list(null)[1:]):
        extra = [(x - b) * 1e3 for x, b in zip(null[n], nb)]
        row(f"1{k}", f"loop with a no-op UNet: t2v_nb {n} minus diffusers, per run of 20 steps (CPU)",
            f"{ms.med(extra):+.1f} ms",
            f"diffusers {ms.med(nb) * 1e3:.1f} ms, t2v_nb {ms.med(null[n]) * 1e3:.1f} ms (medians, "
            f"n={len(nb)}); {ms.med(extra) / steps:+.2f} ms/step; implied ratio on the real run (1a): "
            f"{1 + ms.med(extra) / 1e3 / ms.med(base):.4f}x")
    bench_parts(pipe, ref, meta)


def bench_parts(pipe, ref, meta) -> None:
    """Pieces of t2v_nb's work that diffusers' loop does not do, each timed alone (CPU time, best of 5)."""
    run = pipe.start(PROMPT, seed=0, **TOY)
    for _ in range(3):
        run.step()  # a multistep scheduler with some history
    sched, x = run.scheduler, run.latents
    x_img = x.permute(0, 2, 1, 3, 4).flatten(0, 1)  # [B*F, C, h, w]

    def us(fn, number=200):  # CPU microseconds per call, best of 5
        return min(timeit.repeat(fn, number=number, repeat=5, timer=time.process_time)) / number * 1e6

    ms_latents = torch.randn(msc.SIZES["modelscope-1.7b"]["latents"])
    per_run = {
        "t2v_nb encode_text (prompt + negative)": us(lambda: pipe.encode_text(PROMPT, "", True), 20),
        "diffusers encode_prompt (prompt + negative)": us(lambda: ref.encode_prompt(PROMPT, "cpu", 1, True), 20),
        "copy of the scheduler (schedulers.make_scheduler)": us(lambda: _sched.make_scheduler(pipe.scheduler,
                                                                                                pipe.scheduler), 20),
        "pipe.dtype = diffusers' unet.dtype, which walks every submodule (pipe.device alike; t2v_nb reads them "
        "4x per start, 2x per decode), toy UNet3D": us(lambda: pipe.dtype, 20),
        f"pipe.dtype, ModelScope UNet ({len(list(meta.unet.modules()))} modules, meta device; "
        "UNet3DConditionModel.forward itself reads self.dtype once per call, in both pipelines)":
            us(lambda: meta.dtype, 5),
    }
    per_step = {
        "schedulers.save_state": us(lambda: _sched.save_state(sched)),
        "generator.get_state": us(lambda: run.generator.get_state()),
        "attention check per step (pipe.attention_names + trace.wants)": us(
            lambda: [run.trace.wants(n) for n in pipe.attention_names()]),
        "schedulers.pred_x0 by formula (dpm++)":
            us(lambda: _sched.pred_x0(sched, None, x_img, x_img, run.timesteps[3], 3)),
    }
    for label, z in (("toy", x), ("ModelScope size", ms_latents)):
        trace = _hooks.Trace(_hooks.STEP_POINTS)
        per_step[f"trace: 6 x .to('cpu', copy=True), {label} {list(z.shape)}"] = us(
            lambda trace=trace, z=z: [trace.add(n, z) for n in _hooks.STEP_POINTS] and trace.truncate(0))
        per_step[f"isfinite(next_latents).all(), {label}"] = us(lambda z=z: bool(torch.isfinite(z).all()))
    RAW["parts_us"] = {"per_run": per_run, "per_step": per_step}
    for k, (label, v) in enumerate(per_run.items()):
        row(f"1h.{k + 1}", f"once per run: {label}", f"{v / 1e3:.2f} ms", "best of 5")
    for k, (label, v) in enumerate(per_step.items()):
        row(f"1i.{k + 1}", f"every step: {label}", f"{v:.1f} us", "best of 5")


# ---------------------------------------------------------------------- 2. the toy model


def toy_pipe():
    """The bundled toy model if its weights are there, else the same architecture with random weights."""
    from t2v_nb.models import toy_model_dir
    from t2v_nb.toy import components as toy

    if os.path.exists(os.path.join(toy_model_dir(), "model_index.json")):
        return t2v_nb.load("toy-shapes", device="cpu"), "trained weights (t2v_nb.load('toy-shapes'))"
    try:
        tok = toy.build_tokenizer()
    except ImportError:
        tok = msc.char_tokenizer()
    parts = {"tokenizer": tok, "text_encoder": toy.build_text_encoder(len(tok)), "unet": toy.build_unet(),
             "vae": toy.build_vae(), "scheduler": _sched.make_scheduler("dpm++", toy.build_scheduler())}
    for m in (parts["text_encoder"], parts["unet"], parts["vae"]):
        m.eval().requires_grad_(False)
    defaults = {k: v for k, v in TOY.items()} | {"fps": 8.0}
    return t2v_nb.StepwisePipeline(**parts, defaults=defaults), "random weights (no t2v_nb/toy/weights yet)"


def toy_memory_child() -> None:
    """In a fresh process: peak RSS growth of a first and a second default generation (prints JSON).

    The peak is reset after the model is built, so it measures what generating adds. tracemalloc then
    follows a third generation: it sees only Python's own allocations, not tensor storage.
    """
    import tracemalloc

    pipe, _ = toy_pipe()
    out = {"peak_reset": True}
    for k in ("first", "second"):
        out["peak_reset"] &= ms.reset_peak()
        before = ms.rss_kib()
        run = pipe.start(PROMPT, seed=0)
        run.finish(progress=False)
        run.decode()
        out[k] = {"rss_before_kib": before["VmRSS"], "peak_kib": ms.rss_kib()["VmHWM"]}
        out["trace_bytes"] = run.trace.nbytes()
        del run
    tracemalloc.start()
    pipe.start(PROMPT, seed=0).finish(progress=False).decode()
    out["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
    print(json.dumps(out))


def bench_toy(repeats: int) -> None:
    pipe, which = toy_pipe()
    pipe.generate(PROMPT, seed=0, progress=False)  # warm-up
    secs, walls = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        pipe.generate(PROMPT, seed=0, progress=False)
        secs.append(time.process_time() - c0)
        walls.append(time.perf_counter() - t0)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-memory",
                          "--threads", str(torch.get_num_threads())], capture_output=True, text=True, check=True)
    mem = json.loads(out.stdout.strip().splitlines()[-1])
    RAW["toy"] = {"weights": which, "cpu_seconds_per_video": secs, "wall_seconds_per_video": walls, "memory": mem}
    row("2a", f"toy-shapes, UNetMotionModel with {which}: one video, 64x64x8, 20 steps dpm++, decode included",
        f"{ms.med(secs):.2f} s CPU",
        ms.spread(secs, "{:.2f}") + f"; wall median {ms.med(walls):.2f} s (min {min(walls):.2f}); "
        "record=default")
    how = "VmHWM reset after building" if mem["peak_reset"] else "VmHWM not resettable here: includes the build"
    for k, key in zip("bc", ("first", "second")):
        m = mem[key]
        row(f"2{k}", f"toy: peak RSS growth during the {key} generation in a fresh process",
            f"{(m['peak_kib'] - m['rss_before_kib']) / 1024:.1f} MiB",
            f"RSS {m['rss_before_kib'] / 1024:.0f} -> peak {m['peak_kib'] / 1024:.0f} MiB ({how})")
    row("2d", "toy: Python-side peak of one generation (tracemalloc; tensor storage is not traced) / trace held",
        f"{mem['tracemalloc_peak_bytes'] / 2**20:.2f} MiB", f"trace.nbytes() = {mem['trace_bytes'] / 2**20:.3f} MiB")


# ---------------------------------------------------------------------- 3. previews vs VAE decode


def bench_previews(sd_vae: bool) -> None:
    from t2v_nb.preview import fit_linear_preview, sd_vae_preview

    pipe = t2v_nb.StepwisePipeline(**msc.toy_ms_components())  # the toy VAE, decoded as t2v_nb does
    z = torch.randn(1, 4, 8, 8, 8, generator=torch.Generator().manual_seed(0))  # [B, C, F, h, w]
    lin = fit_linear_preview(pipe.vae, z, "random toy VAE")
    # label: (decode, frames per decode, repeats, preview, frames per preview)
    cases = {"toy VAE, 8x8 latents -> 64x64": (lambda: pipe.decode_latents(z), 8, 10, lambda: lin(z), 8)}
    if sd_vae:
        torch.manual_seed(0)
        sd = msc.build("vae").eval().requires_grad_(False)
        z1 = torch.randn(1, 4, 1, 32, 32)
        zs = torch.randn(1, 4, 16, 32, 32)
        ref = sd_vae_preview()
        decode = lambda: sd.decode(z1[:, :, 0] / sd.config.scaling_factor).sample  # noqa: E731
        label = "SD VAE (ModelScope's), 32x32 latents -> 256x256, 1 frame per decode"
        cases[label] = (decode, 1, 3, lambda: ref(zs), 16)
    RAW["previews"] = {}
    for k, (label, (dec, frames, reps, prev, prev_frames)) in zip("ab", cases.items()):
        d = ms.per_frame(dec, frames, reps)
        p = ms.per_frame(prev, prev_frames, 200)
        RAW["previews"][label] = {"decode_s_per_frame": d, "preview_s_per_frame": p}
        row(f"3{k}", f"linear preview vs full VAE decode per frame, {label}", f"{ms.med(d) / ms.med(p):,.0f}x",
            f"decode {ms.med(d) * 1e3:.2f} ms/frame (n={reps}), preview {ms.med(p) * 1e6:.1f} us/frame (n=200); "
            "CPU-time medians",
            ">= 100x")


# ---------------------------------------------------------------------- 4. trace memory, 5. FLOPs


def meta_pipe():
    """A StepwisePipeline over ModelScope's real architecture on the meta device (no weights, no memory)."""
    with torch.device("meta"):
        parts = {n: msc.build(n) for n in ("unet", "text_encoder", "vae")}
    return t2v_nb.StepwisePipeline(msc.char_tokenizer(), parts["text_encoder"], parts["unet"], parts["vae"],
                                   msc.build("scheduler"))


def bench_trace_memory(pipe) -> None:
    """Bytes the trace keeps per step, from shapes alone: 6 step tensors (record=default), attention maps."""
    from t2v_nb.attention import attention_layers

    RAW["trace_memory"] = {}
    n = len(_hooks.STEP_POINTS)  # with guidance every step point has a value
    for k, (preset, size) in zip("ab", msc.SIZES.items()):
        numel = math.prod(size["latents"])
        layers = attention_layers(pipe, size["height"], size["width"], size["num_frames"])
        attn = sum(math.prod(v["shape"]) for v in layers.values())  # numbers per step, all layers
        raw, cells = {"attention_layers": len(layers)}, []
        for dtype, b in (("fp16", 2), ("fp32", 4)):
            per_step = numel * b * n
            raw[dtype] = {"per_tensor": numel * b, "per_step": per_step, "attention_per_step": attn * b}
            cells.append(f"{dtype}: {numel * b / 2**10:.0f} KiB x {n} = {per_step / 2**20:.2f} MiB/step, "
                         f"{per_step * 25 / 2**20:.0f} / {per_step * 50 / 2**20:.0f} MiB for 25 / 50 steps; "
                         f"attention +{attn * b / 2**20:.1f} MiB/step ({attn * b * 50 / 2**30:.2f} GiB for 50)")
        RAW["trace_memory"][preset] = raw
        row(f"4{k}", f"trace per step, {preset}, latents {list(size['latents'])} (record=default; attention: "
            f"record='all', {len(layers)} layers)", f"{raw['fp16']['per_step'] / 2**20:.2f} MiB (fp16)",
            " / ".join(cells) + "; plus 1 latent copy per step for run.branch (kept even with record=None)")


def bench_flops(pipe) -> None:
    from t2v_nb.attention import capture

    params = {n: msc.num_params(getattr(pipe, n)) for n in ("unet", "text_encoder", "vae")}
    row("5a", "ModelScope 1.7B parameters, built on the meta device from modelscope_config.py",
        f"{sum(params.values()) / 1e9:.3f} B",
        ", ".join(f"{n} {p / 1e6:,.1f} M (expected ~{msc.EXPECTED_PARAMS[n] / 1e6:,.0f} M)"
                  for n, p in params.items()))
    with torch.device("meta"):
        x = torch.empty(2, 4, 16, 32, 32)  # [2B (CFG), C, F, h, w]
        emb = torch.empty(2, 77, 1024)  # [2B, 77, D]
        ids = torch.zeros(2, 77, dtype=torch.long)
        z = torch.empty(16, 4, 32, 32)  # 16 frames as images
    t = torch.tensor(999, device="meta")
    unet = ms.count_flops(lambda: pipe.unet(x, t, encoder_hidden_states=emb, return_dict=False))
    text = ms.count_flops(lambda: pipe.text_encoder(ids))
    vae = ms.count_flops(lambda: pipe.vae.decode(z))

    # record="all": the attention maps recomputed inside the same UNet call (t2v_nb.attention.capture).
    class _Run:  # just what capture reads from a Run
        params = {"height": 256, "width": 256, "num_frames": 16}
        latents, guidance, trace = torch.empty(1, 4, 16, 32, 32, device="meta"), True, _hooks.Trace(())
        pipe = None

        def emit(self, name, value, step=None, t=None):
            return value

    _Run.pipe = pipe
    names = pipe.attention_names()
    with_capture = ms.count_flops(lambda: _capture_call(pipe, _Run(), names, capture, x, t, emb))
    ops = ms.count_ops(lambda: pipe.unet(x, t, encoder_hidden_states=emb, return_dict=False))
    RAW["flops"] = {"aten_ops_per_unet_call": ops, "params": params, "unet_step": unet, "text_encoder_2x77": text,
                    "vae_decode_16": vae,
                    "unet_step_with_attention_capture": with_capture, "peaks_tflops": PEAK_TFLOPS}
    row("5b", "ModelScope UNet FLOPs per denoising step (batch 2 for CFG, 16x32x32 latents, 77x1024 text)",
        f"{unet / 1e12:.2f} TFLOP", "FlopCounterMode on meta tensors (matmuls, convs, attention; 1 MAC = 2 FLOP)")
    row("5c", "... with t2v_nb record='all' (attention maps recomputed in every cross/temporal layer)",
        f"{with_capture / 1e12:.2f} TFLOP", f"+{(with_capture / unet - 1) * 100:.1f}% over the UNet alone, "
        f"{len(names)} layers")
    for k, (gpu, (peak, src)) in zip("de", PEAK_TFLOPS.items()):
        per_step = unet / (peak * 1e12)
        total = (25 * unet + text + vae) / (peak * 1e12)
        row(f"5{k}", f"arithmetic floor on {gpu} at {peak:g} TFLOP/s fp16 dense ({src})",
            f"{per_step * 1e3:.1f} ms/step", f"25 steps + text ({text / 1e9:.0f} GFLOP) + VAE decode of 16 frames "
            f"({vae / 1e12:.2f} TFLOP): {total:.2f} s/video")
    row("5f", "ModelScope UNet: aten operations per call (each one a dispatch, most of them a kernel launch on a GPU)",
        f"{ops:,}", "counted with a TorchDispatchMode on meta tensors, views included")


def _capture_call(pipe, run, names, capture, x, t, emb):
    with capture(run, 0, 999, names) as branch, branch("both"):
        pipe.unet(x, t, encoder_hidden_states=emb, return_dict=False)


# ---------------------------------------------------------------------- main


def machine() -> dict:
    import diffusers
    import transformers

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if os.path.exists("/usr/bin/lscpu") else ""
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "?")

    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": model,
            "nproc": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__, "t2v_nb": t2v_nb.__version__,
            "python": platform.python_version(), "loadavg_at_start": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds of the overhead comparison")
    ap.add_argument("--repeats", type=int, default=5, help="repeats of the toy model's generation")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is the least noisy on a shared box)")
    ap.add_argument("--no-sd-vae", action="store_true", help="skip the SD-VAE decode (slow on a CPU)")
    ap.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    if args.child_memory:
        return toy_memory_child()
    info = machine()
    print(f"t2v_nb benchmarks, {info['date']}, {info['cpu']} ({info['nproc']} CPUs, torch {info['torch']}, "
          f"{args.threads} thread(s))", file=sys.stderr)
    pipe = meta_pipe()
    bench_overhead(args.rounds, pipe)
    bench_toy(args.repeats)
    bench_previews(not args.no_sd_vae)
    bench_trace_memory(pipe)
    bench_flops(pipe)
    info["loadavg_at_end"] = os.getloadavg()
    header = (f"Measured {info['date']} on {info['cpu']}, {info['nproc']} CPUs, {args.threads} torch thread(s), "
              f"torch {info['torch']}, diffusers {info['diffusers']}, transformers {info['transformers']}, "
              f"Python {info['python']}; load average {info['loadavg_at_start'][0]:.2f} at start, "
              f"{info['loadavg_at_end'][0]:.2f} at end.\n\n")
    lines = ["| # | measurement | value | spread / detail | goal |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in ROWS]
    table = "\n".join(lines) + "\n"
    print(header + table)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(header + table)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"machine": info, "args": vars(args), "raw": RAW, "rows": ROWS}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
