"""The stepwise pipeline: steps, trace, hooks, branches, interrupts, on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SMALL, loaded_toy, tiny_pipe

import t2v_nb
from t2v_nb.hooks import HOOK_POINTS


def test_step_by_step_equals_generate(pipe):
    run = pipe.start("a red circle", **SMALL)
    assert run.i == 0 and run.num_steps == 3
    steps = []
    while (s := run.step()) is not None:
        steps.append(s)
    assert [s.i for s in steps] == [0, 1, 2]
    assert [s.t for s in steps] == [int(t) for t in run.timesteps]
    assert run.step() is None and run.done
    for a, b in zip(steps, steps[1:]):  # each step starts where the last one ended
        assert torch.equal(a.next_latents, b.latents)
    video = run.decode()
    again = pipe.generate("a red circle", progress=False, **SMALL)
    assert np.array_equal(video.frames, again.frames)  # same seed -> bitwise the same on the CPU


def test_trace_shapes_and_values(pipe):
    run = pipe.start("a red circle", **SMALL)
    run.finish(progress=False)
    video = run.decode()
    tr = run.trace
    B, C, F, h, w = 1, 4, 3, 8, 8
    assert tr["text.input_ids"].shape == (B, 77)
    assert tr["text.embeddings"].shape == (B, 77, 24)
    assert tr["text.negative_embeddings"].shape == (B, 77, 24)
    assert tr["latents.initial"].shape == (B, C, F, h, w)
    for name in ("step.latents", "step.noise_pred_uncond", "step.noise_pred_text", "step.noise_pred",
                 "step.pred_x0", "step.next_latents"):
        assert tr[name].shape == (3, B, C, F, h, w), name
        assert tr[name].device.type == "cpu"
    assert tr["decode.frames"].shape == (B, F, 16, 16, 3)
    assert torch.equal(tr["step.next_latents"][-1], run.latents)
    assert np.array_equal(tr["decode.frames"][0].numpy(), video.frames)
    g = run.params["guidance_scale"]
    guided = tr["step.noise_pred_uncond"] + g * (tr["step.noise_pred_text"] - tr["step.noise_pred_uncond"])
    assert torch.allclose(guided, tr["step.noise_pred"], atol=1e-6)
    assert set(HOOK_POINTS) <= set(tr.names())


def test_record_selection_and_trace_errors(pipe):
    run = pipe.start("x", record=["step.pred_x0"], **SMALL)
    with pytest.raises(KeyError, match="no step has run"):
        run.trace["step.pred_x0"]
    run.finish(progress=False)
    assert run.trace.names() == ["step.pred_x0"]
    with pytest.raises(KeyError, match="not recorded"):
        run.trace["step.latents"]
    with pytest.raises(ValueError, match="step.pred_x0"):
        run.trace["step.pred_xo"]  # a typo gets the closest names
    off = pipe.start("x", record=None, **SMALL).finish(progress=False)
    assert len(off.trace) == 0 and off.trace.nbytes() == 0


def test_replacing_text_embeddings_with_negative_gives_empty_prompt_video(pipe):
    # With prompt embeddings := negative ("") embeddings, guidance has nothing to amplify: the video
    # must be the empty prompt's.
    empty = pipe.generate("", progress=False, **SMALL).frames
    neg = pipe.encode_text("").embeddings
    with pipe.hooks({"text.embeddings": lambda v, ctx: neg}):
        swapped = pipe.generate("a red circle moving right", progress=False, **SMALL).frames
    plain = pipe.generate("a red circle moving right", progress=False, **SMALL).frames
    assert np.array_equal(swapped, empty)
    assert not np.allclose(plain, empty)


def test_read_hooks_see_every_step_and_are_removed(pipe):
    seen = []
    with pipe.hooks({"step.pred_x0": lambda v, ctx: seen.append((ctx.step, ctx.timestep, tuple(v.shape)))}):
        run = pipe.start("a", **SMALL).finish(progress=False)
    assert [s[0] for s in seen] == [0, 1, 2]
    assert [s[1] for s in seen] == [int(t) for t in run.timesteps]
    assert all(s[2] == (1, 4, 3, 8, 8) for s in seen)
    pipe.generate("a", progress=False, **SMALL)
    assert len(seen) == 3  # removed on exit
    with pytest.raises(RuntimeError):
        with pipe.hooks({"step.latents": lambda v, ctx: None}):
            raise RuntimeError("boom")
    assert not pipe._hooks  # removed on error too


def test_hook_that_zeroes_noise_prediction_changes_output(pipe):
    plain = pipe.start("a", **SMALL).finish(progress=False)
    with pipe.hooks({"step.noise_pred": lambda v, ctx: torch.zeros_like(v)}):
        zeroed = pipe.start("a", **SMALL).finish(progress=False)
    assert torch.equal(zeroed.trace["step.noise_pred"], torch.zeros_like(zeroed.trace["step.noise_pred"]))
    assert not torch.allclose(plain.latents, zeroed.latents)


def test_unknown_hook_names_and_bad_hooks(pipe):
    with pytest.raises(ValueError, match="'step.pred_x0'"):
        with pipe.hooks({"step.predx0": lambda v, c: None}):
            pass
    with pytest.raises(TypeError, match="callable"):
        with pipe.hooks({"step.pred_x0": 3}):
            pass
    with pytest.raises(ValueError, match="shape"):
        with pipe.hooks({"step.noise_pred": lambda v, c: v[:, :2]}):
            pipe.start("a", **SMALL).step()
    assert not pipe._hooks


def test_scheduler_step_called_once_per_step(pipe):
    run = pipe.start("a", scheduler="dpm++", **SMALL)
    calls = []
    original = run.scheduler.step
    run.scheduler.step = lambda *a, **k: calls.append(1) or original(*a, **k)
    run.finish(progress=False)
    assert len(calls) == run.num_steps == 3


@pytest.mark.parametrize("scheduler", ["dpm++", "dpm++-karras", "pndm", "unipc", "deis"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_pred_x0_matches_scheduler_data_prediction(scheduler, prediction_type):
    # For schedulers that do not return pred_original_sample, compare our x0 with what DDIM (which does
    # return it) computes for the same latents, model output and timestep.
    from diffusers import DDIMScheduler

    pipe = tiny_pipe(scheduler=scheduler, prediction_type=prediction_type)
    run = pipe.start("a", **SMALL)
    ddim = DDIMScheduler.from_config(run.scheduler.config)
    ddim.set_timesteps(1000)
    for _ in range(3):
        s = run.step()
        if scheduler == "dpm++-karras":
            continue  # karras timesteps are rounded from sigmas: DDIM's alpha table is not exact there
        B, C, F, h, w = s.latents.shape
        flat = lambda x: x.permute(0, 2, 1, 3, 4).reshape(B * F, C, h, w)
        ref = ddim.step(flat(s.noise_pred), s.t, flat(s.latents)).pred_original_sample
        ref = ref.reshape(B, F, C, h, w).permute(0, 2, 1, 3, 4)
        assert torch.allclose(s.pred_x0, ref, atol=1e-4, rtol=1e-4)
    assert torch.isfinite(run.trace["step.pred_x0"]).all()


def test_pred_x0_of_dpm_equals_its_own_data_prediction():
    pipe = tiny_pipe(scheduler="dpm++-karras")
    run = pipe.start("a", **SMALL)
    for _ in range(3):
        s = run.step()
        sched = run.scheduler
        B, C, F, h, w = s.latents.shape
        flat = lambda x: x.permute(0, 2, 1, 3, 4).reshape(B * F, C, h, w)
        saved = sched.step_index
        sched._step_index = s.i
        ref = sched.convert_model_output(flat(s.noise_pred), sample=flat(s.latents))
        sched._step_index = saved
        assert torch.allclose(flat(s.pred_x0), ref, atol=1e-5)


def test_interrupt_mid_step_keeps_run_consistent(pipe):
    expected = pipe.start("a", scheduler="dpm++", **SMALL).finish(progress=False).decode().frames
    pending = [1]  # interrupt step 1, once

    def interrupt(v, ctx):  # lands after scheduler.step, before the step is done
        if ctx.step in pending:
            pending.remove(ctx.step)
            raise KeyboardInterrupt

    run = pipe.start("a", scheduler="dpm++", hooks={"step.pred_x0": interrupt}, **SMALL)
    run.step()
    with pytest.raises(KeyboardInterrupt):
        run.step()
    assert run.i == 1 and run.interrupted
    assert run.trace["step.pred_x0"].shape[0] == 1  # the broken step left nothing in the trace
    with pytest.warns(UserWarning, match="partial run: 1 of 3 steps"):
        partial = run.decode().frames  # decodes what there is, and says so
    assert partial.shape == expected.shape
    run.finish(progress=False)
    assert np.array_equal(run.decode().frames, expected)


def test_branch_recomputes_nothing_before_k_and_reproduces(pipe):
    run = pipe.start("a red circle", scheduler="dpm++", **SMALL).finish(progress=False)
    calls = []
    with pipe.hooks({"step.latents": lambda v, c: calls.append(c.step)}):
        same = run.branch(1).finish(progress=False)
    assert calls == [1, 2]
    assert torch.equal(same.latents, run.latents)
    other = run.branch(1, guidance_scale=1.0).finish(progress=False)
    assert not torch.allclose(other.latents, run.latents)
    assert other.params["branched_from"] == {"step": 1, "seed": 0}
    with pytest.raises(ValueError, match="branch"):
        run.branch(7)


def test_motion_unet_is_served_by_the_same_core():
    pipe = tiny_pipe(unet_kind="motion", scheduler="dpm++")
    run = pipe.start("a red circle", **SMALL).finish(progress=False)
    assert run.trace["step.pred_x0"].shape == (3, 1, 4, 3, 8, 8)
    assert run.decode().frames.shape == (3, 16, 16, 3)
    with pytest.raises(ValueError, match="positions"):
        pipe.start("a", num_frames=9)


def test_guidance_zero_is_unconditional(pipe):
    run = pipe.start("a red circle", guidance_scale=0.0, **{k: v for k, v in SMALL.items()})
    s = run.step()
    assert torch.allclose(s.noise_pred, s.noise_pred_uncond)
    no_cfg = pipe.start("a red circle", guidance_scale=1.0, **SMALL)
    s1 = no_cfg.step()
    assert s1.noise_pred_uncond is None and no_cfg.text.negative_embeddings is None


def test_guidance_interval_guides_only_inside_it(pipe):
    """Inside (t_low, t_high) the step is guided; outside it follows the prompt's branch alone, and both
    branches are still computed (the trace has the unconditional output at every step)."""
    full = pipe.start("a red circle", guidance_scale=5.0, guidance_interval=None, **SMALL).finish(progress=False)
    ts = [float(t) for t in full.timesteps]
    low = (ts[0] + ts[1]) / 2  # only the first step is guided
    run = pipe.start("a red circle", guidance_scale=5.0, guidance_interval=(low, 1000), **SMALL)
    assert run.params["guidance_interval"] == (low, 1000.0)
    first, second = run.step(), run.step()
    assert run.guided_at(run.timesteps[0]) and not run.guided_at(run.timesteps[1])
    by_hand = first.noise_pred_uncond + 5.0 * (first.noise_pred_text - first.noise_pred_uncond)
    assert torch.allclose(first.noise_pred, by_hand)
    assert torch.equal(first.next_latents, full.trace["step.next_latents"][0])  # same first step
    assert second.noise_pred_uncond is not None and torch.equal(second.noise_pred, second.noise_pred_text)
    assert not torch.allclose(second.noise_pred, second.noise_pred_uncond)
    run.finish(progress=False)
    assert run.trace["step.noise_pred_uncond"].shape[0] == run.num_steps
    assert not torch.allclose(run.latents, full.latents)  # the unguided later steps change the video
    # an interval that holds every timestep is plain guidance, bit for bit
    every = pipe.start("a red circle", guidance_scale=5.0, guidance_interval=(0, 1000), **SMALL).finish(progress=False)
    assert torch.equal(every.latents, full.latents)


def test_guidance_interval_defaults_and_branches(pipe):
    assert pipe.start("a", **SMALL).params["guidance_interval"] == pipe.defaults.get("guidance_interval")
    run = pipe.start("a red circle", guidance_scale=5.0, guidance_interval=(500, 1000), **SMALL)
    run.finish(progress=False)
    assert run.branch(1).params["guidance_interval"] == (500.0, 1000.0)  # kept
    assert run.branch(1, guidance_interval=None).params["guidance_interval"] is None
    assert loaded_toy("toy-shapes").defaults.get("guidance_interval") is None  # every step since 2026-12-01


@pytest.mark.parametrize("interval", [(900, 100), (1,), "700", (0, float("nan")), ("a", 1), 5, (True, 1)])
def test_bad_guidance_interval_is_a_value_error(pipe, interval):
    with pytest.raises(ValueError, match="guidance_interval"):
        pipe.start("a", guidance_interval=interval, **SMALL)


def test_text_features(pipe):
    run = pipe.start("a red circle", **SMALL)
    assert run.text.tokens[0] == "<|startoftext|>" and run.text.tokens[-1] == "<|endoftext|>"
    assert "".join(t.replace("</w>", " ") for t in run.text.tokens[1:-1]).split() == ["a", "red", "circle"]
    with pytest.warns(UserWarning, match="cut"):
        long = pipe.start("word " * 60, **SMALL)
    assert long.text.truncated and len(long.text.tokens) == 77


def test_record_describes_the_run(pipe):
    video = pipe.generate("a red circle", negative_prompt="blue", progress=False, **SMALL)
    r = video.record
    assert r["prompt"] == "a red circle" and r["negative_prompt"] == "blue" and r["seed"] == 0
    assert r["num_inference_steps"] == 3 and r["scheduler"] == "ddim" and r["steps_done"] == 3
    assert r["versions"]["t2v_nb"] == t2v_nb.__version__ and r["versions"]["torch"]


@pytest.mark.parametrize("name,base", [("ddim", "epsilon"), ("euler", "epsilon"), ("dpm++", "epsilon"),
                                       ("euler", "flow"), ("euler-a", "flow"), ("unipc", "flow")])
def test_noise_to_step_matches_the_schedulers_own_noising(name, base):
    """noise_to_step agrees with diffusers' add_noise / scale_noise at the timestep of each step."""
    import diffusers

    from t2v_nb import schedulers

    if base == "flow":
        root = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    else:
        root = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    sched = schedulers.make_scheduler(name, root)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(1, 4, 2, 3, 3, generator=g), torch.randn(1, 4, 2, 3, 3, generator=g)
    for i in (0, 4, 9):
        t = sched.timesteps[i : i + 1]
        if base == "flow" and hasattr(sched, "scale_noise"):
            ref = sched.scale_noise(x0, t, noise)
        elif base == "flow":  # UniPC in flow form: x_t = (1 - sigma) x0 + sigma eps at its own sigmas
            sigma = sched.sigmas[i]
            ref = (1 - sigma) * x0 + sigma * noise
        else:
            ref = sched.add_noise(x0, noise, t)
        got = schedulers.noise_to_step(sched, x0, noise, i)
        assert torch.allclose(got, ref, atol=1e-5), (name, i)
    with pytest.raises(ValueError, match="step_index"):
        schedulers.noise_to_step(sched, x0, noise, 10)


def test_flow_euler_a_is_stochastic_and_named():
    import diffusers

    from t2v_nb import schedulers

    root = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    a = schedulers.make_scheduler("euler-a", root)
    assert a.config.stochastic_sampling and schedulers.scheduler_name(a) == "euler-a"
    assert schedulers.scheduler_name(schedulers.make_scheduler("euler", a)) == "euler"
