"""The studio: a notebook UI that runs a text-to-video model step by step and lets you scrub through it.

    >>> from t2v_nb.widgets import Studio
    >>> studio = Studio(pipe, "a red circle moving right")
    >>> studio                     # last expression of a cell: the UI (or studio.show())

Press Run: the preview follows every denoising step. Stop ends the run after the step in progress;
Continue resumes it. Afterwards the sliders scrub through the steps and frames of x_t, the predicted
clean latents (x0) and their VAE decodes, with the prompt's word heat maps when attention was captured.

How it stays responsive: the denoising loop runs in one background thread. The kernel's main thread is
then idle, so it handles widget events at once (a Stop click reached the loop 2 ms after it was sent in
a measurement with ipykernel 7; an asyncio task yielding between steps got it only 3-4 steps later).
The thread updates the widgets itself (ipywidgets sends their state from any thread). Model work never
runs in two threads at once: the text is encoded on the main thread before the loop starts, and the
scrubbing controls, which may VAE-decode, are disabled while the loop runs. The Jupyter interrupt
button does not reach the thread: use Stop.

Works with ipywidgets 7.7 and 8; uses no `jslink`, no `Play` widget (a kernel-side player instead) and
no third-party widgets. Python-side state for code and tests: `studio.run` (the current `Run`),
`studio.steps` (one dict per step done), `studio.error` (the last error message, or None).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import html
import io
import sys
import threading
import time
import traceback
import warnings
import weakref

import ipywidgets as W
import numpy as np

from . import viz
from .preview import StepDecoder
from .schedulers import FLOW_SCHEDULERS, SCHEDULERS, scheduler_name

__all__ = ["Studio", "VIEWS", "first_content_token"]

# What the sliders scrub through: label -> (trace name, full VAE decode?).
VIEWS = {"x_t": ("step.latents", False), "predicted x0": ("step.pred_x0", False),
         "decoded x0": ("step.pred_x0", True)}
_ATTENTION_BUDGET = 2**29  # bytes of cross-attention maps a run may record (512 MiB)
_STUDIOS = weakref.WeakSet()  # the studios that have started a thread (the loop or the player)
_EXITING = threading.Event()  # set at interpreter exit: the threads end after the step in progress


# Words that say little about what is drawn: the word map opens on the first word not among them.
_FUNCTION_WORDS = frozenset("""a an the this that these those some one of on in at to into onto from by with
    through over under across near and or but is are was be its his her their it they he she""".split())


def first_content_token(tokens, special) -> int | None:
    """Position of the first content word of a prompt in its token table (its last piece), or None.

    `tokens` are the tokens the model reads and `special` says which are markers (`run.text.tokens`,
    `run.text.special`). Pieces are joined into words by their marks (CLIP's "</w>" ends a word, T5's "▁"
    starts one; with no marks at all, each token is a word). A word of letters or digits that is not a function
    word ("a", "the", "of", ...) is a content word. A prompt with none gives its first word's last piece; an
    empty prompt, None.

    >>> first_content_token(["<|startoftext|>", "a</w>", "red</w>", "circle</w>", "<|endoftext|>"],
    ...                     [True, False, False, False, True])
    2
    """
    from .families.base import token_joins

    marks = [token_joins(tok) for tok in tokens]  # (text, "end"|"start"|"")
    unmarked = not any(mark for (_, mark), marker in zip(marks, special) if not marker)  # then a token is a word
    words, piece = [], []  # words as lists of (position, text)
    for p, ((text, mark), marker) in enumerate(zip(marks, special)):
        if marker or mark == "start" or unmarked:
            if piece:
                words.append(piece)
            piece = []
        if marker:
            continue
        piece.append((p, text))
        if mark == "end":
            words.append(piece)
            piece = []
    if piece:
        words.append(piece)
    for word in words:
        text = "".join(t for _, t in word).lower()
        if any(c.isalnum() for c in text) and text not in _FUNCTION_WORDS:
            return word[-1][0]
    return words[0][-1][0] if words else None


class Studio:
    """Prompt, settings, Run/Stop, a live preview, then step/frame scrubbing, word heat maps and a plot.

    Args:
        pipe: a `StepwisePipeline` (`t2v_nb.load(...)`).
        prompt, negative_prompt, seed, num_inference_steps, guidance_scale, num_frames, scheduler: the
            starting values of the controls (defaults: the model's, `pipe.defaults`).
        capture_attention: start with "capture attention" ticked (records cross-attention: word maps).
        early_guidance_only: for a model whose defaults guide only some steps (`guidance_interval`, e.g.
            `(700, 1000)`: while t >= 700), start with that box ticked (default) or not (guidance at every step).
            Models that guide every step do not show the box.
        min_update_interval: the live preview is redrawn after every step, but at most this often (s).
    """

    def __init__(self, pipe, prompt: str = "", *, negative_prompt: str = "", seed: int = 0,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 num_frames: int | None = None, scheduler: str | None = None, capture_attention: bool = False,
                 early_guidance_only: bool = True, min_update_interval: float = 0.05):
        self.pipe = pipe
        d = pipe.defaults
        self.run = None  # the current Run
        self.steps: list[dict] = []  # per step done: {"i", "t", "seconds"}
        self.error: str | None = None  # the last error, as shown
        self.error_traceback: str | None = None  # its traceback, for debugging
        self.notes: list[str] = []  # warnings from the last start (e.g. a prompt cut at 77 tokens)
        self.render_seconds: float | None = None  # how long the last scrub took to draw, kernel-side
        self.min_update_interval = min_update_interval
        self._decoder = None
        self._cache: dict = {}
        self._idle = threading.Event()
        self._idle.set()
        self._stop = threading.Event()
        self._lock = threading.RLock()  # one redraw at a time (main thread, play thread)
        self._thread = self._player = None
        self._has_words = False

        # --- settings
        wide, short, style = W.Layout(width="48%"), W.Layout(width="160px"), {"description_width": "initial"}
        self.prompt = W.Text(prompt, description="prompt", placeholder="what the video shows", layout=wide,
                             style=style)
        self.negative_prompt = W.Text(negative_prompt, description="negative prompt", layout=wide, style=style,
                                      placeholder="what guidance steers away from")
        self.seed = W.IntText(seed, description="seed", layout=short, style=style)
        pick = lambda value, name: d[name] if value is None else value
        self.num_inference_steps = W.IntText(pick(num_inference_steps, "num_inference_steps"), description="steps",
                                             layout=short, style=style)
        self.guidance_scale = W.FloatText(pick(guidance_scale, "guidance_scale"), description="guidance", layout=short,
                                          style=style)
        self.num_frames = W.IntText(pick(num_frames, "num_frames"), description="frames", layout=short, style=style)
        sizes = _sizes(pipe)
        self.size = W.Dropdown(options=sizes, value=sizes[0][1], description="size", style=style,
                               layout=W.Layout(width="190px"))
        own = scheduler_name(pipe.scheduler)
        # the samplers this model can use
        table = FLOW_SCHEDULERS if pipe.prediction_type == "flow" else {**SCHEDULERS, **pipe.family.schedulers}
        names = [(n, n) for n in table] + ([] if own in table else [(f"the model's ({own})", None)])
        chosen = scheduler or (own if own in table else None)  # None: the pipe's own scheduler
        self.scheduler = W.Dropdown(options=names, index=[v for _, v in names].index(chosen), description="scheduler",
                                    style=style, layout=W.Layout(width="230px"))
        self.capture_attention = W.Checkbox(capture_attention, description="capture attention", indent=False,
                                            layout=W.Layout(width="160px"))
        self._interval = d.get("guidance_interval")  # the model's own, or None (guidance at every step)
        low = f"{self._interval[0]:g}" if self._interval else ""
        self.early_guidance = W.Checkbox(bool(self._interval) and early_guidance_only, indent=False,
                                         description=f"guide only t \u2265 {low}",
                                         layout=W.Layout(width="170px", display=None if self._interval else "none"))
        # --- run controls
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.continue_button = W.Button(description="Continue", icon="forward", disabled=True,
                                        tooltip="Resume a stopped run where it stopped")
        self.progress = W.IntProgress(0, min=0, max=1, layout=W.Layout(width="240px"))
        self.status = W.HTML("Press Run.")
        self.message = W.HTML("")
        # --- scrubbing
        self.view = W.ToggleButtons(options=list(VIEWS), value="predicted x0", disabled=True,
                                    tooltips=["the noisy latents entering the step", "the step's guess of the clean "
                                              "latents (linear preview)", "that guess through the VAE decoder"])
        self.word = W.Dropdown(options=[("(capture attention to see word maps)", None)], index=0, description="word",
                               disabled=True, layout=W.Layout(width="260px"))
        self.step_slider = W.IntSlider(0, min=0, max=0, description="step", disabled=True,
                                       layout=W.Layout(width="420px"))
        self.frame_slider = W.IntSlider(0, min=0, max=max(self.num_frames.value - 1, 0), description="frame",
                                        disabled=True, layout=W.Layout(width="320px"))
        self.play = W.ToggleButton(False, description="play", icon="play", disabled=True,
                                   tooltip="Loop through the frames (a player in the kernel)",
                                   layout=W.Layout(width="90px"))
        natural = dict(align_self="flex-start", max_width="100%")  # as drawn, not stretched to the box's width
        self.preview = W.Image(format="png", layout=W.Layout(**natural))
        self.frame_image = W.Image(format="png", layout=W.Layout(**natural))
        self.word_image = W.Image(format="png", layout=W.Layout(display="none", **natural))
        self.plot = W.Output(layout=W.Layout(min_width="300px"))
        self.page_path = W.Text("t2v_run.html", description="page", layout=W.Layout(width="230px"), style=style)
        self.export_button = W.Button(description="Save page", icon="download", disabled=True,
                                      tooltip="Write the run as one web page that opens in any browser (Run.to_html)")
        for widget, name in [(self.run_button, "run"), (self.stop_button, "stop"), (self.continue_button, "continue"),
                             (self.progress, "progress"), (self.status, "status"), (self.message, "message"),
                             (self.prompt, "prompt"), (self.negative_prompt, "negative-prompt"), (self.seed, "seed"),
                             (self.num_inference_steps, "steps"), (self.guidance_scale, "guidance"),
                             (self.num_frames, "frames"), (self.size, "size"), (self.scheduler, "scheduler"),
                             (self.capture_attention, "attention"), (self.early_guidance, "early-guidance"),
                             (self.view, "view"), (self.word, "word"),
                             (self.step_slider, "step-slider"), (self.frame_slider, "frame-slider"),
                             (self.play, "play"), (self.preview, "preview"), (self.frame_image, "frame"),
                             (self.word_image, "words"), (self.plot, "plot"), (self.page_path, "page-path"),
                             (self.export_button, "export")]:
            widget.add_class(f"t2v-{name}")

        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.continue_button.on_click(lambda _: self.resume())
        self.export_button.on_click(lambda _: self.export())
        self.step_slider.observe(lambda _: self._redraw(), names="value")
        self.view.observe(lambda _: self._redraw(), names="value")
        self.word.observe(lambda _: self._redraw(), names="value")
        self.frame_slider.observe(lambda _: self._redraw(strip=False), names="value")
        self.play.observe(self._on_play, names="value")

        row = lambda *c: W.HBox(list(c), layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.widget = W.VBox([
            row(self.prompt, self.negative_prompt),
            row(self.seed, self.num_inference_steps, self.guidance_scale, self.num_frames, self.size,
                self.scheduler, self.capture_attention, self.early_guidance),
            row(self.run_button, self.stop_button, self.continue_button, self.progress, self.status),
            self.message,
            row(self.view, self.word, self.page_path, self.export_button),
            row(self.step_slider, self.frame_slider, self.play),
            self.preview, self.word_image,
            row(self.frame_image, self.plot),
        ])
        self.widget.add_class("t2v-studio")

    # ------------------------------------------------------------------ showing

    def show(self) -> None:
        """Display the studio (the same as ending a cell with `studio`)."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self) -> None:  # IPython calls this for the last expression of a cell (ipywidgets 7 and 8)
        self.show()

    def __repr__(self) -> str:
        return f"Studio({self.pipe!r}, run={self.run!r}, running={self.running})"

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        """True while the denoising loop runs."""
        return not self._idle.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the loop ends (for scripts and tests; a waiting cell holds back Stop clicks)."""
        return self._idle.wait(timeout)

    def settings(self) -> dict:
        """The controls' values as keyword arguments of `pipe.start`."""
        height, width = self.size.value
        return {"prompt": self.prompt.value, "negative_prompt": self.negative_prompt.value, "seed": self.seed.value,
                "num_inference_steps": self.num_inference_steps.value, "guidance_scale": self.guidance_scale.value,
                "num_frames": self.num_frames.value, "height": height, "width": width,
                "scheduler": self.scheduler.value,
                "guidance_interval": self._interval if self.early_guidance.value else None}

    # ------------------------------------------------------------------ run, stop, continue

    def start(self):
        """What Run does: check the settings, encode the text, and start the loop. Returns the Run, or None
        (then `studio.error` says why)."""
        if self.running:
            self._say_error("A run is in progress: press Stop first.")
            return None
        self.play.value = False
        self._say_error(None)
        settings = self.settings()
        try:
            with _own_warnings() as notes:
                record = self._record(settings)
                run = self.pipe.start(**settings, record=record)  # checks the inputs, then encodes the text
        except Exception as e:  # noqa: BLE001 - every failure is shown in the studio, not as a traceback
            self._say_error(e)
            return None
        self.notes = notes
        self.message.value = "".join(f"<div style='color:#850;background:#fff6e0;padding:4px 8px;margin:2px 0'>"
                                     f"{html.escape(note)}</div>" for note in self.notes)
        self.run, self.steps, self._cache = run, [], {}
        self._decoder = StepDecoder(run)
        self.step_slider.value = self.frame_slider.value = 0
        self.step_slider.max = 0
        self.frame_slider.max = run.params["num_frames"] - 1
        self._set_words([("(capture attention to see word maps)", None)])
        self.plot.outputs = ()
        self._launch(run)
        return run

    def stop(self) -> None:
        """What Stop does: end the loop after the step in progress (the run stays usable and can continue)."""
        self.play.value = False
        if self.running:
            self._stop.set()
            self.status.value = "stopping after this step…"

    def resume(self):
        """What Continue does: carry on with a stopped run from the step it reached."""
        if self.running or self.run is None or self.run.done:
            return None
        self.play.value = False
        self._say_error(None)
        self._launch(self.run)
        return self.run

    def export(self, path: str | None = None, overwrite: bool = False):
        """What Save page does: write the current run as one self-contained web page (`Run.to_html`) to `path`
        (default: the page box's). Returns the `t2v_nb.page.Page`, or None (then `studio.error` says why)."""
        if self.running or self.run is None or not self.run.i:
            self._say_error("Nothing to save yet: press Run and let it do a step." if not self.running else
                            "A run is in progress: press Stop first, or wait for it to end.")
            return None
        path = path or self.page_path.value
        self._say_error(None)
        try:
            with _own_warnings() as notes:
                page = self.run.to_html(path, overwrite=overwrite)
        except Exception as e:  # noqa: BLE001 - shown in the studio, as every other failure
            self._say_error(e, during="saving the page")
            return None
        self.message.value = "".join(
            f"<div style='color:#050;background:#eefbe8;padding:4px 8px;margin:2px 0'>{html.escape(line)}</div>"
            for line in [f"Saved {path} ({page.nbytes / 1e6:.1f} MB): open it in any browser, or send it; "
                         f"it needs no Python."] + notes)
        return page

    def close(self) -> None:
        """Stop the loop and the player, and close the widgets."""
        self.stop()
        self.wait(60)
        self.widget.close()

    def _record(self, settings: dict) -> list[str] | str:
        """What the run records: the default step tensors, plus cross-attention layers if asked (within budget)."""
        if not self.capture_attention.value:
            return "default"
        from .attention import attention_layers
        from .pipeline import RECORD_DEFAULT

        p = self.pipe.check_inputs(**{k: settings[k] for k in ("prompt", "negative_prompt", "seed", "num_frames",
                                                               "height", "width", "num_inference_steps",
                                                               "guidance_scale")})
        cross = {n: v for n, v in attention_layers(self.pipe, p["height"], p["width"], p["num_frames"]).items()
                 if v["kind"] == "cross"}
        size = {n: 4 * int(np.prod(v["shape"])) * p["num_inference_steps"] for n, v in cross.items()}  # bytes
        chosen = sorted(cross, key=lambda n: size[n])
        while len(chosen) > 1 and sum(size[n] for n in chosen) > _ATTENTION_BUDGET:
            chosen.pop()  # leave out the finest grids first
        if len(chosen) < len(cross):
            warnings.warn(f"Capturing {len(chosen)} of {len(cross)} cross-attention layers (the coarser ones) "
                          f"to keep the maps under {_ATTENTION_BUDGET >> 20} MiB.")
        return list(RECORD_DEFAULT) + chosen

    def _launch(self, run) -> None:
        self._stop.clear()
        self._idle.clear()
        self._set_busy(True)
        self.progress.max, self.progress.value = run.num_steps, run.i
        self.status.value = f"step {run.i}/{run.num_steps}…"
        self._thread = threading.Thread(target=self._loop, args=(run,), name="t2v-studio", daemon=True)
        _STUDIOS.add(self)
        self._thread.start()

    def _loop(self, run) -> None:
        """The background thread: the denoising steps, a live preview after each, then the scrubbing set-up."""
        last = 0.0
        try:
            while not run.done and not self._stop.is_set() and not _EXITING.is_set():
                t0 = time.perf_counter()
                step = run.step()
                self.steps.append({"i": step.i, "t": step.t, "seconds": time.perf_counter() - t0})
                if run.done or time.monotonic() - last >= self.min_update_interval:
                    self._live(run, step)
                    last = time.monotonic()
        except BaseException as e:  # noqa: BLE001 - shown in the studio; the run keeps its completed steps
            self._say_error(e, during=f"step {run.i}")
        finally:
            try:
                self._after(run)
            except BaseException as e:  # noqa: BLE001
                self._say_error(e, during="drawing the results")
            self._set_busy(False)
            self._idle.set()

    def _live(self, run, step) -> None:
        """Progress, a line of status and the preview of the step's predicted x0 (all frames if cheap)."""
        F = run.params["num_frames"]
        f = min(self.frame_slider.value, F - 1)
        if self.pipe.preview is not None:
            frames = _per_video_frame(self.pipe, self.pipe.preview(step.pred_x0)[0], F)  # [F, h, w, 3]: linear preview
            one = frames[f : f + 1]
        else:  # no linear factors: a full VAE decode, of one frame only
            frames = one = self.pipe.decode_latents(step.pred_x0, frames=[f])[0].cpu().numpy()  # [1, H, W, 3]
        self.preview.value = _png(_display(frames, _strip_height(frames.shape[1:3], len(frames))))
        self.frame_image.value = _png(_display(one, 256))
        self.progress.value = run.i
        secs = np.mean([s["seconds"] for s in self.steps[-5:]])
        left = (run.num_steps - run.i) * secs
        self.status.value = (f"step {run.i}/{run.num_steps} (t={step.t}) · {secs:.2f} s/step · ~{left:.0f} s left"
                             + ("" if self.pipe.preview is not None else
                                f" · no linear preview for this model: showing a VAE decode of frame {f}"))

    def _after(self, run) -> None:
        """Set the sliders and controls to the steps done, draw the plot and the selected step."""
        k = run.i
        self.progress.value = k
        how = "done" if run.done else ("stopped" if self._stop.is_set() else "ended")
        took = sum(s["seconds"] for s in self.steps)
        self.status.value = (f"{how} after {k} of {run.num_steps} steps ({took:.1f} s)"
                             + ("" if run.done or not k else " · Continue resumes the run"))
        if k == 0:
            return
        self.step_slider.max = k - 1
        self.step_slider.value = k - 1
        if any(n.startswith("attn.cross.") for n in run.trace.names()):
            text = run.text  # start and end markers left out; tokens shown as words
            words = [(f"{p}: {w}", p) for p, (w, special) in enumerate(zip(text.words, text.special)) if not special]
            self._set_words(words or [("(the empty prompt has no words)", None)],
                            first_content_token(text.tokens, text.special))
        self.plot.outputs = (_bundle(viz.latent_stats(run.trace)),)

    def _set_words(self, options: list, value: int | None = None) -> None:
        """The word menu's entries, opened on `value` (a token position among them) or on the first."""
        self._has_words = options[0][1] is not None
        self.word.options = options
        self.word.index = 0  # ipywidgets 8 selects nothing when the old value was None
        if value is not None and value in [v for _, v in options]:
            self.word.value = value

    def _set_busy(self, busy: bool) -> None:
        """Settings and scrubbing are locked while the loop runs; Stop only then."""
        for w in (self.run_button, self.prompt, self.negative_prompt, self.seed, self.num_inference_steps,
                  self.guidance_scale, self.num_frames, self.size, self.scheduler, self.capture_attention,
                  self.early_guidance):
            w.disabled = busy
        self.stop_button.disabled = not busy
        self.continue_button.disabled = busy or self.run is None or self.run.done or self.run.i == 0
        scrub = not busy and bool(self.steps)
        for w in (self.view, self.step_slider, self.frame_slider, self.play, self.export_button):
            w.disabled = not scrub
        self.word.disabled = not scrub or not self._has_words
        if not busy:
            self._redraw()

    def _say_error(self, error, during: str = "") -> None:
        """Show an error as a message: input errors by their text, others with their type."""
        if error is None:
            self.error = self.error_traceback = None
            self.message.value = ""
            return
        if isinstance(error, BaseException):
            self.error_traceback = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            text = str(error) if isinstance(error, (ValueError, TypeError)) else f"{type(error).__name__}: {error}"
            if isinstance(error, KeyboardInterrupt):
                text = "Interrupted."
        else:
            text = str(error)
        self.error = text + (f" (during {during})" if during else "")
        self.message.value = (f"<div style='color:#a00;background:#fee;padding:4px 8px;border-radius:3px'>"
                              f"{html.escape(self.error)}</div>")

    # ------------------------------------------------------------------ scrubbing

    def frames(self, view: str | None = None, step: int | None = None):
        """The frames shown for a view and step (default: the selected ones): float32 [F, H, W, 3] in [0, 1]."""
        view = view or self.view.value
        step = self.step_slider.value if step is None else step
        name, decode = VIEWS[view]
        if decode or self.pipe.preview is None:  # full VAE decodes, cached by the StepDecoder
            return self._decoder(step, name)
        key = (name, step)
        if key not in self._cache:
            per_latent = self.pipe.preview(self.run.trace.step(name, step))[0]  # [F', h, w, 3]
            self._cache[key] = _per_video_frame(self.pipe, per_latent, self.run.params["num_frames"])  # [F, h, w, 3]
        return self._cache[key]

    def _redraw(self, strip: bool = True) -> None:
        """Draw the selected step/frame/word (when not running); time it in `render_seconds`."""
        if self.running and threading.current_thread() is not self._thread:
            return  # the loop's thread draws when it ends; model work stays in one thread
        if self.run is None or not self.steps or self.step_slider.value >= self.run.i:
            return
        try:
            with self._lock:
                t0 = time.perf_counter()
                frames = self.frames()  # [F, H, W, 3]
                f = min(self.frame_slider.value, len(frames) - 1)
                self.frame_image.value = _png(_display(frames[f : f + 1], 256))
                if strip:
                    height = _strip_height(frames.shape[1:3], len(frames))
                    self.preview.value = _png(_display(frames, height))
                    self._draw_words(frames, height)
                self.render_seconds = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            self._say_error(e, during="drawing")

    def _draw_words(self, frames, height: int) -> None:
        """The selected word's cross-attention at the selected step, over each frame (0..1 over the frames)."""
        pos = self.word.value
        self.word_image.layout.display = "none" if pos is None else ""
        if pos is None:
            return
        from .attention import word_maps

        key = ("words", pos, self.step_slider.value)
        if key not in self._cache:
            m = word_maps(self.run, [pos], steps=[self.step_slider.value])[0].numpy()  # [F', h', w']
            m = _per_video_frame(self.pipe, m, len(frames))  # [F, h', w']
            self._cache[key] = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
        base = _display(frames, height).astype(np.float32) / 255  # [F, Hd, Wd, 3]
        heat = _resize(self._cache[key], base.shape[1:3])  # [F, Hd, Wd] in [0, 1]
        import matplotlib

        colour = matplotlib.colormaps["turbo"](heat)[..., :3]
        self.word_image.value = _png((255 * (0.45 * base + 0.55 * colour)).astype(np.uint8))

    def _on_play(self, change) -> None:
        if change["new"] and (self._player is None or not self._player.is_alive()):
            self._player = threading.Thread(target=self._playing, name="t2v-studio-player", daemon=True)
            _STUDIOS.add(self)
            self._player.start()

    def _playing(self) -> None:
        """The kernel-side player: next frame every 1/fps seconds while `play` is down."""
        delay = 1.0 / float(self.pipe.defaults.get("fps") or 8.0)
        while self.play.value and not self.running and not _EXITING.is_set():
            n = self.frame_slider.max + 1
            self.frame_slider.value = (self.frame_slider.value + 1) % n
            time.sleep(delay)
        self.play.value = False


@atexit.register
def _end_threads_at_exit(timeout: float = 600.0) -> None:
    """At interpreter exit, end every studio's loop and player and wait for them (at most `timeout` s each).

    They are daemon threads: Python does not wait for them, and one still inside a torch call when the
    interpreter finalizes is ended as it takes the GIL back, through C++ code that may not be unwound, which
    aborts the process ("terminate called without an active exception", exit status 134). The loop ends after
    the step in progress, as after Stop."""
    _EXITING.set()
    for studio in list(_STUDIOS):
        for thread in (studio._thread, studio._player):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout)


