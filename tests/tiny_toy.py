"""The bundled toy-shapes model (ModelScope's classes, trained weights) for the family contract suite."""

from __future__ import annotations

import tiny_modelscope
from conftest import loaded_toy

import t2v_nb

NAME = "modelscope"
SCHEDULERS = ("ddim", "dpm++")
SMALL = dict(num_frames=4, height=64, width=64, num_inference_steps=3)


def components(seed: int = 0, scheduler: str = "ddim") -> dict:
    from t2v_nb.schedulers import make_scheduler

    parts = loaded_toy("toy-shapes").components
    return {**parts, "scheduler": make_scheduler(scheduler, parts["scheduler"])}


def tiny_pipe(**kw) -> t2v_nb.StepwisePipeline:
    return t2v_nb.StepwisePipeline(**components(**kw))


reference = tiny_modelscope.reference
reference_frames = tiny_modelscope.reference_frames
