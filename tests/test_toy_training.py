"""Pieces of the toy model's training recipe that are cheap to check without training."""

from __future__ import annotations

import pytest
import torch

from t2v_nb.toy import components, data, train


@pytest.fixture
def shipped_tokenizer(monkeypatch):
    """Building the tokenizer needs CLIP's merges file from the `train` extra (open_clip_torch); the shipped
    tokenizer is what it builds, so the recipe is tested with that one where the extra is not installed."""
    import os

    from transformers import CLIPTokenizer

    from t2v_nb.models import toy_model_dir

    shipped = os.path.join(toy_model_dir(), "tokenizer")
    monkeypatch.setattr(components, "build_tokenizer", lambda *a, **k: CLIPTokenizer.from_pretrained(shipped))


@pytest.fixture(scope="session")
def early_stage(tmp_path_factory) -> str:
    """A work directory after the recipe's first stages on a toy budget, made once per test process: the VAE
    (2 steps, 16x16 latents), its decoder tuned (1 step), 2 videos encoded. The tests that train the UNet copy it
    (`go_on_from`) instead of each starting from nothing; under pytest-xdist this module runs whole on one worker
    (conftest.ONE_WORKER), which makes it once."""
    import os

    work = str(tmp_path_factory.mktemp("early_stage") / "run")
    os.makedirs(work)
    train.train_vae(work, steps=2, batch_frames=2, scale_factor=4)
    train.tune_decoder(work, steps=1, batch_frames=2)
    train.encode_dataset(work, num_videos=2, chunk=2)
    return work


def go_on_from(early_stage: str, tmp_path) -> str:
    """A copy of the shared early stage at tmp_path/run, for one test to train on."""
    import shutil

    return shutil.copytree(early_stage, str(tmp_path / "run"))


def test_schedule_reaches_pure_noise_and_loss_weights_stay_finite():
    sched = components.build_scheduler()
    ac = sched.alphas_cumprod
    assert ac[-1] == 0 and sched.config.prediction_type == "v_prediction"  # zero terminal SNR needs v
    w = train.loss_weights(ac, "layout", 5.0, "v_prediction")
    assert torch.isfinite(w).all()
    assert w[-1] == pytest.approx(1.0)  # full weight on pure noise, where only the caption can help
    snr = ac / (1 - ac)
    # the clean-latent weight (SNR + 1 for v) times w is min(SNR + 1, 5)
    assert torch.allclose((snr + 1) * w, torch.clamp(snr + 1, max=5.0))
    eps = train.loss_weights(ac[:-1], "min-snr", 5.0, "epsilon")
    assert torch.allclose(snr[:-1] * eps, torch.clamp(snr[:-1], max=5.0))
    with pytest.raises(ValueError, match="weighting"):
        train.loss_weights(ac, "uniform")


def test_unet_learning_rate_warms_up_holds_then_decays_to_zero():
    lr, steps = 5e-4, 12000
    rates = [train.unet_lr(s, steps, lr, decay_steps=3000) for s in range(steps)]
    assert rates[0] == pytest.approx(lr / train.WARMUP_STEPS) and rates[train.WARMUP_STEPS - 1] == pytest.approx(lr)
    assert all(r == pytest.approx(lr) for r in rates[train.WARMUP_STEPS:9000])  # stable until the last 3,000
    decay = rates[9000:]
    assert all(a > b for a, b in zip(decay, decay[1:])) and decay[-1] == pytest.approx(0.0, abs=1e-12)
    assert decay[1499] == pytest.approx(lr / 2, rel=1e-3)  # a cosine: half way down at the middle
    # a longer run with the same decay holds the rate longer: identical until its own decay begins
    longer = [train.unet_lr(s, 16000, lr, decay_steps=3000) for s in range(13000)]
    assert longer[:9000] == rates[:9000] and longer[12999] == pytest.approx(lr)
    assert train.unet_lr(9, 10, lr, decay_steps=0) == pytest.approx(lr * 10 / train.WARMUP_STEPS)  # no decay
    assert train.unet_lr(9, 10, lr, decay_steps=3000) == pytest.approx(0.0, abs=1e-12)  # decay covers a short run
    with pytest.raises(ValueError, match="decay_steps"):
        train.unet_lr(0, 10, lr, decay_steps=-1)
    # a run that went on with a fresh optimizer at step 5,000 warms up again from there, then follows the schedule
    rewarmed = [train.unet_lr(s, steps, lr, 3000, rewarm_from=5000) for s in range(5000, steps)]
    assert rewarmed[0] == pytest.approx(lr / train.WARMUP_STEPS) and rewarmed[train.WARMUP_STEPS - 1] == pytest.approx(lr)
    assert rewarmed[train.WARMUP_STEPS:] == rates[5000 + train.WARMUP_STEPS:]


