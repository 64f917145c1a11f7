"""t2v_nb: look inside a text-to-video diffusion model while it works, from a Jupyter notebook.

    >>> import t2v_nb
    >>> pipe = t2v_nb.load("toy-shapes")            # bundled, offline, CPU
    >>> run = pipe.start("a red circle moving right", seed=0)
    >>> step = run.step()                           # one denoising step, everything it computed
    >>> video = run.finish().decode()               # the rest, then the VAE
    >>> run.trace["step.pred_x0"].shape             # [steps, B, C, F, h, w]

Importing this package is cheap: torch, diffusers and friends load on first use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load", "PRESETS", "HOOK_POINTS", "StepwisePipeline", "Run", "Step", "Video", "sweep"]

_LAZY = {
    "load": ("models", "load"),
    "PRESETS": ("models", "PRESETS"),
    "HOOK_POINTS": ("hooks", "HOOK_POINTS"),
    "StepwisePipeline": ("pipeline", "StepwisePipeline"),
    "Run": ("pipeline", "Run"),
    "Step": ("pipeline", "Step"),
    "Video": ("video", "Video"),
    "sweep": ("sweep", None),  # the module, callable as the function: t2v_nb.sweep(...) and t2v_nb.sweep.SweepResult
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = importlib.import_module(f".{module}", __name__)
        value = value if attr is None else getattr(value, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 't2v_nb' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def _versions() -> dict:
    """Versions of the libraries that decide what a run computes (for run records)."""
    import platform
    from importlib import metadata

    out = {"t2v_nb": __version__, "python": platform.python_version()}
    for pkg in ("torch", "diffusers", "transformers", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out
