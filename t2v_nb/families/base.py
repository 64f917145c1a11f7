"""`Family`: the seam between the one denoising loop and what each kind of model does its own way.

The contract. The loop (`t2v_nb.pipeline`) holds no fact about any model; it asks the family, in this order:

    components    `slots` / `optional_slots` (slot -> allowed (library, class)), `accepts`, `prepare`,
                  `denoiser_slot` ("unet" or "transformer"); `StepwisePipeline(unet=... | transformer=...)`
    loading       `text_first` (a big text encoder loaded only to encode, on a GPU),
                  `assembled_scheduler_config` (over a base repository's scheduler, for a preset whose
                  `extra` parts come from other repositories); `t2v_nb.load` asks these, presets do not
                  carry them
    defaults      `default_settings()`: all of height, width, num_frames, num_inference_steps,
                  guidance_scale, fps (a preset or model directory overrides them)
    inputs        `check_size` (ValueErrors that name the nearest valid values), `max_frames`
    text          `clean_prompt`, `text_length`, `tokenize` -> `TokenizedText`, `encode(ids, mask)`
    token display `word(token)`: what a learner reads ("red</w>", "\u2581red" -> "red", via `split_token`,
                  which `t2v_nb.viz` shows too), `is_special`
    schedulers    `schedulers`: short names it adds; `set_timesteps(scheduler, n, latent_shape, device)`:
                  how the schedule is set, e.g. with the pipeline's own `sigmas` and a size-dependent
                  shift `mu` (LTX-Video); `scheduler_step`: one `scheduler.step` -> (x_{t-1}, x0)
    latents       `latent_shape`, `latent_dtype`, `initial_noise` (in the diffusers pipeline's draw order),
                  `to_scheduler` / `from_scheduler` (the layout the scheduler sees), `after_step`
    one step      `predict(...)` -> (uncond or None, text) in [B, C, F', h, w] (batched or not, marking
                  each model call with `branch(...)` for attention capture); `guide(uncond, text, g)`:
                  how the branches combine (default uncond + g (text - uncond))
    decoding      `decode(latents, frames, chunk_size, generator)` -> [B, F, H, W, 3] in [0, 1]
                  (`generator`: the run's, for a decoder that draws noise), `decode_settings()` for the
                  run's record, `encode_video`, `decoded_frames`, `latent_index`
    attention     `attention_modules()` -> (kind, path, module), `attention_resolution`,
                  `attention_observers(layers, run)` / `attention_observer(...)`: objects whose
                  `measure(attn, x, args, kwargs, half)` reads one layer's map in bounded memory
                  (`ATTENTION_CHUNK` scores at a time)
    previews      `default_preview()`: linear latent -> RGB factors for this VAE (a cited reference), or
                  None; fits go through `t2v_nb.preview.least_squares`

The defaults here are those of a latent video UNet in the Stable Diffusion line (ModelScope,
AnimateDiff): a CLIP tokenizer and text encoder (77 tokens, no attention mask), latents
[B, C, F, h, w] with no temporal compression, one batched model call for both guidance branches
([uncond, text]), a 2-D VAE that decodes frame by frame after dividing by `scaling_factor`, and
attention layers found by walking the UNet's attention processors (`t2v_nb.families.unet`). A family
for another kind of model overrides what differs: read one family module next to this one (`wan` for a
diffusion transformer with cross-attention, `ltx` for one with packed tokens and a denoising decoder);
`t2v_nb.families.causal` has what causal video VAEs share.

Every method works on the pipeline's components (`self.pipe.tokenizer`, `self.denoiser`, ...); none
keeps per-run state (caches that depend only on sizes are fine), so one family object serves every run
of its pipeline. What a run must carry lives on the run's own scheduler or in the step's observers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings
from typing import Any, Callable, ContextManager, Iterator

import torch

__all__ = ["Family", "TokenizedText", "nearest_multiple", "split_token", "ATTENTION_CHUNK"]

# How the tokenizers of the families mark words (one place: `Family.word` and the token tables of `t2v_nb.viz`)
WORD_END = "</w>"  # CLIP's BPE: "red</w>" ends a word
WORD_START = "\u2581"  # SentencePiece (T5, UMT5): "\u2581red" starts a word
# the tokenizers' markers, told from their text alone: CLIP's <|startoftext|>, T5's </s> and <pad>, BERT's [CLS]
# short names for the start and end markers of the tokenizers the families use (CLIP's, T5's), for token tables
MARKER_NAMES = {"<|startoftext|>": "<start>", "<|endoftext|>": "<end>", "</s>": "<end>"}
SPECIAL_TOKEN = re.compile(r"^<\|.*\|>$|^<(s|/s|pad|bos|eos)>$|^\[(CLS|SEP|PAD)\]$")


def split_token(token: str) -> tuple[str, str]:
    """(the word part, "end" | "start" | "") of a token: "red</w>" -> ("red", "end") (CLIP), "\u2581red" ->
    ("red", "start") (T5), "ed" -> ("ed", ""). A lone marker is a word of its own: "\u2581" -> ("\u2581", "")."""
    if token.endswith(WORD_END) and len(token) > len(WORD_END):
        return token[: -len(WORD_END)], "end"
    if token.startswith(WORD_START) and len(token) > len(WORD_START):
        return token[len(WORD_START):], "start"
    return token, ""


def token_joins(token: str) -> tuple[str, str]:
    """`split_token`, with a lone T5 word start read as the start of a word of nothing: "▁" -> ("", "start")."""
    return ("", "start") if token == WORD_START else split_token(token)


# The most float32 attention scores (rows x heads x keys) an observer computes at once: bounds the extra memory
# of measuring one layer (64 MiB), whatever the video size.
ATTENTION_CHUNK = 2**24

Branch = Callable[[str], ContextManager]  # branch("text" | "uncond" | "both") marks a model call for attention capture


@dataclasses.dataclass
class TokenizedText:
    """One prompt, tokenized as its family's pipeline does it."""

    ids: torch.Tensor  # [1, L] token ids, padded/truncated to the encoder's length L
    mask: torch.Tensor  # [1, L] 1 for real tokens, 0 for padding
    tokens: list[str]  # the tokens the model reads, special markers included, padding not
    truncated: str  # the part of the user's text beyond L tokens ("" when all fit)


