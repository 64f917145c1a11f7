"""Why a toy-shapes model draws the shapes it does: the measurements behind the toy README's tables.

    python benchmarks/toy_diagnostics.py vae DIR [DIR ...]       # VAE round trip: plain, noisy, blurred latents
    python benchmarks/toy_diagnostics.py onestep DIR [DIR ...]   # the UNet's one-step x0 from noised data latents
    python benchmarks/toy_diagnostics.py calm DIR [DIR ...]      # how far early pred_x0 is from the final video
    python benchmarks/toy_diagnostics.py steps DIR [--seeds N]   # strict accuracy by number of DPM++ steps
    python benchmarks/toy_diagnostics.py words DIR [DIR ...]     # how much the shape word changes a video
    python benchmarks/toy_diagnostics.py unet-decoder DIR --out OUT   # decoder trained on the UNet's outputs
    python benchmarks/toy_diagnostics.py shape-signal DIR [DIR ...]   # how loud shape is in the latents, vs colour
    python benchmarks/toy_diagnostics.py probe WORKDIR [...]      # the training log's word probes, for any checkpoint
    python benchmarks/toy_diagnostics.py shape-pairs WORKDIR [...]  # the shape probe split by pair of shapes
    python benchmarks/toy_diagnostics.py step-speed DIR [DIR ...]     # a UNet training step: fp32, bf16, compiled

DIR: a preset (toy-shapes) or an exported model directory (`python -m t2v_nb.toy.train --export`). Every
figure is the strict evaluator's template IoU with the caption's shape (t2v_nb.toy.evaluate), per shape.
`probe` and `shape-pairs` take training work directories (`python -m t2v_nb.toy.train --workdir`) or UNet
checkpoints in one.
A report, not a test: it prints what it measures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

import t2v_nb
from t2v_nb.toy import components, data, evaluate
from t2v_nb.toy.diagnostics import probe, shape_pairs, step_speed

SAMPLE = slice(0, None, 4)  # 15 of the 60 captions; the clip of caption n is drawn with seed 1000 + n


def _iou_by_shape(pairs) -> dict[str, float]:
    """Mean IoU with the asked-for template per shape, from (clip, video [F, H, W, 3] in [0, 1]) pairs."""
    by = {s: [] for s in data.SHAPES}
    for clip, video in pairs:
        d = evaluate.detect(video)
        by[clip.shape].append(d.iou.get(clip.shape, 0.0) if d.iou else 0.0)
    return {s: round(float(np.mean(v)), 3) for s, v in by.items() if v}


def _frames(pixels: torch.Tensor) -> np.ndarray:
    """VAE output [F, 3, H, W] in [-1, 1] -> [F, H, W, 3] in [0, 1]."""
    return ((pixels.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).float().numpy()


def _data_clips():
    for n, clip in enumerate(data.all_clips()[SAMPLE]):
        yield n, clip, torch.from_numpy(data.render(clip, seed=1000 + n)).permute(0, 3, 1, 2) * 2 - 1


def _blur(z: torch.Tensor, side: float) -> torch.Tensor:
    """A separable 3x3 blur of latents [N, C, h, w] with weights (side, 1 - 2 side, side)."""
    if side == 0:
        return z
    k = torch.tensor([side, 1 - 2 * side, side])
    kernel = (k[:, None] * k[None]).expand(z.shape[1], 1, 3, 3).contiguous()
    return F.conv2d(F.pad(z, (1, 1, 1, 1), mode="replicate"), kernel, groups=z.shape[1])


@torch.no_grad()
def vae(model: str) -> None:
    """Decode the data's own latents: plainly, with Gaussian noise on the scaled latents, and blurred."""
    enc = t2v_nb.load(model).vae.eval()
    sf = enc.config.scaling_factor
    for label, change in [("round trip", lambda z, g: z)] + [
            (f"noise {s}", lambda z, g, s=s: z + s / sf * torch.randn(z.shape, generator=g)) for s in (0.1, 0.2, 0.3)] + [
            (f"blur {b}", lambda z, g, b=b: _blur(z, b)) for b in (0.1, 0.2)]:
        g = torch.Generator().manual_seed(0)
        pairs = [(clip, _frames(enc.decode(change(enc.encode(x).latent_dist.mean, g)).sample))
                 for _, clip, x in _data_clips()]
        print(f"{model}  vae {label:>10}: {_iou_by_shape(pairs)}", flush=True)


