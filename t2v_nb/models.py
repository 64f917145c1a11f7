"""Presets and `load()`: a preset name, a Hugging Face hub id, or a local directory -> StepwisePipeline.

A local directory must be in the diffusers layout: `model_index.json` and one folder per component
(`tokenizer/ text_encoder/ unet/ vae/ scheduler/`, or `transformer/` for a diffusion transformer).
The model's family (`t2v_nb.families`) is found from the component classes `model_index.json` names,
before any weights load; each slot is loaded only with a class from that family's allow-list of
diffusers/transformers classes: no remote code ever runs. Weights load from safetensors unless
`allow_pickle=True` is passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import os
import warnings
from typing import Any

import torch

__all__ = ["Preset", "PRESETS", "load", "toy_model_dir", "choose_device", "choose_dtype", "TextFirstEncoder"]


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named model: where it comes from and how it likes to be run.

    What its family does on loading (a text encoder loaded only to encode, a scheduler config over an assembled
    model's base) is the family's (`t2v_nb.families.base.Family`): `text_first` and `scheduler_config` are
    read-only properties that ask it.
    """

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
    # more components from other repositories: (slot, hub id, revision), e.g. AnimateDiff's motion adapter; each
    # slot is one of the family's `optional_slots`, which gives its class
    extra: tuple[tuple[str, str, str | None], ...] = ()
    guidance_interval: tuple[float, float] | None = None  # timesteps where guidance applies (None: every step)
    # its family (a name in `t2v_nb.families.FAMILIES`); `load` checks it against the classes model_index.json names
    family: str | None = None

    @property
    def bundled(self) -> bool:
        """Shipped inside the package (the toys), not downloaded."""
        return self.source.startswith("bundled:")

    @property
    def text_first(self) -> bool:
        """Whether `load` keeps the text encoder out of memory until it encodes, on a GPU (`load`'s `text_first`):
        the family's `Family.text_first`, for a preset from the hub. Read-only: it was a field until the fact moved
        to the family; pass `load(..., text_first=...)` to decide otherwise."""
        from .families import family_named

        return bool(self.family) and not self.bundled and family_named(self.family).text_first

    @property
    def scheduler_config(self) -> tuple[tuple[str, Any], ...]:
        """Settings `load` puts over the base repository's scheduler config: the family's
        `assembled_scheduler_config` when the preset assembles the model from parts (`extra`), else none.
        Read-only: it was a field until the fact moved to the family."""
        from .families import family_named

        if not (self.family and self.extra):
            return ()
        return tuple(family_named(self.family).assembled_scheduler_config.items())

    def sampler_defaults(self) -> dict:
        """The sampler settings as a model directory carries them (model_index.json's "t2v_nb_defaults").

        The bundled toys' export writes this, so the preset stays the one place their defaults are set.
        """
        d: dict[str, Any] = {k: getattr(self, k) for k in ("height", "width", "num_frames", "num_inference_steps",
                                                           "guidance_scale")}
        if self.guidance_interval is not None:
            d["guidance_interval"] = [float(v) for v in self.guidance_interval]
        return {**d, "scheduler": self.scheduler, "fps": float(self.fps)}


