"""The install paths agree: pyproject.toml and environment.yml name the same dependencies; `make lab` and the
lowest-versions job exist and are what the README and CI say."""

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
    """environment.yml = the dependencies + the `lab` extra (a conda user gets JupyterLab too)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["lab"]
    pypi = {_name(r): r.replace(" ", "") for r in wanted}
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


def test_ci_runs_the_slow_tests_that_make_test_leaves_out():
    """`make test` deselects the tests marked slow, `make test-slow` selects them, and CI runs both: no test
    is left out of CI by the split."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = lambda target: re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    assert '-m "not slow"' in recipe("test") and "-m slow" in recipe("test-slow")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make test" in ci and "make test-slow" in ci
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("slow:") for m in markers)


def test_accelerate_and_jupyterlab_are_declared():
    """accelerate: diffusers loads with low memory, offloads, and loads a Wan transformer at all only with it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "accelerate" in {_name(r) for r in project["dependencies"]}
    assert "jupyterlab" in {_name(r) for r in project["optional-dependencies"]["lab"]}


def test_every_dependency_has_a_floor_that_the_lowest_job_pins():
    import subprocess
    import sys

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "floors.py"), str(ROOT / "pyproject.toml")],
                         capture_output=True, text=True, check=True).stdout.split()
    pins = {_name(line): line.split("==")[1] for line in out}
    for req in project["dependencies"]:
        floor = re.search(r">=\s*([\d.]+)", req).group(1)
        assert _name(req) == "torch" or pins[_name(req)] == floor, req
    assert "torch" not in pins  # deliberately unpinned: the job takes the Makefile's TORCH


def test_make_lab_and_the_lowest_job_are_wired_up():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab: venv\n(\t.*\n)*\t.*jupyter lab --notebook-dir=notebooks", makefile, re.M)
    assert re.search(r"^test-lowest:", makefile, re.M) and ".ci/floors.py" in makefile
    assert "make test-lowest" in (ROOT / ".ci" / "run").read_text()
    assert "make lab" in (ROOT / "README.md").read_text()


def test_every_bundled_model_file_is_package_data():
    """An installed (non-editable) t2v_nb has all of both toys' files: each matches a package-data pattern."""
    import fnmatch

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["t2v_nb"]
    package = ROOT / "t2v_nb"
    files = [p.relative_to(package).as_posix() for d in ("toy/weights", "toy/weights_flow")
             for p in (package / d).rglob("*") if p.is_file()]
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)]
    assert files and not missing, missing
