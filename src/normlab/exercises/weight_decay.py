"""Checkers for the exercises of chapter ``09_weight_decay``.

In a notebook::

    from normlab.exercises import weight_decay as check
    check.effective_learning_rates(effective_learning_rates)
    check.norm_after_steps(norm_after_steps)
    check.equilibrium_norm(equilibrium_norm)

The references follow :mod:`normlab.scale_invariance` (equation numbers as there), whose
functions are forbidden while these checks run.
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["effective_learning_rates", "equilibrium_norm", "norm_after_steps"]

_SCALE_INVARIANCE = ("normlab.scale_invariance.effective_learning_rate", "normlab.scale_invariance.norm_after_step",
                     "normlab.scale_invariance.equilibrium_relative_update")

# --- Exercise: per-unit effective learning rates --------------------------------------


def _effective_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    # Rows of very different norms (a factor up to 15 between units), so that one norm for the whole layer
    # is far from every unit's own; one square matrix, where rows and columns give the same shape.
    for rows, cols, lr in [(3, 4, 0.1), (8, 16, 0.5), (1, 5, 1.0), (16, 8, 0.03), (6, 6, 0.2)]:
        weight = rng.standard_normal((rows, cols)) * rng.uniform(0.2, 3.0, (rows, 1))
        cases.append(Case((weight, lr), description=f"weight of shape {(rows, cols)}, lr {lr}"))
    return cases


def _effective_reference(weight, lr):
    return lr / np.sum(weight**2, axis=1)


effective_learning_rates = make_checker(Exercise(
    name="effective_learning_rates",
    reference=_effective_reference,
    cases=_effective_cases,
    returns="Return the effective learning rate of each unit, an array of shape (out,).",
    hint=(
        "Equation (9.2), `eq-wd-angle`, in section \"The effective learning rate\", and the sentence after it.",
        "Each row of the (out, in) weight is one unit's weight vector, and BN after the layer normalizes each "
        "unit separately: every row is scale-invariant on its own and gets its own value from its own norm.",
    ),
    forbidden=_SCALE_INVARIANCE,
    mistakes=(
        Mistake("not squared", lambda w, lr: lr / np.linalg.norm(w, axis=1),
                "You divided by ‖w_i‖. The gradient shrinks as 1/‖w_i‖ and the step changes the direction "
                "w_i/‖w_i‖ by another 1/‖w_i‖: look at how the norm enters equation (9.2)."),
        Mistake("whole layer", lambda w, lr: np.full(w.shape[0], lr / np.sum(w**2)),
                "You used the norm of the whole matrix. BN normalizes each unit separately, so each row has "
                "its own scale and its own effective learning rate."),
        Mistake("columns", lambda w, lr: lr / np.sum(w**2, axis=0),
                "You took norms over columns. A unit's weight vector is a row of the (out, in) matrix."),
        Mistake("multiplied", lambda w, lr: lr * np.sum(w**2, axis=1),
                "You multiplied by the squared norm. Large weights get *smaller* angular steps."),
        Mistake("mean of squares", lambda w, lr: lr / np.mean(w**2, axis=1),
                "You divided by the mean of the squared weights in each row, not their sum: the squared norm is "
                "the sum."),
    ),
))


# --- Exercise: the norm after k steps -------------------------------------------------


def _norm_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    # ηλ from 0 to 0.3: the cases with λ = 0 still test the growth; those with ηλ ≥ 0.1 separate (1 − ηλ)
    # from (1 − ηλ)².
    # The first case has several steps, so that a trajectory without its starting value is not also "the last
    # norm only" (k = 1 comes later).
    for k, lr, wd in [(5, 0.5, 0.01), (1, 0.1, 0.0), (20, 0.2, 0.5), (50, 1.0, 0.3), (10, 0.05, 0.0), (3, 0.4, 0.5)]:
        grads = rng.uniform(0.1, 3.0, k)
        cases.append(Case((float(rng.uniform(0.5, 5.0)), grads, lr, wd),
                          description=f"{k} steps, lr {lr}, weight decay {wd}"))
    return cases


def _norm_trajectory(update):
    def trajectory(norm0, grad_norms, lr, weight_decay):
        norms = [float(norm0)]
        for g in grad_norms:
            norms.append(update(norms[-1], float(g), lr, weight_decay))
        return np.array(norms)
    return trajectory


_norm_reference = _norm_trajectory(
    lambda n, g, lr, wd: float(np.sqrt((1 - lr * wd) ** 2 * n**2 + lr**2 * g**2)))

_FINAL_ONLY = "Return the whole trajectory, k + 1 norms starting with ‖w_0‖, not only the last one."

norm_after_steps = make_checker(Exercise(
    name="norm_after_steps",
    reference=_norm_reference,
    cases=_norm_cases,
    returns="Return the norms ‖w_0‖, …, ‖w_k‖, an array of shape (k + 1,) that starts with norm0.",
    hint=(
        "Equation (9.5), `eq-wd-norm`, in section \"Weight norms grow; weight decay holds them\", applied once per "
        "gradient norm.",
        "One step shrinks w by the decay factor and adds a gradient step orthogonal to w: the squared norms of the "
        "two parts add (Pythagoras). Start the list with norm0 and append one norm per step.",
    ),
    forbidden=_SCALE_INVARIANCE,
    mistakes=(
        Mistake("no decay", _norm_trajectory(lambda n, g, lr, wd: float(np.sqrt(n**2 + lr**2 * g**2))),
                "Your norms ignore the weight decay: each step first multiplies w by (1 − ηλ)."),
        Mistake("decay not squared",
                _norm_trajectory(lambda n, g, lr, wd: float(np.sqrt((1 - lr * wd) * n**2 + lr**2 * g**2))),
                "The decay multiplies w by (1 − ηλ), so it multiplies ‖w‖² by the square of that factor."),
        Mistake("added norms", _norm_trajectory(lambda n, g, lr, wd: (1 - lr * wd) * n + lr * g),
                "You added the lengths of the two parts of the step. They are orthogonal (g ⊥ w): add "
                "their squares."),
        Mistake("gradient not squared",
                _norm_trajectory(lambda n, g, lr, wd: float(np.sqrt((1 - lr * wd) ** 2 * n**2 + lr * g**2))),
                "The gradient step is ηg, so its squared length carries η², not η."),
        Mistake("decay after step",
                _norm_trajectory(lambda n, g, lr, wd: (1 - lr * wd) * float(np.sqrt(n**2 + lr**2 * g**2))),
                "You applied the decay to the whole step, (1 − ηλ)(w − ηg). SGD's weight decay adds λw to the "
                "gradient: only w is multiplied by (1 − ηλ), the gradient step is not."),
        Mistake("final only", lambda n0, gs, lr, wd: _norm_reference(n0, gs, lr, wd)[-1],
                _FINAL_ONLY),
        Mistake("final only, as an array", lambda n0, gs, lr, wd: _norm_reference(n0, gs, lr, wd)[-1:],
                _FINAL_ONLY),
    ),
))


# --- Exercise: the equilibrium norm ---------------------------------------------------


def _equilibrium_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((lr, wd, float(rng.uniform(0.1, 5.0))), description=f"lr {lr}, weight decay {wd}")
            for lr, wd in [(0.1, 5e-4), (0.5, 1e-2), (1.0, 0.5), (0.2, 1.0), (2.0, 0.3)]]


def _equilibrium_reference(lr, weight_decay, unit_grad_norm):
    return (lr * unit_grad_norm**2 / (weight_decay * (2 - lr * weight_decay))) ** 0.25


equilibrium_norm = make_checker(Exercise(
    name="equilibrium_norm",
    reference=_equilibrium_reference,
    cases=_equilibrium_cases,
    returns="Return the equilibrium norm r, a float.",
    hint=(
        "Equation (9.5), `eq-wd-norm`, with ‖w_{t+1}‖ = ‖w_t‖ = r, as in section \"Weight norms grow; weight decay "
        "holds them\"; the gradient of a scale-invariant weight of norm r has norm ‖ĝ‖/r.",
        "Substitute the gradient norm before solving: r then appears with two different powers, and collecting "
        "them gives a power of r equal to an expression in η, λ and ‖ĝ‖. Keep (1 − ηλ)² exact.",
    ),
    forbidden=_SCALE_INVARIANCE,
    mistakes=(
        Mistake("gradient held fixed", lambda lr, wd, g: (lr * g**2 / (wd * (2 - lr * wd))) ** 0.5,
                "Your answer is r² (or you treated ‖g‖ as fixed). The gradient shrinks as the weight grows, "
                "‖g‖ = ‖ĝ‖/r: substitute it before solving for r."),
        Mistake("small ηλ", lambda lr, wd, g: (lr * g**2 / (2 * wd)) ** 0.25,
                "That is the small-ηλ approximation (1 − ηλ)² ≈ 1 − 2ηλ. Keep the exact factor "
                "1 − (1 − ηλ)²."),
        Mistake("lr squared", lambda lr, wd, g: (lr**2 * g**2 / (wd * (2 - lr * wd))) ** 0.25,
                "Check the powers of η: one η on the right cancels against the ηλ(2 − ηλ) on the left."),
        Mistake("gradient not squared", lambda lr, wd, g: (lr * g / (wd * (2 - lr * wd))) ** 0.25,
                "The step adds η²‖g‖² to ‖w‖²: the unit gradient norm enters squared."),
        Mistake("inverted", lambda lr, wd, g: (lr * g**2 / (wd * (2 - lr * wd))) ** -0.25,
                "Your r is the reciprocal of the equilibrium norm: check which side of the equation the power of r ends up on."),
    ),
))