def test_warm_start_moves_the_spatial_layers_between_unet_kinds():
    motion = components.build_unet(seed=1, kind="motion")
    unet3d = components.build_unet(seed=2, kind="3d")
    fresh = components.warm_start(unet3d, motion.state_dict())
    own = unet3d.state_dict()
    assert any("temp_convs" in n for n in fresh)  # temporal layers have no counterpart
    copied = [n for n in own if n not in fresh]
    assert "conv_in.weight" in copied and any(".attentions." in n for n in copied)
    src = motion.state_dict()
    for n in copied:
        assert torch.equal(own[n].flatten(), src[n].flatten())
    with pytest.raises(ValueError, match="UNet kind"):
        components.build_unet(kind="2d")


def test_unet_width_is_an_option_checked_against_its_norm_groups():
    assert components.build_unet(kind="3d").config.block_out_channels == (32, 64)  # the shipped width
    assert components.build_unet(kind="motion", channels=16).config.block_out_channels == (16, 32)
    for bad in (12, 0, -8, 16.0):
        with pytest.raises(ValueError, match="multiple of 8"):
            components.build_unet(channels=bad)


def test_vae_scale_factor_4_gives_16x16_latents_and_a_unet_with_a_16x16_level():
    vae = components.build_vae(scale_factor=4)
    assert components.vae_scale_factor(vae) == 4 and components.vae_scale_factor(components.build_vae()) == 8
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
    assert z.shape == (1, 4, 16, 16)
    unet = components.build_unet(channels=16, sample_size=16)
    assert unet.config.block_out_channels == (16, 32, 32)
    assert unet.config.down_block_types == ("DownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D")
    assert components.build_unet(kind="motion", sample_size=16).config.up_block_types[-1] == "UpBlockMotion"
    with torch.no_grad():
        out = unet(torch.randn(1, 4, 2, 16, 16), 10, encoder_hidden_states=torch.randn(1, 3, 64)).sample
    assert out.shape == (1, 4, 2, 16, 16)
    with pytest.raises(ValueError, match="scale factor must be 4 or 8"):
        components.build_vae(scale_factor=2)
    with pytest.raises(ValueError, match="must be 8 or 16"):
        components.build_unet(sample_size=32)


def test_caption_probe_measures_the_loss_with_the_direction_or_shape_word_changed(monkeypatch):
    import os

    from transformers import CLIPTokenizer

    from t2v_nb.models import toy_model_dir

    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(toy_model_dir(), "tokenizer"))
    cache = {"mean": torch.randn(6, 4, 2, 8, 8).half(), "clip": torch.arange(0, 60, 10)}
    unet, text_encoder = components.build_unet(channels=8), components.build_text_encoder(len(tokenizer))
    probe = train.caption_probe(cache, 1.0, tokenizer, components.build_scheduler(), n=4)
    row = probe(unet, text_encoder)
    assert set(row) == {"probe_loss", "direction_gap", "direction_gap_rel", "shape_gap", "shape_gap_rel"}
    assert row["probe_loss"] > 0 and row["shape_gap"] != 0 and row["direction_gap"] != 0  # words change the output
    assert row == probe(unet, text_encoder)  # a fixed batch: the same weights give the same figures
    monkeypatch.setattr(train, "_OTHER_SHAPE", {s: s for s in train._OTHER_SHAPE})  # "changed" to itself
    assert train.caption_probe(cache, 1.0, tokenizer, components.build_scheduler(), n=4)(unet, text_encoder)["shape_gap"] == 0


