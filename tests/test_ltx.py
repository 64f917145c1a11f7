"""LTX-Video on its tiny random twin (tests/tiny_ltx.py): what the contract suite does not cover."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tiny_ltx

from t2v_nb import StepwisePipeline
from t2v_nb.attention import attention_layers
from t2v_nb.families import ltx

PROMPT = "a red circle moving right"
NOISY_DECODE = {"decode_timestep": 0.05, "decode_noise_scale": 0.025}


@pytest.fixture(scope="module")
def pipe():
    return tiny_ltx.tiny_pipe()


@pytest.mark.parametrize("size", [tiny_ltx.SMALL, tiny_ltx.OTHER])
def test_frames_equal_ltxpipeline_with_decode_noise_at_two_sizes(size):
    """Two token counts (12 and 18) give two shifts mu; the decoder gets noise from the run's generator."""
    ref = tiny_ltx.reference_frames(tiny_ltx.components(), PROMPT, 3, 4.0, **NOISY_DECODE, **size)
    pipe = StepwisePipeline(**tiny_ltx.components(), defaults={"fps": tiny_ltx.FPS, **NOISY_DECODE})
    run = pipe.start(PROMPT, seed=3, guidance_scale=4.0, **size).finish(progress=False)
    got = run.decode().frames
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5
    assert run.record()["decode"] == {"timestep": 0.05, "noise_scale": 0.025}
    assert np.array_equal(run.decode().frames, got)  # the decode noise is drawn from a copy of the run's generator


def test_the_shift_depends_on_the_token_count(pipe):
    small = pipe.start(PROMPT, seed=0, **tiny_ltx.SMALL)
    other = pipe.start(PROMPT, seed=0, **dict(tiny_ltx.OTHER, num_inference_steps=3))
    assert not torch.allclose(small.scheduler.sigmas, other.scheduler.sigmas)
    config = pipe.scheduler.config
    assert ltx.LTXFamily.shift_mu(1024, config) == pytest.approx(0.95)  # base_image_seq_len -> base_shift
    assert ltx.LTXFamily.shift_mu(4096, config) == pytest.approx(2.05)  # max_image_seq_len -> max_shift


def test_hook_points_are_the_packed_latents_unpacked():
    """LTXPipeline's callbacks see packed [B, N, C] latents; the trace holds the same values as [B, C, F', h, w]."""
    size = tiny_ltx.SMALL
    seen = []

    def callback(p, i, t, kw):
        seen.append(kw["latents"].clone())
        return {}

    tiny_ltx.reference(tiny_ltx.components())(PROMPT, guidance_scale=4.0, frame_rate=tiny_ltx.FPS,
                                              generator=torch.Generator().manual_seed(0), output_type="latent",
                                              callback_on_step_end=callback, **size)
    run = tiny_ltx.tiny_pipe().start(PROMPT, seed=0, guidance_scale=4.0, **size).finish(progress=False)
    after = run.trace["step.next_latents"]  # [S, 1, C, F', h, w]
    assert after.shape[2:] == (8, 2, 2, 3)
    for i, packed in enumerate(seen):
        assert packed.shape == (1, 12, 8)
        torch.testing.assert_close(ltx.pack(after[i]), packed, atol=1e-6, rtol=0)
        torch.testing.assert_close(ltx.unpack(packed, after[i].shape), after[i], atol=1e-6, rtol=0)


def test_pred_x0_is_the_flow_x0(pipe):
    run = pipe.start(PROMPT, seed=0, **tiny_ltx.SMALL).finish(progress=False)
    tr = run.trace
    for i in range(run.num_steps):
        sigma = run.scheduler.sigmas[i]
        expected = tr.step("step.latents", i) - sigma * tr.step("step.noise_pred", i)  # x0 = x_t - sigma v
        torch.testing.assert_close(tr.step("step.pred_x0", i), expected, atol=1e-6, rtol=1e-5)


def test_decode_input_shows_the_noise_and_timestep():
    pipe = StepwisePipeline(**tiny_ltx.components(), defaults={"fps": tiny_ltx.FPS, **NOISY_DECODE})
    latents = pipe.start(PROMPT, seed=0, **tiny_ltx.SMALL).latents
    clean, none = StepwisePipeline(**tiny_ltx.components()).family.decode_input(latents)
    noisy, t = pipe.family.decode_input(latents, torch.Generator().manual_seed(1))
    assert none.tolist() == [0.0]  # decode_timestep 0 by default: the clean latents, timestep 0
    assert t.tolist() == pytest.approx([0.05])
    noise = (noisy - 0.975 * clean) / 0.025  # z' = (1 - s) z + s eps
    expected = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(noise, expected, atol=1e-4, rtol=1e-4)


def test_a_vae_without_timestep_conditioning_takes_no_timestep():
    pipe = StepwisePipeline(**tiny_ltx.components(timestep_conditioning=False), defaults=NOISY_DECODE)
    latents = pipe.start(PROMPT, seed=0, **tiny_ltx.SMALL).latents
    assert pipe.family.decode_input(latents)[1] is None and pipe.family.decode_settings() == {}


