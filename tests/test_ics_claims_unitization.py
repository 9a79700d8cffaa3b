"""The unitization claims of chapter "Internal covariate shift" (Huang & Yu's layer against BN), on seeds the
chapter does not use.

Thresholds set after seeds 0-1 and 101-105. α learned from 0: mean W1 1.06-1.10 times BN's (threshold: at
least 1.0), training loss 0.83-0.90 times BN's (at most 1.0), test accuracy within 0.6 points of BN's (2), the
largest per-layer mean α -0.026 to -0.030 (below 0). α held at 1: mean W1 0.14-0.22 times BN's (at most 0.5),
training loss 11-17 times BN's (at least 3).
"""

import numpy as np
import pytest

from normlab.experiments import ics

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_learned_alpha_stays_bn_like_and_fixed_alpha_one_bounds_w1_but_trains_worse(seed):
    bn = ics.earth_mover_ics_over_training("batch", seed=seed)
    learned = ics.unitization_earth_mover(seed)
    fixed = ics.unitization_earth_mover(seed, initial_alpha=1.0, train_alpha=False)
    assert ics.learned_unitization_is_bn_like(learned, bn)
    assert ics.full_unitization_trades_training(fixed, bn)
    assert np.all(fixed.alpha == 1.0) and learned.alpha.shape == (3, 100)
    for record in (learned.em, fixed.em):
        assert ics.earth_mover_bounds_hold(record)          # the probe's two bounds hold for this layer too


def test_claims_refuse_records_that_do_not_pair():
    learned = ics.unitization_earth_mover(0, steps=20, measure_every=10)
    bn = ics.earth_mover_ics_over_training("batch", seed=0, steps=30, measure_every=10)
    with pytest.raises(ValueError, match="same seed and schedule"):
        ics.learned_unitization_is_bn_like(learned, bn)


def test_alpha_held_at_zero_is_the_bn_network():
    """α held at 0 makes the unitization network the BN network: the same W1 at every measurement. (With α
    learned, the two differ from the first measurement on, since the step that W1 measures moves α too.)"""
    bn = ics.earth_mover_ics_over_training("batch", seed=3, steps=20, measure_every=10)
    held = ics.unitization_earth_mover(3, train_alpha=False, steps=20, measure_every=10)
    np.testing.assert_allclose(held.em.distance, bn.distance, rtol=0, atol=1e-5)
    assert held.em.final_test_accuracy == pytest.approx(bn.final_test_accuracy, abs=1e-6)
