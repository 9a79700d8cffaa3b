"""Tests for normlab.quadratic: the quadratic model and gradient descent on it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from normlab import quadratic
from normlab.quadratic import Quadratic

# Spectra of convex quadratics: a zero eigenvalue (a flat direction) is allowed.
spectra = st.lists(st.floats(0.0, 10.0, allow_subnormal=False), min_size=1, max_size=6)
# Spectra of strictly convex, reasonably conditioned quadratics (κ <= 100).
positive_spectra = st.lists(st.floats(0.1, 10.0), min_size=1, max_size=6)
seeds = st.integers(0, 2**32 - 1)


def _point(problem: Quadratic, seed: int, scale: float = 1.0) -> np.ndarray:
    return problem.minimizer + scale * np.random.default_rng(seed + 1).standard_normal(problem.dim)


def _central_difference(f, theta: np.ndarray, h: float) -> np.ndarray:
    grad = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        grad[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return grad


# ----------------------------------------------------------------------------
# Quadratic: loss, gradient, spectrum


@settings(max_examples=40, deadline=None)
@given(eigenvalues=spectra, seed=seeds)
def test_gradient_matches_central_finite_difference_of_loss(eigenvalues, seed):
    problem = quadratic.random_quadratic(eigenvalues, seed=seed)
    theta = _point(problem, seed)
    # For a quadratic the central difference has no truncation error, only rounding.
    numeric = _central_difference(problem.loss, theta, h=1e-3)
    scale = 1.0 + np.abs(problem.hessian).max() * (1.0 + np.abs(theta - problem.minimizer).max())
    np.testing.assert_allclose(problem.gradient(theta), numeric, rtol=0, atol=1e-8 * scale)


def test_loss_is_minimum_at_minimizer_and_matches_formula_on_a_batch_of_rows():
    h = np.array([[2.0, 1.0], [1.0, 3.0]])
    problem = Quadratic(hessian=h, minimizer=np.array([1.0, -1.0]), minimum=0.5)
    thetas = np.array([[1.0, -1.0], [2.0, -1.0], [0.0, 1.0]])
    d = thetas - problem.minimizer
    expected = 0.5 + 0.5 * np.array([di @ h @ di for di in d])
    np.testing.assert_allclose(problem.loss(thetas), expected, rtol=1e-14)
    assert problem.loss(problem.minimizer) == 0.5
    np.testing.assert_allclose(problem.gradient(thetas[1]), h @ d[1], rtol=1e-14)


@settings(max_examples=30, deadline=None)
@given(eigenvalues=spectra, seed=seeds)
def test_eigenvectors_diagonalize_the_hessian_with_eigenvalues_in_increasing_order(eigenvalues, seed):
    problem = quadratic.random_quadratic(eigenvalues, seed=seed)
    q, lam = problem.eigenvectors, problem.eigenvalues
    assert np.all(np.diff(lam) >= 0)
    np.testing.assert_allclose(q.T @ q, np.eye(problem.dim), atol=1e-12)
    np.testing.assert_allclose(problem.hessian @ q, q * lam, atol=1e-12 * (1 + lam.max()))


# ----------------------------------------------------------------------------
# random_quadratic and quadratic_2d


@settings(max_examples=40, deadline=None)
@given(eigenvalues=spectra, seed=seeds)
def test_random_quadratic_has_exactly_the_requested_eigenvalues(eigenvalues, seed):
    problem = quadratic.random_quadratic(eigenvalues, seed=seed)
    assert problem.hessian.shape == (len(eigenvalues), len(eigenvalues))
    np.testing.assert_array_equal(problem.hessian, problem.hessian.T)
    np.testing.assert_allclose(np.linalg.eigvalsh(problem.hessian), np.sort(eigenvalues),
                               rtol=0, atol=1e-12 * (1 + max(eigenvalues)))


def test_random_quadratic_is_deterministic_by_seed():
    a = quadratic.random_quadratic([0.5, 1.0, 4.0], seed=7)
    b = quadratic.random_quadratic([0.5, 1.0, 4.0], seed=7)
    np.testing.assert_array_equal(a.hessian, b.hessian)
    np.testing.assert_array_equal(a.minimizer, b.minimizer)


def test_random_quadratic_differs_across_seeds():
    a = quadratic.random_quadratic([0.5, 1.0, 4.0], seed=7)
    b = quadratic.random_quadratic([0.5, 1.0, 4.0], seed=8)
    assert not np.allclose(a.hessian, b.hessian)
    assert not np.allclose(a.minimizer, b.minimizer)


def test_random_quadratic_rotates_away_from_the_coordinate_axes():
    problem = quadratic.random_quadratic([1.0, 10.0, 100.0], seed=0)
    off_diagonal = problem.hessian - np.diag(np.diag(problem.hessian))
    assert np.abs(off_diagonal).max() > 1.0


def test_random_quadratic_uses_the_given_minimizer():
    problem = quadratic.random_quadratic([1.0, 2.0], seed=3, minimizer=[4.0, -5.0])
    np.testing.assert_array_equal(problem.minimizer, [4.0, -5.0])
    assert problem.loss(np.array([4.0, -5.0])) == 0.0


@pytest.mark.parametrize("kappa", [1.0, 2.0, 10.0, 1e4])
@pytest.mark.parametrize("angle", [0.0, 0.3, np.pi / 4, 2.0])
def test_quadratic_2d_has_condition_number_kappa_along_rotated_axes(kappa, angle):
    problem = quadratic.quadratic_2d(kappa, angle=angle, lam_max=3.0)
    assert problem.condition_number == pytest.approx(kappa, rel=1e-9)
    np.testing.assert_allclose(problem.eigenvalues, [3.0 / kappa, 3.0], rtol=1e-9)
    np.testing.assert_array_equal(problem.minimizer, [0.0, 0.0])
    c, s = np.cos(angle), np.sin(angle)
    # the λmax axis is the first axis rotated by 90° + angle, the λmin axis by angle
    np.testing.assert_allclose(problem.hessian @ [c, s], 3.0 / kappa * np.array([c, s]), atol=1e-12)
    np.testing.assert_allclose(problem.hessian @ [-s, c], 3.0 * np.array([-s, c]), atol=1e-12)


def test_condition_number_is_infinite_for_a_singular_hessian():
    assert quadratic.random_quadratic([0.0, 1.0]).condition_number == np.inf


# ----------------------------------------------------------------------------
# gradient descent and its closed form


@settings(max_examples=40, deadline=None)
@given(eigenvalues=positive_spectra, lr_times_lam_max=st.floats(0.05, 2.4),
       steps=st.integers(0, 40), seed=seeds)
def test_gradient_descent_matches_eigenbasis_closed_form(eigenvalues, lr_times_lam_max, steps, seed):
    """Monotone, oscillating and divergent step sizes: η λmax ranges over (0, 2.4)."""
    problem = quadratic.random_quadratic(eigenvalues, seed=seed)
    lr = lr_times_lam_max / max(eigenvalues)
    theta0 = _point(problem, seed, scale=3.0)
    iterates = quadratic.gradient_descent(problem, theta0, lr, steps)
    closed_form = quadratic.eigen_dynamics(problem, theta0, lr, steps)
    assert iterates.shape == closed_form.shape == (steps + 1, problem.dim)
    np.testing.assert_array_equal(iterates[0], theta0)
    # relative to the size the iterates can reach: ‖θ0 − θ*‖ · max(1, rate)^t
    rate = np.abs(quadratic.contraction_factors(eigenvalues, lr)).max()
    size = np.linalg.norm(theta0 - problem.minimizer) * max(1.0, rate) ** np.arange(steps + 1)
    error = np.linalg.norm(iterates - closed_form, axis=1)
    assert np.all(error <= 1e-10 * (1.0 + size)), (error / (1.0 + size)).max()


def test_gradient_descent_diverges_along_the_top_direction_when_eta_exceeds_two_over_lambda():
    problem = quadratic.quadratic_2d(4.0)  # eigenvalues 0.25 (axis x) and 1 (axis y)
    path = quadratic.gradient_descent(problem, [1.0, 1.0], lr=2.5, steps=10)
    # x contracts by 1 − 2.5·0.25 = 0.375, y flips and grows by 1 − 2.5 = −1.5
    np.testing.assert_allclose(path[:, 0], 0.375 ** np.arange(11), rtol=1e-12)
    np.testing.assert_allclose(path[:, 1], (-1.5) ** np.arange(11), rtol=1e-12)


def test_contraction_factors_are_one_minus_eta_lambda():
    np.testing.assert_allclose(quadratic.contraction_factors([0.0, 1.0, 4.0], 0.5), [1.0, 0.5, -1.0])


# ----------------------------------------------------------------------------
# regime


@pytest.mark.parametrize(("lr", "eigenvalue", "expected"), [
    (0.5, 1.0, "monotone"),
    (1.0 - 1e-6, 1.0, "monotone"),
    (1.0, 1.0, "one step"),
    (1 / 3, 3.0, "one step"),          # ηλ = 1 only up to rounding
    (1.0 + 1e-6, 1.0, "oscillating"),
    (1.5, 1.0, "oscillating"),
    (2.0 - 1e-6, 1.0, "oscillating"),
    (2.0, 1.0, "stuck oscillating"),
    (2 / 3, 3.0, "stuck oscillating"),  # ηλ = 2 only up to rounding
    (0.1, 20.0, "stuck oscillating"),
    (2.0 + 1e-6, 1.0, "divergent"),
    (5.0, 1.0, "divergent"),
    (0.7, 0.0, "flat"),
])
def test_regime_at_and_around_each_boundary(lr, eigenvalue, expected):
    assert quadratic.regime(lr, eigenvalue) == expected


@settings(max_examples=60, deadline=None)
@given(eta_lambda=st.floats(0.01, 3.0), eigenvalue=st.floats(0.1, 10.0))
def test_regime_describes_the_simulated_eigen_coordinate(eta_lambda, eigenvalue):
    assume(min(abs(eta_lambda - 1.0), abs(eta_lambda - 2.0)) > 1e-6)
    lr = eta_lambda / eigenvalue
    problem = Quadratic(hessian=np.array([[eigenvalue]]), minimizer=np.zeros(1))
    v = quadratic.gradient_descent(problem, [1.0], lr, steps=6)[:, 0]
    size, sign_changes = np.abs(v), np.diff(np.sign(v)) != 0
    label = quadratic.regime(lr, eigenvalue)
    if label == "monotone":
        assert np.all(v > 0) and np.all(np.diff(v) < 0)
    elif label == "oscillating":
        assert np.all(sign_changes) and np.all(np.diff(size) < 0)
    elif label == "divergent":
        assert np.all(sign_changes) and np.all(np.diff(size) > 0)
    else:
        pytest.fail(f"unexpected regime {label!r} for ηλ = {eta_lambda}")


def test_one_step_reaches_the_minimum_and_stuck_oscillation_keeps_its_size():
    problem = Quadratic(hessian=np.array([[4.0]]), minimizer=np.array([1.0]))
    one_step = quadratic.gradient_descent(problem, [3.0], lr=0.25, steps=3)[:, 0]
    np.testing.assert_array_equal(one_step, [3.0, 1.0, 1.0, 1.0])
    stuck = quadratic.gradient_descent(problem, [3.0], lr=0.5, steps=4)[:, 0]
    np.testing.assert_array_equal(stuck, [3.0, -1.0, 3.0, -1.0, 3.0])


# ----------------------------------------------------------------------------
# learning rates


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_descent_converges_just_below_max_stable_lr_and_diverges_just_above(seed):
    eigenvalues = [0.5, 1.0, 2.0, 5.0]
    problem = quadratic.random_quadratic(eigenvalues, seed=seed)
    eta_max = quadratic.max_stable_lr(problem.hessian)
    assert eta_max == pytest.approx(2.0 / 5.0, rel=1e-12)
    theta0 = _point(problem, seed)
    start = np.linalg.norm(theta0 - problem.minimizer)
    below = quadratic.gradient_descent(problem, theta0, 0.99 * eta_max, steps=2000)[-1]
    above = quadratic.gradient_descent(problem, theta0, 1.01 * eta_max, steps=2000)[-1]
    assert np.linalg.norm(below - problem.minimizer) < 1e-8 * start
    assert np.linalg.norm(above - problem.minimizer) > 1e8 * start


@settings(max_examples=40, deadline=None)
@given(eigenvalues=positive_spectra, seed=seeds)
def test_optimal_lr_minimizes_the_slowest_contraction_over_a_fine_grid(eigenvalues, seed):
    problem = quadratic.random_quadratic(eigenvalues, seed=seed)
    lam_min, lam_max = min(eigenvalues), max(eigenvalues)

    def slowest(lr):
        return np.abs(1.0 - np.multiply.outer(lr, np.asarray(eigenvalues))).max(axis=-1)

    grid = np.linspace(0.0, 2.5 / lam_max, 20001)
    rates = slowest(grid)
    eta = quadratic.optimal_lr(problem.hessian)
    assert slowest(eta) <= rates.min() + 1e-12
    assert abs(eta - grid[np.argmin(rates)]) <= grid[1] - grid[0]
    kappa = lam_max / lam_min
    assert slowest(eta) == pytest.approx((kappa - 1) / (kappa + 1), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(eigenvalues=st.lists(st.floats(0.1, 1.0), min_size=1, max_size=5),
       lr_times_lam_max=st.floats(0.05, 1.95), tol=st.floats(1e-6, 0.5))
def test_steps_to_tolerance_is_the_first_step_where_the_simulated_run_reaches_tol(
        eigenvalues, lr_times_lam_max, tol):
    lr = lr_times_lam_max / max(eigenvalues)
    factors = 1.0 - lr * np.asarray(eigenvalues)
    rate = np.abs(factors).max()
    exact = np.log(tol) / np.log(rate)
    assume(abs(exact - np.round(exact)) > 1e-6)  # away from ties decided by rounding
    # every eigen-coordinate starts at 1; iterate v ← (1 − ηλ) v until all are within tol
    v, t = np.ones(len(eigenvalues)), 0
    while np.abs(v).max() > tol:
        v, t = factors * v, t + 1
    assert quadratic.steps_to_tolerance(eigenvalues, lr, tol) == t


def test_steps_to_tolerance_on_exact_powers_of_the_rate():
    # factors 0.5 and 0.25, rate 0.5: 0.5^10 = tol exactly, so 10 steps, not 11
    assert quadratic.steps_to_tolerance([1.0, 1.5], lr=0.5, tol=0.5**10) == 10.0
    assert quadratic.steps_to_tolerance([1.0, 1.5], lr=0.5, tol=0.5**10 * 0.999) == 11.0
    assert quadratic.steps_to_tolerance([2.0], lr=0.5, tol=1e-9) == 1.0  # rate 0: one step


@pytest.mark.parametrize("k", [2, 5, 13, 24])
def test_steps_to_tolerance_counts_an_exact_power_as_reached_despite_rounding_in_the_logs(k):
    # ln(0.99**k) / ln(0.99) rounds to slightly above k; the answer is still k steps
    tol = 0.99**k
    assert np.log(tol) / np.log(0.99) > k
    assert quadratic.steps_to_tolerance([1.0], lr=0.01, tol=tol) == k


@pytest.mark.parametrize(("eigenvalues", "lr"), [
    ([1.0, 3.0], 1.0),      # 1 − 3η = −2: divergent
    ([1.0, 2.0], 1.0),      # 1 − 2η = −1: stuck oscillating
    ([0.0, 1.0], 0.5),      # flat direction: factor 1
])
def test_steps_to_tolerance_is_infinite_when_a_direction_does_not_shrink(eigenvalues, lr):
    assert quadratic.steps_to_tolerance(eigenvalues, lr, tol=1e-3) == np.inf
    v = quadratic.contraction_factors(eigenvalues, lr) ** 1000
    assert np.abs(v).max() >= 1.0


# ----------------------------------------------------------------------------
# descent threshold


@settings(max_examples=40, deadline=None)
@given(eigenvalues=positive_spectra, seed=seeds)
def test_descent_threshold_is_where_the_step_stops_lowering_the_quadratic_loss(eigenvalues, seed):
    problem = quadratic.random_quadratic(eigenvalues, seed=seed)
    theta = _point(problem, seed)
    g = problem.gradient(theta)
    alpha = quadratic.descent_threshold(g, problem.hessian)
    before = problem.loss(theta)
    assert problem.loss(theta - alpha * g) == pytest.approx(before, rel=1e-9)
    assert problem.loss(theta - 0.99 * alpha * g) < before
    assert problem.loss(theta - 1.01 * alpha * g) > before


def test_descent_threshold_along_an_eigenvector_is_two_over_lambda():
    problem = quadratic.random_quadratic([0.5, 2.0, 8.0], seed=4)
    v = problem.eigenvectors[:, 1]
    g = problem.gradient(problem.minimizer + 3.0 * v)  # = 2.0 · 3 v
    assert quadratic.descent_threshold(g, problem.hessian) == pytest.approx(2.0 / 2.0, rel=1e-12)


def test_descent_threshold_is_infinite_without_positive_curvature_along_the_gradient():
    h = np.diag([1.0, -1.0])
    assert quadratic.descent_threshold(np.array([0.0, 1.0]), h) == np.inf
    assert quadratic.descent_threshold(np.zeros(2), h) == np.inf


# ----------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(("hessian", "minimizer", "message"), [
    (np.ones((2, 3)), np.zeros(2), r"square matrix; got shape \(2, 3\)"),
    (np.ones(4), np.zeros(4), r"square matrix; got shape \(4,\)"),
    (np.ones((2, 2, 2)), np.zeros(2), "square matrix"),
    (np.array([[1.0, 2.0], [0.0, 1.0]]), np.zeros(2), "symmetric"),
    (np.eye(3), np.zeros(2), r"minimizer must have shape \(3,\); got \(2,\)"),
    (np.eye(2), np.zeros((2, 1)), r"minimizer must have shape \(2,\)"),
])
def test_quadratic_rejects_invalid_hessian_or_minimizer(hessian, minimizer, message):
    with pytest.raises(ValueError, match=message):
        Quadratic(hessian=hessian, minimizer=minimizer)


def test_quadratic_accepts_a_hessian_symmetric_up_to_rounding():
    h = np.array([[2.0, 1.0], [1.0 + 1e-13, 3.0]])
    assert Quadratic(hessian=h, minimizer=np.zeros(2)).dim == 2


def test_random_quadratic_rejects_a_negative_eigenvalue():
    with pytest.raises(ValueError, match="non-negative"):
        quadratic.random_quadratic([1.0, -0.1])


def test_random_quadratic_rejects_an_empty_spectrum():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        quadratic.random_quadratic([])


def test_regime_rejects_a_negative_eigenvalue():
    with pytest.raises(ValueError, match=">= 0; got -1.0"):
        quadratic.regime(0.1, -1.0)


def test_quadratic_2d_rejects_condition_number_below_one():
    with pytest.raises(ValueError, match="at least 1; got 0.5"):
        quadratic.quadratic_2d(0.5)


@pytest.mark.parametrize("tol", [0.0, 1.0, -0.1, 1.5])
def test_steps_to_tolerance_rejects_tol_outside_open_unit_interval(tol):
    with pytest.raises(ValueError, match=r"tol must be in \(0, 1\)"):
        quadratic.steps_to_tolerance([1.0], lr=0.5, tol=tol)
