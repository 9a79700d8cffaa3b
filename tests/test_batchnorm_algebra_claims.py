"""The claims of chapter "BatchNorm: algebra, backpropagation, train vs inference",
rerun on seeds the chapter does not use."""

import numpy as np
import pytest

from normlab.experiments import batchnorm_algebra as algebra

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("m", [2, 4, 16])
def test_biased_batch_variance_underestimates_by_m_minus_one_over_m(m):
    for seed in SEEDS:
        assert algebra.biased_variance_ratio(m, seed=seed) == pytest.approx((m - 1) / m, abs=0.01)


def test_biased_variance_ratio_rejects_batches_of_one():
    with pytest.raises(ValueError, match="at least 2"):
        algebra.biased_variance_ratio(1)


@pytest.mark.parametrize("seed", SEEDS)
def test_inference_pitfalls_hurt_as_the_chapter_says(seed):
    p = algebra.inference_pitfalls(seed=seed)
    assert p.eval_mode > 0.93
    assert abs(p.train_mode_full_batch - p.eval_mode) < 0.02
    assert p.train_mode_batch_of_2 < p.eval_mode - 0.3
    assert p.never_updated_stats < p.eval_mode
    assert p.batch_dependence > 0.1 and p.eval_batch_dependence == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_bn_is_scale_invariant_until_eps_matters(seed):
    s = algebra.scale_invariance(seed=seed)
    c = s.scales
    deviation = np.abs(s.loss - s.loss[-1]) / s.loss[-1]
    assert np.all(np.diff(deviation[:-1]) < 0)
    assert deviation[c == 1.0] < 1e-4 and deviation[c == 0.01] > 1e-2
    big = c >= 1
    assert np.allclose((c * s.grad_norm)[big], 100 * s.grad_norm[-1], rtol=1e-4)
    assert np.allclose(s.input_grad_norm[big], s.input_grad_norm[-1], rtol=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
def test_gamma_and_beta_fix_two_moments_not_the_distribution_and_fixing_them_at_zero_one_trains_worse(seed):
    r = algebra.affine_after_training(seed=seed)
    assert algebra.affine_sets_two_moments_only(r, moment_tol=1e-3, skew_spread=1.0)
    assert algebra.learned_affine_beats_standardized(r, factor=1.1)


def test_affine_claims_fail_on_records_that_contradict_them():
    r = algebra.affine_after_training(seed=0, steps=50)
    r.skewness[:] = 0.3                       # every unit the same shape
    assert not algebra.affine_sets_two_moments_only(r)
    r.train_loss = (0.1, 0.1)                 # no cost to fixing (1, 0)
    assert not algebra.learned_affine_beats_standardized(r)
