"""The learning rates claim of the BatchNorm experiments chapter, on seeds the chapter does not use.

One file per experiment, so pytest-xdist (--dist loadfile) can spread them over workers."""

import numpy as np
import pytest

from normlab.experiments import batchnorm

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_bn_trains_at_learning_rates_far_above_and_below_the_range_without_it(seed):
    with_bn = batchnorm.learning_rate_sweep(norm="batch", seed=seed)
    without = batchnorm.learning_rate_sweep(norm="none", seed=seed)
    # with BN a contiguous range ≥ 300x wide trains; without BN at most rates within 3x of each other do,
    # all of them train with BN too, and BN's largest trainable rate is ≥ 3x larger
    assert batchnorm.bn_widens_learning_rate_range(with_bn, without)
    assert without.diverged[-1] and with_bn.diverged[-1]  # lr 100 blows up either way: the grid has an upper end
    # without BN, small rates stall on the plateau and large ones diverge; no loss is ever infinite
    assert np.all(without.stalled[without.lrs <= 1]) and np.all(without.diverged[without.lrs >= 30])
    assert np.all(np.isfinite(with_bn.final_train_loss)) and np.all(np.isfinite(without.final_train_loss))


