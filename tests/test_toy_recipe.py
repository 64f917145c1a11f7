"""The shape both toy training recipes share (t2v_nb.toy._recipe): budgets, clocks with one meaning each, the
stage loop's stop, checkpoints and resume, the latent cache; and the two training losses a lesson calls."""

from __future__ import annotations

import inspect
import itertools
import json
import os

import numpy as np
import pytest
import torch

from t2v_nb.toy import _recipe, components, data, train, train_flow
from t2v_nb.toy import flow_components as fc


@pytest.fixture
def fake_clocks(monkeypatch):
    """Wall clock 2 s and CPU clock 3 s further at each reading: a step inside `timed` takes 2 s wall, 3 s CPU."""
    wall, cpu = itertools.count(0.0, 2.0), itertools.count(0.0, 3.0)
    monkeypatch.setattr(_recipe, "wall_clock", lambda: next(wall))
    monkeypatch.setattr(_recipe, "cpu_clock", lambda: next(cpu))


def test_a_budget_is_steps_or_minutes_of_budget_time():
    assert _recipe.Budget(steps=3).left({"step": 2}) and not _recipe.Budget(steps=3).left({"step": 3})
    minutes = _recipe.Budget(minutes=0.5)
    assert minutes.left({"step": 99, "budget_seconds": 29.0}) and not minutes.left({"step": 0, "budget_seconds": 30.0})
    for bad in ({}, {"steps": 1, "minutes": 1.0}):
        with pytest.raises(ValueError, match="steps or minutes"):
            _recipe.Budget(**bad)


def test_each_clock_word_has_one_meaning(fake_clocks):
    state = {"step": 0}
    with _recipe.timed(state, torch.device("cpu"), budget=True):
        pass
    assert (state["seconds"], state["cpu_seconds"], state["budget_seconds"]) == (2.0, 3.0, 3.0)  # budget: CPU time
    with _recipe.timed(state, torch.device("cuda"), budget=True):  # a device object; nothing runs on it
        pass
    # on an accelerator the budget counts wall time, and no CPU time is counted
    assert (state["seconds"], state["cpu_seconds"], state["budget_seconds"]) == (4.0, 3.0, 5.0)
    assert state["seconds_by_device"] == {"cpu": 2.0, "cuda": 2.0}
    steps_only = {"step": 0}
    with _recipe.timed(steps_only, torch.device("cpu")):
        pass
    assert "budget_seconds" not in steps_only
    assert _recipe.time_columns(state) == {"minutes": 4 / 60, "cpu_minutes": 3 / 60, "budget_minutes": 5 / 60}
    assert _recipe.minutes_record("vae", {**state, "seconds": 600.0}) == {
        "vae_minutes": 10.0, "vae_cpu_minutes": 0.1, "vae_budget_minutes": 0.1}


def test_the_stage_loop_logs_checkpoints_stops_and_goes_on(tmp_path, fake_clocks):
    """A stage of 7 steps, stopped (as by Ctrl-C) during its 3rd step: it finishes that step and returns; the same
    call again trains on to the budget. Log rows every 2 steps, checkpoints when asked, the evaluation after them."""
    work, stop, events = str(tmp_path), _recipe.Stop(), []
    state = {"step": 0}

    def step():
        events.append(f"step {state['step']}")
        if state["step"] == 2 and not events.count("resumed"):
            stop.requested = True
        return float(state["step"])

    def run():
        _recipe.run_stage(work, "demo", state, step, budget=_recipe.Budget(steps=7), device=torch.device("cpu"),
                          save=lambda: events.append("save"), stop=stop, log_every=2, row=lambda: {"extra": 1},
                          checkpoint_now=lambda: state["step"] % 3 == 0,
                          after_checkpoint=lambda: events.append(f"eval {state['step']}"))

    run()
    assert state["step"] == 3 and events == ["step 0", "step 1", "step 2", "save", "eval 3"]
    stop.requested = False
    events.append("resumed")
    run()
    assert state["step"] == 7 and events[5:] == ["resumed", "step 3", "step 4", "step 5", "save", "eval 6", "step 6"]
    rows = [json.loads(line) for line in open(os.path.join(work, "log.jsonl"))]
    # the mean loss of the steps since the last row, or since the start of this call (step 3 alone at step 4)
    assert [(r["stage"], r["step"], r["loss"], r["extra"]) for r in rows] == [("demo", 2, 0.5, 1), ("demo", 4, 3.0, 1),
                                                                             ("demo", 6, 4.5, 1)]
    assert rows[0]["minutes"] == 4 / 60 and rows[0]["cpu_minutes"] == 6 / 60 and "budget_minutes" not in rows[0]
    # a deadline already past: no step at all
    _recipe.run_stage(work, "demo", state, step, budget=_recipe.Budget(steps=9), device=torch.device("cpu"),
                      save=lambda: None, stop=stop, log_every=2, deadline=0.0)
    assert state["step"] == 7


