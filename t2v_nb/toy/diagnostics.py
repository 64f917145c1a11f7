"""Readings of a toy-shapes training run, for the training log and benchmarks/toy_diagnostics.py.

    from t2v_nb.toy import diagnostics
    diagnostics.probe("runs/toy")          # the log's caption probe for the EMA weights of a work directory
    diagnostics.shape_pairs("runs/toy")    # the shape probe split by pair of shapes
    diagnostics.step_speed("toy-shapes")   # seconds of one UNet training step: fp32, bf16, compiled

Each prints what it measures (a report, not a check). The work-directory readers build the tokenizer, which
needs the `train` extra (open_clip_torch).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import t2v_nb
from t2v_nb.toy import components, data

__all__ = ["probe", "shape_pairs", "step_speed"]


def probe(path: str) -> None:
    """The training log's caption probe (t2v_nb.toy.train.caption_probe: loss with the true captions, and how
    much it grows with the direction or the shape word changed) for the EMA weights of a work directory's
    unet.pt, or of another checkpoint file in a work directory (unet_stable.pt)."""
    from t2v_nb.toy import train

    ckpt, tokenizer, unet, text_encoder, cache, scale = _work_models(path)
    row = train.caption_probe(cache, scale, tokenizer, components.build_scheduler())(unet, text_encoder)
    print(f"{path} (step {ckpt['state']['step']}): " + ", ".join(f"{k} {v:.5f}" for k, v in row.items()), flush=True)


def _work_models(path: str):
    """(checkpoint, tokenizer, EMA unet, EMA text encoder, latent cache, VAE scaling factor) of a work directory
    or one of its checkpoints."""
    import os

    from t2v_nb.toy import train

    workdir, ckpt_path = (os.path.dirname(path), path) if os.path.isfile(path) else (path, os.path.join(path, "unet.pt"))
    ckpt = torch.load(ckpt_path, weights_only=False)
    tokenizer = components.build_tokenizer()
    unet, text_encoder = train.ema_models(ckpt, len(tokenizer))
    cache = torch.load(os.path.join(workdir, "latents.pt"))
    scale = torch.load(os.path.join(workdir, "vae.pt"), weights_only=False)["scaling_factor"]
    return ckpt, tokenizer, unet.eval(), text_encoder.eval(), cache, scale


def shape_pairs(path: str, n: int = 48) -> None:
    """The shape probe split by pair: for `n` cached clips of each true shape (t in 400-699, as the log's
    probe), how much the loss grows, relative, when the caption names each other shape instead. Tells
    "has learned triangle" from "tells a circle from a square", which the log's single figure mixes."""
    from t2v_nb.toy import train

    ckpt, tokenizer, unet, text_encoder, cache, scale = _work_models(path)
    scheduler = components.build_scheduler()
    every = data.all_clips()
    clip_ids = cache["clip"].tolist()
    gen = torch.Generator().manual_seed(7)
    figures = {}
    for shape in data.SHAPES:
        pool = torch.tensor([i for i, c in enumerate(clip_ids) if every[c].shape == shape], dtype=torch.long)
        if len(pool) == 0:
            print(f"{path}: no cached clip of a {shape}, its pairs are left out", flush=True)
            continue
        idx = pool[torch.randint(0, len(pool), (n,), generator=gen)]
        x0 = cache["mean"][idx].float() * scale
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(400, 700, (n,), generator=gen)
        noisy, target = scheduler.add_noise(x0, noise, t), train._target(scheduler, x0, noise, t)
        clips = [every[clip_ids[int(i)]] for i in idx]

        def loss(word):
            ids = train.token_ids(tokenizer, [data.caption(data.Clip(c.color, word, c.direction)) for c in clips])
            with torch.no_grad():
                return F.mse_loss(train._unet_out(unet, text_encoder, noisy, t, ids), target).item()

        true = loss(shape)
        figures |= {f"{shape}->{other}": (loss(other) - true) / true for other in data.SHAPES if other != shape}
    print(f"{path} (step {ckpt['state']['step']}): " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)


def step_speed(model: str, batch: int = 32, repeats: int = 3, modes=("fp32", "bf16", "compile")) -> None:
    """Wall seconds of one training step of the model's UNet (forward and backward on a batch of `batch`
    noisy latents of its size; no optimizer), eagerly in float32, under bfloat16 autocast, and after
    torch.compile (whose first call, the compilation, is reported apart). The median of `repeats` steps after
    two warm-up steps. Run it on an otherwise idle machine: it measures the machine as much as the model."""
    import statistics

    unet = t2v_nb.load(model).unet.train().requires_grad_(True)
    size, frames = unet.config.sample_size, data.NUM_FRAMES
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, unet.config.in_channels, frames, size, size, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=gen)
    for mode in modes:
        forward = torch.compile(unet) if mode == "compile" else unet

        def step() -> float:
            t0 = time.perf_counter()
            unet.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
                out = forward(x, t, encoder_hidden_states=context).sample
            out.float().pow(2).mean().backward()
            return time.perf_counter() - t0

        first = step()
        step()
        seconds = statistics.median(step() for _ in range(repeats))
        extra = f" (first call {first:.1f} s)" if mode == "compile" else ""
        print(f"{model} {size}x{size} latents, batch {batch}, {torch.get_num_threads()} threads: {mode} "
              f"{seconds:.2f} s a step{extra}", flush=True)
