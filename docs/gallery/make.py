"""Make the gallery: pages of runs of both bundled toys (`Run.to_html`), a seen and a held-out prompt each.

    python docs/gallery/make.py                     # both toys, into docs/gallery/
    python docs/gallery/make.py --model toy-shapes  # one toy (the pages of the others are left as they are)

Each page is one self-contained HTML file: open it in any browser (no Python, no network) and scrub the steps
and frames. The runs capture attention (record="all"), so the pages have word heat maps. "Seen" prompts are
colour/shape/direction combinations the toys were trained on; "held out" ones were left out of training (see
t2v_nb/toy/README.md). Writes the pages and README.md (the list of pages with their sizes), replacing earlier ones.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODELS = ("toy-shapes", "toy-shapes-flow")
PROMPTS = {"seen": "a red circle moving right", "held out": "a green circle moving left"}
MAX_MB = 1.2  # each page's budget: small enough to commit (see t2v_nb/page.py for what the budget trims)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def make(model: str, out: Path) -> list[tuple[str, str, str, float]]:
    """Export one page per prompt of `model`; returns (model, kind, file name, MB) per page."""
    import t2v_nb

    pipe = t2v_nb.load(model, device="cpu")
    rows = []
    for kind, prompt in PROMPTS.items():
        run = pipe.start(prompt, seed=0, record="all").finish(progress=False)
        name = f"{model}_{_slug(kind)}_{_slug(prompt)}.html"
        page = run.to_html(out / name, overwrite=True, max_mb=MAX_MB,
                           title=f"{model}: {prompt!r} ({kind} in training), seed 0")
        rows.append((model, kind, name, page.nbytes / 1e6))
        print(f"{name}: {page.nbytes / 1e6:.2f} MB, decoded steps {page.decoded_steps}")
    return rows


def write_index(out: Path) -> None:
    """README.md: a table of the pages found in `out`."""
    lines = ["# Gallery: runs of the bundled toys as pages", "",
             "Each file is one self-contained web page made by `run.to_html(...)` "
             "(by [make.py](make.py)): download it and open it in any browser, offline. Step and frame sliders, "
             "play, the linear previews of x_t and the predicted x0, their VAE decodes, the final video, guidance "
             "in parts, the prompt's word heat maps, the noise schedule, the tokens and the run record.", "",
             "| model | prompt | page | size |", "|---|---|---|---|"]
    for path in sorted(out.glob("*.html")):
        model = next((m for m in sorted(MODELS, key=len, reverse=True) if path.name.startswith(m + "_")), "?")
        kind = "held out" if "_held_out_" in path.name else "seen"
        prompt = next((p for k, p in PROMPTS.items() if k == kind), "")
        lines.append(f"| {model} | {prompt!r} ({kind}) | [{path.name}]({path.name}) | "
                     f"{path.stat().st_size / 1e6:.2f} MB |")
    (out / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", choices=MODELS, help="a toy (repeatable); default both")
    args = ap.parse_args(argv)
    for model in args.model or MODELS:
        make(model, HERE)
    write_index(HERE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