@torch.no_grad()
def onestep(model: str, timesteps=(100, 300, 500, 700, 900)) -> None:
    """Noise the data's latents to t, ask the UNet once (caption only, no guidance), decode its x0 guess."""
    pipe = t2v_nb.load(model)
    if pipe.family.name != "modelscope":
        raise SystemExit(f"onestep reads v-prediction UNets (toy-shapes); {model} is {pipe.family.name}")
    alphas = components.build_scheduler().alphas_cumprod
    sf = pipe.vae.config.scaling_factor
    for t in timesteps:
        a = alphas[t]
        pairs = []
        for n, clip, x in _data_clips():
            z = (pipe.vae.encode(x).latent_dist.mean * sf).permute(1, 0, 2, 3)[None]  # [1, C, F, h, w]
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(n))
            xt = a.sqrt() * z + (1 - a).sqrt() * noise
            emb = pipe.encode_text(data.caption(clip), guidance=False).embeddings
            v = pipe.denoiser(xt, torch.tensor([t]), encoder_hidden_states=emb).sample
            x0 = a.sqrt() * xt - (1 - a).sqrt() * v
            pairs.append((clip, _frames(pipe.vae.decode(x0[0].permute(1, 0, 2, 3) / sf).sample)))
        print(f"{model}  one-step x0, t = {t}: {_iou_by_shape(pairs)}", flush=True)


def _mask(video: np.ndarray) -> np.ndarray:
    """Foreground [F, H, W]: far from the border's median colour, relative to the frame's brightest blob."""
    dist, _ = evaluate.background_distance(evaluate._box3(evaluate._as_video(video)))
    level = np.percentile(dist.reshape(len(dist), -1), 99.5, axis=1)
    return dist > np.maximum(0.5 * level, 0.1)[:, None, None]


@torch.no_grad()
def calm(model: str, steps=(0, 1, 2, 3, 4, 9)) -> None:
    """Defaults, 9 captions (every 7th from the second), seed 3000 + n: per step, max |pred_x0|, whether the
    decoded pred_x0's colour is the final video's, and the IoU of its foreground with the final frames'."""
    pipe = t2v_nb.load(model)
    rows = {s: [] for s in steps}
    for n, clip in enumerate(data.all_clips()[1::7]):
        run = pipe.start(data.caption(clip), seed=3000 + n).finish(progress=False)
        final = run.decode().frames
        final_colour, final_mask = evaluate.detect(final).color, _mask(final)
        x0 = run.trace["step.pred_x0"]
        for s in steps:
            guess = pipe.decode_latents(x0[s].to(pipe.device))[0].float().cpu().numpy()
            m = _mask(guess)
            colour = evaluate.detect(guess).color
            rows[s].append((float(x0[s].abs().max()), float(colour is not None and colour == final_colour),
                            float((m & final_mask).sum() / max((m | final_mask).sum(), 1))))
    early = np.array([r for s in steps if s <= 4 for r in rows[s]])
    for label, a in [(f"step {s}", np.array(rows[s])) for s in steps] + [("steps 0-4", early)]:
        print(f"{model}  {label:>9}: max |pred_x0| {a[:, 0].mean():.1f}, colour = final {a[:, 1].mean():.2f}, "
              f"mask IoU with the final frames {a[:, 2].mean():.2f}", flush=True)


