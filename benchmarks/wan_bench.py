"""Wan 2.1 on a CPU: t2v_nb against diffusers' WanPipeline, the cost of attention capture, and the memory plan.

    python benchmarks/wan_bench.py [--rounds 15] [--threads 1] [--skip-timing] [--skip-memory]

1. Time: the same tiny random Wan components (tests/tiny_wan.py) run by diffusers' `WanPipeline` and by
   t2v_nb (record=None, "default", "all" = with every attention map), interleaved in rotating order,
   CPU time of one torch thread, ratios paired per round, median with a bootstrap interval (as bench.py).
2. Memory of attention capture: the extra bytes one `WanObserver.measure` call holds at its peak, counted
   exactly (every tensor it creates, until freed) at the real layer width (1536 = 12 heads x 128) for two
   token counts, then extrapolated linearly to 480x832x81 (32,760 tokens): at a fixed chunk size every
   term is linear in the token count.
3. Sizes of the real model from its public configs (CONFIGS below, copied from the Hugging Face repository
   Wan-AI/Wan2.1-T2V-1.3B-Diffusers and google/umt5-xxl), built on the `meta` device: parameters and bytes
   in float16 (with the transformer's `_keep_in_fp32_modules` kept in float32) and float32.

Prints a markdown table and writes it to benchmarks/out/wan_results.md. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
import weakref

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import measure as ms  # noqa: E402

OUT = os.path.join(HERE, "out")
PROMPT = "a red circle moving right"
BENCH = dict(num_frames=33, height=128, width=128, num_inference_steps=10, guidance_scale=5.0)  # 9 x 8 x 8 = 576 tokens
ROWS: list[tuple[str, str, str, str]] = []

# The public configs (transformer/config.json, vae/config.json, scheduler/scheduler_config.json of
# Wan-AI/Wan2.1-T2V-1.3B-Diffusers; text_encoder/config.json = the encoder of google/umt5-xxl).
CONFIGS = {
    "transformer": dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None,
                        added_kv_proj_dim=None, rope_max_seq_len=1024),
    "vae": dict(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                temperal_downsample=[False, True, True], dropout=0.0),
    "text_encoder": dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                         relative_attention_num_buckets=32, relative_attention_max_distance=128,
                         feed_forward_proj="gated-gelu", dense_act_fn="gelu_new", is_gated_act=True,
                         tie_word_embeddings=False, layer_norm_epsilon=1e-6),
    "scheduler": dict(_class_name="UniPCMultistepScheduler", prediction_type="flow_prediction", use_flow_sigmas=True,
                      flow_shift=3.0, solver_order=2, solver_type="bh2", predict_x0=True, lower_order_final=True,
                      final_sigmas_type="zero", num_train_timesteps=1000, timestep_spacing="linspace"),
}


def row(num, what, value, detail=""):
    ROWS.append((str(num), what, value, detail))
    print(f"  {num:<4} {what}: {value}  {detail}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- 1. time


def toy_transformer():
    """A toy-size Wan transformer (4 blocks, 4 heads x 16, as the flow-matching probe in FINDINGS.md) for tiny_wan's
    text encoder (32 wide)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(1)
    return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, in_channels=16,
                                 out_channels=16, text_dim=32, freq_dim=64, ffn_dim=256, num_layers=4,
                                 rope_max_seq_len=64).eval().requires_grad_(False)


