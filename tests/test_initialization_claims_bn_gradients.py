"""Claims of the initialization chapter's corrections (all-zero weights and φ(0); BN does not prevent exploding
gradients), on seeds the chapter does not use."""

import pytest

from normlab.experiments import initialization as ini

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_bn_mlp_without_skips_has_gradients_that_explode_with_depth_at_init(seed):
    r = ini.bn_gradient_explosion(seed=seed)
    assert ini.bn_gradients_explode_with_depth(r, bn_rate_at_least=1.3, plain_rate_at_most=1.1, ratio_at_least=100.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_all_zero_weights_learn_only_the_output_bias_when_phi_of_zero_is_zero(seed):
    tanh, sigmoid = ini.zero_init_gradients("tanh", seed=seed), ini.zero_init_gradients("sigmoid", seed=seed)
    assert ini.zero_init_learns_as_phi_of_zero_says(tanh, sigmoid)


def test_claims_fail_on_records_that_contradict_them():
    r = ini.bn_gradient_explosion(seed=0, depths=(5, 10))
    r.rate["batch"] = 1.0
    assert not ini.bn_gradients_explode_with_depth(r)
    tanh = ini.zero_init_gradients("tanh")
    assert not ini.zero_init_learns_as_phi_of_zero_says(tanh, tanh)


@pytest.mark.parametrize("seed", SEEDS)
def test_branch_variance_over_b_and_branch_output_over_b_start_different_networks(seed):
    r = ini.residual_stream(norm="none", seed=seed)
    assert ini.branch_scalings_differ_as_predicted(r, rtol=0.35)