@pytest.mark.slow
def test_recipe_runs_end_to_end_resumes_and_exports(tmp_path, shipped_tokenizer, capsys):
    """The whole recipe on a toy budget: each stage checkpoints, a second call with the same budget does
    nothing, the decoder stage leaves the encoder alone, and the export loads."""
    import json
    import os

    import numpy as np

    import t2v_nb

    work = str(tmp_path / "run")
    os.makedirs(work)
    train.train_vae(work, steps=2, batch_frames=2, scale_factor=8)  # the 8x8 model's VAE (the default is 4)
    vae_before = train.load_vae(work).state_dict()
    train.tune_decoder(work, steps=2, batch_frames=2)
    ckpt = torch.load(os.path.join(work, "vae.pt"), weights_only=False)
    assert ckpt["state"]["step"] == 2 and ckpt["state"]["done"] and ckpt["state"]["decoder"]["step"] == 2
    after = ckpt["model"]
    assert all(torch.equal(vae_before[k], after[k]) for k in after if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(vae_before[k], after[k]) for k in after if k.startswith("decoder."))
    train.tune_decoder(work, steps=2)  # budget reached: nothing changes
    assert torch.load(os.path.join(work, "vae.pt"), weights_only=False)["state"]["decoder"]["step"] == 2

    train.encode_dataset(work, num_videos=4, chunk=4)
    train.train_unet(work, steps=1, batch_size=2, eval_every=0, channels=16)  # a narrower UNet than shipped
    train.train_unet(work, steps=1, batch_size=2, eval_every=0)  # resumes at its budget: no step
    assert torch.load(os.path.join(work, "unet.pt"), weights_only=False)["state"]["step"] == 1
    train.train_unet(work, steps=5, batch_size=2, eval_every=0, device="cpu", max_minutes=0)  # out of time at once
    ckpt = torch.load(os.path.join(work, "unet.pt"), weights_only=False)
    assert ckpt["state"]["step"] == 1 and ckpt["state"]["seconds_by_device"]["cpu"] > 0
    assert all(v.device.type == "cpu" for v in ckpt["ema_unet"].values())  # resumable on a machine without a GPU
    train.train_unet(work, steps=4, batch_size=2, eval_every=0, decay_steps=2)
    stable = torch.load(train.stable_checkpoint_path(work), weights_only=False)  # kept from before the decay
    assert stable["state"]["step"] == 2 and stable["opt"]["param_groups"][0]["lr"] == pytest.approx(5e-4 * 2 / 300)
    ckpt = torch.load(os.path.join(work, "unet.pt"), weights_only=False)
    assert ckpt["state"]["step"] == 4 and ckpt["state"]["unet_channels"] == 16  # resumed runs keep their width

    # the probes read a work directory: the log's probe, and the shape probe split by pair
    import re

    from t2v_nb.toy import diagnostics

    diagnostics.probe(work)
    diagnostics.shape_pairs(work, n=2)
    printed = capsys.readouterr().out
    assert "(step 4): probe_loss" in printed and "shape_gap_rel" in printed
    pairs = dict(re.findall(r"(\w+->\w+) (-?[\d.]+)", printed))
    shapes = {every.shape for every in (data.all_clips()[c] for c in torch.load(
        os.path.join(work, "latents.pt"))["clip"].tolist())}
    assert {k.split("->")[0] for k in pairs} == shapes and len(pairs) == 2 * len(shapes)
    assert all(np.isfinite(float(v)) for v in pairs.values())

    out = str(tmp_path / "export")
    train.export(work, out)
    index = json.load(open(os.path.join(out, "model_index.json")))
    assert index["training"]["unet_steps"] == 4 and index["training"]["decoder_steps"] == 2
    assert index["training"]["unet_decay_steps"] == 2
    assert json.load(open(os.path.join(out, "unet", "config.json")))["block_out_channels"] == [16, 32]
    assert {"vocab.json", "merges.txt", "tokenizer.json"} <= set(os.listdir(os.path.join(out, "tokenizer")))
    pipe = t2v_nb.load(out)
    video = pipe.generate("a red circle moving right", seed=0, num_inference_steps=2, progress=False)
    assert video.frames.shape == (8, 64, 64, 3) and np.isfinite(video.frames).all()
    diagnostics.step_speed(out, batch=1, repeats=1, modes=("fp32", "bf16"))  # the benchmark of a training step
    timed = [line.split(": ")[-1].split() for line in capsys.readouterr().out.splitlines() if "s a step" in line]
    assert [row[0] for row in timed] == ["fp32", "bf16"] and all(float(row[1]) > 0 for row in timed)


