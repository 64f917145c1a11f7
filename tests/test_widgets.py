"""The studio, kernel-side: clicks are made in Python, assertions are on the studio's own state.

What only a browser can see (that the widgets render at all) is in test_browser.py.
"""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
import torch

from conftest import loaded_toy, tiny_pipe

from t2v_nb.preview import fit_linear_preview
from t2v_nb.widgets import VIEWS, Studio, first_content_token

TIMEOUT = 120  # seconds; a run of the tiny model takes well under one


@pytest.fixture(scope="module")
def previewed():
    """The tiny pipe with linear preview factors fitted on its own VAE (like a preset's)."""
    pipe = tiny_pipe()
    torch.manual_seed(0)
    pipe.preview = fit_linear_preview(pipe.vae, torch.randn(2, 4, 3, 8, 8), "test")
    return pipe


def png(image) -> bytes:
    """An Image widget's PNG bytes (ipywidgets 8 keeps a memoryview, 7 bytes)."""
    return bytes(image.value)


def run_to_end(studio: Studio) -> None:
    studio.run_button.click()
    assert studio.wait(TIMEOUT), "the run did not end"
    assert studio.error is None, studio.error_traceback


def test_run_sets_state_sliders_and_preview(previewed):
    studio = Studio(previewed, "a red circle", num_inference_steps=4)
    assert studio.run is None and not studio.running and studio.step_slider.disabled
    run_to_end(studio)
    run = studio.run
    assert run.done and run.i == 4 and [s["i"] for s in studio.steps] == [0, 1, 2, 3]
    assert [s["t"] for s in studio.steps] == [int(t) for t in run.timesteps]
    assert (studio.step_slider.min, studio.step_slider.max, studio.step_slider.value) == (0, 3, 3)
    assert (studio.frame_slider.min, studio.frame_slider.max) == (0, 2)
    assert (studio.progress.value, studio.progress.max) == (4, 4)
    assert not studio.step_slider.disabled and not studio.run_button.disabled and studio.stop_button.disabled
    assert png(studio.preview).startswith(b"\x89PNG") and png(studio.frame_image).startswith(b"\x89PNG")
    assert "done after 4 of 4 steps" in studio.status.value

    before = png(studio.preview)
    studio.step_slider.value = 0  # scrubbing redraws at once
    assert png(studio.preview) != before and studio.render_seconds is not None
    studio.step_slider.value = 3
    assert png(studio.preview) == before  # the same step draws the same picture
    frame_before = png(studio.frame_image)
    studio.frame_slider.value = 2
    assert png(studio.frame_image) != frame_before


def test_views_and_decodes_are_cached(previewed):
    studio = Studio(previewed, "a", num_inference_steps=3)
    run_to_end(studio)
    pictures = {}
    for view in VIEWS:
        studio.view.value = view
        pictures[view] = png(studio.preview)
        assert studio.frames().shape[0] == 3  # [F, H, W, 3]
    assert len(set(pictures.values())) == 3
    assert studio.frames("decoded x0").shape == (3, 16, 16, 3)  # full size; previews are latent size
    assert studio.frames("predicted x0").shape == (3, 8, 8, 3)
    decodes = studio._decoder.decodes
    studio.view.value = "decoded x0"
    for step in (0, 1, 2, 0, 1, 2):
        studio.step_slider.value = step
    assert studio._decoder.decodes == decodes + 2  # steps 0 and 1 once each; step 2 was decoded above


def test_model_without_preview_factors_decodes_instead():
    pipe = tiny_pipe()
    assert pipe.preview is None
    studio = Studio(pipe, "a", num_inference_steps=2)
    run_to_end(studio)
    assert studio.frames().shape == (3, 16, 16, 3)  # a VAE decode stands in for the linear preview
    before = png(studio.preview)
    studio.step_slider.value = 0
    assert png(studio.preview) != before


