"""The claims of chapter "WeightNorm and scaled WeightNorm", rerun on seeds the chapter does not use.

Each claim is a function in ``normlab.experiments.weightnorm``; the chapter's check cells call the
same functions on seed 0. Deep-network training is in ``test_weightnorm_claims_training.py``.
"""

import numpy as np
import pytest
import torch

from normlab.experiments import weightnorm as wn
from normlab.layers import WeightNormLinear

SEEDS = [101, 102, 103, 104, 105]


# ---------------------------------------------------------------- sanity: networks, records, seeds


def test_networks_share_directions_and_have_the_promised_scales():
    plain = wn.weight_norm_mlp(64, [32, 32], 10, init="plain", seed=3)
    scaled = wn.weight_norm_mlp(64, [32, 32], 10, init="scaled", seed=3)
    default = wn.weight_norm_mlp(64, [32, 32], 10, init="default", seed=3)
    for a, b in zip(plain.modules(), scaled.modules()):
        if isinstance(a, WeightNormLinear):
            torch.testing.assert_close(a.v, b.v)  # same orthogonal directions; only g differs
            assert torch.all(a.g == 1)
    torch.testing.assert_close(scaled.linear0.g, torch.full((32,), 2.0))  # √(2·64/32)
    torch.testing.assert_close(scaled.linear1.g, torch.full((32,), 2.0**0.5))
    torch.testing.assert_close(scaled.output.g, torch.full((10,), (32 / 10) ** 0.5))
    torch.testing.assert_close(default.linear0.g, default.linear0.v.norm(dim=1))
    res = wn.weight_norm_residual_mlp(64, 16, 10, blocks=4, init="scaled", seed=0)
    torch.testing.assert_close(res.block2.branch.linear0.g, torch.full((16,), 2.0**0.5))
    torch.testing.assert_close(res.block2.branch.linear1.g, torch.full((16,), 0.5))  # √(1/4)
    assert sum(isinstance(m, WeightNormLinear) for m in res.modules()) == 2 + 2 * 4
    with pytest.raises(ValueError, match="init must be one of"):
        wn.weight_norm_mlp(4, [4], 2, init="he")
    with pytest.raises(ValueError, match="arch must be"):
        wn.signal_propagation("cnn")


def test_mean_only_bn_network_has_one_per_hidden_layer():
    net = wn.weight_norm_mlp(8, [6, 6], 3, mean_only_bn=True, seed=0)
    assert [type(m).__name__ for m in net][:3] == ["WeightNormLinear", "MeanOnlyBatchNorm1d", "ReLU"]


def test_norm_growth_record_and_determinism():
    a = wn.norm_growth(seed=1, lrs=(0.1, 1.0), steps=20, check_every=10)
    b = wn.norm_growth(seed=1, lrs=(0.1, 1.0), steps=20, check_every=10)
    assert a.sq_norm.shape == (2, 21, 3) and a.identity_error.shape == (2, 20)
    assert a.formula_error.shape == (2, 2) and a.layer_names == ["linear0", "linear1", "output"]
    np.testing.assert_array_equal(a.sq_norm, b.sq_norm)
    assert np.all(np.diff(a.sq_norm, axis=1) >= 0)  # ‖v‖ never shrinks under plain SGD
    np.testing.assert_allclose(a.effective_lr, a.lrs[:, None, None] / a.sq_norm)


def test_claims_can_fail():
    r = wn.norm_growth(seed=0, lrs=(0.1, 1.0), steps=20, check_every=10)
    r.identity_error[0, 3] = 1e-6
    assert not wn.norm_growth_identity_holds(r)
    r.sq_norm[1] = r.sq_norm[0]  # no extra decay at the larger rate
    assert not wn.effective_lr_decays_faster_at_larger_lr(r)
    sig = wn.signal_propagation("mlp", seed=0, depth=4, width=16)
    assert not wn.plain_init_vanishes_or_explodes(sig)  # 4 layers: only 1/4, not 1/10
    sig.forward["scaled"] = sig.forward["plain"] * 0.1
    assert not wn.scaled_init_preserves_signal(sig)


# ---------------------------------------------------------------- the chapter's claims, seeds 101–105


@pytest.mark.parametrize("seed", SEEDS)
def test_gradient_identities_and_norm_growth(seed):
    r = wn.norm_growth(seed=seed, lrs=(0.1, 0.5, 2.0), steps=300)
    assert wn.gradient_formulas_hold(r)
    assert wn.v_orthogonal_to_gradient(r)
    assert wn.norm_growth_identity_holds(r)
    assert wn.effective_lr_decays_faster_at_larger_lr(r)
    growth = r.sq_norm[:, -1, :] / r.sq_norm[:, 0, :]
    assert np.all(growth.argmax(axis=1) == r.layer_names.index("output"))  # the chapter: output layer grows most


@pytest.mark.parametrize("seed", SEEDS)
def test_data_dependent_init_standardizes(seed):
    assert wn.data_dependent_init_standardizes(wn.data_dependent_init_statistics(seed=seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_one_layer_preserves_norm(seed):
    assert wn.one_layer_preserves_norm(wn.one_layer_norm_ratio(seed=seed, draws=300))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("arch, depth", [("mlp", 20), ("residual", 40)])
def test_scaled_init_preserves_and_plain_loses_the_signal(seed, arch, depth):
    r = wn.signal_propagation(arch, seed=seed, depth=depth, width=128)
    assert wn.scaled_init_preserves_signal(r)
    assert wn.plain_init_vanishes_or_explodes(r)
    assert wn.plain_init_matches_prediction(r)


def test_plain_prediction_formulas():
    mlp = wn.signal_propagation("mlp", seed=0, depth=5, width=32)
    assert mlp.plain_prediction() == pytest.approx(((32 / 128) ** 0.5 * 0.5**2, 0.5**2))
    res = wn.signal_propagation("residual", seed=0, depth=4, width=16)
    assert res.plain_prediction() == pytest.approx((1.25**2, 1.25**2))
    assert not wn.plain_init_matches_prediction(res, factor=1.0)
