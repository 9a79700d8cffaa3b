"""Chapter "Initialization": residual streams, SELU and LSUV, and BatchNorm against the weight scale, on seeds
the chapter does not use."""

import numpy as np
import pytest

from normlab.experiments import initialization as ini

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("norm", ["none", "batch"])
def test_residual_stream_growth_matches_prediction(norm, seed):
    r = ini.residual_stream(norm=norm, seed=seed)
    assert ini.residual_growth_matches_prediction(r, factor=10.0)
    unscaled = r.labels.index("1")
    # the claim is not vacuous: 2^32 against e without normalization, 33 against 2 with BN
    ratio = r.variance[unscaled, -1] / r.variance[r.labels.index("1/sqrt(B)"), -1]
    assert ratio > (1e6 if norm == "none" else 10)


def test_residual_claim_rejects_linear_prediction_for_plain_branches():
    r = ini.residual_stream(blocks=16, width=64, batch=64, norm="none", seed=0)
    r.predicted = np.stack([ini.predicted_residual_variance(r.input_variance, 16, s, "batch")
                            for s in (1.0, 0.25, 1 / 16, 0.0)])
    assert not ini.residual_growth_matches_prediction(r)


@pytest.mark.parametrize("seed", SEEDS)
def test_selu_and_lsuv_keep_unit_variance(seed):
    selu = ini.variance_propagation("selu", "lecun", seed=seed)
    assert ini.variance_within(selu.activation_variance, 1.5)
    assert ini.variance_rates_match_prediction(selu, tol=0.06)
    for act in ("tanh", "relu"):
        seen, fresh = ini.lsuv_variances(act, seed=seed)
        assert ini.variance_within(seen, 1.15) and ini.variance_within(fresh, 1.5)


@pytest.mark.parametrize("seed", SEEDS)
def test_bn_relaxes_the_weight_scale(seed):
    assert ini.bn_output_ignores_weight_scale(seed=seed) < 0.02
    r = ini.weight_scale_sweep(seed=seed)
    assert ini.bn_widens_weight_scale_range(r, accuracy=0.6, extra=4)
    assert ini.plain_trains_only_at_he_scale(r, accuracy=0.6, chance_at_most=0.2)


def test_weight_scale_claim_needs_bn_wherever_plain_trains():
    r = ini.WeightScaleRecord(scales=np.arange(3.0), accuracy_without_bn=np.array([0.9, 0.1, 0.1]),
                              accuracy_with_bn=np.array([0.1, 0.9, 0.9]), he_std=1.0)
    assert not ini.bn_widens_weight_scale_range(r, accuracy=0.6, extra=1)
