"""Tiny random models, built in code: no download, seconds on a CPU."""

from __future__ import annotations

import functools
import os

import numpy as np

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


from t2v_nb.toy.components import char_tokenizer  # noqa: E402  (re-exported for callers here)
from t2v_nb.toy.tiny import perturb_weights  # noqa: E402


def tiny_components(seed: int = 0, unet_kind: str = "3d", scheduler: str = "ddim", prediction_type: str = "epsilon"):
    """tokenizer, text_encoder, unet, vae, scheduler: ModelScope's classes at toy size (16x16 px -> 8x8 latents)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel, UNetMotionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from t2v_nb.schedulers import make_scheduler

    tok = char_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1, pad_token_id=len(tok) - 1))
    torch.manual_seed(seed + 1)
    if unet_kind == "3d":
        unet = UNet3DConditionModel(
            sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=24,
            attention_head_dim=4, norm_num_groups=8,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))
    else:
        unet = UNetMotionModel(
            sample_size=8, block_out_channels=(16, 32), layers_per_block=1, cross_attention_dim=24,
            num_attention_heads=2, norm_num_groups=8, motion_num_attention_heads=2, motion_max_seq_length=8,
            down_block_types=("CrossAttnDownBlockMotion", "DownBlockMotion"),
            up_block_types=("UpBlockMotion", "CrossAttnUpBlockMotion"))
    perturb_weights(unet, scale=0.02)  # random init leaves many outputs near zero
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        sample_size=16)
    base = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    sched = make_scheduler(scheduler, base)
    for m in (text_encoder, unet, vae):
        m.eval().requires_grad_(False)
    return {"tokenizer": tok, "text_encoder": text_encoder, "unet": unet, "vae": vae, "scheduler": sched}


def tiny_pipe(**kwargs):
    from t2v_nb import StepwisePipeline

    return StepwisePipeline(**tiny_components(**kwargs), defaults={"height": 16, "width": 16, "num_frames": 3,
                                                                  "num_inference_steps": 3, "guidance_scale": 7.5})


@pytest.fixture
def pipe():
    return tiny_pipe()


# ---------------------------------------------------------------- two workers (pytest-xdist, `make test`)

# Modules whose tests share a costly module or session fixture (the toy's sample videos, the training recipe's early
# stage): under pytest-xdist each runs whole on one worker, which makes the fixture once; every other test goes to
# whichever worker is free, on its own. (xdist's `--dist loadgroup` with `xdist_group` marks would say this in
# the tests, but it passes the group through the node ids, which pytest 9.2 no longer lets it change, so it
# silently stopped grouping: pytest-dev/pytest-xdist#1386.)
# Every family's tiny random twin (tests/tiny_<name>.py): the contract suite, the page export and the sweeps run
# on each. A new family adds its module here.
FAMILY_MODULES = ["tiny_modelscope", "tiny_toy", "tiny_animatediff", "tiny_wan", "tiny_cogvideox", "tiny_ltx"]

ONE_WORKER = ("tests/test_toy_model.py", "tests/test_toy_training.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With `-n N` (xdist's default `--dist load`): ONE_WORKER modules as one unit each, every other test alone."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerPerSharedFixture(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in ONE_WORKER else nodeid

    return OneWorkerPerSharedFixture(config, log)


def needs_toy(name: str = "toy-shapes"):
    """Skips a test (or a module, as `pytestmark`) when the bundled toy's weights are not in this checkout."""
    from t2v_nb.models import toy_model_dir

    missing = not os.path.isfile(os.path.join(toy_model_dir(name), "model_index.json"))
    return pytest.mark.skipif(missing, reason=f"the {name} weights are not in this checkout ({toy_model_dir(name)})")


@functools.lru_cache(maxsize=None)
def loaded_toy(name: str = "toy-shapes"):
    """A bundled toy (`toy-shapes`, `toy-shapes-flow`), loaded on the CPU once per test process (each xdist
    worker): every test that needs one shares it, so use it read-only (no lasting hooks, preview or scheduler
    changes on the pipe itself; a StepwisePipeline over its `components` is the way to change those)."""
    import t2v_nb

    return t2v_nb.load(name, device="cpu")


@pytest.fixture(scope="session")
def toy_pipe():
    return loaded_toy("toy-shapes")


@pytest.fixture(scope="session")
def flow_toy_pipe():
    return loaded_toy("toy-shapes-flow")


SMALL = dict(seed=0, num_frames=3, height=16, width=16, num_inference_steps=3)

# The toys' fixed accuracy sample (tests/test_toy_model.py, tests/test_toy_flow_model.py): every third seen
# combination and every held-out one, seed 100. The full evaluation, `python -m t2v_nb.toy.evaluate`, uses seeds
# 0-2, and no default was chosen on seed 100. Every colour is drawn both as a circle and as a square.
def toy_sample():
    from t2v_nb.toy import data
    return data.seen_clips()[::3] + data.held_out_clips(), 100


