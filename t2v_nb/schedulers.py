"""Schedulers by short name, and the predicted clean latents (x0) of any step.

diffusers' schedulers return `pred_original_sample` only in some cases (DDIM, DDPM, Euler, LMS ...);
for the others (DPM-Solver++, PNDM, UniPC, DEIS ...) x0 follows from the model output and the noise
level of the step, by the formula matching the scheduler's `prediction_type`:

    alpha-scaled latents  x_t = a x0 + s eps, a = sqrt(alpha_bar_t), s = sqrt(1 - alpha_bar_t)
        epsilon:  x0 = (x_t - s eps) / a
        v:        x0 = a x_t - s v
    sigma-scaled latents (Euler family)  x = x0 + sigma eps
        epsilon:  x0 = x - sigma eps
        v:        x0 = x / (sigma^2 + 1) - v sigma / sqrt(sigma^2 + 1)
    sample: the model predicts x0 itself.
    flow matching (rectified flow, Wan)  x_t = (1 - sigma) x0 + sigma eps, the model predicts v = eps - x0
        flow:     x0 = x_t - sigma v
"""

from __future__ import annotations

import copy
import difflib

import torch

__all__ = ["SCHEDULERS", "FLOW_SCHEDULERS", "named", "make_scheduler", "scheduler_name", "prediction_type", "pred_x0",
           "noise_to_step", "step",
           "step_kwargs", "step_parameters", "save_state", "restore_state"]

# Short name -> (diffusers class name, extra config).
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++-karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
}  # a family may name more of its own (`Family.schedulers`, e.g. "cogvideox-ddim"): see `named`

# On a flow-matching model (a base scheduler with prediction_type "flow_prediction", or FlowMatch*), the same
# short names give the flow-matching form of the sampler, with the base's shift of the sigma schedule.
FLOW_SCHEDULERS: dict[str, tuple[str, dict]] = {
    "euler": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": False}),
    # Ancestral: each step jumps to the predicted x0 and draws fresh noise for the next sigma
    # (x_next = (1 - sigma_next) x0 + sigma_next eps), so the seed matters at every step.
    "euler-a": ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
}


def named() -> dict[str, tuple[str, dict]]:
    """SCHEDULERS and the short names the families add for their own schedulers (`Family.schedulers`)."""
    from .families import FAMILIES, family_named

    table = dict(SCHEDULERS)
    for name in FAMILIES:
        table.update(family_named(name).schedulers)
    return table


def _flow_scheduler(key: str, name: str, base):
    """The flow-matching scheduler `key` with the shift (and, for the same class, every setting) of `base`."""
    import diffusers

    if key not in FLOW_SCHEDULERS:
        raise ValueError(f"{name!r} is not available for a flow-matching model (this one predicts a velocity); "
                         f"use one of {', '.join(FLOW_SCHEDULERS)}.")
    cls_name, extra = FLOW_SCHEDULERS[key]
    cls = getattr(diffusers, cls_name)
    shift = base.config.get("flow_shift") or base.config.get("shift") or 1.0
    if type(base) is cls:
        config = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    elif cls_name.startswith("FlowMatch"):
        config = {"num_train_timesteps": base.config.num_train_timesteps, "shift": shift}
    else:
        config = {"num_train_timesteps": base.config.num_train_timesteps, "prediction_type": "flow_prediction",
                  "use_flow_sigmas": True, "flow_shift": shift}
    return cls.from_config({**config, **extra})


def make_scheduler(name_or_scheduler, base):
    """A new scheduler: a short name from SCHEDULERS or a family's (configured from `base`'s config), or a copy.

    For a flow-matching `base` the names in FLOW_SCHEDULERS give their flow-matching form (same shift)."""
    import diffusers

    if not isinstance(name_or_scheduler, str):
        if not hasattr(name_or_scheduler, "step") or not hasattr(name_or_scheduler, "set_timesteps"):
            raise TypeError(f"scheduler must be a name ({', '.join(SCHEDULERS)}) or a diffusers scheduler, "
                            f"not {type(name_or_scheduler).__name__}.")
        return copy.deepcopy(name_or_scheduler)
    key = name_or_scheduler.lower().replace("_", "-")
    if prediction_type(base) == "flow":
        return _flow_scheduler(key, name_or_scheduler, base)
    table = named()
    if key not in table:
        close = difflib.get_close_matches(key, list(table), n=2, cutoff=0.4)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown scheduler {name_or_scheduler!r}.{hint} Known: {', '.join(table)}.")
    cls_name, extra = table[key]
    config = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    return getattr(diffusers, cls_name).from_config({**config, **extra})


def scheduler_name(scheduler) -> str:
    """The short name of `scheduler` if it is one of SCHEDULERS, else its class name."""
    cls = type(scheduler).__name__
    table = FLOW_SCHEDULERS if prediction_type(scheduler) == "flow" else named()
    for name, (cls_name, extra) in table.items():
        if cls_name == cls and all(scheduler.config.get(k) == v for k, v in extra.items()):
            if not extra and scheduler.config.get("use_karras_sigmas"):
                continue  # plain "dpm++" vs "dpm++-karras": same class, told apart by this flag
            return name
    return cls


def prediction_type(scheduler) -> str:
    """What the model predicts for this scheduler: "epsilon", "v_prediction", "flow" or "sample"."""
    kind = scheduler.config.get("prediction_type", None)
    if kind == "flow_prediction" or type(scheduler).__name__.startswith("FlowMatch"):
        return "flow"
    return kind or "epsilon"


