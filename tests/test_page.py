"""A run as one self-contained web page (`Run.to_html`, `t2v_nb.page`), checked without a browser.

What only a browser can check (the page opens offline, the sliders draw the recorded step's picture, play
works) is in test_page_browser.py; the page's speed and sizes are reported by benchmarks/page_bench.py.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib
import io
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

import t2v_nb
from t2v_nb import page as page_module

from conftest import FAMILY_MODULES  # noqa: E402

TOY = dict(num_frames=8, height=64, width=64, num_inference_steps=20)
PROMPT = "a red circle moving right"


def page_data(text: str) -> dict:
    """The JSON the page's script reads."""
    found = re.search(r"<script type='application/json' id='t2v-data'>(.*?)</script>", text, re.S)
    assert found, "the page has no data element"
    return json.loads(found.group(1))


def sprite(url: str) -> np.ndarray:
    """A data URL -> its pixels, uint8 [H, W, C]."""
    head, b64 = url.split(",", 1)
    assert head in ("data:image/png;base64", "data:image/webp;base64"), head
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def frame_of(view: dict, step: int, frame: int, row: int = 0) -> np.ndarray:
    """One frame of one view at one step, cut from its sprite sheet as the page's script cuts it."""
    sheet = sprite(view["sprites"][str(step)])
    h, w = view["h"], view["w"]
    return sheet[row * h:(row + 1) * h, frame * w:(frame + 1) * w]


