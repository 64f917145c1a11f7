"""The exported page (`Run.to_html`): how big it is, how long it takes to make, and how fast its sliders are.

    python benchmarks/page_bench.py                 # the toy run + a real-size run of synthetic tensors
    python benchmarks/page_bench.py --no-large      # the toy run only

Two runs:
- the toy: toy-shapes, 20 steps, 8 frames of 64x64, attention captured (record="all");
- real size: 50 steps x 16 frames at 256x256 with synthetic recorded tensors and a tiny random VAE of 8x spatial
  compression (tests/test_page.py's `large_run`: random weights give noise-like frames, the worst case for
  image compression).
For each: the build time, the page's size and its parts. Then, in Debian's Chromium (Playwright, offline), the
time of one step-slider move to a new image, measured two ways over every step:
- in the page: `performance.now()` from setting the slider's value and firing its input event until the handler
  returns (every canvas redrawn), and until the next animation frame (at 60 Hz that adds up to ~17 ms of waiting
  for the screen);
- from outside: a key press on the focused slider (sent by Playwright) until the page reports the new step drawn,
  which adds the round trips of the automation protocol.
The goal is under 50 ms. A report, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

IN_PAGE = """async () => { const s = document.querySelector('#t2v-step'), n = +s.max + 1, out = [];
  for (let k = 0; k < 2 * n; k++) { const target = (k * 7 + 3) % n;
    if (+s.value === target) { continue; }
    const t0 = performance.now(); s.value = target; s.dispatchEvent(new Event('input'));
    const drawn = performance.now();
    await new Promise(r => requestAnimationFrame(() => r())); out.push([drawn - t0, performance.now() - t0]); }
  return out; }"""


def toy_run():
    import t2v_nb

    pipe = t2v_nb.load("toy-shapes", device="cpu")
    return pipe.start("a red circle moving right", seed=0, record="all").finish(progress=False)


def large_run():
    import test_page

    return test_page.make_large_run()


def slider_times(path: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from test_page_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        t0 = time.perf_counter()
        page.goto(path.as_uri())
        page.wait_for_function("() => document.body.dataset.drawn !== undefined")
        opened = time.perf_counter() - t0
        page.wait_for_timeout(1000)  # let every sprite decode
        inside = page.evaluate(IN_PAGE)
        outside = []
        page.locator("#t2v-step").focus()
        page.keyboard.press("End")
        for _ in range(min(30, int(page.locator("#t2v-step").get_attribute("max")))):
            before = page.evaluate("document.body.dataset.drawn")
            t0 = time.perf_counter()
            page.keyboard.press("ArrowLeft")
            page.wait_for_function("(old) => document.body.dataset.drawn !== old", arg=before, polling="raf")
            outside.append(1000 * (time.perf_counter() - t0))
        browser.close()
    return {"open_s": opened, "inside": inside, "outside": outside}


def report(name: str, run, browser: bool) -> None:
    from t2v_nb import page as page_module

    t0 = time.perf_counter()
    page = page_module.build(run)
    built = time.perf_counter() - t0
    p = run.params
    print(f"\n## {name}: {run.i} steps x {p['num_frames']} frames at {p['width']}x{p['height']}")
    print(f"page: {page.nbytes / 1e6:.2f} MB, built in {built:.1f} s; decoded steps: {len(page.decoded_steps)} of {run.i}")
    print("parts (MB): " + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in page.parts.items()))
    for line in page.missing:
        print(f"  note: {line}")
    if not browser:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.html"
        page.save(path)
        t = slider_times(path)
    for label, values in (("in the page, the drawing itself (input event handled)", [a for a, _ in t["inside"]]),
                          ("in the page, input event -> next animation frame", [b for _, b in t["inside"]]),
                          ("key press -> new step drawn, via Playwright", t["outside"])):
        print(f"slider move, {label}: median {statistics.median(values):.1f} ms, max {max(values):.1f} ms "
              f"over {len(values)} moves (goal < 50 ms)")
    print(f"page open to first drawing: {t['open_s']:.2f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-large", action="store_true", help="skip the real-size run")
    ap.add_argument("--no-browser", action="store_true", help="sizes only, no Chromium")
    args = ap.parse_args(argv)
    browser = not args.no_browser and os.path.exists("/usr/bin/chromium")
    report("toy-shapes", toy_run(), browser)
    if not args.no_large:
        report("real size, synthetic tensors", large_run(), browser)
    return 0


if __name__ == "__main__":
    sys.exit(main())
