"""Checkers for the exercises of chapter "Weight decay in scale-invariant networks".

In a notebook::

    from normlab.exercises import weight_decay as check
    check.effective_learning_rates(effective_learning_rates)

The references follow :mod:`normlab.scale_invariance` (equation numbers as there).
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

# --- Exercise: per-unit effective learning rates --------------------------------------


def _effective_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for rows, cols, lr in [(3, 4, 0.1), (8, 16, 0.5), (1, 5, 1.0), (16, 8, 0.03)]:
        weight = rng.standard_normal((rows, cols)) * rng.uniform(0.2, 3.0, (rows, 1))
        cases.append(Case((weight, lr), description=f"weight of shape {(rows, cols)}, lr {lr}"))
    return cases


def _effective_reference(weight, lr):
    return lr / np.sum(weight**2, axis=1)


effective_learning_rates = make_checker(Exercise(
    name="effective_learning_rates",
    reference=_effective_reference,
    cases=_effective_cases,
    hint="Each row w_i of the weight is one unit's weight vector, scale-invariant on its own. Return "
         "lr / ‖w_i‖², one value per row.",
    mistakes=(
        Mistake("not squared", lambda w, lr: lr / np.linalg.norm(w, axis=1),
                "You divided by ‖w_i‖. The gradient shrinks as 1/‖w_i‖ and the step changes the direction "
                "w_i/‖w_i‖ by another 1/‖w_i‖: the effective learning rate is lr/‖w_i‖²."),
        Mistake("whole layer", lambda w, lr: np.full(w.shape[0], lr / np.sum(w**2)),
                "You used the norm of the whole matrix. BN normalizes each unit separately, so each row has "
                "its own scale and its own effective learning rate lr/‖w_i‖²."),
        Mistake("columns", lambda w, lr: lr / np.sum(w**2, axis=0),
                "You took norms over columns. A unit's weight vector is a row of the (out, in) matrix."),
        Mistake("multiplied", lambda w, lr: lr * np.sum(w**2, axis=1),
                "You multiplied by ‖w_i‖². Large weights get *smaller* angular steps: divide."),
    ),
))


# --- Exercise: the norm after k steps -------------------------------------------------


def _norm_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for k, lr, wd in [(1, 0.1, 0.0), (5, 0.5, 0.01), (20, 0.2, 0.1), (50, 1.0, 0.3), (10, 0.05, 0.0)]:
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

norm_after_steps = make_checker(Exercise(
    name="norm_after_steps",
    reference=_norm_reference,
    cases=_norm_cases,
    hint="Return the k + 1 norms ‖w_0‖, …, ‖w_k‖. One step is w ← (1 − ηλ)w − ηg with g ⊥ w, so "
         "Pythagoras gives ‖w_{t+1}‖² = (1 − ηλ)²‖w_t‖² + η²‖g_t‖².",
    mistakes=(
        Mistake("no decay", _norm_trajectory(lambda n, g, lr, wd: float(np.sqrt(n**2 + lr**2 * g**2))),
                "Your norms ignore the weight decay: each step first multiplies w by (1 − ηλ)."),
        Mistake("decay not squared",
                _norm_trajectory(lambda n, g, lr, wd: float(np.sqrt((1 - lr * wd) * n**2 + lr**2 * g**2))),
                "The decay multiplies w by (1 − ηλ), so it multiplies ‖w‖² by (1 − ηλ)², not (1 − ηλ)."),
        Mistake("added norms", _norm_trajectory(lambda n, g, lr, wd: (1 - lr * wd) * n + lr * g),
                "You added the lengths of the two parts of the step. They are orthogonal (g ⊥ w): add "
                "their squares, ‖w_{t+1}‖² = (1 − ηλ)²‖w_t‖² + η²‖g_t‖²."),
        Mistake("gradient not squared",
                _norm_trajectory(lambda n, g, lr, wd: float(np.sqrt((1 - lr * wd) ** 2 * n**2 + lr * g**2))),
                "The gradient step is ηg, so its squared length is η²‖g‖², not η‖g‖²."),
        Mistake("final only", lambda n0, gs, lr, wd: _norm_reference(n0, gs, lr, wd)[-1:],
                "Return the whole trajectory, k + 1 norms starting with ‖w_0‖, not only the last one."),
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
    hint="Put ‖w_{t+1}‖ = ‖w_t‖ = r in ‖w_{t+1}‖² = (1 − ηλ)²‖w_t‖² + η²‖g‖², and remember that the gradient "
         "of a scale-invariant weight is ‖g‖ = ‖ĝ‖/r. Solve for r.",
    mistakes=(
        Mistake("gradient held fixed", lambda lr, wd, g: (lr * g**2 / (wd * (2 - lr * wd))) ** 0.5,
                "Your answer is r² (or you treated ‖g‖ as fixed). The gradient shrinks as the weight grows, "
                "‖g‖ = ‖ĝ‖/r, so r⁴ = η‖ĝ‖²/(λ(2 − ηλ)) and r is its fourth root."),
        Mistake("small ηλ", lambda lr, wd, g: (lr * g**2 / (2 * wd)) ** 0.25,
                "That is the small-ηλ approximation (1 − ηλ)² ≈ 1 − 2ηλ. Keep the exact factor: "
                "1 − (1 − ηλ)² = ηλ(2 − ηλ)."),
        Mistake("lr squared", lambda lr, wd, g: (lr**2 * g**2 / (wd * (2 - lr * wd))) ** 0.25,
                "Check the powers of η: η²‖ĝ‖²/r² = ηλ(2 − ηλ) r², so one η cancels."),
    ),
))