def test_stop_leaves_a_partial_run_that_scrubs_and_continues(previewed):
    studio = Studio(previewed, "a", num_inference_steps=6, min_update_interval=0)
    at_step_2, clicked = threading.Event(), threading.Event()

    def hold(value, ctx):  # step 2 waits until Stop has been clicked: the stop lands mid-run every time
        if ctx.step == 2:
            at_step_2.set()
            clicked.wait(TIMEOUT)

    with previewed.hooks({"step.latents": hold}):
        studio.run_button.click()
        assert at_step_2.wait(TIMEOUT)
        assert studio.running and not studio.stop_button.disabled and studio.run_button.disabled
        studio.stop_button.click()  # handled at once, on this thread, while the loop is busy
        clicked.set()
        assert studio.wait(TIMEOUT)
    run = studio.run
    assert run.i == 3 and 0 < run.i < run.num_steps and not studio.running
    assert studio.error is None and "stopped after 3 of 6" in studio.status.value
    assert studio.step_slider.max == 2 and studio.progress.value == 3
    before = png(studio.preview)
    studio.step_slider.value = 0
    assert png(studio.preview) != before
    assert not studio.continue_button.disabled
    studio.continue_button.click()
    assert studio.wait(TIMEOUT) and studio.error is None
    assert run.done and studio.run is run and [s["i"] for s in studio.steps] == list(range(6))
    assert studio.step_slider.max == 5 and studio.continue_button.disabled


@pytest.mark.parametrize("control, value, words", [
    ("num_inference_steps", 0, "num_inference_steps must be at least 1"),
    ("seed", -1, "seed must be in"),
    ("num_frames", 0, "num_frames must be at least 1"),
])
def test_bad_input_shows_a_message_and_the_studio_stays_usable(previewed, control, value, words):
    studio = Studio(previewed, "a", num_inference_steps=2)
    good = getattr(studio, control).value
    getattr(studio, control).value = value
    studio.run_button.click()
    assert not studio.running and studio.run is None
    assert words in studio.error and "Traceback" not in studio.message.value
    assert words.split()[0] in studio.message.value
    getattr(studio, control).value = good
    run_to_end(studio)  # clears the message
    assert studio.message.value == "" and studio.run.done


def test_an_error_during_a_step_keeps_the_steps_done(previewed):
    studio = Studio(previewed, "a", num_inference_steps=4)

    def fail(value, ctx):
        if ctx.step == 2:
            raise RuntimeError("broken hook")

    with previewed.hooks({"step.noise_pred": fail}):
        studio.run_button.click()
        assert studio.wait(TIMEOUT)
    assert studio.error == "RuntimeError: broken hook (during step 2)" and "Traceback" in studio.error_traceback
    assert studio.run.i == 2 and studio.step_slider.max == 1 and not studio.step_slider.disabled
    assert not studio.run_button.disabled


def test_word_maps_only_when_asked(previewed):
    studio = Studio(previewed, "red box", num_inference_steps=2)
    run_to_end(studio)
    assert not any(n.startswith("attn.") for n in studio.run.trace.names())
    assert studio.word.disabled and studio.word.value is None and studio.word_image.layout.display == "none"

    studio.capture_attention.value = True
    run_to_end(studio)
    assert any(n.startswith("attn.cross.") for n in studio.run.trace.names())
    labels = [label for label, _ in studio.word.options]
    assert labels[0] == "1: r" and len(labels) == len(studio.run.text.tokens) - 2  # a character tokenizer
    assert studio.run.text.tokens[1:4] == ["r", "e", "d</w>"]
    assert not studio.word.disabled and studio.word.value == 3  # "red"'s last piece; 0 is the start marker
    first = png(studio.word_image)
    assert first.startswith(b"\x89PNG") and studio.word_image.layout.display == ""
    studio.word.value = 1
    assert png(studio.word_image) != first


@pytest.mark.parametrize("tokens, special, expected", [
    (["<|startoftext|>", "a</w>", "red</w>", "circle</w>", "<|endoftext|>"], [1, 0, 0, 0, 1], 2),  # CLIP
    (["<|startoftext|>", "an</w>", "astro", "naut</w>", "<|endoftext|>"], [1, 0, 0, 0, 1], 3),  # a word's last piece
    (["\u2581a", "\u2581red", "\u2581circle", "</s>"], [0, 0, 0, 1], 1),  # T5: "\u2581" starts a word
    (["\u2581", "a", "\u2581the", "\u2581blue", "</s>"], [0, 0, 0, 0, 1], 3),  # a lone "\u2581" starts "a"
    (["<|startoftext|>", "a</w>", ",</w>", "the</w>", "<|endoftext|>"], [1, 0, 0, 0, 1], 1),  # none: the first
    (["<|startoftext|>", "<|endoftext|>"], [1, 1], None),  # the empty prompt
    (["t", "h", "e"], [0, 0, 0], 0),  # no word marks at all: each token is a word
])
def test_first_content_token(tokens, special, expected):
    assert first_content_token(tokens, [bool(s) for s in special]) == expected


