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

import numpy as np
import torch
import torch.nn.functional as F

from ..models import PRESETS
from . import components, data
from ._recipe import Stop, log as _log, save as _save

_stop = Stop()  # set by Ctrl-C or SIGTERM (see main)


# ---------------------------------------------------------------- stage 1: VAE

def _crops(frames: np.ndarray, rng: np.random.Generator, size: int = 32, grid: int = 8) -> np.ndarray:
    """A size x size crop of each frame that contains its shape, at offsets on the latent grid (`grid` pixels)."""
    out = np.empty((len(frames), size, size, 3), np.float32)
    H = frames.shape[1]
    for k, frame in enumerate(frames):
        diff = np.abs(frame - frame[0, 0]).sum(-1)  # the corner pixel is background
        ys, xs = np.nonzero(diff > 0.2)
        cy, cx = (ys.mean(), xs.mean()) if len(ys) else (H / 2, H / 2)
        y0 = int(np.clip(grid * round((cy - size / 2 + rng.integers(-8, 9)) / grid), 0, H - size))
        x0 = int(np.clip(grid * round((cx - size / 2 + rng.integers(-8, 9)) / grid), 0, H - size))
        out[k] = frame[y0 : y0 + size, x0 : x0 + size]
    return out


def _reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, block: int = 8) -> torch.Tensor:
    """Pixel MSE + L1, plus the error of `block` x `block` means (one per latent pixel) weighted heavily: colour
    is low-frequency, and without it the small shapes' colours drown in the pixel loss and the VAE learns
    luminance blobs first. rec, x: [N, 3, H, W] in [-1, 1]."""
    low = F.mse_loss(F.avg_pool2d(rec, block), F.avg_pool2d(x, block))
    return F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 10 * low


