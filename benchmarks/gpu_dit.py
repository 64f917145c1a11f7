"""Wan 2.1 1.3B and CogVideoX-2b at full size, random weights, on a GPU: do t2v_nb's steps stay finite in
float16, how long does a step take, and how much memory do the steps, the decode and attention capture take?

Builds each model's three networks from the public configs (wan_bench.CONFIGS, cogvideox_bench's
TRANSFORMER_2B / VAE_2B / T5_XXL) directly on the GPU with random weights (no download), casts them to the
dtype as `from_pretrained(torch_dtype=...)` would (each class's `_keep_in_fp32_modules` stay float32), and
runs at the models' own sizes (Wan: 81 frames 480x832, 32,760 tokens; CogVideoX-2b: 49 frames 480x720,
17,550 tokens):

1. t2v_nb, record="default", a few steps, after a one-step warm-up: seconds per step, peak memory, whether
   the latents and each step's predicted clean latents are finite;
2. diffusers' own pipeline (WanPipeline / CogVideoXPipeline), same components, seed and steps, to latents:
   seconds per step and the largest difference from t2v_nb's latents;
3. the VAE decode of t2v_nb's latents: seconds, peak memory, finite frames;
4. record="all" (every attention map) for one step: seconds and peak memory, or the error if it fails.

`--families ltx` (LTX-Video 0.9, 2B; not yet a t2v_nb family, so diffusers' classes alone): the transformer's
guided step (batch 2) on packed latents at 161 frames 480x704 (21 x 15 x 22 = 6,930 tokens of 128 channels) with
random T5-size text states, and the VAE decode of random latents of that size: seconds, peak memory, finite?

    python benchmarks/gpu_dit.py [--families wan cogvideox] [--steps 3] [--dtype float16] [--out DIR]
    python benchmarks/gpu_dit.py --device cpu --tiny     # smoke test with the tests' tiny components

Random weights give noise, but the work per step is the real model's. Writes DIR/gpu_dit.json.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import json
import os
import sys
import time
import traceback
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import t2v_nb  # noqa: E402
from gpu_bench import sync  # noqa: E402

PROMPT = "a red circle moving right"
SETTINGS = {"wan": dict(num_frames=81, height=480, width=832, guidance_scale=5.0),
            "cogvideox": dict(num_frames=49, height=480, width=720, guidance_scale=6.0)}
TINY = {"wan": dict(num_frames=9, height=32, width=32, guidance_scale=5.0),
        "cogvideox": dict(num_frames=9, height=24, width=16, guidance_scale=6.0)}


def cast(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model` in `dtype`, except the parameters the class keeps in float32 when loaded in half precision."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or []) | set(
        getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    model.to(dtype)
    if dtype != torch.float32:
        for name, p in model.named_parameters():
            if keep & set(name.split(".")):
                p.data = p.data.float()
    return model.eval().requires_grad_(False)


def tiny_module(family: str):
    """tests/tiny_wan.py or tests/tiny_cogvideox.py: their tiny parts, tokenizers and reference pipelines."""
    return importlib.import_module("tiny_wan" if family == "wan" else "tiny_cogvideox")


def build(family: str, device: torch.device, dtype: torch.dtype, tiny: bool) -> dict:
    if tiny:
        parts = tiny_module(family).components()
        for n in ("text_encoder", "transformer", "vae"):
            parts[n] = cast(parts[n].to(device), dtype)
        return parts
    torch.manual_seed(0)
    if family == "wan":
        import tiny_wan
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from transformers import UMT5Config, UMT5EncoderModel
        from wan_bench import CONFIGS

        from t2v_nb.toy.tiny import t5_tokenizer

        with torch.device(device):
            text_encoder = UMT5EncoderModel(UMT5Config(**CONFIGS["text_encoder"]))
            transformer = WanTransformer3DModel(**CONFIGS["transformer"])
            vae = AutoencoderKLWan(**CONFIGS["vae"])
        parts = {"tokenizer": t5_tokenizer(512), "scheduler": tiny_wan.make_scheduler("unipc")}
    else:
        import tiny_cogvideox
        from cogvideox_bench import T5_XXL, TRANSFORMER_2B, VAE_2B
        from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
        from transformers import T5Config, T5EncoderModel

        from t2v_nb.schedulers import make_scheduler
        from t2v_nb.toy.tiny import t5_tokenizer

        with torch.device(device):
            text_encoder = T5EncoderModel(T5Config(**T5_XXL))
            transformer = CogVideoXTransformer3DModel(**TRANSFORMER_2B)
            vae = AutoencoderKLCogVideoX(**VAE_2B)
        parts = {"tokenizer": t5_tokenizer(226),
                 "scheduler": make_scheduler("cogvideox-ddim", tiny_cogvideox.ddim_scheduler())}
    parts.update(text_encoder=cast(text_encoder, dtype), transformer=cast(transformer, dtype), vae=cast(vae, dtype))
    return parts


def reference(family: str, parts: dict):
    """diffusers' own pipeline (WanPipeline / CogVideoXPipeline) on `parts`, no progress bar."""
    return tiny_module(family).reference(parts)


