"""The UNet families' attention observer (ModelScope, AnimateDiff): a video UNet runs its frames as a batch of
images, and its attention layers are diffusers' `Attention` with the Stable Diffusion line's norms and masks.

The maps' layout is documented in `t2v_nb.attention` (cross: [B, F, h_l, w_l, 77], temporal: [B, F, F]).
"""

from __future__ import annotations

import torch

from .base import ATTENTION_CHUNK as _CHUNK

__all__ = ["UNetObserver"]


def _grid(seq: int, h: int, w: int) -> tuple[int, int]:
    """The h_l x w_l grid of `seq` pixels: the latent grid (h, w) halved (rounding up) until it fits."""
    while h * w > seq:
        h, w = -(-h // 2), -(-w // 2)
    if h * w != seq:
        raise RuntimeError(f"Cannot lay out an attention layer's {seq} positions on a grid with the latents' "
                           f"aspect ratio ({h}x{w} is the closest).")
    return h, w


def _probs(attn, x: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None,
           temb: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T * scale) averaged over heads, as `attn`'s processor computes it: [n, Lq, Lk] float32."""
    if attn.spatial_norm is not None:
        x = attn.spatial_norm(x, temb)
    if x.ndim == 4:  # [n, C, h, w] -> [n, h*w, C]
        x = x.flatten(2).transpose(1, 2)
    if attn.group_norm is not None:
        x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
    if context is None:
        context = x
    elif attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    n, heads = x.shape[0], attn.heads
    if mask is not None:  # additive, as the processors prepare it: [n, heads, 1 or Lq, Lk]
        mask = attn.prepare_attention_mask(mask, context.shape[1], n).view(n, heads, -1, context.shape[1])
    rows = max(1, _CHUNK // (heads * x.shape[1] * context.shape[1]))
    out = []
    for s in range(0, n, rows):  # a few rows at a time: per-head scores never exist for all rows at once
        q = attn.to_q(x[s : s + rows])  # [r, Lq, heads * d]
        k = attn.to_k(context[s : s + rows])  # [r, Lk, heads * d]
        r = q.shape[0]
        q = q.view(r, -1, heads, k.shape[-1] // heads).transpose(1, 2)  # [r, heads, Lq, d]
        k = k.view(r, -1, heads, k.shape[-1] // heads).transpose(1, 2)  # [r, heads, Lk, d]
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        # attn.scale = d**-0.5 in these UNets; the SDPA processor always uses d**-0.5, the classic one attn.scale
        scores = q.float() @ k.float().transpose(-1, -2) * attn.scale  # [r, heads, Lq, Lk]
        if mask is not None:
            scores = scores + mask[s : s + rows].float()
        out.append(scores.softmax(-1).mean(1))  # [r, Lq, Lk]
    return torch.cat(out)


def _halve(value, half: bool, n: int):
    """The prompt's half of a guided [uncond, text] batch of `n` rows (all of it when `half` is False)."""
    if not half or value is None or value.shape[0] != n:
        return value
    return value[n // 2 :]


class UNetObserver:
    """Reads one attention layer's map of a video UNet (frames run as a batch of images) from its inputs."""

    def __init__(self, kind: str, name: str, run):
        B, _, F, h, w = run.latents.shape
        self.kind, self.name, self.batch, self.frames, self.grid = kind, name, B, F, (h, w)

    def measure(self, attn, x: torch.Tensor, args: tuple, kwargs: dict, half: bool) -> torch.Tensor:
        given = dict(zip(("encoder_hidden_states", "attention_mask", "temb"), args), **kwargs)
        n = x.shape[0]
        context, mask, temb = (_halve(given.get(k), half, n) for k in ("encoder_hidden_states", "attention_mask", "temb"))
        p = _probs(attn, _halve(x, half, n), context, mask, temb)  # [n', Lq, Lk]
        B, F = self.batch, self.frames
        if self.kind == "cross":  # rows are (b, frame), queries are pixels
            return p.reshape(B, F, *_grid(p.shape[1], *self.grid), p.shape[2])  # [B, F, h_l, w_l, T]
        if p.shape[1:] != (F, F):  # rows are (b, pixel), queries and keys are frames
            raise RuntimeError(f"{self.name}: expected attention over {F} frames, got {tuple(p.shape[1:])}.")
        return p.reshape(B, -1, F, F).mean(1)  # [B, F, F]
