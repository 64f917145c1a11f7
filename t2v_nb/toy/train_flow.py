"""Train toy-shapes-flow (Wan 2.1's classes, tiny) from scratch on moving shapes, on a CPU, resumably.

Three stages, each checkpointed in the work directory; stop with Ctrl-C or SIGTERM and run the same
command again to carry on:

1. ``vae``: `AutoencoderKLWan` learns to reconstruct 5-frame clips (one causal first chunk + one
   4-frame chunk, as its encoder splits them), on 32x32 crops around the shape, then whole frames.
2. ``latents``: a fixed set of 8-frame training videos is encoded once (as 9 frames, the last one
   repeated, keeping the first 8 latent frames; posterior mean and std, of which training uses the mean);
   the per-channel mean and std of the latents go into the VAE config (`latents_mean`/`latents_std`,
   as Wan's VAE has them), so the transformer works on (z - mean) / std.
3. ``transformer``: `WanTransformer3DModel` learns rectified flow (x_s = (1 - s) x0 + s noise, target
   v = noise - x0, timestep = 1000 s) with s drawn uniformly and shifted like the sampling schedule,
   10% empty captions, EMA weights. The text encoder stays frozen at its random init.

The log (``<workdir>/log.jsonl``) records the loss, every 250 steps a direction probe (the loss with the
opposite direction's caption minus the true caption's, at s in [0.9, 1] and at s in [0.4, 0.7]), and every
``--eval-minutes`` of training an accuracy point: WanPipeline on a fixed sample, scored by
`t2v_nb.toy.evaluate`.

Budgets (``--vae-minutes``, ``--transformer-minutes``, ``--eval-minutes``) are budget time: CPU time of the
training steps on a CPU, so a run on a busy shared machine trains as long as one on an idle machine, only later;
wall time on a GPU. The log's ``minutes`` are wall time, ``cpu_minutes`` CPU time and ``budget_minutes`` the
budget's (`t2v_nb.toy._recipe`, whose stage loop, clocks and latent cache both recipes share; rows written before
2026-12-05 have the budget's in ``minutes``). The training loss, for a lesson to call: `flow_loss` at noise levels
from `sample_sigmas`.

    python -m t2v_nb.toy.train_flow --workdir runs/flow4 --threads 2   # the shipped recipe: ~19 CPU-hours
    python -m t2v_nb.toy.train_flow --workdir runs/flow4 --export t2v_nb/toy/weights_flow
    python -m t2v_nb.toy.train_flow --evaluate t2v_nb/toy/weights_flow --seeds 3 --threads 2
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
from . import _recipe, data
from . import flow_components as fc
from ._recipe import Budget, Stop, log as _log, run_stage, save as _save

_stop = Stop()  # set by Ctrl-C or SIGTERM (see main)
# The preset's sampler settings, and Wan's two the export also records (text length, flow shift).
DEFAULTS = {**PRESETS["toy-shapes-flow"].sampler_defaults(), "max_sequence_length": fc.TEXT_LENGTH,
            "flow_shift": fc.SHIFT}
# The fixed accuracy sample: every held-out combination and 18 seen ones, seed 0.
EVAL_CLIPS = data.held_out_clips() + data.seen_clips()[::3]


def to_model_space(vae, z: torch.Tensor) -> torch.Tensor:
    """VAE latents [B, C, F, h, w] -> the transformer's (z - latents_mean) / latents_std."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return (z - mean) / std


# ---------------------------------------------------------------- stage 1: VAE

