"""The figure one claim of the BatchNorm experiments chapter, on seeds the chapter does not use.

One file per experiment, so pytest-xdist (--dist loadfile) can spread them over workers."""

import numpy as np
import pytest

from normlab.experiments import batchnorm

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_bn_reaches_90_percent_sooner_and_steadies_the_sigmoid_inputs(seed):
    r = batchnorm.sigmoid_mlp_with_and_without_bn(seed=seed)
    assert np.isfinite(batchnorm.steps_to_accuracy(r.eval_steps, r.accuracy_without_bn, 0.9))  # both get there
    assert batchnorm.bn_reaches_accuracy_faster(r)       # ≥ 5x fewer steps to 90% test accuracy
    assert batchnorm.bn_steadies_sigmoid_inputs(r)       # median wanders ≥ 2x less after step 100
    assert batchnorm.bn_keeps_sigmoid_input_width(r)     # width changes < 2x with BN, > 20x without