PRESETS: dict[str, Preset] = {
    "toy-shapes": Preset(
        source="bundled:toy/weights", revision=None, variant=None, height=64, width=64, num_frames=8,
        num_inference_steps=8, guidance_scale=3.0, scheduler="dpm++", fps=8.0,
        family="modelscope",
        notes="Trained by t2v_nb's own script on moving shapes; CPU, offline. Same classes as ModelScope (UNet3DConditionModel)."),
    "toy-shapes-flow": Preset(
        source="bundled:toy/weights_flow", revision=None, variant=None, height=64, width=64, num_frames=8,
        num_inference_steps=20, guidance_scale=1.5, scheduler="euler", fps=8.0,
        family="wan",
        notes="The same moving-shapes task with Wan 2.1's classes (WanTransformer3DModel over 8x8 tokens a frame, "
              "AutoencoderKLWan with 16x16 latents and no temporal compression, UMT5 encoder reading 16 tokens), "
              "trained with flow matching by t2v_nb's own script; CPU, offline. Loads with diffusers' WanPipeline too."),
    "modelscope-1.7b": Preset(
        source="ali-vilab/text-to-video-ms-1.7b", revision="8227dddca75a8561bf858d604cc5dae52b954d01", variant="fp16", height=256, width=256,
        num_frames=16, num_inference_steps=25, guidance_scale=9.0, scheduler="dpm++", fps=8.0,
        family="modelscope",
        notes="License cc-by-nc-4.0 (non-commercial). Trained on data with the Shutterstock watermark, which "
              "shows in its videos. Formerly damo-vilab/text-to-video-ms-1.7b."),
    "zeroscope-v2-576w": Preset(
        source="cerspense/zeroscope_v2_576w", revision=None, variant=None, height=320, width=576,
        num_frames=24, num_inference_steps=40, guidance_scale=9.0, scheduler="dpm++", fps=8.0,
        pickle_only=True,
        family="modelscope",
        notes="A ModelScope fine-tune without the watermark; made for 576x320 (its UNet config says 256). "
              "Ships only .bin (pickle) weights: load with allow_pickle=True if you trust the source."),
    "animatediff-v1-5-2": Preset(
        source="SG161222/Realistic_Vision_V5.1_noVAE", revision=None, variant=None, height=512, width=512,
        num_frames=16, num_inference_steps=25, guidance_scale=7.5, scheduler="ddim", fps=8.0,
        extra=(("motion_adapter", "guoyww/animatediff-motion-adapter-v1-5-2", None),),
        family="animatediff",
        notes="AnimateDiff as in diffusers' docs: the v1-5-2 motion adapter (Apache-2.0) on the Realistic Vision "
              "5.1 Stable Diffusion 1.5 base (CreativeML Open RAIL-M: read its use restrictions). Motion modules "
              "know 32 frame positions; made for 16 frames at 512x512. ~4 GB of weights in float16."),
    "cogvideox-2b": Preset(
        source="THUDM/CogVideoX-2b", revision="2844d07b93dbb09686423ed045f6f8a6ad04d451", variant=None,
        height=480, width=720, num_frames=49, num_inference_steps=25, guidance_scale=6.0,
        scheduler="cogvideox-ddim", fps=8.0,
        family="cogvideox",
        notes="CogVideoX-2b (THUDM, now zai-org), Apache-2.0 (model card since Aug 2024: transformer and VAE). "
              "Made for 720x480, 49 frames (6 s at 8 fps); the model card uses 50 steps and guidance 6, the preset "
              "25 steps to halve the time on a T4. Joint text-video attention over 226 T5 tokens + 17,550 video "
              "tokens. 15.4 GB of weights as loaded in float16, 11.5 GB of them the T5-XXL text encoder (its `wo` "
              "layers stay float32): see docs/cogvideox.md for what fits a T4 (16 GB VRAM, 12.7 GB RAM)."),
    "wan2.1-t2v-1.3b": Preset(
        source="Wan-AI/Wan2.1-T2V-1.3B-Diffusers", revision=None, variant=None, height=480, width=832,
        num_frames=33, num_inference_steps=30, guidance_scale=5.0, scheduler="unipc", fps=16.0,
        family="wan",
        notes="Wan 2.1 text-to-video 1.3B (Apache-2.0): a flow-matching diffusion transformer, UMT5-XXL text encoder, "
              "causal 3-D VAE. The model card's settings are 480x832, 81 frames, 50 steps, guidance 5 (UniPC, flow "
              "shift 3.0 from the repository's scheduler config); these defaults keep 480x832 but make 33 frames "
              "in 30 steps for a free Colab T4. The text encoder is ~11 GB in float16: see docs/wan.md for the "
              "memory plan."),
    "ltx-video-2b": Preset(
        source="Lightricks/LTX-Video", revision="35969376d5a37e052770a89aacf510dfba0e908f", variant=None,
        height=480, width=704, num_frames=65, num_inference_steps=30, guidance_scale=3.0, scheduler="euler",
        fps=25.0,
        family="ltx",
        notes="LTX-Video 0.9 (2B, Lightricks) in the diffusers layout of the repository's root folders; the hub marks its "
              "licence 'other' (a licence file in the repository: read it before use). A transformer over latent "
              "voxels (one token per 8 frames x 32 x 32 pixels), T5-XXL text encoder, a VAE with a timestep-conditioned "
              "decoder from 0.9.1 on. LTXPipeline's settings are 704x480, 161 frames at 25 fps, 50 steps, guidance 3; "
              "these defaults make 65 frames in 30 steps for a free Colab T4. Trained in bfloat16: in float16 check "
              "for NaN (see docs/ltx.md, with the memory plan and the revision's provenance)."),
}

