"""The checkers of the WeightNorm chapter against a zoo of student attempts.

Each wrong attempt is written as a student would write it and must fail with the diagnosis
that names its mistake; each correct attempt is written independently of the notebook's
solution (and of the others) and must pass. normlab's own implementations are shortcuts here:
the checker refuses them by name.
"""

from __future__ import annotations

import functools
import math


import numpy as np
import pytest
import torch

from normlab.exercises import weightnorm as check
from normlab.layers import WeightNormLinear, data_dependent_init_, weight_norm_grads

from zoo import first_message

pytestmark = pytest.mark.usefixtures("student_mode")


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


def _unit_rows(v):
    return v / np.sqrt((v**2).sum(axis=1, keepdims=True))


# =========================================================================== weight_norm_grads

def grads_projection_matrix(v, g, grad_w):
    """Row by row, with the projection M_w as an explicit (in, in) matrix."""
    out, inp = v.shape
    grad_g, grad_v = np.empty(out), np.empty_like(v)
    for i in range(out):
        norm = math.sqrt(v[i] @ v[i])
        u = v[i] / norm
        grad_g[i] = grad_w[i] @ u
        grad_v[i] = g[i] / norm * (np.eye(inp) - np.outer(u, u)) @ grad_w[i]
    return grad_g, grad_v


def grads_torch_closed_form(v, g, grad_w):
    """Torch tensors, no autograd: the normal component removed with a batched dot product."""
    tv, tg, tw = _t(v), _t(g), _t(grad_w)
    norm = torch.linalg.vector_norm(tv, dim=1, keepdim=True)
    u = tv / norm
    along = torch.einsum("oi,oi->o", tw, u)
    return along.numpy(), ((tg[:, None] / norm) * (tw - along[:, None] * u)).numpy()


def grads_as_list(v, g, grad_w):
    """From w = g v/‖v‖: ∇v L = g/‖v‖ (∇w L − (∇w L · w) w / ‖w‖²), returned as a list."""
    norm = np.linalg.norm(v, axis=1)
    w = (g / norm)[:, None] * v
    coefficient = np.einsum("oi,oi->o", grad_w, w) / np.einsum("oi,oi->o", w, w)
    grad_v = (g / norm)[:, None] * (grad_w - coefficient[:, None] * w)
    return [np.einsum("oi,oi->o", grad_w, v) / norm, grad_v]


@pytest.mark.parametrize("solution", [grads_projection_matrix, grads_torch_closed_form, grads_as_list])
def test_weight_norm_grads_correct_attempts_pass(solution):
    result = check.weight_norm_grads(solution)
    assert result.passed, result.messages


def _grads(v, g, grad_w, *, project=True, scale=True, unit=True):
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    u = v / norm if unit else v
    grad_v = grad_w - u * (grad_w * u).sum(axis=1, keepdims=True) if project else grad_w
    return (grad_w * v / norm).sum(axis=1), (g[:, None] / norm * grad_v if scale else grad_v)


def _grads_autograd(v, g, grad_w):
    tv, tg = _t(v).requires_grad_(), _t(g).requires_grad_()
    w = tg[:, None] * tv / tv.norm(dim=1, keepdim=True)
    grad_g, grad_v = torch.autograd.grad(w, (tg, tv), _t(grad_w))
    return grad_g.numpy(), grad_v.numpy()


def _grads_torch_weight_norm(v, g, grad_w):
    tv, tg = _t(v).requires_grad_(), _t(g)[:, None].requires_grad_()
    w = torch._weight_norm(tv, tg, 0)
    (w * _t(grad_w)).sum().backward()
    return tg.grad[:, 0].numpy(), tv.grad.numpy()


def _grads_normlab(v, g, grad_w):
    return tuple(t.numpy() for t in weight_norm_grads(_t(v), _t(g), _t(grad_w)))


def _grads_g_broadcast(v, g, grad_w):
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    u = v / norm
    return (grad_w * u).sum(axis=1), g / norm * (grad_w - u * (grad_w * u).sum(axis=1, keepdims=True))


def _grads_columns(v, g, grad_w):
    norm = np.linalg.norm(v, axis=0, keepdims=True)
    u = v / norm
    along = (grad_w * u).sum(axis=0)
    return along, g[:, None] / norm * (grad_w - u * along)


