"""Chapter "Initialization" (chapter 08_initialization): ELU beside ReLU and SELU, and normalization propagation,
rerun on seeds the chapter does not use."""

import math

import numpy as np
import pytest
import torch

from normlab.experiments import activation_moments as act_mom

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_elu_mean_between_relu_and_selu(seed):
    record = act_mom.activation_moments(seed=seed)
    claim = act_mom.elu_mean_between_relu_and_selu(record)
    assert claim, claim
    # the chapter: ReLU's ratio sits at 1/sqrt(pi) at every layer
    np.testing.assert_allclose(record.mean_over_rms["relu"], 1 / math.sqrt(math.pi), atol=0.1)


@pytest.mark.parametrize("seed", SEEDS)
def test_normalization_propagation(seed):
    record = act_mom.normalization_propagation(seed=seed)
    for claim in (act_mom.normprop_keeps_moments_early(record), act_mom.normprop_drifts_with_depth(record)):
        assert claim, claim
    assert record.correlation["orthogonal"][-1] > 2 * record.correlation["orthogonal"][0]  # the chapter's reason


def test_rectified_gaussian_constants():
    z = torch.randn(2_000_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    relu = torch.relu(z)
    assert abs(float(relu.mean()) - act_mom.RECTIFIED_MEAN) < 3e-3
    assert abs(float(relu.std()) - act_mom.RECTIFIED_STD) < 3e-3
    assert act_mom.RECTIFIED_MEAN**2 + act_mom.RECTIFIED_STD**2 == pytest.approx(0.5)  # E[ReLU(z)^2] = 1/2


def test_claims_can_fail():
    record = act_mom.activation_moments(seed=3, depth=6, width=64, batch=128)
    record.mean_over_rms["elu"] = record.mean_over_rms["relu"].copy()  # an ELU no closer to zero than ReLU
    assert not act_mom.elu_mean_between_relu_and_selu(record)
    normprop = act_mom.normalization_propagation(seed=3, depth=12, width=64, batch=256)
    normprop.unit_variance["orthogonal"][3] = 1.5
    assert not act_mom.normprop_keeps_moments_early(normprop)
    normprop.unit_variance["orthogonal"][-1] = 1.05
    assert not act_mom.normprop_drifts_with_depth(normprop)