_NEEDED = ("tokenizer", "text_encoder", "vae", "scheduler")  # every family has these slots


def toy_model_dir(name: str = "toy-shapes") -> str:
    """Where a bundled toy model (the preset `name`: "toy-shapes" or "toy-shapes-flow") lives inside the
    installed package."""
    preset = PRESETS.get(name)
    if preset is None or not preset.bundled:
        bundled = [k for k, p in PRESETS.items() if p.bundled]
        raise ValueError(f"{name!r} is not a bundled model; bundled: {', '.join(bundled)}.")
    return os.path.join(os.path.dirname(__file__), *preset.source.split(":", 1)[1].split("/"))


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
        if preset.bundled:
            return toy_model_dir(source), preset
        return preset.source, preset
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "model_index.json")):
            raise ValueError(f"{source!r} is a directory but not a model in the diffusers layout: expected "
                             f"model_index.json and a folder per component ({', '.join(_NEEDED)}, unet or "
                             f"transformer).")
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


def _classes(index: dict) -> dict[str, tuple[str, str]]:
    """{slot: (library, class)} of the components model_index.json names (optional ones left empty are skipped)."""
    out = {}
    for slot, entry in index.items():
        if slot.startswith("_") or not isinstance(entry, (list, tuple)) or len(entry) != 2 or None in entry:
            continue
        out[slot] = (str(entry[0]), str(entry[1]))
    return out


def _component_class(family, slot: str, entry: tuple[str, str]) -> Any:
    """The class to load `slot` with: only diffusers schedulers, and only the family's allowed classes."""
    import diffusers
    import transformers

    lib, cls_name = entry
    if slot == "scheduler":
        cls = getattr(diffusers, cls_name, None) if lib == "diffusers" else None
        if cls is None or not issubclass(cls, diffusers.SchedulerMixin):
            raise ValueError(f"model_index.json names scheduler {list(entry)!r}; only diffusers schedulers are loaded.")
        return cls
    allowed = family.allowed(slot)
    if tuple(entry) not in allowed:
        names = ", ".join(f"{lib}.{cls}" for lib, cls in sorted(allowed))
        raise ValueError(f"model_index.json names {slot} {list(entry)!r}; for the {family.name} family t2v_nb loads "
                         f"only {names} there (no remote code).")
    return getattr(diffusers if lib == "diffusers" else transformers, cls_name)


def _load_part(cls, where: str, slot: str, *, local: bool, revision, variant, allow_pickle: bool, dtype,
               device=None):
    """One component from its subfolder of `where` (a local directory or a hub repository); with a CUDA
    `device`, straight onto it, shard by shard (RAM holds one shard at a time, not the whole model).
    transformers' own progress bar ("Loading weights") stays off meanwhile (`_quiet_loading_bars`)."""
    with _quiet_loading_bars():
        return _load_part_now(cls, where, slot, local=local, revision=revision, variant=variant,
                              allow_pickle=allow_pickle, dtype=dtype, device=device)


@contextlib.contextmanager
def _quiet_loading_bars():
    """Turn transformers' progress bars off for the block, then back to what they were.

    transformers draws one for every model it loads ("Loading weights 36/36"): noise in a learner's first
    output. Its switch also turns off huggingface_hub's download bars, which a first load of a real model
    needs (several GB): those are switched back on at once. t2v_nb's own bars are not transformers'.
    """
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    if not hf_logging.is_progress_bar_enabled():
        yield
        return
    downloads_shown = not hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()
    if downloads_shown:
        hub_utils.enable_progress_bars()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        if not downloads_shown:
            hub_utils.disable_progress_bars()


