"""The studio in a real browser: JupyterLab 4 + Debian's Chromium, driven by Playwright.

Kernel-side tests cannot tell whether the widgets render (with no widget manager, JupyterLab shows the
text `VBox(children=...)` and every kernel-side assertion still passes). This test opens
notebooks/07_studio.ipynb in JupyterLab, runs all cells with the bundled toy-shapes model (what a learner on a
CPU gets), clicks Run with attention captured, checks the notes box holds no library deprecation noise, moves
the step slider with the keyboard, clicks Stop during a second run, and saves a screenshot.

Needs `/usr/bin/chromium` (apt-get install -y chromium), and `pip install playwright jupyterlab`
(never `playwright install`: the system Chromium is used). tests/browser_setup.sh installs them.
Skipped with the reason when any is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "07_studio.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]


def _missing() -> str:
    missing = []
    if not os.path.exists(CHROMIUM):
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    for module, pip in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the {module} package (pip install {pip})")
    return "; ".join(missing)


pytestmark = [pytest.mark.slow,  # a JupyterLab server, a browser and a kernel with the toy: `make test-slow`
              pytest.mark.skipif(bool(_missing()), reason=f"browser test needs {_missing()}; "
                                                          f"tests/browser_setup.sh installs them")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """The PIDs of a process's children, grandchildren ... (from /proc)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            out += [child, *_descendants(child)]
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (random port, a token), its state in a temporary directory, serving a copy of
    the notebook; kernels get T2V_NB_MODEL=toy-shapes (the bundled model, also on a machine with a GPU).
    Yields (base URL, token, log path)."""
    tmp = tmp_path_factory.mktemp("lab")
    serve = tmp / "notebooks"
    serve.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, serve / NOTEBOOK)
    settings = tmp / "settings"
    # windowingMode "none": every cell stays in the page (JupyterLab 4 otherwise drops the cells scrolled out of view,
    # and the set-up cell's output is far above the studio once all cells have run)
    for plugin, values in {"@jupyterlab/docmanager-extension/plugin": {"autosave": False},
                           "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
                           "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                                           "checkForUpdates": False}}.items():
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{plugin}.jupyterlab-settings").write_text(json.dumps(values))
    env = dict(os.environ, T2V_NB_MODEL="toy-shapes", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
               JUPYTER_DATA_DIR=str(tmp / "data"), JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), IPYTHONDIR=str(tmp / "ipython"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    port, token = _free_port(), secrets.token_hex(16)
    log = tmp / "jupyterlab.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={serve}",
             "--expose-app-in-browser"], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
        yield base, token, log
    finally:
        leftovers = _descendants(server.pid)  # kernels: SIGTERM makes the server shut them down
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_studio_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token, log = lab
    console: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            try:
                _drive(page, f"{base}/lab/tree/{NOTEBOOK}?reset&token={token}", tmp_path)
            except BaseException:
                page.screenshot(path=str(tmp_path / "failure.png"))
                print(f"failure screenshot: {tmp_path / 'failure.png'}\nbrowser console errors:\n"
                      + "\n".join(console[-30:]) + f"\nserver log tail:\n{log.read_text()[-3000:]}")
                raise
        finally:
            browser.close()


def _drive(page, url: str, tmp_path: Path) -> None:
    t_start = time.monotonic()
    page.goto(url)
    _wait_idle(page, 120)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    studio = page.locator(".jp-OutputArea-output .t2v-studio")
    deadline = time.monotonic() + 120
    while not studio.is_visible():
        _no_error_output(page)
        assert time.monotonic() < deadline, "the studio did not render"
        page.wait_for_timeout(250)
    _wait_idle(page, 60)
    outputs = page.locator(".jp-OutputArea-output").all_inner_texts()
    assert not any("VBox(" in t for t in outputs), "the widget manager is missing: the studio shows as text"
    assert any("toy-shapes: bundled with t2v_nb" in t for t in outputs), "the notebook did not load the toy model"
    print(f"notebook open and run in {time.monotonic() - t_start:.1f} s")
    _inline_page_scrubs(page)

    # A first run of the real toy model (its own scheduler, DPM-Solver++), with attention, to the end.
    status = page.locator(".t2v-status")
    steps = page.locator(".t2v-steps input")
    assert steps.input_value() == "8", "not the toy model's default of 8 steps"
    steps.fill("7")  # not 8: the notebook's solution cell has already shown "done after 8 of 8"
    steps.press("Enter")
    prompt = page.locator(".t2v-prompt input")  # the notebook's solution cell left its own prompt there
    prompt.fill("a red circle moving right")
    prompt.press("Enter")
    page.locator(".t2v-attention input").check()
    page.locator("button.t2v-run").click()
    status.filter(has_text=re.compile(r"done after 7 of 7")).wait_for(timeout=60_000)
    page.locator("img.t2v-words").wait_for(state="visible", timeout=10_000)
    notes = page.locator(".t2v-message").inner_text()
    for noise in ("Deprecat", "__array__", "copy keyword", "FutureWarning"):
        assert noise not in notes, f"library noise in the studio's notes box: {notes!r}"
    words = page.locator(".t2v-word select option").all_inner_texts()
    assert any("red" in w for w in words), words  # the toy's word-level tokens of "a red circle moving right"

    # Scrubbing: keyboard on the step slider's handle; the preview's src changes.
    handle = page.locator(".t2v-step-slider .noUi-handle, .t2v-step-slider .ui-slider-handle")  # ipywidgets 8, 7
    img = page.locator("img.t2v-preview")
    readout = page.locator(".t2v-step-slider .widget-readout")
    for _ in range(5):  # JupyterLab takes the focus to a cell on the first key press into an output: retry
        handle.press("ArrowLeft")
        page.wait_for_timeout(300)
        if readout.inner_text().strip() != "6":
            break
    assert readout.inner_text().strip() == "5", "the step slider does not take the keyboard"
    times = []
    for _ in range(3):
        before = img.get_attribute("src")
        handle.focus()
        assert page.evaluate("/noUi-handle|ui-slider-handle/.test(document.activeElement.className)")
        t0 = time.perf_counter()
        page.keyboard.press("ArrowLeft")
        page.wait_for_function("([sel, old]) => document.querySelector(sel).getAttribute('src') !== old",
                               arg=["img.t2v-preview", before], timeout=10_000, polling=10)
        times.append(time.perf_counter() - t0)
    print("slider move -> new preview image: " + ", ".join(f"{1000 * t:.0f} ms" for t in times))
    page.locator(".t2v-view button", has_text="decoded x0").click()
    page.wait_for_timeout(500)
    studio.scroll_into_view_if_needed()
    shot = tmp_path / "studio.png"
    studio.screenshot(path=str(shot))
    page.screenshot(path=str(tmp_path / "page.png"))
    print(f"screenshot: {shot}")

    # A long second run, stopped in the middle.
    steps.fill("400")
    steps.press("Enter")
    page.locator(".t2v-attention input").uncheck()
    page.locator("button.t2v-run").click()
    status.filter(has_text=re.compile(r"step [1-9]\d*/400")).wait_for(timeout=60_000)
    t0 = time.perf_counter()
    page.locator("button.t2v-stop").click()
    status.filter(has_text=re.compile(r"stopped after \d+ of 400")).wait_for(timeout=60_000)
    print(f"Stop click -> 'stopped' shown: {1000 * (time.perf_counter() - t0):.0f} ms")
    done = int(re.search(r"stopped after (\d+) of 400", status.inner_text()).group(1))
    assert 0 < done < 400
    width = page.locator(".t2v-progress .progress-bar").evaluate("e => e.style.width")
    assert float(width.rstrip("%")) < 100, width
    page.wait_for_timeout(500)  # no more steps arrive after the stop
    assert f"stopped after {done} of 400" in status.inner_text()
    assert not handle.is_disabled()
    _no_error_output(page)
    print(f"stopped after {done} of 400 steps; browser part took {time.monotonic() - t_start:.1f} s")


def _inline_page_scrubs(page) -> None:
    """The run exported by the notebook's last cell (`page` as a cell's value) shows inline, and its step slider
    redraws in the browser alone: the kernel is not asked (no kernel message can draw inside the iframe)."""
    inline = page.frame_locator(".jp-OutputArea-output iframe").first
    inline.locator("body[data-drawn]").wait_for(timeout=30_000)
    x0 = inline.locator("canvas[data-view='x0']")
    assert x0.evaluate("c => c.dataset.step") == "7"  # the last of toy-shapes' default 8 steps
    inline.locator("#t2v-step").focus()
    inline.locator("#t2v-step").press("Home")
    inline.locator("canvas[data-view='x0'][data-step='0']").wait_for(timeout=5_000)


def _wait_idle(page, timeout_s: float) -> None:
    """Wait until the status bar says the kernel is idle ("Python 3 (ipykernel) | Idle")."""
    page.wait_for_function("() => /Python 3.*\\|\\s*Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText"
                           " || '')", timeout=timeout_s * 1000, polling=200)


def _no_error_output(page) -> None:
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    if errors.count():
        pytest.fail(f"a cell failed:\n{errors.first.inner_text()}")
