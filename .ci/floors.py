"""Print pip constraints that pin every dependency of pyproject.toml to its declared floor (`x>=1.2` -> `x==1.2`).

Used by `make test-lowest`: the package must work with every version it allows, the lowest included.
torch is left out (it is deliberately unpinned: Colab and conda bring their own; the job uses the Makefile's TORCH).
"""

import re
import sys
import tomllib

with open(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml", "rb") as f:
    deps = tomllib.load(f)["project"]["dependencies"]
for dep in deps:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+).*", dep)
    if match is None:
        sys.exit(f"{dep!r} has no `>=` floor: give every dependency one (`name>=version`).")
    name, floor = match.groups()
    if name.lower() != "torch":
        print(f"{name}=={floor}")
