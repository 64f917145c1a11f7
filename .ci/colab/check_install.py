"""What a `pip install` changed in the Colab venv, and whether Colab could live with it.

    python .ci/colab/check_install.py BEFORE.txt AFTER.txt [PIP_OUTPUT.txt] [--allow NAME ...]

BEFORE and AFTER are `pip freeze` outputs around the install, PIP_OUTPUT what pip printed (stdout and stderr).
Prints every package pip added, upgraded, downgraded or removed, and exits 1 when
- it changed the version of a package outside ALLOWED (or `--allow`), or removed one: Colab's kernel pins
  its packages (ipython 7.34, traitlets, ipykernel, notebook, tornado, ...) and does not start again after a
  restart when they change;
- pip printed an ERROR (its resolver's "dependency conflicts" report among them: `-q` does not hide it).
New packages are allowed: nothing on Colab pins a package it does not have.
"""

from __future__ import annotations

import argparse
import re
import sys

# Packages the install may upgrade on Colab, and why (pyproject.toml explains each floor):
ALLOWED = {
    "diffusers": "t2v_nb needs >= 0.40 (load passes dtype=; the Wan/CogVideoX/AnimateDiff classes)",
    "huggingface-hub": "diffusers 0.40 needs >= 1.23",
    "safetensors": "diffusers 0.40 needs >= 0.8",
    "hf-xet": "the newer huggingface_hub needs a newer one",
    "click": "huggingface_hub >= 1.32 (diffusers 0.42 needs it) needs click >= 8.4.2; Colab had 8.4.1",
}
# Colab's kernel and front end: never to change (named in the failure message).
KERNEL = ("ipython", "traitlets", "ipykernel", "ipywidgets", "notebook", "jupyter-client", "jupyter-core",
          "tornado", "pyzmq", "psutil", "prompt-toolkit", "jedi", "widgetsnbextension", "google-colab")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_freeze(path: str) -> dict[str, str]:
    """{canonical name: version or the whole `@ url` line} of a pip freeze."""
    found = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", "-e ")):
                continue
            name, sep, version = line.partition("==")
            if not sep:
                name, _, version = line.partition(" @ ")
            found[canonical(name)] = version.strip()
    return found


def changes(before: dict, after: dict) -> tuple[dict, dict, dict]:
    """(added, changed, removed): {name: version}, {name: (old, new)}, {name: version}."""
    added = {n: v for n, v in after.items() if n not in before}
    changed = {n: (before[n], after[n]) for n in before.keys() & after.keys() if before[n] != after[n]}
    removed = {n: v for n, v in before.items() if n not in after}
    return added, changed, removed


def pip_errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ERROR") or "dependency conflicts" in line
            or re.search(r" requires .*, but you have ", line)]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("pip_output", nargs="?")
    parser.add_argument("--allow", action="append", default=None,
                        help="names that may change (default: ALLOWED); `--allow none` allows no change")
    args = parser.parse_args()
    allowed = set(ALLOWED) if args.allow is None else {canonical(a) for a in args.allow if a != "none"}
    added, changed, removed = changes(read_freeze(args.before), read_freeze(args.after))
    for name, version in sorted(added.items()):
        print(f"  added     {name} {version}")
    for name, (old, new) in sorted(changed.items()):
        print(f"  {'changed' if name in allowed else 'CHANGED':9s} {name} {old} -> {new}")
    for name, version in sorted(removed.items()):
        print(f"  REMOVED   {name} {version}")
    failures = [f"{n} {old} -> {new}" + (" (Colab's kernel pins it)" if n in KERNEL else "")
                for n, (old, new) in sorted(changed.items()) if n not in allowed]
    failures += [f"{n} removed" for n in sorted(removed)]
    if args.pip_output:
        with open(args.pip_output) as f:
            failures += [f"pip printed: {line}" for line in pip_errors(f.read())]
    if failures:
        print("FAIL: the install changes Colab's runtime beyond what it must:\n  " + "\n  ".join(failures))
        return 1
    print(f"OK: {len(added)} added, {len(changed)} upgraded (all allowed), nothing removed, no pip error.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
