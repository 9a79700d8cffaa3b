"""Chapter "WeightNorm and scaled WeightNorm": deep WeightNorm networks train with the scaled
initialization and not with the plain one, on seeds 101–105 (the chapter uses seed 0)."""

import numpy as np
import pytest

from normlab.experiments import weightnorm as wn

SEEDS = [101, 102, 103, 104, 105]


def test_training_record_is_deterministic_and_one_row_per_evaluation():
    a = wn.train_deep_networks("mlp", seed=1, depth=3, width=16, steps=20, eval_every=10)
    b = wn.train_deep_networks("mlp", seed=1, depth=3, width=16, steps=20, eval_every=10)
    np.testing.assert_array_equal(a.eval_steps["scaled"], [0, 10, 20])
    np.testing.assert_array_equal(a.train_loss["plain"], b.train_loss["plain"])
    assert a.test_accuracy["scaled"].shape == (3,)


def test_training_claim_counts_divergence_as_failure():
    r = wn.train_deep_networks("mlp", seed=0, depth=3, width=16, steps=20, eval_every=10)
    r.test_accuracy["scaled"] = np.array([0.1, 0.5, 0.95])
    r.test_accuracy["plain"] = np.array([0.1, 0.9, 0.9])
    assert not wn.scaled_init_trains_deep_networks(r)
    r.diverged["plain"] = True
    assert wn.scaled_init_trains_deep_networks(r)
    r.train_loss["plain"] = r.train_loss["scaled"] * 2
    assert not wn.plain_init_starts_exploded(r)


@pytest.mark.parametrize("seed", SEEDS)
def test_scaled_init_trains_the_deep_mlp_and_plain_does_not(seed):
    assert wn.scaled_init_trains_deep_networks(wn.train_deep_networks("mlp", seed=seed, depth=20, steps=300))


@pytest.mark.parametrize("seed", SEEDS)
def test_scaled_init_trains_the_deep_residual_net_and_plain_starts_exploded(seed):
    r = wn.train_deep_networks("residual", seed=seed, depth=40, steps=100)
    assert wn.scaled_init_trains_deep_networks(r, gap=None)
    assert wn.plain_init_starts_exploded(r)