def train_vae(workdir: str, steps: int, batch_frames: int = 16, lr: float = 1e-3, seed: int = 0,
              scale_factor: int = components.VAE_SCALE_FACTOR) -> None:
    """Stage 1. `scale_factor`: pixels per latent pixel of a new run's VAE (a resumed run keeps its own)."""
    path = os.path.join(workdir, "vae.pt")
    ckpt = torch.load(path, weights_only=False) if os.path.exists(path) else None
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

    def psnr() -> float:
        vae.eval()
        with torch.no_grad():
            rec = vae.decode(vae.encode(val).latent_dist.mode()).sample.clamp(-1, 1)
        vae.train()
        mse = ((rec - val) / 2).pow(2).mean().item()
        return 10 * math.log10(1 / mse)

    last_ckpt, running = time.time(), []
    while state["step"] < steps and not _stop:
        t0, c0 = time.time(), time.process_time()
        # Small batches of 32x32 crops around the shape: a quarter of the pixels of a frame but most of
        # its information (the VAE is convolutional).
        # The last 16% of the steps on whole frames, so GroupNorm's statistics match what it will see.
        whole = state["step"] > steps * 0.84
        n = batch_frames // 2 if whole else batch_frames
        videos, _, _ = data.sample_batch(rng, n, "all")
        frames = videos[np.arange(n), rng.integers(0, data.NUM_FRAMES, n)]  # [N, H, W, 3]
        x = torch.from_numpy(frames if whole else _crops(frames, rng, grid=scale_factor)).permute(0, 3, 1, 2) * 2 - 1
        # Lower the learning rate for the last third of the steps.
        for g in opt.param_groups:
            g["lr"] = lr if state["step"] < steps * 2 / 3 else lr * 0.3
        post = vae.encode(x).latent_dist
        z = post.mode()  # [N, C, h, w]
        rec = vae.decode(z).sample  # as AutoencoderKL.forward does by default
        linear_rgb = colour(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [N, 3, h, w]
        loss = (_reconstruction_loss(rec, x, scale_factor) + 10 * F.mse_loss(linear_rgb, F.avg_pool2d(x, scale_factor))
                + 1e-6 * post.kl().mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        state["seconds"] += time.time() - t0
        state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + time.process_time() - c0
        running.append(loss.item())
        if state["step"] % 200 == 0:
            _log(workdir, stage="vae", step=state["step"], loss=float(np.mean(running)), psnr=psnr(),
                 minutes=state["seconds"] / 60, cpu_minutes=state["cpu_seconds"] / 60)
            running = []
        if time.time() - last_ckpt > 180:
            _save({"model": vae.state_dict(), "colour": colour.state_dict(), "opt": opt.state_dict(), "state": state}, path)
            last_ckpt = time.time()
    if not _stop:
        state["done"] = True
        # scaling_factor: make the latents unit-variance, as SD's 0.18215 does for its VAE.
        vae.eval()
        with torch.no_grad():
            lat = vae.encode(val).latent_dist.mode()
        vae.register_to_config(scaling_factor=float(1 / lat.std()))
        _log(workdir, stage="vae", step=state["step"], psnr=psnr(), scaling_factor=vae.config.scaling_factor, done=True)
    _save({"model": vae.state_dict(), "colour": colour.state_dict(), "opt": opt.state_dict(), "state": state,
           "scaling_factor": vae.config.scaling_factor}, path)


def _ckpt_scale_factor(ckpt: dict) -> int:
    """The VAE scale factor of a vae.pt checkpoint; those from before the option have 8 (`components.VAE_SCALE_FACTOR`)."""
    return ckpt["state"].get("scale_factor", components.VAE_SCALE_FACTOR)


def load_vae(workdir: str):
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
    if tune["step"] >= steps:
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
    last_ckpt, running = time.time(), []

    def save():
        ckpt["model"], ckpt["decoder_opt"] = vae.state_dict(), opt.state_dict()
        _save(ckpt, path)

    while tune["step"] < steps and not _stop:
        t0, c0 = time.time(), time.process_time()
        z, x = noisy_latents(vae, batch_frames, noise, rng, gen)
        loss = _reconstruction_loss(vae.decode(z).sample, x, components.vae_scale_factor(vae))
        for g in opt.param_groups:
            g["lr"] = lr if tune["step"] < steps * 2 / 3 else lr * 0.3
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tune["step"] += 1
        tune["seconds"] += time.time() - t0
        tune["cpu_seconds"] = tune.get("cpu_seconds", 0.0) + time.process_time() - c0
        running.append(loss.item())
        if tune["step"] % 200 == 0:
            _log(workdir, stage="decoder", step=tune["step"], loss=float(np.mean(running)), minutes=tune["seconds"] / 60,
                 cpu_minutes=tune["cpu_seconds"] / 60)
            running = []
        if time.time() - last_ckpt > 180:
            save()
            last_ckpt = time.time()
    save()


# ---------------------------------------------------------------- stage 2: latent cache

def encode_dataset(workdir: str, num_videos: int, seed: int = 0, chunk: int = 64, device: str = "cpu") -> None:
    path = os.path.join(workdir, "latents.pt")
    if os.path.exists(path):
        return
    vae = load_vae(workdir).to(device)
    rng = np.random.default_rng([seed, 2])
    means, stds, clip_ids = [], [], []
    index = {c: i for i, c in enumerate(data.all_clips())}
    t0 = time.time()
    for start in range(0, num_videos, chunk):
        if _stop:  # nothing is saved: the cache is rebuilt from the start next time
            return
        n = min(chunk, num_videos - start)
        videos, _, clips = data.sample_batch(rng, n, "train")
        x = torch.from_numpy(videos.reshape(-1, 64, 64, 3)).permute(0, 3, 1, 2) * 2 - 1  # [n*F, 3, H, W]
        with torch.no_grad():
            post = vae.encode(x.to(device)).latent_dist
        # [n*F, C, h, w] -> [n, C, F, h, w]
        to_video = lambda z: z.reshape(n, data.NUM_FRAMES, *z.shape[1:]).permute(0, 2, 1, 3, 4)
        means.append(to_video(post.mean).half().cpu())
        stds.append(to_video(post.std).half().cpu())
        clip_ids += [index[c] for c in clips]
        if (start // chunk) % 20 == 0:
            print(f"encoded {start + n}/{num_videos} videos ({time.time() - t0:.0f} s)", flush=True)
    _save({"mean": torch.cat(means), "std": torch.cat(stds), "clip": torch.tensor(clip_ids)}, path)
    _log(workdir, stage="latents", videos=num_videos, seconds=time.time() - t0, device=str(device))


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
    """Stage 3. `device`: where the UNet trains ("cpu", "cuda"); the random numbers are drawn on the CPU
    either way, so a run can move between machines and go on with the same batches. `max_minutes`: stop this
    invocation (with a checkpoint) after that many wall-clock minutes; the same command goes on later.
    `decay_steps`: the learning rate's cosine decay to zero over the last that many steps (`unet_lr`).
    `kind`, `channels`: the UNet of a new run (a resumed run keeps its checkpoint's); its sample size is the
    latent cache's."""
    unet_lr(0, steps, lr, decay_steps)  # bad values fail before any work
    path = os.path.join(workdir, "unet.pt")
    device = torch.device(device)
    deadline = None if max_minutes is None else time.time() + 60 * max_minutes
    cache = {k: v.to(device) for k, v in torch.load(os.path.join(workdir, "latents.pt")).items()}
    vae_scale = torch.load(os.path.join(workdir, "vae.pt"), weights_only=False)["scaling_factor"]
    tokenizer = components.build_tokenizer()
    text_encoder = components.build_text_encoder(len(tokenizer), seed)
    ckpt = torch.load(path, weights_only=False, map_location="cpu") if os.path.exists(path) else None
    latent_size = cache["mean"].shape[-1]
    if ckpt is not None:
        kind, channels = _ckpt_kind(ckpt), _ckpt_channels(ckpt)
        if _ckpt_latent_size(ckpt) != latent_size:
            raise ValueError(f"{path} holds a UNet for {_ckpt_latent_size(ckpt)}x{_ckpt_latent_size(ckpt)} latents "
                             f"but the latent cache's are {latent_size}x{latent_size}.")
    unet = components.build_unet(seed, kind, channels, latent_size)
    if warm_start_from and ckpt is None:
        fresh = components.warm_start(unet, _load_unet_weights(warm_start_from))
        print(f"warm start from {warm_start_from}: {len(fresh)} of {len(unet.state_dict())} tensors start fresh")
    scheduler = components.build_scheduler()
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
        unet.load_state_dict(ckpt["unet"])
        text_encoder.load_state_dict(ckpt["text_encoder"])
        ema["unet"].load_state_dict(ckpt["ema_unet"])
        ema["text_encoder"].load_state_dict(ckpt["ema_text_encoder"])
        state = {"unet_kind": kind, "unet_channels": channels, "latent_size": latent_size, **ckpt["state"]}
        if ckpt["opt"] is not None:
            opt.load_state_dict(ckpt["opt"])  # moves the moments to the parameters' device
        elif state["step"] > 0:  # weights without their optimizer (init_from): warm up again
            state["rewarm_from"] = state["step"]
            state["fresh_optimizer_at"] = [*state.get("fresh_optimizer_at", []), state["step"]]
    state.setdefault("seconds_by_device", {"cpu": state["seconds"]})  # runs from before devices trained on the CPU
    state["decay_steps"] = decay_steps  # for the export's record of the recipe

    clips = data.all_clips()
    # Token ids of every caption variant, and of "" for the unconditional branch.
    ids = lambda texts: token_ids(tokenizer, texts)
    caption_ids = torch.stack([ids([data.caption(c, k) for k in range(len(data.TEMPLATES))]) for c in clips])  # [60, T, 77]
    empty_ids = ids([""])[0]
    pred_kind = scheduler.config.prediction_type
    weight = loss_weights(scheduler.alphas_cumprod, weighting, snr_gamma, pred_kind).to(device)  # [1000]

    clip_of = cache["clip"].cpu()  # [N] clip index per cached video, for indexing on the CPU
    probe = caption_probe(cache, vae_scale, tokenizer, scheduler, device)

    gen = torch.Generator().manual_seed(seed * 1000 + state["step"])
    last_ckpt, running = time.time(), []
    unet.train()
    text_encoder.train()
    # EMA of the trained parameters only: frozen ones (the text encoder's by default) equal their EMA already.
    pairs = [(pe, p) for name, live in (("unet", unet), ("text_encoder", text_encoder))
             for pe, p in zip(ema[name].parameters(), live.parameters()) if p.requires_grad]
    ema_params, live_params = [pe for pe, _ in pairs], [p for _, p in pairs]
    while state["step"] < steps and not _stop and (deadline is None or time.time() < deadline):
        if 0 < decay_steps < steps and state["step"] == steps - decay_steps \
                and not os.path.exists(stable_checkpoint_path(workdir)):
            _save_unet(stable_checkpoint_path(workdir), unet, text_encoder, ema, opt, state)
        t0, c0 = time.time(), time.process_time()
        idx = torch.randint(0, len(clip_of), (batch_size,), generator=gen)
        on_device = idx.to(device)
        shape = (batch_size, *cache["mean"].shape[1:])
        x0 = (cache["mean"][on_device].float()
              + cache["std"][on_device].float() * torch.randn(shape, generator=gen).to(device)) * vae_scale
        template = torch.randint(0, len(data.TEMPLATES), (batch_size,), generator=gen)
        input_ids = caption_ids[clip_of[idx], template]  # [B, 77]
        drop = torch.rand(batch_size, generator=gen) < p_uncond
        input_ids[drop] = empty_ids
        input_ids = input_ids.to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen).to(device)
        noisy = scheduler.add_noise(x0, noise, t)
        pred = _unet_out(unet, text_encoder, noisy, t, input_ids)
        per_sample = (pred - _target(scheduler, x0, noise, t)).pow(2).mean(dim=(1, 2, 3, 4))
        loss = (per_sample * weight[t]).mean()
        rate = unet_lr(state["step"], steps, lr, decay_steps, state.get("rewarm_from"))
        for g in opt.param_groups:
            g["lr"] = rate
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(ema_decay, (1 + state["step"]) / (10 + state["step"]))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, live_params, 1 - decay)
        state["step"] += 1
        running.append(loss.detach())  # no .item() per step: an accelerator need not wait for the CPU
        seconds = time.time() - t0
        state["seconds"] += seconds
        state["seconds_by_device"][device.type] = state["seconds_by_device"].get(device.type, 0.0) + seconds
        if device.type == "cpu":  # "CPU-hours" of the recipe: CPU time of the steps that ran on a CPU
            state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + time.process_time() - c0
        if state["step"] % 50 == 0:
            row = {"stage": "unet", "step": state["step"], "loss": torch.stack(running).mean().item(),
                   "minutes": state["seconds"] / 60, "cpu_minutes": state.get("cpu_seconds", 0.0) / 60,
                   "device": device.type, "lr": rate}
            if state["step"] % 250 == 0:
                row.update(probe(ema["unet"], ema["text_encoder"]))
            _log(workdir, **row)
            running = []
        if time.time() - last_ckpt > 600 or _stop or (eval_every and state["step"] % eval_every == 0):
            _save_unet(path, unet, text_encoder, ema, opt, state)
            last_ckpt = time.time()
        if eval_every and state["step"] % eval_every == 0 and not _stop:
            _log(workdir, stage="eval", step=state["step"], cpu_minutes=state.get("cpu_seconds", 0.0) / 60,
                 **sample_accuracy(workdir, device=device))
    _save_unet(path, unet, text_encoder, ema, opt, state)


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
    """Checkpoint on the CPU, so a run trained on a GPU goes on on a machine without one (and back)."""
    cpu = lambda tree: {k: cpu(v) if isinstance(v, dict) else v.cpu() if torch.is_tensor(v) else v for k, v in tree.items()}
    _save(cpu({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(),
               "ema_unet": ema["unet"].state_dict(), "ema_text_encoder": ema["text_encoder"].state_dict(),
               "opt": opt.state_dict(), "state": state}), path)


# ---------------------------------------------------------------- export

FOREGROUND_WEIGHT = 30.0  # preview fit: weight of a latent pixel = 1 + this * its contrast with the background
PREVIEW_LATENT_NOISE = 0.3  # preview fit: std of the noise added to the latents it reads (see fit_preview_factors)
PREVIEW_SOURCE = ("fitted by t2v_nb.toy.train on the VAE's decodes of 256 training frames, weighted to the shapes, "
                  f"reading the latents with noise of std {PREVIEW_LATENT_NOISE} added")
RECIPE_VAE_SCALE_FACTOR = 4  # a new run's VAE: 16x16 latents (the shipped model's; components.VAE_SCALE_FACTOR is 8)


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
        "training": {"unet_steps": ckpt["state"]["step"], "unet_minutes": round(ckpt["state"]["seconds"] / 60, 1),
                     "unet_cpu_minutes": round(ckpt["state"].get("cpu_seconds", 0.0) / 60, 1),
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
    args = p.parse_args(argv)
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
