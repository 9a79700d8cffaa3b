"""The checkers of the weight-decay chapter: references pass, each known mistake is named."""

import numpy as np
import pytest

from normlab import scale_invariance as si
from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import weight_decay as check


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)


def effective(weight, lr):
    return lr / (weight**2).sum(1)


def trajectory(norm0, grad_norms, lr, weight_decay):
    norms = [norm0]
    for g in grad_norms:
        norms.append(si.norm_after_step(norms[-1], g, lr, weight_decay))
    return np.array(norms)


def equilibrium(lr, weight_decay, unit_grad_norm):
    return (lr * unit_grad_norm**2 / (weight_decay * (2 - lr * weight_decay))) ** 0.25


def test_reference_solutions_pass_every_checker():
    assert check.effective_learning_rates(effective).passed
    assert check.norm_after_steps(trajectory).passed
    assert check.equilibrium_norm(equilibrium).passed


def test_equilibrium_solution_is_a_fixed_point_of_the_norm_recursion():
    for lr, wd, g in [(0.5, 1e-2, 1.3), (1.0, 0.5, 0.2)]:
        r = equilibrium(lr, wd, g)
        assert np.isclose(si.norm_after_step(r, g / r, lr, wd), r, rtol=1e-12)


@pytest.mark.parametrize("checker, wrong, words", [
    (check.effective_learning_rates, lambda w, lr: lr / np.linalg.norm(w, axis=1), "lr/‖w_i‖²"),
    (check.effective_learning_rates, lambda w, lr: np.full(w.shape[0], lr / (w**2).sum()), "whole matrix"),
    (check.effective_learning_rates, lambda w, lr: lr * (w**2).sum(1), "divide"),
    (check.norm_after_steps, lambda n, gs, lr, wd: trajectory(n, gs, lr, 0.0), "ignore the weight decay"),
    (check.norm_after_steps, lambda n, gs, lr, wd: np.cumsum(np.r_[n, lr * np.asarray(gs)]) * 0 + np.r_[
        n, [np.nan] * len(gs)], "NaN"),
    (check.norm_after_steps, lambda n, gs, lr, wd: np.array(
        [n] + [n := (1 - lr * wd) * n + lr * g for g in gs]), "orthogonal"),
    (check.equilibrium_norm, lambda lr, wd, g: np.sqrt(lr * g**2 / (wd * (2 - lr * wd))), "fourth root"),
    (check.equilibrium_norm, lambda lr, wd, g: (lr * g**2 / (2 * wd)) ** 0.25, "small-ηλ"),
])
def test_known_mistake_is_named(checker, wrong, words):
    result = checker(wrong)
    assert not result.passed and words in " ".join(result.messages)