def measured(fn, device: torch.device):
    """(result, seconds, peak bytes on the GPU or None) of one call of `fn`."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return out, seconds, peak


def gib(n):
    return None if n is None else round(n / 2**30, 2)


def run_family(family: str, args, device: torch.device, dtype: torch.dtype) -> dict:
    res: dict = {"family": family}
    settings = dict((TINY if args.tiny else SETTINGS)[family], num_inference_steps=args.steps)
    res["settings"] = settings
    parts, res["build_seconds"], _ = measured(lambda: build(family, device, dtype, args.tiny), device)
    res["weights_gib"] = {n: gib(sum(p.numel() * p.element_size() for p in parts[n].parameters()))
                          for n in ("text_encoder", "transformer", "vae")}
    res["params_billion"] = {n: round(sum(p.numel() for p in parts[n].parameters()) / 1e9, 3)
                             for n in ("text_encoder", "transformer", "vae")}
    print(f"[{family}] built in {res['build_seconds']:.1f} s: {res['weights_gib']} GiB", flush=True)
    pipe = t2v_nb.StepwisePipeline(**parts)
    steps = settings["num_inference_steps"]

    def ours(record, n_steps=steps):
        kw = dict(settings, num_inference_steps=n_steps)
        return lambda: pipe.start(PROMPT, seed=0, record=record, **kw).finish(progress=False)

    ours("default")()  # warm-up (kernels, cuDNN plans), as many steps as the timed call, like diffusers' below
    run, s, peak = measured(ours("default"), device)
    pred = list(run.trace["step.pred_x0"]) if "step.pred_x0" in run.trace else []  # on the CPU
    res["t2v_nb"] = {"seconds": round(s, 3), "seconds_per_step": round(s / steps, 3), "peak_gib": gib(peak),
                     "latents_finite": bool(torch.isfinite(run.latents).all()),
                     "latents_std": float(run.latents.float().std()),
                     "pred_x0_finite_per_step": [bool(torch.isfinite(p).all()) for p in pred],
                     "pred_x0_absmax_per_step": [float(p.float().abs().max()) for p in pred]}
    print(f"[{family}] t2v_nb: {res['t2v_nb']}", flush=True)

    try:
        ref = reference(family, parts)
        kw = dict(settings)
        if family == "cogvideox":
            kw["max_sequence_length"] = parts["transformer"].config.max_text_seq_length  # 226
        call = lambda: ref(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **kw).frames
        call()  # warm-up
        latents, s_ref, peak_ref = measured(call, device)
        ours_latents = run.latents
        if family == "cogvideox" and latents.shape != ours_latents.shape:  # CogVideoXPipeline: [B, F, C, h, w]
            latents = latents.permute(0, 2, 1, 3, 4)
        diff = (latents.float() - ours_latents.float()).abs().max().item() if latents.shape == ours_latents.shape \
            else f"shapes differ: {tuple(latents.shape)} vs {tuple(ours_latents.shape)}"
        res["diffusers"] = {"seconds": round(s_ref, 3), "seconds_per_step": round(s_ref / steps, 3),
                            "peak_gib": gib(peak_ref), "max_abs_diff_vs_t2v_nb": diff,
                            "t2v_nb_over_diffusers": round(s / s_ref, 3)}
        del ref
    except Exception as e:  # report, go on
        res["diffusers"] = {"error": f"{type(e).__name__}: {e}"}
        traceback.print_exc()
    print(f"[{family}] diffusers: {res['diffusers']}", flush=True)

    try:
        video, s_dec, peak_dec = measured(run.decode, device)  # raises NumericalError on NaN/inf frames
        res["decode"] = {"seconds": round(s_dec, 3), "peak_gib": gib(peak_dec), "shape": list(video.frames.shape),
                         "finite": bool(np.isfinite(video.frames).all())}
        del video
    except Exception as e:
        res["decode"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        traceback.print_exc()
    print(f"[{family}] decode: {res['decode']}", flush=True)
    del run

    try:
        run_all, s_all, peak_all = measured(ours("all", 1), device)
        res["record_all_one_step"] = {"seconds": round(s_all, 3), "peak_gib": gib(peak_all),
                                      "recorded_names": len(run_all.trace), "trace_gib": gib(run_all.trace.nbytes())}
        del run_all
    except Exception as e:
        res["record_all_one_step"] = {"error": f"{type(e).__name__}: {e}"[:500]}
        traceback.print_exc()
    print(f"[{family}] record='all', one step: {res['record_all_one_step']}", flush=True)
    del pipe, parts
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


LTX_SIZE = dict(num_frames=161, height=480, width=704)  # the model card's default size


def run_ltx(args, device: torch.device, dtype: torch.dtype) -> dict:
    """LTX-Video 0.9 (2B) at full size with random weights: one guided transformer step and one decode."""
    from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel

    f, h, w = (LTX_SIZE["num_frames"] - 1) // 8 + 1, LTX_SIZE["height"] // 32, LTX_SIZE["width"] // 32
    res: dict = {"family": "ltx", "settings": dict(LTX_SIZE), "latent_shape": [1, 128, f, h, w], "tokens": f * h * w}
    torch.manual_seed(0)
    with torch.device(device):
        transformer = cast(LTXVideoTransformer3DModel(), dtype)  # the class defaults are the 2B model's
    res["params_billion"] = {"transformer": round(sum(p.numel() for p in transformer.parameters()) / 1e9, 3)}
    x = torch.randn(2, f * h * w, 128, device=device, dtype=dtype)
    text = torch.randn(2, 128, 4096, device=device, dtype=dtype)
    mask = torch.ones(2, 128, device=device, dtype=torch.long)
    t = torch.full((2,), 500.0, device=device)

    def step():
        with torch.no_grad():
            return transformer(x, text, t, mask, num_frames=f, height=h, width=w,
                               rope_interpolation_scale=(8 / 25, 32, 32), return_dict=False)[0]
    step()  # warm-up
    out, s, peak = measured(step, device)
    res["transformer_step"] = {"seconds": round(s, 3), "peak_gib": gib(peak), "finite": bool(torch.isfinite(out).all()),
                               "out_std": float(out.float().std())}
    print(f"[ltx] transformer: {res['transformer_step']}", flush=True)
    del transformer, out, x, text
    gc.collect()
    torch.cuda.empty_cache() if device.type == "cuda" else None
    try:
        with torch.device(device):
            vae = cast(AutoencoderKLLTXVideo(), dtype)
        z = torch.randn(1, 128, f, h, w, device=device, dtype=dtype)
        with torch.no_grad():
            frames, s_dec, peak_dec = measured(lambda: vae.decode(z).sample, device)
        res["decode"] = {"seconds": round(s_dec, 3), "peak_gib": gib(peak_dec), "shape": list(frames.shape),
                         "finite": bool(torch.isfinite(frames).all())}
    except Exception as e:
        res["decode"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    print(f"[ltx] decode: {res['decode']}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=["wan", "cogvideox", "ltx"], choices=["wan", "cogvideox", "ltx"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default=None, help="float16 (default on cuda) or float32 (default on cpu)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny components (smoke test)")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device here. Smoke test: python benchmarks/gpu_dit.py --device cpu --tiny")
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    warnings.filterwarnings("ignore", message=".*deprecated.*")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    import diffusers
    import transformers

    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
              "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
              "dtype": str(dtype).replace("torch.", ""), "tiny": args.tiny, "results": []}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gpu_dit.json")
    for family in args.families:
        try:
            run = run_ltx if family == "ltx" else run_family
            if family == "ltx" and args.tiny:
                continue  # no tiny LTX here: the ltx family's tests carry one
            report["results"].append(run(args, device, dtype) if family == "ltx" else run(family, args, device, dtype))
        except Exception as e:
            report["results"].append({"family": family, "error": f"{type(e).__name__}: {e}"[:1000]})
            traceback.print_exc()
        with open(path, "w") as f:  # after each family: a later failure keeps the earlier figures
            json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
