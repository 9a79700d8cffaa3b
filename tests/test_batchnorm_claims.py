"""The claims of chapter "Batch normalization", rerun on seeds the chapter does not use.

Each claim is a function in ``normlab.experiments.batchnorm``; the chapter's check cells
call the same functions on the chapter's seeds.
"""

import numpy as np
import pytest

from normlab.experiments import batchnorm

SEEDS = [101, 102, 103, 104, 105]


# ---------------------------------------------------------------- sanity: shapes, seeds, protocols


def _small_figure_one(seed):
    return batchnorm.sigmoid_mlp_with_and_without_bn(seed=seed, steps=60, eval_every=20, probe_every=30,
                                                     units=(0, 5), q=(10, 50, 90))


def test_figure_one_record_has_one_row_per_evaluation_and_probe():
    r = _small_figure_one(seed=0)
    np.testing.assert_array_equal(r.eval_steps, [0, 20, 40, 60])
    np.testing.assert_array_equal(r.probe_steps, [0, 30, 60])
    assert r.accuracy_with_bn.shape == r.accuracy_without_bn.shape == (4,)
    assert r.percentiles_with_bn.shape == r.percentiles_without_bn.shape == (3, 2, 3)
    assert np.all(np.diff(r.percentiles_with_bn, axis=2) >= 0)
    assert r.history_with_bn.steps_run == r.history_without_bn.steps_run == 60


def test_experiments_are_deterministic_by_seed():
    first, again, other = _small_figure_one(0), _small_figure_one(0), _small_figure_one(1)
    np.testing.assert_array_equal(first.percentiles_with_bn, again.percentiles_with_bn)
    np.testing.assert_array_equal(first.history_without_bn.loss, again.history_without_bn.loss)
    assert not np.array_equal(first.percentiles_without_bn, other.percentiles_without_bn)
    sweep = [batchnorm.learning_rate_sweep(norm="batch", lrs=(0.1, 3.0), steps=30, seed=2) for _ in range(2)]
    np.testing.assert_array_equal(sweep[0].final_train_loss, sweep[1].final_train_loss)


def test_both_networks_start_from_the_same_weights():
    none, batch = batchnorm.sigmoid_mlp("none", 64, 10, seed=4), batchnorm.sigmoid_mlp("batch", 64, 10, seed=4)
    for name in ("linear0", "linear1", "linear2", "output"):
        assert np.array_equal(getattr(none, name).weight.detach(), getattr(batch, name).weight.detach())
    assert hasattr(batch, "norm2") and not hasattr(none, "norm2")
    with pytest.raises(ValueError, match="norm must be one of"):
        batchnorm.sigmoid_mlp("layer", 64, 10, seed=0)


def test_learning_rate_sweep_record():
    r = batchnorm.learning_rate_sweep(norm="none", lrs=(0.01, 1.0, 300.0), steps=40, seed=0)
    assert r.lrs.shape == r.final_test_accuracy.shape == r.trains.shape == r.diverged.shape == (3,)
    assert r.diverged[-1] and not r.trains[-1]
    assert np.array_equal(r.stalled, ~r.trains & ~r.diverged)
    if not r.trains.any():
        assert np.isnan(r.largest_trainable_lr) and np.isnan(r.smallest_trainable_lr)
    assert batchnorm.trainable_span(r) == (r.largest_trainable_lr / r.smallest_trainable_lr if r.trains.any() else 0)
    with pytest.raises(ValueError, match="norm='batch' first"):
        batchnorm.bn_widens_learning_rate_range(r, r)


def test_learning_rate_claim_reads_the_trains_flags():
    lrs = np.array([0.01, 0.1, 1.0, 10.0])

    def record(norm, trains):
        trains = np.asarray(trains, dtype=bool)
        return batchnorm.LearningRateSweepRecord(
            norm=norm, lrs=lrs, final_test_accuracy=np.where(trains, 0.9, 0.1), final_train_loss=np.ones(4),
            initial_loss=np.full(4, 2.3), diverged=np.zeros(4, dtype=bool), trains=trains, threshold=0.8, steps=1,
            largest_trainable_lr=float(lrs[trains].max()) if trains.any() else float("nan"),
            smallest_trainable_lr=float(lrs[trains].min()) if trains.any() else float("nan"))

    narrow = record("none", [0, 0, 1, 0])
    assert batchnorm.bn_widens_learning_rate_range(record("batch", [1, 1, 1, 1]), narrow, span=300)
    assert not batchnorm.bn_widens_learning_rate_range(record("batch", [1, 0, 1, 1]), narrow, span=300)  # a gap
    assert not batchnorm.bn_widens_learning_rate_range(record("batch", [1, 1, 1, 0]), narrow, span=100)  # not larger
    assert not batchnorm.bn_widens_learning_rate_range(record("batch", [0, 1, 1, 1]), narrow, span=300)  # too narrow
    assert batchnorm.bn_widens_learning_rate_range(record("batch", [1, 1, 1, 1]), record("none", [0] * 4))


def test_equal_examples_scales_steps_and_learning_rate_with_the_batch():
    r = batchnorm.batch_size_sensitivity(batch_sizes=(2, 8), examples=160, seed=0)
    np.testing.assert_array_equal(r.steps, [80, 20])
    np.testing.assert_allclose(r.lrs, [0.25, 1.0])
    for accuracy in (r.test_accuracy_with_bn, r.test_accuracy_without_bn, r.test_accuracy_with_bn_population_stats,
                     r.train_accuracy_with_bn, r.train_accuracy_without_bn):
        assert accuracy.shape == (2,) and np.all((0 <= accuracy) & (accuracy <= 1))


def test_equal_steps_protocol_and_its_guard_rails():
    r = batchnorm.batch_size_sensitivity(batch_sizes=(2, 8), examples=None, steps=30, lr=0.5, seed=0)
    np.testing.assert_array_equal(r.steps, [30, 30])
    np.testing.assert_allclose(r.lrs, [0.5, 0.5])
    with pytest.raises(ValueError, match="examples=..., not steps"):
        batchnorm.bn_degrades_at_small_batch(r)
    with pytest.raises(ValueError, match="exactly one of examples"):
        batchnorm.batch_size_sensitivity(examples=100, steps=10)


def test_median_drift_and_width_change_on_a_hand_made_track():
    steps = np.array([0, 100, 200, 300])
    q = np.array([15.0, 50.0, 85.0])
    # unit 0: median 0, 1, 3, 2; width 1, 1, 2, 4.  unit 1: constant.
    p = np.zeros((4, 2, 3))
    p[:, 0, 1] = [0, 1, 3, 2]
    p[:, 0, 0] = p[:, 0, 1] - np.array([1, 1, 2, 4]) / 2
    p[:, 0, 2] = p[:, 0, 1] + np.array([1, 1, 2, 4]) / 2
    p[:, 1] = [-1, 0, 1]
    assert batchnorm.median_drift(p, steps, q, since=100) == pytest.approx((2 + 0) / 2)
    assert batchnorm.median_drift(p, steps, q, since=0) == pytest.approx((3 + 0) / 2)
    assert batchnorm.width_change(p, steps, q, since=100) == pytest.approx((4 + 1) / 2)
    assert batchnorm.steps_to_accuracy(steps, np.array([0.1, 0.5, 0.92, 0.95]), 0.9) == 200
    assert batchnorm.steps_to_accuracy(steps, np.array([0.1, 0.5, 0.6, 0.7]), 0.9) == float("inf")
