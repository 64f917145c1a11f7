"""Turn Colab's published `pip freeze` into the pip constraints file that `make test-colab` builds its venv with.

    python .ci/colab/freeze_to_constraints.py pip-freeze.gpu.txt \
        --source "googlecolab/backend-info, pip-freeze.gpu.txt at commit <sha>" > .ci/colab/constraints-YYYY-MM.txt

What changes on the way (each listed in the output's header):
- `name @ url` lines are left out: pip accepts only `name==version` as a constraint, and those packages (Colab's
  own google-colab, RAPIDS wheels, a spaCy model) are not on PyPI;
- torch becomes `--torch` (default 2.13.0, the CPU build this project's machines keep on disk; Colab's is a
  CUDA build of several GB), and the other CUDA builds of the torch family (`+cu…` versions: torchvision,
  torchaudio, torchcodec) are left out: they belong to Colab's torch, not to ours;
- `--unpin NAME:REASON` leaves NAME unpinned, for what our torch needs newer (setuptools: torch 2.13 needs
  >= 77.0.3, Colab's torch 2.11 lives with its 75.2.0);
- everything else is kept as Colab has it, whether or not the Colab venv installs it (a constraint only bites
  when something asks for that package).
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")
_URL = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*@\s*\S+")


def convert(lines, torch: str, unpin=()) -> tuple[list[str], list[str], list[str]]:
    """(constraint lines, left out as URLs, left out as CUDA builds) from the lines of a pip freeze; the names in
    `unpin` are left out too."""
    pins, urls, cuda = [], [], []
    unpin = {n.lower() for n in unpin}
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if _URL.match(line):
            urls.append(_URL.match(line).group(1))
            continue
        match = _PIN.match(line)
        if match is None:
            sys.exit(f"not a `name==version` or `name @ url` line: {line!r}")
        name, version = match.groups()
        if name.lower() in unpin:
            continue
        if name.lower() == "torch":
            pins.append(f"torch=={torch}  # Colab: {version}")
        elif "+cu" in version:
            cuda.append(f"{name}=={version}")
        else:
            pins.append(f"{name}=={version}")
    return pins, urls, cuda


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("freeze", help="a `pip freeze` of Colab's runtime (backend-info's pip-freeze.gpu.txt)")
    parser.add_argument("--source", required=True, help="where the freeze comes from (repository, file, commit)")
    parser.add_argument("--torch", default="2.13.0", help="the torch version the Colab venv installs instead")
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="when the freeze was fetched")
    parser.add_argument("--unpin", action="append", default=[], metavar="NAME:REASON",
                        help="leave NAME unpinned (something the venv's torch needs newer than Colab has)")
    parser.add_argument("--colab-python", default="3.12", help="Colab's Python version (backend-info's os-info-gpu.txt)")
    args = parser.parse_args()
    with open(args.freeze) as f:
        unpinned = dict(item.split(":", 1) for item in args.unpin)
        pins, urls, cuda = convert(f, args.torch, unpinned)
    print(f"# Colab's GPU runtime, as pip constraints: `make test-colab` (.ci/colab_env.sh) builds .venv-colab with them.")
    print(f"# Source: {args.source}; fetched {args.date}.")
    print("# Made by .ci/colab/freeze_to_constraints.py from that `pip freeze`; to refresh, run it on the newest one")
    print("# (see .ci/colab/README.md) and point COLAB_CONSTRAINTS in the Makefile at the new file.")
    print(f"# Differs from Colab: torch is {args.torch} (the CPU build on this project's machines; Colab's is CUDA);")
    print(f"# Colab runs Python {args.colab_python}, the venv the machine's python3 (3.11 here; every package the venv")
    print("# installs has this version for both).")
    for name, reason in unpinned.items():
        print(f"# Left unpinned: {name} ({reason.strip()}).")
    print(f"# Left out, CUDA builds of Colab's torch: {', '.join(cuda) or 'none'}.")
    print(f"# Left out, installed from URLs on Colab (pip takes no URL as a constraint): {', '.join(urls) or 'none'}.")
    for line in pins:
        print(line)


if __name__ == "__main__":
    main()
