"""The landscape claims of chapter "Lipschitz continuity, smoothness and the loss landscape"
(loss variation, top Hessian eigenvalue, effective β, ℓp normalizations), on seeds 101–105."""

import functools

import numpy as np
import pytest

from normlab.experiments import smoothness

SEEDS = [101, 102, 103, 104, 105]


@functools.lru_cache(maxsize=None)
def _runs(seed):
    return {n: smoothness.landscape_over_training(n, seed=seed) for n in smoothness.NORMS}


@pytest.mark.parametrize("seed", SEEDS)
def test_bn_and_l1_smooth_loss_variation_and_top_eigenvalue(seed):
    runs = _runs(seed)
    for n in ("batch", "l1"):
        assert smoothness.normalization_smooths_landscape(runs[n], runs["none"], "loss_variation", factor=1.5)
        assert smoothness.normalization_smooths_landscape(runs[n], runs["none"], "top_eigenvalue", factor=1.1)
    for n in ("batch", "l1", "linf"):
        assert smoothness.normalization_does_not_lower_effective_beta(runs[n], runs["none"], at_most=1.2)
    assert min(r.test_accuracy for r in runs.values()) > 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_lp_normalizations_do_not_fix_the_second_moment(seed):
    runs = _runs(seed)
    lo, hi = smoothness.xhat_std_range(runs["batch"])
    assert 0.999 < lo and hi < 1.001 and smoothness.xhat_std_drift(runs["batch"]) < 1.001
    lo, hi = smoothness.xhat_std_range(runs["l1"])
    assert lo > 1.05 and hi / lo > 1.1 and smoothness.xhat_std_drift(runs["l1"]) > 1.01
    lo, hi = smoothness.xhat_std_range(runs["linf"])
    assert hi < 0.6 and hi / lo > 2 and smoothness.xhat_std_drift(runs["linf"]) > 1.1


def test_landscape_record_shapes_and_determinism():
    a = smoothness.landscape_over_training("batch", seed=0, steps=40, every=20, eigen_iterations=5)
    b = smoothness.landscape_over_training("batch", seed=0, steps=40, every=20, eigen_iterations=5)
    np.testing.assert_array_equal(a.measure_steps, [0, 20, 40])
    assert a.loss_variation.shape == a.top_eigenvalue.shape == (3,) and a.train_loss.shape == (40,)
    assert a.xhat_std.shape == (3, 100)
    np.testing.assert_array_equal(a.effective_beta, b.effective_beta)
    none = smoothness.landscape_over_training("none", seed=0, steps=20, every=20, eigen_iterations=5)
    assert none.xhat_std.size == 0
    with pytest.raises(ValueError, match="no normalization layer"):
        smoothness.xhat_std_range(none)
    with pytest.raises(ValueError, match="measure must be one of"):
        smoothness.smoothing_ratio(a, none, "sharpness")