def steps(model: str, seeds: int = 1, counts=(4, 6, 8, 10, 12, 20)) -> None:
    """Strict accuracy on all 60 captions, seeds 0..N-1, by number of sampler steps (defaults otherwise)."""
    pipe = t2v_nb.load(model)
    for k in counts:
        t0 = time.time()
        report = evaluate.evaluate(lambda prompt, seed: pipe.generate(prompt, seed=seed, num_inference_steps=k,
                                                                      progress=False).frames,
                                   data.all_clips(), seeds=tuple(range(seeds)), progress=False)
        ious = {s: round(v, 3) for s, v in report.mean_iou().items()}
        a = report.accuracy
        print(f"{model}  {k} steps ({time.time() - t0:.0f} s): joint seen {a['seen']['joint']:.3f}, held out "
              f"{a['held_out']['joint']:.3f}; direction {a['seen']['direction']:.3f} / {a['held_out']['direction']:.3f}; "
              f"colour {a['all']['color']:.3f}; IoU {ious}", flush=True)


@torch.no_grad()
def words(model: str, seed: int = 0) -> None:
    """Per colour and pair of shapes, the mean absolute pixel difference between the two shapes' videos (same
    colour, direction and seed; defaults), averaged over the 4 directions: near 0 means the model draws the
    same video whichever of the two shapes is asked for. (A shift of the path counts too: a crude measure.)"""
    pipe = t2v_nb.load(model)
    pairs = [(a, b) for i, a in enumerate(data.SHAPES) for b in data.SHAPES[i + 1:]]
    for colour in data.COLORS:
        diffs = {pair: [] for pair in pairs}
        for direction in data.DIRECTIONS:
            v = {shape: pipe.generate(data.caption(data.Clip(colour, shape, direction)), seed=seed,
                                      progress=False).frames for shape in data.SHAPES}
            for a, b in pairs:
                diffs[(a, b)].append(float(np.abs(v[a] - v[b]).mean()))
        print(f"{model}  {colour:>6}: mean |video(a) - video(b)| " +
              ", ".join(f"{a}/{b} {np.mean(d):.4f}" for (a, b), d in diffs.items()), flush=True)


def unet_decoder(model: str, out: str, pairs: int = 1600, steps: int = 600, first: int = 6, last: int = 14,
                 lr: float = 3e-4, seed: int = 11) -> None:
    """Train a copy of `model`'s decoder (encoder frozen) on the UNet's own outputs and save the model to `out`.

    Each pair: a training clip, its latents noised to the timestep of sampler step k (k in first..last of the
    model's default steps), denoised from there by the UNet with the clip's caption and no guidance (what
    the default sampler does at those steps), and the clean clip as the target. Half of each batch of 16
    frames is such pairs, half the noisy-latent objective of the recipe's `decoder` stage. Evaluate `out`
    with `python -m t2v_nb.toy.evaluate --model OUT --seeds 3`."""
    import os
    import shutil

    from t2v_nb.models import PRESETS, toy_model_dir
    from t2v_nb.toy.train import _reconstruction_loss, noisy_latents

    pipe = t2v_nb.load(model)
    if pipe.family.name != "modelscope":
        raise SystemExit(f"unet-decoder trains the VAE decoder of a toy-shapes model; {model} is {pipe.family.name}")
    vae, sf = pipe.vae, pipe.vae.config.scaling_factor
    rng = np.random.default_rng(seed)
    t0, zs, xs = time.time(), [], []
    with torch.no_grad():
        for j in range(pairs):
            videos, captions, _ = data.sample_batch(rng, 1, "train")
            run = pipe.start(captions[0], seed=int(rng.integers(2**31)), guidance_scale=1.0, record=None)
            k = int(rng.integers(first, last + 1))
            z0 = pipe.encode_video(videos[0])
            noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31))))
            run.latents, run.i = run.scheduler.add_noise(z0, noise, run.timesteps[k].reshape(1)), k
            run.finish(progress=False)
            zs.append(run.latents[0].permute(1, 0, 2, 3) / sf)  # [F, C, h, w], unscaled
            xs.append(torch.from_numpy(videos[0]).permute(0, 3, 1, 2) * 2 - 1)  # [F, 3, H, W] in [-1, 1]
            if (j + 1) % 200 == 0:
                print(f"{j + 1}/{pairs} pairs ({time.time() - t0:.0f} s)", flush=True)
    Z, X, pair_seconds = torch.cat(zs), torch.cat(xs), time.time() - t0
    vae.requires_grad_(False)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    vae.decoder.train()
    t1, running = time.time(), []
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(Z), 8))
        z, x = noisy_latents(vae, 8, 0.5, rng, gen)  # the recipe's decoder-stage objective
        loss = _reconstruction_loss(vae.decode(torch.cat([Z[idx], z])).sample, torch.cat([X[idx], x]))
        for g in opt.param_groups:
            g["lr"] = lr if step < steps * 2 / 3 else lr * 0.3
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"decoder step {step + 1}/{steps}: loss {np.mean(running):.4f} ({time.time() - t1:.0f} s)", flush=True)
            running = []
    vae.eval().requires_grad_(False)
    if os.path.exists(out):
        shutil.rmtree(out)
    shutil.copytree(toy_model_dir(model) if model in PRESETS else model, out)
    shutil.rmtree(os.path.join(out, "vae"))
    vae.save_pretrained(os.path.join(out, "vae"), safe_serialization=True)
    print(f"{model}: {pairs} pairs in {pair_seconds:.0f} s, {steps} decoder steps in {time.time() - t1:.0f} s; saved {out}")


