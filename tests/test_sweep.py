"""t2v_nb.sweep: the grid, its files and manifest, resuming, the CLI, two processes against one, the contact sheet."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import t2v_nb
from t2v_nb import viz
from t2v_nb.sweep import SweepResult, check_grid, read_config, read_manifests

sweep_module = importlib.import_module("t2v_nb.sweep")
ROOT = pathlib.Path(__file__).resolve().parents[1]
from conftest import FAMILY_MODULES  # noqa: E402

PROMPT = "a red circle moving right"


def _small(fam) -> dict:
    """The family's small settings as one-value axes, with two steps."""
    return {k: [v] for k, v in {**fam.SMALL, "num_inference_steps": 2}.items()}


def _counting(pipe, monkeypatch) -> list:
    """Count the runs the pipe starts."""
    started, start = [], pipe.start
    monkeypatch.setattr(pipe, "start", lambda *a, **k: started.append(k.get("seed")) or start(*a, **k))
    return started


@pytest.fixture(scope="module")
def tiny():
    return importlib.import_module("tiny_modelscope").tiny_pipe()


# ------------------------------------------------------------------------------------------ the grid


@pytest.mark.parametrize("settings, error, match", [
    ({"guidance_scal": [1, 3]}, ValueError, "Unknown setting 'guidance_scal'. Did you mean 'guidance_scale'"),
    ({"guidance_scale": []}, ValueError, "guidance_scale is empty"),
    ({"guidance_scale": 3.0}, TypeError, r"guidance_scale must be a list .*guidance_scale=\[3.0\]"),
    ({"scheduler": "ddim"}, TypeError, "scheduler must be a list"),
    ({"num_inference_steps": {4, 8}}, TypeError, "a set"),
    ({"guidance_scale": [1, 3, 1]}, ValueError, "lists 1 more than once"),
    ({"record": ["all"]}, ValueError, "'record' cannot be swept"),
    ({"seed": [1]}, ValueError, "pass seeds="),
    ({"scheduler": [None]}, TypeError, "short names"),
    ({"guidance_interval": [700]}, ValueError, r"None or \[t_low, t_high\]"),
    ({"guidance_scale": [object()]}, TypeError, "cannot write"),
])
def test_a_bad_grid_is_refused_before_any_work(tiny, tmp_path, monkeypatch, settings, error, match):
    started = _counting(tiny, monkeypatch)
    with pytest.raises(error, match=match):
        t2v_nb.sweep(tiny, prompts=[PROMPT], seeds=[0], out=tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists() and started == []


@pytest.mark.parametrize("prompts, seeds, match", [
    ([PROMPT], [-1], r"seeds must be ints in \[0, 2\*\*63\)"),
    ([PROMPT], [0.5], "seeds must be ints"),
    ([PROMPT], [True], "seeds must be ints"),
    ([PROMPT], 3, "seeds must be a list"),
    ([PROMPT], [], "seeds is empty"),
    ([], [0], "prompts is empty"),
    ([""], [0], "non-empty strings"),
])
def test_bad_prompts_and_seeds(prompts, seeds, match):
    with pytest.raises((TypeError, ValueError), match=match):
        check_grid(prompts, seeds, {})


def test_the_models_own_checks_run_on_every_combination_first(tiny, tmp_path, monkeypatch):
    started = _counting(tiny, monkeypatch)
    with pytest.raises(ValueError, match=r'In the combination .*"num_inference_steps": 0.*at least 1'):
        t2v_nb.sweep(tiny, [PROMPT], [0], tmp_path / "a", num_inference_steps=[2, 0], num_frames=[3])
    with pytest.raises(ValueError, match="Unknown scheduler|not one of|unknown"):
        t2v_nb.sweep(tiny, [PROMPT], [0], tmp_path / "b", scheduler=["ddim", "no-such-sampler"])
    assert started == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_grid_order_and_one_prompt_as_a_str():
    axes = check_grid(PROMPT, range(2), {"guidance_scale": [1, 3], "scheduler": ["ddim"]})
    assert list(axes) == ["prompt", "guidance_scale", "scheduler", "seed"]
    combos = sweep_module.combinations(axes)
    assert [(c["guidance_scale"], c["seed"]) for c in combos] == [(1, 0), (1, 1), (3, 0), (3, 1)]


# ------------------------------------------------------------------------------ every family, files


@pytest.mark.parametrize("module", FAMILY_MODULES)
def test_sweep_on_every_family(module, tmp_path):
    fam = importlib.import_module(module)
    pipe = fam.tiny_pipe()
    result = t2v_nb.sweep(pipe, prompts=[PROMPT], seeds=[0, 1], out=tmp_path, guidance_scale=[1.0, 4.0],
                          progress=False, **_small(fam))
    assert len(result.entries) == 4 and not result.missing
    assert result.swept == ["guidance_scale", "seed"]
    assert len(read_manifests(tmp_path)) == 4
    entry = result.find(seed=1, guidance_scale=4.0)[0]
    assert set(entry["files"]) == {"video", "record", "frames"}
    assert all((tmp_path / f).stat().st_size == n for f, n in entry["bytes"].items())
    # the seed belongs to the combination: the same frames as one generate() call with its settings
    expected = pipe.generate(PROMPT, seed=1, guidance_scale=4.0, progress=False,
                             **{**fam.SMALL, "num_inference_steps": 2}).to_uint8()
    np.testing.assert_array_equal(result.frames(entry), expected)
    record = json.loads(result.path(entry, "record").read_text())["record"]
    assert (record["seed"], record["guidance_scale"], record["family"]) == (1, 4.0, fam.NAME)
    fig = viz.contact_sheet(result)
    assert len(fig.axes) == 4


@pytest.mark.parametrize("model", ["toy-shapes", "toy-shapes-flow"])
def test_the_cli_on_the_toys(model, tmp_path, capsys):
    out = tmp_path / "s"
    code = sweep_module.main([
        "--model", model, "--out", str(out), "--prompt", PROMPT, "--prompt", "a blue square moving left",
        "--seeds", "0", "--set", "scheduler=euler,dpm++", "--set", "num_inference_steps=2", "--set", "num_frames=2",
        "--pred-x0", "--device", "cpu", "--quiet"])
    assert code == 0
    result = SweepResult.load(out)
    assert len(result.entries) == 4 and result.swept == ["prompt", "scheduler"]
    assert all(result.path(e, "pred_x0").stat().st_size > 0 for e in result.entries)
    assert (out / "contact_sheet.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "dpm++" in printed and "contact sheet" in printed


def test_pred_x0_pictures_and_the_table(tiny, tmp_path):
    result = t2v_nb.sweep(tiny, [PROMPT], [0, 1], tmp_path, pred_x0=True, frames=False, progress=False,
                          num_inference_steps=[3], num_frames=[3])
    assert all(set(e["files"]) == {"video", "record", "pred_x0"} for e in result.entries)
    table = result.table().splitlines()
    assert table[0].split() == ["seed", "seconds", "video"] and len(table) == 3
    assert result.rows()[1]["seed"] == 1 and result.rows()[1]["video"].endswith(".mp4")


# ------------------------------------------------------------------------------------------ resuming


def test_resume_after_an_interrupt(tiny, tmp_path, monkeypatch):
    grid = dict(prompts=[PROMPT], seeds=[0, 1], guidance_scale=[1.0, 4.0], num_inference_steps=[2], num_frames=[3],
                progress=False)

    def interrupt(value, ctx):  # the third combination (guidance 4, seed 0) is stopped mid-run
        if ctx.run.params["guidance_scale"] == 4.0 and ctx.run.params["seed"] == 0 and ctx.step == 1:
            raise KeyboardInterrupt

    with tiny.hooks({"step.latents": interrupt}), pytest.raises(KeyboardInterrupt):
        t2v_nb.sweep(tiny, out=tmp_path, **grid)
    assert len(read_manifests(tmp_path)) == 2
    started = _counting(tiny, monkeypatch)
    result = t2v_nb.sweep(tiny, out=tmp_path, **grid)
    assert started == [0, 1] and len(result.entries) == 4  # the two done were skipped
    reference = {e["id"]: result.frames(e) for e in result.entries}
    mp4s = {e["id"]: result.path(e).read_bytes() for e in result.entries}

    # Partial results: files without a manifest line, a file cut short, a manifest line cut off.
    a, b, c = result.entries[:3]
    manifest = tmp_path / "manifest.jsonl"
    lines = [line for line in manifest.read_text().splitlines() if json.loads(line)["id"] != a["id"]]
    manifest.write_text("\n".join(lines) + "\n" + json.dumps(c)[:40])  # a: no line; c's new line cut off
    video = result.path(b)
    video.write_bytes(video.read_bytes()[:100])  # b: cut short
    started.clear()
    again = t2v_nb.sweep(tiny, out=tmp_path, **grid)
    assert sorted(started) == sorted([a["combination"]["seed"], b["combination"]["seed"]])
    assert [e["id"] for e in again.entries] == list(reference)
    for e in again.entries:
        np.testing.assert_array_equal(again.frames(e), reference[e["id"]])
        assert again.path(e).read_bytes() == mp4s[e["id"]]
    assert sum(not _parses(line) for line in manifest.read_text().splitlines()) == 1  # only the line cut off
    started.clear()
    t2v_nb.sweep(tiny, out=tmp_path, **grid)
    assert started == []
    t2v_nb.sweep(tiny, out=tmp_path, overwrite=True, **grid)
    assert len(started) == 4


def _parses(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


# -------------------------------------------------------------------------- two processes against one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], tmp_path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           "ACCELERATE_CONFIG_DIR": str(tmp_path / "accelerate")}  # no user config file: the defaults
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_two_accelerate_processes_write_the_same_files_as_one(tmp_path):
    from conftest import save_model_dir

    model = save_model_dir(tmp_path / "model", unet_kind="3d",
                           defaults={"height": 16, "width": 16, "num_frames": 3, "num_inference_steps": 2,
                                     "guidance_scale": 4.0})
    config = {"model": str(model), "prompts": [PROMPT], "seeds": [0, 1, 2],
              "settings": {"guidance_scale": [1.0, 4.0], "scheduler": ["ddim", "euler-a"]}, "contact_sheet": False}
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(config))
    _run(["-m", "t2v_nb.sweep", str(path), "--out", str(tmp_path / "one"), "--quiet"], tmp_path)
    _run(["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
          "-m", "t2v_nb.sweep", str(path), "--out", str(tmp_path / "two"), "--quiet"], tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    assert sorted(p.name for p in two.glob("manifest*")) == ["manifest.0.jsonl", "manifest.1.jsonl"]
    by_process = {json.loads(line)["process"] for p in two.glob("manifest*") for line in p.read_text().splitlines()}
    assert by_process == {0, 1}  # both processes made some
    files = sorted(p.name for p in one.iterdir() if not p.name.startswith("manifest"))
    assert len(files) == 3 * 2 * 2 * 3  # 12 combinations, 3 files each
    assert files == sorted(p.name for p in two.iterdir() if not p.name.startswith("manifest"))
    for name in files:  # frames, MP4 and record: the same bytes whichever process made them
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    a, b = read_manifests(one), read_manifests(two)
    assert a.keys() == b.keys() and all(a[k]["combination"] == b[k]["combination"] for k in a)


# ----------------------------------------------------------------------------------- contact sheet


@pytest.fixture(scope="module")
def three_axes(tmp_path_factory):
    out = tmp_path_factory.mktemp("sheet")
    pipe = importlib.import_module("tiny_modelscope").tiny_pipe()
    return t2v_nb.sweep(pipe, [PROMPT, "a blue square moving left"], [0, 1], out, guidance_scale=[1.0, 4.0],
                        num_inference_steps=[2], num_frames=[3], progress=False)


def test_contact_sheet_layouts(three_axes, tmp_path):
    fig = viz.contact_sheet(three_axes, path=tmp_path / "sheet.png")  # rows: prompt x guidance; columns: seed
    assert len(fig.axes) == 4 * 2 and (tmp_path / "sheet.png").stat().st_size > 0
    assert [ax.get_title() for ax in fig.axes[:2]] == ["seed=0", "seed=1"]
    assert fig.axes[0].get_ylabel() == f"prompt={PROMPT}\nguidance_scale=1"
    fig = viz.contact_sheet(three_axes.folder, rows="guidance_scale", cols="prompt", where={"seed": 1}, cell="middle")
    assert len(fig.axes) == 2 * 2
    assert fig.axes[0].images[0].get_array().shape == (16, 16, 3)
    strip = viz.contact_sheet(three_axes, max_frames=2).axes[0].images[0].get_array()
    assert strip.shape == (16, 2 * 16 + 1, 3)  # two frames and a gap


def test_contact_sheet_marks_what_is_not_made(three_axes, tmp_path):
    partial = SweepResult(three_axes.folder, three_axes.axes, three_axes.entries[1:])
    fig = viz.contact_sheet(partial)
    assert [t.get_text() for t in fig.axes[0].texts] == ["not made"] and not fig.axes[1].texts


@pytest.mark.parametrize("kwargs, match", [
    ({"rows": "prompt", "cols": "seed"}, "guidance_scale vary but are neither rows nor columns"),
    ({"rows": "speed"}, "'speed' is not an axis"),
    ({"rows": "seed", "cols": ["seed", "prompt"]}, "both rows and columns"),
    ({"cell": "first"}, "cell must be"),
    ({"where": {"seed": 7}}, "No results"),
    ({"where": {"sed": 0}}, "'sed' is not an axis"),
])
def test_contact_sheet_errors(three_axes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.contact_sheet(three_axes, **kwargs)


def test_load_a_folder_without_results(tmp_path):
    with pytest.raises(ValueError, match="no complete sweep results"):
        SweepResult.load(tmp_path)


# ------------------------------------------------------------------------------------- config, names


def test_config_files_and_flags(tmp_path):
    (tmp_path / "a.yaml").write_text("model: toy-shapes\nprompts: [a red circle moving right]\nseeds: [0, 1]\n"
                                     "settings:\n  guidance_scale: [1, 3]\n  guidance_interval: [null, [700, 1000]]\n")
    config = read_config(tmp_path / "a.yaml")
    assert config["settings"]["guidance_interval"] == [None, [700, 1000]]
    (tmp_path / "b.json").write_text(json.dumps({"prompts": ["x"], "seed": [0]}))
    with pytest.raises(ValueError, match="unknown key.*'seed'"):
        read_config(tmp_path / "b.json")
    with pytest.raises(ValueError, match=".json, .yaml or .yml"):
        read_config(tmp_path / "c.toml")
    parse = sweep_module._parse_set
    assert parse("guidance_scale=1,3.5,7") == ("guidance_scale", [1, 3.5, 7])
    assert parse("scheduler=ddim,dpm++") == ("scheduler", ["ddim", "dpm++"])
    assert parse("guidance_interval=[null, [700, 1000]]") == ("guidance_interval", [None, [700, 1000]])
    with pytest.raises(Exception, match="NAME=VALUE"):
        parse("guidance_scale")


def test_t2v_nb_sweep_is_the_module_callable_as_the_function():
    import inspect

    from t2v_nb import sweep

    assert sweep is t2v_nb.sweep is sys.modules["t2v_nb.sweep"] and sweep.SweepResult is SweepResult
    assert callable(sweep) and "sweep" in t2v_nb.__all__
    assert list(inspect.signature(sweep).parameters)[:4] == ["model", "prompts", "seeds", "out"]


def test_a_result_as_a_video_and_new_weights_get_new_ids(three_axes, tmp_path):
    video = three_axes.video(prompt=PROMPT, seed=1, guidance_scale=4.0)
    entry = three_axes.find(prompt=PROMPT, seed=1, guidance_scale=4.0)[0]
    np.testing.assert_array_equal(video.to_uint8(), three_axes.frames(entry))
    assert video.record["seed"] == 1 and video.fps == 8.0
    with pytest.raises(ValueError, match="2 results have"):
        three_axes.video(prompt=PROMPT, seed=1)
    pipe = importlib.import_module("tiny_modelscope").tiny_pipe()
    before = sweep_module.combination_id(sweep_module._model_key(pipe), entry["combination"])
    assert before == entry["id"]
    with torch.no_grad():
        next(pipe.unet.parameters()).flatten()[0] += 1e-3  # "retrained"
    assert sweep_module.combination_id(sweep_module._model_key(pipe), entry["combination"]) != before


def test_float_settings_given_as_ints_are_one_value():
    axes = check_grid([PROMPT], [0], {"guidance_scale": [3, 7.5], "guidance_interval": [None, [700, 1000]]})
    assert axes["guidance_scale"] == [3.0, 7.5] and axes["guidance_interval"] == [None, [700.0, 1000.0]]
    with pytest.raises(ValueError, match="more than once"):
        check_grid([PROMPT], [0], {"guidance_scale": [3, 3.0]})