def save_model_dir(path, unet_kind: str = "motion", safe: bool = True, defaults: dict | None = None,
                   preview: bool = False):
    """Save tiny_components() in the diffusers layout (model_index.json + a folder per part) at `path`.

    `defaults` go into model_index.json as t2v_nb_defaults; `preview` also fits and saves preview.json.
    """
    import json
    import pathlib

    path = pathlib.Path(path)
    parts = tiny_components(unet_kind=unet_kind)
    for name, part in parts.items():
        if name == "scheduler":
            part.save_config(path / name)
        elif name == "tokenizer":
            part.save_pretrained(path / name)
        else:
            part.save_pretrained(path / name, safe_serialization=safe)
    index = {"_class_name": "TextToVideoSDPipeline" if unet_kind == "3d" else "StepwisePipeline",
             "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"],
             "unet": ["diffusers", "UNet3DConditionModel" if unet_kind == "3d" else "UNetMotionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", type(parts["scheduler"]).__name__]}
    if defaults:
        index["t2v_nb_defaults"] = defaults
    (path / "model_index.json").write_text(json.dumps(index, indent=1))
    if preview:
        from t2v_nb.preview import fit_linear_preview

        torch.manual_seed(0)
        fit_linear_preview(parts["vae"], torch.randn(2, 4, 4, 8, 8), "test").save(str(path / "preview.json"))
    return path


# ---------------------------------------------------------------- the bundled toys' previews


def hue_sat(rgb: np.ndarray) -> tuple[float, float]:
    """Hue in degrees and HSV saturation of one RGB colour in [0, 1]."""
    import colorsys

    h, s, _ = colorsys.rgb_to_hsv(*np.clip(rgb, 0.0, 1.0))
    return 360.0 * h, s


def preview_colours(pipe, run, frames: np.ndarray | None = None) -> dict:
    """The linear preview's colour and the decoded frames' colour where the shape is, for one finished run
    (`frames`: its decoded frames, when already decoded).

    "Where the shape is": the latent pixels whose block of the decoded frame (8x8 pixels for an 8x8 latent
    grid) differs most from the frame's background (at least 60% of the frame's largest difference)."""
    frames = run.decode().frames if frames is None else frames  # [F, 64, 64, 3]
    approx = pipe.preview(run.latents)[0]  # [F, h, w, 3]
    pooled = torch.nn.functional.avg_pool2d(torch.from_numpy(frames).permute(0, 3, 1, 2), pipe.vae_scale_factor)
    pooled = pooled.permute(0, 2, 3, 1).numpy()  # [F, h, w, 3]
    background = np.median(pooled.reshape(len(pooled), -1, 3), axis=1)  # [F, 3]
    contrast = np.linalg.norm(pooled - background[:, None, None], axis=-1)  # [F, h, w]
    shape = contrast >= 0.6 * contrast.max(axis=(1, 2), keepdims=True)
    return {"preview": approx[shape].mean(axis=0), "decoded": pooled[shape].mean(axis=0)}


def preview_colour_errors(pipe, videos: dict | None = None) -> list[str]:
    """Issue 13's colour-true preview check, for each colour on a circle and a square: the preview's hue within
    30 degrees of the decoded frames' and saturation >= 0.35 on the shape; white stays white (low saturation,
    bright). Returns what fails, one line each.

    `videos`: {clip: (finished run, decoded frames)} already made, of which the first of each colour and shape
    is read; without it, each colour's circle (seed 0) and square (seed 1) moving right are generated here."""
    from t2v_nb.toy import data

    def video(color, shape, seed):
        if videos is not None:
            return next(v for clip, v in videos.items() if (clip.color, clip.shape) == (color, shape))
        return pipe.start(data.caption(data.Clip(color, shape, "right")), seed=seed, record=None).finish(
            progress=False), None

    wrong = []
    for color in data.COLORS:
        for shape, seed in (("circle", 0), ("square", 1)):
            c = preview_colours(pipe, *video(color, shape, seed))
            (hp, sp), (hd, _) = hue_sat(c["preview"]), hue_sat(c["decoded"])
            if color == "white":
                ok = sp < 0.25 and c["preview"].min() > 0.5
            else:
                ok = min(abs(hp - hd), 360 - abs(hp - hd)) <= 30 and sp >= 0.35
            if not ok:
                wrong.append(f"{color} {shape}: preview {c['preview'].round(2)} (hue {hp:.0f}, sat {sp:.2f}) vs "
                             f"decoded {c['decoded'].round(2)} (hue {hd:.0f})")
    return wrong