@torch.no_grad()
def shape_signal(model: str, clips: int = 24) -> None:
    """How much of a video's latents says which shape it is, against how much says which colour: the same clip
    (same seed: same size, place and path) drawn as a circle and as a square, and as a circle of another
    colour (two steps along data.COLORS); the sum of squared differences per frame, in pixels and in the VAE's
    scaled latents. A small shape/colour ratio in the latents means the denoiser's loss hardly asks for the
    shape: a UNet can leave it out for little cost."""
    vae = t2v_nb.load(model).vae.eval()
    colours, directions = list(data.COLORS), list(data.DIRECTIONS)

    def both(clip, seed):
        video = data.render(clip, seed)
        x = torch.from_numpy(video).permute(0, 3, 1, 2) * 2 - 1
        return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor, video

    sums = {"latents": {"shape": 0.0, "colour": 0.0}, "pixels": {"shape": 0.0, "colour": 0.0}}
    for n in range(clips):
        colour, direction = colours[n % 5], directions[n % 4]
        (zc, vc), (zs, vs), (zo, vo) = (both(data.Clip(c, s, direction), n) for c, s in
                                        ((colour, "circle"), (colour, "square"), (colours[(n + 2) % 5], "circle")))
        for space, c, s, o in (("latents", zc.numpy(), zs.numpy(), zo.numpy()), ("pixels", vc, vs, vo)):
            sums[space]["shape"] += float(((c - s) ** 2).sum()) / len(c) / clips
            sums[space]["colour"] += float(((c - o) ** 2).sum()) / len(c) / clips
    size = tuple(zc.shape[1:])
    print(f"{model}  latents {size}: " + "; ".join(
        f"{space} circle/square {v['shape']:.2f}, colour swap {v['colour']:.2f}, ratio {v['shape'] / v['colour']:.3f}"
        for space, v in sums.items()) + " (sum of squares per frame)", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("vae", "onestep", "calm", "steps", "words", "unet-decoder", "probe", "shape-pairs",
                                        "shape-signal", "step-speed"))
    p.add_argument("models", nargs="+", help="presets or model directories (probe, shape-pairs: work directories or "
                                                 "checkpoints)")
    p.add_argument("--seeds", type=int, default=1, help="steps: seeds per caption")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="unet-decoder: where to save the model with the new decoder")
    p.add_argument("--pairs", type=int, default=1600, help="unet-decoder: UNet outputs to train on")
    p.add_argument("--decoder-steps", type=int, default=600, help="unet-decoder: training steps")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for model in args.models:
        if args.what == "steps":
            steps(model, args.seeds)
        elif args.what == "unet-decoder":
            if not args.out:
                p.error("unet-decoder needs --out")
            unet_decoder(model, args.out, pairs=args.pairs, steps=args.decoder_steps)
        else:
            {"vae": vae, "onestep": onestep, "calm": calm, "words": words, "probe": probe,
             "shape-pairs": shape_pairs, "shape-signal": shape_signal, "step-speed": step_speed}[args.what](model)


if __name__ == "__main__":
    main()