def test_recipe_with_16x16_latents_keeps_its_latent_size_through_resume_and_export(tmp_path, shipped_tokenizer,
                                                                                    early_stage):
    import json
    import os

    import t2v_nb

    work = go_on_from(early_stage, tmp_path)  # a VAE of 2 steps made with scale_factor=4, its decoder tuned
    train.train_vae(work, steps=2, batch_frames=2, scale_factor=8)  # run again with another factor: keeps its own
    ckpt = torch.load(os.path.join(work, "vae.pt"), weights_only=False)
    assert ckpt["state"]["step"] == 2 and ckpt["state"]["scale_factor"] == 4
    train.tune_decoder(work, steps=1, batch_frames=2)
    assert components.vae_scale_factor(train.load_vae(work)) == 4
    train.encode_dataset(work, num_videos=2, chunk=2)
    assert torch.load(os.path.join(work, "latents.pt"))["mean"].shape[1:] == (4, 8, 16, 16)
    train.train_unet(work, steps=1, batch_size=2, eval_every=0, channels=8)
    assert torch.load(os.path.join(work, "unet.pt"), weights_only=False)["state"]["latent_size"] == 16
    out = str(tmp_path / "export")
    train.export(work, out, fit_preview=False)
    assert json.load(open(os.path.join(out, "unet", "config.json")))["sample_size"] == 16
    pipe = t2v_nb.load(out)
    assert pipe.vae_scale_factor == 4
    video = pipe.generate("a red circle moving right", seed=0, num_inference_steps=2, progress=False)
    assert video.frames.shape == (8, 64, 64, 3)

    cache = torch.load(os.path.join(work, "latents.pt"))  # a UNet for 16x16 latents meets a cache of 8x8 ones
    torch.save({k: v if k == "clip" else v[..., ::2, ::2] for k, v in cache.items()}, os.path.join(work, "latents.pt"))
    with pytest.raises(ValueError, match="16x16 latents but the latent cache's are 8x8"):
        train.train_unet(work, steps=2, batch_size=2, eval_every=0)


def test_ctrl_c_finishes_the_step_checkpoints_and_the_same_call_carries_on(tmp_path, shipped_tokenizer, monkeypatch,
                                                                           early_stage):
    """Issue 13's "Ctrl-C safe": a real SIGINT in the middle of a UNet step raises no KeyboardInterrupt; the
    step finishes, a checkpoint is written, and the same call again trains on to its budget."""
    import os
    import signal

    work = go_on_from(early_stage, tmp_path)

    calls = []
    target = train._target

    def interrupted_at_the_second_step(*args):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, while the step is half done
        return target(*args)

    monkeypatch.setattr(train, "_target", interrupted_at_the_second_step)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(train, "_stop", train.Stop())
    try:
        train._stop.install()
        train.train_unet(work, steps=5, batch_size=2, eval_every=0, channels=8)
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
    assert train._stop  # the signal was seen ...
    assert torch.load(os.path.join(work, "unet.pt"), weights_only=False)["state"]["step"] == 2  # ... after the step

    monkeypatch.setattr(train, "_stop", train.Stop())  # the next run of the same command
    train.train_unet(work, steps=5, batch_size=2, eval_every=0, channels=8)
    assert len(calls) == 5
    assert torch.load(os.path.join(work, "unet.pt"), weights_only=False)["state"]["step"] == 5