def _load_part_now(cls, where: str, slot: str, *, local: bool, revision, variant, allow_pickle: bool, dtype,
                   device=None):
    kwargs: dict[str, Any] = {"subfolder": slot} if slot else {}
    if not local:
        kwargs["revision"] = revision
    if slot in ("scheduler", "tokenizer"):
        return cls.from_pretrained(where, **kwargs)
    kwargs["use_safetensors"] = None if allow_pickle else True
    kwargs["dtype"] = dtype
    if variant:
        kwargs["variant"] = variant
    if device is not None and torch.device(device).type == "cuda":
        kwargs["device_map"] = str(device)
    part = cls.from_pretrained(where, **kwargs)
    if device is not None:
        part = part.to(device=device).eval().requires_grad_(False)
    return part


class TextFirstEncoder:
    """A text encoder that exists only while it encodes: loaded straight onto the device, then freed.

    `pipe.encode_text` (called by every `start`) calls it for the prompt and the negative prompt, then
    `release()`s it. On a GPU the other components (`park`) wait in CPU memory meanwhile, so the encoder
    has the GPU to itself. Made by `load(..., text_first=True)`; `loads` counts the loads.
    """

    def __init__(self, load_fn, device: torch.device, dtype: torch.dtype, park: list | None = None):
        self._load_fn, self.device, self.dtype = load_fn, torch.device(device), dtype
        self.park = list(park or [])
        self.model = None
        self.loads = 0

    def __call__(self, *args, **kwargs):
        if self.model is None:
            self._move_parked("cpu")
            self.model = self._load_fn()
            self.loads += 1
        return self.model(*args, **kwargs)

    def release(self) -> None:
        """Free the encoder (and its GPU memory), bring the parked components back; the next call loads it again."""
        import gc

        if self.model is None:
            return
        self.model = None
        gc.collect()
        self._move_parked(self.device)

    def _move_parked(self, device) -> None:
        if self.device.type != "cuda":
            return  # on the CPU there is nothing to make room for
        for part in self.park:
            part.to(device)
        torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"TextFirstEncoder({'loaded' if self.model is not None else 'not loaded'}, {self.device}, {self.dtype})"


