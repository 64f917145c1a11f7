"""The Wan 2.1 family on tiny random components: what the contract suite (test_families.py) does not cover."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tiny_wan

import t2v_nb
from t2v_nb import StepwisePipeline
from t2v_nb.families import wan as wan_family
from t2v_nb.schedulers import make_scheduler, scheduler_name

PROMPT = "a red circle moving right"
SMALL = tiny_wan.SMALL


@pytest.fixture(scope="module")
def pipe():
    return tiny_wan.tiny_pipe()


@pytest.fixture(scope="module")
def run(pipe):
    return pipe.start(PROMPT, seed=0, guidance_scale=5.0, record="all", **SMALL).finish(progress=False)


# ---------------------------------------------------------------- the same frames as diffusers' WanPipeline


@pytest.mark.parametrize("encoder", ["umt5", "t5"])
def test_same_frames_as_wan_pipeline_with_a_negative_prompt(encoder):
    kw = dict(SMALL, guidance_scale=4.0)
    ref = tiny_wan.reference_frames(tiny_wan.components(encoder=encoder), PROMPT, 3, negative_prompt="blurry", **kw)
    got = StepwisePipeline(**tiny_wan.components(encoder=encoder)).generate(
        PROMPT, seed=3, negative_prompt="blurry", progress=False, **kw).frames
    assert got.shape == ref.shape == (9, 32, 32, 3)
    assert np.abs(got - ref).max() < 1e-5


def test_guidance_changes_the_video_so_the_equality_tests_see_it(pipe):
    a = pipe.generate(PROMPT, seed=0, guidance_scale=1.0, progress=False, **SMALL).frames
    b = pipe.generate(PROMPT, seed=0, guidance_scale=5.0, progress=False, **SMALL).frames
    assert np.abs(a - b).max() > 1e-3


def test_wan_2_2_is_refused_with_a_clear_error(tmp_path):
    import json

    index = {"_class_name": "WanPipeline", "tokenizer": ["transformers", "T5TokenizerFast"],
             "text_encoder": ["transformers", "UMT5EncoderModel"], "transformer": ["diffusers", "WanTransformer3DModel"],
             "transformer_2": ["diffusers", "WanTransformer3DModel"], "vae": ["diffusers", "AutoencoderKLWan"],
             "scheduler": ["diffusers", "UniPCMultistepScheduler"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))  # no weights: nothing may load
    with pytest.raises(ValueError, match="Wan 2.2.*transformer_2"):
        t2v_nb.load(str(tmp_path), device="cpu")
    parts = tiny_wan.components()
    with pytest.raises(ValueError, match="Wan 2.2"):
        StepwisePipeline(**parts, transformer_2=parts["transformer"])


# ---------------------------------------------------------------- text


def test_token_table_mask_and_zero_padded_embeddings(pipe, run):
    text = run.text
    assert text.words == ["a", "red", "circle", "moving", "right", "</s>"] and text.special[-1]
    n = len(text.tokens)
    assert text.length == 512 == pipe.family.text_length  # WanPipeline's max_sequence_length, not the tokenizer's
    assert text.mask.shape == (1, 512) and int(text.mask.sum()) == n
    emb = text.embeddings  # [1, 512, D]
    assert torch.equal(emb[:, n:], torch.zeros_like(emb[:, n:]))  # trimmed to the real length, then zeros
    assert (emb[:, :n].abs().sum(-1) > 0).all()
    unpadded = pipe.text_encoder(text.input_ids, text.mask).last_hidden_state[:, :n]
    assert torch.equal(emb[:, :n], unpadded)


def test_prompts_are_cleaned_as_wan_pipeline_cleans_them(pipe):
    assert pipe.family.clean_prompt("  a  red &amp;amp; circle\n moving ") == "a red & circle moving"
    run = pipe.start("  a   red circle ", seed=0, **SMALL)
    assert run.text.words == ["a", "red", "circle", "</s>"]


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("frames, hint", [(8, "num_frames=5 or num_frames=9"), (10, "num_frames=9 or num_frames=13")])
def test_frame_counts_that_are_not_4k_plus_1_are_refused(pipe, frames, hint):
    with pytest.raises(ValueError, match=hint):
        pipe.start(PROMPT, seed=0, **{**SMALL, "num_frames": frames})


@pytest.mark.parametrize("size, hint", [(dict(height=40), "height=32"), (dict(width=56), "width=64"),
                                        (dict(height=24), "height=32")])
def test_sizes_that_are_not_multiples_of_16_are_refused_before_any_model_work(pipe, size, hint, monkeypatch):
    monkeypatch.setattr(pipe.text_encoder, "forward", lambda *a, **k: pytest.fail("the text encoder ran"))
    with pytest.raises(ValueError, match=f"multiples of 16.*{hint}"):
        pipe.start(PROMPT, seed=0, **{**SMALL, **size})


def test_latent_shape_and_causal_frame_count(pipe, run):
    fam = pipe.family
    assert fam.latent_shape(81, 480, 832) == (16, 21, 60, 104)
    assert [fam.latent_frames(f) for f in (1, 5, 9, 81)] == [1, 2, 3, 21]
    assert [fam.decoded_frames(f) for f in (1, 2, 3, 21)] == [1, 5, 9, 81]
    assert [fam.latent_index(f) for f in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]
    assert run.latents.dtype == torch.float32 and run.latents.shape == (1, 16, 3, 4, 4)


def test_decoding_some_frames_equals_the_same_frames_of_the_whole_clip(pipe, run):
    whole = pipe.decode_latents(run.latents)  # [1, 9, 32, 32, 3]
    assert whole.shape == (1, 9, 32, 32, 3)
    some = pipe.decode_latents(run.latents, frames=[0, 3, -1])  # latent prefix up to the last frame needed
    torch.testing.assert_close(some, whole[:, [0, 3, 8]], atol=1e-6, rtol=0)
    first = pipe.decode_latents(run.latents, frames=[2])  # only latent frames 0 and 1 decoded
    torch.testing.assert_close(first, whole[:, [2]], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="out of range"):
        pipe.decode_latents(run.latents, frames=[9])


# ---------------------------------------------------------------- flow matching: x0 = x_t - sigma v


@pytest.mark.parametrize("name", ["unipc", "euler", "dpm++"])
def test_pred_x0_is_x_t_minus_sigma_v_for_every_flow_scheduler(pipe, name):
    run = pipe.start(PROMPT, seed=0, guidance_scale=5.0, scheduler=name, **SMALL)
    assert run.pipe.prediction_type == "flow" and scheduler_name(run.scheduler) == name
    sigmas = run.scheduler.sigmas
    steps = []
    while not run.done:
        s = run.step()
        steps.append(s)
        expected = s.latents - sigmas[s.i] * s.noise_pred.float()
        torch.testing.assert_close(s.pred_x0, expected, atol=1e-6, rtol=0)
        if name == "unipc":  # UniPC keeps its own x0 prediction (predict_x0=True) from this step
            torch.testing.assert_close(s.pred_x0, run.scheduler.model_outputs[-1], atol=1e-6, rtol=0)
    if name == "euler":  # the last Euler step goes to sigma = 0: x_{t-1} = x_t - sigma v = x0
        assert float(sigmas[-1]) == 0.0
        torch.testing.assert_close(steps[-1].next_latents, steps[-1].pred_x0, atol=1e-6, rtol=0)


def test_flow_short_names_keep_the_shift_and_unknown_ones_are_refused():
    base = tiny_wan.make_scheduler("unipc", shift=5.0)
    euler = make_scheduler("euler", base)
    assert type(euler).__name__ == "FlowMatchEulerDiscreteScheduler" and euler.config.shift == 5.0
    back = make_scheduler("unipc", euler)
    assert back.config.prediction_type == "flow_prediction" and back.config.flow_shift == 5.0
    assert back.config.use_flow_sigmas
    same = make_scheduler("unipc", base)
    assert {k: v for k, v in same.config.items() if not k.startswith("_")} == {
        k: v for k, v in base.config.items() if not k.startswith("_")}
    with pytest.raises(ValueError, match="flow-matching.*euler"):
        make_scheduler("ddim", base)
    from diffusers import DDIMScheduler

    assert type(make_scheduler("euler", DDIMScheduler())).__name__ == "EulerDiscreteScheduler"  # as before


# ---------------------------------------------------------------- attention


def test_attention_maps_have_the_documented_shapes(pipe, run):
    S, F, h, w = SMALL["num_inference_steps"], 3, 2, 2  # 3 latent frames, 4x4 latents -> 2x2 patches
    names = pipe.attention_names()
    assert names == ["attn.temporal.blocks.0.attn1", "attn.cross.blocks.0.attn2",
                     "attn.temporal.blocks.1.attn1", "attn.cross.blocks.1.attn2"]
    for name in names:
        value = run.trace[name]
        shape = (S, 1, F, h, w, 512) if ".cross." in name else (S, 1, F, F)
        assert value.shape == shape, name
        torch.testing.assert_close(value.sum(-1), torch.ones(shape[:-1]), atol=1e-5, rtol=0)


def _full_probs(attn, x, rotary):
    """softmax(q k^T / sqrt(d)) of a self-attention layer, all of it: [B, heads, N, N]."""
    q = wan_family._rope(wan_family.WanObserver._heads(attn, attn.norm_q(attn.to_q(x))), *rotary)
    k = wan_family._rope(wan_family.WanObserver._heads(attn, attn.norm_k(attn.to_k(x))), *rotary)
    q, k = q.transpose(1, 2), k.transpose(1, 2)  # [B, heads, N, d]
    return (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)


def test_temporal_map_is_the_chunked_reduction_of_the_layer_s_real_attention(pipe, monkeypatch):
    attn = pipe.transformer.blocks[1].attn1
    seen = {}

    def keep(module, args, kwargs, output):
        seen.update(x=args[0], rotary=args[3], out=output)

    handle = attn.register_forward_hook(keep, with_kwargs=True)
    try:
        run = pipe.start(PROMPT, seed=0, guidance_scale=1.0, record=["attn.temporal.blocks.1.attn1"],
                         **{**SMALL, "num_inference_steps": 1})
        monkeypatch.setattr(wan_family, "_CHUNK", 1)  # one query token per chunk
        run.step()
    finally:
        handle.remove()
    p = _full_probs(attn, seen["x"], seen["rotary"])  # [1, heads, N, N]
    v = wan_family.WanObserver._heads(attn, attn.to_v(seen["x"])).transpose(1, 2)  # [1, heads, N, d]
    out = attn.to_out[0]((p @ v).transpose(1, 2).flatten(2))
    torch.testing.assert_close(out, seen["out"], atol=1e-5, rtol=1e-4)  # these are the probabilities the layer used
    F, hw = 3, 4
    frames = p.mean(1).view(1, F, hw, F, hw).sum(-1).mean(2)  # [1, F', F']
    torch.testing.assert_close(run.trace["attn.temporal.blocks.1.attn1"][0], frames, atol=1e-6, rtol=0)


def test_cross_attention_reaches_the_zero_padding(run):
    n = len(run.text.tokens)
    cross = run.trace["attn.cross.blocks.0.attn2"].float()  # [S, 1, F', h', w', 512]
    padding = cross[..., n:].sum(-1)  # WanPipeline passes no mask to cross-attention
    assert (padding > 0).all() and (padding < 1).all()
    # the 506 zero rows become one constant key after the text projection: each gets the same share
    torch.testing.assert_close(cross[..., n:], cross[..., n:n + 1].expand_as(cross[..., n:]), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- preview


def test_wan21_preview_is_comfyui_s_factors_mapped_to_0_1(pipe, run):
    prev = pipe.preview
    assert prev is not None and prev.matrix.shape == (16, 3)
    m = np.asarray(wan_family._WAN21_RGB, np.float32)
    np.testing.assert_allclose(prev.matrix, m / 2)
    np.testing.assert_allclose(prev.bias, np.asarray(wan_family._WAN21_BIAS) / 2 + 0.5)
    z = torch.zeros(1, 16, 1, 1, 1)
    z[0, 0] = 1.0  # one unit of channel 0: ComfyUI's [-1, 1] RGB row 0 plus bias, halved and shifted
    np.testing.assert_allclose(prev(z)[0, 0, 0, 0], (m[0] + wan_family._WAN21_BIAS) / 2 + 0.5, atol=1e-6)
    assert prev(run.trace["step.pred_x0"][-1]).shape == (1, 3, 4, 4, 3)  # every latent frame


# ---------------------------------------------------------------- preset and defaults


def test_the_preset_s_defaults_are_valid_wan_sizes(pipe):
    from t2v_nb.models import PRESETS

    p = PRESETS["wan2.1-t2v-1.3b"]
    assert p.source == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" and "Apache-2.0" in p.notes
    # 4k+1 frames, multiples of 16 (the tiny transformer has too few RoPE positions for 480x832 itself)
    assert (p.num_frames - 1) % 4 == 0 and p.height % 16 == 0 and p.width % 16 == 0
    with pytest.raises(ValueError, match="RoPE positions"):
        pipe.family.check_size(p.num_frames, p.height, p.width)
    assert make_scheduler(p.scheduler, tiny_wan.make_scheduler("unipc")).config.flow_shift == 3.0


def test_defaults_without_a_preset_are_wan_pipeline_s_and_frame_positions_are_bounded(pipe):
    assert {k: pipe.defaults[k] for k in ("height", "width", "num_frames", "num_inference_steps")} == {
        "height": 480, "width": 832, "num_frames": 81, "num_inference_steps": 50}
    assert pipe.max_frames == 125  # the tiny transformer's RoPE knows 32 frame positions: 4 x 31 + 1 frames
    with pytest.raises(ValueError, match="num_frames=125"):
        pipe.start(PROMPT, seed=0, **{**SMALL, "num_frames": 129})


def test_text_first_loads_the_encoder_only_to_encode_and_gives_the_same_video(tmp_path, monkeypatch):
    # The free-Colab plan for Wan's ~11 GB UMT5: load, encode, free; then the transformer works alone.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_wan.reference(tiny_wan.components()).save_pretrained(tmp_path / "wan")
    resident = t2v_nb.load(str(tmp_path / "wan"), device="cpu")
    first = t2v_nb.load(str(tmp_path / "wan"), device="cpu", text_first=True)
    assert first.text_encoder.model is None  # nothing loaded yet
    kw = dict(tiny_wan.SMALL, seed=0, guidance_scale=5.0, negative_prompt="blurry", progress=False)
    expected = resident.generate("a red circle", **kw).frames
    got = first.generate("a red circle", **kw).frames
    assert np.array_equal(got, expected)
    assert first.text_encoder.model is None and first.text_encoder.loads == 1  # prompt + negative: one load
    first.generate("a blue square", **kw)
    assert first.text_encoder.loads == 2


def test_half_precision_transformer_keeps_its_float32_modules_and_runs():
    """As `from_pretrained(torch_dtype=torch.bfloat16)` leaves it: the modules the class keeps in float32 stay
    float32 (Wan's `scale_shift_table` is its first parameter), the rest is bfloat16. The pipeline must compute in
    bfloat16 (found on an H200: taking the first parameter's dtype fed float32 latents to the half-precision
    patch embedding, which raised)."""
    parts = tiny_wan.components()
    tr = parts["transformer"].to(torch.bfloat16)
    for name, p in tr.named_parameters():
        if set(tr._keep_in_fp32_modules) & set(name.split(".")):
            p.data = p.data.float()
    assert next(tr.parameters()).dtype == torch.float32  # the trap: the first parameter is a float32 one
    pipe = StepwisePipeline(**parts)
    assert pipe.dtype == torch.bfloat16
    run = pipe.start(PROMPT, seed=0, guidance_scale=5.0, **dict(SMALL, num_inference_steps=2)).finish(progress=False)
    assert run.latents.dtype == torch.float32 and torch.isfinite(run.latents).all()
