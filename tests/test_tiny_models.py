"""t2v_nb.toy.tiny: tiny random Wan, CogVideoX and LTX-Video pipelines, built offline, with the real models' layouts."""

from __future__ import annotations

import pytest
import torch

from t2v_nb.toy.tiny import COGVIDEOX_TEXT_LENGTH, LTX_TEXT_LENGTH, tiny_pipeline

SMALL = dict(num_frames=9, height=32, width=32, num_inference_steps=2)


@pytest.fixture(scope="module", params=["wan", "cogvideox"])
def pipe(request):
    return tiny_pipeline(request.param)


def test_family_defaults_and_latent_shape(pipe):
    assert pipe.family.name in ("wan", "cogvideox")
    assert pipe.prediction_type == ("flow" if pipe.family.name == "wan" else "v_prediction")
    run = pipe.start("a red ball rolling left", seed=0)
    assert tuple(run.latents.shape) == (1, 16, 5, 8, 8)  # 17 frames -> 5 latent frames, 64x64 -> 8x8
    assert pipe.family.latent_frames(17) == 5 and pipe.family.decoded_frames(5) == 17


def test_runs_and_decodes_the_real_frame_count(pipe):
    video = pipe.generate("a blue car", seed=1, progress=False, **SMALL)
    assert video.frames.shape == (9, 32, 32, 3)
    assert torch.isfinite(torch.from_numpy(video.frames)).all()
    assert video.frames.std() > 0.01  # random, but not blank


def test_text_layout(pipe):
    run = pipe.start("a red ball", seed=0, num_inference_steps=1)
    assert run.text.words[:3] == ["a", "red", "ball"]
    n = int(run.text.mask.sum())
    emb = run.text.embeddings  # [1, L, D]
    if pipe.family.name == "wan":
        assert emb.shape[1] == 512
        assert (emb[0, n:] == 0).all() and (emb[0, :n].abs().sum(-1) > 0).all()
    else:
        assert emb.shape[1] == COGVIDEOX_TEXT_LENGTH
        assert (emb[0, n:].abs().sum(-1) > 0).all()  # no mask: the padding is encoded too


def test_attention_maps_have_the_patch_grid(pipe):
    run = pipe.start("a red ball", seed=0, record="all", **SMALL).finish(progress=False)
    cross = [n for n in run.trace.names() if n.startswith("attn.cross.")]
    temporal = [n for n in run.trace.names() if n.startswith("attn.temporal.")]
    assert len(cross) == len(temporal) == 2
    L = 512 if pipe.family.name == "wan" else COGVIDEOX_TEXT_LENGTH
    assert tuple(run.trace[cross[0]].shape[1:]) == (1, 3, 2, 2, L)  # [B, F', h/2, w/2, L] per step
    assert torch.allclose(run.trace[cross[0]].float().sum(-1), torch.ones(1), atol=1e-3)
    assert tuple(run.trace[temporal[0]].shape[1:]) == (1, 3, 3)


def test_same_seed_same_weights():
    a, b = tiny_pipeline("wan", seed=3), tiny_pipeline("wan", seed=3)
    for (name, p), q in zip(a.transformer.named_parameters(), b.transformer.parameters()):
        assert torch.equal(p, q), name


def test_bad_family():
    with pytest.raises(ValueError, match="'wan', 'cogvideox', 'ltx'"):
        tiny_pipeline("modelscope")


def test_tiny_ltx_has_the_real_latent_layout_and_decodes():
    """128 latent channels, 8 frames x 32 x 32 pixels per voxel (1:192), one token per voxel, 128 text positions,
    a size-dependent shift and a timestep-conditioned decoder, as LTX-Video 0.9.1."""
    pipe = tiny_pipeline("ltx")
    fam = pipe.family
    assert fam.name == "ltx" and pipe.prediction_type == "flow"
    assert (fam.temporal_factor, fam.spatial_factor, pipe.vae.config.latent_channels) == (8, 32, 128)
    assert pipe.vae.config.timestep_conditioning and pipe.defaults["fps"] == 25.0
    run = pipe.start("a red ball rolling left", seed=0, num_inference_steps=4).finish(progress=False)
    assert tuple(run.latents.shape) == (1, 128, 3, 4, 6)  # 17 frames at 128x192
    assert run.text.embeddings.shape[1] == LTX_TEXT_LENGTH
    video = run.decode()
    assert video.frames.shape == (17, 128, 192, 3) and video.frames.std() > 0.01
    other = pipe.start("a red ball rolling left", seed=0, num_frames=9, height=64, width=64, num_inference_steps=4)
    assert not torch.allclose(run.scheduler.sigmas, other.scheduler.sigmas)  # another token count, another shift