def load(source: str = "toy-shapes", device=None, dtype=None, *, revision: str | None = None,
         variant: str | None = None, allow_pickle: bool = False, scheduler: str | None = None,
         text_first: bool | None = None):
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
        text_first: keep the text encoder off the device and out of memory: each `start()` loads it
            straight onto the device, encodes, and frees it (`TextFirstEncoder`). For Wan and CogVideoX on
            a free Colab T4, whose 16 GB of GPU memory and 12.7 GB of RAM cannot hold their ~11 GB T5
            encoders beside the transformer. Costs a reload (from the disk cache) per run. Default (None):
            on a GPU, on for a hub preset of a family that says so (`Family.text_first`: Wan, CogVideoX,
            LTX-Video), else off.

    >>> pipe = load("toy-shapes")
    >>> video = pipe.generate("a red circle moving right", seed=0)
    """
    from .pipeline import StepwisePipeline

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
        revision = commit or revision  # every component from the commit model_index.json came from
        classes = _classes(index)
        extra = {slot: (repo, rev) for slot, repo, rev in (preset.extra if preset else ())}
        family = _family(classes, preset)
        if text_first is None:
            text_first = bool(preset is not None and not preset.bundled and family.text_first and dev.type == "cuda")
        how = dict(local=local, revision=revision, variant=variant, allow_pickle=allow_pickle, dtype=dt)
        parts = _load_parts(family, where, classes, skip=("text_encoder",) if text_first else (), **how)
        if text_first:
            cls = _component_class(family, "text_encoder", classes["text_encoder"])
            parts["text_encoder"] = TextFirstEncoder(
                lambda: _load_part(cls, where, "text_encoder", device=dev, **how), dev, dt,
                park=[p for p in parts.values() if isinstance(p, torch.nn.Module)])
        for slot, (repo, rev) in extra.items():  # e.g. AnimateDiff's motion adapter, from its own repository
            cls = _component_class(family, slot, next(iter(family.allowed(slot))))
            parts[slot] = _load_part(cls, repo, "", local=os.path.isdir(repo), revision=rev, variant=None,
                                     allow_pickle=allow_pickle, dtype=dt)
    except OSError as e:
        if local:
            raise
        raise OSError(f"Could not load {source!r} from the Hugging Face hub (revision={revision!r}): {e}\n"
                      f"Without network access, use t2v_nb.load('toy-shapes') (bundled) or a local directory "
                      f"in the diffusers layout.") from e
    for part in parts.values():
        if isinstance(part, torch.nn.Module):
            part.to(device=dev)
            if part.dtype != dt:  # libraries older than the `dtype=` keyword
                part.to(dtype=dt)
            part.eval().requires_grad_(False)
    defaults, parts["scheduler"] = _defaults(index, preset, family, scheduler, parts["scheduler"])
    preview = None
    if os.path.isfile(os.path.join(where, "preview.json")):
        from .preview import LinearPreview

        preview = LinearPreview.load(os.path.join(where, "preview.json"))
    info = {"source": preset.source if preset else where, "preset": source if preset else None,
            "revision": revision, "variant": variant}  # for a hub model, the commit actually loaded
    return StepwisePipeline(**parts, family=family, defaults=defaults, source=info, preview=preview)


def _family(classes: dict[str, tuple[str, str]], preset: Preset | None):
    """The family of the classes model_index.json names; for a preset, with its `extra` slots filled by the classes
    its family takes there (AnimateDiff's `motion_adapter`: MotionAdapter), and checked against its `family`."""
    from .families import family_for, family_named

    names = {slot: cls for slot, (_, cls) in classes.items()}
    if preset is not None and preset.extra:
        named = family_named(preset.family) if preset.family else None
        for slot, _, _ in preset.extra:
            if named is None or slot not in named.optional_slots:
                raise ValueError(f"The preset's extra component {slot!r} is not an optional slot of its family "
                                 f"({preset.family!r}).")
            names[slot] = min(cls for _, cls in named.optional_slots[slot])
    family = family_for(names)
    if preset is not None and preset.family and family.name != preset.family:
        raise ValueError(f"{preset.source} names components of the {family.name} family, but its preset says "
                         f"{preset.family!r}: the repository changed, or the preset is wrong.")
    return family


def _load_parts(family, where: str, classes: dict, skip=(), **how) -> dict[str, Any]:
    """Every component slot of `family` that model_index.json names (but `skip`), each with an allowed class."""
    needed = [*family.slots, "scheduler"]
    missing = [slot for slot in needed if slot not in classes]
    if missing:
        raise ValueError(f"model_index.json of {where!r} has no {', '.join(map(repr, missing))} entry.")
    wanted = [slot for slot in needed + [s for s in family.optional_slots if s in classes] if slot not in skip]
    return {slot: _load_part(_component_class(family, slot, classes[slot]), where, slot, **how) for slot in wanted}


def _defaults(index: dict, preset: Preset | None, family, scheduler: str | None, base_scheduler):
    """(defaults, scheduler): a model directory may carry its own defaults (the toy models do); a preset's win. A
    preset that assembles its model from parts (`extra`) gets its family's `assembled_scheduler_config` over the
    base repository's scheduler config."""
    from .schedulers import make_scheduler

    defaults = dict(index.get("t2v_nb_defaults", {}))  # may also hold max_sequence_length (Wan's text length)
    name = scheduler or defaults.pop("scheduler", None)
    if preset is not None:
        defaults.update({k: getattr(preset, k) for k in ("height", "width", "num_frames", "num_inference_steps",
                                                         "guidance_scale", "guidance_interval", "fps")})
        name = scheduler or preset.scheduler
        if preset.extra and family.assembled_scheduler_config:
            config = {**base_scheduler.config, **family.assembled_scheduler_config}
            base_scheduler = type(base_scheduler).from_config(config)
    return defaults, make_scheduler(name, base_scheduler) if name else base_scheduler