def test_the_latent_cache_is_written_whole_or_not_at_all(tmp_path):
    chunks = [(torch.full((2, 3, 4, 8, 8), float(k)), [k, k + 10]) for k in range(3)]  # [n, 3, F, H, W], clip ids

    def encode(clips):  # a "posterior": mean and std [n, C, F, h, w]
        return clips[:, :2, :, ::2, ::2] + 0.5, torch.ones(len(clips), 2, 4, 4, 4)

    cache = _recipe.encode_dataset(str(tmp_path), chunks, encode, 6, _recipe.Stop(), torch.device("cpu"),
                                   extra=lambda mean: {"mean_of_all": mean.float().mean().item()})
    saved = torch.load(tmp_path / _recipe.LATENTS)
    assert saved["mean"].dtype == torch.float16 and saved["mean"].shape == (6, 2, 4, 4, 4)
    assert saved["clip"].tolist() == [0, 10, 1, 11, 2, 12] and saved["mean_of_all"] == cache["mean_of_all"] == 1.5
    row = json.loads(open(tmp_path / "log.jsonl").readline())
    assert row["stage"] == "latents" and row["videos"] == 6 and row["mean_of_all"] == 1.5
    stopped = _recipe.Stop()
    stopped.requested = True
    assert _recipe.encode_dataset(str(tmp_path / "x"), chunks, encode, 6, stopped, torch.device("cpu")) is None


def test_flow_checkpoints_from_before_one_meaning_per_clock_keep_their_budget():
    old = {"step": 85, "seconds": 145.9, "done": False, "colour": True, "where": ["cpu"]}  # runs/flow3's, 2026-12-05
    new = train_flow._upgrade_state(dict(old))
    assert new["budget_seconds"] == new["cpu_seconds"] == 145.9 and new["seconds"] == 0.0 and new["untimed_steps"] == 85
    assert _recipe.minutes_record("vae", new)["vae_untimed_steps"] == 85
    on_gpu = train_flow._upgrade_state({"step": 5, "seconds": 60.0, "where": ["cuda", "cpu"]})
    assert on_gpu["budget_seconds"] == 60.0 and "cpu_seconds" not in on_gpu  # wall on the GPU, CPU time after it
    assert train_flow._upgrade_state(dict(new)) == new


def test_a_stopped_flow_vae_goes_on_exactly_also_from_an_old_checkpoint(tmp_path, fake_clocks, monkeypatch):
    """The flow VAE's batches depend on the step only and its schedule on the budget clock: stopped after 2 steps
    and started again, it ends where an uninterrupted run ends, bit for bit; also from a checkpoint in the keys
    written before 2026-12-05 (budget time in "seconds")."""
    monkeypatch.setattr(train_flow, "vae_pass_rate", lambda vae: {})  # the end's measurements: not tested here
    monkeypatch.setattr(train_flow, "vae_psnr", lambda vae, clips: 0.0)
    minutes = 4 * 3 / 60  # 4 steps of 3 s CPU time (fake_clocks); the learning rate drops after 2/3 of it

    def run(work, stop_after=None):
        calls, loss = [], train_flow._vae_loss

        def counted(*args):
            calls.append(1)
            if len(calls) == stop_after:
                train_flow._stop.requested = True
            return loss(*args)

        monkeypatch.setattr(train_flow, "_vae_loss", counted)
        monkeypatch.setattr(train_flow, "_stop", train_flow.Stop())
        os.makedirs(work, exist_ok=True)
        train_flow.train_vae(str(work), minutes, batch=2)
        monkeypatch.setattr(train_flow, "_vae_loss", loss)
        return torch.load(os.path.join(work, "vae.pt"), weights_only=False)

    whole = run(tmp_path / "whole")
    for legacy in (False, True):
        work = tmp_path / f"stopped_{legacy}"
        first = run(work, stop_after=2)
        assert first["state"]["step"] == 2 and not first["state"]["done"]
        if legacy:
            state = first["state"]
            first["state"] = {"step": 2, "seconds": state["budget_seconds"], "done": False, "colour": True,
                              "where": ["cpu"]}
            torch.save(first, os.path.join(work, "vae.pt"))
        resumed = run(work)
        assert resumed["state"]["step"] == whole["state"]["step"] == 4 and resumed["state"]["done"]
        assert resumed["state"]["budget_seconds"] == whole["state"]["budget_seconds"] == 12.0
        for key in ("model", "colour"):
            assert all(torch.equal(a, b) for a, b in zip(whole[key].values(), resumed[key].values())), key
    assert whole["state"]["seconds"] == 8.0 and whole["state"]["cpu_seconds"] == 12.0
    assert resumed["state"]["untimed_steps"] == 2 and resumed["state"]["seconds"] == 4.0  # the legacy one's


