"""The checkers of the LayerNorm chapter against a zoo of student attempts.

Each wrong attempt is written as a student would write it and must fail with the diagnosis
that names its mistake; each correct attempt is written independently of the notebook's
solution (and of the others) and must pass. Nothing here calls normlab's implementations as a
"correct" solution: that is a shortcut, and the checker refuses it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F

from normlab import functional as F
from normlab.exercises import layernorm as check
from normlab.layers import GroupNorm as NormlabGroupNorm
from normlab.layers import RMSNorm as NormlabRMSNorm

from zoo import first_message

pytestmark = pytest.mark.usefixtures("student_mode")


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


# =========================================================================== LayerNorm forward

def ln_forward_sums(x, gamma, beta, eps):
    """NumPy without keepdims: statistics as vectors, broadcast with [:, None]."""
    d = x.shape[1]
    mu = x.sum(axis=1) / d
    centred = x - mu[:, None]
    var = (centred * centred).sum(axis=1) / d
    return centred / np.sqrt(var + eps)[:, None] * gamma + beta


def ln_forward_torch(x, gamma, beta, eps):
    t = _t(x)
    var, mean = torch.var_mean(t, dim=1, keepdim=True, correction=0)
    return ((t - mean) * torch.rsqrt(var + eps) * _t(gamma) + _t(beta)).numpy()


def ln_forward_loops(x, gamma, beta, eps):
    n, d = x.shape
    y = np.empty_like(x)
    for i in range(n):
        mean = sum(x[i]) / d
        var = sum((value - mean) ** 2 for value in x[i]) / d
        for j in range(d):
            y[i, j] = gamma[j] * (x[i, j] - mean) / math.sqrt(var + eps) + beta[j]
    return y


@pytest.mark.parametrize("solution", [ln_forward_sums, ln_forward_torch, ln_forward_loops])
def test_layernorm_forward_correct_attempts_pass(solution):
    result = check.layernorm_forward(solution)
    assert result.passed, result.messages


def _ln_hat(x, eps, axis=1, ddof=0):
    return (x - x.mean(axis, keepdims=True)) / np.sqrt(x.var(axis, keepdims=True, ddof=ddof) + eps)


def _ln_in_place(x, gamma, beta, eps):
    x -= x.mean(axis=1, keepdims=True)
    x /= np.sqrt((x**2).mean(axis=1, keepdims=True) + eps)
    return gamma * x + beta


LN_FORWARD_WRONG = {
    "eps ignored": (lambda x, g, b, e: g * (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True) + b,
                    "ignores its `eps` argument"),
    "eps outside the root": (lambda x, g, b, e: g * (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + e) + b,
                             "ε is in the wrong place"),
    "unbiased variance": (lambda x, g, b, e: g * _ln_hat(x, e, ddof=1) + b, "unbiased variance"),
    "batch axis": (lambda x, g, b, e: g * (x - x.mean(0)) / np.sqrt(x.var(0) + e) + b, "that is BatchNorm"),
    "whole array": (lambda x, g, b, e: g * (x - x.mean()) / np.sqrt(x.var() + e) + b, "over the whole array"),
    "forgot gamma and beta": (lambda x, g, b, e: _ln_hat(x, e), "without the learned gain and bias"),
    "forgot beta": (lambda x, g, b, e: g * _ln_hat(x, e), "forgot the bias β"),
    "gamma and beta swapped": (lambda x, g, b, e: b * _ln_hat(x, e) + g, "swapped γ and β"),
    "in place": (_ln_in_place, "changed its input"),
    "torch functional": (lambda x, g, b, e: torch_F.layer_norm(_t(x), (x.shape[1],), _t(g), _t(b), e).numpy(),
                         "you called `torch.nn.functional.layer_norm`"),
    "torch module": (lambda x, g, b, e: torch.nn.LayerNorm(x.shape[1], eps=e, dtype=torch.float64)(_t(x))
                     .detach().numpy() * g + b, "you called `torch.nn.LayerNorm`"),
    "torch builtin": (lambda x, g, b, e: torch.layer_norm(_t(x), [x.shape[1]], _t(g), _t(b), e).numpy(),
                      "you called `torch.layer_norm`"),
    "normlab": (lambda x, g, b, e: F.layer_norm_forward(x, g, b, e)[0],
                "you called `normlab.functional.layer_norm_forward`"),
    "batch norm of the transpose": (
        lambda x, g, b, e: g * torch_F.batch_norm(_t(x.T), None, None, training=True, eps=e).numpy().T + b,
        "you called `torch.nn.functional.batch_norm`"),
}


@pytest.mark.parametrize("name", list(LN_FORWARD_WRONG))
def test_layernorm_forward_wrong_attempts_are_named(name):
    attempt, phrase = LN_FORWARD_WRONG[name]
    assert phrase in first_message(check.layernorm_forward(attempt))


# =========================================================================== LayerNorm backward

def ln_backward_staged(dout, x, gamma, eps):
    """CS231n style: the forward as a graph of small steps, then back through each step."""
    n, d = x.shape
    mu = x.mean(axis=1, keepdims=True)
    xc = x - mu
    var = (xc**2).mean(axis=1, keepdims=True)
    std = np.sqrt(var + eps)
    inv = 1.0 / std
    xhat = xc * inv
    dgamma = (dout * xhat).sum(axis=0)
    dbeta = dout.sum(axis=0)
    dxhat = dout * gamma
    dinv = (dxhat * xc).sum(axis=1, keepdims=True)
    dxc = dxhat * inv
    dstd = -dinv / std**2
    dvar = dstd / (2 * std)
    dxc += 2 * xc * dvar / d
    dmu = -dxc.sum(axis=1, keepdims=True)
    dx = dxc + dmu / d
    return dx, dgamma, dbeta


def ln_backward_jacobian(dout, x, gamma, eps):
    """One example at a time, with the explicit D × D Jacobian of x̂ with respect to x."""
    n, d = x.shape
    dx = np.empty_like(x)
    dgamma = np.zeros(d)
    for i in range(n):
        std = math.sqrt(x[i].var() + eps)
        xhat = (x[i] - x[i].mean()) / std
        jacobian = (np.eye(d) - np.ones((d, d)) / d - np.outer(xhat, xhat) / d) / std
        dx[i] = jacobian.T @ (gamma * dout[i])
        dgamma += dout[i] * xhat
    return dx, dgamma, dout.sum(axis=0)


def ln_backward_torch_as_list(dout, x, gamma, eps):
    """Torch tensors, closed form, returned as a list."""
    t, g = _t(x), _t(gamma) * _t(dout)
    var, mean = torch.var_mean(t, dim=-1, keepdim=True, correction=0)
    inv = torch.rsqrt(var + eps)
    xhat = (t - mean) * inv
    dx = inv * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
    return [dx.numpy(), (_t(dout) * xhat).sum(0).numpy(), _t(dout).sum(0).numpy()]


@pytest.mark.parametrize("solution", [ln_backward_staged, ln_backward_jacobian, ln_backward_torch_as_list])
def test_layernorm_backward_correct_attempts_pass(solution):
    result = check.layernorm_backward(solution)
    assert result.passed, result.messages


def _closed_form(dout, x, gamma, eps, *, ddof=0, eps_inside=True, gamma_inside=True, axis=1):
    var = x.var(1, keepdims=True, ddof=ddof)
    std = np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps
    xhat = (x - x.mean(1, keepdims=True)) / std
    g = dout * gamma if gamma_inside else dout
    dx = (g - g.mean(axis, keepdims=True) - xhat * (g * xhat).mean(axis, keepdims=True)) / std
    return (dx if gamma_inside else gamma * dx), (dout * xhat).sum(0), dout.sum(0)


def _ln_backward_autograd(dout, x, gamma, eps):
    t, g = _t(x).requires_grad_(), _t(gamma).requires_grad_()
    y = g * (t - t.mean(1, keepdim=True)) / torch.sqrt(t.var(1, unbiased=False, keepdim=True) + eps)
    dx, dgamma = torch.autograd.grad(y, (t, g), _t(dout))
    return dx.numpy(), dgamma.numpy(), dout.sum(0)


def _ln_backward_dot_backward(dout, x, gamma, eps):
    t = _t(x).requires_grad_()
    y = (t - t.mean(1, keepdim=True)) / torch.sqrt(t.var(1, unbiased=False, keepdim=True) + eps) * _t(gamma)
    (y * _t(dout)).sum().backward()
    _, dgamma, dbeta = _closed_form(dout, x, gamma, eps)
    return t.grad.numpy(), dgamma, dbeta


def _ln_backward_per_example_sums(dout, x, gamma, eps):
    dx, _, _ = _closed_form(dout, x, gamma, eps)
    xhat = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)
    return dx, dout * xhat, dout


LN_BACKWARD_WRONG = {
    "eps ignored": (lambda dout, x, g, e: _closed_form(dout, x, g, 0.0), "ignores its `eps` argument"),
    "gamma factored out": (lambda dout, x, g, e: _closed_form(dout, x, g, e, gamma_inside=False), "factored γ out"),
    "mu and sigma constant": (lambda dout, x, g, e: (g * dout / np.sqrt(x.var(1, keepdims=True) + e),
                                                      *_closed_form(dout, x, g, e)[1:]),
                              "treats μ and σ as constants"),
    "means over the batch": (lambda dout, x, g, e: _closed_form(dout, x, g, e, axis=0), "means run over the batch"),
    "unbiased variance": (lambda dout, x, g, e: _closed_form(dout, x, g, e, ddof=1), "unbiased variance"),
    "eps outside the root": (lambda dout, x, g, e: _closed_form(dout, x, g, e, eps_inside=False),
                             "ε is in the wrong place"),
    "dgamma with x": (lambda dout, x, g, e: (_closed_form(dout, x, g, e)[0], (dout * x).sum(0), dout.sum(0)),
                      "sums dout·x"),
    "dgamma and dbeta swapped": (lambda dout, x, g, e: (lambda dx, dg, db: (dx, db, dg))(*_closed_form(dout, x, g, e)),
                                 "wrong order: you returned (dx, dbeta, dgamma)"),
    "no sum over the batch": (_ln_backward_per_example_sums, "reduce over the batch"),
    "two outputs": (lambda dout, x, g, e: _closed_form(dout, x, g, e)[:2], "tuple of 2 values, expected 3"),
    "autograd": (_ln_backward_autograd, "you called `torch.autograd.grad`"),
    "tensor backward": (_ln_backward_dot_backward, "you called `torch.autograd.backward`"),
    "normlab": (lambda dout, x, g, e: F.layer_norm_backward(dout, F.layer_norm_forward(x, g, 0 * g, e)[1]),
                "you called `normlab.functional.layer_norm_forward`"),
}


@pytest.mark.parametrize("name", list(LN_BACKWARD_WRONG))
def test_layernorm_backward_wrong_attempts_are_named(name):
    attempt, phrase = LN_BACKWARD_WRONG[name]
    assert phrase in first_message(check.layernorm_backward(attempt))


# =========================================================================== GroupNorm forward

def gn_forward_loops(x, num_groups, gamma, beta, eps):
    n, c, h, w = x.shape
    size = c // num_groups
    y = np.empty_like(x)
    for i in range(n):
        for k in range(num_groups):
            block = x[i, k * size:(k + 1) * size]
            mean = block.mean()
            var = ((block - mean) ** 2).mean()
            y[i, k * size:(k + 1) * size] = (block - mean) / np.sqrt(var + eps)
    return y * gamma[None, :, None, None] + beta[None, :, None, None]


def gn_forward_torch(x, num_groups, gamma, beta, eps):
    t = _t(x)
    n, c = t.shape[:2]
    grouped = t.reshape(n, num_groups, c // num_groups, *t.shape[2:]).flatten(2)
    var, mean = torch.var_mean(grouped, dim=-1, keepdim=True, correction=0)
    xhat = ((grouped - mean) / torch.sqrt(var + eps)).reshape(t.shape)
    return (xhat * _t(gamma).view(1, c, 1, 1) + _t(beta).view(1, c, 1, 1)).numpy()


def gn_forward_einsum(x, num_groups, gamma, beta, eps):
    """Group membership as a (C, G) one-hot matrix: statistics by matrix products."""
    n, c, h, w = x.shape
    member = np.zeros((c, num_groups))
    member[np.arange(c), np.arange(c) // (c // num_groups)] = 1.0
    count = (c // num_groups) * h * w
    mean = np.einsum("nchw,cg->ng", x, member) / count
    mean_c = mean @ member.T                                    # (N, C)
    centred = x - mean_c[:, :, None, None]
    var = np.einsum("nchw,cg->ng", centred**2, member) / count
    inv_c = (1 / np.sqrt(var + eps)) @ member.T
    return centred * inv_c[:, :, None, None] * gamma[:, None, None] + beta[:, None, None]


@pytest.mark.parametrize("solution", [gn_forward_loops, gn_forward_torch, gn_forward_einsum])
def test_groupnorm_forward_correct_attempts_pass(solution):
    result = check.groupnorm_forward(solution)
    assert result.passed, result.messages


def _gn(x, groups, gamma, beta, eps, *, ddof=0, eps_inside=True):
    n = x.shape[0]
    grouped = x.reshape(n, groups, -1)
    var = grouped.var(2, keepdims=True, ddof=ddof)
    std = np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps
    xhat = ((grouped - grouped.mean(2, keepdims=True)) / std).reshape(x.shape)
    return gamma.reshape(1, -1, 1, 1) * xhat + beta.reshape(1, -1, 1, 1)


def _gn_interleaved(x, groups, gamma, beta, eps):
    n, c, h, w = x.shape
    y = np.empty_like(x)
    for k in range(groups):
        block = x[:, k::groups]
        mean = block.mean(axis=(1, 2, 3), keepdims=True)
        y[:, k::groups] = (block - mean) / np.sqrt(block.var(axis=(1, 2, 3), keepdims=True) + eps)
    return gamma.reshape(1, -1, 1, 1) * y + beta.reshape(1, -1, 1, 1)


def _gn_gamma_not_reshaped(x, groups, gamma, beta, eps):
    n = x.shape[0]
    grouped = x.reshape(n, groups, -1)
    xhat = ((grouped - grouped.mean(2, keepdims=True)) / np.sqrt(grouped.var(2, keepdims=True) + eps)).reshape(x.shape)
    return gamma * xhat + beta


def _gn_via_layer_norm(x, groups, gamma, beta, eps):
    grouped = _t(x).reshape(x.shape[0], groups, -1)
    xhat = torch_F.layer_norm(grouped, grouped.shape[-1:], eps=eps).reshape(x.shape).numpy()
    return gamma.reshape(1, -1, 1, 1) * xhat + beta.reshape(1, -1, 1, 1)


def _gn_normlab_layer(x, groups, gamma, beta, eps):
    layer = NormlabGroupNorm(groups, x.shape[1], eps=eps, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(_t(gamma))
        layer.bias.copy_(_t(beta))
        return layer(_t(x)).numpy()


GN_WRONG = {
    "eps ignored": (lambda x, G, g, b, e: _gn(x, G, g, b, 0.0), "ignores its `eps` argument"),
    "eps outside the root": (lambda x, G, g, b, e: _gn(x, G, g, b, e, eps_inside=False), "ε is in the wrong place"),
    "unbiased variance": (lambda x, G, g, b, e: _gn(x, G, g, b, e, ddof=1), "unbiased variance"),
    "instance norm": (lambda x, G, g, b, e: g.reshape(1, -1, 1, 1) * (x - x.mean((2, 3), keepdims=True))
                      / np.sqrt(x.var((2, 3), keepdims=True) + e) + b.reshape(1, -1, 1, 1), "InstanceNorm"),
    "layer norm": (lambda x, G, g, b, e: g.reshape(1, -1, 1, 1) * (x - x.mean((1, 2, 3), keepdims=True))
                   / np.sqrt(x.var((1, 2, 3), keepdims=True) + e) + b.reshape(1, -1, 1, 1), "that is LayerNorm"),
    "interleaved groups": (_gn_interleaved, "interleave the channels"),
    "groups of num_groups channels": (lambda x, G, g, b, e: _gn(x, x.shape[1] // G, g, b, e), "groups of num_groups"),
    "gamma not reshaped": (_gn_gamma_not_reshaped, "could not be broadcast"),
    "torch functional": (lambda x, G, g, b, e: torch_F.group_norm(_t(x), G, _t(g), _t(b), e).numpy(),
                         "you called `torch.nn.functional.group_norm`"),
    "torch module": (lambda x, G, g, b, e: torch.nn.GroupNorm(G, x.shape[1], eps=e, dtype=torch.float64)(_t(x))
                     .detach().numpy(), "you called `torch.nn.GroupNorm`"),
    "layer norm of the reshaped input": (_gn_via_layer_norm, "you called `torch.nn.functional.layer_norm`"),
    "normlab layer": (_gn_normlab_layer, "you called `normlab.layers.GroupNorm`"),
}


@pytest.mark.parametrize("name", list(GN_WRONG))
def test_groupnorm_forward_wrong_attempts_are_named(name):
    attempt, phrase = GN_WRONG[name]
    assert phrase in first_message(check.groupnorm_forward(attempt))


# =========================================================================== RMSNorm forward

def rms_forward_einsum(x, gamma, eps):
    mean_square = np.einsum("nd,nd->n", x, x) / x.shape[1]
    return x * gamma / np.sqrt(mean_square + eps)[:, None]


def rms_forward_torch(x, gamma, eps):
    t = _t(x)
    return (t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * _t(gamma)).numpy()


def rms_forward_loops(x, gamma, eps):
    rows = []
    for row in x.tolist():
        rms = math.sqrt(sum(value * value for value in row) / len(row) + eps)
        rows.append([gj * value / rms for gj, value in zip(gamma, row)])
    return np.array(rows)


@pytest.mark.parametrize("solution", [rms_forward_einsum, rms_forward_torch, rms_forward_loops])
def test_rmsnorm_forward_correct_attempts_pass(solution):
    result = check.rmsnorm_forward(solution)
    assert result.passed, result.messages


def _rms_normlab_layer(x, gamma, eps):
    layer = NormlabRMSNorm(x.shape[1], eps=eps, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(_t(gamma))
        return layer(_t(x)).numpy()


RMS_WRONG = {
    "eps ignored": (lambda x, g, e: g * x / np.sqrt((x**2).mean(1, keepdims=True)), "ignores its `eps` argument"),
    "eps outside the root": (lambda x, g, e: g * x / (np.sqrt((x**2).mean(1, keepdims=True)) + e),
                             "ε is in the wrong place"),
    "centred": (lambda x, g, e: g * (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + e),
                "that is LayerNorm"),
    "standard deviation": (lambda x, g, e: g * x / np.sqrt(x.var(1, keepdims=True) + e),
                           "divided by the standard deviation"),
    "batch axis": (lambda x, g, e: g * x / np.sqrt((x**2).mean(0) + e), "over the batch (axis 0)"),
    "sum of squares": (lambda x, g, e: g * x / np.sqrt((x**2).sum(1, keepdims=True) + e), "summed the squares"),
    "no square root": (lambda x, g, e: g * x / ((x**2).mean(1, keepdims=True) + e), "without the square root"),
    "forgot gamma": (lambda x, g, e: x / np.sqrt((x**2).mean(1, keepdims=True) + e), "forgot the gain γ"),
    "torch functional": (lambda x, g, e: torch_F.rms_norm(_t(x), (x.shape[1],), _t(g), e).numpy(),
                         "you called `torch.nn.functional.rms_norm`"),
    "torch module": (lambda x, g, e: torch.nn.RMSNorm(x.shape[1], eps=e, dtype=torch.float64)(_t(x))
                     .detach().numpy() * g, "you called `torch.nn.RMSNorm`"),
    "torch builtin": (lambda x, g, e: torch.rms_norm(_t(x), [x.shape[1]], _t(g), e).numpy(),
                      "you called `torch.rms_norm`"),
    "normlab layer": (_rms_normlab_layer, "you called `normlab.layers.RMSNorm`"),
}


@pytest.mark.parametrize("name", list(RMS_WRONG))
def test_rmsnorm_forward_wrong_attempts_are_named(name):
    attempt, phrase = RMS_WRONG[name]
    assert phrase in first_message(check.rmsnorm_forward(attempt))


# =========================================================================== the checkers themselves

EXERCISES = [getattr(check, name).exercise for name in check.__all__]


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_eps_varies_and_matters_in_every_case(exercise):
    """Dropping ε, or adding it to the standard deviation, misses by far more than the tolerance."""
    cases = exercise.cases(np.random.default_rng(exercise.seed))
    assert exercise.eps_argument == "eps"
    assert len({case.args[-1] for case in cases}) >= 4
    ignored = next(m for m in exercise.mistakes if m.name == "eps ignored")
    outside = next(m for m in exercise.mistakes if m.name == "eps outside")
    for case in cases:
        expected = exercise.reference(*case.args)
        expected = expected[0] if isinstance(expected, tuple) else expected
        for mistake in (ignored, outside):
            wrong = mistake.implementation(*case.args)
            wrong = wrong[0] if isinstance(wrong, tuple) else wrong
            relative = np.max(np.abs(wrong - expected) / np.abs(expected))
            assert relative > 1e3 * exercise.rtol, (exercise.name, mistake.name, case.description, relative)


@pytest.mark.parametrize("exercise", EXERCISES, ids=lambda e: e.name)
def test_every_listed_mistake_fails_on_some_case(exercise):
    """A listed mistake that agrees with the reference on every case would pass the checker."""
    cases = exercise.cases(np.random.default_rng(exercise.seed))
    for mistake in exercise.mistakes:
        differs = []
        for case in cases:
            got, want = mistake.implementation(*case.args), exercise.reference(*case.args)
            got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
            differs.append(not all(np.allclose(a, b, rtol=exercise.rtol, atol=exercise.atol)
                                   for a, b in zip(got, want)))
        assert any(differs), (exercise.name, mistake.name)


def test_rmsnorm_reference_matches_torch():
    exercise = check.rmsnorm_forward.exercise
    for case in exercise.cases(np.random.default_rng(exercise.seed)):
        x, gamma, eps = case.args
        layer = torch.nn.RMSNorm(x.shape[1], eps=eps, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(_t(gamma))
            expected = layer(_t(x)).numpy()
        np.testing.assert_allclose(exercise.reference(*case.args), expected, rtol=1e-12)


def test_hints_come_one_tier_per_failed_attempt_and_stubs_are_named():
    def stub(x, gamma, eps):
        raise NotImplementedError("rmsnorm_forward: not written yet")

    assert "not implemented yet" in first_message(check.rmsnorm_forward(stub))
    wrong = RMS_WRONG["centred"][0]
    first = check.rmsnorm_forward(wrong).messages
    assert any(m.startswith("Hint 1 of 2") for m in first) and not any("Hint 2" in m for m in first)
    second = check.rmsnorm_forward(wrong).messages
    assert any(m.startswith("Hint 2 of 2") for m in second)
