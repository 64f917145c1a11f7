"""Tiny CogVideoX components (T5 text encoder, CogVideoXTransformer3DModel, AutoencoderKLCogVideoX), built offline.

The tokenizer is a T5-style Unigram tokenizer made with the `tokenizers` library ("\u2581word" pieces, a
Metaspace pre-tokenizer, `</s>` appended), so no sentencepiece model and no hub download is needed.
Sizes: 9 frames at 24x16 pixels -> latents [1, 4, 3, 6, 4] (VAE: 4x in time, 4x in space) -> a 3x2 patch
grid per latent frame (patch 2): 18 video tokens after 16 text tokens in each joint attention layer.
"""

from __future__ import annotations

import torch

import t2v_nb

NAME = "cogvideox"
SCHEDULERS = ("cogvideox-ddim", "cogvideox-dpm")
SMALL = dict(num_frames=9, height=24, width=16, num_inference_steps=3)
TEXT_LENGTH = 16  # the transformer's max_text_seq_length (226 on the real model)

_WORDS = ("a red green blue yellow circle square triangle ball cat dog moving left right up down the on in of "
          "and with slowly quickly big small bouncing rolling sky water street night sunset").split()


def t5_tokenizer(max_length: int = TEXT_LENGTH):
    """A T5-style fast tokenizer: <pad>=0, </s>=1, <unk>=2, then whole words and single characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    chars = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in _WORDS]
    vocab += [(c, -5.0) for c in chars] + [("\u2581" + c, -4.0) for c in chars if c not in _WORDS]
    tk = Tokenizer(models.Unigram(vocab, unk_id=2))
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                      special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tk, extra_ids=0, eos_token="</s>", pad_token="<pad>",
                           unk_token="<unk>", model_max_length=max_length)


def components(seed: int = 0, scheduler: str = "cogvideox-ddim", rope: bool = True,
               snr_shift_scale: float = 3.0) -> dict:
    """tokenizer, text_encoder, transformer, vae, scheduler at toy size. `rope=True` as CogVideoX-5b
    (rotary position embeddings), False as CogVideoX-2b (sin-cos position embeddings added to the input)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from t2v_nb.schedulers import make_scheduler

    tok = t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                           num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    torch.manual_seed(seed + 1)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=32, num_layers=2, sample_width=4, sample_height=6, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=TEXT_LENGTH,
        use_rotary_positional_embeddings=rope)
    with torch.no_grad():  # random init leaves the output layers near zero; give every weight some signal
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        down_block_types=("CogVideoXDownBlock3D",) * 3, up_block_types=("CogVideoXUpBlock3D",) * 3,
        temporal_compression_ratio=4, sample_height=24, sample_width=16)
    sched = make_scheduler(scheduler, ddim_scheduler(snr_shift_scale))
    for m in (text_encoder, transformer, vae):
        m.eval().requires_grad_(False)
    return {"tokenizer": tok, "text_encoder": text_encoder, "transformer": transformer, "vae": vae,
            "scheduler": sched}


def ddim_scheduler(snr_shift_scale: float = 3.0):
    """`CogVideoXDDIMScheduler` with CogVideoX's settings (v-prediction, zero terminal SNR, SNR shift, trailing)."""
    from diffusers import CogVideoXDDIMScheduler

    return CogVideoXDDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  clip_sample=False, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                  set_alpha_to_one=True, snr_shift_scale=snr_shift_scale, steps_offset=0,
                                  timestep_spacing="trailing")


def tiny_pipe(**kw) -> t2v_nb.StepwisePipeline:
    return t2v_nb.StepwisePipeline(**components(**kw))


def reference(parts: dict):
    from diffusers import CogVideoXPipeline

    pipe = CogVideoXPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def reference_frames(parts: dict, prompt: str, seed: int, guidance_scale: float, **kw):
    out = reference(parts)(prompt, guidance_scale=guidance_scale, generator=torch.Generator().manual_seed(seed),
                           output_type="np", max_sequence_length=parts["transformer"].config.max_text_seq_length,
                           **kw)
    return out.frames[0]  # [F, H, W, 3]
