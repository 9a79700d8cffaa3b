"""The checkers of the BatchNorm chapter, against a zoo of students' attempts.

For each coding exercise: wrong attempts written as students write them, each failing with
the diagnosis that names its mistake; correct solutions written independently of the
notebook's (NumPy with keepdims, torch, loops), each passing, lists as well as tuples; and
the properties the cases need: ε matters, and no case expects a value below the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F

from normlab import functional as F
from normlab.exercises import batchnorm as check
from normlab.exercises._shortcuts import resolve

from zoo import first_message

pytestmark = pytest.mark.usefixtures("student_mode")

CHECKERS = [check.batchnorm_forward, check.batchnorm_backward, check.update_running_stats,
            check.fold_batchnorm, check.batchnorm2d_forward]
IDS = [c.exercise.name for c in CHECKERS]


def t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


# =========================================================================== forward, (N, D)


def forward_keepdims(x, gamma, beta, eps):
    mean = np.mean(x, axis=0, keepdims=True)
    centred = x - mean
    variance = np.mean(centred * centred, axis=0, keepdims=True)
    return gamma[None, :] * centred / np.sqrt(variance + eps) + beta[None, :]


def forward_torch(x, gamma, beta, eps):
    xt = t(x)
    var, mean = torch.var_mean(xt, dim=0, unbiased=False)
    return (t(gamma) * (xt - mean) * torch.rsqrt(var + eps) + t(beta)).numpy()


def forward_loop(x, gamma, beta, eps):
    n, d = x.shape
    y = np.empty((n, d))
    for j in range(d):
        column = [float(v) for v in x[:, j]]
        mu = sum(column) / n
        var = sum((v - mu) ** 2 for v in column) / n
        for i in range(n):
            y[i, j] = gamma[j] * (column[i] - mu) / (var + eps) ** 0.5 + beta[j]
    return y


@pytest.mark.parametrize("solution", [forward_keepdims, forward_torch, forward_loop])
def test_forward_correct_solutions_pass(solution):
    assert check.batchnorm_forward(solution).passed


FORWARD_ZOO = {
    "eps ignored": (lambda x, g, b, eps: g * (x - x.mean(0)) / x.std(0) + b,
                    "ignores its `eps` argument"),
    "eps outside the root": (lambda x, g, b, eps: g * (x - x.mean(0)) / (x.std(0) + eps) + b,
                             "ε belongs inside the square root"),
    "unbiased variance": (lambda x, g, b, eps: g * (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + eps) + b,
                          "unbiased variance"),
    "wrong axis": (lambda x, g, b, eps: g * (x - x.mean(1, keepdims=True))
                   / np.sqrt(x.var(1, keepdims=True) + eps) + b, "that is LayerNorm"),
    "forgot gamma and beta": (lambda x, g, b, eps: (x - x.mean(0)) / np.sqrt(x.var(0) + eps),
                              "without the learned scale γ and shift β"),
    "gamma and beta swapped": (lambda x, g, b, eps: b * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + g,
                               "swapped γ and β"),
    "no square root": (lambda x, g, b, eps: g * (x - x.mean(0)) / (x.var(0) + eps) + b,
                       "instead of by its square root"),
    "torch's batch_norm": (lambda x, g, b, eps: torch_F.batch_norm(t(x), None, None, t(g), t(b), training=True,
                                                                   eps=eps).numpy(),
                           "you called `torch.nn.functional.batch_norm`"),
    "layer_norm on the transpose": (lambda x, g, b, eps: (torch_F.layer_norm(t(x).T, (len(x),), eps=eps).T
                                                          * t(g) + t(b)).numpy(),
                                    "you called `torch.nn.functional.layer_norm`"),
    "normlab's layer": (lambda x, g, b, eps: __import__("normlab.layers", fromlist=["BatchNorm1d"])
                        .BatchNorm1d(x.shape[1], eps=eps, dtype=torch.float64)(t(x)).detach().numpy(),
                        "you called `normlab.layers.BatchNorm1d`"),
}


@pytest.mark.parametrize("attempt", FORWARD_ZOO, ids=list(FORWARD_ZOO))
def test_forward_wrong_attempt_is_named(attempt):
    wrong, words = FORWARD_ZOO[attempt]
    assert words in first_message(check.batchnorm_forward(wrong))


# =========================================================================== backward, (N, D)


def backward_stepwise(dout, x, gamma, eps):
    """The chain rule along the graph, one intermediate at a time."""
    m = x.shape[0]
    mu = x.sum(axis=0) / m
    xc = x - mu
    var = (xc**2).sum(axis=0) / m
    inv = 1.0 / np.sqrt(var + eps)
    xhat = xc * inv
    dxhat = dout * gamma
    dvar = (dxhat * xc).sum(axis=0) * -0.5 * inv**3
    dmu = -(dxhat * inv).sum(axis=0) + dvar * (-2.0 * xc).sum(axis=0) / m
    dx = dxhat * inv + dvar * 2.0 * xc / m + dmu / m
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def backward_jacobian(dout, x, gamma, eps):
    """One explicit (N, N) Jacobian per feature, applied to dout."""
    n, d = x.shape
    dx, dgamma, dbeta = np.zeros((n, d)), np.zeros(d), np.zeros(d)
    for j in range(d):
        col = x[:, j]
        centred = col - col.mean()
        s = np.sqrt(centred @ centred / n + eps)
        jac = (np.eye(n) - 1.0 / n) / s - np.outer(centred, centred) / (n * s**3)  # ∂x̂_i/∂x_k
        dx[:, j] = gamma[j] * jac.T @ dout[:, j]
        dgamma[j] = dout[:, j] @ (centred / s)
        dbeta[j] = dout[:, j].sum()
    return dx, dgamma, dbeta


def backward_as_list(dout, x, gamma, eps):
    return list(backward_stepwise(dout, x, gamma, eps))


@pytest.mark.parametrize("solution", [backward_stepwise, backward_jacobian, backward_as_list])
def test_backward_correct_solutions_pass(solution):
    assert check.batchnorm_backward(solution).passed


def _bn_parts(x, eps):
    std = np.sqrt(x.var(0) + eps)
    return std, (x - x.mean(0)) / std


def naive_backward(dout, x, gamma, eps):
    std, xhat = _bn_parts(x, eps)
    return gamma / std * dout, (dout * xhat).sum(0), dout.sum(0)


def backward_without_mean_path(dout, x, gamma, eps):
    std, xhat = _bn_parts(x, eps)
    return gamma / std * (dout - xhat * (dout * xhat).mean(0)), (dout * xhat).sum(0), dout.sum(0)


def backward_without_variance_path(dout, x, gamma, eps):
    std, xhat = _bn_parts(x, eps)
    return gamma / std * (dout - dout.mean(0)), (dout * xhat).sum(0), dout.sum(0)


def backward_permuted(dout, x, gamma, eps):
    dx, dgamma, dbeta = backward_stepwise(dout, x, gamma, eps)
    return dx, dbeta, dgamma


def backward_no_sum(dout, x, gamma, eps):
    dx, _, dbeta = backward_stepwise(dout, x, gamma, eps)
    _, xhat = _bn_parts(x, eps)
    return dx, dout * xhat, dbeta


def backward_dbeta_not_summed(dout, x, gamma, eps):
    dx, dgamma, _ = backward_stepwise(dout, x, gamma, eps)
    return dx, dgamma, dout


def backward_means(dout, x, gamma, eps):
    dx, dgamma, dbeta = backward_stepwise(dout, x, gamma, eps)
    return dx, dgamma / len(x), dbeta / len(x)


def backward_dgamma_from_x(dout, x, gamma, eps):
    dx, _, dbeta = backward_stepwise(dout, x, gamma, eps)
    return dx, (dout * x).sum(0), dbeta


def backward_no_eps(dout, x, gamma, eps):
    return backward_jacobian(dout, x, gamma, 0.0)


def backward_no_gamma(dout, x, gamma, eps):
    dx, dgamma, dbeta = backward_stepwise(dout, x, gamma, eps)
    return dx / gamma, dgamma, dbeta


def backward_autograd(dout, x, gamma, eps):
    xt, gt = t(x).requires_grad_(), t(gamma).requires_grad_()
    bt = torch.zeros_like(gt, requires_grad=True)
    var, mean = torch.var_mean(xt, dim=0, unbiased=False)
    y = gt * (xt - mean) / torch.sqrt(var + eps) + bt
    y.backward(t(dout))
    return xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


def backward_normlab(dout, x, gamma, eps):
    return F.batch_norm_backward(dout, F.batch_norm_forward(x, gamma, np.zeros_like(gamma), eps)[1])


BACKWARD_ZOO = {
    "incomplete gradient": (naive_backward, "incomplete gradient"),
    "no mean path": (backward_without_mean_path, "misses the path through the batch mean"),
    "no variance path": (backward_without_variance_path, "misses the path through the batch variance"),
    "permuted outputs": (backward_permuted, "you returned (dx, dbeta, dgamma)"),
    "dgamma not summed": (backward_no_sum, "reduce over the batch"),
    "dbeta not summed": (backward_dbeta_not_summed, "g_β written without its sum over the batch"),
    "means for sums": (backward_means, "are averages over the batch"),
    "dgamma from x": (backward_dgamma_from_x, "Your dgamma uses x"),
    "eps ignored": (backward_no_eps, "ignores its `eps` argument"),
    "dx without gamma": (backward_no_gamma, "Your dx leaves out γ"),
    "autograd": (backward_autograd, "you called `torch.Tensor.backward`"),
    "normlab's backward": (backward_normlab, "you called `normlab.functional.batch_norm_backward`"),
}


@pytest.mark.parametrize("attempt", BACKWARD_ZOO, ids=list(BACKWARD_ZOO))
def test_backward_wrong_attempt_is_named(attempt):
    wrong, words = BACKWARD_ZOO[attempt]
    assert words in first_message(check.batchnorm_backward(wrong))


def test_backward_hints_point_to_the_equation_then_give_the_idea_not_the_formula():
    first = check.batchnorm_backward(naive_backward).messages
    assert any(m.startswith("Hint 1 of 2: Equation (2.5), `eq-bn-dx`") for m in first)
    assert not any("Hint 2" in m for m in first)
    second = " ".join(check.batchnorm_backward(naive_backward).messages)
    assert "three paths" in second and "batch mean μ" in second and "batch variance σ²" in second
    for hint in check.batchnorm_backward.exercise.hints:
        assert "mean(dout" not in hint and "√" not in hint and "dout −" not in hint


# =========================================================================== running statistics


def running_sums(running_mean, running_var, x, momentum):
    m = x.shape[0]
    batch_mean = x.sum(axis=0) / m
    unbiased = ((x - batch_mean) ** 2).sum(axis=0) / (m - 1)
    return (running_mean + momentum * (batch_mean - running_mean),
            running_var + momentum * (unbiased - running_var))


def running_torch(running_mean, running_var, x, momentum):
    var, mean = torch.var_mean(t(x), dim=0, unbiased=True)
    new_mean = torch.lerp(t(running_mean), mean, momentum)
    new_var = torch.lerp(t(running_var), var, momentum)
    return new_mean.numpy(), new_var.numpy()


def running_as_list(running_mean, running_var, x, momentum):
    return list(running_sums(running_mean, running_var, x, momentum))


@pytest.mark.parametrize("solution", [running_sums, running_torch, running_as_list])
def test_running_stats_correct_solutions_pass(solution):
    assert check.update_running_stats(solution).passed


def running_in_place(running_mean, running_var, x, momentum):
    running_mean *= 1 - momentum
    running_mean += momentum * x.mean(0)
    running_var *= 1 - momentum
    running_var += momentum * x.var(0, ddof=1)
    return running_mean, running_var


RUNNING_ZOO = {
    "biased variance": (lambda rm, rv, x, mo: ((1 - mo) * rm + mo * x.mean(0), (1 - mo) * rv + mo * x.var(0)),
                        "takes the biased batch variance"),
    "keras momentum": (lambda rm, rv, x, mo: (mo * rm + (1 - mo) * x.mean(0), mo * rv + (1 - mo) * x.var(0, ddof=1)),
                       "Keras/TensorFlow convention"),
    "standard deviation": (lambda rm, rv, x, mo: ((1 - mo) * rm + mo * x.mean(0),
                                                  (1 - mo) * rv + mo * x.std(0, ddof=1)),
                           "batch's standard deviation"),
    "in place": (running_in_place, "changed its input"),
    "swapped outputs": (lambda rm, rv, x, mo: running_sums(rm, rv, x, mo)[::-1],
                        "you returned (running_var, running_mean)"),
    "normlab's update": (lambda rm, rv, x, mo: F.update_running_stats(rm, rv, x.mean(0), x.var(0), len(x), mo),
                         "you called `normlab.functional.update_running_stats`"),
}


@pytest.mark.parametrize("attempt", RUNNING_ZOO, ids=list(RUNNING_ZOO))
def test_running_stats_wrong_attempt_is_named(attempt):
    wrong, words = RUNNING_ZOO[attempt]
    assert words in first_message(check.update_running_stats(wrong))


# =========================================================================== folding


def fold_matrices(weight, bias, gamma, beta, mean, var, eps):
    scale = np.diag(gamma / np.sqrt(var + eps))
    return scale @ weight, scale @ (bias - mean) + beta


def fold_rows(weight, bias, gamma, beta, mean, var, eps):
    new_weight, new_bias = np.empty_like(weight), np.empty_like(bias)
    for j in range(weight.shape[0]):
        s = gamma[j] / (var[j] + eps) ** 0.5
        new_weight[j] = s * weight[j]
        new_bias[j] = beta[j] + s * (bias[j] - mean[j])
    return new_weight, new_bias


def fold_as_list(*args):
    return list(fold_matrices(*args))


@pytest.mark.parametrize("solution", [fold_matrices, fold_rows, fold_as_list])
def test_fold_correct_solutions_pass(solution):
    assert check.fold_batchnorm(solution).passed


def _fold_with_scale(scale_of):
    def fold(w, b, g, be, m, v, e):
        s = scale_of(g, v, e)
        return s[:, None] * w, s * (b - m) + be
    return fold


FOLD_ZOO = {
    "eps ignored": (_fold_with_scale(lambda g, v, e: g / np.sqrt(v)), "ignores its `eps` argument"),
    "eps outside the root": (_fold_with_scale(lambda g, v, e: g / (np.sqrt(v) + e)), "ε belongs inside"),
    "no square root": (_fold_with_scale(lambda g, v, e: g / (v + e)), "instead of by its square root"),
    "bias unscaled": (lambda w, b, g, be, m, v, e: ((g / np.sqrt(v + e))[:, None] * w, b - m + be),
                      "does not go through BN's scale"),
    "mean forgotten": (lambda w, b, g, be, m, v, e: ((g / np.sqrt(v + e))[:, None] * w, g / np.sqrt(v + e) * b + be),
                       "ignores the population mean"),
    "beta forgotten": (lambda w, b, g, be, m, v, e: ((g / np.sqrt(v + e))[:, None] * w, g / np.sqrt(v + e) * (b - m)),
                       "leaves out BN's shift β"),
    "columns scaled": (lambda w, b, g, be, m, v, e: (w * (g / np.sqrt(v + e)), g / np.sqrt(v + e) * (b - m) + be),
                       "scales the columns of the weight"),
    "swapped outputs": (lambda *args: fold_matrices(*args)[::-1], "you returned (bias, weight)"),
    "torch's fusion": (lambda w, b, g, be, m, v, e: tuple(
        p.detach().numpy() for p in torch.nn.utils.fuse_linear_bn_weights(t(w), t(b), t(m), t(v), e, t(g), t(be))),
                       "you called `torch.nn.utils.fuse_linear_bn_weights`"),
}


@pytest.mark.parametrize("attempt", FOLD_ZOO, ids=list(FOLD_ZOO))
def test_fold_wrong_attempt_is_named(attempt):
    wrong, words = FOLD_ZOO[attempt]
    assert words in first_message(check.fold_batchnorm(wrong))


# =========================================================================== convolutional BN


def conv_by_channel_rows(x, gamma, beta, eps):
    n, c, h, w = x.shape
    rows = x.transpose(1, 0, 2, 3).reshape(c, -1)
    mean = rows.mean(axis=1, keepdims=True)
    var = ((rows - mean) ** 2).mean(axis=1, keepdims=True)
    out = gamma[:, None] * (rows - mean) / np.sqrt(var + eps) + beta[:, None]
    return out.reshape(c, n, h, w).transpose(1, 0, 2, 3)


def conv_torch(x, gamma, beta, eps):
    xt = t(x)
    var, mean = torch.var_mean(xt, dim=(0, 2, 3), keepdim=True, unbiased=False)
    return (t(gamma).view(1, -1, 1, 1) * (xt - mean) / torch.sqrt(var + eps) + t(beta).view(1, -1, 1, 1)).numpy()


def conv_loop(x, gamma, beta, eps):
    y = np.empty_like(x)
    for k in range(x.shape[1]):
        channel = x[:, k]
        mu = channel.mean()
        sd = np.sqrt(channel.var() + eps)
        y[:, k] = gamma[k] * (channel - mu) / sd + beta[k]
    return y


@pytest.mark.parametrize("solution", [conv_by_channel_rows, conv_torch, conv_loop])
def test_conv_correct_solutions_pass(solution):
    assert check.batchnorm2d_forward(solution).passed


def _conv_over(axes, ddof=0, eps_inside=True):
    def attempt(x, g, b, eps):
        mu = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True, ddof=ddof)
        sd = np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps
        return g.reshape(1, -1, 1, 1) * (x - mu) / sd + b.reshape(1, -1, 1, 1)
    return attempt


def conv_gamma_unreshaped(x, g, b, eps):
    mu, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    return g * (x - mu) / np.sqrt(var + eps) + b


CONV_ZOO = {
    "unbiased variance": (_conv_over((0, 2, 3), ddof=1), "unbiased variance"),
    "eps outside the root": (_conv_over((0, 2, 3), eps_inside=False), "ε belongs inside"),
    "eps ignored": (lambda x, g, b, eps: _conv_over((0, 2, 3))(x, g, b, 0.0), "ignores its `eps` argument"),
    "per position": (_conv_over((0,)), "at each pixel separately"),
    "instance norm": (_conv_over((2, 3)), "that is InstanceNorm"),
    "layer norm": (_conv_over((1, 2, 3)), "that is LayerNorm"),
    "gamma not reshaped": (conv_gamma_unreshaped, "broadcast along the last axis"),
    "forgot gamma and beta": (lambda x, g, b, eps: _conv_over((0, 2, 3))(x, np.ones_like(g), np.zeros_like(b), eps),
                              "without the learned scale γ and shift β"),
    "torch's module": (lambda x, g, b, eps: torch.nn.BatchNorm2d(x.shape[1], eps=eps, dtype=torch.float64)(t(x))
                       .detach().numpy(), "you called `torch.nn.BatchNorm2d`"),
    "instance_norm on one big example": (lambda x, g, b, eps: (torch_F.instance_norm(
        t(x).transpose(0, 1).reshape(1, x.shape[1], -1), eps=eps).reshape(x.shape[1], x.shape[0], *x.shape[2:])
        .transpose(0, 1) * t(g).view(1, -1, 1, 1) + t(b).view(1, -1, 1, 1)).numpy(),
        "you called `torch.nn.functional.instance_norm`"),
}


@pytest.mark.parametrize("attempt", CONV_ZOO, ids=list(CONV_ZOO))
def test_conv_wrong_attempt_is_named(attempt):
    wrong, words = CONV_ZOO[attempt]
    assert words in first_message(check.batchnorm2d_forward(wrong))


# =========================================================================== the cases themselves


EPS_CHECKERS = [c for c in CHECKERS if c.exercise.eps_argument]


@pytest.mark.parametrize("checker", EPS_CHECKERS, ids=[c.exercise.name for c in EPS_CHECKERS])
def test_eps_matters_in_every_case(checker):
    """Ignoring ε changes every case's output by far more than the tolerance."""
    exercise = checker.exercise
    cases = exercise.cases(np.random.default_rng(exercise.seed))
    assert len({case.args[-1] for case in cases}) >= 3 and max(case.args[-1] for case in cases) >= 0.1
    for case in cases:
        right = exercise.reference(*case.args)
        ignored = exercise.reference(*case.args[:-1], 0.0)
        pairs = zip(right, ignored) if isinstance(right, tuple) else [(right, ignored)]
        excess = max(np.max(np.abs(r - w) / (exercise.atol + exercise.rtol * np.abs(r))) for r, w in pairs)
        assert excess > 100, f"{exercise.name}: {case.description}"


@pytest.mark.parametrize("checker", CHECKERS, ids=IDS)
def test_every_forbidden_implementation_exists_and_the_checker_has_tiered_hints(checker):
    exercise = checker.exercise
    for name in exercise.forbidden:
        resolve(name)
    assert exercise.returns and len(exercise.hints) >= 2
    assert exercise.hints[0].startswith("Equation (2.") and "`eq-" in exercise.hints[0]
