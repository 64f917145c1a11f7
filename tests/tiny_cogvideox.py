"""Tiny CogVideoX components (T5 text encoder, CogVideoXTransformer3DModel, AutoencoderKLCogVideoX), built offline.

The tokenizer is t2v_nb.toy.tiny's T5-style one (no sentencepiece, no hub), 16 positions.
Sizes: 9 frames at 24x16 pixels -> latents [1, 4, 3, 6, 4] (VAE: 4x in time, 4x in space) -> a 3x2 patch
grid per latent frame (patch 2): 18 video tokens after 16 text tokens in each joint attention layer.
"""

from __future__ import annotations

import torch

import t2v_nb
from t2v_nb.toy.tiny import perturb_weights, t5_tokenizer

NAME = "cogvideox"
SCHEDULERS = ("cogvideox-ddim", "cogvideox-dpm")
SAVED = {"scheduler": "cogvideox-dpm", "classes": {"transformer": "CogVideoXTransformer3DModel",
                                                   "scheduler": "CogVideoXDPMScheduler"}}
SMALL = dict(num_frames=9, height=24, width=16, num_inference_steps=3)
TEXT_LENGTH = 16  # the transformer's max_text_seq_length (226 on the real model)

def components(seed: int = 0, scheduler: str = "cogvideox-ddim", rope: bool = True,
               snr_shift_scale: float = 3.0) -> dict:
    """tokenizer, text_encoder, transformer, vae, scheduler at toy size. `rope=True` as CogVideoX-5b
    (rotary position embeddings), False as CogVideoX-2b (sin-cos position embeddings added to the input)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from t2v_nb.schedulers import make_scheduler

    tok = t5_tokenizer(TEXT_LENGTH)
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                           num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    torch.manual_seed(seed + 1)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=32, num_layers=2, sample_width=4, sample_height=6, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=TEXT_LENGTH,
        use_rotary_positional_embeddings=rope)
    perturb_weights(transformer, scale=0.05)  # random init leaves the output layers near zero
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
