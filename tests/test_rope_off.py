"""`t2v_nb.families.wan.rope_off`: Wan's rotary embedding with no frame position, on a tiny random Wan 2.1."""

from __future__ import annotations

import pytest
import torch
import tiny_wan

from t2v_nb.families.wan import rope_off

FRAMES, SIDE = 3, 4  # latent frames and latent height = width: 3 x 2 x 2 tokens with patches (1, 2, 2)


@pytest.fixture(scope="module")
def transformer():
    return tiny_wan.components()["transformer"]


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, FRAMES, SIDE, SIDE, generator=g)  # [B, C, F', h, w]
    text = torch.randn(1, 512, 32, generator=g)  # [B, L, text_dim]
    return x, text


def call(transformer, x, text):
    with torch.no_grad():
        return transformer(hidden_states=x, timestep=torch.tensor([700]), encoder_hidden_states=text,
                           return_dict=False)[0]  # [B, C, F', h, w]


def test_every_frame_gets_frame_0_s_angles_and_rows_and_columns_keep_theirs(transformer, inputs):
    x, _ = inputs
    t = transformer.rope.t_dim
    on = [e.view(FRAMES, SIDE // 2, SIDE // 2, -1) for e in transformer.rope(x)]  # cos, sin per (frame, row, column)
    with rope_off(transformer):
        off = [e.view(FRAMES, SIDE // 2, SIDE // 2, -1) for e in transformer.rope(x)]
    for a, b in zip(on, off):
        assert torch.equal(b[..., :t], a[:1, ..., :t].expand_as(b[..., :t]))  # every frame at frame 0's position
        assert torch.equal(b[..., t:], a[..., t:])  # rows and columns untouched
        assert not torch.equal(a[1:, ..., :t], a[:1, ..., :t].expand_as(a[1:, ..., :t]))  # (they did differ)
    assert torch.all(off[0][..., :t] == 1) and torch.all(off[1][..., :t] == 0)  # no turn at all


def test_restores_the_transformer_exactly_also_after_an_error(transformer, inputs):
    before = call(transformer, *inputs)
    with rope_off(transformer) as same:
        assert same is transformer
        inside = call(transformer, *inputs)
    assert not torch.allclose(inside, before, atol=1e-4)  # it did change something
    assert torch.equal(call(transformer, *inputs), before)
    with pytest.raises(RuntimeError, match="inside"):
        with rope_off(transformer):
            raise RuntimeError("inside")
    assert torch.equal(call(transformer, *inputs), before) and not transformer.rope._forward_hooks


def test_with_it_on_permuting_the_frames_permutes_the_output(transformer, inputs):
    x, text = inputs
    order = torch.tensor([2, 0, 1])
    with rope_off(transformer):
        out, shuffled = call(transformer, x, text), call(transformer, x[:, :, order], text)
    assert (shuffled - out[:, :, order]).abs().max() < 1e-5  # frames are told apart by nothing but content
    # With frame positions, the same shuffle does not commute with the model.
    on, on_shuffled = call(transformer, x, text), call(transformer, x[:, :, order], text)
    assert (on_shuffled - on[:, :, order]).abs().max() > 1e-3
    # Rows keep their positions: shuffling rows of patches still does not commute, even with rope_off.
    rows = torch.tensor([2, 3, 0, 1])  # swap the two rows of 2x2 patches
    with rope_off(transformer):
        row_shuffled = call(transformer, x[:, :, :, rows], text)
    assert (row_shuffled - out[:, :, :, rows]).abs().max() > 1e-3


def test_identical_frames_stay_identical_only_without_frame_positions(transformer, inputs):
    x, text = inputs
    same = x[:, :, :1].expand(-1, -1, FRAMES, -1, -1).contiguous()  # [1, C, F', h, w], every frame frame 0
    with rope_off(transformer):
        off = call(transformer, same, text)
    assert (off - off[:, :, :1]).abs().max() < 1e-5
    on = call(transformer, same, text)
    assert (on - on[:, :, :1]).abs().max() > 1e-3


def test_refuses_what_is_not_a_wan_transformer_and_names_the_fix():
    with pytest.raises(TypeError, match="WanTransformer3DModel.*got Linear"):
        with rope_off(torch.nn.Linear(2, 2)):
            pass
    with pytest.raises(TypeError, match="pass pipe.denoiser"):
        with rope_off(tiny_wan.tiny_pipe()):  # the pipeline, not its transformer
            pass