def test_the_word_map_opens_on_the_first_content_word(previewed):
    studio = Studio(previewed, "the red box", num_inference_steps=2, capture_attention=True)
    run_to_end(studio)
    tokens = studio.run.text.tokens
    assert tokens[1:5] == ["t", "h", "e</w>", "r"] and studio.word.value == 6  # "the" skipped, "red" read


def test_play_loops_the_frame_slider(previewed):
    studio = Studio(previewed, "a", num_inference_steps=2)
    run_to_end(studio)
    seen = {studio.frame_slider.value}
    studio.play.value = True
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        seen.add(studio.frame_slider.value)
        time.sleep(0.01)
    studio.play.value = False
    assert seen == {0, 1, 2}
    studio.start()  # Run stops the player
    assert studio.wait(TIMEOUT) and not studio.play.value


def test_controls_choices_and_classes(previewed):
    studio = Studio(previewed)
    for _, (height, width) in studio.size.options:  # every offered size is one the model takes
        previewed.check_inputs(prompt="a", seed=0, num_frames=3, height=height, width=width, num_inference_steps=2)
    assert studio.size.value == (16, 16) and studio.scheduler.value == "ddim"
    classes = {c for w in _walk(studio.widget) for c in w._dom_classes}
    assert {"t2v-run", "t2v-stop", "t2v-step-slider", "t2v-frame-slider", "t2v-preview", "t2v-status"} <= classes
    assert hasattr(studio, "_ipython_display_")
    for name in ("ddim", "euler"):  # a named scheduler reaches the run
        studio.scheduler.value = name
        studio.num_inference_steps.value = 2
        run_to_end(studio)
        assert studio.run.record()["scheduler"] == name
    studio.close()


def test_a_scheduler_without_a_short_name_is_offered_as_the_models_own():
    from diffusers import PNDMScheduler

    pipe = tiny_pipe()
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config)  # PRK steps on: not one of SCHEDULERS
    studio = Studio(pipe)
    assert studio.scheduler.value is None and studio.scheduler.label == "the model's (PNDMScheduler)"
    assert studio.settings()["scheduler"] is None  # pipe.start then uses pipe.scheduler


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def test_warnings_show_as_notes(previewed):
    studio = Studio(previewed, "a" * 200, num_inference_steps=1)  # longer than the 77 tokens the encoder reads
    run_to_end(studio)
    assert studio.error is None and any("cut" in note for note in studio.notes)
    assert "cut" in studio.message.value


def test_notes_show_only_t2v_nbs_own_warnings(previewed, monkeypatch):
    """Library noise (a DeprecationWarning, a library's UserWarning) stays out of the notes box; ours is there, on
    every Run, not only the first."""
    scheduler = type(previewed.scheduler)
    set_timesteps = scheduler.set_timesteps

    def noisy_set_timesteps(self, *args, **kwargs):  # this module stands for a library: not t2v_nb
        warnings.warn("__array__ implementation doesn't accept a copy keyword", DeprecationWarning)
        warnings.warn("a library's own user warning", UserWarning)
        return set_timesteps(self, *args, **kwargs)

    monkeypatch.setattr(scheduler, "set_timesteps", noisy_set_timesteps)
    studio = Studio(previewed, "a" * 200, num_inference_steps=1, capture_attention=True)
    for _ in range(2):
        with warnings.catch_warnings(record=True) as passed_on:
            warnings.simplefilter("always")
            run_to_end(studio)
        assert len(studio.notes) == 1 and "cut" in studio.notes[0], studio.notes
        assert "__array__" not in studio.message.value and "library" not in studio.message.value
        # the library's warnings are not swallowed: they go on to Python's usual handling
        assert {str(w.message) for w in passed_on} >= {"a library's own user warning"}


def test_no_deprecation_notes_with_attention_and_every_scheduler(previewed):
    """What the learner saw in JupyterLab: numpy's `__array__ ... copy keyword` DeprecationWarning (raised inside
    diffusers' DPM-Solver and Euler `set_timesteps` with numpy 2 and torch's `Tensor.__array__`) in the notes."""
    studio = Studio(previewed, "red box", num_inference_steps=2, capture_attention=True)
    for name, _ in studio.scheduler.options:
        studio.scheduler.value = name
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # what the studio used to do: make every warning visible
            run_to_end(studio)
        assert studio.notes == [], (name, studio.notes)
        assert studio.message.value == ""


