"""Train the toy-shapes model from scratch on moving-shapes videos, on a CPU, resumably.

Three stages, each one checkpointed in the work directory so a run that is cut off carries on
where it stopped when started again with the same command:

1. ``vae``: an `AutoencoderKL` (64x64 RGB -> 4x16x16 latents with ``--vae-scale-factor 4``, the default and
   the shipped model's, or 4x8x8 with 8) learns to reconstruct single frames;
   its `scaling_factor` (1 / std of the latents) is written into its config.
2. ``latents``: a fixed set of training videos is encoded once (posterior mean and std per video),
   so the UNet stage spends its CPU on the UNet.
3. ``unet``: the UNet (and the text encoder, unless frozen) learn v-prediction on a zero-terminal-SNR
   schedule, with "layout" loss weights, 10% empty captions (the default negative prompt is ""), EMA weights.

Every budget is in steps, so a run on a busy machine makes the same model; the stage loop, its clocks and the
latent cache are `t2v_nb.toy._recipe`'s, shared with `train_flow`. The training loss, for a lesson to call:
`v_prediction_loss` on timesteps from `sample_timesteps`.

``--export DIR`` writes the EMA weights in the diffusers layout (model_index.json + one folder per
component, safetensors) with the latent -> RGB preview factors fitted for the VAE.

    python -m t2v_nb.toy.train --workdir runs/toy          # ~23 CPU-hours on 2 cores; Ctrl-C, rerun to go on
    python -m t2v_nb.toy.train --workdir runs/toy --export t2v_nb/toy/weights

Losses and probes go to ``<workdir>/log.jsonl``, one JSON object per line.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from ..models import PRESETS
from . import _recipe, components, data
from ._recipe import Budget, Stop, log as _log, run_stage, save as _save

_stop = Stop()  # set by Ctrl-C or SIGTERM (see main)
RECIPE_VAE_SCALE_FACTOR = 4  # a new run's VAE: 16x16 latents (the shipped model's; components.VAE_SCALE_FACTOR is 8)


# ---------------------------------------------------------------- stage 1: VAE

def _reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, block: int = 8) -> torch.Tensor:
    """Pixel MSE + L1, plus the error of `block` x `block` means (one per latent pixel) weighted heavily: colour
    is low-frequency, and without it the small shapes' colours drown in the pixel loss and the VAE learns
    luminance blobs first. rec, x: [N, 3, H, W] in [-1, 1]."""
    low = F.mse_loss(F.avg_pool2d(rec, block), F.avg_pool2d(x, block))
    return F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 10 * low


def _vae_batch(rng: np.random.Generator, n: int, whole: bool, grid: int) -> torch.Tensor:
    """One VAE step's frames, [N, 3, H, W] in [-1, 1]: n 32x32 crops around the shape (a quarter of the pixels
    of a frame but most of its information: the VAE is convolutional), or n // 2 whole frames."""
    n = n // 2 if whole else n
    videos, _, _ = data.sample_batch(rng, n, "all")
    frames = videos[np.arange(n), rng.integers(0, data.NUM_FRAMES, n)]  # [N, H, W, 3]
    if not whole:  # the corner pixel is background
        frames = _recipe.crops_around(frames, np.abs(frames - frames[:, :1, :1]).sum(-1) > 0.2, rng, grid=grid)
    return torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1


