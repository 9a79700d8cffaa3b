"""The checkers of the smoothness chapter: references pass, each known mistake is named."""

import numpy as np
import pytest

from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import smoothness as check


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)


def bound(loss, g, beta, alpha):
    return loss - alpha * (1 - beta * alpha / 2) * float(g @ g)


def predictiveness(gradient, theta, etas):
    g = gradient(theta)
    return max(float(np.linalg.norm(gradient(theta - eta * g) - g)) for eta in etas)


def test_reference_solutions_pass_every_checker():
    assert check.descent_lemma_bound(bound).passed
    assert check.gradient_predictiveness(predictiveness).passed


@pytest.mark.parametrize("checker, wrong, words", [
    (check.descent_lemma_bound, lambda f, g, b, a: f - a * (1 - b * a) * float(g @ g), "½"),
    (check.descent_lemma_bound, lambda f, g, b, a: f - a * (1 - b * a / 2) * float(np.linalg.norm(g)), "‖g‖²"),
    (check.descent_lemma_bound, lambda f, g, b, a: f + a * (1 - b * a / 2) * float(g @ g), "−α‖g‖²"),
    (check.gradient_predictiveness,
     lambda gr, t, e: max(float(np.linalg.norm(gr(t + eta * gr(t)) - gr(t))) for eta in e), "uphill"),
    (check.gradient_predictiveness,
     lambda gr, t, e: float(np.mean([np.linalg.norm(gr(t - eta * gr(t)) - gr(t)) for eta in e])), "averaged"),
    (check.gradient_predictiveness,
     lambda gr, t, e: max(float(np.linalg.norm(gr(t - eta * gr(t)) - gr(t)) / (eta * np.linalg.norm(gr(t))))
                          for eta in e), "effective β"),
])
def test_each_known_mistake_gets_its_message(checker, wrong, words):
    result = checker(wrong)
    assert not result.passed
    assert words in " ".join(result.messages)


def test_an_unrelated_wrong_answer_fails_without_crashing():
    assert not check.gradient_predictiveness(lambda gr, t, e: 0.0).passed
    assert not check.descent_lemma_bound(lambda f, g, b, a: f).passed
