"""The public configs of ModelScope text-to-video 1.7B's components, as Python dicts.

Written out from the model repository's `*/config.json` files (`ali-vilab/text-to-video-ms-1.7b`,
diffusers layout), so the real architecture can be built without a download: with random weights,
or on the `meta` device (shapes only, no memory) to count parameters and FLOPs.

    >>> from modelscope_config import build
    >>> with torch.device("meta"):
    ...     unet = build("unet")

ZeroScope v2 576w is a fine-tune of the same architecture (same UNet, text encoder and VAE configs
apart from the UNet's `sample_size`), so its costs follow from these configs at its own latent size.
"""

from __future__ import annotations

UNET_CONFIG = dict(  # diffusers.UNet3DConditionModel, unet/config.json
    sample_size=32, in_channels=4, out_channels=4,
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    cross_attention_dim=1024,
    # Passed on as `num_attention_heads` (see unet_3d_condition.py), which the 3-D blocks divide the
    # channels by: 5, 10, 20 heads of 64 dimensions, as the name says in the end.
    attention_head_dim=64,
    norm_num_groups=32, norm_eps=1e-5, act_fn="silu", downsample_padding=1, mid_block_scale_factor=1,
)

TEXT_ENCODER_CONFIG = dict(  # transformers.CLIPTextModel, text_encoder/config.json (OpenCLIP ViT-H/14 text tower)
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=512, layer_norm_eps=1e-5,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)

VAE_CONFIG = dict(  # diffusers.AutoencoderKL, vae/config.json (the Stable Diffusion VAE)
    in_channels=3, out_channels=3, latent_channels=4, sample_size=256, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), norm_num_groups=32, act_fn="silu", scaling_factor=0.18215,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)

SCHEDULER_CONFIG = dict(  # diffusers.DDIMScheduler, scheduler/scheduler_config.json
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
)

# Sizes the presets generate at, and the latents they give (VAE factor 8, 4 latent channels).
SIZES = {
    "modelscope-1.7b": dict(num_frames=16, height=256, width=256, latents=(1, 4, 16, 32, 32)),
    "zeroscope-v2-576w": dict(num_frames=24, height=320, width=576, latents=(1, 4, 24, 40, 72)),
}

# Parameter counts commonly quoted for these components, roughly (a sanity check of the builds).
EXPECTED_PARAMS = {"unet": 1.4e9, "text_encoder": 0.35e9, "vae": 84e6}


def build(name: str):
    """The component `name` ("unet", "text_encoder", "vae", "scheduler") with its default (random) init.

    Builds on the current default device: wrap in `with torch.device("meta"):` for shapes only.
    """
    if name == "unet":
        from diffusers import UNet3DConditionModel

        return UNet3DConditionModel(**UNET_CONFIG)
    if name == "text_encoder":
        from transformers import CLIPTextConfig, CLIPTextModel

        return CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG))
    if name == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL(**VAE_CONFIG)
    if name == "scheduler":
        from diffusers import DDIMScheduler

        return DDIMScheduler(**SCHEDULER_CONFIG)
    raise ValueError(f"Unknown component {name!r}; expected 'unet', 'text_encoder', 'vae' or 'scheduler'.")


def num_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------- toy-size stand-ins

# ModelScope's UNet class at the toy model's sizes (t2v_nb/toy/components.py: channels (32, 64), one
# layer per block, text width 64; 16 norm groups, where the toy's own UNet now has 8). The toy itself
# uses a UNetMotionModel, which diffusers' TextToVideoSDPipeline cannot run; this one both pipelines can.
TOY_UNET3D_CONFIG = dict(
    sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
    cross_attention_dim=64, attention_head_dim=4, norm_num_groups=16,
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
)


from t2v_nb.toy.components import char_tokenizer  # noqa: E402  (re-exported for callers here)


def toy_ms_components(seed: int = 0, scheduler: str = "dpm++") -> dict:
    """tokenizer, text_encoder, unet, vae, scheduler: ModelScope's classes at the toy's sizes, random weights.

    Text encoder, VAE and scheduler configs are the toy model's (`t2v_nb.toy.components`); the tokenizer
    is the toy's when `open_clip_torch` is installed (it holds CLIP's merges file), else `char_tokenizer`.
    """
    import torch
    from diffusers import UNet3DConditionModel

    from t2v_nb.schedulers import make_scheduler
    from t2v_nb.toy import components as toy

    try:
        tok = toy.build_tokenizer()
    except ImportError:
        tok = char_tokenizer()
    text_encoder = toy.build_text_encoder(len(tok), seed=seed)
    torch.manual_seed(seed + 1)
    unet = UNet3DConditionModel(**TOY_UNET3D_CONFIG)
    vae = toy.build_vae(seed=seed + 2)
    for m in (text_encoder, unet, vae):
        m.eval().requires_grad_(False)
    sched = make_scheduler(scheduler, toy.build_scheduler())
    return {"tokenizer": tok, "text_encoder": text_encoder, "unet": unet, "vae": vae, "scheduler": sched}