def step_parameters(scheduler) -> set[str]:
    """The keyword names `scheduler.step` takes (read once per run: `inspect` costs ~50 us)."""
    import inspect

    return set(inspect.signature(scheduler.step).parameters)


def step(scheduler, model_output: torch.Tensor, t, sample: torch.Tensor, i: int, params: set[str], *,
         generator=None, eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One `scheduler.step`, called exactly once, as diffusers' pipelines call it -> (x_{t-1}, predicted x0).

    The seed's `generator` (stochastic samplers) and DDIM's `eta` are passed where `step` takes them. A
    scheduler with another call signature is its family's business (`Family.scheduler_step`).
    """
    out = scheduler.step(model_output, t, sample, **step_kwargs(params, generator, eta))
    return out.prev_sample, pred_x0(scheduler, out, sample, model_output, t, i)


def step_kwargs(params: set[str], generator=None, eta: float = 0.0) -> dict:
    """The seed's generator and DDIM's eta, for a `scheduler.step` whose keyword names are `params`."""
    return {k: v for k, v in (("generator", generator), ("eta", eta)) if k in params}


def _is_sigma_scaled(scheduler) -> bool:
    """True for the Euler family, whose latents are x0 + sigma * eps (init_noise_sigma > 1)."""
    return float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0 + 1e-6


def _alpha_sigma(scheduler, step_index: int, timestep, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, s) of an alpha-scaled step, x_t = a x0 + s eps, in float32 on `device`: from the DPM-Solver family's
    own sigma of the step (also right for Karras spacing), else from alphas_cumprod at `timestep`."""
    sigmas = getattr(scheduler, "sigmas", None)
    if sigmas is not None and hasattr(scheduler, "_sigma_to_alpha_sigma_t") and step_index < len(sigmas):
        a, s = scheduler._sigma_to_alpha_sigma_t(sigmas[step_index].to(torch.float32))
    else:
        alpha_bar = scheduler.alphas_cumprod[int(timestep)].to(torch.float32)
        a, s = alpha_bar**0.5, (1 - alpha_bar) ** 0.5
    return a.to(device), s.to(device)


def pred_x0(scheduler, output, sample: torch.Tensor, model_output: torch.Tensor, timestep,
            step_index: int) -> torch.Tensor:
    """Predicted clean latents for one step, from the scheduler's output or by formula.

    Args:
        scheduler: the scheduler, after its `step` for this step.
        output: what `scheduler.step` returned.
        sample: the latents given to `scheduler.step` (x_t).
        model_output: the (guided) model output given to `scheduler.step`.
        timestep: the step's timestep t.
        step_index: the index of this step in `scheduler.timesteps`.
    """
    x0 = getattr(output, "pred_original_sample", None)
    if x0 is not None:
        return x0
    kind = prediction_type(scheduler)
    if kind == "sample":
        return model_output
    x, out = sample.float(), model_output.float()
    if kind == "flow":
        sigma = scheduler.sigmas[step_index].to(x.device, torch.float32)
        return (x - sigma * out).to(sample.dtype)  # x_t = (1 - sigma) x0 + sigma eps, v = eps - x0
    if _is_sigma_scaled(scheduler):
        sigma = scheduler.sigmas[step_index].to(x.device, torch.float32)
        if kind == "epsilon":
            x0 = x - sigma * out
        elif kind == "v_prediction":
            x0 = x / (sigma**2 + 1) - out * sigma / (sigma**2 + 1) ** 0.5
        else:
            raise ValueError(f"Unsupported prediction_type {kind!r}.")
    else:
        a, s = _alpha_sigma(scheduler, step_index, timestep, x.device)
        if kind == "epsilon":
            x0 = (x - s * out) / a
        elif kind == "v_prediction":
            x0 = a * x - s * out
        else:
            raise ValueError(f"Unsupported prediction_type {kind!r}.")
    return x0.to(sample.dtype)


def noise_to_step(scheduler, x0: torch.Tensor, noise: torch.Tensor, step_index: int) -> torch.Tensor:
    """Clean latents `x0` noised to the level of step `step_index` of `scheduler` (after `set_timesteps`):
    the x_t that step expects, by the same formulas as `pred_x0` (flow: (1 - sigma) x0 + sigma eps; Euler
    family: x0 + sigma eps; otherwise sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps). For starting a run
    part-way from a given video (see notebook 06)."""
    n = len(scheduler.timesteps)
    if not 0 <= step_index < n:
        raise ValueError(f"step_index must be in [0, {n}) for this scheduler's {n} steps, got {step_index}.")
    x, eps = x0.float(), noise.float().to(x0.device)
    sigmas = getattr(scheduler, "sigmas", None)
    if prediction_type(scheduler) == "flow":
        sigma = sigmas[step_index].to(x.device, torch.float32)
        out = (1 - sigma) * x + sigma * eps
    elif _is_sigma_scaled(scheduler):
        out = x + sigmas[step_index].to(x.device, torch.float32) * eps
    else:
        a, s = _alpha_sigma(scheduler, step_index, scheduler.timesteps[step_index], x.device)
        out = a * x + s * eps
    return out.to(x0.dtype)


def save_state(scheduler) -> dict:
    """A snapshot of a scheduler's mutable state (step index, solver history), cheap to take per step."""
    return {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
            for k, v in vars(scheduler).items() if k != "config" and k != "_internal_dict"}


def restore_state(scheduler, state: dict) -> None:
    """Put a scheduler back as `save_state` saw it."""
    for k, v in state.items():
        setattr(scheduler, k, list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
