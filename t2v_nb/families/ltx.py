"""LTX-Video 0.9 (Lightricks, 2024): a diffusion transformer over latent voxels, with a VAE that compresses hard.

Components as in diffusers' `LTXPipeline`: a T5 tokenizer and `T5EncoderModel` (T5 v1.1 XXL), a
`LTXVideoTransformer3DModel` and the causal video VAE `AutoencoderKLLTXVideo`. What none of the other
families shows:

* Extreme compression: the VAE turns 8 frames x 32 x 32 pixels (x 3 colours) into one latent voxel of 128
  channels (1:192; a patchify of 4 x 4 inside the VAE, then three 2x down-samplings). F video frames ->
  F' = (F - 1) / 8 + 1 latent frames (frame 0 alone), so F must be 8k + 1 and H, W multiples of 32. The
  loop's latents are normalized per channel ((z - latents_mean) * scaling_factor / latents_std).
* Tokens are latent voxels: the transformer has patch size 1, so each of the F' x H/32 x W/32 voxels is one
  token. diffusers packs them to [B, N, 128] (frame-major: frame, row, column) for the transformer, the
  scheduler and its callbacks; here every hook point keeps [B, C, F', h, w] (`pack` / `unpack` convert).
  Rotary position embeddings give each token its (frame, row, column), the frame axis scaled by 8 / fps
  (`rope_interpolation_scale`): the model is told the frame rate (`pipe.defaults["fps"]`, 25 by default).
* Text: 128 T5 positions (`LTXPipeline`'s `max_sequence_length`; `pipe.defaults["max_sequence_length"]`
  changes it), encoded without a mask; the mask reaches cross-attention instead (-10000 on padding), so
  padding positions get ~0 attention. One batched [uncond, text] transformer call per step.
* Flow matching with a shift that depends on the size: sigmas = linspace(1, 1/n, n), shifted by
  mu = a + b N, linear in the token count N between (base_image_seq_len, base_shift) and
  (max_image_seq_len, max_shift) of the scheduler config (`set_timesteps`). Bigger videos spend more
  steps at high noise. x0 = x_t - sigma v (`t2v_nb.schedulers.pred_x0`).
* A denoising decoder (0.9.1 and later VAEs, `timestep_conditioning`): before decoding, the latents are
  mixed with fresh noise, z' = (1 - s) z + s eps, and the decoder is told the timestep `decode_timestep`
  (s = `decode_noise_scale`, default = decode_timestep). The noise comes from the run's generator after
  the loop, as in `LTXPipeline`. Both settings are `pipe.defaults["decode_timestep"]` /
  `["decode_noise_scale"]` (default 0: no noise) and show in `run.record()["decode"]`; `decode_input`
  returns z' and the timestep, so a notebook can look at what the decoder is given.

Attention (`attention_modules`): each block has `attn1`, self-attention over all tokens (space-time,
with RoPE), read as "temporal" [B, F', F'] (the share of a frame's attention landing on each frame), and
`attn2`, cross-attention to the text, read as "cross" [B, F', h, w, L]. Both are computed in chunks of
query tokens (`ATTENTION_CHUNK` scores at a time), never the whole map.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterator

import numpy as np
import torch

from .base import ATTENTION_CHUNK, Family
from .causal import CausalFrames, decode_clip

__all__ = ["LTXFamily", "LTXObserver", "pack", "unpack", "ltxv_preview", "MAX_SEQUENCE_LENGTH"]

MAX_SEQUENCE_LENGTH = 128  # LTXPipeline.__call__'s default max_sequence_length


def pack(x: torch.Tensor) -> torch.Tensor:
    """[B, C, F', h, w] -> [B, F' h w, C]: one token per latent voxel, frame-major (diffusers' layout, patch 1)."""
    return x.flatten(2).transpose(1, 2)


def unpack(tokens: torch.Tensor, like_shape: tuple) -> torch.Tensor:
    """[B, N, C] -> [B, C, F', h, w] with F', h, w from `like_shape` (a [B, C, F', h, w] shape)."""
    B, C, F, h, w = like_shape
    return tokens.transpose(1, 2).reshape(B, C, F, h, w)


class LTXFamily(CausalFrames, Family):
    name = "ltx"
    pipeline_classes = ("LTXPipeline",)
    slots = {"tokenizer": {("transformers", "T5Tokenizer"), ("transformers", "T5TokenizerFast")},
             "text_encoder": {("transformers", "T5EncoderModel")},
             "transformer": {("diffusers", "LTXVideoTransformer3DModel")},
             "vae": {("diffusers", "AutoencoderKLLTXVideo")}}
    denoiser_slot = "transformer"
    text_first = True  # T5 v1.1 XXL, 8.9 GiB in float16 (docs/ltx.md): on a GPU, loaded only to encode

    def __init__(self, pipe):
        super().__init__(pipe)
        self._mask_cache: dict[tuple, torch.Tensor] = {}  # (prompt, negative prompt, ...) -> masks: text-only

    @classmethod
    def prepare(cls, parts: dict[str, Any]) -> dict[str, Any]:
        config = parts["transformer"].config
        if (config.get("patch_size") or 1) != 1 or (config.get("patch_size_t") or 1) != 1:
            raise ValueError("This LTX transformer patches its input (patch_size > 1); t2v_nb supports LTX-Video 0.9 "
                             "(patch size 1: one token per latent voxel).")
        return parts

    # ------------------------------------------------------------------ sizes

    @property
    def spatial_factor(self) -> int:
        return int(self.pipe.vae.spatial_compression_ratio)  # 32: the VAE's patchify of 4 times 2 x 2 x 2

    @property
    def temporal_factor(self) -> int:  # type: ignore[override]
        return int(self.pipe.vae.temporal_compression_ratio)  # 8

    @property
    def smallest_size(self) -> int:
        return self.spatial_factor

    def default_size(self) -> tuple[int, int]:
        return 480, 704  # LTXPipeline's defaults; the transformer's config has no size

    def default_settings(self) -> dict:
        # LTXPipeline's defaults: 161 frames at 25 fps, 50 steps, guidance 3
        return {**super().default_settings(), "num_frames": 161, "num_inference_steps": 50, "guidance_scale": 3.0,
                "fps": 25.0}

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        if num_frames >= 1:
            self.check_frames(num_frames, "LTX-Video")
        super().check_size(num_frames, height, width)

    # ------------------------------------------------------------------ text

    @property
    def text_length(self) -> int:
        n = self.pipe.defaults.get("max_sequence_length", MAX_SEQUENCE_LENGTH)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_sequence_length must be a positive int, got {n!r}.")
        return n

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """T5 without the mask, as LTXPipeline encodes (the mask is used in cross-attention): [B, L, D]."""
        return self.pipe.text_encoder(ids)[0]

    def _masks(self, text, guided: bool) -> torch.Tensor:
        """The attention masks [B', L] of the model call's text rows ([negative, prompt] when guided). The negative
        prompt's is not in `text`: it is tokenized again, once per prompt pair (cached: it depends on the text only)."""
        key = (text.prompt, text.negative_prompt, guided, self.text_length, str(self.pipe.device))
        if key not in self._mask_cache:
            mask = text.mask
            if guided:
                mask = torch.cat([self.tokenize(self.clean_prompt(text.negative_prompt)).mask, mask])
            self._mask_cache = {key: mask.to(self.pipe.device).bool()}  # the last pair only
        return self._mask_cache[key]

    # ------------------------------------------------------------------ schedule and the model

    def set_timesteps(self, scheduler, num_inference_steps: int, latent_shape: tuple, device) -> None:
        """LTXPipeline's schedule: its own sigmas linspace(1, 1/n, n), shifted by mu (linear in the token count) on
        a flow-matching scheduler with dynamic shifting; other schedulers get n steps (and mu, if they shift)."""
        _, F, h, w = latent_shape
        c = scheduler.config
        mu = self.shift_mu(F * h * w, c)
        takes = set(inspect.signature(scheduler.set_timesteps).parameters)
        dynamic = {"mu": mu} if c.get("use_dynamic_shifting") and "mu" in takes else {}
        if type(scheduler).__name__.startswith("FlowMatch"):
            sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
            scheduler.set_timesteps(sigmas=sigmas, device=device, **dynamic)
        else:
            scheduler.set_timesteps(num_inference_steps, device=device, **dynamic)

    @staticmethod
    def shift_mu(tokens: int, config) -> float:
        """mu for `tokens` video tokens: the line through (base_image_seq_len, base_shift) and (max_image_seq_len,
        max_shift) of the scheduler config, with diffusers' fallbacks (256, 0.5) and (4096, 1.15)."""
        n0, n1 = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
        s0, s1 = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
        slope = (s1 - s0) / (n1 - n0)
        return tokens * slope + (s0 - slope * n0)

    def latent_dtype(self) -> torch.dtype:
        return torch.float32  # LTXPipeline keeps latents in float32 and casts them for each model call

    def predict(self, latents: torch.Tensor, t, text, *, guided: bool, scheduler, branch):
        emb = torch.cat([text.negative_embeddings, text.embeddings]) if guided else text.embeddings  # [B', L, D]
        x = torch.cat([latents] * 2) if guided else latents  # [B', C, F', h, w]
        with branch("both" if guided else "text"):
            out = self.call_model(x.to(emb.dtype), t, emb, self._masks(text, guided))
        return tuple(out.chunk(2)) if guided else (None, out)

    def call_model(self, x: torch.Tensor, t, embeddings: torch.Tensor, mask: torch.Tensor | None = None):
        """One transformer call: [B', C, F', h, w] latents (packed to tokens here) -> float32 [B', C, F', h, w].
        `mask` [B', L] bool: True for the text's tokens (default: every position)."""
        B, _, F, h, w = x.shape
        if mask is None:
            mask = torch.ones(embeddings.shape[:2], dtype=torch.bool, device=x.device)
        timestep = torch.as_tensor(t, device=x.device).expand(B)
        rope_scale = (self.temporal_factor / float(self.pipe.defaults["fps"]), self.spatial_factor, self.spatial_factor)
        out = self.denoiser(hidden_states=pack(x), encoder_hidden_states=embeddings, timestep=timestep,
                            encoder_attention_mask=mask, num_frames=F, height=h, width=w,
                            rope_interpolation_scale=rope_scale, return_dict=False)[0]  # [B', N, C]
        return unpack(out.float(), x.shape)

    def to_scheduler(self, x: torch.Tensor) -> torch.Tensor:
        return pack(x)  # [B, N, C]: the scheduler sees the packed tokens, as in LTXPipeline (its noise order too)

    def from_scheduler(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return unpack(x, like.shape)

    # ------------------------------------------------------------------ decoding

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vae = self.pipe.vae
        return (vae.latents_mean.view(1, -1, 1, 1, 1).to(like.device, like.dtype),
                vae.latents_std.view(1, -1, 1, 1, 1).to(like.device, like.dtype))

    def decode_settings(self) -> dict:
        if not self.pipe.vae.config.get("timestep_conditioning"):
            return {}
        d = self.pipe.defaults
        t = float(d.get("decode_timestep", 0.0))
        s = d.get("decode_noise_scale")
        return {"timestep": t, "noise_scale": t if s is None else float(s)}

    def decode_input(self, latents: torch.Tensor, generator: torch.Generator | None = None):
        """What the decoder is given for the loop's latents [B, C, F', h, w]: (z', timestep). z' is in the VAE's
        own space (un-normalized) and, on a timestep-conditioned VAE, (1 - s) z + s eps with eps drawn from
        `generator` (default: seed 0); timestep is [B] decode_timestep, or None for a VAE without conditioning."""
        vae, dtype = self.pipe.vae, self.pipe.dtype
        mean, std = self._latent_stats(latents)
        z = (latents * std / vae.config.scaling_factor + mean).to(dtype)  # [B, C, F', h, w]
        settings = self.decode_settings()
        if not settings:
            return z, None
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device)  # drawn on the CPU, as diffusers
        B = z.shape[0]
        timestep = torch.tensor([settings["timestep"]] * B, device=z.device, dtype=z.dtype)
        s = torch.tensor([settings["noise_scale"]] * B, device=z.device, dtype=z.dtype)[:, None, None, None, None]
        return (1 - s) * z + s * noise, timestep

    def decode(self, latents: torch.Tensor, frames=None, chunk_size: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, C, F', h, w] -> float32 [B, F, H, W, 3] in [0, 1], F = 8 (F' - 1) + 1. The whole clip in one decode
        (the decoder is not causal: a prefix does not decode to the same frames); `frames` then picks video
        frames; `chunk_size` is not used. After a GPU out-of-memory error it retries with VAE tiling."""
        vae = self.pipe.vae
        z, timestep = self.decode_input(latents, generator)
        z = z.to(vae.device, vae.dtype)
        video = decode_clip(vae, lambda: vae.decode(z, timestep, return_dict=False)[0])  # [B, 3, F, H, W]
        video = (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1)  # [B, F, H, W, 3]
        return video if frames is None else video[:, [int(f) for f in frames]]

    def encode_video(self, video) -> torch.Tensor:
        """[F, H, W, 3] or [B, F, H, W, 3] in [0, 1], F = 8k + 1 -> normalized latents [B, C, F', h, w] (the
        posterior's mean, (z - latents_mean) * scaling_factor / latents_std), float32."""
        vae = self.pipe.vae
        pixels = self._pixels(video).permute(0, 4, 1, 2, 3).to(vae.device, vae.dtype) * 2 - 1  # [B, 3, F, H, W]
        z = vae.encode(pixels).latent_dist.mean.float()  # [B, C, F', h, w]
        mean, std = self._latent_stats(z)
        return (z - mean) * vae.config.scaling_factor / std

    # ------------------------------------------------------------------ attention

    def attention_modules(self) -> Iterator[tuple[str, str, Any]]:
        for i, block in enumerate(self.denoiser.transformer_blocks):
            yield "temporal", f"transformer_blocks.{i}.attn1", block.attn1  # all tokens x all tokens, with RoPE
            yield "cross", f"transformer_blocks.{i}.attn2", block.attn2  # tokens -> text positions

    def attention_observer(self, kind: str, name: str, module, run):
        return LTXObserver(kind, name, tuple(run.latents.shape[2:]))

    def attention_resolution(self, path: str, h: int, w: int) -> tuple[int, int]:
        return h, w  # patch size 1: the latent grid itself

    # ------------------------------------------------------------------ previews

    def default_preview(self):
        return ltxv_preview() if self.pipe.vae.config.latent_channels == len(_LTXV_RGB) // 3 else None


# ---------------------------------------------------------------------- attention, read in chunks


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """LTX's rotary embedding on flat [B, n, heads * d] features: each pair (x[2i], x[2i+1]) turned by its angle."""
    even, odd = x.unflatten(2, (-1, 2)).unbind(-1)  # [B, n, heads * d / 2]
    turned = torch.stack([-odd, even], dim=-1).flatten(2)  # [B, n, heads * d]
    return (x.float() * cos + turned.float() * sin).to(x.dtype)


def _probs(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) averaged over heads: q [B, heads, r, d], k [B, heads, Lk, d] -> [B, r, Lk]."""
    scores = q.float() @ k.float().transpose(-1, -2)  # [B, heads, r, Lk]
    scores.mul_(q.shape[-1] ** -0.5)
    if bias is not None:
        scores += bias
    return scores.softmax(-1).mean(1)


class LTXObserver:
    """Reads one LTX attention layer's map from its inputs, `ATTENTION_CHUNK` scores at a time.

    cross     -> [B, F', h, w, L]: for each latent voxel, its share of attention to each text position
                 (padding gets ~0: the mask adds -10000 there), averaged over heads; rows sum to 1.
    temporal  -> [B, F', F']: for each query frame, the attention mass its voxels give to each key frame's
                 voxels, averaged over the query frame's voxels and over heads; rows sum to 1.
    """

    def __init__(self, kind: str, name: str, grid: tuple[int, int, int]):
        self.kind, self.name, self.grid = kind, name, grid  # grid = (F', h, w): tokens are frame-major

    def measure(self, attn, x: torch.Tensor, args: tuple, kwargs: dict, half: bool) -> torch.Tensor:
        given = dict(zip(("encoder_hidden_states", "attention_mask", "image_rotary_emb"), args), **kwargs)
        n = x.shape[0]

        def keep(v):  # the prompt's half of a batched [uncond, text] call
            return v[n // 2 :] if half and v is not None and v.shape[0] == n else v

        x = keep(x)
        heads = lambda y: y.unflatten(2, (attn.heads, -1)).transpose(1, 2)  # [B, n, H d] -> [B, H, n, d]
        if self.kind == "cross":
            context, bias = keep(given["encoder_hidden_states"]), keep(given.get("attention_mask"))
            bias = None if bias is None else bias.float().view(x.shape[0], 1, 1, -1)  # [B, 1, 1, L] additive
            k = heads(attn.norm_k(attn.to_k(context)))  # [B, H, L, d]
            rows = max(1, ATTENTION_CHUNK // (x.shape[0] * attn.heads * k.shape[2]))
            out = [_probs(heads(attn.norm_q(attn.to_q(x[:, s : s + rows]))), k, bias)
                   for s in range(0, x.shape[1], rows)]
            return torch.cat(out, 1).view(x.shape[0], *self.grid, k.shape[2])  # [B, F', h, w, L]
        rope = given.get("image_rotary_emb")
        cos, sin = (keep(rope[0]), keep(rope[1])) if rope is not None else (None, None)
        return self._frames(attn, x, cos, sin, heads)

    def _frames(self, attn, x: torch.Tensor, cos, sin, heads) -> torch.Tensor:
        B, N, _ = x.shape
        F = self.grid[0]
        hw = N // F
        k = attn.norm_k(attn.to_k(x))  # [B, N, H d]
        k = heads(_rotate(k, cos, sin) if cos is not None else k)  # [B, H, N, d]
        frame_of = torch.arange(N, device=x.device) // hw  # [N]: the frame of each token
        out = torch.zeros(B, F, F, dtype=torch.float32, device=x.device)  # [B, F', F']
        rows = max(1, ATTENTION_CHUNK // (B * attn.heads * N))
        for s in range(0, N, rows):
            q = attn.norm_q(attn.to_q(x[:, s : s + rows]))  # [B, r, H d]
            if cos is not None:
                q = _rotate(q, cos[:, s : s + rows], sin[:, s : s + rows])
            p = _probs(heads(q), k, None)  # [B, r, N]
            out.index_add_(1, frame_of[s : s + rows], p.view(B, -1, F, hw).sum(-1))  # mass per key frame
        return out / hw  # [B, F', F'], rows sum to 1


# ---------------------------------------------------------------------- linear previews

# ComfyUI's published LTX-Video latent -> RGB factors (comfyanonymous/ComfyUI, comfy/latent_formats.py, class LTXV,
# read at commit 040a3243468ecefd1f2802592d90458f1ce4d65f): 128 rows (one per latent channel) of R, G, B, mapping
# to RGB in [-1, 1], and a bias. ComfyUI applies them to the latents its LTX model denoises.
_LTXV_RGB = [float(v) for v in """
1.1202e-02 -6.3815e-04 -1.0021e-02 8.6031e-02 6.5813e-02 9.5409e-04 -1.2576e-02 -7.5734e-03 -4.0528e-03
9.4063e-03 -2.1688e-03 2.6093e-03 3.7636e-03 1.2765e-02 9.1548e-03 2.1024e-02 -5.2973e-03 3.4373e-03
-8.8896e-03 -1.9703e-02 -1.8761e-02 -1.3160e-02 -1.0523e-02 1.9709e-03 -1.5152e-03 -6.9891e-03 -7.5810e-03
-1.7247e-03 4.6560e-04 -3.3839e-03 1.3617e-02 4.7077e-03 -2.0045e-03 1.0256e-02 7.7318e-03 1.3948e-02
-1.6108e-02 -6.2151e-03 1.1561e-03 7.3407e-03 1.5628e-02 4.4865e-04 9.5357e-04 -2.9518e-03 -1.4760e-02
1.9143e-02 1.0868e-02 1.2264e-02 4.4575e-03 3.6682e-05 -6.8508e-03 -4.5681e-04 3.2570e-03 7.7929e-03
3.3902e-02 3.3405e-02 3.7454e-02 -2.3001e-02 -2.4877e-03 -3.1033e-03 5.0265e-02 3.8841e-02 3.3539e-02
-4.1018e-03 -1.1095e-03 1.5859e-03 -1.2689e-01 -1.3107e-01 -2.1005e-01 2.6276e-02 1.4189e-02 -3.5963e-03
-4.8679e-03 8.8486e-03 7.8029e-03 -1.6610e-03 -4.8597e-03 -5.2060e-03 -2.1010e-03 2.3610e-03 9.3796e-03
-2.2482e-02 -2.1305e-02 -1.5087e-02 -1.5753e-02 -1.0646e-02 -6.5083e-03 -4.6975e-03 5.0288e-03 -6.7390e-03
1.1951e-02 2.0712e-02 1.6191e-02 -6.3704e-03 -8.4827e-03 -9.5483e-03 7.2610e-03 -9.9326e-03 -2.2978e-02
-9.1904e-04 6.2882e-03 9.5720e-03 -3.7178e-02 -3.7123e-02 -5.6713e-02 -1.3373e-01 -1.0720e-01 -5.3801e-02
-5.3702e-03 8.1256e-03 8.8397e-03 -1.5247e-01 -2.1437e-01 -2.1843e-01 3.1441e-02 7.0335e-03 -9.7541e-03
2.1528e-03 -8.9817e-03 -2.1023e-02 3.8461e-03 -5.8957e-03 -1.5014e-02 -4.3470e-03 -1.2940e-02 -1.5972e-02
-5.4781e-03 -1.0842e-02 -3.0204e-03 -6.5347e-03 3.0806e-03 -1.0163e-02 -5.0414e-03 -7.1503e-03 -8.9686e-04
-8.5851e-03 -2.4351e-03 1.0674e-03 -9.0016e-03 -9.6493e-03 1.5692e-03 5.0914e-03 1.2099e-02 1.9968e-02
1.3758e-02 1.1669e-02 8.1958e-03 -1.0518e-02 -1.1575e-02 -4.1307e-03 -2.8410e-02 -3.1266e-02 -2.2149e-02
2.9336e-03 3.6511e-02 1.8717e-02 -1.6703e-02 -1.6696e-02 -4.4529e-03 4.8818e-02 4.0063e-02 8.7410e-03
-1.5066e-02 -5.7328e-04 2.9785e-03 -1.7613e-02 -8.1034e-03 1.3086e-02 -9.2633e-03 1.0803e-02 -6.3489e-03
3.0851e-03 4.7750e-04 1.2347e-02 -2.2785e-02 -2.3043e-02 -2.6005e-02 -2.4787e-02 -1.5389e-02 -2.2104e-02
-2.3572e-02 1.0544e-03 1.2361e-02 -7.8915e-03 -1.2271e-03 -6.0968e-03 -1.1478e-02 -1.2543e-03 6.2679e-03
-5.4229e-02 2.6644e-02 6.3394e-03 4.4216e-03 -7.3338e-03 -1.0464e-02 -4.5013e-03 1.6082e-03 1.4420e-02
1.3673e-02 8.8877e-03 4.1253e-03 -1.0145e-02 9.0072e-03 1.5695e-02 -5.6234e-03 1.1847e-03 8.1261e-03
-3.7171e-03 -5.3538e-03 1.2590e-03 2.9476e-02 2.1424e-02 3.0424e-02 -3.4925e-02 -2.4340e-02 -2.5316e-02
-3.4127e-02 -2.2406e-02 -1.0589e-02 -1.7342e-02 -1.3249e-02 -1.0719e-02 -2.1478e-03 -8.6051e-03 -2.9878e-03
1.2089e-03 -4.2391e-03 -6.8569e-03 9.0411e-04 -6.6886e-03 -6.7547e-05 1.6048e-02 -1.0057e-02 -2.8929e-02
1.2290e-03 1.0163e-02 1.8861e-02 1.7264e-02 2.7257e-04 1.3785e-02 -1.3482e-02 -3.6427e-03 6.7481e-04
4.6782e-03 -5.2423e-03 2.4467e-03 -5.9113e-03 -6.2244e-03 -1.8162e-03 1.5496e-02 1.4582e-02 1.9514e-03
7.4958e-03 1.5886e-03 -8.2305e-03 1.9086e-02 1.6360e-03 -3.9674e-03 -5.7021e-03 -2.7307e-03 -4.1066e-03
1.7450e-03 1.4602e-02 2.5794e-02 -8.2788e-04 2.2902e-03 4.5161e-03 1.1632e-02 8.9193e-03 -7.2813e-03
7.5721e-03 2.6784e-03 1.1393e-02 5.1939e-03 3.6903e-03 1.4049e-02 -1.8383e-02 -2.2529e-02 -2.4477e-02
5.8842e-04 -5.7874e-03 -1.4770e-02 -1.6125e-02 -8.6101e-03 -1.4533e-02 2.0540e-02 2.0729e-02 6.4338e-03
3.3587e-03 -1.1226e-02 -1.6444e-02 -1.4742e-03 -1.0489e-02 1.7097e-03 2.8130e-02 2.3546e-02 3.2791e-02
-1.8532e-02 -1.2842e-02 -8.7756e-03 -8.0533e-03 -1.0771e-02 -1.7536e-02 -3.9009e-03 1.6150e-02 3.3359e-02
-7.4554e-03 -1.4154e-02 -6.1910e-03 3.4734e-03 -1.1370e-02 -1.0581e-02 1.1476e-02 3.9281e-03 2.8231e-03
7.1639e-03 -1.4741e-03 -3.8066e-03 2.2250e-03 -8.7552e-03 -9.5719e-03 2.4146e-02 2.1696e-02 2.8056e-02
-5.4365e-03 -2.4291e-02 -1.7802e-02 7.4263e-03 1.0510e-02 1.2705e-02 6.2669e-03 6.2658e-03 1.9211e-02
1.6378e-02 9.4933e-03 6.6971e-03 1.7173e-02 2.3601e-02 2.3296e-02 -1.4568e-02 -9.8279e-03 -1.1556e-02
1.4431e-02 1.4430e-02 6.6362e-03 -6.8230e-03 1.8863e-02 1.4555e-02 6.1156e-03 3.4700e-03 -2.6662e-03
-2.6983e-03 -5.9402e-03 -9.2276e-03 1.0235e-02 7.4173e-03 -7.6243e-03 -1.3255e-02 1.9322e-02 -9.2153e-04
2.4222e-03 -4.8039e-03 -1.5759e-02 2.6244e-02 2.5951e-02 2.0249e-02 1.5711e-02 1.8498e-02 2.7407e-03
-2.1714e-03 4.7214e-03 -2.2443e-02 -7.4747e-03 7.4166e-03 1.4430e-02 -8.3906e-03 -7.9776e-03 9.7927e-03
3.8321e-02 9.6622e-03 -1.9268e-02 -1.4605e-02 -6.7032e-03 3.9675e-03
""".split()]
_LTXV_BIAS = [-0.0571, -0.1657, -0.2512]


def ltxv_preview():
    """ComfyUI's LTX-Video factors as a `LinearPreview` on the loop's latents, RGB in [0, 1] (a reference, not
    fitted by t2v_nb): ComfyUI's rgb = z @ M + b in [-1, 1], so here z @ (M / 2) + (b / 2 + 0.5). One picture per
    latent frame (each covers 8 video frames), one pixel per 32 x 32 video pixels."""
    from ..preview import LinearPreview

    m = np.asarray(_LTXV_RGB, np.float32).reshape(-1, 3)  # [128, 3]
    b = np.asarray(_LTXV_BIAS, np.float32)
    return LinearPreview(m / 2, b / 2 + 0.5, "ComfyUI LTXV latent_rgb_factors (reference)")
