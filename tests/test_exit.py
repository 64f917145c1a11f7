"""A script that uses t2v_nb and ends while the studio's loop runs exits cleanly, every time.

The studio's loop is a daemon thread; one still inside a torch call when Python finalizes used to abort the
process ("terminate called without an active exception", exit status 134; issue 36 saw it in 1 of 4 runs of a
script that loads toy-shapes, generates, saves an MP4 and a GIF and builds the studio). The script below does
that, starts a run and ends during its steps: before the fix (t2v_nb.widgets._end_threads_at_exit) it aborted in
each of 4 tries, and the test failed on its first.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from conftest import needs_toy

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRIES = 3
SCRIPT = """
import os, sys, time
import t2v_nb
from t2v_nb.widgets import Studio

pipe = t2v_nb.load("toy-shapes", device="cpu")
video = pipe.generate("a red circle moving right", seed=0, num_inference_steps=2, progress=False)
video.save(os.path.join(sys.argv[1], "a.mp4"))
video.save(os.path.join(sys.argv[1], "a.gif"))
studio = Studio(pipe, "a blue square moving up")
studio.start()
while not studio.steps:  # the loop is in its steps
    time.sleep(0.01)
print("ending while running:", studio.running, flush=True)
"""


@pytest.mark.slow  # three fresh interpreters that load the toy
@needs_toy("toy-shapes")
def test_a_script_that_ends_while_the_studio_runs_exits_cleanly(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for attempt in range(TRIES):
        out = tmp_path / str(attempt)
        out.mkdir()
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0 and "terminate called" not in done.stderr, (attempt, done.returncode, done.stderr[-2000:])
        assert "ending while running: True" in done.stdout  # it did end mid-run
        assert sorted(p.name for p in out.iterdir() if p.suffix in (".mp4", ".gif")) == ["a.gif", "a.mp4"]
