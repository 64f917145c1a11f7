"""load(): presets, local directories, hub ids offline, devices, dtypes, and what it refuses."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from conftest import save_model_dir

import t2v_nb
from t2v_nb import models


def save_dir(tmp_path, unet_kind="3d", safe=True):
    return save_model_dir(tmp_path / "model", unet_kind=unet_kind, safe=safe)


def test_load_local_directory_of_either_unet(tmp_path):
    for kind in ("3d", "motion"):
        d = save_dir(tmp_path / kind, unet_kind=kind)
        pipe = t2v_nb.load(str(d), device="cpu")
        assert pipe.device.type == "cpu" and pipe.dtype == torch.float32
        assert not any(p.requires_grad for p in pipe.unet.parameters())
        video = pipe.generate("a", seed=0, num_frames=2, height=16, width=16, num_inference_steps=2, progress=False)
        assert video.frames.shape == (2, 16, 16, 3)
        assert pipe.source["source"] == str(d)


def test_pickle_weights_need_opt_in(tmp_path):
    d = save_dir(tmp_path, safe=False)
    with pytest.raises(OSError):
        t2v_nb.load(str(d), device="cpu")
    pipe = t2v_nb.load(str(d), device="cpu", allow_pickle=True)
    assert pipe.unet is not None


def test_zeroscope_needs_pickle_opt_in_before_any_download():
    with pytest.raises(ValueError, match="allow_pickle=True"):
        t2v_nb.load("zeroscope-v2-576w", device="cpu")


def test_model_index_cannot_name_arbitrary_classes(tmp_path):
    d = save_dir(tmp_path)
    index = json.loads((d / "model_index.json").read_text())
    index["unet"] = ["my_package", "EvilUNet"]
    (d / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="no remote code"):
        t2v_nb.load(str(d), device="cpu")


def test_unknown_sources_get_suggestions(tmp_path):
    with pytest.raises(ValueError, match="'toy-shapes'"):
        t2v_nb.load("toy-shape")
    with pytest.raises(ValueError, match="model_index.json"):
        t2v_nb.load(str(tmp_path))  # a directory, but not a model
    with pytest.raises(TypeError):
        t2v_nb.load(42)


def test_hub_download_failure_says_what_works_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="toy-shapes"):
        t2v_nb.load("someone/some-video-model", device="cpu")


def test_devices():
    assert models.choose_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="device"):
        models.choose_device("tpu")
    with pytest.raises(ValueError):
        models.choose_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            models.choose_device("cuda")


def test_dtypes(monkeypatch):
    cpu = torch.device("cpu")
    assert models.choose_dtype(cpu) == torch.float32
    with pytest.warns(UserWarning, match="float32"):
        assert models.choose_dtype(cpu, torch.float16) == torch.float32
    with pytest.raises(ValueError):
        models.choose_dtype(cpu, "float8")
    # A T4 (compute capability 7.5) has no native bf16: is_bf16_supported() would say True anyway.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert models.choose_dtype(torch.device("cuda"), torch.bfloat16) == torch.float16
    assert models.choose_dtype(torch.device("cuda")) == torch.float16


def test_presets_carry_their_facts():
    ms, zs = models.PRESETS["modelscope-1.7b"], models.PRESETS["zeroscope-v2-576w"]
    assert ms.variant == "fp16" and (ms.height, ms.width, ms.num_frames) == (256, 256, 16)
    assert zs.variant is None and zs.pickle_only and (zs.width, zs.height) == (576, 320)
    assert "watermark" in ms.notes.lower()


def test_bundled_toys_carry_their_presets_defaults():
    # the export writes Preset.sampler_defaults(); the shipped directories must agree with the presets
    import os

    for name, folder, extra in (("toy-shapes", "weights", set()),
                                ("toy-shapes-flow", "weights_flow", {"max_sequence_length", "flow_shift",
                                                                     "diffusers_num_frames"})):
        preset = models.PRESETS[name]
        with open(os.path.join(os.path.dirname(t2v_nb.__file__), "toy", folder, "model_index.json")) as f:
            shipped = json.load(f)["t2v_nb_defaults"]
        wanted = preset.sampler_defaults()
        assert {k: v for k, v in shipped.items() if k not in extra} == wanted
        assert ("guidance_interval" in wanted) == (preset.guidance_interval is not None)
    assert "guidance_interval" not in models.PRESETS["toy-shapes"].sampler_defaults()  # every step (toy README)
    early = dataclasses.replace(models.PRESETS["toy-shapes"], guidance_interval=(700.0, 1000.0))
    assert early.sampler_defaults()["guidance_interval"] == [700.0, 1000.0]


def test_hub_loads_record_the_commit_they_resolved_to(tmp_path, monkeypatch):
    snap = tmp_path / "models--a--b" / "snapshots" / "0123abcd" / "model_index.json"
    snap.parent.mkdir(parents=True)
    snap.write_text('{"unet": ["diffusers", "UNet3DConditionModel"]}')
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, revision=None: str(snap))
    index, commit = models._read_index("a/b", None, local=False)
    assert commit == "0123abcd" and index["unet"][1] == "UNet3DConditionModel"


def test_load_keeps_transformers_progress_bars_quiet_and_restores_them(tmp_path, capfd):
    """transformers draws a "Loading weights" bar per model it loads; inside load() it does not, and its switch is
    back as it was afterwards (on, or off when the user turned it off). t2v_nb's own progress bar still shows."""
    from huggingface_hub import utils as hub_utils
    from transformers import CLIPTextModel
    from transformers.utils import logging as hf_logging

    d = save_dir(tmp_path)
    was_on, hub_was_off = hf_logging.is_progress_bar_enabled(), hub_utils.are_progress_bars_disabled()
    try:
        hf_logging.enable_progress_bar()
        CLIPTextModel.from_pretrained(str(d / "text_encoder"))
        assert "Loading weights" in capfd.readouterr().err  # what load() would show without the switch
        pipe = t2v_nb.load(str(d), device="cpu")
        assert "Loading weights" not in capfd.readouterr().err
        assert hf_logging.is_progress_bar_enabled() and not hub_utils.are_progress_bars_disabled()
        pipe.generate("a", seed=0, num_frames=2, height=16, width=16, num_inference_steps=2, progress=True)
        assert "denoising" in capfd.readouterr().err
        hf_logging.disable_progress_bar()
        t2v_nb.load(str(d), device="cpu")
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was_on else hf_logging.disable_progress_bar)()
        (hub_utils.disable_progress_bars if hub_was_off else hub_utils.enable_progress_bars)()


