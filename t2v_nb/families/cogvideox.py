"""CogVideoX (THUDM / zai-org, 2024): a diffusion transformer with one joint attention over text and video.

Components as in diffusers' `CogVideoXPipeline`: a T5 tokenizer and `T5EncoderModel` (226 tokens on the
real model, read from the transformer's `max_text_seq_length`; no attention mask), a
`CogVideoXTransformer3DModel` and the causal 3-D VAE `AutoencoderKLCogVideoX` (8x in space, 4x in time:
F video frames -> F' = (F - 1) / 4 + 1 latent frames, so F must be 4k + 1). Schedulers: CogVideoX's DDIM
and DPM variants, v-prediction on a zero-terminal-SNR schedule with an SNR shift.

What differs from a UNet:
* diffusers keeps the latents as [B, F', C, h, w]. The public layout stays [B, C, F', h, w]: the noise is
  drawn in diffusers' order and permuted, and the model and the scheduler see diffusers' layout.
* one batched [uncond, text] model call per step; the output is cast to float32 (as the pipeline does)
  and the next latents back to the embeddings' dtype (`after_step`).
* CogVideoX-5b uses rotary position embeddings for the video tokens (computed here as the pipeline does);
  CogVideoX-2b adds sin-cos position embeddings inside the model.
* attention: each block's `attn1` is ONE self-attention over [T text tokens, N video tokens]: the same
  matrix holds video -> text ("cross"), video -> video ("temporal", summed per frame) and text -> video.
  The hook points read two views of it (computed in chunks of query rows, never the whole matrix):

    attn.cross.transformer_blocks.<k>.attn1     [B, F', h', w', T]  for each video token (latent frame,
        patch row, patch column), its attention to the T text positions, renormalized over the text so
        each row sums to 1 (the share that goes to text at all is in `joint_views`)
    attn.temporal.transformer_blocks.<k>.attn1  [B, F', F']  query frame x key frame: of the attention a
        video token gives to video, the share that lands on each latent frame's tokens, averaged over
        the query frame's tokens; rows sum to 1

  h' x w' is the patch grid (latent size / patch_size). `joint_views(run, step)` recomputes the prompt's
  model call of a recorded step and returns all views of every layer, the text share and text -> video
  (which video places each word reads) included.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

from .base import ATTENTION_CHUNK as _CHUNK
from .base import Family
from .causal import CausalFrames, decode_clip

__all__ = ["CogVideoXFamily", "JointObserver", "joint_views", "fit_preview"]


T5_TOKENIZERS = {("transformers", "T5Tokenizer"), ("transformers", "T5TokenizerFast")}


class CogVideoXFamily(CausalFrames, Family):
    name = "cogvideox"
    pipeline_classes = ("CogVideoXPipeline",)
    slots = {"tokenizer": T5_TOKENIZERS, "text_encoder": {("transformers", "T5EncoderModel")},
             "transformer": {("diffusers", "CogVideoXTransformer3DModel")},
             "vae": {("diffusers", "AutoencoderKLCogVideoX")}}
    denoiser_slot = "transformer"
    text_first = True  # T5-XXL, 11.5 GB as loaded in float16: on a GPU, loaded only to encode
    schedulers = {"cogvideox-ddim": ("CogVideoXDDIMScheduler", {}),  # v-prediction with CogVideoX's SNR shift
                  "cogvideox-dpm": ("CogVideoXDPMScheduler", {})}

    def __init__(self, pipe):
        super().__init__(pipe)
        self._rope_cache: dict[tuple, Any] = {}  # (h, w, F', device) -> (cos, sin): depends only on sizes

    @classmethod
    def prepare(cls, parts: dict[str, Any]) -> dict[str, Any]:
        config = parts["transformer"].config
        if config.get("patch_size_t") is not None:
            raise ValueError("This transformer patches time too (patch_size_t="
                             f"{config.patch_size_t}): it is a CogVideoX 1.5 model, which t2v_nb does not support "
                             "yet. Use CogVideoX 1.0 (THUDM/CogVideoX-2b or CogVideoX-5b).")
        return parts

    # ------------------------------------------------------------------ sizes

    @property
    def temporal_factor(self) -> int:  # video frames per latent frame (after the first)
        return int(self.pipe.vae.config.temporal_compression_ratio)

    @property
    def patch_size(self) -> int:
        return int(self.denoiser.config.patch_size)

    @property
    def size_multiple(self) -> int:
        return self.spatial_factor * self.patch_size  # one patch of latent pixels

    @property
    def smallest_size(self) -> int:
        return self.size_multiple

    def default_size(self) -> tuple[int, int]:
        c = self.denoiser.config  # sample_height/width are in latent pixels (60 x 90 -> 480 x 720)
        return int(c.sample_height) * self.spatial_factor, int(c.sample_width) * self.spatial_factor

    def default_settings(self) -> dict:
        # the model card's: 49 frames (13 latent frames, the transformer's sample_frames), 50 steps, guidance 6, 8 fps
        return {**super().default_settings(), "num_frames": int(self.denoiser.config.get("sample_frames") or 49),
                "num_inference_steps": 50, "guidance_scale": 6.0, "fps": 8.0}

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        self.check_frames(num_frames, "CogVideoX")
        m, f, p = self.size_multiple, self.spatial_factor, self.patch_size
        for name, v in (("height", height), ("width", width)):
            if v % m or v < m:
                lower = max(m, v // m * m)
                hint = f"{name}={lower} or {lower + m}" if v > m else f"{name}={m}"
                raise ValueError(f"`height` and `width` must be multiples of {m} (the VAE's {f}x downsampling times "
                                 f"the transformer's {p}x{p} patches), but {name} is {v}; try {hint}.")
        c = self.denoiser.config
        if c.get("use_learned_positional_embeddings"):  # (5b-I2V) a fixed table of positions: one size only
            H, W = self.default_size()
            if (height, width, num_frames) != (H, W, c.sample_frames):
                raise ValueError(f"This transformer learned its position embeddings for {c.sample_frames} frames "
                                 f"at {W}x{H} only; got {num_frames} frames at {width}x{height}; use "
                                 f"num_frames={c.sample_frames}, height={H}, width={W}.")

    # ------------------------------------------------------------------ text

    @property
    def text_length(self) -> int:
        return int(self.denoiser.config.max_text_seq_length)  # 226 on CogVideoX; the pipeline pads to it

    # ------------------------------------------------------------------ latents and the model

    def initial_noise(self, shape: tuple, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        B, C, F, h, w = shape
        noise = torch.randn((B, F, C, h, w), generator=generator, dtype=dtype)  # [B, F', C, h, w]: diffusers' order
        return noise.permute(0, 2, 1, 3, 4)  # [B, C, F', h, w]

    def rotary_embedding(self, h: int, w: int, frames: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(cos, sin) [F' * h/p * w/p, head_dim] rotary position embeddings of the video tokens, as the pipeline
        makes them for CogVideoX 1.0 (None for models with sin-cos embeddings inside, like CogVideoX-2b)."""
        c = self.denoiser.config
        if not c.get("use_rotary_positional_embeddings"):
            return None
        key = (h, w, frames, str(device))
        if key not in self._rope_cache:
            from diffusers.models.embeddings import get_3d_rotary_pos_embed
            from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

            p = self.patch_size
            grid = (h // p, w // p)  # the patch grid of one latent frame
            base_w, base_h = c.sample_width // p, c.sample_height // p
            crops = get_resize_crop_region_for_grid(grid, base_w, base_h)
            self._rope_cache[key] = get_3d_rotary_pos_embed(embed_dim=c.attention_head_dim, crops_coords=crops,
                                                            grid_size=grid, temporal_size=frames, device=device)
        return self._rope_cache[key]

    def predict(self, latents: torch.Tensor, t, text, *, guided: bool, scheduler, branch):
        x = latents.permute(0, 2, 1, 3, 4)  # [B, F', C, h, w], as the transformer takes it
        if guided:
            x = torch.cat([x] * 2)  # [2B, F', C, h, w]
            emb = torch.cat([text.negative_embeddings, text.embeddings])  # [2B, L, D]
        else:
            emb = text.embeddings
        x = scheduler.scale_model_input(x, t)
        timestep = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        _, F, _, h, w = x.shape
        rope = self.rotary_embedding(h, w, F, x.device)
        with branch("both" if guided else "text"):
            out = self.denoiser(hidden_states=x, encoder_hidden_states=emb, timestep=timestep,
                                image_rotary_emb=rope, return_dict=False)[0]
        out = out.float().permute(0, 2, 1, 3, 4)  # [B', C, F', h, w] in float32, as the pipeline guides
        return tuple(out.chunk(2)) if guided else (None, out)

    def call_model(self, x: torch.Tensor, t, embeddings: torch.Tensor) -> torch.Tensor:
        """One transformer call on [B', C, F', h, w] latents -> [B', C, F', h, w] (float32)."""
        z = x.permute(0, 2, 1, 3, 4)  # [B', F', C, h, w]
        _, F, _, h, w = z.shape
        timestep = torch.as_tensor(t, device=z.device).expand(z.shape[0])
        out = self.denoiser(hidden_states=z, encoder_hidden_states=embeddings, timestep=timestep,
                            image_rotary_emb=self.rotary_embedding(h, w, F, z.device), return_dict=False)[0]
        return out.float().permute(0, 2, 1, 3, 4)

    def scheduler_step(self, scheduler, model_output, t, sample, i, params, *, generator=None, eta=0.0):
        """CogVideoX's DPM scheduler takes its previous x0 and the previous timestep too (as the pipeline calls it);
        the previous x0 is kept on the run's own scheduler, so `save_state` / `restore_state` cover it."""
        if "old_pred_original_sample" not in params:
            return super().scheduler_step(scheduler, model_output, t, sample, i, params, generator=generator, eta=eta)
        from ..schedulers import step_kwargs

        back = scheduler.timesteps[i - 1] if i > 0 else None
        prev, x0 = scheduler.step(model_output, getattr(scheduler, "t2v_nb_old_x0", None), t, back, sample,
                                  return_dict=False, **step_kwargs(params, generator, eta))
        scheduler.t2v_nb_old_x0 = x0
        return prev, x0

    def after_step(self, next_latents: torch.Tensor, text) -> torch.Tensor:
        return next_latents.to(text.embeddings.dtype)  # the pipeline keeps latents in the embeddings' dtype

    def to_scheduler(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 1, 3, 4)  # [B, F', C, h, w]: the DPM scheduler's noise is drawn in this order

    def from_scheduler(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 1, 3, 4)  # [B, C, F', h, w]

    # ------------------------------------------------------------------ decoding

    def encode_video(self, video) -> torch.Tensor:
        """[F, H, W, 3] or [B, F, H, W, 3] in [0, 1], F = 4k + 1 -> latents [B, C, F', h, w] (the posterior's
        mean times `scaling_factor`), as CogVideoX's video-to-video pipeline prepares them."""
        vae = self.pipe.vae
        pixels = self._pixels(video).permute(0, 4, 1, 2, 3).to(vae.device, vae.dtype) * 2 - 1  # [B, 3, F, H, W]
        return (vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor).to(self.latent_dtype())

    def decode(self, latents: torch.Tensor, frames=None, chunk_size: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, C, F', h, w] -> float32 [B, F, H, W, 3] in [0, 1], F = 4(F' - 1) + 1. The causal 3-D VAE decodes
        the whole clip (it carries state from frame to frame; internally 2 latent frames at a time); `frames`
        then picks video frames. `chunk_size` is not used. After a GPU out-of-memory error it retries with
        the VAE's tiling on (`vae.enable_tiling()`), which stays on."""
        vae = self.pipe.vae
        z = (latents / vae.config.scaling_factor).to(vae.device, vae.dtype)  # [B, C, F', h, w]
        video = decode_clip(vae, lambda: vae.decode(z).sample)  # [B, 3, F, H, W] in [-1, 1]
        video = (video.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1)  # [B, F, H, W, 3]
        if frames is not None:
            video = video[:, [int(f) for f in frames]]
        return video

    # ------------------------------------------------------------------ attention

    def attention_modules(self) -> Iterator[tuple[str, str, Any]]:
        """Each block's joint attention `transformer_blocks.<k>.attn1`, twice: as "cross" (video -> text) and as
        "temporal" (video -> video, frame x frame); both views come from the same joint matrix."""
        for k, block in enumerate(self.denoiser.transformer_blocks):
            path = f"transformer_blocks.{k}.attn1"
            yield "cross", path, block.attn1
            yield "temporal", path, block.attn1

    def attention_observers(self, layers, run) -> list:
        memo: dict = {}  # this step's: a layer's other view, when both views of it are wanted
        return [JointObserver(self, kind, name, run, memo) for kind, name, _ in layers]

    def attention_observer(self, kind: str, name: str, module, run):
        return JointObserver(self, kind, name, run, {})

    def attention_resolution(self, path: str, h: int, w: int) -> tuple[int, int]:
        return h // self.patch_size, w // self.patch_size  # the patch grid of one latent frame


# ---------------------------------------------------------------------- joint attention, read in chunks


def _joint_qk(attn, text: torch.Tensor, video: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys [n, heads, T + N, d] of the joint sequence, as CogVideoX's processor computes them."""
    x = torch.cat([text, video], dim=1)  # [n, T + N, D]
    n, heads = x.shape[0], attn.heads
    q, k = attn.to_q(x), attn.to_k(x)  # [n, T + N, heads * d]
    d = k.shape[-1] // heads
    q = q.view(n, -1, heads, d).transpose(1, 2)  # [n, heads, T + N, d]
    k = k.view(n, -1, heads, d).transpose(1, 2)  # [n, heads, T + N, d]
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    if rope is not None:  # rotary embeddings on the video tokens only
        from diffusers.models.embeddings import apply_rotary_emb

        T = text.shape[1]
        q[:, :, T:] = apply_rotary_emb(q[:, :, T:], rope)
        if not attn.is_cross_attention:
            k[:, :, T:] = apply_rotary_emb(k[:, :, T:], rope)
    return q, k


def _rows(q: torch.Tensor, kt: torch.Tensor, scale: float, s: int, e: int) -> torch.Tensor:
    """Attention of the joint sequence's rows s..e, averaged over heads: [n, e - s, T + N] float32.
    `kt` is k^T in float32, contiguous [n, heads, d, T + N] (a transposed view would be copied per chunk)."""
    return ((q[:, :, s:e].float() * scale) @ kt).softmax(-1).mean(1)  # scale the few rows first


def read_joint(attn, text: torch.Tensor, video: torch.Tensor, rope, frames: int, grid: tuple[int, int],
               views=("cross", "temporal")) -> dict[str, torch.Tensor]:
    """The views of one joint attention layer from its inputs (text [n, T, D], video [n, N, D], normed).

    views: any of "cross" [n, F', h', w', T] (video -> text, rows sum to 1), "text_share" [n, F', h', w']
    (the part of each video token's attention that goes to text), "temporal" [n, F', F'], "text_to_video"
    [n, T, F', h', w'] (each text position -> video tokens, renormalized over video) and "text_video_share"
    [n, T] (the part of each text position's attention that goes to video). All float32.
    Rows are computed `_CHUNK // (n * heads * (T + N))` at a time, so the per-head scores never exist whole.
    """
    q, k = _joint_qk(attn, text, video, rope)
    kt = k.transpose(-1, -2).to(torch.float32, memory_format=torch.contiguous_format)  # [n, heads, d, T + N]
    del k
    n, heads, L, _ = q.shape
    T, N, (gh, gw) = text.shape[1], video.shape[1], grid
    hw = gh * gw
    rows = max(1, _CHUNK // (n * heads * L))
    out: dict[str, Any] = {}
    if {"cross", "text_share", "temporal"} & set(views):
        cross, share, temporal = [], [], torch.zeros(n, frames, frames, device=q.device)
        for s in range(T, L, rows):  # video queries
            p = _rows(q, kt, attn.scale, s, min(s + rows, L))  # [n, r, T + N]
            to_text = p[..., :T].sum(-1)  # [n, r]
            share.append(to_text)
            if "cross" in views:
                cross.append(p[..., :T] / to_text[..., None])  # [n, r, T]
            if "temporal" in views:
                per_frame = p[..., T:].unflatten(-1, (frames, hw)).sum(-1)  # [n, r, F']
                per_frame = per_frame / per_frame.sum(-1, keepdim=True)
                query_frame = torch.arange(s - T, s - T + p.shape[1], device=q.device) // hw  # [r]
                temporal.index_add_(1, query_frame, per_frame)
        out["text_share"] = torch.cat(share, 1).view(n, frames, gh, gw)  # [n, F', h', w']
        if cross:
            out["cross"] = torch.cat(cross, 1).view(n, frames, gh, gw, T)  # [n, F', h', w', T]
        out["temporal"] = temporal / hw  # [n, F', F']
    if {"text_to_video", "text_video_share"} & set(views):
        to_video, video_share = [], []
        for s in range(0, T, rows):  # text queries
            p = _rows(q, kt, attn.scale, s, min(s + rows, T))[..., T:]  # [n, r, N]
            total = p.sum(-1)  # [n, r]
            video_share.append(total)
            to_video.append(p / total[..., None])
        out["text_to_video"] = torch.cat(to_video, 1).view(n, T, frames, gh, gw)  # [n, T, F', h', w']
        out["text_video_share"] = torch.cat(video_share, 1)  # [n, T]
    return {name: out[name] for name in views}


def _halve(value, half: bool, n: int):
    """The prompt's half of a guided [uncond, text] batch of n rows (all of it when `half` is False)."""
    return value[n // 2 :] if half and value is not None and value.shape[0] == n else value


class JointObserver:
    """Reads `attn.cross.*` or `attn.temporal.*` of one CogVideoX block from its joint attention.

    When both views of a layer are wanted, the first one measured computes both in one pass and leaves
    the other for the second in `memo`, a dict the step's observers share (the two wrappers see the same
    hidden-states tensor)."""

    def __init__(self, family: CogVideoXFamily, kind: str, name: str, run, memo: dict):
        _, _, F, h, w = run.latents.shape
        self.kind, self.frames, self.memo = kind, F, memo
        self.grid = family.attention_resolution(name, h, w)
        self.other = "temporal" if kind == "cross" else "cross"
        sibling = f"attn.{self.other}.{name.split('.', 2)[2]}"
        self.both = run.trace.wants(sibling) or sibling in set(run.hooks.names())

    def measure(self, attn, x: torch.Tensor, args: tuple, kwargs: dict, half: bool) -> torch.Tensor:
        memo = self.memo.pop("joint", None)
        if memo is not None and memo[0] is x and memo[1] == self.kind:
            return memo[2]
        given = dict(zip(("encoder_hidden_states", "attention_mask", "image_rotary_emb"), args), **kwargs)
        n = x.shape[0]
        text, video = _halve(given["encoder_hidden_states"], half, n), _halve(x, half, n)
        views = (self.kind, self.other) if self.both else (self.kind,)
        got = read_joint(attn, text, video, given.get("image_rotary_emb"), self.frames, self.grid, views)
        if self.both:
            self.memo["joint"] = (x, self.other, got[self.other])
        return got[self.kind]


class _Reader:
    """An attention processor that reads every view of its layer, then computes the output as before."""

    def __init__(self, original, store: dict, key: str, frames: int, grid: tuple[int, int], views):
        self.original, self.store, self.key = original, store, key
        self.frames, self.grid, self.views = frames, grid, views

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        got = read_joint(attn, encoder_hidden_states, hidden_states, image_rotary_emb, self.frames, self.grid,
                         self.views)
        self.store[self.key] = {k: v.cpu() for k, v in got.items()}
        return self.original(attn, hidden_states, encoder_hidden_states, attention_mask=attention_mask,
                             image_rotary_emb=image_rotary_emb)


ALL_VIEWS = ("cross", "text_share", "temporal", "text_to_video", "text_video_share")


@torch.no_grad()
def joint_views(run, step: int = -1, layers=None, views=ALL_VIEWS) -> dict[str, dict[str, torch.Tensor]]:
    """Every view of the joint attention of a recorded step, for the prompt (B = 1): the model call of step
    `step` is made again from `run.trace["step.latents"]` with the prompt's embeddings alone.

    Returns {layer path: {view: tensor}} with the views of `read_joint` (batch dim 1, on the CPU), for
    `layers` (paths like "transformer_blocks.0.attn1"; default all). "text_share" answers how much a video
    token reads the prompt at all; "text_to_video" which video places each word reads.
    """
    fam, pipe = run.pipe.family, run.pipe
    if not isinstance(fam, CogVideoXFamily):
        raise TypeError(f"joint_views reads CogVideoX's joint attention; this run's model is {fam.name}.")
    step = range(len(run.timesteps))[step]
    latents = run.trace.step("step.latents", step).to(pipe.device)  # [1, C, F', h, w]
    _, _, F, h, w = latents.shape
    all_paths = [path for kind, path, _ in fam.attention_modules() if kind == "cross"]
    paths = all_paths if layers is None else [layers] if isinstance(layers, str) else list(layers)
    for p in paths:
        if p not in all_paths:
            raise ValueError(f"{p!r} is not a joint attention layer; they are {', '.join(all_paths)}.")
    store: dict[str, dict[str, torch.Tensor]] = {}
    installed = []
    try:
        for p in paths:
            attn = pipe.denoiser.get_submodule(p)
            installed.append((attn, attn.processor))
            attn.set_processor(_Reader(attn.processor, store, p, F, fam.attention_resolution(p, h, w), views))
        x = run.scheduler.scale_model_input(latents, run.timesteps[step])
        fam.call_model(x, run.timesteps[step], run.text.embeddings)
    finally:
        for attn, original in reversed(installed):
            attn.set_processor(original)
    return {p: store[p] for p in paths}


# ---------------------------------------------------------------------- linear previews


@torch.no_grad()
def fit_preview(vae, latents: torch.Tensor, source: str = ""):
    """Fit a `LinearPreview` for a CogVideoX VAE on its own decode of `latents` [N, C, F', h, w] (scaled).

    The causal VAE makes 1 video frame of latent frame 0 and `temporal_compression_ratio` frames of each
    later one; each latent frame is matched with the mean of its video frames, pooled to the latent grid,
    and least squares finds the [C, 3] matrix and bias.
    """
    from ..preview import least_squares

    N, C, F, h, w = latents.shape
    k = int(vae.config.temporal_compression_ratio)
    video = vae.decode((latents / vae.config.scaling_factor).to(vae.device, vae.dtype)).sample.float().cpu()
    video = (video / 2 + 0.5).clamp(0, 1)  # [N, 3, 1 + k (F' - 1), H, W]
    rest = video[:, :, 1:].unflatten(2, (F - 1, k)).mean(3)  # [N, 3, F' - 1, H, W]
    per_latent = torch.cat([video[:, :, :1], rest], dim=2)  # [N, 3, F', H, W]
    colours = torch.nn.functional.adaptive_avg_pool3d(per_latent, (F, h, w))  # [N, 3, F', h, w]
    X = latents.float().cpu().permute(0, 2, 3, 4, 1).reshape(-1, C).numpy()  # [P, C]
    Y = colours.permute(0, 2, 3, 4, 1).reshape(-1, 3).numpy()  # [P, 3]
    return least_squares(X, Y, source)