def _vae_loss(vae, colour: torch.nn.Linear, x: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """The VAE stage's loss on frames x [N, 3, H, W]: `_reconstruction_loss`, the error of the linear colour
    read-out `colour` of each latent pixel against its block's mean colour (weight 10), a tiny KL term."""
    post = vae.encode(x).latent_dist
    z = post.mode()  # [N, C, h, w]
    rec = vae.decode(z).sample  # as AutoencoderKL.forward does by default
    linear_rgb = colour(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [N, 3, h, w]
    return (_reconstruction_loss(rec, x, scale_factor) + 10 * F.mse_loss(linear_rgb, F.avg_pool2d(x, scale_factor))
            + 1e-6 * post.kl().mean())


def train_vae(workdir: str, steps: int, batch_frames: int = 16, lr: float = 1e-3, seed: int = 0,
              scale_factor: int = RECIPE_VAE_SCALE_FACTOR) -> None:
    """Stage 1: `steps` VAE steps in all. `scale_factor`: pixels per latent pixel of a new run's VAE, 4 (16x16
    latents, as the command line's default) or 8; a resumed run keeps its checkpoint's."""
    path = os.path.join(workdir, "vae.pt")
    ckpt = _recipe.load(path)
    if ckpt is not None:
        scale_factor = _ckpt_scale_factor(ckpt)
    vae = components.build_vae(seed, scale_factor)
    # A linear read-out of each latent pixel's colour, trained with the VAE: it ties the mean colour of the
    # block of pixels under each latent pixel to a linear function of the latents, so a linear preview
    # (t2v_nb.preview) shows true colours.
    colour = torch.nn.Linear(vae.config.latent_channels, 3)
    opt = torch.optim.AdamW(list(vae.parameters()) + list(colour.parameters()), lr=lr, weight_decay=0.0)
    state = {"step": 0, "seconds": 0.0, "done": False, "scale_factor": scale_factor}
    if ckpt is not None:
        vae.load_state_dict(ckpt["model"])
        if "colour" in ckpt:
            colour.load_state_dict(ckpt["colour"])
        if ckpt["opt"] is not None:
            opt.load_state_dict(ckpt["opt"])
        state = {"scale_factor": scale_factor, **ckpt["state"]}
    if state["done"]:
        return
    rng = np.random.default_rng([seed, 1, state["step"]])
    val, _, _ = data.sample_batch(np.random.default_rng([seed, 99]), 16, "all")
    val = torch.from_numpy(val.reshape(-1, 64, 64, 3)).permute(0, 3, 1, 2) * 2 - 1  # [128, 3, H, W] in [-1, 1]

    def step() -> float:
        # The last 16% of the steps on whole frames, so GroupNorm's statistics match what it will see.
        x = _vae_batch(rng, batch_frames, state["step"] > steps * 0.84, scale_factor)
        loss = _vae_loss(vae, colour, x, scale_factor)
        # The learning rate drops for the last third of the steps.
        _recipe.optimizer_step(opt, loss, lr if state["step"] < steps * 2 / 3 else lr * 0.3)
        return loss.item()

    def save(**extra) -> None:
        _save({"model": vae.state_dict(), "colour": colour.state_dict(), "opt": opt.state_dict(), "state": state,
               **extra}, path)

    run_stage(workdir, "vae", state, step, budget=Budget(steps=steps), device=torch.device("cpu"), save=save,
              stop=_stop, log_every=200, row=lambda: {"psnr": _psnr(vae, val)})
    if not _stop:
        state["done"] = True
        # scaling_factor: make the latents unit-variance, as SD's 0.18215 does for its VAE.
        vae.eval()
        with torch.no_grad():
            lat = vae.encode(val).latent_dist.mode()
        vae.register_to_config(scaling_factor=float(1 / lat.std()))
        _log(workdir, stage="vae", step=state["step"], psnr=_psnr(vae, val), scaling_factor=vae.config.scaling_factor,
             done=True)
    save(scaling_factor=vae.config.scaling_factor)


def _psnr(vae, val: torch.Tensor) -> float:
    """PSNR (dB) of the VAE's round trip of the frames `val` [N, 3, H, W] in [-1, 1]."""
    vae.eval()
    with torch.no_grad():
        rec = vae.decode(vae.encode(val).latent_dist.mode()).sample.clamp(-1, 1)
    vae.train()
    mse = ((rec - val) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / mse)


def _ckpt_scale_factor(ckpt: dict) -> int:
    """The VAE scale factor of a vae.pt checkpoint; those from before the option have 8 (`components.VAE_SCALE_FACTOR`)."""
    return ckpt["state"].get("scale_factor", components.VAE_SCALE_FACTOR)


def load_vae(workdir: str):
    """The work directory's VAE (stage 1, and 1b once it ran), in eval mode."""
    ckpt = torch.load(os.path.join(workdir, "vae.pt"), weights_only=False)
    vae = components.build_vae(scale_factor=_ckpt_scale_factor(ckpt))
    vae.load_state_dict(ckpt["model"])
    vae.register_to_config(scaling_factor=ckpt["scaling_factor"])
    return vae.eval()


def noisy_latents(vae, n: int, noise: float, rng: np.random.Generator, gen: torch.Generator):
    """The decoder stage's batch: n random frames x [n, 3, H, W] in [-1, 1] and their latents (unscaled) with
    Gaussian noise of a random size in [0, `noise`] scaled units, [n, C, h, w]."""
    videos, _, _ = data.sample_batch(rng, n, "all")
    frames = videos[np.arange(n), rng.integers(0, data.NUM_FRAMES, n)]  # [N, H, W, 3]
    x = torch.from_numpy(frames).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mode()
    sigma = torch.rand(n, 1, 1, 1, generator=gen) * noise / vae.config.scaling_factor
    return z + sigma * torch.randn(z.shape, generator=gen), x


def tune_decoder(workdir: str, steps: int, noise: float = 0.5, batch_frames: int = 16, lr: float = 3e-4,
                 seed: int = 0) -> None:
    """Stage 1b: the decoder learns to draw clean shapes from imprecise latents; the encoder stays as it is.

    A denoiser's final latents are never exactly an encoder's output (on the 8x8 model shipped until
    2026-12-01 they sat ~0.4 rms, in scaled units, from the nearest encodable latent), and a decoder trained only on exact
    latents draws stars and pinched squares from them. Here each frame's latent gets Gaussian noise of
    a random size in [0, `noise`] (scaled units) and the decoder is trained to give back the clean frame.
    The encoder is frozen, so the latent space - and any UNet trained on it - stays valid.
    """
    path = os.path.join(workdir, "vae.pt")
    ckpt = torch.load(path, weights_only=False)
    tune = ckpt["state"].setdefault("decoder", {"step": 0, "seconds": 0.0, "noise": noise})
    budget = Budget(steps=steps)
    if not budget.left(tune):
        return
    vae = load_vae(workdir)
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if ckpt.get("decoder_opt") is not None:
        opt.load_state_dict(ckpt["decoder_opt"])
    rng = np.random.default_rng([seed, 3, tune["step"]])
    gen = torch.Generator().manual_seed(seed * 1000 + tune["step"])
    vae.decoder.train()

    def step() -> float:
        z, x = noisy_latents(vae, batch_frames, noise, rng, gen)
        loss = _reconstruction_loss(vae.decode(z).sample, x, components.vae_scale_factor(vae))
        _recipe.optimizer_step(opt, loss, lr if tune["step"] < steps * 2 / 3 else lr * 0.3)
        return loss.item()

    def save() -> None:
        ckpt["model"], ckpt["decoder_opt"] = vae.state_dict(), opt.state_dict()
        _save(ckpt, path)

    run_stage(workdir, "decoder", tune, step, budget=budget, device=torch.device("cpu"), save=save, stop=_stop,
              log_every=200)
    save()


# ---------------------------------------------------------------- stage 2: latent cache

def encode_dataset(workdir: str, num_videos: int, seed: int = 0, chunk: int = 64, device: str = "cpu") -> None:
    """Stage 2: `num_videos` training videos (8 frames each) encoded by the VAE, frame by frame, into
    <workdir>/latents.pt (see `_recipe.encode_dataset`); nothing to do where it exists."""
    if os.path.exists(os.path.join(workdir, _recipe.LATENTS)):
        return
    device = torch.device(device)
    vae = load_vae(workdir).to(device)
    rng = np.random.default_rng([seed, 2])
    index = {c: i for i, c in enumerate(data.all_clips())}

    def chunks():
        for start in range(0, num_videos, chunk):
            videos, _, clips = data.sample_batch(rng, min(chunk, num_videos - start), "train")
            frames = torch.from_numpy(videos.reshape(-1, 64, 64, 3)).permute(0, 3, 1, 2) * 2 - 1  # [n*F, 3, H, W]
            yield frames, [index[c] for c in clips]

    def encode(frames: torch.Tensor):
        post = vae.encode(frames).latent_dist  # [n*F, C, h, w]
        n = len(frames) // data.NUM_FRAMES
        to_video = lambda z: z.reshape(n, data.NUM_FRAMES, *z.shape[1:]).permute(0, 2, 1, 3, 4)  # [n, C, F, h, w]
        return to_video(post.mean), to_video(post.std)

    _recipe.encode_dataset(workdir, chunks(), encode, num_videos, _stop, device)


# ---------------------------------------------------------------- stage 3: text encoder + UNet

def _opposite(direction: str) -> str:
    return {"left": "right", "right": "left", "up": "down", "down": "up"}[direction]


def loss_weights(alphas_cumprod: torch.Tensor, scheme: str = "layout", gamma: float = 5.0,
                 prediction_type: str = "v_prediction") -> torch.Tensor:
    """Per-timestep weights on the loss of the model output (epsilon or v). [T]

    The plain loss weighs the error of the implied clean latents by SNR(t) with epsilon prediction and by
    SNR(t) + 1 with v-prediction. These weights change that into:
    - "min-snr": min(SNR, gamma) (Min-SNR-gamma);
    - "layout": min(SNR + 1, gamma): like "min-snr" at low noise, but full weight on the noisiest steps,
      where the layout of the clip and so its direction of motion is decided (up to ~120x more than
      "min-snr" there).
    """
    snr = alphas_cumprod / (1 - alphas_cumprod)
    if scheme == "min-snr":
        clean = torch.clamp(snr, max=gamma)
    elif scheme == "layout":
        clean = torch.clamp(snr + 1, max=gamma)
    else:
        raise ValueError(f"Unknown loss weighting {scheme!r}; expected 'min-snr' or 'layout'.")
    if prediction_type == "epsilon":
        return clean / snr.clamp(min=1e-8)
    if prediction_type == "v_prediction":
        return clean / (snr + 1)
    raise ValueError(f"Unsupported prediction_type {prediction_type!r}; expected 'epsilon' or 'v_prediction'.")


WARMUP_STEPS = 300


def unet_lr(step: int, steps: int, lr: float, decay_steps: int, rewarm_from: int | None = None) -> float:
    """Learning rate of UNet step `step` (0-based) of `steps`: a linear warm-up over the first 300 steps, then
    constant ("stable"), then over the last `decay_steps` (at most all of them) a cosine down to zero
    (warm-up, stable, decay). Because the decay is tied to the end, a run can be lengthened before it reaches
    the decay: the stable phase just goes on (see `stable_checkpoint_path`). `rewarm_from`: the step at which
    a run went on with a fresh optimizer (`init_from`); the rate warms up again over 300 steps from there, as
    Adam's first steps without its moments are as large as the learning rate in every parameter."""
    if decay_steps < 0:
        raise ValueError(f"decay_steps must be >= 0, got {decay_steps}")
    decay_steps = min(decay_steps, steps)
    rate = lr * min(1.0, (step + 1) / WARMUP_STEPS)
    if rewarm_from is not None:
        rate *= min(1.0, (step - rewarm_from + 1) / WARMUP_STEPS)
    start = steps - decay_steps
    if decay_steps and step >= start:
        rate *= 0.5 * (1 + math.cos(math.pi * (step - start + 1) / decay_steps))
    return rate


def stable_checkpoint_path(workdir: str) -> str:
    """Where train_unet keeps the checkpoint from the step before the decay began: start a longer run from
    a copy of it (as <workdir>/unet.pt) to go on with the stable phase."""
    return os.path.join(workdir, "unet_stable.pt")


def _unet_out(unet, text_encoder, noisy, t, input_ids):
    emb = text_encoder(input_ids)[0]  # [B, 77, D]
    if components.unet_kind(unet) == "motion":
        emb = emb.repeat_interleave(noisy.shape[2], dim=0)  # UNetMotionModel wants one per frame
    return unet(noisy, t, encoder_hidden_states=emb).sample


def token_ids(tokenizer, texts: list[str]) -> torch.Tensor:
    """The UNet stage's token ids of `texts`, padded to the tokenizer's length. [len(texts), 77]"""
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def _target(scheduler, x0, noise, t):
    """What the UNet learns to output: v (v-prediction) or the noise (epsilon)."""
    return scheduler.get_velocity(x0, noise, t) if scheduler.config.prediction_type == "v_prediction" else noise


def sample_timesteps(batch_size: int, generator: torch.Generator | None = None,
                     num_train_timesteps: int = 1000) -> torch.Tensor:
    """The training timesteps of a batch, as `train_unet` draws them: uniform integers in
    [0, num_train_timesteps), on the CPU (move them where the UNet is). [batch_size], int64

        >>> t = train.sample_timesteps(4, torch.Generator().manual_seed(0))
    """
    return torch.randint(0, num_train_timesteps, (batch_size,), generator=generator)


def v_prediction_loss(unet, text_encoder, scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                      input_ids: torch.Tensor, weights: torch.Tensor | None = None,
                      reduce: bool = True) -> torch.Tensor:
    """The UNet stage's training loss, as `train_unet` computes it.

    The clean latents x0 [B, C, F, h, w] (scaled by the VAE's scaling_factor) are noised to timesteps t [B]
    with `noise` (``scheduler.add_noise``); the UNet, conditioned on the text encoder's output for
    `input_ids` [B, 77] (`token_ids`), predicts v = sqrt(alphas_cumprod) noise - sqrt(1 - alphas_cumprod) x0
    (``scheduler.get_velocity``; the noise itself with an epsilon scheduler). The loss is the mean squared error
    of each sample, times the weight of its timestep, then averaged over the batch.

    Args:
        unet, text_encoder: the toy's (either UNet kind).
        scheduler: the training schedule, `components.build_scheduler()` (DDIM's, zero terminal SNR).
        weights: per-timestep weights [num_train_timesteps] on t's device; default the recipe's,
            ``loss_weights(scheduler.alphas_cumprod)`` ("layout": min(SNR + 1, 5) on the clean latents).
        reduce: False gives the weighted loss of each sample, [B].

    Returns:
        A scalar tensor (or [B]) that gradients flow through.
    """
    if weights is None:
        weights = loss_weights(scheduler.alphas_cumprod, prediction_type=scheduler.config.prediction_type).to(t.device)
    noisy = scheduler.add_noise(x0, noise, t)
    pred = _unet_out(unet, text_encoder, noisy, t, input_ids)
    per_sample = (pred - _target(scheduler, x0, noise, t)).pow(2).mean(dim=(1, 2, 3, 4))
    weighted = per_sample * weights[t]
    return weighted.mean() if reduce else weighted


_OTHER_SHAPE = {"circle": "square", "square": "circle", "triangle": "circle"}


def caption_probe(cache: dict, vae_scale: float, tokenizer, scheduler, device="cpu", n: int = 32):
    """A fixed probe batch of `n` cached videos: does the model use the caption's words? Returns a function of
    (unet, text_encoder) that gives the loss with the true captions (`probe_loss`) and how much it grows with
    a word changed (> 0: the model uses that word):
    - `direction_gap`: the opposite direction, at the highest noise (t in 900-999), where the layout is decided;
    - `shape_gap`: circle <-> square (triangle -> circle), at t in 400-699, where outlines are drawn.
    Both also relative to the true captions' loss at those t (`_rel`)."""
    ids = lambda texts: token_ids(tokenizer, texts)
    rng = torch.Generator().manual_seed(1234)
    idx = torch.randint(0, len(cache["clip"]), (n,), generator=rng)
    noise = torch.randn(n, *cache["mean"].shape[1:], generator=rng).to(device)
    t_high = torch.randint(900, 1000, (n,), generator=rng).to(device)
    t_mid = torch.randint(400, 700, (n,), generator=torch.Generator().manual_seed(1235)).to(device)
    x0 = cache["mean"][idx.to(cache["mean"].device)].float().to(device) * vae_scale
    clips = [data.all_clips()[int(i)] for i in cache["clip"].cpu()[idx]]
    true = ids([data.caption(c) for c in clips]).to(device)
    flips = {"direction": (t_high, ids([data.caption(data.Clip(c.color, c.shape, _opposite(c.direction))) for c in clips])),
             "shape": (t_mid, ids([data.caption(data.Clip(c.color, _OTHER_SHAPE[c.shape], c.direction)) for c in clips]))}

    def loss(unet, text_encoder, t, input_ids):
        noisy = scheduler.add_noise(x0, noise, t)
        return F.mse_loss(_unet_out(unet, text_encoder, noisy, t, input_ids.to(device)), _target(scheduler, x0, noise, t)).item()

    def probe(unet, text_encoder) -> dict:
        out = {}
        with torch.no_grad():
            for word, (t, flipped) in flips.items():
                l_true = loss(unet, text_encoder, t, true)
                gap = loss(unet, text_encoder, t, flipped) - l_true
                if word == "direction":
                    out["probe_loss"] = l_true
                out |= {f"{word}_gap": gap, f"{word}_gap_rel": gap / l_true}
        return out

    return probe


def train_unet(workdir: str, steps: int, batch_size: int = 32, lr: float = 5e-4, seed: int = 0,
               p_uncond: float = 0.1, snr_gamma: float = 5.0, ema_decay: float = 0.999,
               weighting: str = "layout", freeze_text_encoder: bool = False, kind: str = "3d",
               warm_start_from: str | None = None, eval_every: int = 1000, device: str = "cpu",
               max_minutes: float | None = None, decay_steps: int = 3000,
               channels: int = components.UNET_CHANNELS) -> None:
    """Stage 3: `steps` UNet steps in all. `device`: where the UNet trains ("cpu", "cuda"); the random numbers are
    drawn on the CPU either way, so a run can move between machines and go on with the same batches. `max_minutes`:
    stop this invocation (with a checkpoint) after that many wall-clock minutes; the same command goes on later.
    `decay_steps`: the learning rate's cosine decay to zero over the last that many steps (`unet_lr`).
    `kind`, `channels`: the UNet of a new run (a resumed run keeps its checkpoint's); its sample size is the
    latent cache's."""
    unet_lr(0, steps, lr, decay_steps)  # bad values fail before any work
    path, device = os.path.join(workdir, "unet.pt"), torch.device(device)
    deadline = None if max_minutes is None else time.time() + 60 * max_minutes
    cache = {k: v.to(device) for k, v in torch.load(os.path.join(workdir, _recipe.LATENTS)).items()}
    vae_scale = torch.load(os.path.join(workdir, "vae.pt"), weights_only=False)["scaling_factor"]
    run = _unet_run(path, cache["mean"].shape[-1], seed, kind, channels, freeze_text_encoder, warm_start_from, lr,
                    device)
    state, unet, text_encoder, ema = run.state, run.unet, run.text_encoder, run.ema
    state["decay_steps"] = decay_steps  # for the export's record of the recipe
    next_batch = _unet_batches(cache, vae_scale, run.tokenizer, batch_size, p_uncond,
                               run.scheduler.config.num_train_timesteps,
                               torch.Generator().manual_seed(seed * 1000 + state["step"]))
    weight = loss_weights(run.scheduler.alphas_cumprod, weighting, snr_gamma, run.scheduler.config.prediction_type)
    weight = weight.to(device)  # [1000]
    probe = caption_probe(cache, vae_scale, run.tokenizer, run.scheduler, device)

    def step() -> torch.Tensor:
        x0, input_ids, noise, t = (v.to(device) for v in next_batch())
        loss = v_prediction_loss(unet, text_encoder, run.scheduler, x0, noise, t, input_ids, weight)
        _recipe.optimizer_step(run.opt, loss, unet_lr(state["step"], steps, lr, decay_steps, state.get("rewarm_from")),
                               clip=run.params)
        _recipe.ema_update(run.ema_params, run.params, state["step"], ema_decay)
        return loss.detach()  # no .item() per step: an accelerator need not wait for the CPU

    def row() -> dict:
        out = {"device": device.type, "lr": run.opt.param_groups[0]["lr"]}
        return out | (probe(ema["unet"], ema["text_encoder"]) if state["step"] % 250 == 0 else {})

    def keep_stable() -> None:  # the checkpoint from just before the decay (see stable_checkpoint_path)
        if 0 < decay_steps < steps and state["step"] == steps - decay_steps \
                and not os.path.exists(stable_checkpoint_path(workdir)):
            _save_unet(stable_checkpoint_path(workdir), unet, text_encoder, ema, run.opt, state)

    def evaluate() -> None:  # after the checkpoint it exports from
        if eval_due() and not _stop:
            _log(workdir, stage="eval", step=state["step"], cpu_minutes=state.get("cpu_seconds", 0.0) / 60,
                 **sample_accuracy(workdir, device=device))

    eval_due = lambda: bool(eval_every) and state["step"] % eval_every == 0
    save = lambda: _save_unet(path, unet, text_encoder, ema, run.opt, state)
    run_stage(workdir, "unet", state, step, budget=Budget(steps=steps), device=device, save=save, stop=_stop,
              log_every=50, row=row, checkpoint_minutes=10, deadline=deadline, before_step=keep_stable,
              checkpoint_now=eval_due, after_checkpoint=evaluate)
    save()


def _unet_run(path: str, latent_size: int, seed: int, kind: str, channels: int, freeze_text_encoder: bool,
              warm_start_from: str | None, lr: float, device: torch.device) -> SimpleNamespace:
    """The UNet stage's parts: tokenizer, text_encoder, unet, scheduler, the trained params, opt, the EMA copies
    (ema["unet"], ema["text_encoder"]), the EMA of each trained parameter (ema_params) and the state; a new run's,
    or those of the checkpoint at `path`."""
    tokenizer = components.build_tokenizer()
    text_encoder = components.build_text_encoder(len(tokenizer), seed)
    ckpt = _recipe.load(path)
    if ckpt is not None:
        kind, channels = _ckpt_kind(ckpt), _ckpt_channels(ckpt)
        if _ckpt_latent_size(ckpt) != latent_size:
            raise ValueError(f"{path} holds a UNet for {_ckpt_latent_size(ckpt)}x{_ckpt_latent_size(ckpt)} latents "
                             f"but the latent cache's are {latent_size}x{latent_size}.")
    unet = components.build_unet(seed, kind, channels, latent_size)
    if warm_start_from and ckpt is None:
        fresh = components.warm_start(unet, _load_unet_weights(warm_start_from))
        print(f"warm start from {warm_start_from}: {len(fresh)} of {len(unet.state_dict())} tensors start fresh")
    if freeze_text_encoder:
        # A frozen text encoder keeps its random init, whose outputs for different words stay apart
        # (left vs right: relative distance ~0.3). Trained jointly from the start, it learned to map the
        # direction words to nearly the same outputs (~0.02) long before the UNet could use them.
        text_encoder.requires_grad_(False)
    unet.to(device)
    text_encoder.to(device)
    params = [p for p in list(unet.parameters()) + list(text_encoder.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ema = {"unet": copy.deepcopy(unet).requires_grad_(False), "text_encoder": copy.deepcopy(text_encoder).requires_grad_(False)}
    state = {"step": 0, "seconds": 0.0, "unet_kind": kind, "unet_channels": channels, "latent_size": latent_size}
    if ckpt is not None:
        for part, key in ((unet, "unet"), (text_encoder, "text_encoder"), (ema["unet"], "ema_unet"),
                          (ema["text_encoder"], "ema_text_encoder")):
            part.load_state_dict(ckpt[key])
        state = {"unet_kind": kind, "unet_channels": channels, "latent_size": latent_size, **ckpt["state"]}
        if ckpt["opt"] is not None:
            opt.load_state_dict(ckpt["opt"])  # moves the moments to the parameters' device
        elif state["step"] > 0:  # weights without their optimizer (init_from): warm up again
            state["rewarm_from"] = state["step"]
            state["fresh_optimizer_at"] = [*state.get("fresh_optimizer_at", []), state["step"]]
    state.setdefault("seconds_by_device", {"cpu": state["seconds"]})  # runs from before devices trained on the CPU
    # EMA of the trained parameters only: frozen ones (the text encoder's by default) equal their EMA already.
    ema_params = [pe for name, live in (("unet", unet), ("text_encoder", text_encoder))
                  for pe, p in zip(ema[name].parameters(), live.parameters()) if p.requires_grad]
    return SimpleNamespace(tokenizer=tokenizer, text_encoder=text_encoder.train(), unet=unet.train(), params=params,
                           scheduler=components.build_scheduler(), opt=opt, ema=ema, ema_params=ema_params, state=state)


def _unet_batches(cache: dict, vae_scale: float, tokenizer, batch_size: int, p_uncond: float, timesteps: int,
                  gen: torch.Generator):
    """A function that gives the UNet stage's next batch, drawn from `gen` on the CPU: x0 [B, C, F, h, w] (a sample
    of each cached video's posterior, scaled), input_ids [B, 77] (a random template of its caption, `p_uncond` of
    them ""), noise like x0 and timesteps t [B] (`sample_timesteps`)."""
    clip_of = cache["clip"].cpu()  # [N] clip index per cached video, for indexing on the CPU
    ids = lambda texts: token_ids(tokenizer, texts)
    # Token ids of every caption variant, and of "" for the unconditional branch.
    caption_ids = torch.stack([ids([data.caption(c, k) for k in range(len(data.TEMPLATES))]) for c in data.all_clips()])
    empty_ids = ids([""])[0]  # caption_ids: [60, T, 77]

    def next_batch():
        idx = torch.randint(0, len(clip_of), (batch_size,), generator=gen)
        on_device = idx.to(cache["mean"].device)
        shape = (batch_size, *cache["mean"].shape[1:])
        x0 = (cache["mean"][on_device].float()
              + cache["std"][on_device].float() * torch.randn(shape, generator=gen).to(on_device.device)) * vae_scale
        template = torch.randint(0, len(data.TEMPLATES), (batch_size,), generator=gen)
        input_ids = caption_ids[clip_of[idx], template]  # [B, 77]
        input_ids[torch.rand(batch_size, generator=gen) < p_uncond] = empty_ids
        noise = torch.randn(x0.shape, generator=gen)
        return x0, input_ids, noise, sample_timesteps(batch_size, gen, timesteps)

    return next_batch


EVAL_CLIPS = slice(0, None, 5)  # every 5th of data.all_clips(): 12 captions, 1 of them held out


def sample_accuracy(workdir: str, seed: int = 500, device="cpu") -> dict:
    """Strict accuracy (t2v_nb.toy.evaluate) of the work directory's current EMA weights on a fixed small
    sample: 12 captions, one seed, default sampler settings. Exports to <workdir>/eval_export to load them."""
    import t2v_nb
    from . import evaluate

    out = os.path.join(workdir, "eval_export")
    export(workdir, out, fit_preview=False)
    pipe = t2v_nb.load(out, device=device, dtype=torch.float32)
    report = evaluate.evaluate(lambda prompt, s: pipe.generate(prompt, seed=s, progress=False).frames,
                               data.all_clips()[EVAL_CLIPS], seeds=(seed,), progress=False)
    acc = report.accuracy["all"]
    ious = [r.detection.iou[r.clip.shape] for r in report.rows if r.detection.iou]
    return {f"eval_{k}": v for k, v in acc.items()} | {"eval_iou": float(np.mean(ious)) if ious else 0.0}


def _ckpt_kind(ckpt: dict) -> str:
    """The UNet kind of a checkpoint; those from before the 3d kind existed are "motion"."""
    return ckpt["state"].get("unet_kind", "motion")


def _ckpt_channels(ckpt: dict) -> int:
    """The UNet width of a checkpoint; those from before the option have the shipped width."""
    return ckpt["state"].get("unet_channels", components.UNET_CHANNELS)


def _ckpt_latent_size(ckpt: dict) -> int:
    """The latent size a UNet checkpoint is for; those from before the option are for 8x8."""
    return ckpt["state"].get("latent_size", 8)


def ema_models(ckpt: dict, vocab_size: int):
    """The UNet and text encoder of a unet.pt checkpoint, built as it says and holding its EMA weights."""
    unet = components.build_unet(kind=_ckpt_kind(ckpt), channels=_ckpt_channels(ckpt), sample_size=_ckpt_latent_size(ckpt))
    unet.load_state_dict(ckpt["ema_unet"])
    text_encoder = components.build_text_encoder(vocab_size)
    text_encoder.load_state_dict(ckpt["ema_text_encoder"])
    return unet, text_encoder


def _load_unet_weights(source: str) -> dict:
    """UNet weights from a work directory (its EMA weights) or an exported model directory."""
    if os.path.isfile(os.path.join(source, "unet.pt")):
        return torch.load(os.path.join(source, "unet.pt"), weights_only=False)["ema_unet"]
    from safetensors.torch import load_file

    return load_file(os.path.join(source, "unet", "diffusion_pytorch_model.safetensors"))


def _save_unet(path, unet, text_encoder, ema, opt, state) -> None:
    """The UNet stage's checkpoint (on the CPU, as `_recipe.save` writes every one)."""
    _save({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
           "ema_unet": ema["unet"].state_dict(), "ema_text_encoder": ema["text_encoder"].state_dict(),
           "opt": opt.state_dict(), "state": state}, path)


# ---------------------------------------------------------------- export

FOREGROUND_WEIGHT = 30.0  # preview fit: weight of a latent pixel = 1 + this * its contrast with the background
PREVIEW_LATENT_NOISE = 0.3  # preview fit: std of the noise added to the latents it reads (see fit_preview_factors)
PREVIEW_SOURCE = ("fitted by t2v_nb.toy.train on the VAE's decodes of 256 training frames, weighted to the shapes, "
                  f"reading the latents with noise of std {PREVIEW_LATENT_NOISE} added")


def export(workdir: str, out: str, fit_preview: bool = True) -> None:
    """Write the EMA weights in the diffusers layout, with the preview factors of the VAE."""

    tokenizer = components.build_tokenizer()
    ckpt = torch.load(os.path.join(workdir, "unet.pt"), weights_only=False)
    kind = _ckpt_kind(ckpt)
    unet, text_encoder = ema_models(ckpt, len(tokenizer))
    vae = load_vae(workdir)
    vae_state = torch.load(os.path.join(workdir, "vae.pt"), weights_only=False)["state"]
    scheduler = components.build_scheduler()
    os.makedirs(out, exist_ok=True)
    for name, part in (("tokenizer", tokenizer), ("text_encoder", text_encoder), ("unet", unet), ("vae", vae),
                       ("scheduler", scheduler)):
        if hasattr(part, "save_pretrained"):
            kwargs = {"safe_serialization": True} if name in ("text_encoder", "unet", "vae") else {}
            part.save_pretrained(os.path.join(out, name), **kwargs)
        else:
            part.save_config(os.path.join(out, name))
    index = {
        # diffusers' TextToVideoSDPipeline loads the 3d kind (ModelScope's classes); only t2v_nb the motion kind.
        "_class_name": "TextToVideoSDPipeline" if kind == "3d" else "StepwisePipeline",
        "_t2v_nb": "toy-shapes: ModelScope text-to-video's parts, tiny, trained on moving shapes" + (
            "" if kind == "3d" else "; its UNet is a UNetMotionModel (frame positions)"),
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "unet": ["diffusers", components.UNET_CLASSES[kind]],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "t2v_nb_defaults": PRESETS["toy-shapes"].sampler_defaults(),
        "training": {"unet_steps": ckpt["state"]["step"], **_recipe.minutes_record("unet", ckpt["state"]),
                     "vae_steps": vae_state["step"], "decoder_steps": vae_state.get("decoder", {}).get("step", 0),
                     **({"unet_decay_steps": ckpt["state"]["decay_steps"]} if "decay_steps" in ckpt["state"] else {}),
                     **({"unet_fresh_optimizer_at": ckpt["state"]["fresh_optimizer_at"]}
                        if ckpt["state"].get("fresh_optimizer_at") else {})},
    }
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    components.save_slow_tokenizer_files(tokenizer, os.path.join(out, "tokenizer"))
    if fit_preview:
        fit_preview_factors(vae).save(os.path.join(out, "preview.json"))
    print(f"exported to {out}")


def fit_preview_factors(vae):
    """Latent -> RGB factors for `vae`, fitted on its own decodes of fresh videos, weighted towards the shapes.

    The UNet learns from samples of the VAE's posterior (`encode_dataset` keeps its mean and std), so the
    latents it draws carry that noise too, on the background as well (std ~0.56 in scaled units for the
    16x16 VAE, whose posterior std is ~1 everywhere: its KL weight is tiny), and the decoder, tuned on noisy
    latents (`tune_decoder`), ignores it. A fit on clean latents shows it as coloured speckle. The factors
    are fitted to read latents with noise of std `PREVIEW_LATENT_NOISE` added: about half that noise takes
    most of the speckle away; the whole of it also washes out the shape's colour (toy README, "The preview")."""
    from .. import preview

    videos, _, _ = data.sample_batch(np.random.default_rng(7), 32, "all")
    x = torch.from_numpy(videos.reshape(-1, 64, 64, 3)).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(x).latent_dist.mode() * vae.config.scaling_factor  # [N, C, h, w]
    return preview.fit_linear_preview(vae, latents.unsqueeze(2), source=PREVIEW_SOURCE, foreground=FOREGROUND_WEIGHT,
                                      latent_noise=PREVIEW_LATENT_NOISE)


def init_from(workdir: str, model_dir: str) -> list[str]:
    """Fill in a work directory's missing checkpoints from exported weights, to train on from there.

    Only missing checkpoints are written: where the work directory already holds `vae.pt` or `unet.pt`, that
    one is kept (so the same command goes on from a surviving run). Returns the names of the files it wrote.

    The exported weights are the EMA weights; they become both the live and the EMA copy. The
    optimizer starts fresh (so the learning rate warms up again: `unet_lr`); the step count and training
    time carry on from model_index.json. An export and this are also how a run moves to another machine
    in ~12 MB for the 16x16 run (the work directory's checkpoints hold the optimizer too; the latent cache is encoded again).
    """
    import diffusers
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    with open(os.path.join(model_dir, "model_index.json")) as f:
        index = json.load(f)
    info = index.get("training", {})
    unet_cls = index["unet"][1]
    written = []
    if not os.path.exists(os.path.join(workdir, "vae.pt")):
        vae = AutoencoderKL.from_pretrained(os.path.join(model_dir, "vae"))
        state = {"step": info.get("vae_steps", 0), "seconds": 0.0, "done": True,
                 "scale_factor": components.vae_scale_factor(vae),
                 "decoder": {"step": info.get("decoder_steps", 0), "seconds": 0.0}}
        _save({"model": vae.state_dict(), "opt": None, "state": state, "scaling_factor": vae.config.scaling_factor},
              os.path.join(workdir, "vae.pt"))
        written.append("vae.pt")
    if not os.path.exists(os.path.join(workdir, "unet.pt")):
        unet = getattr(diffusers, unet_cls).from_pretrained(os.path.join(model_dir, "unet"))
        te = CLIPTextModel.from_pretrained(os.path.join(model_dir, "text_encoder"))
        state = {"step": info.get("unet_steps", 0), "seconds": info.get("unet_minutes", 0.0) * 60,
                 "cpu_seconds": info.get("unet_cpu_minutes", 0.0) * 60,
                 "fresh_optimizer_at": info.get("unet_fresh_optimizer_at", []),
                 "unet_kind": components.unet_kind(unet), "unet_channels": unet.config.block_out_channels[0],
                 "latent_size": unet.config.sample_size}
        _save({"unet": unet.state_dict(), "text_encoder": te.state_dict(), "ema_unet": unet.state_dict(),
               "ema_text_encoder": te.state_dict(), "opt": None, "state": state}, os.path.join(workdir, "unet.pt"))
        written.append("unet.pt")
    if written:
        print(f"initialised {', '.join(written)} in {workdir} from {model_dir}: {info}")
    else:
        print(f"{workdir} already holds vae.pt and unet.pt: going on from them, {model_dir} is not used")
    return written


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Budgets (--*-steps) are steps in all, "
                                "across resumptions; --max-minutes only stops this invocation early. The log's and "
                                "checkpoints' minutes are wall time, cpu_minutes CPU time (t2v_nb.toy._recipe).")
    p.add_argument("--workdir", default="runs/toy")
    p.add_argument("--vae-steps", type=int, default=6000, help="VAE steps (stage 1)")
    p.add_argument("--decoder-steps", type=int, default=2000, help="decoder steps on noisy latents (stage 1b)")
    p.add_argument("--decoder-noise", type=float, default=0.5, help="largest latent noise of stage 1b, scaled units")
    p.add_argument("--unet-steps", type=int, default=12000, help="total UNet steps, across resumptions (stage 3)")
    p.add_argument("--eval-every", type=int, default=1000, help="UNet steps between strict-accuracy samples (0: never)")
    p.add_argument("--num-videos", type=int, default=12000, help="videos in the latent cache")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4, help="UNet learning rate of the stable phase")
    p.add_argument("--decay-steps", type=int, default=3000,
                   help="the UNet learning rate decays to zero (cosine) over the last this many steps")
    p.add_argument("--weighting", choices=("layout", "min-snr"), default="layout",
                   help="loss weight per timestep (see loss_weights)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="where the latent cache is encoded and the UNet trains "
                   "(cpu, cuda); the VAE stages run on the CPU")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop the UNet stage after this many wall-clock minutes (checkpointed; run again to go on)")
    p.add_argument("--freeze-text-encoder", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the text encoder at its random init (default; --no-freeze-text-encoder trains it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="DIR", help="write the model in the diffusers layout and exit")
    p.add_argument("--init-from", metavar="DIR", help="start from exported weights (e.g. t2v_nb/toy/weights)")
    p.add_argument("--unet", choices=sorted(components.UNET_CONFIGS), default="3d",
                   help="UNet kind of a new run: ModelScope's UNet3DConditionModel or AnimateDiff's UNetMotionModel")
    p.add_argument("--unet-channels", type=int, default=components.UNET_CHANNELS,
                   help="UNet width of a new run: channels of its first block, the second has twice as many "
                   f"(default {components.UNET_CHANNELS}, the shipped model's)")
    p.add_argument("--vae-scale-factor", type=int, choices=(4, 8), default=RECIPE_VAE_SCALE_FACTOR,
                   help="pixels per latent pixel of a new run's VAE: 4 (16x16 latents, the shipped model's; the "
                   "UNet gets a 16x16 level, see components.unet_config) or 8 (8x8 latents, the model shipped "
                   "until 2026-12-01)")
    p.add_argument("--warm-start", metavar="DIR", help="a new run's UNet starts with the tensors of the same name "
                   "and size from this work or model directory (e.g. the spatial layers of the other kind)")
    return p


def main(argv=None) -> None:
    args = _parser().parse_args(argv)
    # The UNet stage and the export build the tokenizer from the `train` extra's file: fail now, not after
    # the ~45 minutes of the VAE stages.
    components.clip_bpe_file()
    torch.set_num_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    if args.export:
        export(args.workdir, args.export)
        return
    if args.init_from:
        init_from(args.workdir, args.init_from)
    _stop.install()
    train_vae(args.workdir, args.vae_steps, seed=args.seed, scale_factor=args.vae_scale_factor)
    if not _stop:
        tune_decoder(args.workdir, args.decoder_steps, noise=args.decoder_noise, seed=args.seed)
    unet_path = os.path.join(args.workdir, "unet.pt")
    if _stop or (os.path.exists(unet_path) and
                 torch.load(unet_path, weights_only=False)["state"]["step"] >= args.unet_steps):
        return
    encode_dataset(args.workdir, args.num_videos, seed=args.seed, device=args.device)
    if _stop:
        return
    train_unet(args.workdir, args.unet_steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
               weighting=args.weighting, freeze_text_encoder=args.freeze_text_encoder, kind=args.unet,
               warm_start_from=args.warm_start, eval_every=args.eval_every, device=args.device,
               max_minutes=args.max_minutes, decay_steps=args.decay_steps, channels=args.unet_channels)


if __name__ == "__main__":
    main()