def _vae_loss(vae, x: torch.Tensor, colour: torch.nn.Linear | None = None) -> torch.Tensor:
    """Reconstruction loss of clips [B, 3, F, h, w] in [-1, 1]; colour (block means, one block per latent
    pixel) weighted up.

    With `colour` (a Linear from the latent channels to RGB, trained with the VAE), also the error of a
    linear read-out of each latent pixel's colour: it makes the latents linearly colour-decodable, as
    Stable Diffusion's happen to be, so a linear preview shows the shapes in their colours."""
    post = vae.encode(x).latent_dist
    z = post.mode()  # [B, C, F, h/s, w/s]: no temporal compression
    rec = vae.decode(z).sample  # [B, 3, F, h, w]
    flat = lambda v: v.transpose(1, 2).flatten(0, 1)  # [B*F, 3, h, w]
    target = F.avg_pool2d(flat(x), fc.SPATIAL)  # [B*F, 3, h/s, w/s]
    low = F.mse_loss(F.avg_pool2d(flat(rec), fc.SPATIAL), target)
    loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 10 * low + 1e-6 * post.kl().mean()
    if colour is not None:
        linear_rgb = colour(flat(z).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # [B*F, 3, h/s, w/s]
        loss = loss + 10 * F.mse_loss(linear_rgb, target)
    return loss


def _to_clips(videos: np.ndarray) -> torch.Tensor:
    """[N, F, H, W, 3] in [0, 1] -> [N, 3, F, H, W] in [-1, 1]."""
    return torch.from_numpy(videos).permute(0, 4, 1, 2, 3) * 2 - 1


def _padded(clips: torch.Tensor) -> torch.Tensor:
    """[N, 3, F, H, W] -> [N, 3, 4k + 1, H, W], the last frame repeated: Wan's encoder reads the frames in
    chunks (1, then 4 at a time) and drops a partial last chunk."""
    extra = (1 - clips.shape[2]) % 4
    return torch.cat([clips, clips[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)


def _device_of(module) -> torch.device:
    return next(module.parameters()).device


@torch.no_grad()
def reconstruct(vae, clips: torch.Tensor) -> torch.Tensor:
    """The VAE's round trip of clips [N, 3, F, H, W] in [-1, 1] (on the VAE's device; result on the CPU)."""
    dev = _device_of(vae)
    x = _padded(clips.to(dev))
    return vae.decode(vae.encode(x).latent_dist.mode()).sample[:, :, :clips.shape[2]].float().cpu()


def vae_psnr(vae, clips: torch.Tensor) -> float:
    vae.eval()
    rec = reconstruct(vae, clips)
    vae.train()
    return 10 * math.log10(1 / ((rec - clips) / 2).pow(2).mean().item())


def vae_pass_rate(vae, seeds=(0,)) -> dict:
    """The strict evaluator on the VAE's round trips of rendered clips (all 60 captions): the most a
    transformer on these latents can reach. Returns the report's accuracy and mean IoU per shape."""
    from . import evaluate

    def round_trip(prompt: str, seed: int) -> np.ndarray:
        video = data.render(data.parse_caption(prompt), seed=1000 + seed)  # [F, H, W, 3]
        rec = reconstruct(vae, _to_clips(video[None]))[0]  # [3, F, H, W]
        return ((rec.clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).numpy()

    was_training = vae.training
    vae.eval()
    report = evaluate.evaluate(round_trip, seeds=seeds, progress=False)
    vae.train(was_training)
    return {"joint": report.accuracy["all"]["joint"], "shape": report.accuracy["all"]["shape"],
            "iou": {k: round(v, 3) for k, v in report.mean_iou().items()}}


class _Batches(torch.utils.data.Dataset):
    """Item k is `make(start + k)`: lets a DataLoader's worker processes render a stage's batches ahead of a
    GPU (each batch depends on its index only, so the data are the same with any number of workers)."""

    def __init__(self, make, start: int, count: int = 10**9):
        self.make, self.start, self.count = make, start, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int):
        return self.make(self.start + k)


def _batches(make, start: int, workers: int, count: int = 10**9):
    """Batches make(start), make(start + 1), ...; rendered by `workers` processes ahead of use (0: inline)."""
    if workers == 0:
        return (make(k) for k in range(start, start + count))
    return iter(torch.utils.data.DataLoader(_Batches(make, start, count), batch_size=None, num_workers=workers,
                                            prefetch_factor=4, persistent_workers=False))


def _upgrade_state(state: dict) -> dict:
    """A stage's state in `_recipe`'s keys, one meaning each. Checkpoints written before 2026-12-05 kept the
    budget's clock in "seconds"; it becomes "budget_seconds" (and "cpu_seconds" for a run that trained on the
    CPU only, where it was CPU time). Their wall time was not measured: "seconds" counts the steps after
    "untimed_steps"."""
    if "budget_seconds" not in state:
        budget = state.pop("seconds", 0.0)
        state.update(budget_seconds=budget, seconds=0.0, untimed_steps=state["step"])
        if set(state.get("where", ["cpu"])) == {"cpu"}:
            state["cpu_seconds"] = budget
    return state


def _vae_batch(seed: int, step: int, batch: int, whole: bool) -> torch.Tensor:
    """The VAE's training clips of step `step`: 5 frames (1 + 4, the encoder's chunks), [B, 3, 5, H, W] in
    [-1, 1]; 32x32 crops around the shape, or whole 64x64 frames (half as many clips) when `whole`."""
    rng = np.random.default_rng([seed, 1, step])
    videos = data.sample_batch(rng, batch // 2 if whole else batch, "all", 5)[0]
    if not whole:  # around the shape's place in any frame
        masks = np.abs(videos - videos[:, :, :1, :1]).sum(-1).max(1) > 0.2  # [N, H, W]
        videos = _recipe.crops_around(videos, masks, rng, grid=fc.SPATIAL)
    return _to_clips(videos)


def train_vae(workdir: str, minutes: float, batch: int = 12, lr: float = 1e-3, seed: int = 0,
              device: str = "cpu", whole: bool = False, workers: int = 0) -> None:
    """Stage 1: `minutes` of budget time in all (`_recipe`: CPU time on a CPU, wall time on a GPU), the learning
    rate 0.3x after two thirds of it. `whole`: whole frames throughout (on a GPU; on a CPU crops until the last
    10% of the budget). `workers`: processes that render the batches ahead (`_batches`)."""
    path, device = os.path.join(workdir, "vae.pt"), torch.device(device)
    vae = fc.build_vae(seed)
    # The linear colour read-out (see _vae_loss). Runs started before it existed carry on without it.
    colour = torch.nn.Linear(vae.config.z_dim, 3)
    state = {"step": 0, "seconds": 0.0, "budget_seconds": 0.0, "done": False, "colour": True}
    ckpt = _recipe.load(path)
    if ckpt is not None:
        state = _upgrade_state(ckpt["state"])
        if "colour" in ckpt:
            colour.load_state_dict(ckpt["colour"])
    with_colour = state.get("colour", False)
    vae.to(device), colour.to(device)
    params = list(vae.parameters()) + (list(colour.parameters()) if with_colour else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if ckpt is not None:
        vae.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])

    def save() -> None:
        _save({"model": vae.state_dict(), "opt": opt.state_dict(), "state": state,
               **({"colour": colour.state_dict()} if with_colour else {})}, path)
    budget, cached = Budget(minutes=minutes), os.path.exists(os.path.join(workdir, _recipe.LATENTS))
    if state["done"] and (cached or not budget.left(state)):
        return  # a larger --vae-minutes carries a finished VAE on, but only before the latent cache exists
    state.setdefault("where", []).append(device.type)
    val = _to_clips(data.sample_batch(np.random.default_rng([seed, 99]), 4, "all", fc.NUM_FRAMES)[0])
    vae.train()
    batches = _batches(lambda k: (k, _vae_batch(seed, k, batch, True)), state["step"], workers) if whole else None

    def step() -> float:
        if batches is not None:
            k, x = next(batches)
            assert k == state["step"]
        else:  # the last 10% on whole 64x64 frames (edges)
            x = _vae_batch(seed, state["step"], batch, state["budget_seconds"] > minutes * 60 * 0.9)
        loss = _vae_loss(vae, x.to(device), colour if with_colour else None)
        _recipe.optimizer_step(opt, loss, lr if state["budget_seconds"] < minutes * 40 else lr * 0.3)
        return loss.item()

    run_stage(workdir, "vae", state, step, budget=budget, device=device, save=save, stop=_stop, log_every=100,
              row=lambda: {"psnr": vae_psnr(vae, val)} if state["step"] % 500 == 0 else {})
    state["done"] = state["done"] or not _stop
    save()
    if state["done"] and not _stop:
        _log(workdir, stage="vae", step=state["step"], psnr=vae_psnr(vae, val), done=True,
             round_trip=vae_pass_rate(vae))


STATS = "latent_stats.json"  # the cache's per-channel mean and std, small enough to carry between machines


def load_vae(workdir: str):
    """The trained VAE, with latents_mean/std from the latent cache once it exists."""
    vae = fc.build_vae()
    vae.load_state_dict(torch.load(os.path.join(workdir, "vae.pt"), weights_only=False, map_location="cpu")["model"])
    stats_path, cache = os.path.join(workdir, STATS), os.path.join(workdir, "latents.pt")
    stats = None
    if os.path.exists(stats_path):
        with open(stats_path) as f:
            stats = json.load(f)
    elif os.path.exists(cache):
        stats = torch.load(cache)
    if stats is not None:
        vae.register_to_config(latents_mean=stats["latents_mean"], latents_std=stats["latents_std"])
    return vae.eval().requires_grad_(False)


# ---------------------------------------------------------------- stage 2: latent cache

def _cache_chunk(seed: int, k: int, chunk: int, num_videos: int):
    """Chunk k of the cache's training videos: ([n, 3, F, H, W] clips, clip indices), from its own seed."""
    n = min(chunk, num_videos - k * chunk)
    videos, _, clips = data.sample_batch(np.random.default_rng([seed, 2, k]), n, "train", fc.NUM_FRAMES)
    index = {c: i for i, c in enumerate(data.all_clips())}
    return _to_clips(videos), [index[c] for c in clips]


def encode_dataset(workdir: str, num_videos: int, seed: int = 0, chunk: int = 32, device: str = "cpu",
                   workers: int = 0) -> None:
    """Stage 2: `num_videos` 8-frame training videos encoded (as 9 frames, see `_padded`) into <workdir>/latents.pt
    (`_recipe.encode_dataset`), with the per-channel mean and std of the latent means, also in latent_stats.json;
    nothing to do where the cache exists."""
    if os.path.exists(os.path.join(workdir, _recipe.LATENTS)):
        return
    device = torch.device(device)
    vae = load_vae(workdir).to(device)
    chunks = _batches(lambda k: _cache_chunk(seed, k, chunk, num_videos), 0, workers, -(-num_videos // chunk))

    def encode(clips: torch.Tensor):
        post = vae.encode(_padded(clips)).latent_dist  # [n, C, F + 1, h, w]
        # causal: frame k's latent sees frames <= k only
        return post.mean[:, :, :fc.NUM_FRAMES], post.std[:, :, :fc.NUM_FRAMES]

    def stats(mean: torch.Tensor) -> dict:
        ch_mean = mean.float().mean(dim=(0, 2, 3, 4))  # [C]
        ch_std = mean.float().transpose(0, 1).flatten(1).std(dim=1)  # [C]
        return {"latents_mean": ch_mean.tolist(), "latents_std": ch_std.tolist()}

    cache = _recipe.encode_dataset(workdir, chunks, encode, num_videos, _stop, device, extra=stats)
    if cache is not None:
        with open(os.path.join(workdir, STATS), "w") as f:
            json.dump({k: cache[k] for k in ("latents_mean", "latents_std")}, f)


# ---------------------------------------------------------------- stage 3: transformer

def make_pipeline(vae, transformer, tokenizer=None, text_encoder=None):
    """diffusers' own WanPipeline around the toy's parts (what `--export` writes)."""
    from diffusers import WanPipeline

    tokenizer = tokenizer or fc.build_tokenizer()
    text_encoder = text_encoder or fc.build_text_encoder(len(tokenizer))
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=fc.build_scheduler(),
                       transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, prompt: str, seed: int, **overrides) -> np.ndarray:
    """One video [F, H, W, 3] in [0, 1] with the toy's defaults, through WanPipeline itself."""
    kw = {k: DEFAULTS[k] for k in ("height", "width", "num_inference_steps", "guidance_scale", "max_sequence_length")}
    kw.update(overrides)
    # WanPipeline turns num_frames n into n + 1 when the VAE has no temporal compression (see flow_components).
    num_frames = kw.pop("num_frames", DEFAULTS["num_frames"]) - 1
    out = pipe(prompt, num_frames=num_frames, generator=torch.Generator().manual_seed(seed), output_type="np",
               **kw).frames[0]
    return np.asarray(out, np.float32)


def text_table(pipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings as WanPipeline makes them (trimmed to the real length, zero-padded) for every caption
    variant [60, T, L, D] and for "" [L, D]."""
    texts = [data.caption(c, k) for c in data.all_clips() for k in range(len(data.TEMPLATES))]
    with torch.no_grad():
        emb = pipe._get_t5_prompt_embeds(texts + [""], max_sequence_length=fc.TEXT_LENGTH, device=torch.device("cpu"))
    return emb[:-1].reshape(60, len(data.TEMPLATES), *emb.shape[1:]), emb[-1]


def shifted_sigmas(u: torch.Tensor, shift: float = fc.SHIFT) -> torch.Tensor:
    """Uniform u in [0, 1] -> noise level s, shifted towards 1 as the sampling schedule is."""
    return shift * u / (1 + (shift - 1) * u)


def sample_sigmas(batch_size: int, generator: torch.Generator | None = None, shift: float = fc.SHIFT,
                  device=None) -> torch.Tensor:
    """The training noise levels of a batch, as `train_transformer` draws them: s = `shifted_sigmas` of u uniform
    in [0, 1), on `generator`'s device (or `device`). [batch_size], float32

        >>> s = train_flow.sample_sigmas(4, torch.Generator().manual_seed(0))
    """
    return shifted_sigmas(torch.rand(batch_size, generator=generator, device=device), shift)


def flow_loss(model, x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """The transformer stage's training loss (rectified flow), as `train_transformer` computes it.

    x_s = (1 - s) x0 + s noise; the transformer, given x_s, the timestep 1000 s and the caption's embeddings,
    predicts the velocity v = noise - x0, the same at every s; the loss is the mean squared error over the
    whole batch, every noise level weighted alike.

    Args:
        model: the toy's WanTransformer3DModel.
        x0: clean latents in model space, (z - latents_mean) / latents_std (`to_model_space`). [B, C, F, h, w]
        noise: Gaussian noise like x0.
        s: noise levels in [0, 1] (`sample_sigmas`). [B]
        emb: the text encoder's embeddings as WanPipeline makes them (`text_table`). [B, L, D]

    Returns:
        A scalar tensor that gradients flow through.
    """
    sv = s.view(-1, 1, 1, 1, 1)
    xs = (1 - sv) * x0 + sv * noise
    pred = model(xs, s * 1000, encoder_hidden_states=emb, return_dict=False)[0]
    return (pred - (noise - x0)).pow(2).mean()


def _opposite(clip: data.Clip) -> data.Clip:
    flip = {"left": "right", "right": "left", "up": "down", "down": "up"}
    return data.Clip(clip.color, clip.shape, flip[clip.direction])


class Probe:
    """Does the model use the direction word? Loss with the true caption vs the opposite direction's,
    on a fixed batch, at high noise (s in [0.9, 1], where the layout is decided) and mid noise."""

    def __init__(self, x0: torch.Tensor, clips: list[data.Clip], table: torch.Tensor):
        g = torch.Generator().manual_seed(1234)
        index = {c: i for i, c in enumerate(data.all_clips())}
        self.x0 = x0  # [B, C, F, h, w], model space
        self.noise = torch.randn(x0.shape, generator=g)
        self.bands = {"high": 0.9 + 0.1 * torch.rand(len(x0), generator=g),
                      "mid": 0.4 + 0.3 * torch.rand(len(x0), generator=g)}
        self.true = table[[index[c] for c in clips], 0]
        self.flip = table[[index[_opposite(c)] for c in clips], 0]

    def to(self, device) -> "Probe":
        for name in ("x0", "noise", "true", "flip"):
            setattr(self, name, getattr(self, name).to(device))
        self.bands = {k: v.to(device) for k, v in self.bands.items()}
        return self

    @torch.no_grad()
    def __call__(self, model) -> dict:
        row = {}
        for band, s in self.bands.items():
            l_true = flow_loss(model, self.x0, self.noise, s, self.true).item()
            l_flip = flow_loss(model, self.x0, self.noise, s, self.flip).item()
            row[f"probe_loss_{band}"] = l_true
            row[f"direction_gap_{band}"] = (l_flip - l_true) / l_true  # relative; > 0: the word is used
        return row


def accuracy_point(pipe, seeds=(0,)) -> dict:
    """Colour / shape / direction accuracy on the fixed sample (EVAL_CLIPS), by t2v_nb.toy.evaluate."""
    from . import evaluate

    report = evaluate.evaluate(lambda p, s: generate(pipe, p, s), EVAL_CLIPS, seeds, progress=False)
    acc = report.accuracy
    return {f"acc_{g}_{a}": acc[g][a] for g in ("seen", "held_out") for a in ("color", "shape", "direction", "joint")}


def _load_transformer_ckpt(path: str, model, ema, opt) -> dict:
    ckpt = torch.load(path, weights_only=False, map_location="cpu")
    model.load_state_dict(ckpt["model"])
    ema.load_state_dict(ckpt["ema"])
    opt.load_state_dict(ckpt["opt"])
    return _upgrade_state(ckpt["state"])


def _lr_factor(step: int, fraction: float, warmup: int = 300, decay: float = 0.3) -> float:
    """Linear warm-up over `warmup` steps, constant, then a linear fall to 0.1 over the last `decay` of the
    budget (`fraction`: the share of it spent)."""
    return min(1.0, (step + 1) / warmup) * max(0.1, min(1.0, (1 - fraction) / decay))


def _flow_batch(mean, clip_ids, table, empty, step: int, batch_size: int, seed: int, p_uncond: float):
    """Step `step`'s batch, all on mean's device: clean latents, caption embeddings (10% empty), noise, s."""
    dev = mean.device
    g = torch.Generator(dev).manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(0, len(mean), (batch_size,), generator=g, device=dev)
    x0 = mean[idx].float()
    template = torch.randint(0, len(data.TEMPLATES), (batch_size,), generator=g, device=dev)
    emb = table[clip_ids[idx], template]
    emb[torch.rand(batch_size, generator=g, device=dev) < p_uncond] = empty
    s = sample_sigmas(batch_size, g, device=dev)
    return x0, emb, torch.randn(x0.shape, generator=g, device=dev), s


def train_transformer(workdir: str, minutes: float, batch_size: int = 32, lr: float = 5e-4, seed: int = 0,
                      p_uncond: float = 0.1, ema_decay: float = 0.999, eval_minutes: float = 30.0,
                      device: str = "cpu") -> None:
    """Stage 3: `minutes` of budget time in all (`_recipe`), the learning rate as `_lr_factor` says; every
    `eval_minutes` of it an accuracy point (on a CPU only)."""
    path, device = os.path.join(workdir, "transformer.pt"), torch.device(device)
    cache = torch.load(os.path.join(workdir, _recipe.LATENTS))
    vae = load_vae(workdir)
    model = fc.build_transformer(seed).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    state = {"step": 0, "seconds": 0.0, "budget_seconds": 0.0, "next_eval": eval_minutes * 60}
    if os.path.exists(path):
        state = _load_transformer_ckpt(path, model, ema, opt)
    state.setdefault("where", []).append(device.type)
    pipe = make_pipeline(vae, ema)
    table, empty = text_table(pipe)  # [60, T, L, D], [L, D]
    # The posterior means only: the decoder was trained on them (mode()), and with a KL weight of 1e-6 the
    # posterior std is barely trained, so samples from it would bury the layout in noise.
    mean = to_model_space(vae, cache["mean"].float()).half()  # [N, C, F, h, w]
    clips = data.all_clips()
    probe_idx = torch.randint(0, len(mean), (32,), generator=torch.Generator().manual_seed(99))
    probe = Probe(mean[probe_idx].float(), [clips[int(i)] for i in cache["clip"][probe_idx]], table)
    probe.to(device)
    mean, clip_ids, table, empty = mean.to(device), cache["clip"].to(device), table.to(device), empty.to(device)
    params, ema_params = list(model.parameters()), list(ema.parameters())

    def step() -> torch.Tensor:
        x0, emb, noise, s = _flow_batch(mean, clip_ids, table, empty, state["step"], batch_size, seed, p_uncond)
        loss = flow_loss(model, x0, noise, s, emb)
        _recipe.optimizer_step(opt, loss, lr * _lr_factor(state["step"], state["budget_seconds"] / (minutes * 60)),
                               clip=params)
        _recipe.ema_update(ema_params, params, state["step"], ema_decay)
        return loss.detach()

    def row() -> dict:
        out = {"lr": opt.param_groups[0]["lr"]} | (probe(ema) if state["step"] % 250 == 0 else {})
        if device.type == "cpu" and state["budget_seconds"] >= state["next_eval"]:
            out.update(accuracy_point(pipe))
            state["next_eval"] += eval_minutes * 60
        return out

    def save() -> None:
        _save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "state": state}, path)
    model.train()
    run_stage(workdir, "transformer", state, step, budget=Budget(minutes=minutes), device=device, save=save,
              stop=_stop, log_every=50, row=row)
    save()


# ---------------------------------------------------------------- export

def load_pipeline(workdir: str):
    """WanPipeline with the work directory's EMA transformer, and its training state."""
    ckpt = torch.load(os.path.join(workdir, "transformer.pt"), weights_only=False, map_location="cpu")
    transformer = fc.build_transformer()
    transformer.load_state_dict(ckpt["ema"])
    return make_pipeline(load_vae(workdir), transformer.eval()), _upgrade_state(ckpt["state"])


def export(workdir: str, out: str) -> None:
    """Write the EMA weights in WanPipeline's diffusers layout, with t2v_nb defaults and preview factors."""
    pipe, state = load_pipeline(workdir)
    pipe.save_pretrained(out, safe_serialization=True)
    index_path = os.path.join(out, "model_index.json")
    with open(index_path) as f:
        index = json.load(f)
    vae_state = _upgrade_state(_recipe.load(os.path.join(workdir, "vae.pt"))["state"])
    index["_t2v_nb"] = ("toy-shapes-flow: Wan 2.1's classes (WanTransformer3DModel, AutoencoderKLWan, UMT5), tiny, "
                        "trained with rectified flow on moving shapes")
    index["t2v_nb_defaults"] = dict(DEFAULTS, diffusers_num_frames=DEFAULTS["num_frames"] - 1)
    index["training"] = {"transformer_steps": state["step"], **_recipe.minutes_record("transformer", state),
                         "vae_steps": vae_state["step"], **_recipe.minutes_record("vae", vae_state),
                         "minutes": _recipe.MINUTES,
                         "where": {"vae": sorted(set(vae_state.get("where", ["cpu"]))),
                                   "transformer": sorted(set(state.get("where", ["cpu"])))}}
    with open(index_path, "w") as f:
        json.dump(index, f, indent=2)
    preview = fit_preview(pipe.vae)
    preview.save(os.path.join(out, "preview.json"))
    print(f"exported to {out}: {index['training']}; preview {preview.source}")


def _preview_data(vae, n: int, seed: int):
    """Model-space latents [N, C, F, h, w], the decoded colours per latent pixel [P, 3] and each latent
    pixel's share of shape pixels [P] (pixels far from the frame's border colour)."""
    videos = data.sample_batch(np.random.default_rng(seed), n, "all", fc.NUM_FRAMES)[0]
    with torch.no_grad():
        z = vae.encode(_padded(_to_clips(videos))).latent_dist.mode()[:, :, :fc.NUM_FRAMES]
        frames = (vae.decode(z).sample / 2 + 0.5).clamp(0, 1)  # [N, 3, F, H, W]
    flat = frames.transpose(1, 2).flatten(0, 1)  # [N*F, 3, H, W]
    border = torch.cat([flat[..., 0, :], flat[..., -1, :], flat[..., 0], flat[..., -1]], dim=-1).median(-1).values
    shape = ((flat - border[..., None, None]).norm(dim=1, keepdim=True) > 0.15).float()  # [N*F, 1, H, W]
    h = z.shape[-1]
    colour = F.adaptive_avg_pool2d(flat * shape, h) / F.adaptive_avg_pool2d(shape, h).clamp(min=1e-6)
    colour = torch.where(F.adaptive_avg_pool2d(shape, h) > 0, colour, F.adaptive_avg_pool2d(flat, h))
    share = F.adaptive_avg_pool2d(shape, h)  # [N*F, 1, h, w]
    zm = to_model_space(vae, z)
    return zm, colour.permute(0, 2, 3, 1).reshape(-1, 3), share.reshape(-1)


def _hue_sat(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hue in degrees and HSV saturation of [P, 3] colours in [0, 1]."""
    import colorsys

    hsv = np.array([colorsys.rgb_to_hsv(*c) for c in np.clip(rgb, 0, 1)])
    return hsv[:, 0] * 360, hsv[:, 1]


def check_preview(preview, vae, n: int = 16, seed: int = 8) -> dict:
    """Hue error (degrees) and saturation of the preview on latent pixels mostly covered by the shape."""
    zm, colour, share = _preview_data(vae, n, seed)
    rgb = preview(zm).reshape(-1, 3)  # [P, 3]
    keep = (share > 0.5).numpy()
    hue_p, sat_p = _hue_sat(rgb[keep])
    hue_d, sat_d = _hue_sat(colour.numpy()[keep])
    err = np.abs((hue_p - hue_d + 180) % 360 - 180)
    coloured = sat_d > 0.3  # white shapes have no hue to compare
    return {"pixels": int(keep.sum()), "hue_error_median": float(np.median(err[coloured])),
            "hue_within_30": float(np.mean(err[coloured] <= 30)), "saturation_median": float(np.median(sat_p[coloured])),
            "decoded_saturation_median": float(np.median(sat_d[coloured]))}


def fit_preview(vae, n: int = 48, seed: int = 7):
    """Linear latent -> RGB factors on model-space latents (z - latents_mean) / latents_std, fitted by
    weighted least squares to the VAE's own decodes: the shape's colour per latent pixel (weight 1 where
    the shape covers over half of it) against the background (weight 0.05), so the dark background,
    most of every frame, does not wash the shapes' colours out."""
    from ..preview import least_squares

    zm, colour, share = _preview_data(vae, n, seed)
    X = zm.permute(0, 2, 3, 4, 1).reshape(-1, zm.shape[1]).numpy()  # [P, C]
    preview = least_squares(X, colour.numpy(), "toy-shapes-flow VAE, fitted on model-space latents (z - latents_mean) / "
                            "latents_std", weights=np.where(share.numpy() > 0.5, 1.0, 0.05))
    check = check_preview(preview, vae)
    preview.source += f"; check on fresh videos: {json.dumps(check)}"
    return preview


def evaluate_dir(model_dir: str, seeds: int = 3, json_path: str | None = None, **overrides):
    """Score an exported model with diffusers' WanPipeline on all 60 captions x `seeds` seeds."""
    from diffusers import WanPipeline

    from . import evaluate

    pipe = WanPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.time()
    report = evaluate.evaluate(lambda p, s: generate(pipe, p, s, **overrides), seeds=range(seeds), progress=False)
    print(report.summary())
    print(f"{report.counts['all']} videos in {time.time() - t0:.0f} s, settings {dict(DEFAULTS, **overrides)}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"settings": dict(DEFAULTS, **overrides), **report.to_dict()}, f, indent=1)
    return report


def benchmark(model_dir: str, repeats: int = 5) -> float:
    """Median seconds for one default video (8 frames, 64x64, decode included) with WanPipeline."""
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    generate(pipe, "a red circle moving right", 0)  # warm-up
    times = []
    for k in range(repeats):
        t0 = time.perf_counter()
        generate(pipe, "a red circle moving right", k)
        times.append(time.perf_counter() - t0)
    print(f"one default video: median {np.median(times):.3f} s of {repeats} ({torch.get_num_threads()} threads)")
    return float(np.median(times))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Budgets (--*-minutes) are budget time in "
                                "all, across resumptions: CPU time of the training steps on a CPU (all threads), wall "
                                "time on a GPU. The log's minutes are wall time, cpu_minutes CPU time, budget_minutes "
                                "the budget's (t2v_nb.toy._recipe).")
    p.add_argument("--workdir", default="runs/flow")
    p.add_argument("--vae-minutes", type=float, default=240, help="VAE budget, minutes of budget time")
    p.add_argument("--vae-batch", type=int, default=12, help="5-frame clips per VAE step")
    p.add_argument("--transformer-minutes", type=float, default=900,
                   help="transformer budget, minutes of budget time across resumptions")
    p.add_argument("--num-videos", type=int, default=4000, help="videos in the latent cache")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--eval-minutes", type=float, default=8, help="budget minutes between accuracy points (on a CPU)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (budgets are then wall time)")
    p.add_argument("--vae-whole", action="store_true", help="whole frames for the whole VAE stage (a GPU's choice)")
    p.add_argument("--workers", type=int, default=0, help="processes that render training videos ahead of a GPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", metavar="DIR", help="write the model in WanPipeline's diffusers layout and exit")
    p.add_argument("--evaluate", metavar="DIR", help="score an exported model (WanPipeline) on all 60 captions")
    p.add_argument("--seeds", type=int, default=3, help="seeds per caption for --evaluate")
    p.add_argument("--json", help="--evaluate also writes its report here")
    p.add_argument("--benchmark", metavar="DIR", help="time one default video of an exported model")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # WanPipeline warns on every call that it rounds num_frames
    os.makedirs(args.workdir, exist_ok=True)
    if args.export or args.evaluate or args.benchmark:
        if args.export:
            export(args.workdir, args.export)
        if args.evaluate:
            evaluate_dir(args.evaluate, args.seeds, args.json)
        if args.benchmark:
            benchmark(args.benchmark)
        return
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # the VAE's 3-D convolutions, at fixed shapes
        torch.backends.cuda.matmul.allow_tf32 = True
    _stop.install()
    train_vae(args.workdir, args.vae_minutes, batch=args.vae_batch, seed=args.seed, device=args.device,
              whole=args.vae_whole, workers=args.workers)
    if not _stop:
        encode_dataset(args.workdir, args.num_videos, seed=args.seed, device=args.device, workers=args.workers)
    if not _stop:
        train_transformer(args.workdir, args.transformer_minutes, batch_size=args.batch_size, lr=args.lr,
                          seed=args.seed, eval_minutes=args.eval_minutes, device=args.device)


if __name__ == "__main__":
    main()
