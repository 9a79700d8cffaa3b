"""The checkers of chapter "Why normalize?": a zoo of wrong attempts, each failing with the right
diagnosis, and independently written correct solutions, each passing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from normlab import preprocessing, quadratic
from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import why_normalize as check

from zoo import first_message

message_of = first_message

pytestmark = pytest.mark.usefixtures("student_mode")

CHECKERS = [check.gd_step, check.max_stable_lr, check.steps_to_tolerance, check.standardize_columns]


# --------------------------------------------------------------------------- the exercises themselves


def test_hints_are_revealed_one_tier_per_failed_attempt():
    wrong = lambda theta, hessian, minimizer, lr: theta  # noqa: E731
    first = " ".join(check.gd_step(wrong).messages)
    assert "Hint 1 of 2" in first and "Hint 2 of 2" not in first
    second = " ".join(check.gd_step(wrong).messages)
    assert "Hint 2 of 2" in second


def test_strict_mode_raises_on_a_wrong_solution(monkeypatch):
    monkeypatch.setenv(STRICT_ENV_VAR, "1")
    with pytest.raises(AssertionError, match="gd_step"):
        check.gd_step(lambda theta, hessian, minimizer, lr: theta)


def test_stub_is_reported_as_not_implemented():
    def gd_step(theta, hessian, minimizer, lr):
        raise NotImplementedError("gd_step: not written yet")

    result = check.gd_step(gd_step)
    assert not result.passed and "not implemented yet" in message_of(result)


# --------------------------------------------------------------------------- gd_step


def gd_step_numpy(theta, hessian, minimizer, lr):
    displacement = np.subtract(theta, minimizer)
    return theta - lr * np.dot(hessian, displacement)


def gd_step_torch(theta, hessian, minimizer, lr):
    t, h, m = (torch.as_tensor(a) for a in (theta, hessian, minimizer))
    return t - lr * torch.mv(h, t - m)


def gd_step_loops(theta, hessian, minimizer, lr):
    d = len(theta)
    new = []
    for i in range(d):
        g_i = sum(hessian[i][j] * (theta[j] - minimizer[j]) for j in range(d))
        new.append(theta[i] - lr * g_i)
    return new  # a list: accepted where an array is expected


@pytest.mark.parametrize("solution", [gd_step_numpy, gd_step_torch, gd_step_loops],
                         ids=["numpy", "torch", "loops-list"])
def test_correct_gd_step_passes(solution):
    assert check.gd_step(solution).passed


@pytest.mark.parametrize("wrong, phrase", [
    (lambda theta, hessian, minimizer, lr: theta + lr * hessian @ (theta - minimizer), "uphill"),
    (lambda theta, hessian, minimizer, lr: theta - lr * hessian @ (minimizer - theta), "uphill"),
    (lambda theta, hessian, minimizer, lr: theta - lr * hessian @ theta, "minimizer θ* is 0"),
    (lambda theta, hessian, minimizer, lr: theta - lr / 2 * hessian @ (theta - minimizer), "half as long"),
    (lambda theta, hessian, minimizer, lr: -lr * hessian @ (theta - minimizer), "the step (the change of θ)"),
    (lambda theta, hessian, minimizer, lr: theta - lr * np.diagonal(hessian) * (theta - minimizer),
     "only the diagonal of H"),
    (lambda theta, hessian, minimizer, lr: theta - lr * hessian * (theta - minimizer), "Broadcasting"),
    (lambda theta, hessian, minimizer, lr: quadratic.gradient_descent(
        quadratic.Quadratic(hessian, minimizer), theta, lr, 1)[-1], "you called `normlab.quadratic"),
    (lambda theta, hessian, minimizer, lr: theta - lr * quadratic.Quadratic(hessian, minimizer).gradient(theta),
     "you called `normlab.quadratic.Quadratic.gradient`"),
], ids=["ascent", "displacement-reversed", "forgot-minimizer", "half-step", "step-only", "diagonal",
        "elementwise-product", "shortcut-gradient-descent", "shortcut-gradient"])
def test_wrong_gd_step_is_named(wrong, phrase):
    assert phrase in message_of(check.gd_step(wrong))


# --------------------------------------------------------------------------- max_stable_lr


def max_stable_lr_power_iteration(hessian):
    v = np.ones(len(hessian))
    for _ in range(500):
        v = hessian @ v
        v = v / np.linalg.norm(v)
    return 2.0 / float(v @ hessian @ v)


def max_stable_lr_torch(hessian):
    return 2 / torch.linalg.eigvalsh(torch.as_tensor(hessian)).max().item()


def max_stable_lr_spectral_norm(hessian):
    return 2.0 / np.linalg.norm(hessian, ord=2)


@pytest.mark.parametrize("solution", [max_stable_lr_power_iteration, max_stable_lr_torch,
                                      max_stable_lr_spectral_norm],
                         ids=["power-iteration", "torch", "spectral-norm"])
def test_correct_max_stable_lr_passes(solution):
    assert check.max_stable_lr(solution).passed


@pytest.mark.parametrize("wrong, phrase", [
    (lambda hessian: 1.0 / np.linalg.eigvalsh(hessian).max(), "kills the steepest direction in one step"),
    (lambda hessian: 2.0 / np.linalg.eigvalsh(hessian).min(), "smallest eigenvalue"),
    (lambda hessian: 2.0 / np.diag(hessian).max(), "diagonal entry"),
    (lambda hessian: 2.0 / np.trace(hessian), "trace"),
    (lambda hessian: 2.0 / np.linalg.norm(hessian), "Frobenius"),
    (lambda hessian: 2.0 / np.linalg.eigvalsh(hessian), "shape"),
    (lambda hessian: quadratic.max_stable_lr(hessian), "you called `normlab.quadratic.max_stable_lr`"),
], ids=["one-over-lambda-max", "lambda-min", "diagonal", "trace", "frobenius", "every-eigenvalue", "shortcut"])
def test_wrong_max_stable_lr_is_named(wrong, phrase):
    assert phrase in message_of(check.max_stable_lr(wrong))


# --------------------------------------------------------------------------- steps_to_tolerance


def steps_closed_form(eigenvalues, lr, tol):
    rate = max(abs(1 - lr * lam) for lam in eigenvalues)
    if rate >= 1:
        return math.inf
    return math.ceil(math.log(tol) / math.log(rate) - 1e-9)  # an int: accepted


def steps_by_simulation(eigenvalues, lr, tol):
    factors = np.abs(1 - lr * np.asarray(eigenvalues, dtype=float))
    if factors.max() >= 1:
        return float("inf")
    error, t = np.ones_like(factors), 0
    while np.any(error > tol):
        error = error * factors
        t += 1
    return float(t)


@pytest.mark.parametrize("solution", [steps_closed_form, steps_by_simulation], ids=["closed-form", "simulation"])
def test_correct_steps_to_tolerance_passes(solution):
    assert check.steps_to_tolerance(solution).passed


def _log_ratio(eigenvalues, lr, tol, rate_of):
    return math.log(tol) / math.log(rate_of(np.asarray(eigenvalues), lr))


@pytest.mark.parametrize("wrong, phrase", [
    (lambda lam, lr, tol: math.ceil(_log_ratio(lam, lr, tol, lambda l, e: abs(1 - e * l.min()))),
     "smallest eigenvalue only"),
    (lambda lam, lr, tol: math.ceil(_log_ratio(lam, lr, tol, lambda l, e: (1 - e * l).max())),
     "smallest eigenvalue only"),
    (lambda lam, lr, tol: math.floor(_log_ratio(lam, lr, tol, lambda l, e: np.abs(1 - e * l).max())),
     "Round up"),
    (lambda lam, lr, tol: math.ceil(_log_ratio(lam, lr, tol, lambda l, e: np.abs(1 - e * l).max())),
     "float('inf')"),
    (lambda lam, lr, tol: steps_by_simulation(lam, lr, tol) + 1, "One step too many"),
    (lambda lam, lr, tol: math.log(tol) / math.log(np.abs(1 - lr * np.asarray(lam)).max()), "not a whole number"),
    (lambda lam, lr, tol: quadratic.steps_to_tolerance(lam, lr, tol),
     "you called `normlab.quadratic.steps_to_tolerance`"),
], ids=["lambda-min", "no-absolute-value", "floor", "divergence-not-detected", "one-too-many", "not-rounded",
        "shortcut"])
def test_wrong_steps_to_tolerance_is_named(wrong, phrase):
    assert phrase in message_of(check.steps_to_tolerance(wrong))


def test_a_simulation_that_never_stops_on_a_diverging_case_is_stopped():
    def simulate_forever(eigenvalues, lr, tol):
        factors = np.abs(1 - lr * np.asarray(eigenvalues))
        error, t = np.ones_like(factors), 0
        while np.any(error > tol):
            error, t = error * factors, t + 1
        return float(t)

    result = check.steps_to_tolerance(simulate_forever)
    assert result.status == "timed out" and "diverges" in message_of(result)


# --------------------------------------------------------------------------- standardize_columns


def standardize_keepdims(x):
    mean = np.mean(x, axis=0, keepdims=True)
    std = np.sqrt(np.mean((x - mean) ** 2, axis=0, keepdims=True))
    return (x - mean) / std


def standardize_torch(x):
    t = torch.as_tensor(x)
    return (t - t.mean(dim=0)) / t.std(dim=0, correction=0)


def standardize_loops(x):
    n, d = len(x), len(x[0])
    out = [[0.0] * d for _ in range(n)]
    for j in range(d):
        column = [x[i][j] for i in range(n)]
        mean = sum(column) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in column) / n)
        for i in range(n):
            out[i][j] = (column[i] - mean) / std
    return out  # a list of lists: accepted


@pytest.mark.parametrize("solution", [standardize_keepdims, standardize_torch, standardize_loops],
                         ids=["numpy-keepdims", "torch", "loops-list"])
def test_correct_standardize_columns_passes(solution):
    assert check.standardize_columns(solution).passed


@pytest.mark.parametrize("wrong, phrase", [
    (lambda x: (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True), "each row"),
    (lambda x: x / x.std(axis=0), "did not subtract the mean"),
    (lambda x: x - x.mean(axis=0), "did not scale"),
    (lambda x: (x - x.mean(axis=0)) / x.var(axis=0), "divided by the variance"),
    (lambda x: (x - x.mean(axis=0)) / x.std(axis=0, ddof=1), "n − 1"),
    (lambda x: (x - x.mean()) / x.std(), "whole matrix"),
    (lambda x: (x - x.mean(axis=1)) / x.std(axis=1), "shape"),
    (lambda x: preprocessing.standardize(x), "you called `normlab.preprocessing.standardize`"),
    (lambda x: __import__("scipy.stats").stats.zscore(x), "you called `scipy.stats.zscore`"),
], ids=["rows", "not-centred", "not-scaled", "variance", "unbiased-std", "global", "rows-no-keepdims",
        "shortcut-normlab", "shortcut-scipy"])
def test_wrong_standardize_columns_is_named(wrong, phrase):
    assert phrase in message_of(check.standardize_columns(wrong))
