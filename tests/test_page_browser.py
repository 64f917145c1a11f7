"""The exported page (`Run.to_html`) in a real browser: Debian's Chromium driven by Playwright, offline.

Opens a toy run's page from a file with every network request refused, and checks: no console error, no request
but the file itself, the canvases draw exactly the recorded step's picture (pixel for pixel, against the linear
preview computed here), the step and frame sliders move it, play advances the frames, and the same page shown
inline (as Jupyter and Colab show `page`: an iframe with srcdoc, sandboxed) draws too. The time of a slider move
is reported by benchmarks/page_bench.py, not asserted here.

Needs `/usr/bin/chromium` and the playwright package (tests/browser_setup.sh installs both); skipped without.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import t2v_nb
from t2v_nb import page as page_module

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--host-resolver-rules=MAP * ~NOTFOUND"]
_MISSING = "; ".join([f"{CHROMIUM} (apt-get install -y chromium)"] * (not os.path.exists(CHROMIUM))
                     + ["the playwright package (pip install playwright)"] * (importlib.util.find_spec("playwright") is None))
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"needs {_MISSING}; tests/browser_setup.sh installs them")

CELLS = """([sel, h, w]) => { const c = document.querySelector(sel), k = c.width / w, ctx = c.getContext('2d'), out = [];
  for (let i = 0; i < h; i++) { const row = [];
    for (let j = 0; j < w; j++) {
      const p = ctx.getImageData(Math.floor((j + 0.5) * k), Math.floor((i + 0.5) * k), 1, 1).data;
      row.push([p[0], p[1], p[2]]); }
    out.push(row); }
  return {pixels: out, step: +c.dataset.step, frame: +c.dataset.frame}; }"""
X0 = "canvas[data-view='x0']"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pipe = t2v_nb.load("toy-shapes", device="cpu")
    run = pipe.start("a red circle moving right", seed=0, num_inference_steps=6, record="all").finish(progress=False)
    path = tmp_path_factory.mktemp("page") / "run.html"
    return run, run.to_html(path), path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_offline(browser, url: str):
    """A new page on `url` that refuses (and lists) every request but the file itself; also lists console errors."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    requests, errors = [], []
    context.route("**/*", lambda route: route.continue_() if route.request.url == url else
                  (requests.append(route.request.url), route.abort()))
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: requests.append(r.url) if not r.url.startswith("data:") else None)
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.drawn !== undefined")
    return page, requests, errors


def expected(run, step: int, frame: int) -> np.ndarray:
    """The linear preview of the step's predicted x0, frame `frame`: what the page must show, uint8 [h, w, 3]."""
    return page_module._u8(run.pipe.preview(run.trace.step("step.pred_x0", step))[0])[frame]


def shown(page, hw=(16, 16)) -> tuple[np.ndarray, int, int]:
    """The x0 canvas's pixel at the centre of every latent cell of the frame it shows, with its step and frame."""
    got = page.evaluate(CELLS, [X0, *hw])
    return np.asarray(got["pixels"], np.uint8), got["step"], got["frame"]


def test_page_opens_offline_and_the_sliders_show_the_recorded_steps(exported, browser):
    run, _, path = exported
    page, requests, errors = open_offline(browser, path.as_uri())
    try:
        pixels, step, frame = shown(page)
        assert (step, frame) == (5, 0) and np.array_equal(pixels, expected(run, 5, 0))
        handle = page.locator("#t2v-step")
        handle.focus()
        page.keyboard.press("Home")  # step 0
        page.wait_for_function(f"() => document.querySelector(\"{X0}\").dataset.step === '0'")
        pixels, step, _ = shown(page)
        assert step == 0 and np.array_equal(pixels, expected(run, 0, 0))
        assert not np.array_equal(expected(run, 0, 0), expected(run, 5, 0))  # the steps differ: a real check
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => document.querySelector(\"{X0}\").dataset.step === '1'")
        assert np.array_equal(shown(page)[0], expected(run, 1, 0))
        page.locator("#t2v-frame").focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        pixels, step, frame = shown(page)
        assert (step, frame) == (1, 3) and np.array_equal(pixels, expected(run, 1, 3))
        assert page.locator("canvas[data-view='words']").count() == 5  # a, red, circle, moving, right
        assert page.locator("canvas[data-view='decoded']").evaluate("c => c.dataset.step") == "1"
        assert "t = " + str(int(run.timesteps[1])) in page.locator("#t2v-info").inner_text()
    finally:
        page.context.close()
    assert errors == [] and requests == []


def test_play_advances_the_frames_and_pauses(exported, browser):
    _, _, path = exported
    page, requests, errors = open_offline(browser, path.as_uri())
    try:
        play = page.locator("#t2v-play")
        play.click()
        page.wait_for_function("() => +document.querySelector('#t2v-frame').value >= 2", timeout=5000)
        play.click()  # pause
        stopped = page.locator("#t2v-frame").input_value()
        page.wait_for_timeout(400)  # more than three frames at the toy's 8 fps
        assert page.locator("#t2v-frame").input_value() == stopped and "play" in play.inner_text()
        page.locator("#t2v-step").focus()
        page.keyboard.press("Home")
        page.locator("#t2v-play-steps").click()
        page.wait_for_function("() => document.querySelector('#t2v-step').value === '5'", timeout=5000)
    finally:
        page.context.close()
    assert errors == [] and requests == []


def test_inline_page_draws_in_a_sandboxed_iframe(exported, browser, tmp_path):
    run, page_obj, _ = exported
    host = tmp_path / "notebook_output.html"
    host.write_text(f"<!DOCTYPE html><html><body>{page_obj._repr_html_()}</body></html>", encoding="utf-8")
    errors = []
    context = browser.new_context()
    page = context.new_page()
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(host.as_uri())
        frame = page.frame_locator("iframe")
        frame.locator("body[data-drawn]").wait_for(timeout=10_000)
        assert frame.locator(X0).evaluate("c => c.dataset.step") == "5"
        assert page.locator("details img").count() == 1  # the contact sheet, outside the iframe
    finally:
        context.close()
    assert errors == []


GALLERY = sorted((Path(__file__).resolve().parents[1] / "docs" / "gallery").glob("*.html"))


@pytest.mark.parametrize("path", GALLERY, ids=[p.name for p in GALLERY])
def test_gallery_pages_open_offline(path, browser):
    page, requests, errors = open_offline(browser, path.as_uri())
    try:
        assert page.locator("canvas[data-view='words']").count() >= 1  # captured with attention
        page.locator("#t2v-step").focus()
        page.keyboard.press("Home")
        page.wait_for_function(f"() => document.querySelector(\"{X0}\").dataset.step === '0'")
    finally:
        page.context.close()
    assert errors == [] and requests == []