def test_the_vae_scale_factor_default_is_the_command_line_one():
    default = inspect.signature(train.train_vae).parameters["scale_factor"].default
    assert default == train._parser().get_default("vae_scale_factor") == train.RECIPE_VAE_SCALE_FACTOR == 4


def test_the_command_lines_say_what_their_budgets_count(capsys):
    for module in (train, train_flow):
        with pytest.raises(SystemExit):
            module.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Budgets (--*-steps) are steps" in text and "Budgets (--*-minutes) are budget time" in text


# ---------------------------------------------------------------- the losses, as a lesson calls them

def test_v_prediction_loss_is_the_weighted_v_error_train_unet_minimises():
    from transformers import CLIPTokenizer

    from t2v_nb.models import toy_model_dir

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(toy_model_dir(), "tokenizer"))
    unet, text_encoder = components.build_unet(channels=8), components.build_text_encoder(len(tokenizer))
    scheduler = components.build_scheduler()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 8, 8, generator=g), torch.randn(3, 4, 2, 8, 8, generator=g)
    t = train.sample_timesteps(3, g)
    assert t.dtype == torch.int64 and t.shape == (3,) and 0 <= t.min() and t.max() < 1000
    assert torch.equal(train.sample_timesteps(5, torch.Generator().manual_seed(1)),
                       torch.randint(0, 1000, (5,), generator=torch.Generator().manual_seed(1)))
    ids = train.token_ids(tokenizer, ["a red circle moving right", "", "a blue square moving up"])
    with torch.no_grad():
        loss = train.v_prediction_loss(unet, text_encoder, scheduler, x0, noise, t, ids)
        each = train.v_prediction_loss(unet, text_encoder, scheduler, x0, noise, t, ids, reduce=False)
        v = scheduler.get_velocity(x0, noise, t)
        pred = unet(scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=text_encoder(ids)[0]).sample
    weights = train.loss_weights(scheduler.alphas_cumprod, "layout", 5.0, "v_prediction")
    assert each.shape == (3,) and torch.allclose(each, (pred - v).pow(2).mean(dim=(1, 2, 3, 4)) * weights[t])
    assert torch.allclose(loss, each.mean())
    flat = train.v_prediction_loss(unet, text_encoder, scheduler, x0, noise, t, ids, weights=torch.ones(1000))
    assert flat.requires_grad and torch.allclose(flat.detach(), (pred - v).pow(2).mean())


def test_flow_loss_is_the_velocity_error_at_sampled_sigmas():
    g = torch.Generator().manual_seed(0)
    s = train_flow.sample_sigmas(4, g)
    u = torch.rand(4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, train_flow.shifted_sigmas(u)) and torch.all(s >= u)  # shifted towards noise
    model = fc.build_transformer(seed=0)
    x0, noise = torch.randn(4, 4, 2, 8, 8, generator=g), torch.randn(4, 4, 2, 8, 8, generator=g)
    emb = torch.randn(4, fc.TEXT_LENGTH, fc.TEXT_ENCODER_CONFIG["d_model"], generator=g)
    loss = train_flow.flow_loss(model, x0, noise, s, emb)
    with torch.no_grad():
        xs = (1 - s.view(-1, 1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1, 1) * noise
        pred = model(xs, s * 1000, encoder_hidden_states=emb, return_dict=False)[0]
    assert loss.requires_grad and torch.allclose(loss.detach(), (pred - (noise - x0)).pow(2).mean())
    # the transformer stage's batches draw their sigmas with it, after the clips, templates and dropped captions
    mean, table = torch.randn(6, 4, 2, 16, 16).half(), torch.randn(60, len(data.TEMPLATES), 3, 5)
    batch_s = train_flow._flow_batch(mean, torch.arange(6), table, torch.zeros(3, 5), 7, 4, 0, 0.1)[3]
    g = torch.Generator().manual_seed(7)
    torch.randint(0, 6, (4,), generator=g)  # the clips
    torch.randint(0, len(data.TEMPLATES), (4,), generator=g)  # their captions' templates
    torch.rand(4, generator=g)  # the captions dropped
    assert torch.equal(batch_s, train_flow.sample_sigmas(4, g))
    assert np.isfinite(loss.item())
