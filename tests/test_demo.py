"""`make demo`'s job (`python -m t2v_nb.demo`): videos, run records and predicted-x0 pictures, offline."""

from __future__ import annotations

import json
import os

import pytest

from t2v_nb import demo
from t2v_nb.models import toy_model_dir


@pytest.mark.skipif(not all(os.path.isfile(os.path.join(toy_model_dir(n), "model_index.json"))
                            for n in ("toy-shapes", "toy-shapes-flow")), reason="a bundled toy's weights are missing")
def test_demo_writes_both_toys_files_and_refuses_to_overwrite(tmp_path):
    prompt = "a red circle moving right"
    assert demo.main(["--out", str(tmp_path), "--prompt", prompt]) == 0
    for prefix, preset in (("", "toy-shapes"), ("flow_", "toy-shapes-flow")):
        name = tmp_path / f"{prefix}a_red_circle_moving_right"
        assert os.path.getsize(f"{name}.mp4") > 1000 and os.path.getsize(f"{name}_pred_x0.png") > 1000
        record = json.load(open(f"{name}.mp4.json"))["record"]
        assert record["prompt"] == prompt and record["model"]["preset"] == preset, record["model"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        demo.main(["--out", str(tmp_path), "--prompt", prompt, "--flow-model", ""])
