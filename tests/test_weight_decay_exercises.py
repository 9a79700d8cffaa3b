"""The checkers of the weight-decay chapter against a zoo of student attempts: independent
correct solutions pass, typical wrong ones fail with the diagnosis that names their mistake,
and the functions of normlab.scale_invariance are refused by name."""

import math

import numpy as np
import pytest
import torch

from normlab import scale_invariance as si
from normlab.exercises import reset_attempts
from normlab.exercises import weight_decay as check


pytestmark = pytest.mark.usefixtures("student_mode")


def failure(result):
    assert not result.passed, result
    return " ".join(result.messages)


# --------------------------------------------------------------------------- effective_learning_rates


def effective_einsum(weight, lr):
    return lr / np.einsum("ij,ij->i", weight, weight)


def effective_torch(weight, lr):
    return lr / torch.linalg.vector_norm(torch.from_numpy(weight), dim=1) ** 2


def effective_rows_loop(weight, lr):
    return [lr / sum(v * v for v in row) for row in weight]    # a list


@pytest.mark.parametrize("solution", [effective_einsum, effective_torch, effective_rows_loop])
def test_independent_effective_learning_rates_pass(solution):
    result = check.effective_learning_rates(solution)
    assert result.passed, result


@pytest.mark.parametrize("wrong, words", [
    (lambda w, lr: lr / np.linalg.norm(w, axis=1), "You divided by ‖w_i‖"),
    (lambda w, lr: np.full(len(w), lr / np.linalg.norm(w) ** 2), "norm of the whole matrix"),
    (lambda w, lr: lr / (w**2).sum(axis=0), "norms over columns"),
    (lambda w, lr: lr * (w**2).sum(axis=1), "multiplied by the squared norm"),
    (lambda w, lr: lr / (w**2).mean(axis=1), "mean of the squared weights"),
    (lambda w, lr: lr / (w**2).sum(axis=1, keepdims=True), "differ only by an axis of size 1"),
])
def test_wrong_effective_learning_rates_are_named(wrong, words):
    assert words in failure(check.effective_learning_rates(wrong))


def test_the_library_effective_learning_rate_is_refused_by_name():
    def with_the_library(weight, lr):
        return si.effective_learning_rate(torch.from_numpy(weight), lr).numpy()

    assert "you called `normlab.scale_invariance.effective_learning_rate`" in failure(
        check.effective_learning_rates(with_the_library))


# --------------------------------------------------------------------------- norm_after_steps


def norms_squared_recursion(norm0, grad_norms, lr, weight_decay):
    """Recursion on the squared norm, square roots at the end; math.sqrt, a list output."""
    squared = [norm0**2]
    for g in grad_norms:
        squared.append((1 - lr * weight_decay) ** 2 * squared[-1] + lr**2 * g**2)
    return [math.sqrt(s) for s in squared]


def norms_preallocated(norm0, grad_norms, lr, weight_decay):
    k = len(grad_norms)
    out = np.empty(k + 1)
    out[0] = norm0
    for t in range(k):
        out[t + 1] = np.hypot((1 - lr * weight_decay) * out[t], lr * grad_norms[t])
    return out


def norms_closed_form(norm0, grad_norms, lr, weight_decay):
    """Unrolled: ‖w_t‖² = q^t ‖w_0‖² + η² Σ_s q^(t−1−s) ‖g_s‖², q = (1 − ηλ)², with cumulative sums."""
    q = (1 - lr * weight_decay) ** 2
    g2 = np.asarray(grad_norms, dtype=float) ** 2
    norms = [norm0]
    for t in range(1, len(g2) + 1):
        powers = q ** np.arange(t - 1, -1, -1)
        norms.append(np.sqrt(q**t * norm0**2 + lr**2 * np.sum(powers * g2[:t])))
    return tuple(norms)                                         # a tuple


@pytest.mark.parametrize("solution", [norms_squared_recursion, norms_preallocated, norms_closed_form])
def test_independent_norm_trajectories_pass(solution):
    result = check.norm_after_steps(solution)
    assert result.passed, result


def trajectory(step, include_start=True):
    def attempt(norm0, grad_norms, lr, weight_decay):
        norms, n = ([norm0] if include_start else []), norm0
        for g in grad_norms:
            n = step(n, g, lr, weight_decay)
            norms.append(n)
        return np.array(norms)
    return attempt