def test_the_empty_prompt_with_attention_draws_its_results(previewed):
    """"" is a valid prompt (the unconditional model): no words to pick, everything else drawn."""
    studio = Studio(previewed, "", num_inference_steps=2, capture_attention=True)
    run_to_end(studio)
    assert any(n.startswith("attn.cross.") for n in studio.run.trace.names())
    assert "done after 2 of 2 steps" in studio.status.value
    assert studio.word.value is None and studio.word.disabled and studio.word_image.layout.display == "none"
    assert studio.word.options[0][0] == "(the empty prompt has no words)"
    assert png(studio.preview).startswith(b"\x89PNG")
    studio.step_slider.value = 0  # scrubbing still works
    assert studio.error is None, studio.error_traceback


@pytest.mark.parametrize("family", ["tiny_wan", "tiny_cogvideox", "tiny_ltx"])
def test_the_studio_runs_a_diffusion_transformer_with_attention(family):
    # One picture per latent frame (4 video frames each, after the first) is shown for each of its video frames.
    import importlib

    fam = importlib.import_module(family)
    pipe = fam.tiny_pipe()
    pipe.defaults.update(fam.SMALL)  # the real model's 480x832 is more than a tiny transformer has positions for
    if pipe.preview is None:
        from t2v_nb.preview import LinearPreview

        C = pipe.family.latent_shape(9, 32, 32)[0]
        pipe.preview = LinearPreview(np.full((C, 3), 0.1, np.float32), np.full(3, 0.5, np.float32))
    studio = Studio(pipe, "a red circle", num_frames=fam.SMALL["num_frames"], num_inference_steps=2,
                    capture_attention=True)
    studio.start()
    assert studio.wait(120) and studio.error is None, studio.error
    F = fam.SMALL["num_frames"]
    assert studio.frame_slider.max == F - 1
    assert all(studio.frames(view).shape[0] == F for view in VIEWS)
    words = [label for label, _ in studio.word.options]
    assert any("red" in w for w in words) and not any("\u2581" in w for w in words)  # words, not T5 pieces
    studio.word.value = studio.word.options[0][1]
    studio._redraw()
    assert studio.error is None and studio.word_image.value


def test_the_studio_runs_the_flow_toy_to_the_end_with_no_notes():
    """The bundled diffusion-transformer toy in the studio: its defaults, its 16 text positions as words, its
    linear preview, attention, and no library warning shown as a note."""
    import os

    from t2v_nb.models import toy_model_dir

    if not os.path.isfile(os.path.join(toy_model_dir("toy-shapes-flow"), "model_index.json")):
        pytest.skip("the toy-shapes-flow weights are missing")
    pipe = loaded_toy("toy-shapes-flow")
    studio = Studio(pipe, "a red circle moving right", capture_attention=True)
    assert studio.num_inference_steps.value == 20 and studio.scheduler.value == "euler"
    assert [v for _, v in studio.scheduler.options] == ["euler", "euler-a", "unipc", "dpm++"]  # flow samplers only
    run_to_end(studio)
    assert studio.frame_slider.max == 7 and all(studio.frames(view).shape[0] == 8 for view in VIEWS)
    words = [label for label, _ in studio.word.options]
    assert any("circle" in w for w in words) and not any("\u2581" in w for w in words), words
    assert dict((v, label) for label, v in studio.word.options)[studio.word.value].endswith(": red")  # not "a"
    assert png(studio.preview).startswith(b"\x89PNG")
    assert studio.notes == [] and studio.message.value == "", studio.notes


def test_early_guidance_box_follows_the_models_interval():
    """A model that guides only some steps (here: t >= 500) shows the box, ticked: runs use its interval;
    unticked, guidance at every step. A model that guides every step hides it."""
    plain = Studio(tiny_pipe())
    assert plain.early_guidance.layout.display == "none" and plain.settings()["guidance_interval"] is None
    plain.close()
    pipe = tiny_pipe()
    pipe.defaults["guidance_interval"] = (500.0, 1000.0)
    studio = Studio(pipe)
    assert studio.early_guidance.layout.display != "none" and studio.early_guidance.value
    assert "500" in studio.early_guidance.description
    run_to_end(studio)
    assert studio.run.params["guidance_interval"] == (500.0, 1000.0)
    studio.early_guidance.value = False
    run_to_end(studio)
    assert studio.run.params["guidance_interval"] is None
    assert Studio(pipe, early_guidance_only=False).settings()["guidance_interval"] is None
    studio.close()
