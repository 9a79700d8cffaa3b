"""The checkers of chapter "Training deep networks without normalization": a zoo of wrong attempts,
each failing with the right diagnosis, and independently written correct solutions, each passing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from normlab import optim
from normlab.exercises import without_normalization as check
from normlab.layers import standardized_weight

from zoo import first_message

message_of = first_message

pytestmark = pytest.mark.usefixtures("student_mode")

CHECKERS = [check.agc_clip, check.fixup_branch_stds, check.scaled_ws, check.skipinit_stream_variance]


# --------------------------------------------------------------------------- the exercises themselves


@pytest.mark.parametrize("checker", [check.agc_clip, check.scaled_ws], ids=lambda c: c.__name__)
def test_eps_matters_in_some_case(checker):
    exercise = checker.exercise
    changed = 0
    for case in exercise.cases(np.random.default_rng(exercise.seed)):
        args = list(case.args)
        with_eps = np.asarray(exercise.reference(*args))
        args[3] = 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            without = np.asarray(exercise.reference(*args))
        changed += not np.allclose(without, with_eps, rtol=100 * exercise.rtol, atol=0, equal_nan=False)
    assert changed >= 2


def test_references_agree_with_the_library():
    rng = np.random.default_rng(0)
    for case in check.agc_clip.exercise.cases(rng):
        w, g, lam, eps = case.args
        p = torch.nn.Parameter(torch.tensor(w))
        p.grad = torch.tensor(g)
        optim.adaptive_gradient_clipping_([p], clipping=lam, eps=eps)
        np.testing.assert_allclose(p.grad.numpy(), check.agc_clip.exercise.reference(*case.args), rtol=1e-12)
    for case in check.scaled_ws.exercise.cases(rng):
        w, gain, gamma, eps = case.args
        got = standardized_weight(torch.tensor(w), torch.tensor(gain), gamma, eps).numpy()
        np.testing.assert_allclose(got, check.scaled_ws.exercise.reference(*case.args), rtol=1e-12)


# --------------------------------------------------------------------------- agc_clip


def agc_numpy(weight, grad, clipping, eps):
    w = np.asarray(weight, dtype=float)
    g = np.asarray(grad, dtype=float)
    if w.ndim <= 1:
        wn, gn = np.linalg.norm(w), np.linalg.norm(g)
    else:
        axes = tuple(range(1, w.ndim))
        wn = np.sqrt(np.sum(w**2, axis=axes, keepdims=True))
        gn = np.sqrt(np.sum(g**2, axis=axes, keepdims=True))
    max_norm = clipping * np.maximum(wn, eps)
    return np.where(gn > max_norm, g * max_norm / gn, g)


def agc_loop(weight, grad, clipping, eps):
    weight, grad = np.asarray(weight, float), np.asarray(grad, float)
    out = grad.copy()
    units = [slice(None)] if weight.ndim == 1 else range(weight.shape[0])
    for i in units:
        w_norm = max(math.sqrt(float((weight[i] ** 2).sum())), eps)
        g_norm = math.sqrt(float((grad[i] ** 2).sum()))
        if g_norm / w_norm > clipping:
            out[i] = grad[i] * (clipping * w_norm / g_norm)
    return out


def agc_torch(weight, grad, clipping, eps):
    w, g = torch.as_tensor(weight, dtype=torch.float64), torch.as_tensor(grad, dtype=torch.float64)
    w2, g2 = (w.reshape(1, -1), g.reshape(1, -1)) if w.dim() == 1 else (w.flatten(1), g.flatten(1))
    ratio_limit = clipping * w2.norm(dim=1, keepdim=True).clamp_min(eps)
    scale = torch.where(g2.norm(dim=1, keepdim=True) > ratio_limit, ratio_limit / g2.norm(dim=1, keepdim=True), 1.0)
    return (g2 * scale).reshape(g.shape)


@pytest.mark.parametrize("solution", [agc_numpy, agc_loop, agc_torch], ids=["numpy", "loop", "torch"])
def test_correct_agc_passes(solution):
    assert check.agc_clip(solution).passed


def _agc_global(weight, grad, clipping, eps):
    w, g = np.asarray(weight, float), np.asarray(grad, float)
    wn, gn = max(np.linalg.norm(w), eps), np.linalg.norm(g)
    return g * clipping * wn / gn if gn / wn > clipping else g.copy()


def _agc_no_eps(weight, grad, clipping, eps):
    return agc_numpy(weight, grad, clipping, 0.0) if np.all(np.asarray(weight) != 0) else agc_numpy(
        weight, grad, clipping, 1e-300)


@pytest.mark.parametrize("wrong, phrase", [
    (_agc_global, "whole tensor"),
    (lambda w, g, lam, eps: agc_numpy(np.asarray(w).T, np.asarray(g).T, lam, eps).T
     if np.ndim(w) == 2 else agc_numpy(w, g, lam, eps), "columns"),
    (lambda w, g, lam, eps: agc_loop(np.asarray(w) + 0.0, g, lam, 0.0) if False else agc_numpy(w, g, lam, 0.0),
     "ignores its `eps`"),
    (lambda w, g, lam, eps: np.asarray(g) * np.minimum(1.0, lam * (np.linalg.norm(np.asarray(w).reshape(len(w), -1),
     axis=1) + eps).reshape((-1,) + (1,) * (np.ndim(w) - 1)) / np.linalg.norm(np.asarray(g).reshape(len(g), -1),
     axis=1).reshape((-1,) + (1,) * (np.ndim(g) - 1))) if np.ndim(w) > 1 else agc_numpy(w, g, lam, eps), "added ε"),
    (lambda w, g, lam, eps: agc_numpy(w, g, lam, eps) * 0 + np.asarray(g) * (
        lam * np.maximum(np.sqrt((np.asarray(w, float).reshape(len(w), -1) ** 2).sum(1)), eps)
        / np.sqrt((np.asarray(g, float).reshape(len(g), -1) ** 2).sum(1))).reshape((-1,) + (1,) * (np.ndim(w) - 1))
     if np.ndim(w) > 1 else agc_numpy(w, g, lam, eps), "also those whose ratio"),
    (lambda w, g, lam, eps: optim.adaptive_gradient_clipping_, "adaptive_gradient_clipping_"),
])
def test_wrong_agc_is_diagnosed(wrong, phrase):
    if phrase == "adaptive_gradient_clipping_":
        def wrong(w, g, lam, eps):
            p = torch.nn.Parameter(torch.tensor(w))
            p.grad = torch.tensor(g)
            optim.adaptive_gradient_clipping_([p], lam, eps)
            return p.grad.numpy()
    assert phrase in message_of(check.agc_clip(wrong))


def test_agc_changing_the_gradient_in_place_is_reported():
    def in_place(weight, grad, clipping, eps):
        grad *= 1.0
        out = agc_numpy(weight, grad, clipping, eps)
        grad[...] = out
        return grad

    assert "place" in message_of(check.agc_clip(in_place))


# --------------------------------------------------------------------------- fixup_branch_stds


def fixup_loop(fan_in, blocks, layers_per_branch):
    stds = []
    for layer in range(layers_per_branch):
        if layer == layers_per_branch - 1:
            stds.append(0.0)
        else:
            stds.append(math.sqrt(2 / fan_in) * blocks ** (-1 / (2 * layers_per_branch - 2)))
    return stds


def fixup_numpy(fan_in, blocks, layers_per_branch):
    out = np.zeros(layers_per_branch)
    out[:-1] = np.sqrt(2.0 / fan_in) / np.power(float(blocks), 0.5 / (layers_per_branch - 1))
    return out


@pytest.mark.parametrize("solution", [fixup_loop, fixup_numpy, lambda f, b, m: tuple(fixup_loop(f, b, m))],
                         ids=["loop-list", "numpy", "tuple"])
def test_correct_fixup_passes(solution):
    assert check.fixup_branch_stds(solution).passed


def _fixup_exponent(exponent):
    def wrong(fan_in, blocks, m):
        return [math.sqrt(2 / fan_in) * blocks ** exponent(m)] * (m - 1) + [0.0]
    return wrong


@pytest.mark.parametrize("wrong, phrase", [
    (_fixup_exponent(lambda m: -0.5), "does not depend on m"),
    (_fixup_exponent(lambda m: -1 / (2 * m)), "counts all m layers"),
    (_fixup_exponent(lambda m: -1 / (m - 1)), "twice too large"),
    (lambda f, b, m: [math.sqrt(1 / f) * b ** (-1 / (2 * m - 2))] * (m - 1) + [0.0], "LeCun"),
    (lambda f, b, m: [2 / f * b ** (-1 / (m - 1))] * (m - 1) + [0.0], "variances"),
    (lambda f, b, m: [math.sqrt(2 / f) * b ** (-1 / (2 * m - 2))] * m, "starts at zero"),
    (lambda f, b, m: [math.sqrt(2 / f) * b ** (-1 / (2 * m - 2))] * (m - 1), "one value too few"),
])
def test_wrong_fixup_is_diagnosed(wrong, phrase):
    assert phrase in message_of(check.fixup_branch_stds(wrong))


def test_fixup_shortcut_is_refused():
    from normlab import init

    def shortcut(f, b, m):
        return [math.sqrt(2 / f) * init.fixup_scale(b, m)] * (m - 1) + [0.0]

    assert "fixup_scale" in message_of(check.fixup_branch_stds(shortcut))


# --------------------------------------------------------------------------- scaled_ws


def ws_numpy(weight, gain, gamma, eps):
    w = np.asarray(weight, dtype=float)
    axes = tuple(range(1, w.ndim))
    n = np.prod(w.shape[1:])
    centered = w - w.mean(axis=axes, keepdims=True)
    var = (centered**2).mean(axis=axes, keepdims=True)
    g = np.asarray(gain, dtype=float).reshape((-1,) + (1,) * (w.ndim - 1))
    return g * gamma * centered / np.sqrt(np.maximum(n * var, eps))


def ws_torch(weight, gain, gamma, eps):
    w = torch.as_tensor(weight, dtype=torch.float64).flatten(1)
    mean = w.mean(dim=1, keepdim=True)
    var = w.var(dim=1, unbiased=False, keepdim=True)
    scale = gamma * torch.as_tensor(gain, dtype=torch.float64)[:, None] * torch.rsqrt(
        torch.clamp(var * w.shape[1], min=eps))
    return ((w - mean) * scale).reshape(np.shape(weight))


def ws_loop(weight, gain, gamma, eps):
    weight = np.asarray(weight, float)
    out = np.empty_like(weight)
    for i in range(weight.shape[0]):
        row = weight[i].ravel()
        mu = sum(row) / len(row)
        ss = sum((v - mu) ** 2 for v in row)          # N σ²
        out[i] = ((row - mu) * gain[i] * gamma / math.sqrt(max(ss, eps))).reshape(weight.shape[1:])
    return out


@pytest.mark.parametrize("solution", [ws_numpy, ws_torch, ws_loop], ids=["numpy", "torch", "loop"])
def test_correct_scaled_ws_passes(solution):
    assert check.scaled_ws(solution).passed


def _ws_variant(**changes):
    def wrong(weight, gain, gamma, eps):
        w = np.asarray(weight, float)
        flat = w.reshape(len(w), -1)
        center = flat - flat.mean(1, keepdims=True) if changes.get("center", True) else flat
        var = flat.var(1, ddof=changes.get("ddof", 0), keepdims=True)
        n = flat.shape[1] if changes.get("sqrt_n", True) else 1
        under = n * var + eps if changes.get("add", False) else np.maximum(n * var, eps)
        g = np.ones(len(w)) if changes.get("no_gain") else np.asarray(gain, float)
        gam = 1.0 if changes.get("no_gamma") else gamma
        return (g[:, None] * gam * center / np.sqrt(under)).reshape(w.shape)
    return wrong


@pytest.mark.parametrize("wrong, phrase", [
    (_ws_variant(sqrt_n=False), "plain weight standardization"),
    (_ws_variant(ddof=1), "unbiased variance"),
    (_ws_variant(add=True), "floor"),
    (_ws_variant(center=False), "mean"),
    (_ws_variant(no_gamma=True), "γ"),
    (_ws_variant(no_gain=True), "gain g"),
    (lambda w, g, gamma, eps: ws_numpy(w, g, gamma, 0.0), "ignores its `eps`"),
    (lambda w, g, gamma, eps: standardized_weight(torch.tensor(w), torch.tensor(g), gamma, eps).numpy(),
     "standardized_weight"),
])
def test_wrong_scaled_ws_is_diagnosed(wrong, phrase):
    assert phrase in message_of(check.scaled_ws(wrong))


def test_scaled_ws_via_layer_norm_is_refused():
    def via_layer_norm(weight, gain, gamma, eps):
        w = torch.as_tensor(weight, dtype=torch.float64).flatten(1)
        z = torch.nn.functional.layer_norm(w, w.shape[1:], eps=eps / w.shape[1])
        return (z * torch.as_tensor(gain)[:, None] * gamma / math.sqrt(w.shape[1])).reshape(np.shape(weight))

    assert "layer_norm" in message_of(check.scaled_ws(via_layer_norm))


# --------------------------------------------------------------------------- skipinit_stream_variance


def skipinit_loop(q0, alphas, branch_gain):
    out, q = [], q0
    for a in alphas:
        q = q + a * a * branch_gain * q
        out.append(q)
    return out


def skipinit_torch(q0, alphas, branch_gain):
    a = torch.as_tensor(np.asarray(alphas), dtype=torch.float64)
    return q0 * torch.exp(torch.cumsum(torch.log1p(branch_gain * a**2), dim=0))


@pytest.mark.parametrize("solution", [skipinit_loop, skipinit_torch, lambda q, a, c: tuple(skipinit_loop(q, a, c))],
                         ids=["loop-list", "torch", "tuple"])
def test_correct_skipinit_passes(solution):
    assert check.skipinit_stream_variance(solution).passed


@pytest.mark.parametrize("wrong, phrase", [
    (lambda q, a, c: q * np.cumprod((1 + np.sqrt(c) * np.abs(a)) ** 2), "added standard deviations"),
    (lambda q, a, c: q * np.cumprod(1 + c * np.asarray(a)), "its square"),
    (lambda q, a, c: q + np.cumsum(c * np.asarray(a) ** 2), "compounds"),
    (lambda q, a, c: q * np.cumprod(1 + np.asarray(a) ** 2), "left out c"),
    (lambda q, a, c: q * np.cumprod(np.r_[1.0, 1 + c * np.asarray(a) ** 2])[:-1], "shifted by one"),
    (lambda q, a, c: q * np.cumprod(np.r_[1.0, 1 + c * np.asarray(a) ** 2]), "one value too many"),
])
def test_wrong_skipinit_is_diagnosed(wrong, phrase):
    assert phrase in message_of(check.skipinit_stream_variance(wrong))
