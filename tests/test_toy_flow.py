"""toy-shapes-flow: Wan 2.1's classes, tiny, built offline; its training steps; its export for WanPipeline."""

import json
import os

import numpy as np
import pytest
import torch

from t2v_nb.toy import data
from t2v_nb.toy import flow_components as fc
from t2v_nb.toy import train_flow



def test_parts_build_with_matching_sizes():
    tok = fc.build_tokenizer()
    te = fc.build_text_encoder(len(tok))
    vae = fc.build_vae()
    tr = fc.build_transformer()
    assert type(te).__name__ == "UMT5EncoderModel" and type(vae).__name__ == "AutoencoderKLWan"
    assert type(tr).__name__ == "WanTransformer3DModel"
    assert not any(p.requires_grad for p in te.parameters())  # frozen at its seeded random init
    assert tr.config.in_channels == vae.config.z_dim == len(vae.config.latents_mean)
    assert tr.config.text_dim == te.config.d_model
    assert fc.param_count(tr) < 1_500_000 and fc.param_count(vae) < 1_000_000 and fc.param_count(te) < 100_000
    # Same seed, same weights: the frozen text encoder is reproducible from its seed alone.
    te2 = fc.build_text_encoder(len(tok))
    assert all(torch.equal(a, b) for a, b in zip(te.parameters(), te2.parameters()))


def test_tokenizer_round_trips_offline(tmp_path):
    from transformers import AutoTokenizer

    tok = fc.build_tokenizer()
    ids = tok("a red circle moving right").input_ids
    assert tok.convert_ids_to_tokens(ids) == ["\u2581a", "\u2581red", "\u2581circle", "\u2581moving", "\u2581right", "</s>"]
    assert tok.decode(ids, skip_special_tokens=True) == "a red circle moving right"
    assert tok("").input_ids == [tok.eos_token_id]
    unknown = tok("zebra").input_ids  # not a caption word: spelled in letters, never an error
    assert len(unknown) > 2 and tok.decode(unknown, skip_special_tokens=True) == "zebra"
    padded = tok("a blue square going up", padding="max_length", max_length=fc.TEXT_LENGTH)
    assert len(padded.input_ids) == fc.TEXT_LENGTH and sum(padded.attention_mask) == 6
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert again("a blue square going up").input_ids == tok("a blue square going up").input_ids


def test_encoding_is_causal_so_eight_frames_come_from_nine():
    vae = fc.build_vae()
    clips = train_flow._to_clips(data.sample_batch(np.random.default_rng(0), 1, "all", 8)[0])  # [1, 3, 8, H, W]
    padded = train_flow._padded(clips)  # [1, 3, 9, H, W]
    assert padded.shape[2] == 9 and torch.equal(padded[:, :, 8], clips[:, :, 7])
    other = padded.clone()
    other[:, :, 8] = -1.0
    with torch.no_grad():
        a = vae.encode(padded).latent_dist.mean
        b = vae.encode(other).latent_dist.mean
    assert a.shape == (1, 4, 9, 64 // fc.SPATIAL, 64 // fc.SPATIAL)
    assert torch.allclose(a[:, :, :8], b[:, :, :8]) and not torch.allclose(a[:, :, 8], b[:, :, 8])


def test_training_steps_lower_the_flow_loss():
    torch.manual_seed(0)
    model = fc.build_transformer(seed=0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 4, 8, 8, 8, generator=g).clamp(-1, 1)  # [B, C, F, h, w], model space
    noise = torch.randn(x0.shape, generator=g)
    s = train_flow.shifted_sigmas(torch.rand(4, generator=g))
    emb = torch.randn(4, fc.TEXT_LENGTH, fc.TEXT_ENCODER_CONFIG["d_model"], generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    before = train_flow.flow_loss(model, x0, noise, s, emb).item()
    for _ in range(25):
        loss = train_flow.flow_loss(model, x0, noise, s, emb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = train_flow.flow_loss(model, x0, noise, s, emb).item()
    assert after < 0.8 * before, (before, after)


def test_shifted_sigmas_push_towards_noise():
    u = torch.linspace(0, 1, 11)
    s = train_flow.shifted_sigmas(u, shift=3.0)
    assert s[0] == 0 and s[-1] == 1 and torch.all(s[1:-1] > u[1:-1]) and torch.all(s.diff() > 0)


def _fake_workdir(path):
    """A work directory with untrained parts, in the layout the training stages write."""
    vae = fc.build_vae()
    state = {"step": 3, "seconds": 6.0, "done": True}
    torch.save({"model": vae.state_dict(), "opt": None, "state": state}, os.path.join(path, "vae.pt"))
    torch.save({"mean": torch.zeros(1), "std": torch.zeros(1), "clip": torch.zeros(1),
                "latents_mean": [0.1, -0.2, 0.3, 0.0], "latents_std": [0.5, 0.6, 0.7, 0.8]},
               os.path.join(path, "latents.pt"))
    live, ema = fc.build_transformer(seed=1), fc.build_transformer(seed=2)
    torch.save({"model": live.state_dict(), "ema": ema.state_dict(), "opt": None,
                "state": {"step": 5, "seconds": 60.0}}, os.path.join(path, "transformer.pt"))
    return ema


def _check_pipeline_dir(path, ema=None):
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    with open(os.path.join(path, "model_index.json")) as f:
        index = json.load(f)
    defaults = index["t2v_nb_defaults"]
    assert (defaults["height"], defaults["width"], defaults["num_frames"]) == (64, 64, 8)
    if ema is not None:
        assert all(torch.equal(a, b) for a, b in zip(pipe.transformer.state_dict().values(), ema.state_dict().values()))
    frames = train_flow.generate(pipe, "a red circle moving right", seed=0, num_inference_steps=2)
    assert frames.shape == (8, 64, 64, 3) and np.isfinite(frames).all()
    assert frames.min() >= 0 and frames.max() <= 1
    preview = json.load(open(os.path.join(path, "preview.json")))
    assert np.asarray(preview["matrix"]).shape == (4, 3) and len(preview["bias"]) == 3
    assert "(z - latents_mean) / latents_std" in preview["source"]
    return pipe


def test_export_round_trips_through_wan_pipeline(tmp_path):
    work, out = tmp_path / "work", tmp_path / "model"
    work.mkdir()
    ema = _fake_workdir(str(work))
    train_flow.export(str(work), str(out))
    pipe = _check_pipeline_dir(str(out), ema)
    assert pipe.vae.config.latents_std == [0.5, 0.6, 0.7, 0.8]  # the cache's statistics, in Wan's config field
    assert json.load(open(out / "model_index.json"))["training"]["transformer_steps"] == 5
