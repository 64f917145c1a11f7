"""The stepwise text-to-video pipeline: text -> embeddings, noise -> latents one step at a time, latents -> frames.

`StepwisePipeline` holds the components (as in the model's diffusers pipeline: tokenizer,
text_encoder, unet or transformer, vae, scheduler, ...) and the model's `family`
(`t2v_nb.families`), which knows how this kind of model does each part. `pipe.start(...)` returns a
`Run` that owns one generation and advances only when asked:

    run = pipe.start("a red circle moving right", seed=0)
    step = run.step()      # one denoising step -> Step(i, t, latents, noise_pred_*, pred_x0, next_latents)
    run.finish()           # the remaining steps
    video = run.decode()   # -> Video

The loop below is the same for every family and follows the family's diffusers pipeline exactly
(same noise for a seed, same model calls, same scheduler calls), so with the same components both
give the same frames; what it adds is a named hook point at every value (see `t2v_nb.hooks`) and a
record of them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import numbers
import random
import warnings
from typing import Any

import torch

from . import schedulers as _sched
from .families import family_for, family_named
from .families.base import Family, no_branch
from .hooks import HOOK_POINTS, HookContext, Hooks, Trace, check_name
from .models import TextFirstEncoder

__all__ = ["StepwisePipeline", "Run", "Step", "TextFeatures", "NumericalError", "PromptWarning"]

RECORD_DEFAULT = tuple(HOOK_POINTS)  # everything but attention (which is opt-in)
# start()'s settings that always have a default (the family's, a model directory's or a preset's)
_SETTINGS = ("height", "width", "num_frames", "num_inference_steps", "guidance_scale", "fps")


class NumericalError(FloatingPointError):
    """NaN or inf appeared in the latents or the frames."""


class PromptWarning(UserWarning):
    """Something about the prompt the user should know (cut at the encoder's length, non-English text)."""


# Shown every time, not once per place: a learner re-running a cell should see it again.
warnings.filterwarnings("always", category=PromptWarning)


def _warn_user(message: str, category=UserWarning) -> None:
    """warnings.warn, attributed to the first caller outside t2v_nb (the user's notebook cell)."""
    import sys

    level, frame = 2, sys._getframe(1)  # stacklevel 2 = our caller
    # Skip our frames and torch's no_grad decorator wrappers.
    while frame is not None and frame.f_globals.get("__name__", "").startswith(("t2v_nb.", "torch.")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


@dataclasses.dataclass
class TextFeatures:
    """Stage 1: what the text encoder made of the prompt."""

    prompt: str
    negative_prompt: str
    tokens: list[str]  # the tokens the model reads, special markers included, padding not
    input_ids: torch.Tensor  # [B, L]
    embeddings: torch.Tensor  # [B, L, D]
    negative_embeddings: torch.Tensor | None  # [B, L, D]; None when guidance is off
    truncated: str = ""  # the part of the prompt beyond the encoder's length, which it never sees
    mask: torch.Tensor | None = None  # [B, L]: 1 for the prompt's tokens, 0 for padding
    words: list[str] = dataclasses.field(default_factory=list)  # `tokens` as a learner reads them ("red</w>" -> "red")
    special: list[bool] = dataclasses.field(default_factory=list)  # which tokens are markers (start, end)

    @property
    def length(self) -> int:
        """L: how many positions the text encoder reads (the prompt's tokens plus padding)."""
        return int(self.input_ids.shape[-1])


@dataclasses.dataclass
class Step:
    """Everything one denoising step computed. Tensors are on the model's device, [B, C, F', h, w]."""

    i: int  # index of the step, 0-based
    t: int  # the scheduler's timestep
    latents: torch.Tensor  # x_t, the input
    noise_pred_uncond: torch.Tensor | None  # None without guidance
    noise_pred_text: torch.Tensor
    noise_pred: torch.Tensor  # after guidance (eps, v or flow velocity: see pipe.prediction_type)
    pred_x0: torch.Tensor  # predicted clean latents
    next_latents: torch.Tensor  # x_{t-1}

    def __repr__(self) -> str:
        return f"Step(i={self.i}, t={self.t}, latents={tuple(self.latents.shape)})"


@dataclasses.dataclass
class _Checkpoint:
    """What is needed to redo step i: its input latents (CPU), the scheduler state, the RNG state."""

    latents: torch.Tensor
    scheduler_state: dict
    generator_state: torch.Tensor


@dataclasses.dataclass
class _Resume:
    """Where a branched run starts: step `i` of another run, with its state then."""

    i: int
    latents: torch.Tensor
    generator_state: torch.Tensor
    checkpoints: list


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype `model` computes in: that of its first floating-point parameter not in the class's
    `_keep_in_fp32_modules` (as diffusers' own `ModelMixin.dtype`, without walking every submodule: the first
    match usually comes within a few parameters)."""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or [])
    first = None
    for name, p in model.named_parameters():
        if not p.is_floating_point():
            continue
        first = first or p.dtype
        if not keep & set(name.split(".")):
            return p.dtype
    return first or torch.float32


class StepwisePipeline:
    """A text-to-video diffusion model opened up: the components plus a loop you drive step by step.

    Build one with `t2v_nb.load(...)`, or directly from diffusers/transformers components with the slot
    names of the model's diffusers pipeline (`unet=` or `transformer=`, `motion_adapter=`, ...); the
    family is found from the component classes (or pass `family="wan"`). `defaults` holds the model's
    default `height`, `width`, `num_frames`, `num_inference_steps`, `guidance_scale`, `fps`; `source`
    describes where the weights came from (for run records).
    """

    def __init__(self, tokenizer=None, text_encoder=None, unet=None, vae=None, scheduler=None, *,
                 transformer=None, family: str | type[Family] | None = None, defaults: dict | None = None,
                 source: dict | None = None, preview=None, **more_components):
        parts = {"tokenizer": tokenizer, "text_encoder": text_encoder, "unet": unet, "transformer": transformer,
                 "vae": vae, "scheduler": scheduler, **more_components}
        parts = {k: v for k, v in parts.items() if v is not None}
        if isinstance(family, str):
            family = family_named(family)
        family = family or family_for({k: type(v).__name__ for k, v in parts.items() if k != "scheduler"})
        missing = [s for s in (*family.slots, "scheduler") if s not in parts]
        if missing:
            raise ValueError(f"The {family.name} family needs the components {', '.join(missing)}; "
                             f"got {', '.join(parts) or 'none'}.")
        self._components = family.prepare(parts)
        for name, part in self._components.items():
            setattr(self, name, part)
        self.family: Family = family(self)
        self.source = dict(source or {})
        self.preview = preview if preview is not None else self.family.default_preview()
        self.defaults = {**self.family.default_settings(), **(defaults or {})}
        missing = [k for k in _SETTINGS if k not in self.defaults]
        if missing:
            raise ValueError(f"No default for {', '.join(missing)}: the {family.name} family's default_settings() "
                             f"must give all of {', '.join(_SETTINGS)}.")
        self._hooks = Hooks()
        self._attn_names: list[str] | None = None

    # ------------------------------------------------------------------ properties

    @property
    def components(self) -> dict[str, Any]:
        """The components by their diffusers slot names."""
        return dict(self._components)

    @property
    def denoiser(self) -> torch.nn.Module:
        """The model that predicts at each step: `pipe.unet` or `pipe.transformer`."""
        return self.family.denoiser

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device  # diffusers' .device walks every submodule (ms per read)

    @property
    def dtype(self) -> torch.dtype:
        """The denoiser's compute dtype: its first floating parameter outside the modules its class keeps in
        float32 when loaded in half precision (Wan's `scale_shift_table` and norms come first and stay float32)."""
        return model_dtype(self.denoiser)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent pixel along height and width."""
        return self.family.spatial_factor

    @property
    def max_frames(self) -> int | None:
        """The most frames the model can take (motion modules have a fixed number of positions)."""
        return self.family.max_frames

    @property
    def prediction_type(self) -> str:
        """What the model outputs: "epsilon" (noise), "v_prediction" (velocity) or "flow" (flow velocity)."""
        return _sched.prediction_type(self.scheduler)

    def __repr__(self) -> str:
        src = self.source.get("preset") or self.source.get("source") or "components"
        return (f"StepwisePipeline({src}; {self.family.name}, {type(self.denoiser).__name__}, "
                f"{_sched.scheduler_name(self.scheduler)}, {self.device}, {self.dtype})")

    def to(self, device=None, dtype=None) -> "StepwisePipeline":
        for part in self._components.values():
            if isinstance(part, torch.nn.Module):
                part.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ hooks

    def hooks(self, hooks: dict):
        """Add hooks for a `with` block: `with pipe.hooks({"step.noise_pred": fn}): ...`.

        `fn(value, ctx)` returns None to read the value, or a tensor of the same shape to replace it.
        Runs started inside the block keep these hooks for all their steps (see `t2v_nb.hooks`). The
        hooks are removed when the block exits, also when it raises.
        """
        return self._hooks.scope(hooks, known=self.attention_names())

    def attention_names(self) -> list[str]:
        """The attention hook points of this model ("attn.cross.<layer>", "attn.temporal.<layer>")."""
        if self._attn_names is None:
            self._attn_names = [f"attn.{kind}.{path}" for kind, path, _ in self.family.attention_modules()]
        return list(self._attn_names)

    # ------------------------------------------------------------------ stage 0: inputs

    def check_inputs(self, *, prompt, negative_prompt="", seed=None, num_frames=None, height=None, width=None,
                     num_inference_steps=None, guidance_scale=None, guidance_interval="default") -> dict:
        """Validate the arguments of `start` (before any model work) and fill in the defaults. No side effects."""
        d = self.defaults
        if not isinstance(prompt, str):
            hint = " One prompt per run: call start() once per prompt." if isinstance(prompt, (list, tuple)) else ""
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__} ({prompt!r}).{hint}")
        if negative_prompt is None:
            negative_prompt = ""
        if not isinstance(negative_prompt, str):
            raise TypeError(f"negative_prompt must be a str (\"\" for none), not {type(negative_prompt).__name__}.")
        if seed is not None:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
                raise TypeError(f"seed must be an int, not {type(seed).__name__} ({seed!r}).")
            if not 0 <= int(seed) < 2**63:
                raise ValueError(f"seed must be in [0, 2**63), got {seed}.")
            seed = int(seed)
        params = {"num_frames": num_frames, "height": height, "width": width,
                  "num_inference_steps": num_inference_steps}
        for name, value in params.items():
            value = d[name] if value is None else value
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r}).")
            params[name] = int(value)
        if params["num_inference_steps"] < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {params['num_inference_steps']}.")
        train_steps = self.scheduler.config.num_train_timesteps
        if params["num_inference_steps"] > train_steps:
            raise ValueError(f"num_inference_steps={params['num_inference_steps']} is more than the "
                             f"{train_steps} timesteps the model was trained with.")
        self.family.check_size(params["num_frames"], params["height"], params["width"])
        g = d["guidance_scale"] if guidance_scale is None else guidance_scale
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not math.isfinite(float(g)):
            raise ValueError(f"guidance_scale must be a finite number, got {g!r}.")
        use_default = isinstance(guidance_interval, str) and guidance_interval == "default"  # (an array == str warns)
        interval = d.get("guidance_interval") if use_default else guidance_interval
        return {"prompt": prompt, "negative_prompt": negative_prompt, "seed": seed, **params,
                "guidance_scale": float(g), "guidance_interval": _check_interval(interval)}

    # ------------------------------------------------------------------ stage 1: text

    @torch.no_grad()
    def encode_text(self, prompt: str, negative_prompt: str = "", guidance: bool = True,
                    run: "Run | None" = None) -> TextFeatures:
        """Stage 1: tokenize and encode the prompt (and the negative prompt, when guidance is on)."""
        fam = self.family
        if prompt and not prompt.isascii():
            _warn_user("The prompt has non-ASCII characters; the models were trained mostly on English "
                       "captions, and a byte-level tokenizer splits such characters into bytes.", PromptWarning)
        tok = fam.tokenize(fam.clean_prompt(prompt))
        if tok.truncated:
            _warn_user(f"The prompt is longer than the {fam.text_length} tokens the text encoder reads; this part "
                       f"was cut: {tok.truncated!r}", PromptWarning)
        emit = run.emit if run is not None else (lambda name, value: value)
        device = self.text_encoder.device
        ids = emit("text.input_ids", tok.ids.to(device))
        emb = emit("text.embeddings", fam.encode(ids, tok.mask.to(device)).to(self.dtype))  # [B, L, D]
        neg = None
        if guidance:
            ntok = fam.tokenize(fam.clean_prompt(negative_prompt))
            neg = fam.encode(ntok.ids.to(device), ntok.mask.to(device)).to(self.dtype)  # [B, L, D]
            neg = emit("text.negative_embeddings", neg)
        if isinstance(self.text_encoder, TextFirstEncoder):
            self.text_encoder.release()  # loaded only to encode: free it now
        return TextFeatures(prompt, negative_prompt, tok.tokens, ids, emb, neg, tok.truncated, tok.mask,
                            [fam.word(t) for t in tok.tokens], [fam.is_special(t) for t in tok.tokens])

    # ------------------------------------------------------------------ the run

    def start(self, prompt: str, *, seed: int | None = None, num_frames: int | None = None,
              height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
              guidance_scale: float | None = None, guidance_interval="default", negative_prompt: str = "",
              scheduler=None, eta: float = 0.0, record="default", hooks: dict | None = None) -> "Run":
        """Check the inputs, encode the text and draw the starting noise; returns a `Run` at step 0.

        Args:
            prompt: what the video should show.
            seed: the initial noise is drawn from `torch.Generator().manual_seed(seed)` (a CPU generator, as
                diffusers with `generator=`), so a seed starts from the same noise on any device (the video
                can still differ slightly: float16 on a GPU rounds differently from float32 on a CPU).
                None draws a seed (recorded in `run.params`).
            num_frames, height, width, num_inference_steps, guidance_scale: default to the model's
                (`pipe.defaults`). Guidance applies `uncond + g * (text - uncond)` for any g != 1: 0 gives
                the unconditional model, negative values push away from the prompt. (diffusers skips
                guidance for every g <= 1.) g is 1 + w in the notation of Ho & Salimans.
            guidance_interval: (t_low, t_high): apply guidance only at steps whose timestep t lies in this
                range (the scheduler's units, 0-1000; t = 999 is pure noise); at the other steps the step
                follows the prompt's prediction alone (g = 1). Both branches are still computed, so hooks and
                the trace see `step.noise_pred_uncond` at every step. None: every step. Default: the model's
                (`pipe.defaults`; every preset now guides every step: the toy-shapes model shipped until
                2026-12-01 guided only while t >= 700, see the toy README).
                Kynkäänniemi et al. 2024, *Applying Guidance in a Limited Interval*.
            negative_prompt: the text guidance steers away from ("" = unconditional).
            scheduler: a short name ("ddim", "dpm++", "euler", ... see `t2v_nb.schedulers.SCHEDULERS`) or a
                diffusers scheduler; default `pipe.scheduler`. The run works on its own copy.
            eta: DDIM's eta (0 = deterministic).
            record: which hook points the trace keeps: "default" (all but attention), "all", None, or names.
            hooks: more hooks for this run only, {name: fn}, on top of those of enclosing `pipe.hooks` blocks.
        """
        p = self.check_inputs(prompt=prompt, negative_prompt=negative_prompt, seed=seed, num_frames=num_frames,
                              height=height, width=width, num_inference_steps=num_inference_steps,
                              guidance_scale=guidance_scale, guidance_interval=guidance_interval)
        if p["seed"] is None:
            p["seed"] = random.SystemRandom().randrange(2**31)
        p["eta"] = float(eta)
        sched = _sched.make_scheduler(scheduler if scheduler is not None else self.scheduler, self.scheduler)
        run_hooks = self._hooks.copy(hooks, known=self.attention_names())
        return Run(self, p, sched, Trace(_record_names(record)), run_hooks)

    def generate(self, prompt: str, **kwargs):
        """start + finish + decode: the whole video in one call. Takes the arguments of `start`."""
        progress = kwargs.pop("progress", True)
        run = self.start(prompt, **kwargs)
        run.finish(progress=progress)
        return run.decode()

    # ------------------------------------------------------------------ stage 3: decode

    @torch.no_grad()
    @torch.no_grad()
    def encode_video(self, video) -> torch.Tensor:
        """VAE-encode a video [F, H, W, 3] or [B, F, H, W, 3] in [0, 1] to the loop's latents [B, C, F', h, w]:
        the space `run.latents` and `step.pred_x0` live in, so `decode_latents` turns them back into frames.
        The frame count and size must be ones this model can make (`check_inputs`' rules)."""
        return self.family.encode_video(video)

    def decode_latents(self, latents: torch.Tensor, frames=None, chunk_size: int | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """VAE-decode [B, C, F', h, w] latents to float32 [B, F, H, W, 3] in [0, 1] (see the family's `decode`).
        `generator`: where a decoder that adds noise draws it (LTX-Video; `Run.decode` passes the run's)."""
        return self.family.decode(latents, frames, chunk_size, generator=generator)


class Run:
    """One generation, advanced step by step. Made by `StepwisePipeline.start` (or `Run.branch`).

    Attributes:
        params: the checked arguments (prompt, seed, size, steps, guidance, ...).
        text: the `TextFeatures` of stage 1.
        scheduler: this run's own scheduler.
        timesteps: the timesteps it will visit.
        latents: the current latents x_t, [B, C, F', h, w].
        i: how many steps are done.
        trace: the recorded tensors (`t2v_nb.hooks.Trace`).
        hooks: this run's hooks (`t2v_nb.hooks.Hooks`), fixed when it started.
    """

    def __init__(self, pipe: StepwisePipeline, params: dict, scheduler, trace: Trace, hooks: Hooks,
                 text: TextFeatures | None = None, resume: _Resume | None = None):
        self.pipe, self.params, self.scheduler, self.trace, self.hooks = pipe, params, scheduler, trace, hooks
        self.guidance = params["guidance_scale"] != 1.0
        self.text = text or pipe.encode_text(params["prompt"], params["negative_prompt"], self.guidance, run=self)
        self.generator = torch.Generator()
        self.interrupted = False
        self._step_params: set[str] | None = None
        if resume is None:
            shape = pipe.family.latent_shape(params["num_frames"], params["height"], params["width"])
            pipe.family.set_timesteps(self.scheduler, params["num_inference_steps"], shape, pipe.device)
            self.timesteps = self.scheduler.timesteps
            self.i, self._checkpoints = 0, []
            self.latents = self._initial_latents()
        else:
            self.timesteps = self.scheduler.timesteps
            self.i, self._checkpoints = resume.i, list(resume.checkpoints)
            self.generator.set_state(resume.generator_state)
            self.latents = resume.latents.to(pipe.device)

    def _initial_latents(self) -> torch.Tensor:
        """Noise drawn as the family's diffusers pipeline draws it: on the CPU, from the seed's generator."""
        pipe, p = self.pipe, self.params
        self.generator.manual_seed(p["seed"])
        shape = (1, *pipe.family.latent_shape(p["num_frames"], p["height"], p["width"]))  # [B, C, F', h, w]
        noise = pipe.family.initial_noise(shape, self.generator, pipe.family.latent_dtype())
        latents = noise.to(pipe.device) * getattr(self.scheduler, "init_noise_sigma", 1.0)
        return self.emit("latents.initial", latents)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def done(self) -> bool:
        return self.i >= self.num_steps

    def __repr__(self) -> str:
        return f"Run({self.params['prompt']!r}, seed={self.params['seed']}, step {self.i}/{self.num_steps})"

    def emit(self, name: str, value: torch.Tensor, step: int | None = None, t: int | None = None) -> torch.Tensor:
        """Pass a value through this run's hooks at point `name`, then into its trace. Returns the value
        (replaced if a hook returned a tensor). The loop and attention capture call this for every point."""
        if self.hooks:
            value = self.hooks.fire(name, value, HookContext(name, step, t, self))
        if self.trace.wants(name):
            self.trace.add(name, value)
        return value

    @torch.no_grad()
    def step(self) -> Step | None:
        """Do one denoising step; returns its `Step`, or None when all steps are done.

        The step is all or nothing: if it raises (an error or KeyboardInterrupt in a hook), the run is
        left as it was before the step, and calling `step()` again redoes it.
        """
        if self.done:
            return None
        i, t = self.i, self.timesteps[self.i]
        sched_state = _sched.save_state(self.scheduler)
        gen_state = self.generator.get_state()
        try:
            result = self._step(i, t, int(t))
            if not torch.isfinite(result.next_latents).all():
                raise NumericalError(
                    f"NaN or inf in the latents at step {i} (t={int(t)}). In float16 this is a known failure of video "
                    f"models; load in float32 (t2v_nb.load(..., dtype=torch.float32)) or lower guidance_scale.")
        except BaseException as e:
            _sched.restore_state(self.scheduler, sched_state)
            self.generator.set_state(gen_state)
            self.trace.truncate(i)
            self.hooks.forget(i)
            if isinstance(e, KeyboardInterrupt):
                self.interrupted = True
            if isinstance(e, torch.OutOfMemoryError):
                raise torch.OutOfMemoryError(_oom_advice(self, e)) from e
            raise
        self._checkpoints.append(_Checkpoint(self.latents.detach().cpu(), sched_state, gen_state))
        self.latents = result.next_latents
        self.i = i + 1
        return result

    def _step(self, i: int, t, ti: int) -> Step:
        fam = self.pipe.family
        latents = self.emit("step.latents", self.latents, i, ti)  # x_t  [B, C, F', h, w]
        # 1. The model, for both guidance branches (batched or not, as the family's pipeline does).
        with self._attention(i, ti) as branch:
            uncond, cond = fam.predict(latents, t, self.text, guided=self.guidance, scheduler=self.scheduler,
                                       branch=branch)
        # 2. Classifier-free guidance.
        if self.guidance:
            uncond = self.emit("step.noise_pred_uncond", uncond, i, ti)
            cond = self.emit("step.noise_pred_text", cond, i, ti)
            noise_pred = fam.guide(uncond, cond, self.params["guidance_scale"]) if self.guided_at(t) else cond
        else:
            cond = noise_pred = self.emit("step.noise_pred_text", cond, i, ti)
        noise_pred = self.emit("step.noise_pred", noise_pred, i, ti)
        # 3. The scheduler, once, in the layout the family's pipeline gives it.
        if self._step_params is None:
            self._step_params = _sched.step_parameters(self.scheduler)
        prev, x0 = fam.scheduler_step(self.scheduler, fam.to_scheduler(noise_pred), t, fam.to_scheduler(latents), i,
                                      self._step_params, generator=self.generator, eta=self.params["eta"])
        x0 = self.emit("step.pred_x0", fam.from_scheduler(x0, latents), i, ti)
        nxt = fam.after_step(fam.from_scheduler(prev, latents), self.text)
        nxt = self.emit("step.next_latents", nxt, i, ti)
        return Step(i, ti, latents, uncond, cond, noise_pred, x0, nxt)

    def guided_at(self, t) -> bool:
        """Whether guidance applies at timestep `t` (`guidance_scale` != 1 and t inside `guidance_interval`)."""
        interval = self.params.get("guidance_interval")
        return self.guidance and (interval is None or interval[0] <= float(t) <= interval[1])

    def _attention(self, i: int, t: int):
        """Capture attention during this step's model calls, when a hook or the trace wants any of it."""
        names = self.pipe.attention_names()
        hooked = set(self.hooks.names())
        wanted = [n for n in names if n in hooked or self.trace.wants(n)]
        if not wanted:
            return contextlib.nullcontext(no_branch)
        from .attention import capture

        return capture(self, i, t, wanted)

    def finish(self, progress: bool = True) -> "Run":
        """Run the remaining steps, with a progress bar. Returns the run, so `run.finish().decode()` works.

        A KeyboardInterrupt stops after the last complete step; `finish()` again carries on.
        """
        from tqdm.auto import tqdm

        with tqdm(total=self.num_steps, initial=self.i, disable=not progress, desc="denoising",
                  leave=False) as bar:
            while not self.done:
                self.step()
                bar.update(1)
        return self

    def branch(self, k: int, *, guidance_scale: float | None = None, guidance_interval="keep",
               prompt: str | None = None, negative_prompt: str | None = None, record=None,
               hooks: dict | None = None) -> "Run":
        """A new run that starts from this run's state before step `k`, with other settings from there on.

        Steps 0..k-1 are not recomputed: the new run starts at step k with the same latents, scheduler
        state and random state. Changing the prompt re-encodes only the text. The new run keeps this
        run's hooks, and takes those of enclosing `pipe.hooks` blocks and `hooks` too. `guidance_interval`
        is kept unless given (None: guidance at every step).
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= self.i:
            raise ValueError(f"Can branch only from a step already reached (0..{self.i}), got {k!r}.")
        p = self.params
        params = {**p, **self.pipe.check_inputs(
            prompt=p["prompt"] if prompt is None else prompt,
            negative_prompt=p["negative_prompt"] if negative_prompt is None else negative_prompt,
            seed=p["seed"], num_frames=p["num_frames"], height=p["height"], width=p["width"],
            num_inference_steps=p["num_inference_steps"],
            guidance_scale=p["guidance_scale"] if guidance_scale is None else guidance_scale,
            guidance_interval=p.get("guidance_interval") if isinstance(guidance_interval, str)
            and guidance_interval == "keep" else guidance_interval)}
        params["branched_from"] = {"step": k, "seed": p["seed"]}
        guided = params["guidance_scale"] != 1.0
        same_text = (params["prompt"], params["negative_prompt"]) == (p["prompt"], p["negative_prompt"])
        text = self.text if same_text and (self.text.negative_embeddings is not None or not guided) else None
        scheduler = copy.deepcopy(self.scheduler)
        if k < self.i:
            cp = self._checkpoints[k]
            _sched.restore_state(scheduler, cp.scheduler_state)
            resume = _Resume(k, cp.latents, cp.generator_state, self._checkpoints[:k])
        else:
            resume = _Resume(k, self.latents, self.generator.get_state(), self._checkpoints)
        run_hooks = self.hooks.copy(hooks, known=self.pipe.attention_names()).merge(self.pipe._hooks)
        run_hooks.fired = {key: list(steps) for key, steps in self.hooks.fired.items()}
        run_hooks.forget(k)  # what fired before step k shaped the new run too
        trace = Trace(self.trace.record if record is None else _record_names(record))
        return Run(self.pipe, params, scheduler, trace, run_hooks, text=text, resume=resume)

    def decode(self, frames=None, chunk_size: int | None = None):
        """Stage 3: decode the current latents (all steps done or not) to a `Video`."""
        from .video import Video

        pipe = self.pipe
        generator = torch.Generator()
        generator.set_state(self.generator.get_state())  # where the loop left it (a copy: decoding twice is the same)
        images = pipe.decode_latents(self.latents, frames, chunk_size, generator=generator)  # [B, F, H, W, 3]
        images = self.emit("decode.frames", images)
        if not torch.isfinite(images).all():
            raise NumericalError("NaN or inf in the decoded frames: the VAE overflowed (a known float16 failure of "
                                 "video VAEs). Decode in float32: pipe.vae.to(torch.float32), then run.decode().")
        if self.i < self.num_steps:
            _warn_user(f"Decoding a partial run: {self.i} of {self.num_steps} steps done.")
        return Video(images[0].cpu().numpy(), fps=float(pipe.defaults["fps"]), record=self.record())

    def to_html(self, path, *, overwrite: bool = False, **options):
        """Write this run as one self-contained web page (step and frame sliders, previews, decodes, word maps,
        the record) that opens in any browser with no kernel; returns the `t2v_nb.page.Page` (shown inline
        in Jupyter). Options: `max_mb=15`, `decode=True`, `decode_every=None`, `title=None` (see
        `t2v_nb.page.build`). A path that exists is replaced only with overwrite=True."""
        from .page import export

        return export(self, path, overwrite=overwrite, **options)

    def record(self) -> dict:
        """Everything needed to make this video again: parameters, scheduler, model, library versions,
        and every hook that changed or read a value (with the steps it fired at)."""
        from . import _versions

        return {
            **self.params,
            "steps_done": self.i,
            "scheduler": _sched.scheduler_name(self.scheduler),
            # diffusers keeps `_use_default_values` as a set: sorted, so a record's bytes do not depend on the process
            "scheduler_config": {k: sorted(v) if isinstance(v, (set, frozenset)) or k == "_use_default_values" else v
                                 for k, v in self.scheduler.config.items()},
            "model": dict(self.pipe.source),
            "family": self.pipe.family.name,
            **({"decode": dict(d)} if (d := self.pipe.family.decode_settings()) else {}),
            "dtype": str(self.pipe.dtype).replace("torch.", ""),
            "device": str(self.pipe.device),
            "hooks": self.hooks.report(),
            "versions": _versions(),
        }


def _oom_advice(run: "Run", error: BaseException) -> str:
    """What to change when the model runs out of memory: settings that need less, largest saving first."""
    p = run.params
    tips = []
    if p["num_frames"] > 8:
        tips.append(f"fewer frames (num_frames={p['num_frames'] // 2} halves the activations)")
    if p["height"] * p["width"] > 256 * 256:
        tips.append("a smaller size (height=256, width=256)")
    if run.guidance:
        tips.append("guidance_scale=1.0 (one model pass per step instead of two, no guidance)")
    if run.trace.record:
        tips.append("record=None or fewer names (the trace is copied to the CPU, but attention capture "
                    "holds more on the GPU)")
    tips.append("float16 (t2v_nb.load(..., dtype=torch.float16)) if you loaded float32")
    return (f"Out of GPU memory at step {run.i} ({p['num_frames']} frames, {p['height']}x{p['width']}). The run is "
            f"kept as it was before this step; start again with {'; or '.join(tips)}. Free memory first: "
            f"del old runs and videos, then torch.cuda.empty_cache(). ({error})")


def _check_interval(interval) -> tuple[float, float] | None:
    """`guidance_interval` as (t_low, t_high) floats, or None (guidance at every step)."""
    if interval is None:
        return None
    try:
        low, high = (float(v) for v in interval)
        ok = not any(isinstance(v, (bool, str)) for v in interval)
    except (TypeError, ValueError):
        ok = False
    if not ok or not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"guidance_interval must be None or (t_low, t_high) with t_low <= t_high, timesteps in the "
                         f"scheduler's units (0-1000), got {interval!r}.")
    return (low, high)


def _record_names(record) -> list[str]:
    if record is None or record is False:
        return []
    if isinstance(record, str):
        if record == "default":
            return list(RECORD_DEFAULT)
        if record == "all":
            return list(RECORD_DEFAULT) + ["attn.*"]
        record = [record]
    names = list(record)
    for n in names:
        if n != "attn.*":
            check_name(n)
    return names