def test_presets_name_their_family_and_it_holds_the_loading_facts():
    from t2v_nb.families import FAMILIES

    assert all(p.family in FAMILIES for p in models.PRESETS.values())
    # what the presets said themselves before these facts moved to the families (issue 38)
    assert {k for k, p in models.PRESETS.items() if p.text_first} == {"cogvideox-2b", "wan2.1-t2v-1.3b", "ltx-video-2b"}
    assert not models.PRESETS["toy-shapes-flow"].text_first  # a Wan, but bundled: its tiny UMT5 stays
    assert dict(models.PRESETS["animatediff-v1-5-2"].scheduler_config) == {
        "beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "linspace", "steps_offset": 1}
    assert all(not p.scheduler_config for k, p in models.PRESETS.items() if k != "animatediff-v1-5-2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        models.PRESETS["cogvideox-2b"].text_first = False  # read-only: ask the family
    for name in ("toy-shapes", "toy-shapes-flow"):  # the bundled ones can be checked offline
        assert t2v_nb.load(name, device="cpu").family.name == models.PRESETS[name].family


def _animatediff_parts(tmp_path):
    """A tiny AnimateDiff split as the preset has it: an SD-style base directory (UNet2DConditionModel, its own
    scheduler config) and a motion adapter in a directory of its own."""
    import shutil

    import tiny_animatediff

    tiny_animatediff.reference(tiny_animatediff.components(scheduler="ddim")).save_pretrained(tmp_path / "ad")
    base = tmp_path / "base"
    shutil.copytree(tmp_path / "ad", base, ignore=shutil.ignore_patterns("motion_adapter"))
    index = json.loads((base / "model_index.json").read_text())
    del index["motion_adapter"]
    index["_class_name"] = "StableDiffusionPipeline"
    (base / "model_index.json").write_text(json.dumps(index))
    return base, tmp_path / "ad" / "motion_adapter"


def test_a_preset_assembled_from_parts_gets_its_familys_slot_class_and_scheduler(tmp_path, monkeypatch):
    base, adapter = _animatediff_parts(tmp_path)
    real = models.PRESETS["animatediff-v1-5-2"]
    preset = dataclasses.replace(real, source=str(base), extra=(("motion_adapter", str(adapter), None),))
    monkeypatch.setitem(models.PRESETS, "tiny-ad", preset)
    pipe = t2v_nb.load("tiny-ad", device="cpu")
    assert pipe.family.name == "animatediff" and type(pipe.unet).__name__ == "UNetMotionModel"
    got = {k: pipe.scheduler.config[k] for k in ("beta_schedule", "clip_sample", "timestep_spacing", "steps_offset")}
    assert got == dict(preset.scheduler_config) == pipe.family.assembled_scheduler_config
    assert t2v_nb.load(str(tmp_path / "ad"), device="cpu").scheduler.config["beta_schedule"] != "linear"  # whole dir
    monkeypatch.setitem(models.PRESETS, "tiny-ad", dataclasses.replace(preset, family="modelscope"))
    with pytest.raises(ValueError, match="not an optional slot"):
        t2v_nb.load("tiny-ad", device="cpu")
    monkeypatch.setitem(models.PRESETS, "tiny-ad", dataclasses.replace(preset, source=str(tmp_path / "ad"),
                                                                       family="wan", extra=()))
    with pytest.raises(ValueError, match="animatediff family, but its preset says 'wan'"):
        t2v_nb.load("tiny-ad", device="cpu")
