"""CogVideoX on tiny components: diffusers equality, loading, joint attention views, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiny_cogvideox as tiny

from t2v_nb import StepwisePipeline
from t2v_nb.families import cogvideox as cog

PROMPT = "a red circle moving right"


@pytest.fixture(scope="module")
def pipe():
    return tiny.tiny_pipe()


@pytest.mark.parametrize("scheduler", tiny.SCHEDULERS)
@pytest.mark.parametrize("guidance_scale", [1.0, 6.0])
@pytest.mark.parametrize("rope", [True, False], ids=["rope-5b", "sincos-2b"])
def test_same_frames_as_diffusers(scheduler, guidance_scale, rope):
    parts = tiny.components(scheduler=scheduler, rope=rope)
    ref = tiny.reference_frames(parts, PROMPT, 3, guidance_scale, **tiny.SMALL)
    got = StepwisePipeline(**tiny.components(scheduler=scheduler, rope=rope)).generate(
        PROMPT, seed=3, guidance_scale=guidance_scale, progress=False, **tiny.SMALL).frames
    assert got.shape == ref.shape == (9, 24, 16, 3)
    assert np.abs(got - ref).max() < 1e-5 and ref.std() > 1e-3


def test_text_length_and_defaults_come_from_the_configs(pipe):
    assert pipe.family.text_length == tiny.TEXT_LENGTH == pipe.transformer.config.max_text_seq_length
    assert pipe.defaults["num_frames"] == 9 and pipe.defaults["guidance_scale"] == 6.0
    assert (pipe.defaults["height"], pipe.defaults["width"]) == (24, 16)  # sample_height/width x VAE factor
    run = pipe.start(PROMPT, seed=0, **tiny.SMALL)
    assert run.text.input_ids.shape == (1, tiny.TEXT_LENGTH) and run.text.words[:3] == ["a", "red", "circle"]
    assert run.text.tokens[-1] == "</s>" and run.latents.shape == (1, 4, 3, 6, 4)  # 9 frames -> 3 latent frames


@pytest.mark.parametrize("scheduler", tiny.SCHEDULERS)
def test_pred_x0_is_the_schedulers_v_prediction_x0_with_the_shifted_alphas(scheduler):
    pipe = tiny.tiny_pipe(scheduler=scheduler)
    run = pipe.start(PROMPT, seed=0, **tiny.SMALL)
    a_bar = run.scheduler.alphas_cumprod  # after the SNR shift (snr_shift_scale=3)
    plain = tiny.components(snr_shift_scale=1.0)["scheduler"].alphas_cumprod
    assert not torch.allclose(a_bar, plain)
    for _ in range(2):
        step = run.step()
        a = a_bar[step.t]
        want = a.sqrt() * step.latents - (1 - a).sqrt() * step.noise_pred  # x0 = sqrt(a) x_t - sqrt(1 - a) v
        torch.testing.assert_close(step.pred_x0, want, atol=1e-5, rtol=1e-5)


def test_cogvideox_1_5_is_refused_with_a_clear_message():
    from diffusers import CogVideoXTransformer3DModel

    parts = tiny.components()
    parts["transformer"] = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=32, num_layers=1, sample_width=4, sample_height=6, sample_frames=9, patch_size=2,
        patch_size_t=2, max_text_seq_length=tiny.TEXT_LENGTH, use_rotary_positional_embeddings=True)
    with pytest.raises(ValueError, match="CogVideoX 1.5"):
        StepwisePipeline(**parts)


@pytest.mark.parametrize("kw, message", [
    (dict(num_frames=8), r"4k \+ 1.*got 8; try num_frames=5 or num_frames=9"),
    (dict(num_frames=10), r"try num_frames=9 or num_frames=13"),
    (dict(num_frames=0), r"got 0"),
    (dict(height=20), r"multiples of 8.*height is 20; try height=16 or 24"),
    (dict(width=12), r"multiples of 8.*width is 12; try width=8 or 16"),
    (dict(width=4), r"width is 4; try width=8"),
])
def test_bad_frame_counts_and_sizes_name_the_nearest_valid_values(pipe, kw, message):
    with pytest.raises(ValueError, match=message):
        pipe.start(PROMPT, seed=0, **{**tiny.SMALL, **kw})


# ---------------------------------------------------------------------- joint attention


def _full_joint(attn, text, video, rope):
    """The whole joint attention matrix [n, T + N, T + N], averaged over heads (the naive way, for checking)."""
    q, k = cog._joint_qk(attn, text, video, rope)
    return (q.float() @ k.float().transpose(-1, -2) * attn.scale).softmax(-1).mean(1)


def test_chunked_views_equal_the_full_matrix(pipe, monkeypatch):
    torch.manual_seed(0)
    attn = pipe.transformer.transformer_blocks[0].attn1
    T, F, gh, gw = tiny.TEXT_LENGTH, 3, 3, 2
    text, video = torch.randn(1, T, 32), torch.randn(1, F * gh * gw, 32)
    rope = pipe.family.rotary_embedding(6, 4, F, "cpu")
    monkeypatch.setattr(cog, "_CHUNK", 2 * 2 * (T + F * gh * gw) * 5)  # 5 rows at a time: many chunks
    got = cog.read_joint(attn, text, video, rope, F, (gh, gw), cog.ALL_VIEWS)
    P = _full_joint(attn, text, video, rope)[0]  # [T + N, T + N]
    vt, vv, tv = P[T:, :T], P[T:, T:], P[:T, T:]
    torch.testing.assert_close(got["text_share"].flatten(), vt.sum(-1))
    torch.testing.assert_close(got["cross"].reshape(-1, T), vt / vt.sum(-1, keepdim=True))
    per_frame = vv.reshape(F, gh * gw, F, gh * gw).sum(-1)  # [F, hw, F]: query token -> key frame
    torch.testing.assert_close(got["temporal"][0], (per_frame / per_frame.sum(-1, keepdim=True)).mean(1))
    torch.testing.assert_close(got["text_to_video"].reshape(T, -1), tv / tv.sum(-1, keepdim=True))
    torch.testing.assert_close(got["text_video_share"][0], tv.sum(-1))


def test_capture_shapes_sums_and_the_video_is_bitwise_unchanged(pipe):
    plain = pipe.generate(PROMPT, seed=0, progress=False, **tiny.SMALL).frames
    run = pipe.start(PROMPT, seed=0, record="all", **tiny.SMALL).finish(progress=False)
    assert np.array_equal(run.decode().frames, plain)
    names = pipe.attention_names()
    assert names[:2] == ["attn.cross.transformer_blocks.0.attn1", "attn.temporal.transformer_blocks.0.attn1"]
    cross, temporal = run.trace[names[0]], run.trace[names[1]]
    assert cross.shape == (3, 1, 3, 3, 2, tiny.TEXT_LENGTH) and temporal.shape == (3, 1, 3, 3)
    torch.testing.assert_close(cross.sum(-1), torch.ones(cross.shape[:-1]))
    torch.testing.assert_close(temporal.sum(-1), torch.ones(temporal.shape[:-1]))
    only_cross = pipe.start(PROMPT, seed=0, record=[names[0]], **tiny.SMALL).finish(progress=False)
    assert torch.equal(only_cross.trace[names[0]], cross)  # one view alone = the same numbers as both at once
    assert np.array_equal(only_cross.decode().frames, plain)


def test_joint_views_text_share_and_the_reverse_view(pipe):
    run = pipe.start(PROMPT, seed=0, guidance_scale=1.0, record="all", **tiny.SMALL).finish(progress=False)
    views = cog.joint_views(run, step=1)
    assert list(views) == [f"transformer_blocks.{k}.attn1" for k in range(2)]
    v = views["transformer_blocks.1.attn1"]
    # unguided, the recomputed call is the run's own call: the hook's views are the same
    torch.testing.assert_close(v["cross"], run.trace.step("attn.cross.transformer_blocks.1.attn1", 1).float())
    torch.testing.assert_close(v["temporal"], run.trace.step("attn.temporal.transformer_blocks.1.attn1", 1).float())
    share = v["text_share"]
    assert share.shape == (1, 3, 3, 2) and (share > 0).all() and (share < 1).all()
    assert v["text_to_video"].shape == (1, tiny.TEXT_LENGTH, 3, 3, 2)
    torch.testing.assert_close(v["text_to_video"].sum((2, 3, 4)), torch.ones(1, tiny.TEXT_LENGTH))
    assert v["text_video_share"].shape == (1, tiny.TEXT_LENGTH)
    with pytest.raises(ValueError, match="not a joint attention layer"):
        cog.joint_views(run, layers="transformer_blocks.9.attn1")


def test_fit_preview_on_the_tiny_vae(pipe):
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 3, 6, 4)
    preview = cog.fit_preview(pipe.vae, latents, "tiny")
    assert preview.matrix.shape == (4, 3) and preview.bias.shape == (3,)
    assert preview(latents).shape == (2, 3, 6, 4, 3)
    assert pipe.preview is None  # no factors ship for CogVideoX's VAE


def test_decode_retries_in_tiles_after_running_out_of_memory(pipe, monkeypatch):
    run = pipe.start(PROMPT, seed=0, **tiny.SMALL).finish(progress=False)
    plain = run.decode().frames
    vae, real, calls = pipe.vae, pipe.vae.decode, []

    def decode_once_oom(z, *a, **kw):
        calls.append(vae.use_tiling)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("simulated")
        return real(z, *a, **kw)

    monkeypatch.setattr(vae, "decode", decode_once_oom)
    # tiles as big as the clip (diffusers' tiling gives wrong sizes for tiles of a few latent pixels; at the real
    # VAE's 240x360 tiles it keeps 480x720, 320x480, 256x256: checked on the meta device)
    monkeypatch.setattr(vae, "tile_sample_min_height", 24)
    monkeypatch.setattr(vae, "tile_sample_min_width", 16)
    with pytest.warns(UserWarning, match="tiles"):
        frames = run.decode().frames
    assert calls == [False, True] and frames.shape == plain.shape
    np.testing.assert_allclose(frames, plain, atol=1e-6)
    vae.disable_tiling()


def test_interrupt_resume_and_branch_with_cogvideox_dpm_which_keeps_its_previous_x0():
    pipe = tiny.tiny_pipe(scheduler="cogvideox-dpm")
    kw = dict(tiny.SMALL, num_inference_steps=4)
    plain = pipe.start(PROMPT, seed=0, **kw).finish(progress=False)
    pending = [2]

    def interrupt(v, ctx):
        if ctx.step in pending:
            pending.remove(ctx.step)
            raise KeyboardInterrupt

    run = pipe.start(PROMPT, seed=0, hooks={"step.next_latents": interrupt}, **kw)
    with pytest.raises(KeyboardInterrupt):
        run.finish(progress=False)
    assert run.i == 2
    assert torch.equal(run.finish(progress=False).latents, plain.latents)
    again = plain.branch(2).finish(progress=False)  # from step 2 with nothing changed: the same run
    assert torch.equal(again.latents, plain.latents)
    other = plain.branch(2, guidance_scale=2.0).finish(progress=False)
    assert not torch.equal(other.latents, plain.latents)


def test_the_familys_fit_preview_equals_fit_preview(pipe):
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 3, 6, 4)
    a, b = pipe.family.fit_preview(latents), cog.fit_preview(pipe.vae, latents)
    np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-4)
    np.testing.assert_allclose(a.bias, b.bias, atol=1e-4)
