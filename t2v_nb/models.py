"""Presets and `load()`: a preset name, a Hugging Face hub id, or a local directory -> StepwisePipeline.

A local directory must be in the diffusers layout: `model_index.json` and one folder per component
(`tokenizer/ text_encoder/ unet/ vae/ scheduler/`). Component classes are taken from
`model_index.json` but only from an allow-list of diffusers/transformers classes: no remote code
ever runs. Weights load from safetensors unless `allow_pickle=True` is passed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import warnings
from typing import Any

import torch

__all__ = ["Preset", "PRESETS", "load", "toy_model_dir", "choose_device", "choose_dtype"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model: where it comes from and how it likes to be run."""

    source: str  # hub id, or "bundled:<dir>" for a model shipped inside the package
    revision: str | None  # pinned hub revision; None for bundled models
    variant: str | None  # weight file variant, e.g. "fp16"
    height: int
    width: int
    num_frames: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: str  # short name, see t2v_nb.schedulers
    fps: float
    pickle_only: bool = False  # the repo ships only .bin (pickle) weights
    notes: str = ""


PRESETS: dict[str, Preset] = {
    "toy-shapes": Preset(
        source="bundled:toy/weights", revision=None, variant=None, height=64, width=64, num_frames=8,
        num_inference_steps=20, guidance_scale=7.5, scheduler="dpm++", fps=8.0,
        notes="Trained by t2v_nb's own script on moving shapes; CPU, offline. Same classes as ModelScope (UNet3DConditionModel)."),
    "modelscope-1.7b": Preset(
        source="ali-vilab/text-to-video-ms-1.7b", revision=None, variant="fp16", height=256, width=256,
        num_frames=16, num_inference_steps=25, guidance_scale=9.0, scheduler="dpm++", fps=8.0,
        notes="License cc-by-nc-4.0 (non-commercial). Trained on data with the Shutterstock watermark, which "
              "shows in its videos. Formerly damo-vilab/text-to-video-ms-1.7b."),
    "zeroscope-v2-576w": Preset(
        source="cerspense/zeroscope_v2_576w", revision=None, variant=None, height=320, width=576,
        num_frames=24, num_inference_steps=40, guidance_scale=9.0, scheduler="dpm++", fps=8.0,
        pickle_only=True,
        notes="A ModelScope fine-tune without the watermark; made for 576x320 (its UNet config says 256). "
              "Ships only .bin (pickle) weights: load with allow_pickle=True if you trust the source."),
}

_ALLOWED = {
    "tokenizer": {("transformers", "CLIPTokenizer"), ("transformers", "CLIPTokenizerFast")},
    "text_encoder": {("transformers", "CLIPTextModel")},
    "unet": {("diffusers", "UNet3DConditionModel"), ("diffusers", "UNetMotionModel")},
    "vae": {("diffusers", "AutoencoderKL")},
}
_COMPONENTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")


def toy_model_dir() -> str:
    """Where the bundled toy-shapes model lives inside the installed package."""
    return os.path.join(os.path.dirname(__file__), "toy", "weights")


