"""What the two training recipes (`train` for toy-shapes, `train_flow` for toy-shapes-flow) share: the run's
log, checkpoints written whole, and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import time

import torch


def save(obj, path: str) -> None:
    """torch.save through a temporary file, so that a stop mid-write leaves the previous checkpoint whole."""
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def log(workdir: str, **row) -> None:
    """Append `row` (with the time) to `<workdir>/log.jsonl` and print it as `key=value` pairs."""
    row["time"] = time.time()
    with open(os.path.join(workdir, "log.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")
    print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k != "time"),
          flush=True)


class Stop:
    """True once Ctrl-C or SIGTERM came (after `install`): the loops finish the current step, checkpoint and
    return, so that running the same command again carries on."""

    def __init__(self) -> None:
        self.requested = False

    def __bool__(self) -> bool:
        return self.requested

    def _on_signal(self, signum, frame) -> None:
        self.requested = True

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
