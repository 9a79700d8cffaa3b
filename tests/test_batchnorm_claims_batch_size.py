"""The batch size claim of the BatchNorm experiments chapter, on seeds the chapter does not use.

One file per experiment, so pytest-xdist (--dist loadfile) can spread them over workers."""

import numpy as np
import pytest

from normlab.experiments import batchnorm

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_bn_loses_accuracy_at_batch_two_where_the_network_without_bn_does_not(seed):
    r = batchnorm.batch_size_sensitivity(seed=seed)
    assert r.test_accuracy_without_bn[1] < r.test_accuracy_with_bn[1]  # no BN is behind at batch 32
    assert batchnorm.bn_degrades_at_small_batch(r)                     # ≥ 15 points with BN, ≤ 5 without
    assert batchnorm.bn_small_batch_loss_survives_population_stats(r)  # not just the running averages