def test_a_run_moves_to_a_new_work_directory_through_its_export(tmp_path, shipped_tokenizer, early_stage):
    """Export + init_from carry a run to another machine (or session) in the diffusers layout: the step count,
    the CPU time and the VAE carry over, the latent cache is encoded again to the same numbers, and the UNet goes
    on from the exported (EMA) weights with a fresh optimizer, its learning rate warming up again."""
    import json
    import os

    work = go_on_from(early_stage, tmp_path)
    out, moved = (str(tmp_path / name) for name in ("export", "moved"))
    train.train_unet(work, steps=2, batch_size=2, eval_every=0, channels=8)
    before = torch.load(os.path.join(work, "unet.pt"), weights_only=False)
    train.export(work, out, fit_preview=False)
    info = json.load(open(os.path.join(out, "model_index.json")))["training"]
    assert info["unet_steps"] == 2 and info["unet_cpu_minutes"] == round(before["state"]["cpu_seconds"] / 60, 1)

    index = json.load(open(os.path.join(out, "model_index.json")))
    index["training"]["unet_cpu_minutes"] = 12.5  # as if it had trained for longer: the figure must carry over
    json.dump(index, open(os.path.join(out, "model_index.json"), "w"))
    os.makedirs(moved)
    train.init_from(moved, out)
    assert torch.load(os.path.join(moved, "unet.pt"), weights_only=False)["state"]["cpu_seconds"] == 12.5 * 60
    train.tune_decoder(moved, steps=1)  # its budget is reached already: the exported VAE is the tuned one
    train.encode_dataset(moved, num_videos=2, chunk=2)
    old, new = torch.load(os.path.join(work, "latents.pt")), torch.load(os.path.join(moved, "latents.pt"))
    assert torch.equal(old["clip"], new["clip"]) and torch.allclose(old["mean"], new["mean"], atol=1e-5)
    train.train_unet(moved, steps=4, batch_size=2, eval_every=0)
    ckpt = torch.load(os.path.join(moved, "unet.pt"), weights_only=False)
    assert ckpt["state"]["step"] == 4 and ckpt["state"]["unet_channels"] == 8 and ckpt["state"]["latent_size"] == 16
    assert ckpt["state"]["fresh_optimizer_at"] == [2] and ckpt["state"]["rewarm_from"] == 2
    # step 3 (0-based) is the second after the move: the rate is 2/300 of the warmed-up one's at that step
    assert ckpt["opt"]["param_groups"][0]["lr"] == pytest.approx(train.unet_lr(3, 4, 5e-4, 3000) * 2 / train.WARMUP_STEPS)
    assert ckpt["state"]["cpu_seconds"] > 12.5 * 60  # carried on, not started over
    train.export(moved, out, fit_preview=False)
    assert json.load(open(os.path.join(out, "model_index.json")))["training"]["unet_fresh_optimizer_at"] == [2]
    # the same command in the next session, where the work directory survived: its own checkpoints are kept
    assert train.init_from(moved, out) == []
    assert torch.load(os.path.join(moved, "unet.pt"), weights_only=False)["state"]["step"] == 4


def test_the_recipe_asks_for_the_train_extra_before_any_work(tmp_path, monkeypatch):
    """Without open_clip_torch (the `train` extra) the tokenizer cannot be built; the command says so at once,
    not after the VAE stages, and leaves no work directory behind."""
    import importlib.util
    import os

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "open_clip" else find_spec(name, *a))
    work = tmp_path / "run"
    with pytest.raises(ImportError, match=r"\.\[train\]"):
        train.main(["--workdir", str(work), "--vae-steps", "1"])
    assert not os.path.exists(work)
