"""Checkers for the exercises of chapter ``06_weightnorm``.

In a notebook::

    from normlab.exercises import weightnorm as check
    check.weight_norm_grads(weight_norm_grads)

Students' functions take and return NumPy arrays: v has shape (out, in), one row per
output unit, and g has shape (out,). The implementations the exercises ask for (normlab's
:func:`~normlab.layers.weight_norm_grads`, :class:`~normlab.layers.WeightNormLinear` (and
with it :func:`~normlab.layers.data_dependent_init_`, which runs the layer), torch's ``weight_norm`` and ``_weight_norm``, and
autograd for the gradient exercise) are unavailable while a check runs.
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["data_dependent_init", "predict_norm", "weight_norm_grads"]

# w = g v/‖v‖, computed for the student by a layer or by torch's reparameterization. normlab's
# data_dependent_init_ and data_dependent_init_network_ are not named: they are decorated with
# torch.no_grad(), whose wrapper's code is shared by every function so decorated (naming them
# would refuse all of those); both end by calling the layer, so WeightNormLinear refuses them.
_WEIGHT_NORM = (
    "normlab.layers.WeightNormLinear",
    "normlab.layers.weight_norm_grads",
    "torch.nn.utils.parametrizations.weight_norm",
    "torch.nn.utils.weight_norm.weight_norm",
    "torch._weight_norm",
    "torch._weight_norm_interface",
)

# The gradient exercise asks for the gradient itself: autograd would compute it.
_AUTOGRAD = ("torch.autograd.grad", "torch.autograd.backward")


def _row_norm(v: np.ndarray) -> np.ndarray:
    return np.linalg.norm(v, axis=1, keepdims=True)


# --- Exercise: the gradients of weight normalization ---------------------------------

def _grads_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    # (3, 3) is square: g broadcast along the inputs (g / ‖v‖ without keepdims or [:, None]) gives
    # an output of the right shape there, so it is named instead of raising.
    for out, inp in [(3, 3), (1, 3), (5, 2), (3, 4), (4, 8)]:
        v = rng.standard_normal((out, inp)) * 10.0 ** rng.uniform(-1, 1, (out, 1))
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


def _grads_g_unnormalized(v, g, grad_w):
    return (grad_w * v).sum(axis=1), _grads_reference(v, g, grad_w)[1]


def _grads_abs_g(v, g, grad_w):
    grad_g, grad_v = _grads_reference(v, g, grad_w)
    return grad_g, grad_v * np.sign(g)[:, None]


def _grads_columns(v, g, grad_w):
    """The norm, the direction and the projection of each column (axis 0) instead of each row."""
    norm = np.linalg.norm(v, axis=0, keepdims=True)
    u = v / norm
    along = (grad_w * u).sum(axis=0, keepdims=True)
    return along[0], g[:, None] / norm * (grad_w - u * along)


def _grads_g_by_input(v, g, grad_w):
    """g / ‖v‖ broadcast as g[j] / ‖v_i‖: g indexed by the input (only runs when out == in)."""
    norm = _row_norm(v)
    u = v / norm
    return (grad_w * u).sum(axis=1), g / norm * (grad_w - u * (grad_w * u).sum(axis=1, keepdims=True))


weight_norm_grads = make_checker(Exercise(
    name="weight_norm_grads",
    reference=_grads_reference,
    cases=_grads_cases,
    returns="Return a tuple of two new arrays: grad_g of shape (out,), then grad_v of shape (out, in).",
    hint=('The equation of section "Gradients: why the direction\'s length grows" (label eq-wn-grads), '
          "applied to each row of v (one output unit) separately.",
          "The gradient with respect to g is the component of ∇w L along the unit direction of the row. The "
          "gradient with respect to v is ∇w L with that component removed, scaled by g over the row's norm; "
          "keep one number per row as a column so it broadcasts along the row."),
    forbidden=_WEIGHT_NORM + _AUTOGRAD,
    output_names=("grad_g", "grad_v"),
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
        Mistake("grad_g with v", _grads_g_unnormalized,
                "Your ∇g L is ∇w L · v: the derivative of w = g v/‖v‖ with respect to g is the unit vector "
                "v/‖v‖, not v."),
        Mistake("|g| instead of g", _grads_abs_g,
                "Your ∇v L has the wrong sign on the rows where g < 0: the factor is g/‖v‖, with the sign of g "
                "(these cases have negative g)."),
        Mistake("columns", _grads_columns,
                "You took the norm of each column of v (axis 0). Each row of v is one output unit's weight "
                "vector: the norm, the unit direction and the projection are per row (axis 1)."),
        Mistake("g broadcast along the inputs", _grads_g_by_input,
                "Your ∇v L multiplies row i by g[j]/‖v_i‖ at column j: g of shape (out,) broadcast along the "
                "input axis. g has one value per row (output unit); make it a column before it meets an "
                "(out, in) array."),
    ),
))


# --- Exercise: data-dependent initialization ------------------------------------------

def _ddi_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for n, inp, out in [(16, 3, 2), (64, 5, 4), (8, 2, 3), (100, 10, 6), (12, 4, 4)]:
        x = rng.standard_normal((n, inp)) * rng.uniform(0.5, 4.0, inp) + rng.uniform(-3, 3, inp)
        v = rng.standard_normal((out, inp)) * rng.uniform(0.1, 5.0, (out, 1))
        cases.append(Case((v, x), description=f"v of shape ({out}, {inp}), batch of {n}"))
    return cases


def _ddi_reference(v, x):
    t = x @ (v / _row_norm(v)).T
    mean, std = t.mean(axis=0), t.std(axis=0)
    return 1.0 / std, -mean / std


def _ddi_variant(kind: str):
    def wrong(v, x):
        direction = v / (np.linalg.norm(v, axis=0, keepdims=True) if kind == "columns" else _row_norm(v))
        t = x @ (v if kind == "v not normalized" else direction).T
        axis = 1 if kind == "wrong axis" else 0
        mean, std = t.mean(axis=axis), t.std(axis=axis, ddof=1 if kind == "unbiased" else 0)
        if kind == "bias not divided":
            return 1.0 / std, -mean
        if kind == "bias sign":
            return 1.0 / std, mean / std
        if kind == "g = sigma":
            return std, -mean / std
        return 1.0 / std, -mean / std
    return wrong


data_dependent_init = make_checker(Exercise(
    name="data_dependent_init",
    reference=_ddi_reference,
    cases=_ddi_cases,
    returns="Return (g, b): two arrays of shape (out,).",
    hint=('The equation of section "Data-dependent initialization" (label eq-wn-ddi), with t the '
          "pre-activations of the layer when g = 1 and b = 0.",
          "Compute each unit's pre-activation on every example of the batch with the unit direction of its "
          "row of v, take its mean and its biased (1/N) standard deviation over the batch, and choose g and b "
          "so that g·t + b is standardized."),
    forbidden=_WEIGHT_NORM + ("normlab.layers.data_dependent_init_", "normlab.layers.data_dependent_init_network_"),
    output_names=("g", "b"),
    mistakes=(
        Mistake("unbiased std", _ddi_variant("unbiased"),
                "You used the unbiased standard deviation (ddof=1). Salimans & Kingma standardize with the "
                "batch's own (1/N) statistics, so that the pre-activations have exactly unit variance on it."),
        Mistake("v not normalized", _ddi_variant("v not normalized"),
                "You computed t = x vᵀ without dividing v by its norm. g multiplies the unit direction "
                "v/‖v‖, so t must be computed with it; your g is off by ‖v‖."),
        Mistake("columns", _ddi_variant("columns"),
                "You divided v by the norms of its columns (axis 0). Each row of v is one unit's direction: "
                "divide each row by its own norm."),
        Mistake("wrong axis", _ddi_variant("wrong axis"),
                "Your statistics run over the units of each example (axis 1). Each unit needs the mean and the "
                "standard deviation of its pre-activation over the batch (axis 0)."),
        Mistake("bias not divided", _ddi_variant("bias not divided"),
                "Your bias is −μ[t]. The output g·t + b is (t − μ)/σ only if b is −μ[t] divided by σ[t]."),
        Mistake("bias sign", _ddi_variant("bias sign"),
                "Your bias has the wrong sign: it must cancel the mean of g·t, so it is negative where μ[t] > 0."),
        Mistake("g = sigma", _ddi_variant("g = sigma"),
                "Your g is σ[t]: g·t then has standard deviation σ[t]², not 1. g is the reciprocal of σ[t]."),
    ),
))


# --- Exercise: predict ‖v‖ after k steps ----------------------------------------------

def _norm_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((n0, lr, c, k), description=f"‖v_0‖={n0:g}, lr={lr:g}, c={c:g}, k={k}")
            for n0, lr, c, k in [(1.0, 0.5, 1.5, 10), (1.0, 0.1, 1.0, 1), (3.0, 1.0, 0.5, 100),
                                 (0.5, 0.2, 1.5, 1000), (2.0, 0.3, 1.0, 0)]]


def _norm_reference(norm0, lr, c, k):
    sq = float(norm0) ** 2
    for _ in range(int(k)):
        sq = sq + lr**2 * c**2 / sq
    return np.sqrt(sq)


def _norm_steps(offset: int):
    def wrong(norm0, lr, c, k):
        return _norm_reference(norm0, lr, c, max(int(k) + offset, 0))
    return wrong


def _norm_additive(norm0, lr, c, k):
    n = float(norm0)
    for _ in range(int(k)):
        n = n + lr * c / n
    return n


def _norm_no_shrink(norm0, lr, c, k):
    return np.sqrt(norm0**2 + k * lr**2 * c**2)


def _norm_approximation(norm0, lr, c, k):
    return (norm0**4 + 2 * lr**2 * c**2 * k) ** 0.25


def _norm_squared(norm0, lr, c, k):
    return _norm_reference(norm0, lr, c, k) ** 2


def _norm_history(norm0, lr, c, k):
    return [_norm_reference(norm0, lr, c, t) for t in range(int(k) + 1)]


def _norm_lr_not_squared(norm0, lr, c, k):
    sq = float(norm0) ** 2
    for _ in range(int(k)):
        sq = sq + lr * c**2 / sq
    return np.sqrt(sq)


predict_norm = make_checker(Exercise(
    name="predict_norm",
    reference=_norm_reference,
    cases=_norm_cases,
    returns="Return ‖v_k‖, a float.",
    hint=('The second equation of section "Gradients: why the direction\'s length grows" (label eq-wn-growth), '
          "applied k times.",
          "Each step adds to the squared length the squared length of the step, η times the gradient's norm, "
          "and that norm is c divided by the current length, so it shrinks as v grows. Update the squared "
          "length k times, starting from norm0, and return the length."),
    mistakes=(
        Mistake("lengths added", _norm_additive,
                "You added the step's length to ‖v‖. The step is orthogonal to v, so lengths add in "
                "quadrature (Pythagoras): the squared lengths add."),
        Mistake("gradient does not shrink", _norm_no_shrink,
                "You kept ‖∇v L‖ = c at every step. The output does not depend on ‖v‖, so ∇v L shrinks like "
                "1/‖v_t‖: at step t its norm is c/‖v_t‖."),
        Mistake("approximation", _norm_approximation,
                "You returned the approximation ‖v_k‖⁴ ≈ ‖v_0‖⁴ + 2η²c²k. The exercise asks for the exact "
                "recursion, iterated k times; compare with the approximation afterwards."),
        Mistake("squared norm", _norm_squared,
                "You returned the squared length ‖v_k‖². Return its square root."),
        Mistake("lr not squared", _norm_lr_not_squared,
                "Your step adds η·c²/‖v_t‖² to the squared length. The step is η times the gradient, so its "
                "squared length carries η²."),
        Mistake("history", _norm_history,
                "You returned every length ‖v_0‖, …, ‖v_k‖. Return only the last one, ‖v_k‖, as a single number."),
        Mistake("one step too few", _norm_steps(-1),
                "Your result is ‖v_{k−1}‖: one step too few. Count the updates: k steps from ‖v_0‖."),
        Mistake("one step too many", _norm_steps(+1),
                "Your result is ‖v_{k+1}‖: one step too many. Count the updates: k steps from ‖v_0‖ "
                "(k = 0 returns norm0)."),
    ),
))
