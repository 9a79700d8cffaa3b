"""Claims of the weight-decay chapter (scale invariance, rescaled training), on seeds the chapter does not use.

The thresholds are those of the chapter's check cells; they were set after running seeds 0-11."""

import numpy as np
import pytest

from normlab.experiments import weight_decay

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_loss_is_scale_invariant_gradient_scales_as_one_over_c_and_is_orthogonal(seed):
    r = weight_decay.scale_invariance_on_network(seed=seed)
    assert weight_decay.loss_is_scale_invariant(r, tol=1e-12)
    assert weight_decay.gradient_scales_inversely(r, tol=1e-10)
    assert weight_decay.gradient_is_orthogonal(r, tol=1e-10, eps_tol=1e-4)
    assert r.median_abs_cosine_random > 1e-2
    assert weight_decay.eps_breaks_invariance_at_small_scale(r, small=1e-3, large=10.0, broken=(1e-3, 0.3),
                                                               kept=(1e-4, 1e-3))


@pytest.mark.parametrize("seed", SEEDS)
def test_training_from_cw_with_c_squared_lr_matches_training_from_w(seed):
    r = weight_decay.rescaled_training(seed=seed)
    assert weight_decay.rescaled_runs_match(r, tol=1e-9)
    assert weight_decay.eps_separates_small_scale_runs(r, small=1e-3, large=0.1, apart=0.1, close=0.05)


def test_claims_fail_on_records_that_contradict_them():
    r = weight_decay.rescaled_training(seed=0, scales=(1e-3, 10.0), steps=20)
    r.loss_deviation[0, 0] = 1e-3
    assert not weight_decay.rescaled_runs_match(r)
    r.direction_deviation[1] = [0.01, 0.01]
    assert not weight_decay.eps_separates_small_scale_runs(r)