def choose_device(device=None) -> torch.device:
    """The device to run on: `device` if it exists, else CUDA when present, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"Unknown device {device!r}: use 'cpu', 'cuda' or 'cuda:N'. ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but no CUDA GPU is visible to torch; use device='cpu' "
                             f"(on Colab: Runtime > Change runtime type > GPU).")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} GPU(s) exist.")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device={device!r} but MPS is not available here; use 'cpu'.")
    elif dev.type != "cpu":
        raise ValueError(f"Unsupported device {device!r}: use 'cpu', 'cuda' or 'cuda:N'.")
    return dev


def choose_dtype(device: torch.device, dtype=None) -> torch.dtype:
    """fp16 on a GPU, fp32 on the CPU; fp16 on the CPU falls back to fp32, bf16 needs compute capability 8.0."""
    if isinstance(dtype, str):
        names = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "float32": torch.float32,
                 "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype not in names:
            raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(names)} or a torch.dtype.")
        dtype = names[dtype]
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in (torch.float16, torch.float32, torch.bfloat16):
        raise ValueError(f"dtype must be float16, bfloat16 or float32, not {dtype}.")
    if device.type == "cpu" and dtype != torch.float32:
        warnings.warn(f"{dtype} on the CPU is slow or unsupported for these models; using float32.", stacklevel=3)
        return torch.float32
    if device.type == "cuda" and dtype == torch.bfloat16:
        major, _ = torch.cuda.get_device_capability(device)
        if major < 8:  # is_bf16_supported() says True on T4 through emulation; the capability tells
            warnings.warn(f"{torch.cuda.get_device_name(device)} (compute capability {major}.x) has no native "
                          f"bfloat16; using float16.", stacklevel=3)
            return torch.float16
    return dtype


def _resolve(source: str) -> tuple[str, Preset | None]:
    """-> (where to load from, preset or None)."""
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a preset name, hub id or directory, not {type(source).__name__}.")
    source = os.fspath(source)
    if source in PRESETS:
        preset = PRESETS[source]
        if preset.source.startswith("bundled:"):
            return toy_model_dir(), preset
        return preset.source, preset
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "model_index.json")):
            raise ValueError(f"{source!r} is a directory but not a model in the diffusers layout: expected "
                             f"model_index.json and the folders {', '.join(_COMPONENTS)}.")
        return source, None
    parts = source.split("/")
    if len(parts) == 2 and all(parts) and not os.path.exists(source) and not source.startswith((".", "~")):
        return source, None  # a hub id
    close = difflib.get_close_matches(source, list(PRESETS), n=2, cutoff=0.4)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"{source!r} is not a preset, an existing directory, or a hub id like 'owner/name'.{hint} "
                     f"Presets: {', '.join(PRESETS)}.")


def _read_index(where: str, revision: str | None, local: bool) -> tuple[dict, str | None]:
    """model_index.json, and for a hub download the commit it resolved to (from the cache path)."""
    if local:
        with open(os.path.join(where, "model_index.json")) as f:
            return json.load(f), None
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(where, "model_index.json", revision=revision)
    parts = os.path.normpath(path).split(os.sep)
    commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else None
    with open(path) as f:
        return json.load(f), commit


def _component_class(name: str, entry) -> Any:
    import diffusers
    import transformers

    if name == "scheduler":
        lib, cls_name = entry
        cls = getattr(diffusers, cls_name, None) if lib == "diffusers" else None
        if cls is None or not issubclass(cls, diffusers.SchedulerMixin):
            raise ValueError(f"model_index.json names scheduler {entry!r}; only diffusers schedulers are loaded.")
        return cls
    if tuple(entry) not in _ALLOWED[name]:
        allowed = ", ".join(f"{lib}.{cls}" for lib, cls in sorted(_ALLOWED[name]))
        raise ValueError(f"model_index.json names {name} {entry!r}; t2v_nb loads only {allowed} (no remote code).")
    lib, cls_name = entry
    return getattr(diffusers if lib == "diffusers" else transformers, cls_name)


def load(source: str = "toy-shapes", device=None, dtype=None, *, revision: str | None = None,
         variant: str | None = None, allow_pickle: bool = False, scheduler: str | None = None):
    """Load a text-to-video model as a `StepwisePipeline`.

    Args:
        source: a preset name (see `PRESETS`), a Hugging Face hub id ("owner/name"), or a local directory
            in the diffusers layout.
        device: "cpu", "cuda", "cuda:N"; default CUDA when available, else CPU.
        dtype: default float16 on CUDA, float32 on the CPU.
        revision, variant: for hub ids; presets bring their own.
        allow_pickle: also load `.bin` (pickle) weights. Pickle files can run code when loaded: allow
            them only for sources you trust. By default only safetensors load.
        scheduler: a short scheduler name to use instead of the preset's (or the model's own).

    >>> pipe = load("toy-shapes")
    >>> video = pipe.generate("a red circle moving right", seed=0)
    """
    from .pipeline import StepwisePipeline
    from .schedulers import make_scheduler

    where, preset = _resolve(source)
    local = os.path.isdir(where)
    if preset is not None and not local:
        revision = revision or preset.revision
        variant = variant or preset.variant
    if preset is not None and preset.pickle_only and not allow_pickle:
        raise ValueError(f"{source!r} ships only .bin (pickle) weights, which can run code when loaded. If you "
                         f"trust {preset.source}, pass allow_pickle=True.")
    dev = choose_device(device)
    dt = choose_dtype(dev, dtype)
    try:
        index, commit = _read_index(where, revision, local)
        # Load every component from the commit model_index.json came from, so the parts match.
        revision = commit or revision
        parts = {}
        for name in _COMPONENTS:
            if name not in index:
                raise ValueError(f"model_index.json of {source!r} has no {name!r} entry.")
            cls = _component_class(name, index[name])
            kwargs: dict[str, Any] = {"subfolder": name}
            if not local:
                kwargs["revision"] = revision
            if name in ("scheduler", "tokenizer"):
                parts[name] = cls.from_pretrained(where, **kwargs)
                continue
            kwargs["use_safetensors"] = None if allow_pickle else True
            kwargs["dtype"] = dt
            if variant:
                kwargs["variant"] = variant
            parts[name] = cls.from_pretrained(where, **kwargs)
    except (OSError, EnvironmentError) as e:
        if local:
            raise
        raise OSError(f"Could not load {source!r} from the Hugging Face hub (revision={revision!r}): {e}\n"
                      f"Without network access, use t2v_nb.load('toy-shapes') (bundled) or a local directory "
                      f"in the diffusers layout.") from e
    for name in ("text_encoder", "unet", "vae"):
        part = parts[name].to(device=dev)
        if part.dtype != dt:  # libraries older than the `dtype=` keyword
            part.to(dtype=dt)
        part.eval().requires_grad_(False)
    # A model directory may carry its own defaults (t2v_nb's toy model does); a preset's win.
    defaults, sched_name = dict(index.get("t2v_nb_defaults", {})), scheduler
    sched_name = sched_name or defaults.pop("scheduler", None)
    if preset is not None:
        defaults = {k: getattr(preset, k) for k in ("height", "width", "num_frames", "num_inference_steps",
                                                     "guidance_scale", "fps")}
        sched_name = scheduler or preset.scheduler
    if sched_name:
        parts["scheduler"] = make_scheduler(sched_name, parts["scheduler"])
    preview = None
    if os.path.isfile(os.path.join(where, "preview.json")):
        from .preview import LinearPreview

        preview = LinearPreview.load(os.path.join(where, "preview.json"))
    elif parts["vae"].config.latent_channels == 4 and abs(parts["vae"].config.scaling_factor - 0.18215) < 1e-6:
        from .preview import sd_vae_preview

        preview = sd_vae_preview()  # the SD-family VAE of ModelScope / ZeroScope
    info = {"source": preset.source if preset else where, "preset": source if preset else None,
            "revision": revision, "variant": variant}  # for a hub model, the commit actually loaded
    return StepwisePipeline(**parts, defaults=defaults, source=info, preview=preview)
