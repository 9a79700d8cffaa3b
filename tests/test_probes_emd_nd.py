"""normlab.probes.wasserstein_nd: the Earth Mover distance between two samples of vectors, against known answers.

Chapter 04_internal_covariate_shift measures Huang & Yu's Earth Mover ICS of a whole layer with it.
"""

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from normlab.probes import wasserstein_1d, wasserstein_nd


@pytest.mark.parametrize("seed", range(5))
def test_one_dimension_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal(60) * 2, rng.standard_t(3, 60) + 1
    expected = wasserstein_distance(u, v)
    assert wasserstein_nd(u, v) == pytest.approx(expected, rel=1e-12)
    assert wasserstein_nd(u[:, None], v[:, None]) == pytest.approx(wasserstein_1d(u, v), rel=1e-12)


@pytest.mark.parametrize("d", [1, 3, 50])
def test_a_translation_moves_every_point_by_its_length(d):
    rng = np.random.default_rng(d)
    a = rng.standard_normal((40, d))
    shift = rng.standard_normal(d)
    assert wasserstein_nd(a, a + shift) == pytest.approx(np.linalg.norm(shift), rel=1e-12)


def test_known_small_answers():
    assert wasserstein_nd([[0.0, 0.0]], [[3.0, 4.0]]) == pytest.approx(5.0)       # one point moved by (3, 4)
    # two points swapped: the plan that keeps them costs 0
    assert wasserstein_nd([[0.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [0.0, 0.0]]) == 0.0
    # the corners of a unit square against its centre, four copies: every corner moves sqrt(2)/2
    corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    assert wasserstein_nd(corners, np.full((4, 2), 0.5)) == pytest.approx(np.sqrt(2) / 2)
    assert wasserstein_nd(torch.zeros(3, 2), torch.ones(3, 2)) == pytest.approx(np.sqrt(2))


def brute_force(a, b):
    """The minimum over every permutation, for a handful of points."""
    n = len(a)
    return min(np.mean([np.linalg.norm(a[i] - b[p[i]]) for i in range(n)]) for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_minimum_over_all_permutations(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((6, 3)), rng.standard_normal((6, 3)) + 0.5
    assert wasserstein_nd(a, b) == pytest.approx(brute_force(a, b), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_symmetric_permutation_invariant_and_below_the_same_example_cost(seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((30, 8))
    b = a @ rng.standard_normal((8, 8)) * 0.5 + rng.standard_normal((30, 8)) * 0.3
    w = wasserstein_nd(a, b)
    assert wasserstein_nd(b, a) == pytest.approx(w, rel=1e-12)
    assert wasserstein_nd(a[rng.permutation(30)], b[rng.permutation(30)]) == pytest.approx(w, rel=1e-12)
    assert w <= np.linalg.norm(a - b, axis=1).mean() + 1e-12                   # each example to itself is one plan
    assert w >= np.linalg.norm(a.mean(0) - b.mean(0)) - 1e-12                 # Kantorovich-Rubinstein, f = <u, x>
    assert wasserstein_nd(a, a) == 0.0


@pytest.mark.parametrize("seed", range(10))
def test_triangle_inequality(seed):
    rng = np.random.default_rng(seed)
    d = int(rng.integers(1, 6))
    a, b, c = (rng.standard_normal((12, d)) * rng.uniform(0.2, 3) + rng.uniform(-1, 1) for _ in range(3))
    assert wasserstein_nd(a, c) <= wasserstein_nd(a, b) + wasserstein_nd(b, c) + 1e-12


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 6), seed=st.integers(0, 2**31 - 1))
def test_every_shape_lies_between_the_mean_shift_and_the_same_example_cost(n, d, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d)) * 2 + 1
    w = wasserstein_nd(a, b)
    assert np.linalg.norm(a.mean(0) - b.mean(0)) - 1e-9 <= w <= np.linalg.norm(a - b, axis=1).mean() + 1e-9


def test_refuses_unequal_sizes_mismatched_dimensions_and_non_finite_values():
    with pytest.raises(ValueError, match="same number of points"):
        wasserstein_nd(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="dimension 2 and 3"):
        wasserstein_nd(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        wasserstein_nd(np.array([[np.nan, 0.0]]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        wasserstein_nd(np.zeros((1, 2)), np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match=r"\(n, d\) array"):
        wasserstein_nd(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"\(n, d\) array"):
        wasserstein_nd(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