GRADS_WRONG = {
    "no projection": (lambda v, g, gw: _grads(v, g, gw, project=False), "M_w"),
    "no g/‖v‖": (lambda v, g, gw: _grads(v, g, gw, scale=False), "misses the factor g/‖v‖"),
    "projection with v": (lambda v, g, gw: _grads(v, g, gw, unit=False), "v vᵀ instead of v vᵀ/‖v‖²"),
    "grad_g with v": (lambda v, g, gw: ((gw * v).sum(1), _grads(v, g, gw)[1]), "not v"),
    "abs(g)": (lambda v, g, gw: (_grads(v, g, gw)[0], np.abs(g)[:, None] * _grads(v, g, gw)[1] / g[:, None]),
               "rows where g < 0"),
    "swapped outputs": (lambda v, g, gw: _grads(v, g, gw)[::-1], "wrong order: you returned (grad_v, grad_g)"),
    "norm of the columns": (_grads_columns, "norm of each column"),
    "g not a column": (_grads_g_broadcast, "broadcast along the input axis"),
    "autograd": (_grads_autograd, "you called `torch.autograd.grad`"),
    "torch weight norm": (_grads_torch_weight_norm, "you called `torch._weight_norm`"),
    "normlab": (_grads_normlab, "you called `normlab.layers.weight_norm_grads`"),
}


@pytest.mark.parametrize("name", list(GRADS_WRONG))
def test_weight_norm_grads_wrong_attempts_are_named(name):
    attempt, phrase = GRADS_WRONG[name]
    assert phrase in first_message(check.weight_norm_grads(attempt))


# =========================================================================== data_dependent_init

def ddi_loops(v, x):
    out = v.shape[0]
    g, b = np.empty(out), np.empty(out)
    for i in range(out):
        t = x @ v[i] / np.linalg.norm(v[i])
        mean = t.mean()
        std = math.sqrt(((t - mean) ** 2).mean())
        g[i], b[i] = 1 / std, -mean / std
    return g, b


def ddi_torch(v, x):
    t = _t(x) @ torch.nn.functional.normalize(_t(v), dim=1).T
    var, mean = torch.var_mean(t, dim=0, correction=0)
    inv = torch.rsqrt(var)
    return inv.numpy(), (-mean * inv).numpy()


def ddi_as_list(v, x):
    """Standardize the unnormalized pre-activations: σ[x vᵀ] = ‖v‖ σ[t], so g = ‖v‖/σ[x vᵀ]."""
    a = x @ v.T
    centred = a - a.mean(axis=0)
    std = np.sqrt((centred**2).mean(axis=0))
    return [np.linalg.norm(v, axis=1) / std, -a.mean(axis=0) / std]


@pytest.mark.parametrize("solution", [ddi_loops, ddi_torch, ddi_as_list])
def test_data_dependent_init_correct_attempts_pass(solution):
    result = check.data_dependent_init(solution)
    assert result.passed, result.messages


def _ddi(v, x, *, ddof=0, normalize=True):
    t = x @ (_unit_rows(v) if normalize else v).T
    return 1 / t.std(0, ddof=ddof), -t.mean(0) / t.std(0, ddof=ddof)


def _ddi_normlab(v, x):
    layer = WeightNormLinear(v.shape[1], v.shape[0], dtype=torch.float64)
    with torch.no_grad():
        layer.v.copy_(_t(v))
    data_dependent_init_(layer, _t(x), eps=0.0)
    return layer.g.detach().numpy(), layer.bias.detach().numpy()


