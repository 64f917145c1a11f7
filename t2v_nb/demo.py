"""The main job: generate a few toy videos with the stepwise pipeline and write everything to a folder.

    python -m t2v_nb.demo --out outputs

For each prompt it writes `<name>.mp4`, `<name>.mp4.json` (the run record: prompt, seed, every parameter,
library versions), and `<name>_pred_x0.png` (the model's guess of the clean video at every step, one
row per step, one column per frame); with `--html` also `<name>.html`, the run as one web page to scrub in any
browser (`Run.to_html`). Runs offline on a CPU with the bundled toy-shapes model, then makes
one more video of the first prompt with the bundled diffusion-transformer toy, toy-shapes-flow
(`flow_<name>.*`), for comparison.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

PROMPTS = [
    "a red circle moving right",
    "a blue square moving up",
    "a yellow triangle moving left",
    "a green circle moving left",  # a combination the toy model never saw in training
]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Generate toy videos with t2v_nb and write them to a folder.")
    p.add_argument("--out", default="outputs", help="folder to write to (created if missing)")
    p.add_argument("--model", default="toy-shapes", help="preset, hub id or local model directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompt", action="append", help="a prompt (repeatable); default: four toy prompts")
    p.add_argument("--guidance-scale", type=float, help="instead of the model's default")
    p.add_argument("--flow-model", default="toy-shapes-flow",
                   help="also make the first prompt with this model, as flow_<name>.* (\"\" for none)")
    p.add_argument("--overwrite", action="store_true", help="replace files from an earlier demo")
    p.add_argument("--html", action="store_true",
                   help="also write <name>.html: the run as one web page to scrub in any browser (with word maps)")
    args = p.parse_args(argv)

    import t2v_nb

    os.makedirs(args.out, exist_ok=True)
    prompts = args.prompt or PROMPTS
    jobs = [(args.model, prompts, "")]
    if args.flow_model:
        jobs.append((args.flow_model, prompts[:1], "flow_"))
    for model, model_prompts, prefix in jobs:
        t0 = time.time()
        pipe = t2v_nb.load(model)
        print(f"loaded {pipe} in {time.time() - t0:.1f} s")
        for prompt in model_prompts:
            _make(pipe, prompt, os.path.join(args.out, prefix + _slug(prompt)), args)
    print(f"done: open the files in {os.path.abspath(args.out)}")
    return 0


def _make(pipe, prompt: str, name: str, args) -> None:
    """One video of `prompt` with its record and its predicted-x0 picture, written as `name`.*"""
    import torch

    from t2v_nb import viz

    t0 = time.time()
    run = pipe.start(prompt, seed=args.seed, record="all" if args.html else "default",
                     **({} if args.guidance_scale is None else {"guidance_scale": args.guidance_scale}))
    run.finish(progress=False)
    video = run.decode()
    seconds = time.time() - t0
    png = name + "_pred_x0.png"
    for path in [png] + ([name + ".html"] if args.html else []):
        if os.path.exists(path) and not args.overwrite:
            raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
    video.save(name + ".mp4", overwrite=args.overwrite)
    # The predicted clean latents of every step, decoded by the VAE: how the guess sharpens.
    x0 = run.trace["step.pred_x0"]  # [S, B, C, F', h, w]
    with torch.no_grad():
        images = torch.cat([pipe.decode_latents(x0[s].to(pipe.device)) for s in range(len(x0))])  # [S, F, H, W, 3]
    labels = [f"step {i}\nt={int(t)}" for i, t in enumerate(run.timesteps)]
    model = pipe.source.get("preset") or pipe.source.get("source")
    fig = viz.steps_frames_grid(images, step_labels=labels, title=f"{model}: predicted clean video at each step: {prompt!r}",
                                row_title="denoising step ↓")
    fig.savefig(png, dpi=80)
    page = run.to_html(name + ".html", overwrite=args.overwrite) if args.html else None
    also = f", {name}.html ({page.nbytes / 1e6:.1f} MB)" if page else ""
    print(f"{model} {prompt!r}: {run.num_steps} steps in {seconds:.2f} s -> {name}.mp4, {name}.mp4.json, {png}{also}")


if __name__ == "__main__":
    sys.exit(main())
