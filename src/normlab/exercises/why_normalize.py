"""Checkers for the exercises of chapter ``01_why_normalize``.

In a notebook::

    from normlab.exercises import why_normalize as check
    check.gd_step(gd_step)
"""

from __future__ import annotations

import numpy as np

from normlab import quadratic
from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["gd_step", "max_stable_lr", "standardize_columns", "steps_to_tolerance"]


def _random_spd(rng: np.random.Generator, dim: int, kappa: float) -> np.ndarray:
    """A symmetric positive definite matrix, not diagonal, with condition number κ."""
    lam = np.geomspace(1.0, kappa, dim) * rng.uniform(0.5, 2.0)
    return quadratic.random_quadratic(lam, seed=int(rng.integers(1 << 30))).hessian


# --- Exercise: one gradient-descent step on the quadratic model -----------------------

def _gd_step_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for dim, kappa, lr in [(2, 5.0, 0.1), (3, 20.0, 0.05), (5, 100.0, 0.01), (4, 1.0, 0.5)]:
        h = _random_spd(rng, dim, kappa)
        minimizer = rng.standard_normal(dim) + 2.0  # far from 0: forgetting θ* changes every coordinate
        cases.append(Case((rng.standard_normal(dim), h, minimizer, lr),
                          description=f"{dim}-D quadratic, κ={kappa:g}, lr={lr}"))
    return cases


def _gd_step_reference(theta, hessian, minimizer, lr):
    return theta - lr * hessian @ (theta - minimizer)


