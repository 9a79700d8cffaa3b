"""Tests for normlab.preprocessing: least-squares Hessian, standardization, whitening."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from normlab import preprocessing


def _correlated_design(n: int, d: int, seed: int, max_scale: float = 5.0) -> np.ndarray:
    """n samples of d correlated features with offsets and unequal scales, κ(Σ) <= (10 max_scale)²."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    scales = rng.uniform(0.5, max_scale, size=d)
    mixing = (q * scales) @ np.linalg.qr(rng.standard_normal((d, d)))[0]
    offset = rng.uniform(-50.0, 50.0, size=d)
    return rng.standard_normal((n, d)) @ mixing + offset


def _condition_number(h: np.ndarray) -> float:
    lam = np.linalg.eigvalsh(h)
    return lam[-1] / lam[0]


designs = st.tuples(st.integers(1, 6), st.integers(0, 40), st.integers(0, 2**32 - 1)).map(
    lambda t: _correlated_design(n=t[0] + 10 + t[1], d=t[0], seed=t[2]))


# ----------------------------------------------------------------------------
# least_squares_hessian


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 20), d=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_least_squares_hessian_matches_autograd_hessian_of_mean_squared_error(n, d, seed):
    rng = np.random.default_rng(seed)
    x, y, w = rng.standard_normal((n, d)), rng.standard_normal(n), rng.standard_normal(d)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def loss(weights: torch.Tensor) -> torch.Tensor:
        return ((xt @ weights - yt) ** 2).sum() / (2 * n)

    expected = torch.autograd.functional.hessian(loss, torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(preprocessing.least_squares_hessian(x), expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------
# standardize


@settings(max_examples=30, deadline=None)
@given(x=designs)
def test_standardize_gives_zero_mean_and_unit_population_std_per_column(x):
    z = preprocessing.standardize(x)
    assert z.shape == x.shape
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    # the 1/n standard deviation, computed without np.std's ddof convention
    np.testing.assert_allclose(np.sqrt((z**2).mean(axis=0)), 1.0, rtol=1e-12)


def test_standardize_uses_given_train_statistics():
    rng = np.random.default_rng(0)
    train = rng.normal(3.0, 2.0, size=(50, 3))
    test = rng.normal(-1.0, 5.0, size=(20, 3))
    mean, std = train.mean(axis=0), train.std(axis=0)
    z = preprocessing.standardize(test, mean=mean, std=std)
    np.testing.assert_allclose(z, (test - mean) / std, rtol=1e-14)
    # not the test set's own statistics, which would centre it exactly
    assert np.abs(z.mean(axis=0)).min() > 0.5
    np.testing.assert_allclose(preprocessing.standardize(train, mean=mean, std=std),
                               preprocessing.standardize(train), rtol=1e-14)


def test_standardize_maps_a_constant_column_to_zeros_instead_of_nan():
    x = np.column_stack([np.full(5, 3.0), np.arange(5.0)])
    z = preprocessing.standardize(x)
    np.testing.assert_array_equal(z[:, 0], 0.0)
    np.testing.assert_allclose(z[:, 1], (np.arange(5.0) - 2.0) / np.sqrt(2.0))


def test_standardize_makes_the_hessian_diagonal_one():
    x = _correlated_design(200, 4, seed=1)
    np.testing.assert_allclose(np.diag(preprocessing.least_squares_hessian(preprocessing.standardize(x))),
                               1.0, rtol=1e-12)


# ----------------------------------------------------------------------------
# whitening


@settings(max_examples=40, deadline=None)
@given(x=designs)
def test_whiten_gives_zero_mean_and_identity_covariance(x):
    z = preprocessing.whiten(x)
    n, d = x.shape
    assert z.shape == (n, d)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(z.T @ z / n, np.eye(d), atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(x=designs)
def test_whitening_matrix_is_the_symmetric_positive_inverse_square_root_of_the_covariance(x):
    w = preprocessing.whitening_matrix(x)
    centered = x - x.mean(axis=0)
    cov = centered.T @ centered / x.shape[0]
    np.testing.assert_allclose(w, w.T, rtol=0, atol=1e-12 * np.abs(w).max())  # ZCA, not PCA
    assert np.linalg.eigvalsh((w + w.T) / 2)[0] > 0
    np.testing.assert_allclose(w @ w @ cov, np.eye(x.shape[1]), atol=1e-9)


def test_whiten_leaves_already_white_data_nearly_unchanged():
    # ZCA is the rotation-free whitening: near-white data is moved only a little
    rng = np.random.default_rng(2)
    x = preprocessing.whiten(rng.standard_normal((500, 3)))
    np.testing.assert_allclose(preprocessing.whiten(x), x, atol=1e-10)
    np.testing.assert_allclose(preprocessing.whitening_matrix(x), np.eye(3), atol=1e-10)


@pytest.mark.parametrize("design", ["duplicated column", "scaled copy", "constant column",
                                    "fewer samples than features"])
def test_whitening_a_singular_design_raises(design):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 3))
    if design == "duplicated column":
        x[:, 2] = x[:, 0]
    elif design == "scaled copy":
        x[:, 2] = -3.0 * x[:, 1]
    elif design == "constant column":
        x[:, 1] = 7.0
    else:
        x = x[:3]  # 3 samples, centred rank 2 < 3 features
    with pytest.raises(ValueError, match="covariance is singular"):
        preprocessing.whitening_matrix(x)
    with pytest.raises(ValueError, match="covariance is singular"):
        preprocessing.whiten(x)


# ----------------------------------------------------------------------------
# add_intercept and the chapter's claim


def test_add_intercept_appends_a_column_of_ones():
    x = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(preprocessing.add_intercept(x),
                                  [[0.0, 1.0, 1.0], [2.0, 3.0, 1.0], [4.0, 5.0, 1.0]])


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_whitened_inputs_with_intercept_give_a_perfectly_conditioned_hessian(seed):
    x = _correlated_design(300, 5, seed=seed, max_scale=20.0)
    raw = _condition_number(preprocessing.least_squares_hessian(preprocessing.add_intercept(x)))
    standardized = _condition_number(
        preprocessing.least_squares_hessian(preprocessing.add_intercept(preprocessing.standardize(x))))
    h = preprocessing.least_squares_hessian(preprocessing.add_intercept(preprocessing.whiten(x)))
    assert raw > 100 and standardized > 1.5  # the problem being solved is real
    np.testing.assert_allclose(h, np.eye(6), atol=1e-10)
    assert _condition_number(h) == pytest.approx(1.0, abs=1e-9)


# ----------------------------------------------------------------------------
# validation

FUNCTIONS = [preprocessing.least_squares_hessian, preprocessing.standardize,
             preprocessing.whitening_matrix, preprocessing.whiten, preprocessing.add_intercept]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_raises(fn, bad):
    x = np.random.default_rng(0).standard_normal((10, 2))
    x[4, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(x)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_input_that_is_not_a_matrix_raises(fn, shape):
    with pytest.raises(ValueError, match=r"2-D array of shape \(samples, features\); got shape"):
        fn(np.ones(shape))


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_single_sample_raises(fn):
    with pytest.raises(ValueError, match="at least 2 samples to compute statistics; got 1"):
        fn(np.ones((1, 3)))
