"""ModelScope text-to-video's real architecture (random weights) on a GPU: diffusers' pipeline vs t2v_nb.

Builds the UNet, text encoder and VAE from `modelscope_config.py` with random weights, in float16 on
the GPU (no download, no network), and runs the same components, seed and settings through
diffusers' `TextToVideoSDPipeline` and t2v_nb's `StepwisePipeline` side by side. Reports seconds per
denoising step, seconds per video (decode included), peak GPU memory (`torch.cuda.max_memory_allocated`)
and the TFLOP/s achieved against the UNet's FLOP count (counted on the meta device, as bench.py does).
With and without CPU offload: diffusers' `enable_model_cpu_offload()` (needs accelerate); t2v_nb's,
if it has one.

    python benchmarks/gpu_bench.py                         # cuda, fp16, 16 frames 256x256, 25 steps
    python benchmarks/gpu_bench.py --device cpu --tiny     # smoke test: toy-size components, CPU, fp32

Writes a markdown snippet (to paste into benchmarks/RESULTS.md) to benchmarks/out/gpu_results.md and
the raw numbers next to it as gpu_results.json. Random weights give noise videos, but the work per
step is the same as with the real weights (same shapes, same kernels).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure as ms  # noqa: E402
import modelscope_config as msc  # noqa: E402

import t2v_nb  # noqa: E402
from t2v_nb.schedulers import make_scheduler  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
PROMPT = "a red circle moving right"
# Dense fp16 tensor-core peaks from the vendors' datasheets, matched against torch.cuda.get_device_name().
PEAKS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0), ("L4", 121.0),
         ("A10G", 125.0), ("T4", 65.0), ("V100", 125.0)]


def peak_tflops(name: str) -> float | None:
    return next((p for key, p in PEAKS if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(device: torch.device, dtype: torch.dtype, tiny: bool) -> dict:
    """tokenizer, text_encoder, unet, vae, scheduler with random weights, on `device` in `dtype`."""
    if tiny:
        parts = msc.toy_ms_components(scheduler="dpm++")
    else:
        torch.manual_seed(0)
        with torch.device(device):  # initialise on the GPU: seconds instead of minutes on the CPU
            parts = {n: msc.build(n) for n in ("text_encoder", "unet", "vae")}
        parts["tokenizer"] = msc.char_tokenizer()  # enough for random weights; ids < 514 < vocab
        parts["scheduler"] = make_scheduler("dpm++", msc.build("scheduler"))  # the preset's scheduler
    for n in ("text_encoder", "unet", "vae"):
        parts[n].to(device=device, dtype=dtype).eval().requires_grad_(False)
    return parts


def unet_flops(config: dict, frames: int, h: int, w: int, text_dim: int) -> int:
    """FLOPs of one guided UNet call (batch 2), counted on meta tensors."""
    from diffusers import UNet3DConditionModel

    with torch.device("meta"):
        unet = UNet3DConditionModel(**config)
        x, emb = torch.empty(2, 4, frames, h, w), torch.empty(2, 77, text_dim)  # [2B, C, F, h, w], [2B, 77, D]
        t = torch.tensor(999)
    return ms.count_flops(lambda: unet(x, t, encoder_hidden_states=emb, return_dict=False))


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def peak_memory(fn, device: torch.device) -> int | None:
    """torch.cuda.max_memory_allocated over one call of `fn` (None off CUDA)."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device)


def measure(variants: dict, device: torch.device, repeats: int) -> dict:
    """variants: {name: (loop_fn, video_fn)}. Loops are timed interleaved (A B C D, A B C D, ...) after a
    warm-up; each video once after its own warm-up; peak memory over one more call of each."""
    for loop, _ in variants.values():
        loop()
    out = {n: {"loop": {"seconds": []}, "video": {}} for n in variants}
    for _ in range(repeats):
        for name, (loop, _) in variants.items():
            out[name]["loop"]["seconds"].append(timed(loop, device))
    for name, (loop, video) in variants.items():
        print(f"  {name} ...", file=sys.stderr, flush=True)
        video()
        out[name]["video"] = {"seconds": [timed(video, device)], "peak_bytes": peak_memory(video, device)}
        out[name]["loop"]["peak_bytes"] = peak_memory(loop, device)
    return out


