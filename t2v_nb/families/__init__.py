"""Model families: what differs between text-to-video models, one module per family.

The loop in `t2v_nb.pipeline` is the same for every model; a *family* says how this kind of model
does each part of it (like TransformerLens' architecture adapters, or diffusers' one pipeline file
per model). A family is a subclass of `Family` (see `t2v_nb.families.base`) and answers:

    components      which slots it takes and which classes may fill them (`unet` or `transformer`,
                    a `motion_adapter`, ...), as in its diffusers pipeline
    inputs          size multiples and frame-count rules (`check_size`), with the nearest valid values
    text            the prompt clean-up, tokenizer length, attention mask, encoder call, how the
                    embeddings are laid out (`encode_text`)
    latents         the latent shape (spatial and temporal compression) and dtype, the starting noise
    one step        the model call(s) for both guidance branches (`predict`), the layout in which the
                    scheduler sees the latents (`to_scheduler` / `from_scheduler`)
    decoding        latents -> frames (`decode`), and what one latent frame covers
    attention       where the cross- and temporal-attention layers are and how their maps are read
    previews        linear latent -> RGB factors, and the latent space they apply to

Families, in the order they were added:

    modelscope      ModelScope text-to-video, ZeroScope, the toy-shapes model (UNet3DConditionModel)
    animatediff     AnimateDiff: a Stable Diffusion UNet + motion modules (UNetMotionModel, MotionAdapter)
    cogvideox       CogVideoX 1.0 (2b, 5b): a diffusion transformer with joint text-video attention, T5, a 3-D VAE
    wan             Wan 2.1: a flow-matching diffusion transformer (WanTransformer3DModel, UMT5, AutoencoderKLWan)
    ltx             LTX-Video 0.9: one token per latent voxel of a 1:192 VAE, a size-dependent flow shift, a
                    denoising decoder (LTXVideoTransformer3DModel, T5, AutoencoderKLLTXVideo)

Adding one: a new module with a `Family` subclass (the contract is at the top of `t2v_nb.families.base`;
`t2v_nb.families.ltx` was added that way, touching nothing else but the entry in `FAMILIES` below and its
preset in `t2v_nb.models`), and a tests/tiny_<name>.py for the contract tests (`tests/test_families.py`).
"""

from __future__ import annotations

import importlib

__all__ = ["FAMILIES", "family_for", "family_named", "supported"]

# name -> "module:Class"; imported when needed, so `import t2v_nb` stays cheap.
FAMILIES: dict[str, str] = {
    "modelscope": "t2v_nb.families.modelscope:ModelScopeFamily",
    "animatediff": "t2v_nb.families.animatediff:AnimateDiffFamily",
    "cogvideox": "t2v_nb.families.cogvideox:CogVideoXFamily",
    "wan": "t2v_nb.families.wan:WanFamily",
    "ltx": "t2v_nb.families.ltx:LTXFamily",
}


def family_named(name: str):
    """The `Family` subclass registered as `name`."""
    if name not in FAMILIES:
        raise ValueError(f"Unknown model family {name!r}; known: {', '.join(FAMILIES)}.")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def supported() -> str:
    """One line per family: its name and the component classes it takes (for error messages)."""
    lines = []
    for name in FAMILIES:
        fam = family_named(name)
        slots = ", ".join(f"{slot}={'/'.join(sorted(c for _, c in allowed))}" for slot, allowed in fam.slots.items())
        lines.append(f"{name}: {slots}")
    return "; ".join(lines)


def family_for(classes: dict[str, str]):
    """The family whose component classes match `classes` ({slot: class name}), e.g. from model_index.json.

    Raises a ValueError naming the classes found and the families supported when none matches.
    """
    for name in FAMILIES:
        fam = family_named(name)
        if fam.accepts(classes):
            return fam
    found = ", ".join(f"{slot}={cls}" for slot, cls in sorted(classes.items())) or "no components"
    raise ValueError(f"These components are not a text-to-video model t2v_nb supports: {found}. "
                     f"Supported families (t2v_nb loads only these diffusers/transformers classes, no remote "
                     f"code): {supported()}.")
