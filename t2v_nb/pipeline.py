"""The stepwise text-to-video pipeline: text -> embeddings, noise -> latents one step at a time, latents -> frames.

`StepwisePipeline` holds the components (as in diffusers: tokenizer, text_encoder, unet, vae,
scheduler); `pipe.start(...)` returns a `Run` that owns one generation and advances only when asked:

    run = pipe.start("a red circle moving right", seed=0)
    step = run.step()      # one denoising step -> Step(i, t, latents, noise_pred_*, pred_x0, next_latents)
    run.finish()           # the remaining steps
    video = run.decode()   # -> Video

The loop follows diffusers' `TextToVideoSDPipeline` exactly (same noise for a seed, same batching of
the guidance pass, same scheduler calls), so with the same components both give the same frames;
what it adds is a named hook point at every value (see `t2v_nb.hooks`) and a record of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import numbers
import random
import warnings
from typing import Any

import torch

from . import schedulers as _sched
from .hooks import HOOK_POINTS, HookContext, Hooks, Trace

__all__ = ["StepwisePipeline", "Run", "Step", "TextFeatures", "NumericalError", "PromptWarning"]

RECORD_DEFAULT = tuple(HOOK_POINTS)  # everything but attention (which is opt-in)


class NumericalError(FloatingPointError):
    """NaN or inf appeared in the latents or the frames."""


class PromptWarning(UserWarning):
    """Something about the prompt the user should know (cut at 77 tokens, non-English text)."""


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
    tokens: list[str]  # the tokens the model reads, start and end markers included, padding not
    input_ids: torch.Tensor  # [B, 77]
    embeddings: torch.Tensor  # [B, 77, D]
    negative_embeddings: torch.Tensor | None  # [B, 77, D]; None when guidance is off
    truncated: str = ""  # the part of the prompt beyond the encoder's length, which it never sees


@dataclasses.dataclass
class Step:
    """Everything one denoising step computed. Tensors are on the model's device, [B, C, F, h, w]."""

    i: int  # index of the step, 0-based
    t: int  # the scheduler's timestep
    latents: torch.Tensor  # x_t, the input
    noise_pred_uncond: torch.Tensor | None  # None without guidance
    noise_pred_text: torch.Tensor
    noise_pred: torch.Tensor  # after guidance
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