@pytest.mark.parametrize("wrong, words", [
    (trajectory(lambda n, g, lr, wd: np.sqrt(n**2 + lr**2 * g**2)), "ignore the weight decay"),
    (trajectory(lambda n, g, lr, wd: np.sqrt((1 - lr * wd) * n**2 + lr**2 * g**2)), "square of that factor"),
    (trajectory(lambda n, g, lr, wd: (1 - lr * wd) * n + lr * g), "add their squares"),
    (trajectory(lambda n, g, lr, wd: np.sqrt((1 - lr * wd) ** 2 * n**2 + lr * g**2)), "carries η², not η"),
    (trajectory(lambda n, g, lr, wd: (1 - lr * wd) * np.sqrt(n**2 + lr**2 * g**2)), "decay to the whole step"),
    (lambda n0, gs, lr, wd: trajectory(lambda n, g, lr, wd: np.hypot((1 - lr * wd) * n, lr * g))(n0, gs, lr, wd)[-1],
     "not only the last one"),
    (trajectory(lambda n, g, lr, wd: np.hypot((1 - lr * wd) * n, lr * g), include_start=False),
     "one value too few along axis 0 (the others are right: the first value is missing)"),
    (lambda n0, gs, lr, wd: trajectory(lambda n, g, lr, wd: np.hypot((1 - lr * wd) * n, lr * g))(
        n0, np.r_[gs, gs[-1]], lr, wd), "one value too many"),
])
def test_wrong_norm_trajectories_are_named(wrong, words):
    assert words in failure(check.norm_after_steps(wrong))


def test_the_library_norm_step_is_refused_by_name():
    def with_the_library(norm0, grad_norms, lr, weight_decay):
        norms = [norm0]
        for g in grad_norms:
            norms.append(si.norm_after_step(norms[-1], g, lr, weight_decay))
        return np.array(norms)

    assert "you called `normlab.scale_invariance.norm_after_step`" in failure(check.norm_after_steps(with_the_library))


# --------------------------------------------------------------------------- equilibrium_norm


def equilibrium_from_angle(lr, weight_decay, unit_grad_norm):
    """From the equilibrium angle: η‖ĝ‖/r² = √(ηλ(2 − ηλ))."""
    return math.sqrt(lr * unit_grad_norm / math.sqrt(lr * weight_decay * (2 - lr * weight_decay)))


def equilibrium_from_quadratic(lr, weight_decay, unit_grad_norm):
    """Solve the fixed point as a quadratic in s = r²: (1 − q) s² = η²‖ĝ‖² with q = (1 − ηλ)²."""
    q = (1 - lr * weight_decay) ** 2
    s = np.roots([1 - q, 0.0, -(lr * unit_grad_norm) ** 2]).max()
    return np.sqrt(s)


def equilibrium_torch(lr, weight_decay, unit_grad_norm):
    eta, lam, g = (torch.tensor(v, dtype=torch.float64) for v in (lr, weight_decay, unit_grad_norm))
    return torch.pow(eta * g**2 / (1 - (1 - eta * lam) ** 2) * eta, 0.25)


@pytest.mark.parametrize("solution", [equilibrium_from_angle, equilibrium_from_quadratic, equilibrium_torch])
def test_independent_equilibrium_norms_pass(solution):
    result = check.equilibrium_norm(solution)
    assert result.passed, result


def test_equilibrium_solution_is_a_fixed_point_of_the_norm_recursion():
    for lr, wd, g in [(0.5, 1e-2, 1.3), (1.0, 0.5, 0.2)]:
        r = equilibrium_from_angle(lr, wd, g)
        assert np.isclose(si.norm_after_step(r, g / r, lr, wd), r, rtol=1e-12)


@pytest.mark.parametrize("wrong, words", [
    (lambda lr, wd, g: np.sqrt(lr * g**2 / (wd * (2 - lr * wd))), "Your answer is r²"),
    (lambda lr, wd, g: (lr * g**2 / (2 * wd)) ** 0.25, "small-ηλ approximation"),
    (lambda lr, wd, g: (lr**2 * g**2 / (wd * (2 - lr * wd))) ** 0.25, "powers of η"),
    (lambda lr, wd, g: (lr * g / (wd * (2 - lr * wd))) ** 0.25, "enters squared"),
    (lambda lr, wd, g: (wd * (2 - lr * wd) / (lr * g**2)) ** 0.25, "reciprocal"),
    (lambda lr, wd, g: np.sqrt(lr * g / (wd * (2 - lr * wd))), "wrong value"),
])
def test_wrong_equilibrium_norms_are_named(wrong, words):
    assert words in failure(check.equilibrium_norm(wrong))


def test_the_library_equilibrium_update_is_refused_by_name():
    def with_the_library(lr, weight_decay, unit_grad_norm):
        return math.sqrt(lr * unit_grad_norm / si.equilibrium_relative_update(lr, weight_decay))

    assert "you called `normlab.scale_invariance.equilibrium_relative_update`" in failure(
        check.equilibrium_norm(with_the_library))


# --------------------------------------------------------------------------- the checkers themselves


@pytest.mark.parametrize("checker", [check.effective_learning_rates, check.norm_after_steps, check.equilibrium_norm])
def test_every_known_mistake_gets_its_own_message(checker):
    for mistake in checker.exercise.mistakes:
        reset_attempts()
        assert failure(checker(mistake.implementation)).split(": ", 1)[1].startswith(mistake.message), mistake.name
