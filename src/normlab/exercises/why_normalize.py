"""Checkers for the exercises of chapter "Why normalize? The geometry of gradient descent".

In a notebook::

    from normlab.exercises import why_normalize as check
    check.gd_step(gd_step)
"""

from __future__ import annotations

import numpy as np

from normlab import quadratic
from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker


def _random_spd(rng: np.random.Generator, dim: int, kappa: float) -> np.ndarray:
    """A symmetric positive definite matrix, not diagonal, with condition number κ."""
    lam = np.geomspace(1.0, kappa, dim) * rng.uniform(0.5, 2.0)
    return quadratic.random_quadratic(lam, seed=int(rng.integers(1 << 30))).hessian


# --- Exercise: one gradient-descent step on the quadratic model -----------------------

def _gd_step_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for dim, kappa, lr in [(2, 5.0, 0.1), (3, 20.0, 0.05), (5, 100.0, 0.01), (4, 1.0, 0.5)]:
        h = _random_spd(rng, dim, kappa)
        cases.append(Case((rng.standard_normal(dim), h, rng.standard_normal(dim), lr),
                          description=f"{dim}-D quadratic, κ={kappa:g}, lr={lr}"))
    return cases


def _gd_step_reference(theta, hessian, minimizer, lr):
    return theta - lr * hessian @ (theta - minimizer)


gd_step = make_checker(Exercise(
    name="gd_step",
    reference=_gd_step_reference,
    cases=_gd_step_cases,
    hint="The gradient of ½(θ − θ*)ᵀH(θ − θ*) is H(θ − θ*); step against it: θ − η·gradient.",
    mistakes=(
        Mistake("ascent", lambda t, h, m, lr: t + lr * h @ (t - m),
                "You stepped along the gradient, uphill. Gradient descent subtracts η·∇L."),
        Mistake("forgot minimizer", lambda t, h, m, lr: t - lr * h @ t,
                "Your gradient is Hθ, which is right only when θ* = 0. Use H(θ − θ*)."),
        Mistake("gradient sign", lambda t, h, m, lr: t - lr * h @ (m - t),
                "Your gradient is H(θ* − θ), pointing the wrong way. It is H(θ − θ*)."),
        Mistake("half", lambda t, h, m, lr: t - 0.5 * lr * h @ (t - m),
                "Your step is half as long as it should be: the ½ in ½(θ − θ*)ᵀH(θ − θ*) "
                "cancels against the 2 from differentiating the square."),
    ),
))


# --- Exercise: the largest learning rate that converges -------------------------------

def _stable_lr_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((_random_spd(rng, dim, kappa),), description=f"{dim}x{dim} Hessian, κ={kappa:g}")
            for dim, kappa in [(2, 10.0), (3, 4.0), (6, 50.0), (4, 1000.0)]]


max_stable_lr = make_checker(Exercise(
    name="max_stable_lr",
    reference=quadratic.max_stable_lr,
    cases=_stable_lr_cases,
    hint="Every eigen-coordinate is multiplied by 1 − ηλ each step; all of them must shrink.",
    mistakes=(
        Mistake("one over lambda max", lambda h: 1.0 / np.linalg.eigvalsh(h)[-1],
                "1/λmax is the step that kills the steepest direction in one step, not the "
                "largest that converges: |1 − ηλ| < 1 allows η up to 2/λmax."),
        Mistake("lambda min", lambda h: 2.0 / np.linalg.eigvalsh(h)[0],
                "You used the smallest eigenvalue. The steepest direction (λmax) is the one "
                "that blows up first."),
        Mistake("diagonal", lambda h: 2.0 / np.max(np.diag(h)),
                "You used the largest diagonal entry of H. For a Hessian that is not "
                "diagonal, the eigenvalues differ from the diagonal: use np.linalg.eigvalsh."),
        Mistake("trace", lambda h: 2.0 / np.trace(h),
                "You divided by the trace (the sum of all eigenvalues); only λmax matters."),
    ),
))


# --- Exercise: steps to shrink the error by a factor ----------------------------------

def _steps_cases(rng: np.random.Generator) -> list[Case]:
    lam = np.array([0.01, 0.3, 1.0])
    return [
        Case((lam, 0.5, 1e-3), description="λ = (0.01, 0.3, 1), η = 0.5, tol = 1e-3"),
        Case((lam, 1.9, 1e-6), description="λ = (0.01, 0.3, 1), η = 1.9 (oscillating), tol = 1e-6"),
        Case((np.array([1.0, 2.0]), 0.9, 1e-4), description="λ = (1, 2), η = 0.9: the top direction oscillates"),
        Case((np.geomspace(1e-2, 1.0, 5), 1.0, 1e-2), description="log-spaced λ, η = 1"),
        Case((np.array([1.0, 3.0]), 0.8, 1e-3), description="λ = (1, 3), η = 0.8: diverges"),
    ]


steps_to_tolerance = make_checker(Exercise(
    name="steps_to_tolerance",
    reference=quadratic.steps_to_tolerance,
    cases=_steps_cases,
    hint="Each coordinate shrinks by |1 − ηλ_i| per step; the slowest one decides. "
         "Solve rate**t <= tol for the smallest whole t; return float('inf') if rate >= 1.",
    mistakes=(
        Mistake("only smallest eigenvalue",
                lambda lam, lr, tol: float(np.ceil(np.log(tol) / np.log(abs(1 - lr * np.min(lam))))),
                "You only looked at λmin. When η is large, the top direction can be the "
                "slowest (|1 − ηλmax| close to 1) or even diverge: take the max over all i."),
        Mistake("floor", lambda lam, lr, tol: float(np.floor(np.log(tol) / np.log(
                    np.max(np.abs(1 - lr * np.asarray(lam)))))),
                "Rounded down: after ⌊t⌋ steps the error is still above tol. Round up."),
    ),
))


# --- Exercise: standardize the columns of a design matrix -----------------------------

def _standardize_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for n, d in [(50, 3), (200, 5), (7, 2)]:
        scales = rng.uniform(0.1, 100.0, d)
        offsets = rng.uniform(-50.0, 50.0, d)
        cases.append(Case((rng.standard_normal((n, d)) * scales + offsets,),
                          description=f"{n} samples of {d} features with scales up to {scales.max():.0f}"))
    return cases


def _standardize_reference(x):
    return (x - x.mean(axis=0)) / x.std(axis=0)


standardize_columns = make_checker(Exercise(
    name="standardize_columns",
    reference=_standardize_reference,
    cases=_standardize_cases,
    hint="Per feature (column, axis=0): subtract its mean, divide by its standard deviation.",
    mistakes=(
        Mistake("rows", lambda x: (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True),
                "You normalized each row (sample). Features are columns: use axis=0."),
        Mistake("not centred", lambda x: x / x.std(axis=0),
                "You scaled but did not subtract the mean. A column with a non-zero mean "
                "adds a large eigenvalue to XᵀX/n (LeCun et al. 1998): centre it first."),
        Mistake("variance", lambda x: (x - x.mean(axis=0)) / x.var(axis=0),
                "You divided by the variance; divide by the standard deviation."),
        Mistake("sample std", lambda x: (x - x.mean(axis=0)) / x.std(axis=0, ddof=1),
                "You used the sample standard deviation (n − 1). This chapter uses the "
                "1/n version, which makes the diagonal of XᵀX/n exactly 1."),
    ),
))

__all__ = ["gd_step", "max_stable_lr", "standardize_columns", "steps_to_tolerance"]