gd_step = make_checker(Exercise(
    name="gd_step",
    reference=_gd_step_reference,
    cases=_gd_step_cases,
    returns="Return the next iterate θ_{t+1}, an array of shape (d,).",
    hint=("Equation eq-gd-step, in section 'The quadratic model of a loss', just after the gradient of "
          "the quadratic model eq-quadratic-model.",
          "The gradient of the quadratic model is the Hessian applied to the displacement from the minimizer "
          "(a matrix-vector product, not an elementwise one); a step moves the current point against it, "
          "scaled by the learning rate."),
    forbidden=("normlab.quadratic.gradient_descent", "normlab.quadratic.eigen_dynamics",
               "normlab.quadratic.Quadratic.gradient", "torch.optim.sgd.sgd"),
    mistakes=(
        Mistake("ascent", lambda t, h, m, lr: t + lr * h @ (t - m),
                "You stepped along the gradient, uphill (or wrote the displacement as θ* − θ): gradient "
                "descent moves against the gradient."),
        Mistake("forgot minimizer", lambda t, h, m, lr: t - lr * h @ t,
                "Your gradient is Hθ, which is right only when the minimizer θ* is 0: the gradient "
                "depends on the displacement from the minimizer."),
        Mistake("half", lambda t, h, m, lr: t - 0.5 * lr * h @ (t - m),
                "Your step is half as long as it should be: the ½ in the quadratic model cancels against "
                "the 2 from differentiating the square."),
        Mistake("step only", lambda t, h, m, lr: -lr * h @ (t - m),
                "You returned the step (the change of θ), not the new iterate: add it to the current θ."),
        Mistake("diagonal only", lambda t, h, m, lr: t - lr * np.diag(h) * (t - m),
                "You used only the diagonal of H (an elementwise product with its diagonal). The Hessians "
                "of the check are not diagonal: the gradient needs the whole matrix (a matrix-vector product)."),
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
    returns="Return a float: the supremum of the learning rates for which gradient descent converges.",
    hint=("Equation eq-eigen-dynamics in section 'The quadratic model of a loss', and section "
          "'Three regimes, and divergence'.",
          "Each eigen-coordinate is multiplied by the same factor at every step; all of these factors must "
          "have magnitude below one. Which eigenvalue of H makes that hardest?"),
    forbidden=("normlab.quadratic.optimal_lr", "normlab.quadratic.contraction_factors"),
    mistakes=(
        Mistake("one over lambda max", lambda h: 1.0 / np.linalg.eigvalsh(h)[-1],
                "Your learning rate is the one that kills the steepest direction in one step, not the largest "
                "step "
                "that converges: the factor of a coordinate may be negative, as long as its magnitude is "
                "below one."),
        Mistake("lambda min", lambda h: 2.0 / np.linalg.eigvalsh(h)[0],
                "You used the smallest eigenvalue. The steepest direction (the largest eigenvalue) is the "
                "one that blows up first."),
        Mistake("diagonal", lambda h: 2.0 / np.max(np.diag(h)),
                "You used the largest diagonal entry of H. For a Hessian that is not diagonal, the "
                "eigenvalues differ from the diagonal entries."),
        Mistake("trace", lambda h: 2.0 / np.trace(h),
                "You divided by the trace (the sum of all eigenvalues); only one eigenvalue matters."),
        Mistake("frobenius", lambda h: 2.0 / np.linalg.norm(h),
                "You divided by the Frobenius norm of H (the root of the sum of all squared eigenvalues); "
                "only one eigenvalue matters."),
    ),
))


# --- Exercise: steps to shrink the error by a factor ----------------------------------

def _steps_cases(rng: np.random.Generator) -> list[Case]:
    lam = np.array([0.01, 0.3, 1.0])
    return [
        Case((lam, 0.5, 1e-3), description="λ = (0.01, 0.3, 1), η = 0.5, tol = 1e-3"),
        Case((lam, 1.9, 1e-6), description="λ = (0.01, 0.3, 1), η = 1.9 (oscillating), tol = 1e-6"),
        Case((np.array([1.0, 2.0]), 0.9, 1e-4), description="λ = (1, 2), η = 0.9: the top direction is the slowest"),
        Case((np.geomspace(1e-2, 1.0, 5), 1.0, 1e-2), description="log-spaced λ, η = 1"),
        Case((np.array([1.0, 3.0]), 0.8, 1e-3), description="λ = (1, 3), η = 0.8: diverges"),
    ]


def _steps_from(rates, tol):
    rate = float(np.max(rates))
    return float(np.ceil(np.log(tol) / np.log(rate) - 1e-12)) if rate < 1 else float("inf")


steps_to_tolerance = make_checker(Exercise(
    name="steps_to_tolerance",
    reference=quadratic.steps_to_tolerance,
    cases=_steps_cases,
    returns="Return a float: the smallest whole number of steps, or float('inf') if some coordinate never shrinks.",
    hint=("Equation eq-eigen-dynamics in section 'The quadratic model of a loss', and eq-steps in section "
          "'The condition number sets the pace'.",
          "Each coordinate shrinks by the magnitude of its own factor per step, and the slowest coordinate "
          "decides. Take logarithms to solve for the number of steps, and round so that the tolerance is "
          "reached, not almost reached."),
    forbidden=("normlab.quadratic.contraction_factors",),
    time_limit=2.0,
    mistakes=(
        Mistake("only smallest eigenvalue",
                lambda lam, lr, tol: _steps_from(1 - lr * np.min(lam), tol),
                "You used the factor of the smallest eigenvalue only (which is also the largest 1 − ηλ_i "
                "when the sign is kept). When η is large, the top direction's factor can be close to −1, an "
                "oscillating coordinate that shrinks slowly, or below −1 and diverge: compare the magnitudes "
                "of all the factors."),
        Mistake("floor", lambda lam, lr, tol: float(np.floor(np.log(tol) / np.log(
                    np.max(np.abs(1 - lr * np.asarray(lam))))) if np.max(np.abs(1 - lr * np.asarray(lam))) < 1
                    else float("inf")),
                "Rounded down: after that many steps the error is still above tol. Round up."),
        Mistake("not rounded", lambda lam, lr, tol: np.log(tol) / np.log(np.max(np.abs(1 - lr * np.asarray(lam)))),
                "Your number of steps is not a whole number: the exercise asks for the smallest whole number of "
                "steps after which the tolerance is met."),
        Mistake("one too many", lambda lam, lr, tol: quadratic.steps_to_tolerance(lam, lr, tol) + 1,
                "One step too many: after one step fewer every coordinate has already shrunk by tol. "
                "Does your count start at 0 or 1, and do you stop as soon as the tolerance is met?"),
        Mistake("divergence not detected",
                lambda lam, lr, tol: float(np.ceil(np.log(tol) / np.log(np.max(np.abs(1 - lr * np.asarray(lam)))))),
                "When the slowest factor has magnitude 1 or more the error never shrinks, and the formula "
                "gives a meaningless count: the exercise asks for float('inf') then."),
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
    returns="Return a new array of the shape (n, d) of x.",
    hint=("Section 'The perfect normalization for linear regression', and equation eq-least-squares for "
          "why the columns matter.",
          "Work per feature (column): remove its mean and divide by its spread, both computed over the n "
          "samples with the 1/n convention."),
    forbidden=("normlab.preprocessing.standardize", "normlab.preprocessing.whiten",
               "normlab.functional.batch_norm_forward", "torch.nn.functional.batch_norm", "torch.batch_norm",
               "scipy.stats.zscore", "sklearn.preprocessing.scale"),
    mistakes=(
        Mistake("rows", lambda x: (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True),
                "You normalized each row (sample). Features are columns: reduce over the samples (axis 0)."),
        Mistake("not centred", lambda x: x / x.std(axis=0),
                "You scaled but did not subtract the mean. A column with a non-zero mean adds a large "
                "eigenvalue to XᵀX/n (LeCun et al. 1998): centre it first."),
        Mistake("not scaled", lambda x: x - x.mean(axis=0),
                "You centred the columns but did not scale them to unit standard deviation."),
        Mistake("variance", lambda x: (x - x.mean(axis=0)) / x.var(axis=0),
                "You divided by the variance; the columns must end with unit standard deviation."),
        Mistake("sample std", lambda x: (x - x.mean(axis=0)) / x.std(axis=0, ddof=1),
                "You used the sample standard deviation (n − 1). This chapter uses the 1/n version, which "
                "makes the diagonal of XᵀX/n exactly 1."),
        Mistake("global", lambda x: (x - x.mean()) / x.std(),
                "You used one mean and one standard deviation for the whole matrix; every feature needs "
                "its own."),
    ),
))