def nearest_multiple(value: int, multiple: int, smallest: int | None = None) -> int:
    """The multiple of `multiple` nearest to `value`, at least `smallest` (default `multiple`)."""
    return max(smallest or multiple, round(value / multiple) * multiple)


class Family:
    """How one kind of text-to-video model does each part of the loop. Bound to one pipeline."""

    name = "base"
    # diffusers pipeline classes whose saved directories this family loads (model_index.json "_class_name")
    pipeline_classes: tuple[str, ...] = ()
    # slot -> the (library, class) pairs allowed in it; slot names are the diffusers pipeline's
    slots: dict[str, set[tuple[str, str]]] = {}
    optional_slots: dict[str, set[tuple[str, str]]] = {}
    denoiser_slot = "unet"
    temporal_factor = 1  # video frames per latent frame
    # Transformers whose attention runs over frames, not pixels (diffusers class names).
    temporal_transformer_types: tuple[str, ...] = ()
    # short scheduler names this family adds to `t2v_nb.schedulers.SCHEDULERS`: name -> (diffusers class, config)
    schedulers: dict[str, tuple[str, dict]] = {}
    # Settings `t2v_nb.load` puts over the base repository's scheduler config when a preset assembles the model from
    # parts of several repositories (`Preset.extra`, into slots of `optional_slots`): the base's is then another
    # model's (AnimateDiff: a Stable Diffusion image model's).
    assembled_scheduler_config: dict[str, Any] = {}
    # Whether, on a GPU, `t2v_nb.load` keeps a hub preset's text encoder out of memory until `start()` encodes
    # (`t2v_nb.models.TextFirstEncoder`): for families whose full-size encoder (T5-XXL, UMT5-XXL: ~11 GB in float16)
    # cannot sit beside the denoiser on a free Colab T4. `load(..., text_first=...)` decides for any other source.
    text_first = False

    def __init__(self, pipe):
        self.pipe = pipe

    # ------------------------------------------------------------------ components

    @classmethod
    def accepts(cls, classes: dict[str, str]) -> bool:
        """True when `classes` ({slot: class name}) fill this family's required slots with allowed classes."""
        for slot, allowed in cls.slots.items():
            if classes.get(slot) not in {c for _, c in allowed}:
                return False
        for slot, allowed in cls.optional_slots.items():
            if classes.get(slot) is not None and classes[slot] not in {c for _, c in allowed}:
                return False
        return True

    @classmethod
    def allowed(cls, slot: str) -> set[tuple[str, str]]:
        """The (library, class) pairs that may fill `slot` ({} when the family has no such slot)."""
        return cls.slots.get(slot) or cls.optional_slots.get(slot) or set()

    @classmethod
    def prepare(cls, parts: dict[str, Any]) -> dict[str, Any]:
        """Turn loaded parts into the pipeline's components (as the diffusers pipeline's __init__ does)."""
        return parts

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_slot)

    # ------------------------------------------------------------------ sizes

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent pixel, along height and width."""
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (the VAE's factor; a UNet's own downsampling comes on top
        for the smallest size only, since its convolutions pad odd sizes)."""
        return self.spatial_factor

    @property
    def smallest_size(self) -> int:
        blocks = getattr(self.denoiser.config, "block_out_channels", (0,))
        return self.spatial_factor * 2 ** (len(blocks) - 1)

    def default_size(self) -> tuple[int, int]:
        """(height, width) the model was made for, from its config (`sample_size` latent pixels)."""
        sample = self.denoiser.config.get("sample_size") or 32
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        return int(sample) * self.spatial_factor, int(sample) * self.spatial_factor

    def default_settings(self) -> dict:
        """`start()`'s defaults when neither a preset nor the model directory gives them: all of height, width,
        num_frames, num_inference_steps, guidance_scale and fps (the pipeline refuses a family that leaves one
        out). Here only the size (`default_size`); each family adds the rest, as its model card gives them."""
        height, width = self.default_size()
        return {"height": height, "width": width}

    @property
    def max_frames(self) -> int | None:
        """The most frames the model can take, when it has a fixed number of frame positions."""
        return None

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise a ValueError, with the nearest valid values, for sizes this model cannot make."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}.")
        if self.max_frames and num_frames > self.max_frames:
            raise ValueError(f"num_frames={num_frames} is more than this model knows frame positions for "
                             f"({self.max_frames}); try num_frames={self.max_frames}.")
        m, smallest = self.size_multiple, self.smallest_size
        for name, v in (("height", height), ("width", width)):
            if v % m:
                raise ValueError(f"`height` and `width` must be multiples of {m} (the VAE's downsampling), "
                                 f"but {name} is {v}; try {name}={nearest_multiple(v, m, smallest)}.")
            if v < smallest:
                raise ValueError(f"{name}={v} is too small for this model: the smallest size is {smallest}.")

    def latent_frames(self, num_frames: int) -> int:
        """F': latent frames for `num_frames` video frames."""
        return num_frames

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, F', h, w) of the latents for a video of this size."""
        f = self.spatial_factor
        return (self.denoiser.config.in_channels, self.latent_frames(num_frames), height // f, width // f)

    # ------------------------------------------------------------------ stage 1: text

    @property
    def text_length(self) -> int:
        """L: how many token positions the text encoder reads (77 for CLIP)."""
        return int(self.pipe.tokenizer.model_max_length)

    def clean_prompt(self, text: str) -> str:
        """The text as the family's pipeline hands it to the tokenizer."""
        return text

    def tokenize(self, text: str) -> TokenizedText:
        """Token ids padded/truncated to L (as `padding="max_length", truncation=True`), in one tokenizer call:
        the offsets tell where a cut falls in the user's own text."""
        tok, n_max = self.pipe.tokenizer, self.text_length
        full = tok(text, return_offsets_mapping=True, verbose=False)
        row, truncated = list(full["input_ids"]), ""
        if len(row) > n_max:
            # Keep the first n_max - 1 tokens and the end marker, as truncation does. The first token that
            # did not fit sits at index n_max - 1; quote the user's own text from there.
            offsets = full["offset_mapping"]
            truncated = text[offsets[n_max - 1][0]:]
            row = row[: n_max - 1] + [row[-1]]
        n = len(row)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = torch.tensor([row + [pad] * (n_max - n)])  # [1, L]
        mask = torch.zeros_like(ids)
        mask[:, :n] = 1  # [1, L]
        return TokenizedText(ids, mask, tok.convert_ids_to_tokens(row), truncated)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids [B, L] -> embeddings [B, L, D] as the denoiser reads them (CLIP: no mask)."""
        return self.pipe.text_encoder(ids)[0]

    def word(self, token: str) -> str:
        """A token as a learner reads it: CLIP's word end "red</w>" -> "red", T5's word start "\u2581red" -> "red"."""
        return split_token(token)[0]

    def is_special(self, token: str) -> bool:
        return token in set(self.pipe.tokenizer.all_special_tokens)

    # ------------------------------------------------------------------ stage 2: latents and the model

    def set_timesteps(self, scheduler, num_inference_steps: int, latent_shape: tuple, device) -> None:
        """Set the run's scheduler to `num_inference_steps` steps, as the family's pipeline does it. `latent_shape`
        is (C, F', h, w): a schedule may depend on the size (LTX-Video shifts its sigmas by `mu`, a function of
        the token count, and passes its own `sigmas`). Default: `scheduler.set_timesteps(n, device=device)`."""
        scheduler.set_timesteps(num_inference_steps, device=device)

    def guide(self, uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
        """Classifier-free guidance: the two branches' outputs [B, C, F', h, w] -> the one the scheduler gets.
        Default (every family so far): uncond + scale * (cond - uncond)."""
        return uncond + scale * (cond - uncond)

    def latent_dtype(self) -> torch.dtype:
        """The dtype the latents are kept in between steps (ModelScope: the model's; Wan: float32)."""
        return self.pipe.dtype

    def initial_noise(self, shape: tuple, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
        """Gaussian noise [B, C, F', h, w] drawn from `generator` on the CPU, in the order the diffusers
        pipeline draws it (so a seed gives diffusers' video)."""
        return torch.randn(shape, generator=generator, dtype=dtype)  # [B, C, F, h, w]

    def predict(self, latents: torch.Tensor, t, text, *, guided: bool, scheduler, branch: Branch):
        """The model's outputs for both guidance branches: (uncond or None, text), each [B, C, F', h, w].

        `text` is the run's `TextFeatures`, `scheduler` the run's scheduler, `branch(name)` a context
        manager that marks each model call for attention capture: "text", "uncond", or "both" for a
        batched [uncond, text] call. Default: one batched call, as diffusers' UNet pipelines do.
        """
        if guided:
            x = torch.cat([latents] * 2)  # [2B, C, F, h, w]
            emb = torch.cat([text.negative_embeddings, text.embeddings])  # [2B, L, D]
        else:
            x, emb = latents, text.embeddings
        x = scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x
        with branch("both" if guided else "text"):
            out = self.call_model(x, t, emb)
        return tuple(out.chunk(2)) if guided else (None, out)

    def call_model(self, x: torch.Tensor, t, embeddings: torch.Tensor) -> torch.Tensor:
        """One denoiser call: [B', C, F, h, w] latents + [B', L, D] text -> [B', C, F, h, w]."""
        return self.denoiser(x, t, encoder_hidden_states=embeddings, return_dict=False)[0]

    def after_step(self, next_latents: torch.Tensor, text) -> torch.Tensor:
        """x_{t-1} as the family's pipeline keeps it between steps (default: as the scheduler returns it)."""
        return next_latents

    def scheduler_step(self, scheduler, model_output: torch.Tensor, t, sample: torch.Tensor, i: int,
                       params: set[str], *, generator=None, eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """One `scheduler.step`, called exactly once -> (x_{t-1}, predicted x0), both in the scheduler's layout.
        `params` are the keyword names `scheduler.step` takes. Default: `t2v_nb.schedulers.step`."""
        from ..schedulers import step

        return step(scheduler, model_output, t, sample, i, params, generator=generator, eta=eta)

    def to_scheduler(self, x: torch.Tensor) -> torch.Tensor:
        """The layout in which the family's pipeline hands latents to `scheduler.step` (default: as is)."""
        return x

    def from_scheduler(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Back from the scheduler's layout to [B, C, F', h, w] (`like` has that shape)."""
        return x

    # ------------------------------------------------------------------ stage 3: decoding

    def decoded_frames(self, latent_frames: int) -> int:
        """Video frames that `latent_frames` latent frames decode to."""
        return latent_frames

    def latent_index(self, frame: int) -> int:
        """The latent frame that video frame `frame` comes from (a latent preview or an attention map has
        one picture per latent frame)."""
        return frame

    def _pixels(self, video) -> torch.Tensor:
        """A video [F, H, W, 3] or [B, F, H, W, 3] in [0, 1] (numpy or torch) -> float [B, F, H, W, 3], checked."""
        x = torch.as_tensor(video)
        if x.dim() == 4:
            x = x[None]
        if x.dim() != 5 or x.shape[-1] != 3:
            raise ValueError(f"video must be [F, H, W, 3] or [B, F, H, W, 3] RGB, got shape {tuple(x.shape)}.")
        x = x.float()
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"video values must be in [0, 1], got [{x.min().item():.3g}, {x.max().item():.3g}].")
        B, F, H, W, _ = x.shape
        self.check_size(F, H, W)
        return x

    def encode_video(self, video) -> torch.Tensor:
        """A video [F, H, W, 3] or [B, F, H, W, 3] in [0, 1] -> the loop's latents [B, C, F', h, w] (the VAE
        posterior's mean, scaled as the denoiser sees them): what `decode` turns back into frames."""
        vae = self.pipe.vae
        x = self._pixels(video)
        B, F = x.shape[:2]
        pixels = x.flatten(0, 1).permute(0, 3, 1, 2).to(vae.device, vae.dtype) * 2 - 1  # [B*F, 3, H, W] in [-1, 1]
        z = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor  # [B*F, C, h, w]
        return z.unflatten(0, (B, F)).permute(0, 2, 1, 3, 4).to(self.latent_dtype())  # [B, C, F, h, w]

    def decode(self, latents: torch.Tensor, frames=None, chunk_size: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, C, F, h, w] latents -> float32 [B, F, H, W, 3] in [0, 1]: frame by frame with the 2-D VAE,
        `chunk_size` frames at a time (all at once by default; one at a time after a GPU out-of-memory error).
        `generator` is for decoders that draw noise (LTX-Video); this one does not."""
        vae = self.pipe.vae
        B, C, F, h, w = latents.shape
        index = list(range(F)) if frames is None else [int(f) for f in frames]
        z = latents[:, :, index] / vae.config.scaling_factor
        z = z.permute(0, 2, 1, 3, 4).reshape(B * len(index), C, h, w).to(vae.device, vae.dtype)  # [B*F, C, h, w]
        chunk = chunk_size or len(z)
        try:
            images = torch.cat([vae.decode(z[k : k + chunk]).sample for k in range(0, len(z), chunk)])
        except torch.OutOfMemoryError:
            if chunk == 1:
                raise
            torch.cuda.empty_cache()
            warnings.warn(f"Out of GPU memory decoding {chunk} frames at once; decoding one frame at a time.")
            images = torch.cat([vae.decode(z[k : k + 1]).sample for k in range(len(z))])
        images = images.reshape(B, len(index), *images.shape[1:]).float()  # [B, F, 3, H, W] in [-1, 1]
        return (images / 2 + 0.5).clamp(0, 1).permute(0, 1, 3, 4, 2)  # [B, F, H, W, 3]

    def decode_settings(self) -> dict:
        """The decoder's own settings a run's record should show ({} when it has none; LTX-Video: its decode
        timestep and decode noise scale)."""
        return {}

    # ------------------------------------------------------------------ attention

    def attention_modules(self) -> Iterator[tuple[str, str, Any]]:
        """(kind, module path, module) of each cross- or temporal-attention layer, in the model's order."""
        temporal_prefixes: list[str] = []
        for path, module in self.denoiser.named_modules():
            if type(module).__name__ in self.temporal_transformer_types:
                temporal_prefixes.append(path + ".")
            if not (hasattr(module, "processor") and hasattr(module, "to_q") and hasattr(module, "to_k")):
                continue  # not an attention layer
            if any(path.startswith(p) for p in temporal_prefixes):
                yield "temporal", path, module  # attn1 and attn2 of a temporal transformer: frames x frames
            elif getattr(module, "is_cross_attention", False):
                yield "cross", path, module  # a spatial transformer's attn2: pixels x tokens
            # spatial self-attention (pixels x pixels) is not a hook point

    def attention_observers(self, layers: list[tuple[str, str, Any]], run) -> list:
        """One observer per (kind, hook name, module) in `layers`, for one step of `run` (made anew each step, so
        observers of the same step may share what they compute, as CogVideoX's two views of one layer do).
        Default: `attention_observer` for each."""
        return [self.attention_observer(kind, name, module, run) for kind, name, module in layers]

    def attention_observer(self, kind: str, name: str, module, run):
        """An object whose `measure(attn, hidden_states, args, kwargs, half)` returns one layer's map for the
        hook point `name` (`half`: keep the prompt's half of a batched [uncond, text] call)."""
        from .unet import UNetObserver

        return UNetObserver(kind, name, run)

    def attention_resolution(self, path: str, h: int, w: int) -> tuple[int, int]:
        """The (h_l, w_l) grid of the layer at `path` for latents of h x w."""
        unet = self.denoiser
        downs = [getattr(b, "downsamplers", None) is not None for b in getattr(unet, "down_blocks", [])]
        ups = [getattr(b, "upsamplers", None) is not None for b in getattr(unet, "up_blocks", [])]
        parts = path.split(".")
        level = 0  # transformer_in and anything before the first block: the full latent grid
        if parts[0] == "down_blocks":
            level = sum(downs[: int(parts[1])])
        elif parts[0] == "mid_block":
            level = sum(downs)
        elif parts[0] == "up_blocks":
            level = sum(downs) - sum(ups[: int(parts[1])])
        for _ in range(level):  # a stride-2 conv with padding 1 gives ceil(n / 2)
            h, w = -(-h // 2), -(-w // 2)
        return h, w

    # ------------------------------------------------------------------ previews

    def default_preview(self):
        """Linear latent -> RGB factors known for this family's VAE, or None."""
        return None

    @torch.no_grad()
    def fit_preview(self, latents: torch.Tensor, source: str = ""):
        """Fit a `LinearPreview` on this VAE's own decodes (`decode`) of the loop's latents [N, C, F', h, w]: each
        latent frame is matched with the mean of the video frames it decodes to (`latent_index`), averaged down
        to the latent grid, and `t2v_nb.preview.least_squares` finds the [C, 3] matrix and bias. For any family;
        `t2v_nb.preview.fit_linear_preview` adds weighting options for 2-D VAEs."""
        from ..preview import least_squares

        N, C, F, h, w = latents.shape
        video = self.decode(latents.to(self.pipe.device)).cpu()  # [N, F_video, H, W, 3] in [0, 1]
        owner = torch.tensor([self.latent_index(f) for f in range(video.shape[1])])  # [F_video]: its latent frame
        per_latent = torch.stack([video[:, owner == k].mean(1) for k in range(F)], 1)  # [N, F', H, W, 3]
        colours = torch.nn.functional.adaptive_avg_pool2d(per_latent.flatten(0, 1).permute(0, 3, 1, 2), (h, w))
        X = latents.float().cpu().permute(0, 2, 3, 4, 1).reshape(-1, C).numpy()  # [P, C]
        Y = colours.permute(0, 2, 3, 1).reshape(-1, 3).numpy()  # [P, 3]
        return least_squares(X, Y, source)


@contextlib.contextmanager
def no_branch(name: str):
    """The `branch` of a call made without attention capture: marks nothing."""
    yield