def bench_time(rounds: int, size: str, num: str) -> None:
    import tiny_wan

    import t2v_nb

    parts = tiny_wan.components()
    if size == "toy":
        parts["transformer"] = toy_transformer()
    ref = tiny_wan.reference(parts)
    pipe = t2v_nb.StepwisePipeline(**parts)
    clock = ms.UNetClock(parts["transformer"])  # CPU time inside the transformer, to tell the loop's own apart
    steps = BENCH["num_inference_steps"]

    def diffusers_run():
        return ref(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent", **BENCH).frames

    def ours(record):
        return lambda: pipe.start(PROMPT, seed=0, record=record, **BENCH).finish(progress=False).latents

    variants = {"diffusers": diffusers_run, "record=None": ours(None), "record=default": ours("default"),
                "record=all": ours("all")}
    same = (variants["diffusers"]() - variants["record=default"]()).abs().max().item()
    res = ms.interleaved(variants, rounds, clock, steps)
    cpu, outside = res["cpu"], res["outside"]
    base = cpu["diffusers"]
    what = "tiny Wan (2 blocks, 2 x 12 wide)" if size == "tiny" else "toy Wan (4 blocks, 4 x 16 wide)"
    row(f"{num}a", f"diffusers WanPipeline, {what}, {BENCH['height']}x{BENCH['width']}x{BENCH['num_frames']}, "
        f"{steps} steps UniPC, cfg {BENCH['guidance_scale']} (text + loop, no decode)",
        f"{ms.med(base):.3f} s CPU", ms.spread(base) + f"; outside the transformer {ms.med(outside['diffusers']):.2f} ms/step")
    for k, n in zip("bcd", list(cpu)[1:]):
        ratios = [x / b for x, b in zip(cpu[n], base)]
        lo, hi = ms.median_ci(ratios)
        goal = " (goal <= 1.02)" if n == "record=default" else (" (every attention map)" if n == "record=all" else "")
        row(f"{num}{k}", f"t2v_nb {n} / diffusers, {size}, CPU time, paired per round{goal}", f"{ms.med(ratios):.3f}x",
            ms.spread(ratios) + f", 95% CI of the median {lo:.3f}-{hi:.3f}; outside the transformer "
            f"{ms.med(outside[n]):.2f} ms/step")
    row(f"{num}e", f"same latents as diffusers ({size}; max abs difference, record=default)", f"{same:.1e}")


# ---------------------------------------------------------------------- 2. memory of attention capture


class PeakBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Bytes of the tensors created inside the `with` block that are alive at once, at most (CPU tensors)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._keys: set[int] = set()

    def _free(self, key: int, n: int) -> None:
        self._keys.discard(key)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key, n = st.data_ptr(), st.nbytes()
                if n and key not in self._keys:  # a view or an in-place result adds nothing
                    self._keys.add(key)
                    self.live += n
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(st, self._free, key, n)
        return out


def _layer_peak(kind: str, grid: tuple[int, int, int], dtype=torch.float32) -> int:
    """Peak extra bytes of one measure() call on a real-width Wan block (random weights) at `grid` patches."""
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformerBlock

    from t2v_nb.families.wan import WanObserver

    cfg = CONFIGS["transformer"]
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    torch.manual_seed(0)
    block = WanTransformerBlock(dim, 64, cfg["num_attention_heads"], cross_attn_norm=True).to(dtype).eval()
    F, h, w = grid
    x = torch.randn(1, F * h * w, dim, dtype=dtype)  # [1, N, D] the layer's input tokens
    obs = WanObserver(kind, "bench", grid)
    with torch.no_grad():
        if kind == "cross":
            ctx = torch.randn(1, 512, dim, dtype=dtype)  # [1, L, D] projected text
            args = (ctx, None, None)
        else:
            rope = WanRotaryPosEmbed(cfg["attention_head_dim"], cfg["patch_size"], cfg["rope_max_seq_len"])
            args = (None, None, rope(torch.zeros(1, 16, F, 2 * h, 2 * w)))
        attn = block.attn2 if kind == "cross" else block.attn1
        with PeakBytes() as counter:
            obs.measure(attn, x, args, {}, False)
    return counter.peak


def bench_capture_memory() -> None:
    from t2v_nb.families import wan

    real = (21, 30, 52)  # 480x832x81 -> 21 latent frames of 60x104 -> 30x52 patches
    n_real = real[0] * real[1] * real[2]
    for k, kind in zip("ab", ("temporal", "cross")):
        # token counts at which the chunks are already full (temporal: 693 and 346 query rows of 2,016 / 4,032
        # keys; cross: 2,730 rows of 512 keys), so what grows is linear in the tokens
        grids = [(21, 12, 8), (21, 16, 12)] if kind == "temporal" else [(21, 16, 24), (21, 32, 24)]
        peaks = [_layer_peak(kind, g) for g in grids]
        ns = [g[0] * g[1] * g[2] for g in grids]
        slope = (peaks[1] - peaks[0]) / (ns[1] - ns[0])
        at_real = peaks[0] + slope * (n_real - ns[0])
        row(f"2{k}", f"attention capture, extra peak per {kind} layer at 480x832x81 ({n_real:,} tokens), float32 "
            f"inputs, chunk {wan._CHUNK:,} scores", f"{at_real / 2**20:.0f} MiB",
            f"measured {peaks[0] / 2**20:.1f} MiB at {ns[0]:,} tokens and {peaks[1] / 2**20:.1f} MiB at {ns[1]:,}, "
            f"real width 12 x 128; linear in the tokens at a fixed chunk ({slope:.0f} B/token)")


def _vae_peak(h: int, w: int, latent_frames: int, dtype=torch.float32) -> int:
    """Peak bytes created while the real-config Wan VAE (random weights) decodes [1, 16, F', h, w] latents."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**CONFIGS["vae"]).to(dtype).eval()
    z = torch.randn(1, 16, latent_frames, h, w, dtype=dtype)  # [1, C, F', h, w]
    with torch.no_grad(), PeakBytes() as counter:
        vae.decode(z, return_dict=False)
    return counter.peak


def bench_vae_memory() -> None:
    """The causal decoder works one latent frame at a time (4 video frames after the first): its peak is a
    per-frame working set, linear in the pixels, plus the growing output. Measured at 1/64 and 1/16 of the
    pixels of 480x832 with 3 latent frames, extrapolated in the pixels; the 81-frame output is added."""
    sizes = [(8, 13), (15, 26)]  # latent h x w: 64x104 and 120x208 pixels
    peaks = [_vae_peak(h, w, 3) for h, w in sizes]
    px = [h * w for h, w in sizes]
    slope = (peaks[1] - peaks[0]) / (px[1] - px[0])
    work = peaks[0] + slope * (60 * 104 - px[0])  # 3 latent frames at 480x832, float32
    out81 = 3 * 81 * 480 * 832 * 4  # the decoded clip, float32
    out9 = 3 * 9 * 480 * 832 * 4
    total = work - out9 + out81
    row("3f", "VAE decode of 480x832x81, float32, whole clip (computed from measurements)", f"~{total / 2**30:.1f} GiB",
        f"measured {peaks[0] / 2**20:.0f} MiB at 64x104 and {peaks[1] / 2**20:.0f} MiB at 120x208 pixels (3 latent "
        f"frames, real config, random weights), linear in the pixels; the 81-frame output ({out81 / 2**30:.2f} GiB) "
        f"replaces the 9-frame one; about half in float16")


# ---------------------------------------------------------------------- 3. sizes from the configs


def _count(model, keep=()) -> tuple[int, int, int]:
    """(parameters, bytes in float16 with `keep` modules in float32, bytes in float32)."""
    n = half = 0
    for name, p in model.named_parameters():
        n += p.numel()
        half += p.numel() * (4 if any(k in name.split(".") for k in keep) else 2)
    return n, half, 4 * n


def bench_sizes() -> None:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device("meta"):
        tr = WanTransformer3DModel(**CONFIGS["transformer"])
        vae = AutoencoderKLWan(**CONFIGS["vae"])
        te = UMT5EncoderModel(UMT5Config(**CONFIGS["text_encoder"]))
    for k, (name, model, keep) in zip("abc", (("transformer (WanTransformer3DModel)", tr, tr._keep_in_fp32_modules),
                                              ("text_encoder (UMT5-XXL encoder)", te, te._keep_in_fp32_modules),
                                              ("vae (AutoencoderKLWan)", vae, ()))):
        n, half, full = _count(model, keep)
        row(f"3{k}", f"{name}: parameters, GiB in float16 / float32", f"{n / 1e9:.3f} B",
            f"{half / 2**30:.2f} GiB fp16{' (fp32 kept: ' + ', '.join(keep) + ')' if keep else ''}, "
            f"{full / 2**30:.2f} GiB fp32")
    cfg = CONFIGS["transformer"]
    D, heads = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["num_attention_heads"]
    for k, frames in zip("de", (81, 33)):
        N = ((frames - 1) // 4 + 1) * 30 * 52
        ffn = N * cfg["ffn_dim"] * 2 * 2  # the FFN's hidden [N, 8960] twice (linear out, GELU out), fp16
        norms = 3 * N * D * 4  # float32 LayerNorm / modulation temporaries [N, D]
        qkv = 3 * N * D * 2
        full_attn = heads * N * N * 2  # what SDPA's math path would allocate (per head, fp16 scores)
        row(f"3{k}", f"transformer activations at 480x832x{frames} ({N:,} tokens), fp16, one block at a time "
            f"(computed)", f"~{(ffn + norms + qkv) / 2**30:.2f} GiB",
            f"FFN hidden {ffn / 2**30:.2f} + fp32 norms {norms / 2**30:.2f} + q,k,v {qkv / 2**30:.2f} GiB; a math "
            f"(non-fused) attention would need {full_attn / 2**30:.1f} GiB of scores: T4 must use SDPA's "
            f"memory-efficient kernel")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not args.skip_timing:
        bench_time(args.rounds, "tiny", "1")
        bench_time(args.rounds, "toy", "1t")
    if not args.skip_memory:
        bench_capture_memory()
    bench_sizes()
    if not args.skip_memory:
        bench_vae_memory()
    lines = ["| # | what | value | detail |", "|---|---|---|---|"] + ["| " + " | ".join(r) + " |" for r in ROWS]
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "wan_results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
