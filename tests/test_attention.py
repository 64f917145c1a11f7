"""Attention capture: names, shapes, exactness, no effect on the video, and the trace readers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SMALL, tiny_pipe

from t2v_nb.families import unet
from t2v_nb.attention import attention_layers, attention_points, capture, temporal_matrix, word_maps

KINDS = ["3d", "motion"]


@pytest.fixture(scope="module", params=KINDS)
def recorded(request):
    """(pipe, run) of a finished tiny run that recorded everything, for each UNet kind."""
    pipe = tiny_pipe(unet_kind=request.param)
    return pipe, pipe.start("a red circle", record="all", **SMALL).finish(progress=False)


def _classic(pipe):
    from diffusers.models.attention_processor import AttnProcessor

    pipe.unet.set_attn_processor(AttnProcessor())
    return pipe


def test_points_are_classified_by_structure():
    names3d = attention_points(tiny_pipe(unet_kind="3d"))
    assert [n for n in names3d if n.startswith("attn.cross.")] == [
        "attn.cross.down_blocks.0.attentions.0.transformer_blocks.0.attn2",
        "attn.cross.up_blocks.1.attentions.0.transformer_blocks.0.attn2",
        "attn.cross.up_blocks.1.attentions.1.transformer_blocks.0.attn2",
        "attn.cross.mid_block.attentions.0.transformer_blocks.0.attn2"]
    temporal = [n for n in names3d if n.startswith("attn.temporal.")]
    assert temporal[:2] == ["attn.temporal.transformer_in.transformer_blocks.0.attn1",
                            "attn.temporal.transformer_in.transformer_blocks.0.attn2"]
    assert len(temporal) == 10 and all(".temp_attentions." in n for n in temporal[2:])
    motion = attention_points(tiny_pipe(unet_kind="motion"))
    assert sum(n.startswith("attn.cross.") for n in motion) == 4
    temporal = [n for n in motion if n.startswith("attn.temporal.")]
    assert len(temporal) == 14 and all(".motion_modules." in n for n in temporal)
    # spatial self-attention (attn1 of the spatial transformers) is not a hook point
    assert not any(".attentions." in n and n.endswith("attn1") for n in names3d + motion)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("processor", ["sdpa", "classic"])
def test_capture_leaves_the_video_bitwise_unchanged(kind, processor):
    pipe = tiny_pipe(unet_kind=kind)
    if processor == "classic":
        _classic(pipe)
    before = dict(pipe.unet.attn_processors)
    plain = pipe.generate("a red circle", progress=False, **SMALL).frames
    run = pipe.start("a red circle", record="all", **SMALL).finish(progress=False)
    assert np.array_equal(run.decode().frames, plain)
    assert all(pipe.unet.attn_processors[k] is p for k, p in before.items())  # the originals are back
    assert all(n in run.trace for n in attention_points(pipe))


def test_record_all_shapes_and_rows_sum_to_one(recorded):
    pipe, run = recorded
    S, B, F = 3, 1, SMALL["num_frames"]
    layers = attention_layers(pipe, SMALL["height"], SMALL["width"], F)
    assert list(layers) == attention_points(pipe)
    for name, info in layers.items():
        maps = run.trace[name]
        assert maps.shape == (S, *info["shape"]), name
        if info["kind"] == "cross":
            assert maps.shape == (S, B, F, *info["resolution"], 77)
        else:
            assert maps.shape == (S, B, F, F)
        assert (maps >= 0).all()
        torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]), atol=1e-5, rtol=0)
    assert {i["resolution"] for i in layers.values() if i["kind"] == "cross"} == {(8, 8), (4, 4)}


@pytest.mark.parametrize("kind", KINDS)
def test_maps_equal_the_classic_processors_probabilities(kind):
    # The classic processor materialises softmax(q k^T * scale) per head; our maps must be its
    # prompt half, averaged over heads (and over pixels, for temporal layers).
    pipe = _classic(tiny_pipe(unet_kind=kind))
    names = attention_points(pipe)
    cross = next(n for n in names if n.startswith("attn.cross.up_blocks"))
    temporal = next(n for n in names if n.startswith("attn.temporal.") and n.endswith("attn2"))
    modules = dict(pipe.unet.named_modules())
    seen = {}
    for name in (cross, temporal):
        attn = modules[name.split(".", 2)[2]]
        original = attn.get_attention_scores

        def spy(*args, _name=name, _attn=attn, _original=original, **kwargs):
            probs = _original(*args, **kwargs)  # [n * heads, Lq, Lk]
            seen[_name] = probs.view(-1, _attn.heads, *probs.shape[1:])  # [n, heads, Lq, Lk]
            return probs

        attn.get_attention_scores = spy
    run = pipe.start("a red circle", record=[cross, temporal], **SMALL)
    run.step()
    F = SMALL["num_frames"]
    p = seen[cross]
    ref = p[p.shape[0] // 2 :].mean(1).reshape(1, F, 8, 8, 77)  # rows (b, frame), queries = pixels
    torch.testing.assert_close(run.trace[cross][0], ref, atol=1e-6, rtol=1e-5)
    p = seen[temporal]
    ref = p[p.shape[0] // 2 :].mean(1).reshape(1, -1, F, F).mean(1)  # rows (b, pixel), queries = frames
    torch.testing.assert_close(run.trace[temporal][0], ref, atol=1e-6, rtol=1e-5)


def test_maps_are_of_the_prompt_half_of_the_guided_batch():
    # At step 0 both runs feed the UNet the same latents; the guided run's prompt half is exactly
    # what the unguided run computes, while its first half reads the empty prompt.
    pipe = tiny_pipe()
    name = attention_points(pipe)[2]
    assert name.startswith("attn.cross.")
    guided = pipe.start("a red circle", record=[name], **SMALL)
    guided.step()
    alone = pipe.start("a red circle", record=[name], guidance_scale=1.0, **SMALL)
    alone.step()
    torch.testing.assert_close(guided.trace[name], alone.trace[name], atol=1e-6, rtol=1e-5)
    empty = pipe.start("", record=[name], guidance_scale=1.0, **SMALL)
    empty.step()
    assert not torch.allclose(guided.trace[name], empty.trace[name], atol=1e-4)


def test_hooks_fire_once_per_step_per_layer_with_the_documented_shape():
    pipe = tiny_pipe(unet_kind="motion")
    names = attention_points(pipe)
    cross = next(n for n in names if n.startswith("attn.cross."))
    temporal = next(n for n in names if n.startswith("attn.temporal."))
    seen = []
    log = lambda v, ctx: seen.append((ctx.name, ctx.step, tuple(v.shape), float(v.sum(-1).mean())))
    with pipe.hooks({cross: log, temporal: log}):
        run = pipe.start("a red circle", **SMALL).finish(progress=False)
    F = SMALL["num_frames"]
    assert sorted((n, s) for n, s, _, _ in seen) == sorted((n, s) for n in (cross, temporal) for s in range(3))
    assert {shape for n, _, shape, _ in seen if n == cross} == {(1, F, 8, 8, 77)}
    assert {shape for n, _, shape, _ in seen if n == temporal} == {(1, F, F)}
    assert all(abs(total - 1) < 1e-5 for *_, total in seen)
    assert cross not in run.trace  # hooked, not recorded: the default record leaves attention out


def test_replacing_a_map_is_recorded_but_does_not_change_the_video():
    pipe = tiny_pipe()
    name = next(n for n in attention_points(pipe) if n.startswith("attn.cross."))
    plain = pipe.generate("a red circle", progress=False, **SMALL).frames
    with pipe.hooks({name: lambda v, ctx: torch.zeros_like(v)}):
        run = pipe.start("a red circle", record=[name], **SMALL).finish(progress=False)
    assert torch.equal(run.trace[name], torch.zeros_like(run.trace[name]))
    assert np.array_equal(run.decode().frames, plain)


def test_unknown_attention_names_suggest_the_closest():
    pipe = tiny_pipe()
    spatial_self = "attn.cross.down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    with pytest.raises(ValueError, match=r"attn\.cross\.down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn2"):
        with pipe.hooks({spatial_self: lambda v, ctx: None}):
            pass
    with pytest.raises(ValueError, match="Did you mean"):
        with pipe.hooks({"attn.temporal.transformer_in.transformer_blocks.0.atn1": lambda v, ctx: None}):
            pass
    assert not pipe._hooks


def test_capture_restores_processors_on_error_and_fires_nothing():
    pipe = tiny_pipe()
    run = pipe.start("a", **SMALL)
    before = dict(pipe.unet.attn_processors)
    fired = []
    run.emit = lambda *a, **k: fired.append(a)
    with pytest.raises(RuntimeError, match="boom"):
        with capture(run, 0, 0, attention_points(pipe)) as branch, branch("text"):
            wrapped = [k.removesuffix(".processor") for k, p in pipe.unet.attn_processors.items() if p is not before[k]]
            assert wrapped == [n.split(".", 2)[2] for n in attention_points(pipe)]  # those, and only those
            raise RuntimeError("boom")
    assert all(pipe.unet.attn_processors[k] is p for k, p in before.items())
    assert not fired
    with pytest.raises(ValueError, match="Unknown hook point"):  # a bad name, after good ones were installed
        with capture(run, 0, 0, attention_points(pipe)[:2] + ["attn.cross.nowhere"]):
            pass
    assert all(pipe.unet.attn_processors[k] is p for k, p in before.items())


def test_chunked_computation_gives_the_same_maps(monkeypatch):
    pipe = tiny_pipe()
    whole = pipe.start("a red circle", record="all", **SMALL)
    whole.step()
    monkeypatch.setattr(unet, "_CHUNK", 1)  # one row at a time
    rows = pipe.start("a red circle", record="all", **SMALL)
    rows.step()
    for name in attention_points(pipe):
        torch.testing.assert_close(rows.trace[name], whole.trace[name], atol=1e-6, rtol=1e-5)


def test_non_square_sizes_match_attention_layers():
    pipe = tiny_pipe(unet_kind="motion")
    size = dict(SMALL, height=16, width=20, num_inference_steps=1)  # 8x10 latents -> 4x5 below
    run = pipe.start("a", record="all", **size).finish(progress=False)
    for name, info in attention_layers(pipe, 16, 20, 3).items():
        assert run.trace[name].shape == (1, *info["shape"]), name
    assert word_maps(run, 1).shape == (1, 3, 8, 10)


def test_word_maps_and_temporal_matrix(recorded):
    pipe, run = recorded
    F = SMALL["num_frames"]
    tokens = run.text.tokens
    assert tokens[2:5] == ["r", "e", "d</w>"]  # the toy tokenizer spells words out
    r = 2
    assert word_maps(run, [1, r]).shape == (2, F, 8, 8)
    assert word_maps(run, "d").shape == (1, F, 8, 8)
    torch.testing.assert_close(word_maps(run, "d"), word_maps(run, [4]))  # "d</w>" is token 4
    both_r = [k for k, tok in enumerate(tokens) if tok == "r"]  # in "red" and in "circle"
    torch.testing.assert_close(word_maps(run, "r"), word_maps(run, both_r).mean(0, keepdim=True))
    assert word_maps(run, [r], frames=[0, -1], resolution=(16, 12)).shape == (1, 2, 16, 12)
    # one layer: exactly the recorded map, averaged over the chosen steps
    cross = [n for n in run.trace.names() if n.startswith("attn.cross.")]
    one = next(n for n in cross if run.trace[n].shape[3] == 8)
    manual = run.trace[one][[0, 2], 0, :, :, :, r].mean(0)
    torch.testing.assert_close(word_maps(run.trace, r, layers=[one], steps=[0, -1])[0], manual)
    # several layers: each upsampled to the largest grid, then averaged with equal weight
    up = lambda m: torch.nn.functional.interpolate(m[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    manual = sum(up(run.trace[n][:, 0, :, :, :, r].mean(0)) for n in cross) / len(cross)
    torch.testing.assert_close(word_maps(run, r)[0], manual)
    # temporal: [F, F], rows sum to 1, equal to the manual mean
    temporal = [n for n in run.trace.names() if n.startswith("attn.temporal.")]
    m = temporal_matrix(run)
    assert m.shape == (F, F)
    torch.testing.assert_close(m.sum(-1), torch.ones(F))
    manual = sum(run.trace[n][:, 0].mean(0) for n in temporal) / len(temporal)
    torch.testing.assert_close(m, manual)
    torch.testing.assert_close(temporal_matrix(run, layers=temporal[0], steps=1), run.trace[temporal[0]][1, 0])


def test_reader_errors(recorded):
    pipe, run = recorded
    with pytest.raises(ValueError, match="Did you mean"):
        word_maps(run, 1, layers=["attn.cross.mid_block.attentions.0.transformer_blocks.0.atn2"])
    with pytest.raises(ValueError, match="not a token"):
        word_maps(run, "blue")
    with pytest.raises(TypeError, match="pass the Run"):
        word_maps(run.trace, "r")
    with pytest.raises(ValueError, match="out of range"):
        temporal_matrix(run, steps=[5])
    plain = pipe.start("a", **dict(SMALL, num_inference_steps=1)).finish(progress=False)
    with pytest.raises(ValueError, match="record='all'"):
        temporal_matrix(plain)
