"""Checkers for the exercises of chapter ``05_smoothness``.

In a notebook::

    from normlab.exercises import smoothness as check
    check.descent_lemma_bound(descent_lemma_bound)
    check.gradient_predictiveness(gradient_predictiveness)

The second exercise mirrors :func:`normlab.landscape.gradient_direction_measures`, which is
forbidden while its check runs.
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["descent_lemma_bound", "gradient_predictiveness"]

# --- Exercise: the descent-lemma bound ---------------------------------------------------


def _descent_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    # α from well inside (0, 2/β) to beyond it (βα = 2.5: the bound lies above f), and α ≠ 1 everywhere, so that
    # α and α² (or ‖g‖ and ‖g‖²) cannot be confused without changing the value.
    for dim, beta, alpha in [(2, 1.0, 0.6), (3, 4.0, 0.4), (5, 10.0, 0.25), (4, 2.0, 0.05), (6, 0.5, 3.0)]:
        cases.append(Case((float(rng.uniform(1, 5)), rng.standard_normal(dim) * 1.5, beta, alpha),
                          description=f"{dim}-D gradient, β={beta:g}, α={alpha:g}"))
    return cases


def _descent_reference(loss, gradient, beta, alpha):
    return loss - alpha * (1 - beta * alpha / 2) * float(gradient @ gradient)


def _bound(first=1.0, second=0.5, alpha_power=2, norm_power=2, loss_weight=1.0):
    """loss_weight·f − first·α‖g‖^p + second·β·α^q·‖g‖^p: the bound and its misremembered forms."""
    def bound(loss, gradient, beta, alpha):
        g2 = float(np.linalg.norm(gradient)) ** norm_power
        return loss_weight * loss - first * alpha * g2 + second * beta * alpha**alpha_power * g2
    return bound


descent_lemma_bound = make_checker(Exercise(
    name="descent_lemma_bound",
    reference=_descent_reference,
    cases=_descent_cases,
    returns="Return the bound, a float.",
    hint=(
        "Equation (5.3), `eq-descent-lemma`, in section \"The descent lemma: why steps up to 2/β are safe\": the upper "
        "parabola of equation (5.2), `eq-quadratic-bounds`, evaluated at y = θ − αg.",
        "With y − x = −αg, the first-order term is ∇f(θ)ᵀ(y − x) and the quadratic term is β/2 times the squared "
        "length of the step; both contain ‖g‖ squared.",
    ),
    mistakes=(
        Mistake("no half", _bound(second=1.0),
                "You dropped the ½ of the quadratic term: the parabola's curvature term is β/2 times the squared "
                "step length."),
        Mistake("norm not squared", _bound(norm_power=1),
                "You used ‖g‖ where the bound has ‖g‖²: the first-order term is ⟨g, −αg⟩ and the step's squared "
                "length is α²⟨g, g⟩."),
        Mistake("sign", _bound(first=-1.0),
                "The first-order term has the wrong sign: the step θ − αg goes against the gradient, so to first "
                "order the loss falls."),
        Mistake("step not squared", _bound(alpha_power=1),
                "Your quadratic term grows like α, not α²: it is β/2 times the squared length of the step αg."),
        Mistake("decrease only", _bound(loss_weight=0.0),
                "You returned only the change of the loss; the bound is on f(θ − αg) itself, so start from "
                "`loss`."),
        Mistake("lower parabola", _bound(second=-0.5),
                "You used the lower parabola (−β/2): that bounds f(θ − αg) from below. The descent lemma is the "
                "upper bound."),
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
    # The last case lists the steps out of order, so the largest change is not at the last η.
    for dim, c, etas in [(2, 1.0, [0.05, 0.1, 0.2, 0.4]), (3, 0.5, [0.05, 0.1, 0.2, 0.4]),
                         (5, 2.0, [0.1, 0.02, 0.3]), (4, 1.0, [0.3, 0.05, 0.15, 0.1])]:
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        a = q @ np.diag(rng.uniform(0.5, 3.0, dim)) @ q.T
        cases.append(Case((_quartic_gradient(a, c), rng.standard_normal(dim), np.array(etas)),
                          description=f"{dim}-D quadratic plus quartic, c={c:g}, etas {etas}"))
    return cases


def _predictiveness_reference(gradient, theta, etas):
    g = gradient(theta)
    return max(float(np.linalg.norm(gradient(theta - eta * g) - g)) for eta in etas)


def _changes(gradient, theta, etas, direction=-1.0, unit=False, subtract=True):
    g = gradient(theta)
    step = g / np.linalg.norm(g) if unit else g
    return np.array([np.linalg.norm(gradient(theta + direction * eta * step) - (g if subtract else 0)) for eta in etas])


gradient_predictiveness = make_checker(Exercise(
    name="gradient_predictiveness",
    reference=_predictiveness_reference,
    cases=_predictiveness_cases,
    returns="Return the gradient predictiveness, a float.",
    hint=(
        "Section \"The landscape along the gradient, during training\": the second of the three measures, with "
        "the step θ − ηg of SGD at learning rate η.",
        "One gradient at θ, then one more at each trial point; compare each with the first, take the Euclidean "
        "norm of the difference, and keep the largest over all the steps in `etas`.",
    ),
    forbidden=("normlab.landscape.gradient_direction_measures",
               "normlab.landscape.GradientDirectionMeasures.gradient_predictiveness.fget"),
    mistakes=(
        Mistake("ascent", lambda gr, t, e: float(_changes(gr, t, e, direction=1.0).max()),
                "You moved along +g (uphill). The measure follows the step SGD takes, against the gradient."),
        Mistake("mean", lambda gr, t, e: float(_changes(gr, t, e).mean()),
                "You averaged over η; the measure is the largest change over the range of steps."),
        Mistake("all etas", lambda gr, t, e: _changes(gr, t, e),
                "You returned the change for every η; the measure is one number, the largest of them."),
        Mistake("last eta", lambda gr, t, e: float(_changes(gr, t, e)[-1]),
                "You returned the change at the last η in `etas`; the largest change need not be there (the "
                "steps are not sorted in every case). Take the largest over all of them."),
        Mistake("beta", lambda gr, t, e: float((_changes(gr, t, e) / (np.asarray(e) * np.linalg.norm(gr(t)))).max()),
                "You divided by the distance moved, η‖g‖: that is the effective β-smoothness, not the "
                "gradient change itself."),
        Mistake("unit direction", lambda gr, t, e: float(_changes(gr, t, e, unit=True).max()),
                "You stepped along the unit vector g/‖g‖. SGD's step at learning rate η is ηg, with g's own "
                "length."),
        Mistake("no difference", lambda gr, t, e: float(_changes(gr, t, e, subtract=False).max()),
                "You measured the length of the new gradient; the measure is the length of its *change*, the "
                "difference from the gradient at θ."),
    ),
))