# ---------------------------------------------------------------------- warnings


@contextlib.contextmanager
def _own_warnings():
    """Collect, as a list of messages, the warnings t2v_nb itself raises in the block (prompt cut at 77 tokens,
    attention layers left out, ...): what the studio's notes box shows the learner.

    Other libraries' warnings (numpy's and torch's deprecations inside diffusers' schedulers, for example) are
    not the learner's business: they go on to Python's usual handling, under the filters in force.
    A warning counts as t2v_nb's when `warnings.warn` was called from a t2v_nb module, whatever frame its
    `stacklevel` names (t2v_nb attributes prompt warnings to the user's cell).
    """
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # ours again on every Run, not once per place
        passed_on = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, UserWarning) and _raised_by_t2v_nb():
                notes.append(str(message))
            else:
                passed_on(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield notes


def _raised_by_t2v_nb() -> bool:
    """Called inside a `showwarning` hook: is the code that called `warnings.warn` part of t2v_nb?"""
    frame = sys._getframe(2)  # skip _raised_by_t2v_nb and the hook
    while frame is not None and frame.f_globals.get("__name__") in ("warnings", "_py_warnings"):
        frame = frame.f_back  # warnings' own Python frames (warnings.warn itself is C: it has none)
    return frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == "t2v_nb"


# ---------------------------------------------------------------------- pictures


def _per_video_frame(pipe, per_latent: np.ndarray, num_frames: int) -> np.ndarray:
    """One picture per latent frame -> one per video frame: a model whose VAE packs several frames into one
    latent frame (Wan, CogVideoX: 4) shows the same latent picture for each of them."""
    if len(per_latent) == num_frames:
        return per_latent
    return per_latent[[pipe.family.latent_index(f) for f in range(num_frames)]]


def _sizes(pipe) -> list[tuple[str, tuple[int, int]]]:
    """Dropdown options (label, (height, width)): the default size first, then scaled sizes the model accepts."""
    h, w = pipe.defaults["height"], pipe.defaults["width"]
    unit = pipe.family.smallest_size  # a multiple of every size rule of the model
    out = [(f"{w}x{h} (default)", (h, w))]
    for scale in (0.5, 0.75, 1.25, 1.5, 2.0):
        size = (max(unit, round(h * scale / unit) * unit), max(unit, round(w * scale / unit) * unit))
        if size not in [s for _, s in out]:
            out.append((f"{size[1]}x{size[0]}", size))
    return out


def _strip_height(hw, n: int, max_width: int = 1000) -> int:
    """Display height of each frame in a strip of n frames: up to 128 px, the strip at most max_width wide."""
    h, w = hw
    return int(max(32, min(128, max_width / max(n, 1) * h / w)))


def _display(frames, height: int) -> np.ndarray:
    """float [F, H, W, 3] in [0, 1] -> uint8 [F, height', W', 3]: enlarged by whole pixels (nearest), or shrunk."""
    a = (np.clip(np.asarray(frames, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    H = a.shape[1]
    if H <= height:
        k = max(1, height // H)
        return a.repeat(k, axis=1).repeat(k, axis=2)
    from PIL import Image

    size = (round(a.shape[2] * height / H), height)
    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    return np.stack([np.asarray(Image.fromarray(f).resize(size, bilinear)) for f in a])


def _resize(maps: np.ndarray, hw) -> np.ndarray:
    """float [F, h, w] in [0, 1] -> [F, H, W], bilinear."""
    from PIL import Image

    bilinear = getattr(Image, "Resampling", Image).BILINEAR
    return np.stack([np.asarray(Image.fromarray(m.astype(np.float32)).resize((hw[1], hw[0]), bilinear))
                     for m in maps]).clip(0, 1)


def _png(frames: np.ndarray, gap: int = 2) -> bytes:
    """uint8 [F, H, W, 3] -> PNG bytes of the frames side by side, `gap` white pixels apart."""
    from PIL import Image

    F, H, W, _ = frames.shape
    strip = np.full((H, F * W + (F - 1) * gap, 3), 255, np.uint8)
    for f in range(F):
        strip[:, f * (W + gap) : f * (W + gap) + W] = frames[f]
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="png", compress_level=1)
    return buf.getvalue()


def _bundle(fig) -> dict:
    """A matplotlib figure as an Output widget's display_data entry (no IPython needed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60, bbox_inches="tight")
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": repr(fig)}}
