"""Chapter "Initialization": the 30-layer plain ReLU network trains from He and stalls from Xavier,
on seeds the chapter does not use (He et al. 2015, Figure 3, at CPU scale)."""

import numpy as np
import pytest

from normlab.experiments import initialization as ini

SEEDS = [101, 102, 103, 104, 105]


def test_deep_training_record_shape_and_determinism():
    a = ini.deep_relu_training(seed=0, depth=4, steps=20, eval_every=10)
    b = ini.deep_relu_training(seed=0, depth=4, steps=20, eval_every=10)
    assert a.test_accuracy.shape == a.test_loss.shape == (2, 3)
    assert a.train_loss.shape == (2, 20)
    np.testing.assert_array_equal(a.eval_steps, [0, 10, 20])
    np.testing.assert_array_equal(a.train_loss, b.train_loss)


@pytest.mark.parametrize("seed", SEEDS)
def test_he_trains_xavier_stalls(seed):
    r = ini.deep_relu_training(seed=seed)
    assert ini.he_trains_xavier_stalls(r, he_best_at_least=0.7, xavier_at_most=0.25, loss_gap=0.5)
