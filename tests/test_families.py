"""The contract every model family keeps, run on each family's tiny components (and the trained toy).

Each module in FAMILY_MODULES (tests/tiny_<name>.py) gives `components(seed, scheduler)`, `tiny_pipe()`,
`reference_frames(parts, prompt, seed, guidance_scale, **SMALL)` (the family's own diffusers pipeline),
`reference(parts)` (that pipeline), `SCHEDULERS` to compare with, `SMALL` start() settings, `NAME` (the family's
name) and, except the toy (a saved directory already), `SAVED`: the scheduler a saved directory is made with, and the
classes (and defaults) t2v_nb.load finds in it.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from t2v_nb.attention import attention_layers

from conftest import FAMILY_MODULES  # noqa: E402

PROMPT = "a red circle moving right"
# (module, scheduler) for each scheduler a family is compared with its diffusers pipeline on
BY_SCHEDULER = [(name, s) for name in FAMILY_MODULES for s in importlib.import_module(name).SCHEDULERS]


@pytest.fixture(params=FAMILY_MODULES, scope="module")
def fam(request):
    return importlib.import_module(request.param)


@pytest.fixture(scope="module")
def pipe(fam):
    return fam.tiny_pipe()


def _generate(pipe, fam, **kw):
    return pipe.generate(PROMPT, progress=False, **{"seed": 0, **fam.SMALL, **kw}).frames


@pytest.mark.parametrize("guidance_scale", [1.0, 6.0])
@pytest.mark.parametrize("name, scheduler", BY_SCHEDULER, ids=[f"{n[5:]}-{s}" for n, s in BY_SCHEDULER])
def test_same_frames_as_the_familys_diffusers_pipeline(name, scheduler, guidance_scale):
    from t2v_nb import StepwisePipeline

    fam = importlib.import_module(name)
    parts = fam.components(scheduler=scheduler)
    ref = fam.reference_frames(parts, PROMPT, 0, guidance_scale, **fam.SMALL)
    got = StepwisePipeline(**fam.components(scheduler=scheduler)).generate(
        PROMPT, seed=0, guidance_scale=guidance_scale, progress=False, **fam.SMALL).frames
    assert got.shape == ref.shape and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-5
    assert ref.std() > 1e-3  # not two blank videos


def test_family_is_found_from_the_components(fam, pipe):
    assert pipe.family.name == fam.NAME
    assert pipe.prediction_type in ("epsilon", "v_prediction", "flow")


def test_bitwise_deterministic(fam, pipe):
    assert np.array_equal(_generate(pipe, fam), _generate(pipe, fam))
    assert not np.array_equal(_generate(pipe, fam), _generate(pipe, fam, seed=1))


def test_a_replacing_hook_changes_the_video_and_shows_in_the_record(fam, pipe):
    plain = _generate(pipe, fam)
    zero = lambda v, ctx: torch.zeros_like(v) if ctx.step == 1 else None
    with pipe.hooks({"step.noise_pred": zero}):
        run = pipe.start(PROMPT, seed=0, **fam.SMALL)
    run.finish(progress=False)  # stepped after the block ended: the run keeps its hooks
    assert not np.array_equal(run.decode().frames, plain)
    (fired,) = run.record()["hooks"]
    assert fired["point"] == "step.noise_pred" and fired["steps"] == list(range(fam.SMALL["num_inference_steps"]))


def test_hooks_added_after_the_start_do_not_leak_into_a_run(fam, pipe):
    plain = _generate(pipe, fam)
    run = pipe.start(PROMPT, seed=0, **fam.SMALL)
    with pipe.hooks({"step.noise_pred": lambda v, ctx: torch.zeros_like(v)}):
        run.finish(progress=False)
    assert np.array_equal(run.decode().frames, plain) and run.record()["hooks"] == []


def test_interrupt_and_resume_equals_uninterrupted(fam, pipe):
    plain = _generate(pipe, fam, scheduler="dpm++")
    pending = [1]

    def interrupt(v, ctx):
        if ctx.step in pending:
            pending.remove(ctx.step)
            raise KeyboardInterrupt

    run = pipe.start(PROMPT, seed=0, scheduler="dpm++", hooks={"step.pred_x0": interrupt}, **fam.SMALL)
    with pytest.raises(KeyboardInterrupt):
        run.finish(progress=False)
    assert run.i == 1 and run.interrupted
    assert np.array_equal(run.finish(progress=False).decode().frames, plain)


def test_trace_shapes(fam, pipe):
    run = pipe.start(PROMPT, seed=0, **fam.SMALL).finish(progress=False)
    S, F = fam.SMALL["num_inference_steps"], fam.SMALL["num_frames"]
    C, Fl, h, w = pipe.family.latent_shape(F, fam.SMALL["height"], fam.SMALL["width"])
    L = pipe.family.text_length
    for name in ("step.latents", "step.noise_pred_uncond", "step.noise_pred_text", "step.noise_pred",
                 "step.pred_x0", "step.next_latents"):
        assert run.trace[name].shape == (S, 1, C, Fl, h, w), name
    assert run.trace["latents.initial"].shape == (1, C, Fl, h, w)
    assert run.trace["text.input_ids"].shape == (1, L) and run.trace["text.embeddings"].shape[:2] == (1, L)
    video = run.decode()
    assert video.frames.shape == (F, fam.SMALL["height"], fam.SMALL["width"], 3)
    assert len(run.text.words) == len(run.text.tokens) and run.text.mask.shape == (1, L)


def test_attention_rows_sum_to_one_and_match_the_documented_shapes(fam, pipe):
    plain = _generate(pipe, fam)
    run = pipe.start(PROMPT, seed=0, record="all", **fam.SMALL).finish(progress=False)
    assert np.array_equal(run.decode().frames, plain)  # capture leaves the video bitwise unchanged
    layers = attention_layers(pipe, fam.SMALL["height"], fam.SMALL["width"], fam.SMALL["num_frames"])
    assert layers and {n.split(".")[1] for n in layers} == {"cross", "temporal"}
    for name, info in layers.items():
        value = run.trace[name]  # [S, *shape]
        assert value.shape[1:] == info["shape"], name
        torch.testing.assert_close(value.float().sum(-1), torch.ones(value.shape[:-1]), atol=1e-4, rtol=0)


def test_branch_from_step_k_equals_a_run_changed_from_step_k(fam, pipe):
    k, g1, g2 = 1, 6.0, 2.0
    run = pipe.start(PROMPT, seed=0, guidance_scale=g1, scheduler="dpm++", **fam.SMALL).finish(progress=False)
    branched = run.branch(k, guidance_scale=g2).finish(progress=False)
    manual = pipe.start(PROMPT, seed=0, guidance_scale=g1, scheduler="dpm++", **fam.SMALL)
    for _ in range(k):
        manual.step()
    manual.params["guidance_scale"] = g2  # the change, from step k on
    manual.finish(progress=False)
    assert torch.equal(branched.latents, manual.latents)
    assert not torch.equal(branched.latents, run.latents)


SAVED = [n for n in FAMILY_MODULES if n != "tiny_toy"]  # the toy is a saved directory already (test_toy_model)


@pytest.mark.parametrize("name", SAVED, ids=[n[5:] for n in SAVED])
def test_a_saved_directory_loads_and_equals_its_pipeline(name, tmp_path, monkeypatch):
    """The family's diffusers pipeline saved with save_pretrained loads with t2v_nb.load, found as the family, with
    the classes and defaults the module's SAVED names, and makes the pipeline's frames."""
    import t2v_nb

    fam = importlib.import_module(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    parts = fam.components(scheduler=fam.SAVED["scheduler"])
    fam.reference(parts).save_pretrained(tmp_path / "saved")
    pipe = t2v_nb.load(str(tmp_path / "saved"), device="cpu")
    assert pipe.family.name == fam.NAME
    assert {slot: type(getattr(pipe, slot)).__name__ for slot in fam.SAVED["classes"]} == fam.SAVED["classes"]
    assert {k: pipe.defaults[k] for k in fam.SAVED.get("defaults", {})} == fam.SAVED.get("defaults", {})
    got = pipe.generate(PROMPT, seed=2, guidance_scale=6.0, progress=False, **fam.SMALL).frames
    ref = fam.reference_frames(parts, PROMPT, 2, 6.0, **fam.SMALL)
    assert np.abs(got - ref).max() < 1e-5 and ref.std() > 1e-3


def test_an_image_only_model_is_refused_before_any_weights_load(tmp_path):
    import json

    import t2v_nb

    index = {"_class_name": "StableDiffusionPipeline", "tokenizer": ["transformers", "CLIPTokenizer"],
             "text_encoder": ["transformers", "CLIPTextModel"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "PNDMScheduler"],
             "safety_checker": [None, None]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))  # no weights at all: nothing may load
    with pytest.raises(ValueError, match="unet=UNet2DConditionModel.*Supported families.*modelscope"):
        t2v_nb.load(str(tmp_path), device="cpu")


def test_encode_video_gives_the_loops_latents(fam, pipe):
    run = pipe.start(PROMPT, seed=0, **fam.SMALL)
    video = run.finish(progress=False).decode().frames  # [F, H, W, 3] in [0, 1]
    z = pipe.encode_video(video)
    assert z.shape == run.latents.shape and z.dtype == run.latents.dtype and torch.isfinite(z).all()
    assert torch.equal(pipe.encode_video(video[None]), z)  # a batch of one is the same
    assert pipe.decode_latents(z).shape == (1, *video.shape)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.encode_video(video * 2 + 0.5)
    with pytest.raises(ValueError, match="RGB"):
        pipe.encode_video(video[..., :2])


def test_check_inputs_is_keyword_only_and_draws_no_seed(fam, pipe):
    with pytest.raises(TypeError):
        pipe.check_inputs("a", "")  # positional arguments are refused
    assert pipe.check_inputs(prompt="a", **fam.SMALL)["seed"] is None  # the seed is drawn by start(), not here
    assert isinstance(pipe.start("a", **fam.SMALL).params["seed"], int)


def test_fit_preview_gives_one_colour_per_latent_pixel(fam, pipe):
    run = pipe.start(PROMPT, seed=0, **fam.SMALL).finish(progress=False)
    latents = torch.cat([run.latents, torch.randn_like(run.latents)])  # [2, C, F', h, w]
    preview = pipe.family.fit_preview(latents, "test")
    C, F, h, w = latents.shape[1:]
    assert preview.matrix.shape == (C, 3) and preview(latents).shape == (2, F, h, w, 3)
