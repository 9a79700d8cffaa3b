"""The checkers of the internal-covariate-shift chapter: references pass, each known mistake is named."""

import numpy as np
import pytest

from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import ics as check


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)


def pdf(x, m, s):
    return np.exp(-0.5 * ((x - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def weighted_fit(x, y, m0, s0, m1, s1):
    w = pdf(x, m1, s1) / pdf(x, m0, s0)
    return np.polyfit(x, y, 1, w=np.sqrt(w))[::-1]      # polyfit weights multiply residuals, not squares


def gradient_ics_2(w1, w2, x, y, lr):
    n = len(x)

    def grads(a, b):
        h = x @ a.T
        r = h @ b.T - y
        return b.T @ r.T @ x / n, r.T @ h / n

    g1, g2 = grads(w1, w2)
    g2_new = grads(w1 - lr * g1, w2)[1]
    return np.array([np.linalg.norm(g2 - g2_new), (g2 * g2_new).sum() / np.linalg.norm(g2) / np.linalg.norm(g2_new)])


def test_independent_solutions_pass_every_checker():
    assert check.importance_weighted_fit(weighted_fit).passed
    assert check.two_layer_gradient_ics(gradient_ics_2).passed


def test_ordinary_least_squares_is_not_accepted():
    result = check.importance_weighted_fit(lambda x, y, *_: np.polyfit(x, y, 1)[::-1])
    assert not result.passed and "ordinary least squares" in " ".join(result.messages)


@pytest.mark.parametrize("wrong, words", [
    (lambda w1, w2, x, y, lr: check._both_stepped(w1, w2, x, y, lr), "W2 itself stays"),
    (lambda w1, w2, x, y, lr: check._wrong_sign(w1, w2, x, y, lr), "uphill"),
    (lambda w1, w2, x, y, lr: check._stale_hidden(w1, w2, x, y, lr), "old hidden activations"),
    (lambda w1, w2, x, y, lr: check._angle(w1, w2, x, y, lr), "cosine itself"),
])
def test_known_gradient_ics_mistakes_are_named(wrong, words):
    result = check.two_layer_gradient_ics(wrong)
    assert not result.passed and words in " ".join(result.messages)


def test_inverted_importance_weights_are_named():
    def inverted(x, y, m0, s0, m1, s1):
        return weighted_fit(x, y, m1, s1, m0, s0)

    result = check.importance_weighted_fit(inverted)
    assert not result.passed and "upside down" in " ".join(result.messages)
