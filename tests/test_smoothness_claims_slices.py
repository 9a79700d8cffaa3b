"""The loss-slice claim of chapter "Lipschitz continuity, smoothness and the loss landscape":
the highest loss over a filter-normalized 2-D window is lower with BN, on seeds 101–105."""

import numpy as np
import pytest

from normlab.experiments import smoothness

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_bn_lowers_the_maximum_of_the_2d_slice(seed):
    slices = {n: smoothness.loss_slices(smoothness.landscape_over_training(n, seed=seed, every=600), seed=seed)
              for n in ("none", "batch")}
    assert smoothness.bn_lowers_slice_maximum(slices["batch"], slices["none"], factor=1.0)


def test_slices_pass_through_the_trained_parameters():
    r = smoothness.landscape_over_training("batch", seed=0, steps=30, every=30, eigen_iterations=3)
    s = smoothness.loss_slices(r, seed=0, alphas=(-0.5, 0.0, 0.5), alphas_2d=(-0.5, 0.0, 0.5))
    assert s.slice_2d.shape == (3, 3)
    assert s.slice_1d[1] == pytest.approx(s.slice_2d[1, 1])
    np.testing.assert_allclose(s.slice_2d[:, 1], s.slice_1d)
