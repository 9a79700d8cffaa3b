"""The checkers of the Transformers chapter against a zoo of student attempts.

Each wrong attempt is written as a student would write it and must fail with the diagnosis that
names its mistake; each correct attempt is written independently of the notebook's solution (and
of the others) and must pass. Nothing here calls normlab's implementations as a "correct" solution.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F

from normlab.exercises import transformers as check
from normlab.layers import DynamicTanh, RMSNorm

from zoo import first_message

pytestmark = pytest.mark.usefixtures("student_mode")


def _t(a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64))


# =========================================================================== RMSNorm backward

def rms_backward_staged(dout, x, gamma, eps):
    """CS231n style: forward as small steps, then back through each step."""
    d = x.shape[1]
    sq = x**2
    ms = sq.sum(axis=1, keepdims=True) / d
    r = np.sqrt(ms + eps)
    inv = 1.0 / r
    xhat = x * inv
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    dinv = (dxhat * x).sum(axis=1, keepdims=True)
    dx = dxhat * inv
    dr = -dinv / r**2
    dms = dr / (2 * r)
    dx = dx + 2 * x * dms / d
    return dx, dgamma


def rms_backward_jacobian(dout, x, gamma, eps):
    """One row at a time, explicit D × D Jacobian, returned as a list."""
    n, d = x.shape
    dx = np.zeros_like(x)
    dgamma = np.zeros(d)
    for i in range(n):
        r = math.sqrt(float(x[i] @ x[i]) / d + eps)
        jac = np.eye(d) / r - np.outer(x[i], x[i]) / (d * r**3)
        dx[i] = jac.T @ (gamma * dout[i])
        dgamma += dout[i] * x[i] / r
    return [dx, dgamma]


def rms_backward_torch(dout, x, gamma, eps):
    t, g = _t(x), _t(dout) * _t(gamma)
    inv = torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps)
    xhat = t * inv
    return (inv * (g - xhat * (g * xhat).mean(-1, keepdim=True))).numpy(), (_t(dout) * xhat).sum(0).numpy()


@pytest.mark.parametrize("solution", [rms_backward_staged, rms_backward_jacobian, rms_backward_torch])
def test_rmsnorm_backward_correct_attempts_pass(solution):
    result = check.rmsnorm_backward(solution)
    assert result.passed, result.messages


def _rms_parts(x, eps, outside=False):
    ms = (x**2).mean(1, keepdims=True)
    r = np.sqrt(ms) + eps if outside else np.sqrt(ms + eps)
    return r, x / r


def _autograd_rms(dout, x, gamma, eps):
    t = _t(x).requires_grad_()
    y = _t(gamma) * t / torch.sqrt(t.pow(2).mean(1, keepdim=True) + eps)
    (dx,) = torch.autograd.grad(y, (t,), _t(dout))
    return dx.numpy(), (dout * x / np.sqrt((x**2).mean(1, keepdims=True) + eps)).sum(0)


def _library_rms(dout, x, gamma, eps):
    layer = RMSNorm(x.shape[1], eps=eps, dtype=torch.float64)
    t = _t(x).requires_grad_()
    layer(t).backward(_t(dout))
    return t.grad.numpy() * gamma, layer.weight.grad.numpy()


def _ln_formula(dout, x, gamma, eps):
    r, xhat = _rms_parts(x, eps)
    g = dout * gamma
    return (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True)) / r, (dout * xhat).sum(0)


def _no_grad_through_r(dout, x, gamma, eps):
    r, xhat = _rms_parts(x, eps)
    return dout * gamma / r, (dout * xhat).sum(0)


def _gamma_factored(dout, x, gamma, eps):
    r, xhat = _rms_parts(x, eps)
    return gamma / r * (dout - xhat * (dout * xhat).mean(1, keepdims=True)), (dout * xhat).sum(0)


def _eps_dropped(dout, x, gamma, eps):
    r = np.sqrt((x**2).mean(1, keepdims=True))
    xhat, g = x / r, dout * gamma
    return (g - xhat * (g * xhat).mean(1, keepdims=True)) / r, (dout * xhat).sum(0)


def _eps_outside(dout, x, gamma, eps):
    r, xhat = _rms_parts(x, eps, outside=True)
    g = dout * gamma
    return (g - xhat * (g * xhat).mean(1, keepdims=True)) / r, (dout * xhat).sum(0)


def _batch_mean(dout, x, gamma, eps):
    r, xhat = _rms_parts(x, eps)
    g = dout * gamma
    return (g - xhat * (g * xhat).mean(0, keepdims=True)) / r, (dout * xhat).sum(0)


def _swapped_outputs(dout, x, gamma, eps):
    dx, dgamma = _rms_backward_ok(dout, x, gamma, eps)
    return dgamma, dx


def _rms_backward_ok(dout, x, gamma, eps):
    r, xhat = _rms_parts(x, eps)
    g = dout * gamma
    return (g - xhat * (g * xhat).mean(1, keepdims=True)) / r, (dout * xhat).sum(0)


def _dgamma_not_summed(dout, x, gamma, eps):
    dx, _ = _rms_backward_ok(dout, x, gamma, eps)
    r, xhat = _rms_parts(x, eps)
    return dx, dout * xhat


RMS_BACKWARD_WRONG = {
    "layernorm's mean term": (_ln_formula, "a term of LayerNorm's backward"),
    "r treated as a constant": (_no_grad_through_r, "treats the root mean square r as a constant"),
    "gamma factored out": (_gamma_factored, "factored γ out"),
    "eps dropped": (_eps_dropped, "ignores its `eps` argument"),
    "eps outside the root": (_eps_outside, "ε is in the wrong place"),
    "mean over the batch": (_batch_mean, "runs over the batch"),
    "outputs swapped": (_swapped_outputs, "dgamma"),
    "autograd": (_autograd_rms, "you called `torch.autograd.grad`"),
    "library": (_library_rms, "you called `normlab.layers.RMSNorm`"),
}


@pytest.mark.parametrize("name", list(RMS_BACKWARD_WRONG))
def test_rmsnorm_backward_wrong_attempts_are_named(name):
    attempt, phrase = RMS_BACKWARD_WRONG[name]
    assert phrase in first_message(check.rmsnorm_backward(attempt))


def test_rmsnorm_backward_dgamma_not_summed_over_the_batch_fails():
    assert not check.rmsnorm_backward(_dgamma_not_summed).passed


# =========================================================================== DyT forward

def dyt_numpy(x, alpha, gamma, beta):
    return np.tanh(x * alpha) * gamma[None, :] + beta[None, :]


def dyt_exp(x, alpha, gamma, beta):
    """tanh from exponentials, as a student who forgot np.tanh might."""
    z = np.exp(-2.0 * alpha * x)
    return gamma * (1 - z) / (1 + z) + beta


def dyt_torch_loops(x, alpha, gamma, beta):
    out = torch.empty(x.shape, dtype=torch.float64)
    for j in range(x.shape[1]):
        out[:, j] = torch.tanh(alpha * _t(x[:, j])) * float(gamma[j]) + float(beta[j])
    return out


@pytest.mark.parametrize("solution", [dyt_numpy, dyt_exp, dyt_torch_loops])
def test_dyt_forward_correct_attempts_pass(solution):
    result = check.dyt_forward(solution)
    assert result.passed, result.messages


def _dyt_library(x, alpha, gamma, beta):
    layer = DynamicTanh(x.shape[1], alpha_init=alpha, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(_t(gamma))
        layer.bias.copy_(_t(beta))
    return layer(_t(x)).detach().numpy()


def _dyt_in_place(x, alpha, gamma, beta):
    x *= alpha
    np.tanh(x, out=x)
    return gamma * x + beta


DYT_WRONG = {
    "alpha outside tanh": (lambda x, a, g, b: a * g * np.tanh(x) + b, "You multiplied tanh's output by α"),
    "alpha forgotten": (lambda x, a, g, b: g * np.tanh(x) + b, "does not depend on α"),
    "affine before tanh": (lambda x, a, g, b: np.tanh(a * (x * g + b)), "applied γ and β before tanh"),
    "no gain or bias": (lambda x, a, g, b: np.tanh(a * x), "without the learned gain and bias"),
    "gain and bias swapped": (lambda x, a, g, b: b * np.tanh(a * x) + g, "swapped γ and β"),
    "layernorm first": (lambda x, a, g, b: g * np.tanh(a * (x - x.mean(1, keepdims=True))
                                                         / x.std(1, keepdims=True)) + b, "normalized x before tanh"),
    "in place": (_dyt_in_place, "changed its input"),
    "library": (_dyt_library, "you called `normlab.layers.DynamicTanh`"),
}


@pytest.mark.parametrize("name", list(DYT_WRONG))
def test_dyt_forward_wrong_attempts_are_named(name):
    attempt, phrase = DYT_WRONG[name]
    assert phrase in first_message(check.dyt_forward(attempt))


# =========================================================================== QK-norm logits

def qk_numpy(q, k, eps):
    def norm(z):
        centred = z - z.mean(axis=-1)[:, None]
        return centred / np.sqrt((centred**2).mean(axis=-1) + eps)[:, None]
    return np.einsum("id,jd->ij", norm(q), norm(k)) / math.sqrt(q.shape[-1])


def qk_torch(q, k, eps):
    def norm(z):
        var, mean = torch.var_mean(z, dim=1, keepdim=True, correction=0)
        return (z - mean) * torch.rsqrt(var + eps)
    qt, kt = norm(_t(q)), norm(_t(k))
    return (qt @ kt.T / qt.shape[1] ** 0.5).numpy()


def qk_loops(q, k, eps):
    t, d = q.shape
    out = np.zeros((t, k.shape[0]))
    for i in range(t):
        a = (q[i] - q[i].mean()) / math.sqrt(q[i].var() + eps)
        for j in range(k.shape[0]):
            b = (k[j] - k[j].mean()) / math.sqrt(k[j].var() + eps)
            out[i, j] = float(a @ b) / math.sqrt(d)
    return out


@pytest.mark.parametrize("solution", [qk_numpy, qk_torch, qk_loops])
def test_qk_norm_logits_correct_attempts_pass(solution):
    result = check.qk_norm_logits(solution)
    assert result.passed, result.messages


def _ln(z, eps, axis=1):
    return (z - z.mean(axis, keepdims=True)) / np.sqrt(z.var(axis, keepdims=True) + eps)


QK_WRONG = {
    "no 1/sqrt(d)": (lambda q, k, e: _ln(q, e) @ _ln(k, e).T, "not divided by √d"),
    "queries only": (lambda q, k, e: _ln(q, e) @ k.T / math.sqrt(q.shape[1]), "normalized the queries only"),
    "no normalization": (lambda q, k, e: q @ k.T / math.sqrt(q.shape[1]), "These are the logits without QK-norm"),
    "positions axis": (lambda q, k, e: _ln(q, e, 0) @ _ln(k, e, 0).T / math.sqrt(q.shape[1]), "over the positions"),
    "rmsnorm": (lambda q, k, e: (q / np.sqrt((q**2).mean(1, keepdims=True) + e))
                @ (k / np.sqrt((k**2).mean(1, keepdims=True) + e)).T / math.sqrt(q.shape[1]), "that is RMSNorm"),
    "cosine": (lambda q, k, e: (q / np.linalg.norm(q, axis=1, keepdims=True))
               @ (k / np.linalg.norm(k, axis=1, keepdims=True)).T / math.sqrt(q.shape[1]), "unit length"),
    "eps dropped": (lambda q, k, e: _ln(q, 0.0) @ _ln(k, 0.0).T / math.sqrt(q.shape[1]), "ignores its `eps`"),
    "keys times queries": (lambda q, k, e: _ln(k, e) @ _ln(q, e).T / math.sqrt(q.shape[1]), "transpose"),
    "torch layer_norm": (lambda q, k, e: (torch_F.layer_norm(_t(q), (q.shape[1],), eps=e)
                                          @ torch_F.layer_norm(_t(k), (k.shape[1],), eps=e).T).numpy()
                         / math.sqrt(q.shape[1]), "you called `torch.nn.functional.layer_norm`"),
}


@pytest.mark.parametrize("name", list(QK_WRONG))
def test_qk_norm_logits_wrong_attempts_are_named(name):
    attempt, phrase = QK_WRONG[name]
    assert phrase in first_message(check.qk_norm_logits(attempt))


# =========================================================================== pre-LN gradient ratio

def grad_ratio_numpy(depths, q0, v):
    depths = np.asarray(depths, dtype=float)
    return np.sqrt((q0 + 2 * v * depths[0]) / (q0 + 2 * v * depths))


def grad_ratio_list(depths, q0, v):
    first = math.sqrt(q0 + 2 * v * depths[0])
    return [first / math.sqrt(q0 + 2 * v * int(L)) for L in depths]


def grad_ratio_stream(depths, q0, v):
    """Simulate the stream's variance sublayer by sublayer, then take the ratio of 1/σ."""
    out = []
    for L in depths:
        var = q0
        for _ in range(2 * int(L)):
            var += v
        out.append(1 / math.sqrt(var))
    return np.array(out) / out[0]


