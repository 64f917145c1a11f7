"""The install paths agree: pyproject.toml and environment.yml name the same dependencies."""

from __future__ import annotations

import pathlib
import re
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's.
CONDA_TO_PYPI = {"pytorch": "torch"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pypi = {_name(r): r.replace(" ", "") for r in project["dependencies"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = {}
    for item in env:
        if isinstance(item, dict):
            for r in item["pip"]:
                if not r.startswith("-e"):
                    conda[_name(r)] = r.replace(" ", "")
        elif _name(item) not in ("python", "pip"):
            conda[CONDA_TO_PYPI.get(_name(item), _name(item))] = item.replace(" ", "")
    assert set(conda) == set(pypi)
    for name, req in pypi.items():  # the same version bounds
        bounds = lambda r: sorted(re.findall(r"[<>=!~]=?[\d.]+", r))
        assert bounds(conda[name]) == bounds(req), name


def test_torch_is_not_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_req = next(r for r in project["dependencies"] if _name(r) == "torch")
    assert "==" not in torch_req and "<" not in torch_req


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
