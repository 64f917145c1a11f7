"""Wan 2.1 (Wan-AI, 2025): a diffusion transformer over space-time patches, trained with flow matching.

Components as in diffusers' `WanPipeline`: a T5 tokenizer (google/umt5-xxl's), a `UMT5EncoderModel`,
a `WanTransformer3DModel` and the causal 3-D VAE `AutoencoderKLWan`. What differs from the UNet family:

* Text: L = 512 positions (`WanPipeline`'s `max_sequence_length` default; the tokenizer's own
  `model_max_length` is not used, as in that pipeline). The encoder reads the attention mask; its output is
  then trimmed to the prompt's real length and zero-padded back to 512, so `text.embeddings[:, n:]` is
  exactly 0 for the n real tokens (the transformer's text projection turns those zeros into one constant
  vector, which cross-attention still attends to: no mask reaches it).
* Latents: [B, 16, F', H/8, W/8] in float32 whatever the model's dtype, with F' = (F - 1) / 4 + 1: the
  VAE is causal in time, its first latent frame covers video frame 0 alone and each later latent frame the
  next 4 frames. So F must be 4k + 1, and H, W multiples of 16 (the VAE's 8 times the patch's 2).
  The latents the loop sees are normalized ((z - latents_mean) / latents_std per channel); decoding
  undoes that, then decodes the whole clip at once (causal convolutions with a cache, frame 0 first).
* The model: patches of 1 x 2 x 2 latent pixels become tokens (F' * H/16 * W/16 of them), each block
  has joint space-time self-attention (`attn1`, with 3-D RoPE: frame, row and column positions rotate
  the queries and keys) and cross-attention to the text (`attn2`). Guidance makes two calls per step,
  the prompt's first, with timestep t for every batch item.
* Flow matching: x_t = (1 - sigma) x0 + sigma eps and the model predicts the velocity v = eps - x0, so
  x0 = x_t - sigma v (`t2v_nb.schedulers.pred_x0`). The schedule's sigmas are shifted towards noise
  (sigma' = s sigma / (1 + (s - 1) sigma), s = `flow_shift`, 3 for 480p).

Wan 2.2 (a second transformer `transformer_2`, or the TI2V VAE with patches and per-token timesteps)
is refused with a ValueError.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import torch

from .base import ATTENTION_CHUNK as _CHUNK
from .base import Family
from .causal import CausalFrames, decode_clip

__all__ = ["WanFamily", "WanObserver", "wan21_preview", "rope_off", "MAX_SEQUENCE_LENGTH"]

MAX_SEQUENCE_LENGTH = 512  # WanPipeline.__call__'s default max_sequence_length: L for every Wan model

# ComfyUI's published Wan 2.1 latent -> RGB factors (comfy/latent_formats.py, class Wan21), applied there to
# the normalized latents (z - mean) / std; they map to RGB in [-1, 1].
_WAN21_RGB = [[-0.1299, -0.1692, 0.2932], [0.0671, 0.0406, 0.0442], [0.3568, 0.2548, 0.1747],
              [0.0372, 0.2344, 0.1420], [0.0313, 0.0189, -0.0328], [0.0296, -0.0956, -0.0665],
              [-0.3477, -0.4059, -0.2925], [0.0166, 0.1902, 0.1975], [-0.0412, 0.0267, -0.1364],
              [-0.1293, 0.0740, 0.1636], [0.0680, 0.3019, 0.1128], [0.0032, 0.0581, 0.0639],
              [-0.1251, 0.0927, 0.1699], [0.0060, -0.0633, 0.0005], [0.3477, 0.2275, 0.2950],
              [0.1984, 0.0913, 0.1861]]
_WAN21_BIAS = [-0.1835, -0.0868, -0.3360]
_WAN21_MEAN = [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715, 0.5517,
               -0.3632, -0.1922, -0.9497, 0.2503, -0.2921]
_WAN21_STD = [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652, 1.5579,
              1.6382, 1.1253, 2.8251, 1.9160]


def wan21_preview():
    """ComfyUI's Wan 2.1 factors as a `LinearPreview` on the loop's (normalized) latents, RGB in [0, 1].

    ComfyUI's rows give RGB in [-1, 1]: rgb = z @ M + b. Here rgb01 = rgb / 2 + 0.5 = z @ (M / 2) + (b / 2 + 0.5).
    A reference, not fitted by t2v_nb; it applies to every latent frame (F' of them, not F).
    """
    from ..preview import LinearPreview

    m, b = np.asarray(_WAN21_RGB, np.float32), np.asarray(_WAN21_BIAS, np.float32)
    return LinearPreview(m / 2, b / 2 + 0.5, "ComfyUI Wan21 latent_rgb_factors (reference), on normalized latents")


@contextlib.contextmanager
def rope_off(transformer) -> Iterator[Any]:
    """Inside the block, Wan's rotary embedding tells the tokens no frame position: every frame is frame 0.

    `WanRotaryPosEmbed` (`transformer.rope`) returns (cos, sin), each [1, N, 1, head_dim]: its first `t_dim`
    features turn the queries and keys of self-attention by an angle that grows with the token's frame, the
    rest by its row and column. A forward hook on `transformer.rope` sets those first `t_dim` features to
    cos = 1, sin = 0 (the angle of position 0), so the frame part of each head's query and key is not turned at
    all; rows and columns keep their positions. With patches of one latent frame (Wan 2.1's (1, 2, 2)),
    nothing else in the transformer tells frames apart, so permuting the latent frames of the input permutes
    the output the same way. The hook is removed on exit (also after an error): the transformer is unchanged.

    Example: `with rope_off(pipe.denoiser): video = pipe.generate(prompt, seed=0)`
    """
    rope = getattr(transformer, "rope", None)
    t_dim = getattr(rope, "t_dim", None)
    if not isinstance(rope, torch.nn.Module) or not isinstance(t_dim, int):
        hint = " (for a t2v_nb pipeline, pass pipe.denoiser)" if hasattr(transformer, "denoiser") else ""
        raise TypeError(f"rope_off needs a WanTransformer3DModel (one with a WanRotaryPosEmbed as .rope), "
                        f"got {type(transformer).__name__}{hint}.")

    def no_frame_position(module, args, output):
        cos, sin = (x.clone() for x in output)  # each [1, N, 1, head_dim], frame features first
        cos[..., :t_dim] = 1.0
        sin[..., :t_dim] = 0.0
        return cos, sin

    handle = rope.register_forward_hook(no_frame_position)
    try:
        yield transformer
    finally:
        handle.remove()


class WanFamily(CausalFrames, Family):
    name = "wan"
    pipeline_classes = ("WanPipeline",)
    slots = {"tokenizer": {("transformers", "T5Tokenizer"), ("transformers", "T5TokenizerFast")},
             "text_encoder": {("transformers", "UMT5EncoderModel"), ("transformers", "T5EncoderModel")},
             "transformer": {("diffusers", "WanTransformer3DModel")},
             "vae": {("diffusers", "AutoencoderKLWan")}}
    denoiser_slot = "transformer"
    text_first = True  # UMT5-XXL, ~11 GB in float16: on a GPU, loaded only to encode

    # ------------------------------------------------------------------ components

    @classmethod
    def accepts(cls, classes: dict[str, str]) -> bool:
        ok = super().accepts(classes)
        if ok and classes.get("transformer_2") is not None:
            raise ValueError("This is a Wan 2.2 model (two transformers: transformer_2 denoises the low-noise "
                             "steps); t2v_nb supports Wan 2.1 (one transformer), e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers.")
        return ok

    @classmethod
    def prepare(cls, parts: dict[str, Any]) -> dict[str, Any]:
        if parts.get("transformer_2") is not None:
            cls.accepts({"transformer": "WanTransformer3DModel", "transformer_2": "WanTransformer3DModel"})
        vae = parts["vae"].config
        if vae.get("patch_size") is not None or vae.get("is_residual"):
            raise ValueError("This VAE is Wan 2.2's (patch_size / residual blocks, used with per-token timesteps); "
                             "t2v_nb supports the Wan 2.1 VAE.")
        return parts

    # ------------------------------------------------------------------ sizes

    @property
    def spatial_factor(self) -> int:
        return int(self.pipe.vae.config.scale_factor_spatial)

    @property
    def temporal_factor(self) -> int:  # type: ignore[override]
        return int(self.pipe.vae.config.scale_factor_temporal)

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(int(p) for p in self.denoiser.config.patch_size)  # (t, h, w)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE's factor times the patch size (8 x 2 = 16)."""
        return self.spatial_factor * max(self.patch_size[1:])

    @property
    def smallest_size(self) -> int:
        return self.size_multiple

    def default_size(self) -> tuple[int, int]:
        return 480, 832  # WanPipeline's defaults; the transformer's config has no size

    def default_settings(self) -> dict:
        return {"height": 480, "width": 832, "num_frames": 81, "num_inference_steps": 50, "guidance_scale": 5.0,
                "fps": 16.0}

    @property
    def max_frames(self) -> int | None:
        positions = int(self.denoiser.config.rope_max_seq_len) // self.patch_size[0]  # RoPE frame positions
        return self.decoded_frames(positions)

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        if num_frames >= 1:
            self.check_frames(num_frames, "Wan")
        super().check_size(num_frames, height, width)
        positions = int(self.denoiser.config.rope_max_seq_len)  # RoPE positions along each axis
        for name, v, p in (("height", height, self.patch_size[1]), ("width", width, self.patch_size[2])):
            if v // (self.spatial_factor * p) > positions:
                most = positions * self.spatial_factor * p
                raise ValueError(f"{name}={v} needs {v // (self.spatial_factor * p)} patches along it, more than the "
                                 f"{positions} RoPE positions this transformer has (rope_max_seq_len); the largest "
                                 f"{name} is {most}.")

    # ------------------------------------------------------------------ text

    @property
    def text_length(self) -> int:
        """512 (WanPipeline's `max_sequence_length`), or the model's own `max_sequence_length` from its
        defaults (`model_index.json`'s "t2v_nb_defaults": toy-shapes-flow was trained with 16). The length
        is part of the model: the zero rows after the prompt all reach cross-attention."""
        n = self.pipe.defaults.get("max_sequence_length", MAX_SEQUENCE_LENGTH)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_sequence_length must be a positive int, got {n!r}.")
        return n

    def clean_prompt(self, text: str) -> str:
        from diffusers.pipelines.wan.pipeline_wan import prompt_clean

        return prompt_clean(text)  # ftfy (when installed), HTML unescaping, whitespace collapsed

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """UMT5 with the mask, then trimmed to the real length and zero-padded to L: [B, L, D]."""
        out = self.pipe.text_encoder(ids, mask).last_hidden_state  # [B, L, D]
        n = mask.gt(0).sum(dim=1)  # [B] real lengths
        rows = [torch.cat([e[:k], e.new_zeros(out.shape[1] - k, out.shape[2])]) for e, k in zip(out, n.tolist())]
        return torch.stack(rows)  # [B, L, D], rows k.. are exactly 0

    # ------------------------------------------------------------------ the model

    def latent_dtype(self) -> torch.dtype:
        return torch.float32  # WanPipeline keeps latents in float32 and casts them for each model call

    def predict(self, latents: torch.Tensor, t, text, *, guided: bool, scheduler, branch):
        x = latents.to(self.pipe.dtype)  # [B, C, F', h, w]
        with branch("text"):
            cond = self.call_model(x, t, text.embeddings)
        if not guided:
            return None, cond
        with branch("uncond"):
            uncond = self.call_model(x, t, text.negative_embeddings)
        return uncond, cond

    def call_model(self, x: torch.Tensor, t, embeddings: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        return self.denoiser(hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=embeddings,
                             return_dict=False)[0]

    # ------------------------------------------------------------------ decoding

    def encode_video(self, video) -> torch.Tensor:
        """[F, H, W, 3] or [B, F, H, W, 3] in [0, 1] -> normalized latents [B, C, F', h, w] ((z - latents_mean) /
        latents_std, the posterior's mean). The encoder reads frame 0, then 4 frames at a time, and drops a
        partial last chunk; it is causal, so the clip is padded to 4k + 1 frames with its last frame and
        only the latent frames of the real frames are kept."""
        vae = self.pipe.vae
        x = self._pixels(video)
        F = x.shape[1]
        pixels = x.permute(0, 4, 1, 2, 3).to(vae.device, vae.dtype) * 2 - 1  # [B, 3, F, H, W] in [-1, 1]
        extra = (1 - F) % 4
        pixels = torch.cat([pixels, pixels[:, :, -1:].expand(-1, -1, extra, -1, -1)], dim=2)
        z = vae.encode(pixels).latent_dist.mean[:, :, : self.latent_frames(F)].float()  # [B, C, F', h, w]
        mean, std = self._latent_stats(z)
        return (z - mean) / std

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's per-channel latents_mean and latents_std as [1, C, 1, 1, 1], on `like`'s device and dtype."""
        config = self.pipe.vae.config
        shape = (1, -1, 1, 1, 1)
        return (torch.tensor(config.latents_mean).view(shape).to(like),
                torch.tensor(config.latents_std).view(shape).to(like))

    def decode(self, latents: torch.Tensor, frames=None, chunk_size: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, 16, F', h, w] normalized latents -> float32 [B, F, H, W, 3] in [0, 1], F = 4 (F' - 1) + 1.

        The whole clip in one causal decode (`chunk_size` does not apply; on a GPU out-of-memory error it
        retries with the VAE's spatial tiling). `frames` are video frame indices: only the latent frames up
        to the last one needed are decoded (a causal prefix decodes to the same first frames).
        """
        vae = self.pipe.vae
        total = self.decoded_frames(latents.shape[2])
        index = list(range(total)) if frames is None else [int(f) for f in frames]
        for f in index:
            if not -total <= f < total:
                raise ValueError(f"frame {f} is out of range: these latents decode to {total} frames.")
        index = [f % total for f in index]
        z = latents[:, :, : self.latent_index(max(index)) + 1].to(vae.device, vae.dtype)  # [B, C, F'', h, w]
        mean, std = self._latent_stats(z)
        z = z / (1.0 / std) + mean  # the VAE's own latent space, as WanPipeline computes it (1 / std, then divide)
        video = decode_clip(vae, lambda: vae.decode(z, return_dict=False)[0])  # [B, 3, F, H, W] in [-1, 1]
        video = (video[:, :, index].float() / 2 + 0.5).clamp(0, 1)  # [B, 3, F, H, W]
        return video.permute(0, 2, 3, 4, 1)  # [B, F, H, W, 3]

    # ------------------------------------------------------------------ attention

    def attention_modules(self) -> Iterator[tuple[str, str, Any]]:
        for i, block in enumerate(self.denoiser.blocks):
            yield "temporal", f"blocks.{i}.attn1", block.attn1  # joint space-time self-attention, with RoPE
            yield "cross", f"blocks.{i}.attn2", block.attn2  # video tokens -> text positions

    def attention_observer(self, kind: str, name: str, module, run):
        B, _, F, h, w = run.latents.shape
        pt, ph, pw = self.patch_size
        return WanObserver(kind, name, (F // pt, h // ph, w // pw))

    def attention_resolution(self, path: str, h: int, w: int) -> tuple[int, int]:
        return h // self.patch_size[1], w // self.patch_size[2]  # the patch grid, the same in every block

    # ------------------------------------------------------------------ previews

    def default_preview(self):
        vae = self.pipe.vae.config
        same = vae.z_dim == 16 and np.allclose(vae.latents_mean, _WAN21_MEAN) and np.allclose(vae.latents_std, _WAN21_STD)
        return wan21_preview() if same else None


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on [B, n, heads, d]: each pair (x[2i], x[2i+1]) turned by its position's angle."""
    even, odd = x[..., 0::2], x[..., 1::2]  # [B, n, heads, d/2]
    c, s = cos[..., 0::2], sin[..., 1::2]  # [1, n, 1, d/2]
    return torch.stack([even * c - odd * s, even * s + odd * c], dim=-1).flatten(-2).type_as(x)  # [B, n, heads, d]


def _softmax_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) over the keys, float32 [B, heads, r, Lk], holding at most two such tensors at once."""
    scores = q @ k.transpose(-1, -2)  # [B, heads, r, Lk]
    scores.mul_(scale)
    return scores.softmax(-1)


class WanObserver:
    """Reads one Wan attention layer's map from its inputs, in chunks of query tokens (never the full map).

    cross     -> [B, F', h', w', L]: for each video token (on the patch grid), its share of attention to
                 each of the L text positions, averaged over heads.
    temporal  -> [B, F', F']: for each query frame, the attention mass its tokens give to all tokens of
                 each key frame, averaged over the query frame's tokens and over heads.
    """

    def __init__(self, kind: str, name: str, grid: tuple[int, int, int]):
        self.kind, self.name, self.grid = kind, name, grid  # grid = (F', h', w') of the patch tokens

    def measure(self, attn, x: torch.Tensor, args: tuple, kwargs: dict, half: bool) -> torch.Tensor:
        given = dict(zip(("encoder_hidden_states", "attention_mask", "rotary_emb"), args), **kwargs)
        if given.get("attention_mask") is not None or getattr(attn, "add_k_proj", None) is not None:
            raise RuntimeError(f"{self.name}: attention masks and image keys (Wan image-to-video) are not measured.")
        if self.kind == "cross":
            return self._cross(attn, x, given["encoder_hidden_states"])
        return self._frames(attn, x, given.get("rotary_emb"))

    @staticmethod
    def _heads(attn, y: torch.Tensor) -> torch.Tensor:
        return y.unflatten(2, (attn.heads, -1))  # [B, n, heads * d] -> [B, n, heads, d]

    def _cross(self, attn, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        k = self._heads(attn, attn.norm_k(attn.to_k(context))).transpose(1, 2).float()  # [B, heads, L, d]
        L, scale = k.shape[2], k.shape[-1] ** -0.5
        out = torch.empty(B, N, L, dtype=torch.float32, device=x.device)  # [B, N, L]
        rows = max(1, _CHUNK // (B * attn.heads * L))
        for s in range(0, N, rows):
            q = self._heads(attn, attn.norm_q(attn.to_q(x[:, s : s + rows]))).transpose(1, 2).float()  # [B, heads, r, d]
            out[:, s : s + rows] = _softmax_scores(q, k, scale).mean(1)  # [B, r, L]
        return out.view(B, *self.grid, L)  # [B, F', h', w', L]

    def _frames(self, attn, x: torch.Tensor, rotary) -> torch.Tensor:
        B, N, _ = x.shape
        F = self.grid[0]
        hw = N // F
        cos, sin = rotary if rotary is not None else (None, None)  # each [1, N, 1, d]
        k = self._heads(attn, attn.norm_k(attn.to_k(x)))  # [B, N, heads, d]
        if rotary is not None:
            k = _rope(k, cos, sin)
        k = k.transpose(1, 2).float()  # [B, heads, N, d]
        scale = k.shape[-1] ** -0.5
        frame_of = torch.arange(N, device=x.device) // hw  # [N]: the frame of each token (tokens are frame-major)
        out = torch.zeros(B, F, F, dtype=torch.float32, device=x.device)  # [B, F', F']
        rows = max(1, _CHUNK // (B * attn.heads * N))
        for s in range(0, N, rows):
            q = self._heads(attn, attn.norm_q(attn.to_q(x[:, s : s + rows])))  # [B, r, heads, d]
            if rotary is not None:
                q = _rope(q, cos[:, s : s + rows], sin[:, s : s + rows])
            p = _softmax_scores(q.transpose(1, 2).float(), k, scale)  # [B, heads, r, N]
            share = p.view(B, attn.heads, p.shape[2], F, hw).sum(-1).mean(1)  # [B, r, F']: mass per key frame
            del p  # before the next chunk's scores exist
            out.index_add_(1, frame_of[s : s + rows], share)
        return out / hw  # [B, F', F'], rows sum to 1