def test_attention_maps_in_chunks_equal_whole_and_padding_gets_no_attention(pipe, monkeypatch):
    names = pipe.attention_names()
    whole = pipe.start(PROMPT, seed=0, record=names, **tiny_ltx.SMALL)
    whole.step()
    monkeypatch.setattr(ltx, "ATTENTION_CHUNK", 1)  # one query token at a time
    rows = pipe.start(PROMPT, seed=0, record=names, **tiny_ltx.SMALL)
    rows.step()
    for name in names:
        torch.testing.assert_close(rows.trace[name], whole.trace[name], atol=1e-6, rtol=1e-5)
    n = len(whole.text.tokens)  # the prompt's tokens; padding after them
    cross = whole.trace["attn.cross.transformer_blocks.0.attn2"][0]  # [1, F', h, w, L]
    assert cross[..., n:].sum(-1).max() < 1e-3
    layers = attention_layers(pipe, tiny_ltx.SMALL["height"], tiny_ltx.SMALL["width"], tiny_ltx.SMALL["num_frames"])
    assert layers["attn.temporal.transformer_blocks.1.attn1"]["shape"] == (1, 2, 2)
    assert layers["attn.cross.transformer_blocks.1.attn2"]["shape"] == (1, 2, 2, 3, 128)


def test_the_preview_fit_is_colour_true_for_a_linear_decoder(pipe, monkeypatch):
    """Where the decoder's colours are linear in the latents, the fit recovers them: frame 0 and each next 8 frames
    matched with their latent frame, 32 x 32 pixels with their latent pixel, the channels in order."""
    g = torch.Generator().manual_seed(0)
    M, b = torch.randn(8, 3, generator=g) * 0.05, torch.tensor([0.1, -0.2, 0.3])
    fam = pipe.family

    def linear_decode(z, temb=None, return_dict=False):  # [B, C, F', h, w] -> [B, 3, F, H, W] in [-1, 1]
        rgb = torch.einsum("bcfhw,cd->bdfhw", z, M) + b[:, None, None, None]
        index = [fam.latent_index(f) for f in range(fam.decoded_frames(z.shape[2]))]
        return (rgb[:, :, index].repeat_interleave(32, 3).repeat_interleave(32, 4),)

    monkeypatch.setattr(pipe.vae, "decode", linear_decode)
    train, test = torch.randn(6, 8, 2, 2, 3, generator=g), torch.randn(2, 8, 2, 2, 3, generator=g)
    preview = fam.fit_preview(train, "tiny")
    video = fam.decode(test)  # [2, 9, 64, 96, 3]
    expected = torch.stack([video[:, :1].mean(1), video[:, 1:].mean(1)], 1)[:, :, ::32, ::32]  # one pixel per block
    np.testing.assert_allclose(preview(test), expected.numpy(), atol=1e-5)
    assert pipe.preview is None  # ComfyUI's factors are for 128 channels, not the twin's 8


def test_ltxv_preview_is_comfyui_s_factors_mapped_to_0_1():
    prev = ltx.ltxv_preview()
    assert prev.matrix.shape == (128, 3)
    np.testing.assert_allclose(prev.matrix[0], np.array([1.1202e-02, -6.3815e-04, -1.0021e-02]) / 2, rtol=1e-6)
    np.testing.assert_allclose(prev.matrix[127], np.array([-1.4605e-02, -6.7032e-03, 3.9675e-03]) / 2, rtol=1e-6)
    np.testing.assert_allclose(prev.bias, np.array([-0.0571, -0.1657, -0.2512]) / 2 + 0.5, rtol=1e-6)


@pytest.mark.parametrize("kw, message", [
    (dict(num_frames=10), r"8k \+ 1.*got 10; try num_frames=9 or num_frames=17"),
    (dict(height=48), r"multiples of 32.*height is 48; try height=64"),
])
def test_bad_sizes_name_the_nearest_valid_values(pipe, kw, message):
    with pytest.raises(ValueError, match=message):
        pipe.check_inputs(prompt="a", **dict(tiny_ltx.SMALL, **kw))


def test_attention_maps_equal_the_softmax_of_diffusers_own_queries_and_keys(pipe, monkeypatch):
    """The observers' maps against softmax(q k^T / sqrt(d) + mask) of the q, k that LTX's processor itself hands to
    the attention function (normed, RoPE applied), averaged over heads, the prompt's half of the batch."""
    from diffusers.models.transformers import transformer_ltx

    seen, real = [], transformer_ltx.dispatch_attention_fn

    def spy(query, key, value, attn_mask=None, **kw):  # query, key [B, S, heads, d]
        q, k = query.float().transpose(1, 2), key.float().transpose(1, 2)
        scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + (0 if attn_mask is None else attn_mask.float())
        seen.append(scores.softmax(-1).mean(1)[1:])  # [1, S, Lk]: the prompt's row of [uncond, text]
        return real(query, key, value, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(transformer_ltx, "dispatch_attention_fn", spy)
    run = pipe.start(PROMPT, seed=0, record="all", guidance_scale=4.0, **tiny_ltx.SMALL)
    run.step()
    F, h, w = run.latents.shape[2:]
    for k in range(2):  # per block: attn1, then attn2
        self_attn, cross = seen[2 * k], seen[2 * k + 1]
        temporal = self_attn.view(1, F, h * w, F, h * w).sum(-1).mean(2)  # [1, F', F']
        torch.testing.assert_close(run.trace[f"attn.temporal.transformer_blocks.{k}.attn1"][0], temporal,
                                   atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(run.trace[f"attn.cross.transformer_blocks.{k}.attn2"][0],
                                   cross.view(1, F, h, w, -1), atol=1e-6, rtol=1e-5)
