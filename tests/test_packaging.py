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


def _script(name: str):
    """A module of .ci/colab/ (not a package), loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / "colab" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _colab_versions() -> dict[str, str]:
    """{name: version} of Colab's runtime: the constraints file the Makefile's test-colab uses (torch: Colab's own)."""
    path = re.search(r"^COLAB_CONSTRAINTS := (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    versions = {}
    for line in (ROOT / path).read_text().splitlines():
        match = re.match(r"([A-Za-z0-9._-]+)==(\S+)(?:\s+# Colab: (\S+))?", line)
        if match:
            versions[_name(match.group(1))] = match.group(3) or match.group(2)
    return versions


def test_every_floor_is_met_by_colab_or_allowed_to_upgrade_there():
    """Installing t2v_nb on Colab upgrades only what it must: each dependency's bounds hold for Colab's version,
    or the package is on the install check's allowed list (and pyproject.toml says why)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    text = (ROOT / "pyproject.toml").read_text()
    colab = _colab_versions()
    allowed = _script("check_install").ALLOWED
    assert colab["ipython"] == "7.34.0" and colab["torch"].startswith("2.11")  # the file read is Colab's
    needs_newer = []
    for req in tomllib.loads(text)["project"]["dependencies"]:
        name = _name(req)
        if name not in colab:  # not on Colab (mediapy): the install adds it, nothing pins it there
            continue
        if Version(colab[name].split("+")[0]) not in SpecifierSet(req[len(name):].replace(" ", "")):
            needs_newer.append(name)
            assert name in allowed, f"{req}: Colab has {colab[name]}; allow it in check_install.py or lower the floor"
            comment = text.split("On Colab")[1].split("dependencies = [")[0]
            assert re.search(rf"^#.*\b{name.replace('-', '[-_]')}\b", comment, re.M), \
                f"pyproject.toml's comment on Colab does not name {name}"
    assert set(needs_newer) <= {"diffusers", "huggingface-hub", "safetensors"}, needs_newer  # what diffusers 0.40 needs


def test_install_check_fails_on_a_kernel_package_or_a_pip_error(tmp_path):
    import subprocess
    import sys

    def check(before, after, pip_output=""):
        for name, lines in (("before", before), ("after", after), ("pip", [pip_output])):
            (tmp_path / name).write_text("\n".join(lines) + "\n")
        return subprocess.run([sys.executable, str(ROOT / ".ci" / "colab" / "check_install.py"), str(tmp_path / "before"),
                               str(tmp_path / "after"), str(tmp_path / "pip")], capture_output=True, text=True)

    colab = ["ipython==7.34.0", "traitlets==5.7.1", "diffusers==0.37.1", "huggingface_hub==1.17.0"]
    ok = check(colab, ["ipython==7.34.0", "traitlets==5.7.1", "diffusers==0.42.1", "huggingface_hub==1.30.0",
                       "mediapy==1.2.4", "t2v_nb @ git+file:///src@abc"])
    assert ok.returncode == 0, ok.stdout
    assert "added     mediapy 1.2.4" in ok.stdout and "changed   diffusers 0.37.1 -> 0.42.1" in ok.stdout
    moved = check(colab, ["ipython==9.18.1", "traitlets==5.16.1", "diffusers==0.42.1", "huggingface_hub==1.17.0"])
    assert moved.returncode == 1
    assert "ipython 7.34.0 -> 9.18.1 (Colab's kernel pins it)" in moved.stdout and "traitlets" in moved.stdout
    conflict = ("ERROR: pip's dependency resolver does not currently take into account all the packages that are "
                "installed. This behaviour is the source of the following dependency conflicts.\n"
                "google-colab 1.0.0 requires ipython==7.34.0, but you have ipython 9.18.1 which is incompatible.")
    failed = check(colab, colab, conflict)
    assert failed.returncode == 1 and "pip printed: google-colab 1.0.0 requires ipython==7.34.0" in failed.stdout


def test_colab_constraints_come_from_a_freeze_with_our_torch():
    freeze = ["# a comment", "torch==2.11.0+cu128", "torchvision==0.26.0+cu128", "ipython==7.34.0",
              "google-colab @ file:///colabtools/dist/google_colab-1.0.0.tar.gz", "setuptools==75.2.0"]
    pins, urls, cuda = _script("freeze_to_constraints").convert(freeze, "2.13.0", unpin=["setuptools"])
    assert pins == ["torch==2.13.0  # Colab: 2.11.0+cu128", "ipython==7.34.0"]
    assert urls == ["google-colab"] and cuda == ["torchvision==0.26.0+cu128"]
    header = (ROOT / re.search(r"^COLAB_CONSTRAINTS := (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)).read_text()
    assert "googlecolab/backend-info" in header and re.search(r"commit [0-9a-f]{40}", header)


def test_make_test_colab_replaces_the_ipywidgets7_job():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test-colab: \$\(VENVCOLAB\)/.installed\n(\t.*\n)*\t.*pytest .*tests/test_widgets.py tests/test_notebooks.py",
                     makefile, re.M)
    assert "bash .ci/colab_env.sh" in makefile and "test-ipywidgets7" not in makefile
    run = (ROOT / ".ci" / "run").read_text()
    assert "make test-colab" in run and "make test-ipywidgets7" not in run