def t2v_nb_offload_option() -> str | None:
    """The name of t2v_nb's CPU-offload option, if it has one (a keyword of load() or a pipeline method)."""
    import inspect

    names = [f"load({p}=)" for p in inspect.signature(t2v_nb.load).parameters if "offload" in p]
    names += [f"StepwisePipeline.{m}()" for m in dir(t2v_nb.StepwisePipeline) if "offload" in m]
    return names[0] if names else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="toy-size components (smoke test; fp32, 64x64, 8 frames)")
    ap.add_argument("--dtype", default=None, help="float16 (default on cuda) or float32 (default on cpu)")
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 25; 3 with --tiny)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-offload", action="store_true", help="skip the CPU-offload runs")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --device cpu)")
    ap.add_argument("--out", default=os.path.join(OUT, "gpu_results.md"))
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device here. For a smoke test on the CPU: python benchmarks/gpu_bench.py "
                         "--device cpu --tiny")
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)  # on a shared CPU, more threads than free cores is far slower
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    frames = args.frames or (8 if args.tiny else 16)
    height, width = args.height or (64 if args.tiny else 256), args.width or (64 if args.tiny else 256)
    steps = args.steps or (3 if args.tiny else 25)
    settings = dict(num_frames=frames, height=height, width=width, num_inference_steps=steps, guidance_scale=9.0)
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # the deprecation notice and `.to(dtype)` advice, once per call
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from diffusers import TextToVideoSDPipeline

    parts = build(device, dtype, args.tiny)
    config = msc.TOY_UNET3D_CONFIG if args.tiny else msc.UNET_CONFIG
    text_dim = parts["text_encoder"].config.hidden_size
    flops = unet_flops(config, frames, height // 8, width // 8, text_dim)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak = peak_tflops(gpu) if device.type == "cuda" else None
    print(f"{gpu}, {dtype}, {frames} frames {width}x{height}, {steps} steps; UNet {flops / 1e12:.3g} TFLOP per "
          f"guided step", file=sys.stderr)

    # Is the random model finite in this dtype? (t2v_nb stops a run on NaN/inf; diffusers does not look.)
    with torch.no_grad():
        x = torch.randn(2, 4, frames, height // 8, width // 8, device=device, dtype=dtype)
        emb = torch.randn(2, 77, text_dim, device=device, dtype=dtype)
        finite = bool(torch.isfinite(parts["unet"](x, 999, encoder_hidden_states=emb, return_dict=False)[0]).all())
    if not finite:
        warnings.warn(f"The random UNet gives NaN/inf in {dtype}; t2v_nb's runs will stop with NumericalError.",
                      stacklevel=1)

    ref = TextToVideoSDPipeline(**parts)
    ref.set_progress_bar_config(disable=True)
    pipe = t2v_nb.StepwisePipeline(**parts, defaults={**settings, "fps": 8.0})

    def diffusers_fn(output_type):
        return lambda: ref(PROMPT, generator=torch.Generator().manual_seed(0), output_type=output_type, **settings)

    def ours_fn(record, decode):
        def fn():
            run = pipe.start(PROMPT, seed=0, record=record, **settings).finish(progress=False)
            return run.decode() if decode else run.latents
        return fn

    variants = {  # name: (denoising only: text + loop, whole video: decode included)
        "diffusers TextToVideoSDPipeline": (diffusers_fn("latent"), diffusers_fn("np")),
        "t2v_nb record=None": (ours_fn(None, False), ours_fn(None, True)),
        "t2v_nb record=default": (ours_fn("default", False), ours_fn("default", True)),
        "t2v_nb record='all' (attention maps)": (ours_fn("all", False), ours_fn("all", True)),
    }
    print(f"  timing {len(variants)} pipelines, interleaved, {args.repeats} rounds ...", file=sys.stderr, flush=True)
    results = measure(variants, device, args.repeats)

    notes = []
    offload = t2v_nb_offload_option()
    notes.append(f"t2v_nb CPU offload: {offload} exists but this script does not drive it yet." if offload else
                 "t2v_nb has no CPU-offload option (no `offload` keyword in `load()`, no offload method on "
                 "`StepwisePipeline`): only diffusers' offload is measured.")
    if args.no_offload:
        notes.append("CPU offload skipped (--no-offload).")
    elif device.type != "cuda":
        notes.append("CPU offload needs a CUDA device: skipped.")
    else:  # last: it moves the shared components to the CPU and hooks them
        try:
            ref.enable_model_cpu_offload(device=device)
        except ImportError as e:  # accelerate missing
            notes.append(f"diffusers' CPU offload unavailable: {e}")
        else:
            offloaded = {"diffusers + enable_model_cpu_offload()": (diffusers_fn("latent"), diffusers_fn("np"))}
            results.update(measure(offloaded, device, args.repeats))
    write_report(args, gpu, dtype, settings, flops, peak, finite, results, notes)


def write_report(args, gpu, dtype, settings, flops, peak, finite, results, notes) -> None:
    steps = settings["num_inference_steps"]
    base = statistics.median(next(iter(results.values()))["loop"]["seconds"])
    date = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    import diffusers

    lines = [f"GPU benchmark, {date}: {gpu}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
             f"{str(dtype).replace('torch.', '')}, {'toy-size (--tiny)' if args.tiny else 'ModelScope 1.7B'} "
             f"architecture with random weights, {settings['num_frames']} frames {settings['width']}x"
             f"{settings['height']}, {steps} steps DPM-Solver++, guidance 9.0; loop: median of {args.repeats} "
             "interleaved rounds, video: one call after a warm-up.",
             "",
             f"UNet FLOPs per guided step (meta-device count): {flops / 1e12:.3g} TFLOP"
             + (f"; floor on this GPU at {peak:g} TFLOP/s dense fp16 (datasheet): {flops / peak / 1e9:.1f} ms/step."
                if peak else "."),
             "",
             "| pipeline | s/step (text + loop / steps) | vs diffusers | s/video (decode incl.) | peak GPU memory, "
             "loop / video | achieved TFLOP/s (UNet) |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        s = statistics.median(r["loop"]["seconds"])
        achieved = flops * steps / s / 1e12
        lines.append(f"| {name} | {s / steps:.4f} | {s / base:.3f}x | {r['video']['seconds'][0]:.2f} | "
                     f"{_gib(r['loop']['peak_bytes'])} / {_gib(r['video']['peak_bytes'])} | {achieved:.3g}"
                     + (f" ({achieved / peak * 100:.0f}% of peak)" if peak else "") + " |")
    if not finite:
        notes.append(f"The random UNet produced NaN/inf in {dtype}: timings are valid, outputs are not.")
    lines += [""] + [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"gpu": gpu, "dtype": str(dtype), "settings": settings, "unet_flops_per_step": flops,
                   "peak_tflops": peak, "finite": finite, "results": results, "notes": notes, "date": date}, f,
                  indent=1)


def _gib(n: int | None) -> str:
    return "n/a (CPU)" if n is None else f"{n / 2**30:.2f} GiB"


if __name__ == "__main__":
    main()
