"""The checkers of the smoothness chapter against a zoo of student attempts: independent
correct solutions pass, typical wrong ones fail with the diagnosis that names their mistake,
and the library's measurement is refused by name."""

import numpy as np
import pytest
import torch

from normlab.exercises import reset_attempts
from normlab.exercises import smoothness as check


pytestmark = pytest.mark.usefixtures("student_mode")


def failure(result):
    assert not result.passed, result
    return " ".join(result.messages)


# --------------------------------------------------------------------------- descent_lemma_bound


def bound_expanded(loss, gradient, beta, alpha):
    """The left form of the equation, term by term."""
    squared = np.sum(gradient**2)
    return loss - alpha * squared + beta / 2 * alpha**2 * squared


def bound_from_step(loss, gradient, beta, alpha):
    """The upper parabola at y = θ − αg, written with the step itself; returns a 0-d torch tensor."""
    g = torch.as_tensor(gradient)
    step = -alpha * g
    return loss + g @ step + beta / 2 * step @ step


def bound_loop(loss, gradient, beta, alpha):
    total = 0.0
    for gi in gradient:
        total += gi * gi
    return loss - alpha * (1 - beta * alpha / 2) * total


@pytest.mark.parametrize("solution", [bound_expanded, bound_from_step, bound_loop])
def test_independent_descent_bounds_pass(solution):
    result = check.descent_lemma_bound(solution)
    assert result.passed, result


@pytest.mark.parametrize("wrong, words", [
    (lambda f, g, b, a: f - a * g @ g + b * a**2 * g @ g, "dropped the ½"),
    (lambda f, g, b, a: f - a * (1 - b * a / 2) * np.linalg.norm(g), "used ‖g‖ where the bound has ‖g‖²"),
    (lambda f, g, b, a: f + a * g @ g + b / 2 * a**2 * g @ g, "wrong sign"),
    (lambda f, g, b, a: f - a * g @ g + b / 2 * a * g @ g, "grows like α, not α²"),
    (lambda f, g, b, a: -a * (1 - b * a / 2) * g @ g, "only the change of the loss"),
    (lambda f, g, b, a: f - a * g @ g - b / 2 * a**2 * g @ g, "lower parabola"),
    (lambda f, g, b, a: f, "wrong value"),
])
def test_wrong_descent_bounds_are_named(wrong, words):
    assert words in failure(check.descent_lemma_bound(wrong))


# --------------------------------------------------------------------------- gradient_predictiveness


def predictiveness_list(gradient, theta, etas):
    g = gradient(theta)
    changes = [np.sqrt(np.sum((gradient(theta - eta * g) - g) ** 2)) for eta in etas]
    return max(changes)


def predictiveness_vectorized(gradient, theta, etas):
    """All trial points at once; np.max over the array of changes, returned as a 0-d array."""
    g = gradient(theta)
    points = theta[None, :] - np.asarray(etas)[:, None] * g[None, :]
    changes = np.array([gradient(p) for p in points]) - g
    return np.max(np.linalg.norm(changes, axis=1))


def predictiveness_sorted_loop(gradient, theta, etas):
    best = -np.inf
    g = gradient(theta)
    for eta in sorted(etas):
        new = gradient(theta - eta * g)
        best = max(best, float(np.linalg.norm(new - g)))
    return best


@pytest.mark.parametrize("solution", [predictiveness_list, predictiveness_vectorized, predictiveness_sorted_loop])
def test_independent_predictiveness_solutions_pass(solution):
    result = check.gradient_predictiveness(solution)
    assert result.passed, result


def changes(gradient, theta, etas, sign=-1.0, unit=False, subtract=True):
    g = gradient(theta)
    d = g / np.linalg.norm(g) if unit else g
    return [np.linalg.norm(gradient(theta + sign * eta * d) - (g if subtract else 0)) for eta in etas]


@pytest.mark.parametrize("wrong, words", [
    (lambda gr, t, e: max(changes(gr, t, e, sign=+1.0)), "uphill"),
    (lambda gr, t, e: np.mean(changes(gr, t, e)), "averaged over η"),
    (lambda gr, t, e: changes(gr, t, e), "change for every η"),
    (lambda gr, t, e: changes(gr, t, e)[-1], "last η"),
    (lambda gr, t, e: max(c / (eta * np.linalg.norm(gr(t))) for c, eta in zip(changes(gr, t, e), e)),
     "effective β-smoothness"),
    (lambda gr, t, e: max(changes(gr, t, e, unit=True)), "unit vector"),
    (lambda gr, t, e: max(changes(gr, t, e, subtract=False)), "length of the new gradient"),
    (lambda gr, t, e: max(changes(gr, t, e)) ** 2, "wrong value"),
])
def test_wrong_predictiveness_attempts_are_named(wrong, words):
    assert words in failure(check.gradient_predictiveness(wrong))


def test_the_library_measurement_is_refused_by_name():
    def with_the_library(gradient, theta, etas):
        from normlab.landscape import gradient_direction_measures
        # a loss whose torch gradient is the given one cannot be built in general; students try anyway
        return gradient_direction_measures(lambda t: (t**2).sum(), torch.from_numpy(theta), etas).gradient_predictiveness

    assert "you called `normlab.landscape.gradient_direction_measures`" in failure(
        check.gradient_predictiveness(with_the_library))


# --------------------------------------------------------------------------- the checkers themselves


def test_one_predictiveness_case_has_its_largest_change_before_the_last_step():
    exercise = check.gradient_predictiveness.exercise
    cases = exercise.cases(np.random.default_rng(exercise.seed))
    assert any(int(np.argmax(changes(*case.args))) != len(case.args[2]) - 1 for case in cases)


@pytest.mark.parametrize("checker", [check.descent_lemma_bound, check.gradient_predictiveness])
def test_every_known_mistake_gets_its_own_message(checker):
    for mistake in checker.exercise.mistakes:
        reset_attempts()
        assert failure(checker(mistake.implementation)).split(": ", 1)[1].startswith(mistake.message), mistake.name
