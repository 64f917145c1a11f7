"""CogVideoX benchmarks on a CPU: time against diffusers, the cost of attention capture, the T4 memory plan.

    python benchmarks/cogvideox_bench.py [--rounds 30] [--threads 1] [--skip-time]

1. Time: t2v_nb against diffusers' `CogVideoXPipeline` on the same tiny random components (tests/tiny_cogvideox.py),
   text + loop to latents, CPU time (one thread), interleaved rounds in rotating order, ratios paired per
   round, medians (benchmarks/measure.py). Recording None / default / "all" (attention capture).
2. Memory of attention capture per layer: the peak of tensor bytes alive at once inside one layer's reading
   (`read_joint`), counted by a dispatch mode, on tiny sizes (real tensors) and at 720x480x49 on the `meta`
   device (shapes only: the same code, no compute).
3. The T4 plan: weights of the real CogVideoX-2b parts, built on `meta` from their configs (written below from
   the model card's diffusers config files), and the peak of live activation bytes of one guided transformer
   call and of the VAE decode at 720x480x49, also on `meta`. On `meta`, scaled_dot_product_attention is
   replaced by a stand-in that allocates only its output, as the memory-efficient kernel a T4 runs does
   (the math path would hold the 2 x 30 x 17,776^2 score matrix: 38 GB in float16).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import measure as ms  # noqa: E402
import tiny_cogvideox as tiny  # noqa: E402

import t2v_nb  # noqa: E402
from t2v_nb.families import cogvideox as cog  # noqa: E402

PROMPT = "a red circle moving right"
GB = 1e9

# CogVideoX-2b's component configs (THUDM/CogVideoX-2b: transformer/config.json, vae/config.json,
# text_encoder/config.json = T5 v1.1 XXL encoder), as diffusers' docs and the model card give them.
TRANSFORMER_2B = dict(num_attention_heads=30, attention_head_dim=64, in_channels=16, out_channels=16,
                      time_embed_dim=512, text_embed_dim=4096, num_layers=30, sample_width=90, sample_height=60,
                      sample_frames=49, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226,
                      use_rotary_positional_embeddings=False, use_learned_positional_embeddings=False)
VAE_2B = dict(block_out_channels=(128, 256, 256, 512), latent_channels=16, layers_per_block=3, norm_num_groups=32,
              temporal_compression_ratio=4, sample_height=480, sample_width=720, scaling_factor=1.15258426)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", is_encoder_decoder=False)
REAL = dict(num_frames=49, height=480, width=720)  # -> latents [1, 16, 13, 60, 90], 13 x 30 x 45 = 17,550 tokens


class PeakBytes(TorchDispatchMode):
    """Bytes of tensor storage alive at once, at their peak, for storages the ops run inside the mode create.

    Each storage is counted once (views share their base's storage) from the op that makes it until the
    last tensor seen using it dies. Tensors made before the mode (weights, inputs) are not counted: extra bytes.
    """

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.refs: dict[int, list[int]] = {}  # storage id -> [tensors alive, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            st = t.untyped_storage()
            key = st._cdata
            if key not in self.refs:
                if any(isinstance(a, torch.Tensor) and a.untyped_storage()._cdata == key
                       for a in tree_flatten((args, kwargs))[0]):
                    continue  # a view or an in-place result of a tensor made outside the mode
                self.refs[key] = [0, st.nbytes()]
                self.live += st.nbytes()
                self.peak = max(self.peak, self.live)
            self.refs[key][0] += 1
            weakref.finalize(t, self._free, key)
        return out

    def _free(self, key):
        ref = self.refs[key]
        ref[0] -= 1
        if ref[0] == 0:
            self.live -= ref[1]
            del self.refs[key]


@contextlib.contextmanager
def efficient_sdpa():
    """scaled_dot_product_attention that allocates only its output, like the memory-efficient kernel."""
    f = torch.nn.functional
    original = f.scaled_dot_product_attention

    def stand_in(q, k, v, *a, **kw):
        return q.new_empty(*q.shape[:-1], v.shape[-1])  # [B, heads, Lq, d]

    f.scaled_dot_product_attention = stand_in
    try:
        yield
    finally:
        f.scaled_dot_product_attention = original


# ---------------------------------------------------------------------- 1. time


def bench_time(rounds: int) -> None:
    kw = dict(tiny.SMALL, num_inference_steps=20, guidance_scale=6.0)
    parts = tiny.components(scheduler="cogvideox-dpm")
    ref = tiny.reference(parts)
    pipe = t2v_nb.StepwisePipeline(**parts)
    clock = ms.UNetClock(parts["transformer"])

    def diffusers_run():
        return ref(PROMPT, generator=torch.Generator().manual_seed(0), output_type="latent",
                   max_sequence_length=tiny.TEXT_LENGTH, **kw).frames

    def ours(record):
        return lambda: pipe.start(PROMPT, seed=0, record=record, **kw).finish(progress=False).latents

    variants = {"diffusers": diffusers_run, "record=None": ours(None), "record=default": ours("default"),
                "record=all": ours("all")}
    same = (variants["diffusers"]().permute(0, 2, 1, 3, 4) - variants["record=default"]()).abs().max().item()
    res = ms.interleaved(variants, rounds, clock, kw["num_inference_steps"])
    base = res["cpu"]["diffusers"]
    print(f"## 1. Time, tiny CogVideoX (2 blocks, 9 frames 24x16, 20 steps cogvideox-dpm, guidance 6), CPU time, "
          f"{rounds} paired rounds\n")
    print(f"diffusers CogVideoXPipeline: {ms.spread(base)} s; same latents: max abs difference {same:.1e}\n")
    print("| t2v_nb / diffusers | median | 95% CI of the median | min | max |\n|---|---|---|---|---|")
    for n in list(variants)[1:]:
        ratios = [x / b for x, b in zip(res["cpu"][n], base)]
        lo, hi = ms.median_ci(ratios)
        print(f"| {n} | {ms.med(ratios):.3f}x | {lo:.3f}-{hi:.3f} | {min(ratios):.3f} | {max(ratios):.3f} |")
    # The same loops around a transformer that costs one multiply: what is left is each loop's own work.
    parts["transformer"].forward = lambda hidden_states, *a, **k: (hidden_states * 0.1,)
    del variants["record=all"]  # no attention layer runs
    null = ms.interleaved(variants, 2 * rounds, clock, kw["num_inference_steps"])["cpu"]
    del parts["transformer"].forward
    steps = kw["num_inference_steps"]
    print(f"\nWith a no-op transformer (the loops alone, {2 * rounds} rounds): diffusers "
          f"{ms.med(null['diffusers']) * 1e3:.1f} ms per run of {steps} steps (text and noise included).\n")
    for n in list(null)[1:]:
        extra = [(x - b) * 1e3 / steps for x, b in zip(null[n], null["diffusers"])]
        print(f"- t2v_nb {n}: {ms.med(extra):+.2f} ms per step over diffusers (min {min(extra):+.2f}, max "
              f"{max(extra):+.2f}); on the tiny model's {ms.med(base) / steps * 1e3:.1f} ms steps that is "
              f"{1 + ms.med(extra) / (ms.med(base) / steps * 1e3):.3f}x; on a T4 step of CogVideoX-2b (~10 s, "
              f"estimate) it is {1 + ms.med(extra) / 1e4:.5f}x.")
    print()


# ---------------------------------------------------------------------- 2. capture memory


def capture_peak(attn, T: int, F: int, grid: tuple[int, int], dtype, device, views=("cross", "temporal")) -> int:
    n_video = F * grid[0] * grid[1]
    D = attn.to_q.in_features
    text = torch.randn(1, T, D, dtype=dtype, device=device)
    video = torch.randn(1, n_video, D, dtype=dtype, device=device)
    with torch.no_grad(), PeakBytes() as pb:
        cog.read_joint(attn, text, video, None, F, grid, views)
    return pb.peak


def bench_capture_memory() -> None:
    from diffusers.models.attention_processor import Attention

    print("## 2. Extra memory of attention capture, per layer and call (peak of live tensor bytes in read_joint)\n")
    print("| where | T | N video tokens | heads x d | dtype | peak extra bytes |\n|---|---|---|---|---|---|")
    pipe = tiny.tiny_pipe()
    attn = pipe.transformer.transformer_blocks[0].attn1
    for F, grid in ((3, (3, 2)), (5, (12, 8))):
        got = capture_peak(attn, tiny.TEXT_LENGTH, F, grid, torch.float32, "cpu")
        N = F * grid[0] * grid[1]
        print(f"| tiny, CPU | {tiny.TEXT_LENGTH} | {N} | 2 x 16 | float32 | {got / 1e3:.1f} kB |")
    with torch.device("meta"):
        real = Attention(query_dim=1920, dim_head=64, heads=30, qk_norm="layer_norm", eps=1e-6, bias=True,
                         out_bias=True).to(torch.float16)
    T, F, grid = 226, 13, (30, 45)
    got = capture_peak(real, T, F, grid, torch.float16, "meta")
    N = F * grid[0] * grid[1]
    print(f"| CogVideoX-2b 720x480x49, meta | {T} | {N} | 30 x 64 | float16 | {got / 1e6:.0f} MB |")
    L, D, rows = T + N, 1920, max(1, cog._CHUNK // (30 * (T + N)))
    print(f"\nWhat it is made of: the joint input, q and k in float16 ({L * D * 2 / 1e6:.0f} MB each), k^T in float32 "
          f"({L * D * 4 / 1e6:.0f} MB), a chunk's scores and softmax in float32 ({30 * rows * L * 4 / 1e6:.0f} MB "
          f"each), the cross map and shares in float32 ({(N * T + 2 * N) * 4 / 1e6:.0f} MB); not all at once.")
    print(f"\nAt 720x480x49 one chunk is {max(1, cog._CHUNK // (30 * (T + N)))} query rows; the whole joint matrix "
          f"would be 30 x {T + N}^2 x 4 B = {30 * (T + N) ** 2 * 4 / GB:.1f} GB in float32. The trace keeps, per "
          f"step and layer, the cross map {N * T * 2 / 1e6:.1f} MB (float16) and the frame map "
          f"{F * F * 2} B: {30 * N * T * 2 / 1e6:.0f} MB per step for all 30 layers' cross maps.\n")


# ---------------------------------------------------------------------- 3. the T4 plan


def meta_parts():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        transformer = CogVideoXTransformer3DModel(**TRANSFORMER_2B).to(torch.float16).eval()
        vae = AutoencoderKLCogVideoX(**VAE_2B).to(torch.float16).eval()
        t5 = T5EncoderModel(T5Config(**T5_XXL)).to(torch.float16).eval()
    for name, module in t5.named_modules():  # as from_pretrained(dtype=float16) loads it: T5's `wo` stays float32
        if name.endswith("DenseReluDense.wo"):
            module.to(torch.float32)
    return t5, transformer, vae


def _bytes(m) -> int:
    return sum(p.numel() * p.element_size() for p in m.parameters()) + sum(b.numel() * b.element_size()
                                                                          for b in m.buffers())


def bench_plan() -> None:
    t5, transformer, vae = meta_parts()
    w = {"T5-XXL encoder": _bytes(t5), "transformer": _bytes(transformer), "VAE": _bytes(vae)}
    F, h, w_ = 13, 60, 90  # latents of 49 frames at 480x720
    x = torch.empty(2, F, 16, h, w_, dtype=torch.float16, device="meta")  # guided batch [uncond, text]
    emb = torch.empty(2, 226, 4096, dtype=torch.float16, device="meta")
    t = torch.zeros(2, dtype=torch.long, device="meta")
    with torch.no_grad(), efficient_sdpa(), PeakBytes() as pb:
        transformer(hidden_states=x, encoder_hidden_states=emb, timestep=t, return_dict=False)
    act = pb.peak
    z = torch.empty(1, 16, F, h, w_, dtype=torch.float16, device="meta")
    vae_peak = {}
    for tiled in (False, True):
        vae.enable_tiling() if tiled else vae.disable_tiling()
        with torch.no_grad(), PeakBytes() as pb:
            vae.decode(z)
        vae_peak[tiled] = pb.peak
    ids = torch.zeros(1, 226, dtype=torch.long, device="meta")
    with torch.no_grad(), PeakBytes() as pb:
        t5(ids)
    t5_act = pb.peak
    print("## 3. CogVideoX-2b on a T4, float16 (meta-device counts from the configs above)\n")
    wo = sum(m.weight.numel() for n, m in t5.named_modules() if n.endswith("DenseReluDense.wo"))
    print("| part | weights | peak activations (extra) |\n|---|---|---|")
    print(f"| T5-XXL encoder | {w['T5-XXL encoder'] / GB:.2f} GB (its {wo / 1e9:.2f} B `wo` weights in float32, as "
          f"transformers keeps them) | {t5_act / GB:.3f} GB (226 tokens) |")
    print(f"| transformer | {w['transformer'] / GB:.2f} GB | {act / GB:.2f} GB (one guided call, 2 x 17,776 tokens, "
          f"memory-efficient attention) |")
    print(f"| VAE | {w['VAE'] / GB:.2f} GB | decode 49 frames: {vae_peak[False] / GB:.2f} GB untiled, "
          f"{vae_peak[True] / GB:.2f} GB tiled |")
    total = sum(w.values())
    print(f"\nAll weights: {total / GB:.2f} GB. Params: T5 {sum(p.numel() for p in t5.parameters()) / 1e9:.2f} B, "
          f"transformer {sum(p.numel() for p in transformer.parameters()) / 1e9:.2f} B, VAE "
          f"{sum(p.numel() for p in vae.parameters()) / 1e6:.0f} M.\n")


def bench_preview() -> None:
    """A linear preview fitted on the tiny VAE's decodes of random latents, checked on other random latents."""
    pipe = tiny.tiny_pipe()
    fit_on = torch.randn(8, 4, 3, 6, 4, generator=torch.Generator().manual_seed(0))
    held = torch.randn(4, 4, 3, 6, 4, generator=torch.Generator().manual_seed(1))
    preview = cog.fit_preview(pipe.vae, fit_on, "tiny CogVideoX VAE, random weights")
    target = cog.fit_preview(pipe.vae, held)  # refit on the held-out set: the best a linear map can do there

    def err(p):
        with torch.no_grad():
            video = pipe.vae.decode(held / pipe.vae.config.scaling_factor).sample.float()  # [N, 3, F, H, W]
        video = (video / 2 + 0.5).clamp(0, 1)
        per_latent = torch.cat([video[:, :, :1], video[:, :, 1:].unflatten(2, (2, 4)).mean(3)], 2)
        colours = torch.nn.functional.adaptive_avg_pool3d(per_latent, (3, 6, 4)).permute(0, 2, 3, 4, 1)
        return (torch.as_tensor(p(held)) - colours).abs().mean().item(), colours.std().item()

    e_fit, spread = err(preview)
    e_best, _ = err(target)
    print("## 4. Linear preview on the tiny VAE (random weights)\n")
    print(f"Held-out mean abs error {e_fit:.4f} (the colours' std {spread:.4f}; a fit on the held-out set itself: "
          f"{e_best:.4f}). No factors ship for CogVideoX-2b's VAE: none are published (ComfyUI has none) and the "
          f"real VAE could not be run here.\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-time", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CogVideoX benchmark: torch {torch.__version__}, CPU, {args.threads} thread(s)\n")
    if not args.skip_time:
        bench_time(args.rounds)
    bench_capture_memory()
    bench_plan()
    bench_preview()


if __name__ == "__main__":
    main()
