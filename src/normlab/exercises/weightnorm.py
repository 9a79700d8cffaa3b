"""Checkers for the exercises of chapter "WeightNorm and scaled WeightNorm".

In a notebook::

    from normlab.exercises import weightnorm as check
    check.weight_norm_grads(weight_norm_grads)

Students' functions take and return NumPy arrays: v has shape (out, in), one row per
output unit, and g has shape (out,).
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["data_dependent_init", "predict_norm", "weight_norm_grads"]


def _row_norm(v: np.ndarray) -> np.ndarray:
    return np.linalg.norm(v, axis=1, keepdims=True)


# --- Exercise: the gradients of weight normalization ---------------------------------

def _grads_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for out, inp in [(1, 3), (3, 4), (5, 2), (4, 8)]:
        v = rng.standard_normal((out, inp)) * rng.uniform(0.3, 3.0, (out, 1))
        g = rng.uniform(0.5, 2.0, out) * rng.choice([-1, 1], out)
        cases.append(Case((v, g, rng.standard_normal((out, inp))), description=f"v of shape ({out}, {inp})"))
    return cases


def _grads_reference(v, g, grad_w):
    norm = _row_norm(v)
    u = v / norm
    grad_g = (grad_w * u).sum(axis=1)
    grad_v = g[:, None] / norm * (grad_w - u * (grad_w * u).sum(axis=1, keepdims=True))
    return grad_g, grad_v


def _grads_no_projection(v, g, grad_w):
    return (grad_w * v / _row_norm(v)).sum(axis=1), g[:, None] / _row_norm(v) * grad_w


def _grads_no_scale(v, g, grad_w):
    grad_g, grad_v = _grads_reference(v, g, grad_w)
    return grad_g, grad_v * _row_norm(v) / g[:, None]


def _grads_unnormalized_projection(v, g, grad_w):
    norm = _row_norm(v)
    grad_g = (grad_w * v / norm).sum(axis=1)
    return grad_g, g[:, None] / norm * (grad_w - v * (grad_w * v).sum(axis=1, keepdims=True))


weight_norm_grads = make_checker(Exercise(
    name="weight_norm_grads",
    reference=_grads_reference,
    cases=_grads_cases,
    hint="Row by row: ∇g L = ∇w L · v/‖v‖ and ∇v L = g/‖v‖ · (∇w L − (∇w L · v̂) v̂) with v̂ = v/‖v‖. "
         "Return (grad_g of shape (out,), grad_v of shape (out, in)).",
    mistakes=(
        Mistake("no projection", _grads_no_projection,
                "Your ∇v L is g/‖v‖ · ∇w L: you treated ‖v‖ as a constant. w depends on v through ‖v‖ too; "
                "differentiating it removes the component of ∇w L along v: multiply by M_w = I − w wᵀ/‖w‖²."),
        Mistake("no g/‖v‖", _grads_no_scale,
                "Your ∇v L has the right direction but misses the factor g/‖v‖ (the chain rule through "
                "w = g v/‖v‖ scales the projected gradient by g/‖v‖)."),
        Mistake("unnormalized projection", _grads_unnormalized_projection,
                "You projected with v vᵀ instead of v vᵀ/‖v‖²: the projection M_w = I − w wᵀ/‖w‖² uses the "
                "unit vector v/‖v‖."),
    ),
))


# --- Exercise: data-dependent initialization ------------------------------------------

def _ddi_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for n, inp, out in [(16, 3, 2), (64, 5, 4), (8, 2, 3), (100, 10, 6)]:
        x = rng.standard_normal((n, inp)) * rng.uniform(0.5, 4.0, inp) + rng.uniform(-3, 3, inp)
        v = rng.standard_normal((out, inp)) * rng.uniform(0.1, 5.0, (out, 1))
        cases.append(Case((v, x), description=f"v of shape ({out}, {inp}), batch of {n}"))
    return cases


def _ddi_reference(v, x):
    t = x @ (v / _row_norm(v)).T
    mean, std = t.mean(axis=0), t.std(axis=0)
    return 1.0 / std, -mean / std


def _ddi_unbiased(v, x):
    t = x @ (v / _row_norm(v)).T
    mean, std = t.mean(axis=0), t.std(axis=0, ddof=1)
    return 1.0 / std, -mean / std


def _ddi_unnormalized(v, x):
    t = x @ v.T
    mean, std = t.mean(axis=0), t.std(axis=0)
    return 1.0 / std, -mean / std


def _ddi_bias_unscaled(v, x):
    t = x @ (v / _row_norm(v)).T
    return 1.0 / t.std(axis=0), -t.mean(axis=0)


data_dependent_init = make_checker(Exercise(
    name="data_dependent_init",
    reference=_ddi_reference,
    cases=_ddi_cases,
    hint="t = x · (v/‖v‖)ᵀ per unit, then g = 1/σ[t] and b = −μ[t]/σ[t], with the biased (1/N) "
         "standard deviation over the batch (axis 0). Return (g, b), both of shape (out,).",
    mistakes=(
        Mistake("unbiased std", _ddi_unbiased,
                "You used the unbiased standard deviation (ddof=1). Salimans & Kingma standardize with the "
                "batch's own (1/N) statistics, so that the pre-activations have exactly unit variance on it."),
        Mistake("v not normalized", _ddi_unnormalized,
                "You computed t = x vᵀ without dividing v by its norm. g multiplies the unit direction "
                "v/‖v‖, so t must be computed with it; your g is off by ‖v‖."),
        Mistake("bias not divided", _ddi_bias_unscaled,
                "Your bias is −μ[t]. The output is g·t + b = (t − μ)/σ only if b = −μ[t]/σ[t]."),
    ),
))


# --- Exercise: predict ‖v‖ after k steps ----------------------------------------------

def _norm_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((n0, lr, c, k), description=f"‖v_0‖={n0:g}, lr={lr:g}, c={c:g}, k={k}")
            for n0, lr, c, k in [(1.0, 0.1, 1.0, 1), (1.0, 0.5, 2.0, 10), (3.0, 1.0, 0.5, 100),
                                 (0.5, 0.2, 1.5, 1000)]]


def _norm_reference(norm0, lr, c, k):
    sq = float(norm0) ** 2
    for _ in range(int(k)):
        sq = sq + lr**2 * c**2 / sq
    return np.sqrt(sq)


def _norm_additive(norm0, lr, c, k):
    n = float(norm0)
    for _ in range(int(k)):
        n = n + lr * c / n
    return n


def _norm_no_shrink(norm0, lr, c, k):
    return np.sqrt(norm0**2 + k * lr**2 * c**2)


predict_norm = make_checker(Exercise(
    name="predict_norm",
    reference=_norm_reference,
    cases=_norm_cases,
    hint="Iterate ‖v_{t+1}‖² = ‖v_t‖² + η²‖∇v L‖² with ‖∇v L‖ = c/‖v_t‖ (the gradient shrinks as v grows), "
         "k times, and return ‖v_k‖.",
    mistakes=(
        Mistake("lengths added", _norm_additive,
                "You added the step's length to ‖v‖. The step is orthogonal to v, so lengths add in "
                "quadrature (Pythagoras): ‖v_{t+1}‖² = ‖v_t‖² + η²‖∇v L‖²."),
        Mistake("gradient does not shrink", _norm_no_shrink,
                "You kept ‖∇v L‖ = c at every step. The output does not depend on ‖v‖, so ∇v L = (g/‖v‖)·M_w ∇w L "
                "shrinks like 1/‖v_t‖: use η²c²/‖v_t‖² at step t."),
    ),
))