@pytest.mark.parametrize("solution", [grad_ratio_numpy, grad_ratio_list, grad_ratio_stream])
def test_pre_ln_gradient_ratio_correct_attempts_pass(solution):
    result = check.pre_ln_gradient_ratio(solution)
    assert result.passed, result.messages


GRAD_WRONG = {
    "one sublayer per block": (lambda d, q0, v: np.sqrt((q0 + v * d[0]) / (q0 + v * np.asarray(d))), "one sublayer"),
    "ratio of variances": (lambda d, q0, v: (q0 + 2 * v * d[0]) / (q0 + 2 * v * np.asarray(d)), "ratio of variances"),
    "upside down": (lambda d, q0, v: np.sqrt((q0 + 2 * v * np.asarray(d)) / (q0 + 2 * v * d[0])), "upside down"),
    "q0 dropped": (lambda d, q0, v: np.sqrt(d[0] / np.asarray(d, dtype=float)), "dropped the embedding's variance"),
    "geometric growth": (lambda d, q0, v: (1 + v) ** (d[0] - np.asarray(d, dtype=float)), "geometrically"),
    "not a ratio": (lambda d, q0, v: 1 / np.sqrt(q0 + 2 * v * np.asarray(d, dtype=float)), "not its ratio"),
    "first depth left out": (lambda d, q0, v: grad_ratio_numpy(d, q0, v)[1:], "one value too few"),
}


@pytest.mark.parametrize("name", list(GRAD_WRONG))
def test_pre_ln_gradient_ratio_wrong_attempts_are_named(name):
    attempt, phrase = GRAD_WRONG[name]
    assert phrase in first_message(check.pre_ln_gradient_ratio(attempt))