class StepwisePipeline:
    """A text-to-video diffusion model opened up: the components plus a loop you drive step by step.

    Build one with `t2v_nb.load(...)`, or directly from diffusers/transformers components.
    `defaults` holds the model's default `height`, `width`, `num_frames`, `num_inference_steps`,
    `guidance_scale`, `fps`; `source` describes where the weights came from (for run records).
    """

    def __init__(self, tokenizer, text_encoder, unet, vae, scheduler, *, defaults: dict | None = None,
                 source: dict | None = None, preview=None):
        self.tokenizer, self.text_encoder, self.unet, self.vae = tokenizer, text_encoder, unet, vae
        self.scheduler = scheduler
        self.source = dict(source or {})
        self.preview = preview  # linear latent -> RGB factors (t2v_nb.preview.LinearPreview) if known
        sample = unet.config.get("sample_size") or 32
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        size = int(sample) * self.vae_scale_factor
        self.defaults = {"height": size, "width": size, "num_frames": 16, "num_inference_steps": 25,
                         "guidance_scale": 9.0, "fps": 8.0, **(defaults or {})}
        self._hooks = Hooks()
        # AnimateDiff-style UNets (UNetMotionModel) want the text embeddings once per frame.
        self._per_frame_text = "motion_max_seq_length" in unet.config

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device  # diffusers' .device walks every submodule (ms per read)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def max_frames(self) -> int | None:
        """The most frames the UNet can take (motion modules have a fixed number of positions)."""
        return self.unet.config.get("motion_max_seq_length")

    def __repr__(self) -> str:
        src = self.source.get("preset") or self.source.get("source") or "components"
        return (f"StepwisePipeline({src}; {type(self.unet).__name__}, {_sched.scheduler_name(self.scheduler)}, "
                f"{self.device}, {self.dtype})")

    def to(self, device=None, dtype=None) -> "StepwisePipeline":
        for part in (self.text_encoder, self.unet, self.vae):
            part.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ hooks

    def hooks(self, hooks: dict):
        """Add hooks for a `with` block: `with pipe.hooks({"step.noise_pred": fn}): ...`.

        `fn(value, ctx)` returns None to read the value, or a tensor of the same shape to replace it.
        The hooks are removed when the block exits, also when it raises.
        """
        return self._hooks.scope(hooks, known=self._attention_names())

    def _attention_names(self) -> list[str]:
        """The attention hook points of this UNet ("attn.cross.<layer>", "attn.temporal.<layer>")."""
        if getattr(self, "_attn_names", None) is None:
            from .attention import attention_points

            self._attn_names = attention_points(self.unet)
        return self._attn_names

    def _attention_scope(self, run: "Run", i: int, t: int):
        """Capture attention during one UNet call, when a hook or the trace wants any of it."""
        hooked = self._hooks.names()
        wanted = [n for n in self._attention_names() if n in hooked or run.trace.wants(n)]
        if not wanted:
            return contextlib.nullcontext()
        from .attention import capture

        return capture(self, run, i, t, wanted)

    def _fire(self, name: str, value: torch.Tensor, run: "Run", step: int | None = None, t: int | None = None):
        if self._hooks:
            value = self._hooks.fire(name, value, HookContext(name, step, t, run))
        if run.trace.wants(name):
            run.trace.add(name, value)
        return value

    # ------------------------------------------------------------------ stage 0: inputs

    def check_inputs(self, prompt, negative_prompt, seed, num_frames, height, width, num_inference_steps,
                     guidance_scale) -> dict:
        """Validate the arguments of `start` (before any model work) and fill in the defaults."""
        d = self.defaults
        if not isinstance(prompt, str):
            hint = " One prompt per run: call start() once per prompt." if isinstance(prompt, (list, tuple)) else ""
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__} ({prompt!r}).{hint}")
        if negative_prompt is None:
            negative_prompt = ""
        if not isinstance(negative_prompt, str):
            raise TypeError(f"negative_prompt must be a str (\"\" for none), not {type(negative_prompt).__name__}.")
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, not {type(seed).__name__} ({seed!r}).")
        if not 0 <= int(seed) < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {seed}.")
        params = {"num_frames": num_frames, "height": height, "width": width,
                  "num_inference_steps": num_inference_steps}
        for name, value in params.items():
            value = d[name] if value is None else value
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r}).")
            params[name] = int(value)
        if params["num_frames"] < 1:
            raise ValueError(f"num_frames must be at least 1, got {params['num_frames']}.")
        if self.max_frames and params["num_frames"] > self.max_frames:
            raise ValueError(f"num_frames={params['num_frames']} is more than this UNet's motion modules know "
                             f"positions for ({self.max_frames}).")
        if params["num_inference_steps"] < 1:
            raise ValueError(f"num_inference_steps must be at least 1, got {params['num_inference_steps']}.")
        train_steps = self.scheduler.config.num_train_timesteps
        if params["num_inference_steps"] > train_steps:
            raise ValueError(f"num_inference_steps={params['num_inference_steps']} is more than the "
                             f"{train_steps} timesteps the model was trained with.")
        f = self.vae_scale_factor
        smallest = f * 2 ** (len(self.unet.config.block_out_channels) - 1)
        for name in ("height", "width"):
            v = params[name]
            if v % f:
                raise ValueError(f"`height` and `width` must be multiples of {f} (the VAE's downsampling), "
                                 f"but {name} is {v}; try {max(smallest, round(v / f) * f)}.")
            if v < smallest:
                raise ValueError(f"{name}={v} is too small for this UNet: the smallest size is {smallest}.")
        g = d["guidance_scale"] if guidance_scale is None else guidance_scale
        if isinstance(g, bool) or not isinstance(g, numbers.Real) or not math.isfinite(float(g)):
            raise ValueError(f"guidance_scale must be a finite number, got {g!r}.")
        return {"prompt": prompt, "negative_prompt": negative_prompt, "seed": int(seed), **params,
                "guidance_scale": float(g)}

    # ------------------------------------------------------------------ stage 1: text

    def _tokenize(self, text: str) -> tuple[torch.Tensor, list[str], str]:
        """Token ids padded/truncated to the encoder's length (as `padding="max_length", truncation=True`),
        the tokens up to the end token, and the part of `text` that did not fit ("" when all fit).
        One tokenizer call: the offsets tell where a cut falls in the user's own text."""
        tok = self.tokenizer
        n_max = tok.model_max_length
        full = tok(text, return_offsets_mapping=True, verbose=False)
        row, truncated = list(full["input_ids"]), ""
        if len(row) > n_max:
            # Keep the start token and the first n_max - 2 tokens, then the end token, as truncation does.
            # The first token that did not fit sits at index n_max - 1 (index 0 is the start token);
            # quote the user's own text from there, not a re-decoding of the tokens.
            truncated = text[full["offset_mapping"][n_max - 1][0]:]
            row = row[: n_max - 1] + [row[-1]]
        n = len(row)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.tensor([row + [pad] * (n_max - n)])  # [1, 77]
        return ids, tok.convert_ids_to_tokens(row), truncated

    @torch.no_grad()
    def encode_text(self, prompt: str, negative_prompt: str = "", guidance: bool = True,
                    run: "Run | None" = None) -> TextFeatures:
        """Stage 1: tokenize and encode the prompt (and the negative prompt, when guidance is on)."""
        if prompt and not prompt.isascii():
            _warn_user("The prompt has non-ASCII characters; they are tokenized byte by byte, and the "
                       "models were trained on English captions.", PromptWarning)
        ids, tokens, truncated = self._tokenize(prompt)
        if truncated:
            _warn_user(f"The prompt is longer than the {self.tokenizer.model_max_length} tokens the text encoder "
                       f"reads; this part was cut: {truncated!r}", PromptWarning)
        run = run if run is not None else _NullRun()
        ids = self._fire("text.input_ids", ids.to(self.text_encoder.device), run)
        emb = self.text_encoder(ids)[0].to(self.dtype)  # [B, 77, D]
        emb = self._fire("text.embeddings", emb, run)
        neg = None
        if guidance:
            neg_ids = self._tokenize(negative_prompt)[0].to(self.text_encoder.device)
            neg = self.text_encoder(neg_ids)[0].to(self.dtype)  # [B, 77, D]
            neg = self._fire("text.negative_embeddings", neg, run)
        return TextFeatures(prompt, negative_prompt, tokens, ids, emb, neg, truncated)

    # ------------------------------------------------------------------ the run

    def start(self, prompt: str, *, seed: int | None = None, num_frames: int | None = None,
              height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
              guidance_scale: float | None = None, negative_prompt: str = "", scheduler=None,
              eta: float = 0.0, record="default") -> "Run":
        """Check the inputs, encode the text and draw the starting noise; returns a `Run` at step 0.

        Args:
            prompt: what the video should show.
            seed: the initial noise is `torch.randn` from `torch.Generator().manual_seed(seed)` (a CPU
                generator, as diffusers with `generator=`), so a seed gives the same video on any device.
                None draws a seed (recorded in `run.params`).
            num_frames, height, width, num_inference_steps, guidance_scale: default to the model's
                (`pipe.defaults`). Guidance applies `uncond + g * (text - uncond)` for any g != 1: 0 gives
                the unconditional model, negative values push away from the prompt. (diffusers skips
                guidance for every g <= 1.)
            negative_prompt: the text guidance steers away from ("" = unconditional).
            scheduler: a short name ("ddim", "dpm++", "euler", ... see `t2v_nb.schedulers.SCHEDULERS`) or a
                diffusers scheduler; default `pipe.scheduler`. The run works on its own copy.
            eta: DDIM's eta (0 = deterministic).
            record: which hook points the trace keeps: "default" (all but attention), "all", None, or names.
        """
        p = self.check_inputs(prompt, negative_prompt, seed, num_frames, height, width, num_inference_steps,
                              guidance_scale)
        p["eta"] = float(eta)
        sched = _sched.make_scheduler(scheduler if scheduler is not None else self.scheduler, self.scheduler)
        return Run(self, p, sched, record)

    def generate(self, prompt: str, **kwargs):
        """start + finish + decode: the whole video in one call. Takes the arguments of `start`."""
        progress = kwargs.pop("progress", True)
        run = self.start(prompt, **kwargs)
        run.finish(progress=progress)
        return run.decode()

    # ------------------------------------------------------------------ stage 2: one step

    def _predict_noise(self, latents: torch.Tensor, t, embeddings: torch.Tensor) -> torch.Tensor:
        """The UNet: [B', C, F, h, w] latents + [B', 77, D] text -> [B', C, F, h, w] noise prediction."""
        if self._per_frame_text:
            embeddings = embeddings.repeat_interleave(latents.shape[2], dim=0)  # [B' * F, 77, D]
        return self.unet(latents, t, encoder_hidden_states=embeddings, return_dict=False)[0]

    # ------------------------------------------------------------------ stage 3: decode

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, frames=None, chunk_size: int | None = None) -> torch.Tensor:
        """VAE-decode [B, C, F, h, w] latents to float32 [B, F, H, W, 3] in [0, 1], `chunk_size` frames at a time.

        On a GPU out-of-memory error the decode is retried one frame at a time (with a warning).
        """
        B, C, F, h, w = latents.shape
        index = list(range(F)) if frames is None else [int(f) for f in frames]
        z = latents[:, :, index] / self.vae.config.scaling_factor
        z = z.permute(0, 2, 1, 3, 4).reshape(B * len(index), C, h, w).to(self.vae.device, self.vae.dtype)
        chunk = chunk_size or len(z)
        try:
            images = torch.cat([self.vae.decode(z[k : k + chunk]).sample for k in range(0, len(z), chunk)])
        except torch.OutOfMemoryError:
            if chunk == 1:
                raise
            torch.cuda.empty_cache()
            warnings.warn(f"Out of GPU memory decoding {chunk} frames at once; decoding one frame at a time.")
            images = torch.cat([self.vae.decode(z[k : k + 1]).sample for k in range(len(z))])
        images = images.reshape(B, len(index), *images.shape[1:]).float()  # [B, F, 3, H, W] in [-1, 1]
        return (images / 2 + 0.5).clamp(0, 1).permute(0, 1, 3, 4, 2)  # [B, F, H, W, 3]


