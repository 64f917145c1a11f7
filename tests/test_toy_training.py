"""Pieces of the toy model's training recipe that are cheap to check without training."""

from __future__ import annotations

import pytest
import torch

from t2v_nb.toy import components, train


def test_schedule_reaches_pure_noise_and_loss_weights_stay_finite():
    sched = components.build_scheduler()
    ac = sched.alphas_cumprod
    assert ac[-1] == 0 and sched.config.prediction_type == "v_prediction"  # zero terminal SNR needs v
    w = train.loss_weights(ac, "layout", 5.0, "v_prediction")
    assert torch.isfinite(w).all()
    assert w[-1] == pytest.approx(1.0)  # full weight on pure noise, where only the caption can help
    snr = ac / (1 - ac)
    # the clean-latent weight (SNR + 1 for v) times w is min(SNR + 1, 5)
    assert torch.allclose((snr + 1) * w, torch.clamp(snr + 1, max=5.0))
    eps = train.loss_weights(ac[:-1], "min-snr", 5.0, "epsilon")
    assert torch.allclose(snr[:-1] * eps, torch.clamp(snr[:-1], max=5.0))
    with pytest.raises(ValueError, match="weighting"):
        train.loss_weights(ac, "uniform")


def test_warm_start_moves_the_spatial_layers_between_unet_kinds():
    motion = components.build_unet(seed=1, kind="motion")
    unet3d = components.build_unet(seed=2, kind="3d")
    fresh = components.warm_start(unet3d, motion.state_dict())
    own = unet3d.state_dict()
    assert any("temp_convs" in n for n in fresh)  # temporal layers have no counterpart
    copied = [n for n in own if n not in fresh]
    assert "conv_in.weight" in copied and any(".attentions." in n for n in copied)
    src = motion.state_dict()
    for n in copied:
        assert torch.equal(own[n].flatten(), src[n].flatten())
    with pytest.raises(ValueError, match="UNet kind"):
        components.build_unet(kind="2d")