def _ddi_torch_parametrization(v, x):
    linear = torch.nn.Linear(v.shape[1], v.shape[0], bias=False, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(_t(v))
    linear = torch.nn.utils.parametrizations.weight_norm(linear)
    with torch.no_grad():
        linear.parametrizations.weight.original0.fill_(1.0)
        t = linear(_t(x))
    return (1 / t.std(0, correction=0)).numpy(), (-t.mean(0) / t.std(0, correction=0)).numpy()


DDI_WRONG = {
    "unbiased std": (lambda v, x: _ddi(v, x, ddof=1), "ddof=1"),
    "v not normalized": (lambda v, x: _ddi(v, x, normalize=False), "off by ‖v‖"),
    "columns normalized": (lambda v, x: (lambda t: (1 / t.std(0), -t.mean(0) / t.std(0)))(
        x @ (v / np.linalg.norm(v, axis=0)).T), "norms of its columns"),
    "statistics over the units": (lambda v, x: (lambda t: (1 / t.std(1), -t.mean(1) / t.std(1)))(x @ _unit_rows(v).T),
                                  "over the units of each example"),
    "bias not divided": (lambda v, x: (_ddi(v, x)[0], -(x @ _unit_rows(v).T).mean(0)), "Your bias is −μ[t]"),
    "bias sign": (lambda v, x: (_ddi(v, x)[0], -_ddi(v, x)[1]), "wrong sign"),
    "g = sigma": (lambda v, x: (1 / _ddi(v, x)[0], _ddi(v, x)[1]), "Your g is σ[t]"),
    "swapped outputs": (lambda v, x: _ddi(v, x)[::-1], "wrong order: you returned (b, g)"),
    "normlab": (_ddi_normlab, "you called `normlab.layers.data_dependent_init_`"),
    "torch parametrization": (_ddi_torch_parametrization,
                              "you called `torch.nn.utils.parametrizations.weight_norm`"),
}


@pytest.mark.parametrize("name", list(DDI_WRONG))
def test_data_dependent_init_wrong_attempts_are_named(name):
    attempt, phrase = DDI_WRONG[name]
    assert phrase in first_message(check.data_dependent_init(attempt))


# =========================================================================== predict_norm

def predict_on_the_norm(norm0, lr, c, k):
    """Iterate on ‖v‖ itself: the step is orthogonal, so ‖v_{t+1}‖ = √(‖v_t‖² + (η c/‖v_t‖)²)."""
    norm = norm0
    for _ in range(k):
        norm = math.hypot(norm, lr * c / norm)
    return norm


def predict_with_reduce(norm0, lr, c, k):
    squared = functools.reduce(lambda sq, _: sq + (lr * c) ** 2 / sq, range(k), norm0**2)
    return squared**0.5


def predict_with_torch(norm0, lr, c, k):
    sq = torch.tensor(float(norm0) ** 2, dtype=torch.float64)
    t = 0
    while t < k:
        sq = sq + lr**2 * c**2 / sq
        t += 1
    return sq.sqrt().item()


@pytest.mark.parametrize("solution", [predict_on_the_norm, predict_with_reduce, predict_with_torch])
def test_predict_norm_correct_attempts_pass(solution):
    result = check.predict_norm(solution)
    assert result.passed, result.messages


def _predict(norm0, lr, c, k):
    sq = norm0**2
    for _ in range(k):
        sq += (lr * c) ** 2 / sq
    return sq


PREDICT_WRONG = {
    "lengths added": (lambda n0, lr, c, k: functools.reduce(lambda n, _: n + lr * c / n, range(k), n0), "quadrature"),
    "gradient does not shrink": (lambda n0, lr, c, k: math.sqrt(n0**2 + k * (lr * c) ** 2), "shrinks like 1/‖v_t‖"),
    "approximation": (lambda n0, lr, c, k: (n0**4 + 2 * (lr * c) ** 2 * k) ** 0.25, "the approximation"),
    "squared norm": (_predict, "Return its square root"),
    "lr not squared": (lambda n0, lr, c, k: functools.reduce(lambda sq, _: sq + lr * c**2 / sq, range(k), n0**2) ** 0.5,
                       "carries η²"),
    "one step too few": (lambda n0, lr, c, k: math.sqrt(_predict(n0, lr, c, k - 1)), "one step too few"),
    "one step too many": (lambda n0, lr, c, k: math.sqrt(_predict(n0, lr, c, k + 1)), "one step too many"),
    "history instead of the last value": (
        lambda n0, lr, c, k: [math.sqrt(_predict(n0, lr, c, t)) for t in range(k + 1)],
        "Return only the last one"),
}


@pytest.mark.parametrize("name", list(PREDICT_WRONG))
def test_predict_norm_wrong_attempts_are_named(name):
    attempt, phrase = PREDICT_WRONG[name]
    assert phrase in first_message(check.predict_norm(attempt))


# =========================================================================== the checkers themselves

EXERCISES = [getattr(check, name).exercise for name in check.__all__]


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_every_listed_mistake_fails_on_some_case(exercise):
    """A listed mistake that agrees with the reference on every case where it runs would pass the
    checker (a mistake that raises on a case does not apply to it, as in the checker)."""
    cases = exercise.cases(np.random.default_rng(exercise.seed))
    for mistake in exercise.mistakes:
        differs = []
        for case in cases:
            try:
                got = mistake.implementation(*case.args)
            except ValueError:
                continue
            want = exercise.reference(*case.args)
            got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
            same = all(np.shape(a) == np.shape(b) and np.allclose(a, b, rtol=exercise.rtol, atol=exercise.atol)
                       for a, b in zip(got, want))
            differs.append(not same)
        assert any(differs), (exercise.name, mistake.name)


def test_the_gradient_reference_matches_autograd():
    exercise = check.weight_norm_grads.exercise
    for case in exercise.cases(np.random.default_rng(exercise.seed)):
        v, g, grad_w = case.args
        tv, tg = _t(v).requires_grad_(), _t(g).requires_grad_()
        w = tg[:, None] * tv / tv.norm(dim=1, keepdim=True)
        expected = torch.autograd.grad(w, (tg, tv), _t(grad_w))
        for ours, theirs in zip(exercise.reference(*case.args), expected):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-14)


def test_a_stub_is_reported_as_not_implemented():
    def stub(v, g, grad_w):
        raise NotImplementedError("write me")

    assert "not implemented yet" in first_message(check.weight_norm_grads(stub))