def no_outside_references(text: str) -> list[str]:
    """Every src/href/url() in the page's HTML, CSS and data that is not a data: URL or an in-page anchor (the
    page's own script sets image sources only from the data: URLs in its data)."""
    assert not re.search(r"\b(https?|wss?|ftp|file):", page_module.page_template.JS)
    text = text.replace(page_module.page_template.JS, "")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)|url\(\s*["']?([^"')]+)""", text)
    return [r for pair in refs for r in pair if r and not r.startswith(("data:", "#"))]


@pytest.fixture(scope="module")
def toy_run():
    pipe = t2v_nb.load("toy-shapes", device="cpu")
    return pipe.start(PROMPT, seed=0, record="all", **TOY).finish(progress=False)


@pytest.fixture(scope="module")
def toy_page(toy_run):
    return page_module.build(toy_run)


# ------------------------------------------------------------------------------------------ the toy run


def test_toy_page_is_small_and_has_every_view_at_every_step(toy_page, toy_run):
    assert toy_page.nbytes < 2 * 10**6, toy_page.parts
    data = page_data(toy_page.html)
    views = {v["key"]: v for v in data["views"]}
    assert set(views) == {"xt", "x0", "decoded", "final", "guidance", "words"}
    for key in ("xt", "x0", "decoded", "guidance", "words"):
        assert sorted(map(int, views[key]["sprites"])) == list(range(20)), key
    assert toy_page.decoded_steps == list(range(20)) and toy_page.missing == []
    assert repr(toy_page).endswith(", 0 notes on what is missing)"), repr(toy_page)
    assert views["words"]["row_labels"] == ["1: a", "2: red", "3: circle", "4: moving", "5: right"]
    assert views["guidance"]["rows"] == 4 and data["num_frames"] == 8 and data["total"] == 20
    assert [s["t"] for s in data["steps"]] == [int(t) for t in toy_run.timesteps]
    noise = [s["noise"] for s in data["steps"]]
    assert noise == sorted(noise, reverse=True) and 0 <= noise[-1] < noise[0] <= 1.0


def test_toy_page_pictures_are_the_recorded_steps(toy_page, toy_run):
    """The x0 preview sprite of a step holds exactly that step's preview (lossless PNG); the decoded one
    is close to a fresh VAE decode of that step's x0; the final video is the run's."""
    views = {v["key"]: v for v in page_data(toy_page.html)["views"]}
    pipe = toy_run.pipe
    for step in (0, 7, 19):
        want = page_module._u8(pipe.preview(toy_run.trace.step("step.pred_x0", step))[0])  # [F', h, w, 3]
        for f in (0, 5):
            assert np.array_equal(frame_of(views["x0"], step, f), want[f]), (step, f)
    decoded = page_module._u8(pipe.decode_latents(toy_run.trace.step("step.pred_x0", 12))[0])  # [F, H, W, 3]
    assert np.abs(frame_of(views["decoded"], 12, 3).astype(int) - decoded[3]).max() <= 1
    assert not np.array_equal(frame_of(views["decoded"], 0, 3), frame_of(views["decoded"], 19, 3))
    final = page_module._u8(toy_run.trace["decode.frames"][0])
    assert np.abs(frame_of(views["final"], -1, 7).astype(int) - final[7]).max() <= 1


def test_page_is_self_contained(toy_page):
    text = toy_page.html
    assert no_outside_references(text) == []
    assert "<link" not in text and "@import" not in text and "@font-face" not in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert "fetch(" not in text and "XMLHttpRequest" not in text
    assert text.count("<script") == 2  # the data and the page's own script, nothing loaded


def test_page_says_what_each_view_is_and_holds_the_record(toy_page, toy_run):
    text = toy_page.html
    for explanation in page_module.EXPLAIN.values():
        assert explanation in text or explanation.replace("'", "&#x27;") in text
    for field in ("a red circle moving right", "toy-shapes", "dpm++", "torch", "diffusers", "&lt;|startoftext|&gt;"):
        assert field in text, field
    assert "seed" in text and str(toy_run.params["seed"]) in text


def test_inline_display_and_contact_sheet(toy_page, tmp_path):
    shown = toy_page._repr_html_()
    assert shown.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in shown
    assert "<script" not in shown.split("srcdoc=")[0] and "&lt;script" in shown  # the page only inside the iframe
    sheet = Image.open(io.BytesIO(toy_page.contact_sheet))
    assert sheet.format == "PNG" and sheet.height == 8 * 66 + 2  # 8 steps of the 20, 64 px each
    assert "data:image/png;base64," in shown.split("</iframe>")[1]
    path = toy_page.save_contact_sheet(tmp_path / "sheet.png")
    assert path.read_bytes() == toy_page.contact_sheet


def test_a_page_over_budget_drops_decoded_steps_and_says_so(toy_run):
    page = page_module.build(toy_run, max_mb=1.0, decode_every=1)  # every step asked for: more than 1 MB
    assert page.nbytes < 10**6 and 19 in page.decoded_steps and len(page.decoded_steps) < 20, page.parts
    note = [m for m in page.missing if m.startswith("Decoded x0 at")]
    assert note == [f"Decoded x0 at {len(page.decoded_steps)} of 20 steps (every "
                    f"{page.decoded_steps[1] - page.decoded_steps[0]}nd step, the last included): the slider shows "
                    f"the nearest decoded step between them."]
    assert repr(page).endswith(f", {len(page.missing)} notes on what is missing)") and len(page.missing) > 1, repr(page)
    one = dataclasses.replace(page, missing=note)
    assert repr(one).endswith(", 1 note on what is missing)"), repr(one)


# ------------------------------------------------------------------------------------------ paths and errors


def test_path_errors_are_clear_and_nothing_is_overwritten(toy_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        toy_run.to_html(tmp_path / "nowhere" / "run.html")
    with pytest.raises(ValueError, match=r"does not end with \.html"):
        toy_run.to_html(tmp_path / "run.htm")
    with pytest.raises(TypeError, match="path must be"):
        toy_run.to_html(42)
    target = tmp_path / "run.html"
    target.write_text("an older page")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        toy_run.to_html(target, decode=False)
    assert target.read_text() == "an older page"
    page = toy_run.to_html(target, overwrite=True, decode=False)
    assert target.read_text(encoding="utf-8") == page.html
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.html"]


def test_a_run_with_no_step_is_refused(toy_run, tmp_path):
    fresh = toy_run.pipe.start(PROMPT, seed=0, num_inference_steps=3)
    with pytest.raises(ValueError, match="no step yet"):
        fresh.to_html(tmp_path / "run.html")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_no_file(toy_run, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the page could not be made")

    monkeypatch.setattr(page_module.page_template, "render", broken)
    with pytest.raises(RuntimeError, match="could not be made"):
        toy_run.to_html(tmp_path / "run.html", decode=False)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    real_write = page_module.pathlib.Path.write_bytes

    def half_written(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    (tmp_path / "run.html").write_text("the old page")
    monkeypatch.setattr(page_module.pathlib.Path, "write_bytes", half_written)
    with pytest.raises(OSError, match="No space"):
        toy_run.to_html(tmp_path / "run.html", overwrite=True, decode=False)
    assert [p.name for p in tmp_path.iterdir()] == ["run.html"]
    assert (tmp_path / "run.html").read_text() == "the old page"


def test_a_branched_run_is_refused_with_the_reason(tiny, tmp_path):
    run = tiny.start(PROMPT, seed=0, num_inference_steps=4).finish(progress=False)
    branch = run.branch(2, guidance_scale=2.0).finish(progress=False)
    with pytest.raises(ValueError, match=r"holds 2 steps but the run has done 4.*run.branch"):
        branch.to_html(tmp_path / "branch.html")
    assert list(tmp_path.iterdir()) == []


def test_bad_options_are_refused(toy_run):
    with pytest.raises(ValueError, match="max_mb"):
        page_module.build(toy_run, max_mb=0)
    with pytest.raises(ValueError, match="decode_every"):
        page_module.build(toy_run, decode_every=0)


# ------------------------------------------------------------------------------------------ partial runs


@pytest.fixture(scope="module")
def tiny():
    from conftest import tiny_pipe
    from t2v_nb.preview import fit_linear_preview

    pipe = tiny_pipe()
    torch.manual_seed(0)
    pipe.preview = fit_linear_preview(pipe.vae, torch.randn(2, 4, 3, 8, 8), "test")
    return pipe


def test_a_stopped_run_without_decode_or_attention_says_what_is_missing(tiny):
    run = tiny.start(PROMPT, seed=0, num_inference_steps=5)
    run.step(), run.step()
    page = page_module.build(run, decode=False)
    data = page_data(page.html)
    assert {v["key"] for v in data["views"]} == {"xt", "x0", "guidance"}
    assert len(data["steps"]) == 2 and data["total"] == 5 and page.decoded_steps == []
    said = " ".join(page.missing)
    for words in ("stopped after 2 of 5 steps", "no final video", "attention was not captured", "decode=False"):
        assert words in said, words
    for line in page.missing:  # the page says it, at the top
        assert line.replace("'", "&#x27;") in page.html


def test_an_interrupted_run_exports_the_steps_it_has(tiny):
    def interrupt(value, ctx):
        if ctx.step == 2:
            raise KeyboardInterrupt

    run = tiny.start(PROMPT, seed=0, num_inference_steps=4, guidance_scale=1.0, hooks={"step.noise_pred": interrupt})
    with pytest.raises(KeyboardInterrupt):
        run.finish(progress=False)
    page = page_module.build(run)
    assert run.interrupted and run.i == 2 and page.decoded_steps == [0, 1]
    said = " ".join(page.missing)
    assert "interrupted after 2 of 4 steps" in said and "guidance_scale = 1" in said
    assert {v["key"] for v in page_data(page.html)["views"]} == {"xt", "x0", "decoded"}


def test_a_run_recorded_with_nothing_still_exports_its_video(tiny):
    run = tiny.start(PROMPT, seed=0, num_inference_steps=3, record=None).finish(progress=False)
    page = page_module.build(run)
    assert {v["key"] for v in page_data(page.html)["views"]} == {"final"}
    assert any("step.latents was not recorded" in m for m in page.missing)


# ------------------------------------------------------------------------------------------ every family


@pytest.mark.parametrize("name", FAMILY_MODULES)
def test_every_family_exports(name, tmp_path):
    fam = importlib.import_module(name)
    pipe = fam.tiny_pipe()
    run = pipe.start(PROMPT, seed=0, guidance_scale=6.0, record="all", **fam.SMALL).finish(progress=False)
    page = run.to_html(tmp_path / "run.html")
    data = page_data((tmp_path / "run.html").read_text(encoding="utf-8"))
    views = {v["key"]: v for v in data["views"]}
    F = run.params["num_frames"]
    assert data["latent_index"] == [pipe.family.latent_index(f) for f in range(F)]
    assert {"decoded", "final"} <= set(views) and views["final"]["frames"] == F
    assert views["decoded"]["frames"] == F and page.decoded_steps == list(range(run.num_steps))
    if pipe.preview is not None:
        assert views["x0"]["frames"] == run.latents.shape[2]  # one picture per latent frame
    if any(n.startswith("attn.cross.") for n in run.trace.names()):
        assert views["words"]["rows"] == len(views["words"]["row_labels"]) >= 1
    for v in views.values():
        for url in v["sprites"].values():
            assert sprite(url).shape[:2] == (v["h"] * v["rows"], v["w"] * v["frames"]), v["key"]
    assert no_outside_references(page.html) == []


# ------------------------------------------------------------------------------------------ the size budget


@pytest.fixture(scope="module")
def large_run():
    return make_large_run()


def make_large_run():
    """A run at real size, 50 steps x 16 frames at 256x256, with synthetic recorded tensors: the tiny model with
    a VAE of 8x spatial compression (so 32x32 latents) starts the run, then its trace is filled with tensors of
    the real shapes (x0 a smooth random field, x_t that field plus the schedule's noise, predictions around it,
    cross-attention maps of the coarsest layer) instead of 50 slow steps of the model on a CPU. The VAE has
    random weights: its frames look like noise, the hardest case for image compression."""
    from diffusers import AutoencoderKL

    from conftest import tiny_components
    from t2v_nb.attention import attention_layers
    from t2v_nb.preview import fit_linear_preview

    parts = tiny_components()
    torch.manual_seed(2)
    parts["vae"] = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                                 norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 4,
                                 up_block_types=("UpDecoderBlock2D",) * 4, sample_size=256).eval().requires_grad_(False)
    pipe = t2v_nb.StepwisePipeline(**parts)
    torch.manual_seed(0)
    pipe.preview = fit_linear_preview(pipe.vae, torch.randn(1, 4, 2, 32, 32), "test")
    cross = {n: v for n, v in attention_layers(pipe, 256, 256, 16).items() if v["kind"] == "cross"}
    coarsest = min(cross, key=lambda n: np.prod(cross[n]["shape"]))
    run = pipe.start(PROMPT, seed=0, num_frames=16, height=256, width=256, num_inference_steps=50,
                     guidance_scale=7.5, record=list(t2v_nb.HOOK_POINTS) + [coarsest])
    fill_trace(run, coarsest, cross[coarsest]["shape"])
    return run


def fill_trace(run, layer: str, attn_shape) -> None:
    """Record 50 steps of synthetic tensors of the run's shapes and mark the steps done (no model call)."""
    g = torch.Generator().manual_seed(0)
    B, C, F, h, w = run.latents.shape  # [1, 4, 16, 32, 32]
    x0 = torch.nn.functional.interpolate(torch.randn(B * C, F, 8, 8, generator=g), size=(h, w), mode="bilinear")
    x0 = x0.view(B, C, F, h, w)
    ac = run.scheduler.alphas_cumprod
    for i, t in enumerate(run.timesteps):
        a, s = float(ac[int(t)].sqrt()), float((1 - ac[int(t)]).sqrt())
        noise = torch.randn(x0.shape, generator=g)
        run.trace.add("step.latents", a * x0 + s * noise)
        for name, k in (("step.noise_pred_uncond", 0.9), ("step.noise_pred_text", 1.0), ("step.noise_pred", 1.1)):
            run.trace.add(name, k * noise)
        run.trace.add("step.pred_x0", x0 + s * 0.3 * torch.randn(x0.shape, generator=g))
        run.trace.add(f"attn.cross.{layer}", torch.softmax(4 * torch.randn(attn_shape, generator=g), dim=-1))
    run.latents, run.i = x0, len(run.timesteps)  # the steps are "done": the test stands in for the model


def test_real_size_run_fits_the_budget(large_run):
    page = page_module.build(large_run)
    assert page.nbytes < 15 * 10**6, page.parts
    views = {v["key"]: v for v in page_data(page.html)["views"]}
    for key in ("xt", "x0"):  # every step, at the latent grid's size
        assert len(views[key]["sprites"]) == 50 and (views[key]["h"], views[key]["w"]) == (32, 32)
    assert views["final"]["h"] == 256 and views["words"]["rows"] >= 1 and views["guidance"]["sprites"]
    decoded = page.decoded_steps
    assert 49 in decoded and 1 <= len(decoded) < 50, decoded
    assert np.diff(decoded).min() == np.diff(decoded).max()  # every k-th step
    assert any("Decoded x0 at" in m for m in page.missing)


def test_decode_every_picks_the_decoded_steps(large_run):
    page = page_module.build(large_run, decode_every=10)
    assert page.decoded_steps == [9, 19, 29, 39, 49] and page.nbytes < 15 * 10**6
    assert any("every 10th step" in m for m in page.missing)


# ------------------------------------------------------------------------------------------ the delegates


def test_studio_saves_the_page(tiny, tmp_path):
    from t2v_nb.widgets import Studio

    studio = Studio(tiny, PROMPT, num_inference_steps=3)
    assert studio.export_button.disabled and studio.export(str(tmp_path / "a.html")) is None
    assert "Nothing to save yet" in studio.error
    studio.run_button.click()
    assert studio.wait(120) and studio.error is None, studio.error_traceback
    assert not studio.export_button.disabled
    studio.page_path.value = str(tmp_path / "studio.html")
    studio.export_button.click()
    assert studio.error is None, studio.error_traceback
    assert (tmp_path / "studio.html").stat().st_size > 1000 and "Saved" in studio.message.value
    studio.export_button.click()  # a second click does not overwrite: the message says so
    assert "exists" in studio.error
    studio.close()


def test_demo_writes_the_page(tmp_path):
    from t2v_nb import demo

    argv = ["--out", str(tmp_path), "--prompt", PROMPT, "--flow-model", "", "--html"]
    assert demo.main(argv) == 0
    text = (tmp_path / "a_red_circle_moving_right.html").read_text(encoding="utf-8")
    assert {v["key"] for v in page_data(text)["views"]} >= {"x0", "decoded", "final", "words"}
    with pytest.raises(FileExistsError, match="--overwrite"):
        demo.main(argv)
    assert os.path.exists(tmp_path / "a_red_circle_moving_right.mp4")


def test_markup_in_the_prompt_stays_text(tiny):
    prompt = "<img src=x onerror=alert(1)> & </script>"
    run = tiny.start(prompt, seed=0, num_inference_steps=2, record="all")
    run.step()
    page = page_module.build(run, decode=False)
    assert "<img src=x" not in page.html and "</script> &" not in page.html
    assert page.html.count("</script>") == 2 and page_data(page.html)["views"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.html  # the title, as text
