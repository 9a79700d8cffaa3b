"""Checkers for the exercises of chapter "Lipschitz continuity, smoothness and the loss landscape".

In a notebook::

    from normlab.exercises import smoothness as check
    check.descent_lemma_bound(descent_lemma_bound)
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["descent_lemma_bound", "gradient_predictiveness"]

# --- Exercise: the descent-lemma bound ---------------------------------------------------


def _descent_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for dim, beta, alpha in [(2, 1.0, 0.5), (3, 4.0, 0.4), (5, 10.0, 0.25), (4, 2.0, 0.05)]:
        cases.append(Case((float(rng.uniform(1, 5)), rng.standard_normal(dim), beta, alpha),
                          description=f"{dim}-D gradient, β={beta:g}, α={alpha:g}"))
    return cases


def _descent_reference(loss, gradient, beta, alpha):
    return loss - alpha * (1 - beta * alpha / 2) * float(gradient @ gradient)


descent_lemma_bound = make_checker(Exercise(
    name="descent_lemma_bound",
    reference=_descent_reference,
    cases=_descent_cases,
    hint="For a β-smooth f: f(θ − αg) ≤ f(θ) − α‖g‖² + (β/2)α²‖g‖² = f(θ) − α(1 − βα/2)‖g‖².",
    mistakes=(
        Mistake("no half", lambda f, g, b, a: f - a * (1 - b * a) * float(g @ g),
                "You dropped the ½ of the quadratic term: the bound is f − α‖g‖² + (β/2)α²‖g‖²."),
        Mistake("norm not squared",
                lambda f, g, b, a: f - a * (1 - b * a / 2) * float(np.linalg.norm(g)),
                "You used ‖g‖ where the bound has ‖g‖² (the first-order term is α⟨g, g⟩)."),
        Mistake("sign", lambda f, g, b, a: f + a * (1 - b * a / 2) * float(g @ g),
                "Your bound rises with α at small steps: the first-order change of θ − αg is −α‖g‖²."),
    ),
))


# --- Exercise: gradient predictiveness ---------------------------------------------------


def _quartic_gradient(a: np.ndarray, c: float):
    """∇ of ½θᵀAθ + (c/4)Σθ⁴: a smooth, non-quadratic loss, so the direction of the step matters."""
    def gradient(theta: np.ndarray) -> np.ndarray:
        return a @ theta + c * theta**3
    return gradient


def _predictiveness_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for dim, c in [(2, 1.0), (3, 0.5), (5, 2.0)]:
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        a = q @ np.diag(rng.uniform(0.5, 3.0, dim)) @ q.T
        etas = np.array([0.05, 0.1, 0.2, 0.4])
        cases.append(Case((_quartic_gradient(a, c), rng.standard_normal(dim), etas),
                          description=f"{dim}-D quadratic plus quartic, c={c:g}"))
    return cases


def _predictiveness_reference(gradient, theta, etas):
    g = gradient(theta)
    return max(float(np.linalg.norm(gradient(theta - eta * g) - g)) for eta in etas)


gradient_predictiveness = make_checker(Exercise(
    name="gradient_predictiveness",
    reference=_predictiveness_reference,
    cases=_predictiveness_cases,
    hint="g = gradient(θ); for each η, take the SGD step θ − ηg and measure ‖gradient(θ − ηg) − g‖; "
         "return the largest.",
    mistakes=(
        Mistake("ascent", lambda gr, t, e: max(float(np.linalg.norm(gr(t + eta * gr(t)) - gr(t))) for eta in e),
                "You moved along +g (uphill). The measure follows the step SGD takes: θ − ηg."),
        Mistake("mean", lambda gr, t, e: float(np.mean([np.linalg.norm(gr(t - eta * gr(t)) - gr(t)) for eta in e])),
                "You averaged over η; the measure is the largest change over the range of steps."),
        Mistake("beta", lambda gr, t, e: max(float(np.linalg.norm(gr(t - eta * gr(t)) - gr(t))
                                                 / (eta * np.linalg.norm(gr(t)))) for eta in e),
                "You divided by the distance moved, η‖g‖: that is the effective β-smoothness, not the "
                "gradient change itself."),
    ),
))