class _NullRun:
    """Stands in for a run when stage 1 is used alone: records nothing."""

    trace = Trace(())


class Run:
    """One generation, advanced step by step. Made by `StepwisePipeline.start`.

    Attributes:
        params: the checked arguments (prompt, seed, size, steps, guidance, ...).
        text: the `TextFeatures` of stage 1.
        scheduler: this run's own scheduler.
        timesteps: the timesteps it will visit.
        latents: the current latents x_t, [B, C, F, h, w].
        i: how many steps are done.
        trace: the recorded tensors (`t2v_nb.hooks.Trace`).
    """

    def __init__(self, pipe: StepwisePipeline, params: dict, scheduler, record="default"):
        self.pipe, self.params, self.scheduler = pipe, params, scheduler
        self.trace = Trace(_record_names(record))
        self.guidance = params["guidance_scale"] != 1.0
        self.text = pipe.encode_text(params["prompt"], params["negative_prompt"], self.guidance, run=self)
        self.scheduler.set_timesteps(params["num_inference_steps"], device=pipe.device)
        self.timesteps = self.scheduler.timesteps
        # 2. Initial noise, drawn as diffusers' randn_tensor does: on the CPU, in the text dtype.
        self.generator = torch.Generator().manual_seed(params["seed"])
        f = pipe.vae_scale_factor
        shape = (1, pipe.unet.config.in_channels, params["num_frames"], params["height"] // f, params["width"] // f)
        noise = torch.randn(shape, generator=self.generator, dtype=self.text.embeddings.dtype)
        latents = noise.to(pipe.device) * self.scheduler.init_noise_sigma  # [B, C, F, h, w]
        self.latents = pipe._fire("latents.initial", latents, self)
        self.i = 0
        self._checkpoints: list[_Checkpoint] = []
        self._step_params: set[str] | None = None
        self.interrupted = False

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def done(self) -> bool:
        return self.i >= self.num_steps

    def __repr__(self) -> str:
        return f"Run({self.params['prompt']!r}, seed={self.params['seed']}, step {self.i}/{self.num_steps})"

    @torch.no_grad()
    def step(self) -> Step | None:
        """Do one denoising step; returns its `Step`, or None when all steps are done.

        The step is all or nothing: if it raises (an error or KeyboardInterrupt in a hook), the run is
        left as it was before the step, and calling `step()` again redoes it.
        """
        if self.done:
            return None
        pipe, i = self.pipe, self.i
        t = self.timesteps[i]
        ti = int(t)
        sched_state = _sched.save_state(self.scheduler)
        gen_state = self.generator.get_state()
        try:
            result = self._step(pipe, i, t, ti)
            if not torch.isfinite(result.next_latents).all():
                raise NumericalError(
                    f"NaN or inf in the latents at step {i} (t={ti}). In float16 this is a known failure of video "
                    f"UNets; load in float32 (t2v_nb.load(..., dtype=torch.float32)) or lower guidance_scale.")
        except BaseException as e:
            _sched.restore_state(self.scheduler, sched_state)
            self.generator.set_state(gen_state)
            self.trace.truncate(i)
            if isinstance(e, KeyboardInterrupt):
                self.interrupted = True
            if isinstance(e, torch.OutOfMemoryError):
                raise torch.OutOfMemoryError(_oom_advice(self, e)) from e
            raise
        self._checkpoints.append(_Checkpoint(self.latents.detach().cpu(), sched_state, gen_state))
        self.latents = result.next_latents
        self.i = i + 1
        return result

    def _step(self, pipe: StepwisePipeline, i: int, t, ti: int) -> Step:
        latents = pipe._fire("step.latents", self.latents, self, i, ti)  # x_t  [B, C, F, h, w]
        text = self.text
        # 1. The UNet, once for both guidance branches (batched as diffusers does).
        if self.guidance:
            model_in = torch.cat([latents] * 2)  # [2B, C, F, h, w]
            embeds = torch.cat([text.negative_embeddings, text.embeddings])
        else:
            model_in, embeds = latents, text.embeddings
        model_in = self.scheduler.scale_model_input(model_in, t)
        with pipe._attention_scope(self, i, ti):
            noise_pred = pipe._predict_noise(model_in, t, embeds)
        # 2. Classifier-free guidance.
        if self.guidance:
            uncond, cond = noise_pred.chunk(2)
            uncond = pipe._fire("step.noise_pred_uncond", uncond, self, i, ti)
            cond = pipe._fire("step.noise_pred_text", cond, self, i, ti)
            noise_pred = uncond + self.params["guidance_scale"] * (cond - uncond)
        else:
            uncond = None
            cond = noise_pred = pipe._fire("step.noise_pred_text", noise_pred, self, i, ti)
        noise_pred = pipe._fire("step.noise_pred", noise_pred, self, i, ti)
        # 3. The scheduler, once, on frames as images ([B*F, C, h, w]) as diffusers does.
        B, C, F, h, w = latents.shape
        as_images = lambda x: x.permute(0, 2, 1, 3, 4).reshape(B * F, C, h, w)
        as_video = lambda x: x.reshape(B, F, C, h, w).permute(0, 2, 1, 3, 4)
        # As diffusers: the seed's generator (stochastic samplers) and DDIM's eta, where step() takes them.
        if self._step_params is None:
            self._step_params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {k: v for k, v in (("generator", self.generator), ("eta", self.params["eta"]))
                  if k in self._step_params}
        x_img, eps_img = as_images(latents), as_images(noise_pred)
        out = self.scheduler.step(eps_img, t, x_img, **kwargs)
        x0 = as_video(_sched.pred_x0(self.scheduler, out, x_img, eps_img, t, i))
        x0 = pipe._fire("step.pred_x0", x0, self, i, ti)
        nxt = pipe._fire("step.next_latents", as_video(out.prev_sample), self, i, ti)
        return Step(i, ti, latents, uncond, cond, noise_pred, x0, nxt)

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

    def branch(self, k: int, *, guidance_scale: float | None = None, prompt: str | None = None,
               negative_prompt: str | None = None, record=None) -> "Run":
        """A new run that starts from this run's state before step `k`, with other settings from there on.

        Steps 0..k-1 are not recomputed: the new run starts at step k with the same latents, scheduler
        state and random state. Changing the prompt re-encodes only the text.
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= self.i:
            raise ValueError(f"Can branch only from a step already reached (0..{self.i}), got {k!r}.")
        import copy

        params = dict(self.params)
        if guidance_scale is not None:
            params["guidance_scale"] = guidance_scale
        if prompt is not None:
            params["prompt"] = prompt
        if negative_prompt is not None:
            params["negative_prompt"] = negative_prompt
        params.update(self.pipe.check_inputs(
            params["prompt"], params["negative_prompt"], params["seed"], params["num_frames"], params["height"],
            params["width"], params["num_inference_steps"], params["guidance_scale"]))
        new = Run.__new__(Run)
        new.pipe, new.params = self.pipe, params
        new.trace = Trace(self.trace.record if record is None else _record_names(record))
        new.guidance = params["guidance_scale"] != 1.0
        same_text = (params["prompt"], params["negative_prompt"]) == (self.params["prompt"], self.params["negative_prompt"])
        if same_text and (self.text.negative_embeddings is not None or not new.guidance):
            new.text = self.text
        else:
            new.text = self.pipe.encode_text(params["prompt"], params["negative_prompt"], new.guidance, run=new)
        new.scheduler = copy.deepcopy(self.scheduler)
        new.timesteps = self.timesteps
        new.generator = torch.Generator()
        if k < self.i:
            cp = self._checkpoints[k]
            _sched.restore_state(new.scheduler, cp.scheduler_state)
            new.generator.set_state(cp.generator_state)
            new.latents = cp.latents.to(self.latents.device)
        else:
            new.generator.set_state(self.generator.get_state())
            new.latents = self.latents
        new.i, new._checkpoints, new.interrupted = k, list(self._checkpoints[:k]), False
        new._step_params = None
        new.params["branched_from"] = {"step": k, "seed": self.params["seed"]}
        return new

    def decode(self, frames=None, chunk_size: int | None = None):
        """Stage 3: decode the current latents (all steps done or not) to a `Video`."""
        from .video import Video

        pipe = self.pipe
        images = pipe.decode_latents(self.latents, frames, chunk_size)  # [B, F, H, W, 3]
        images = pipe._fire("decode.frames", images, self)
        if not torch.isfinite(images).all():
            raise NumericalError("NaN or inf in the decoded frames: the VAE overflowed (a known float16 failure of "
                                 "video VAEs). Decode in float32: pipe.vae.to(torch.float32), then run.decode().")
        if self.i < self.num_steps:
            _warn_user(f"Decoding a partial run: {self.i} of {self.num_steps} steps done.")
        return Video(images[0].cpu().numpy(), fps=float(pipe.defaults["fps"]), record=self.record())

    def record(self) -> dict:
        """Everything needed to make this video again: parameters, scheduler, model, library versions."""
        from . import _versions

        return {
            **self.params,
            "steps_done": self.i,
            "scheduler": _sched.scheduler_name(self.scheduler),
            "scheduler_config": dict(self.scheduler.config),
            "model": dict(self.pipe.source),
            "dtype": str(self.pipe.dtype).replace("torch.", ""),
            "device": str(self.pipe.device),
            "hooks": self.pipe._hooks.names(),
            "versions": _versions(),
        }


def _oom_advice(run: "Run", error: BaseException) -> str:
    """What to change when the UNet runs out of memory: settings that need less, largest saving first."""
    p = run.params
    tips = []
    if p["num_frames"] > 8:
        tips.append(f"fewer frames (num_frames={p['num_frames'] // 2} halves the activations)")
    if p["height"] * p["width"] > 256 * 256:
        tips.append("a smaller size (height=256, width=256)")
    if run.guidance:
        tips.append("guidance_scale=1.0 (one UNet pass per step instead of two, no guidance)")
    if run.trace.record:
        tips.append("record=None or fewer names (the trace is copied to the CPU, but attention capture "
                    "holds more on the GPU)")
    tips.append("float16 (t2v_nb.load(..., dtype=torch.float16)) if you loaded float32")
    return (f"Out of GPU memory at step {run.i} ({p['num_frames']} frames, {p['height']}x{p['width']}). The run is "
            f"kept as it was before this step; start again with {'; or '.join(tips)}. Free memory first: "
            f"del old runs and videos, then torch.cuda.empty_cache(). ({error})")


def _record_names(record) -> list[str]:
    if record is None or record is False:
        return []
    if isinstance(record, str):
        if record == "default":
            return list(RECORD_DEFAULT)
        if record == "all":
            return list(RECORD_DEFAULT) + ["attn.*"]
        record = [record]
    from .hooks import check_name

    names = list(record)
    for n in names:
        if n != "attn.*":
            check_name(n)
    return names
