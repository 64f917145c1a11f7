"""Why a toy-shapes model draws the shapes it does: the measurements behind the toy README's tables.

    python benchmarks/toy_diagnostics.py vae DIR [DIR ...]       # VAE round trip: plain, noisy, blurred latents
    python benchmarks/toy_diagnostics.py onestep DIR [DIR ...]   # the UNet's one-step x0 from noised data latents
    python benchmarks/toy_diagnostics.py calm DIR [DIR ...]      # how far early pred_x0 is from the final video
    python benchmarks/toy_diagnostics.py steps DIR [--seeds N]   # strict accuracy by number of DPM++ steps

DIR: a preset (toy-shapes) or an exported model directory (`python -m t2v_nb.toy.train --export`). Every
figure is the strict evaluator's template IoU with the caption's shape (t2v_nb.toy.evaluate), per shape.
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("vae", "onestep", "calm", "steps"))
    p.add_argument("models", nargs="+", help="presets or model directories")
    p.add_argument("--seeds", type=int, default=1, help="steps: seeds per caption")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for model in args.models:
        if args.what == "steps":
            steps(model, args.seeds)
        else:
            {"vae": vae, "onestep": onestep, "calm": calm}[args.what](model)


if __name__ == "__main__":
    main()
