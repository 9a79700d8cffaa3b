"""The checkers of chapter "BatchNorm at scale", against a zoo of students' attempts.

For each coding exercise: wrong attempts written as students write them, each failing with the
diagnosis that names its mistake; correct solutions written independently of the notebook's
(sums of squares, a pairwise loop, torch, plain Python), each passing, lists as well as tuples;
and the properties the cases need: ε matters, shards differ, no case expects a value below atol.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F

from normlab.exercises import batchnorm_at_scale as check
from normlab.exercises._shortcuts import resolve

from zoo import first_message

pytestmark = pytest.mark.usefixtures("student_mode")

CHECKERS = [check.combine_moments, check.distributed_backward, check.ghost_batchnorm_forward]
IDS = [c.exercise.name for c in CHECKERS]


def t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


# =========================================================================== combine_moments


def combine_by_sums_of_squares(counts, means, variances):
    """Back to Σx and Σx² per shard, add, and come back (fine in float64 at these magnitudes)."""
    c = np.asarray(counts, dtype=float)[:, None]
    total = c.sum()
    sum_x = (c * means).sum(axis=0)
    sum_x2 = (c * (variances + means**2)).sum(axis=0)
    mean = sum_x / total
    return mean, sum_x2 / total - mean**2


def combine_pairwise(counts, means, variances):
    """Merge one shard at a time into a running (n, mean, M2), Chan et al.'s pairwise update."""
    n, mean, m2 = 0.0, np.zeros(means.shape[1]), np.zeros(means.shape[1])
    for n_b, mean_b, var_b in zip(counts, means, variances):
        n_b = float(n_b)
        delta = mean_b - mean
        new_n = n + n_b
        mean = mean + delta * n_b / new_n
        m2 = m2 + var_b * n_b + delta**2 * n * n_b / new_n
        n = new_n
    return mean, m2 / n


def combine_torch_as_list(counts, means, variances):
    c = t(counts).unsqueeze(1)
    mean = (c * t(means)).sum(0) / c.sum()
    var = ((c * (t(variances) + (t(means) - mean) ** 2)).sum(0)) / c.sum()
    return [mean.numpy(), var.numpy()]


@pytest.mark.parametrize("solution", [combine_by_sums_of_squares, combine_pairwise, combine_torch_as_list])
def test_combine_correct_solutions_pass(solution):
    assert check.combine_moments(solution).passed


def _merge_moments_shortcut(counts, means, variances):
    from normlab.layers.sync_batchnorm import merge_moments

    c = t(counts)
    total, mean, m2 = merge_moments(c, t(means), t(variances) * c.unsqueeze(1))
    return mean.numpy(), (m2 / total).numpy()


COMBINE_ZOO = {
    "plain average": (lambda c, m, v: (m.mean(0), v.mean(0)), "same weight"),
    "average of variances": (lambda c, m, v: ((c[:, None] * m).sum(0) / c.sum(), (c[:, None] * v).sum(0) / c.sum()),
                             "misses the spread of the shard means"),
    "variances added as sums": (
        lambda c, m, v: ((c[:, None] * m).sum(0) / c.sum(),
                         (v.sum(0) + (c[:, None] * (m - (c[:, None] * m).sum(0) / c.sum()) ** 2).sum(0)) / c.sum()),
        "as if they were sums of squared deviations"),
    "offsets counted once": (
        lambda c, m, v: ((c[:, None] * m).sum(0) / c.sum(),
                         ((c[:, None] * v).sum(0) + ((m - (c[:, None] * m).sum(0) / c.sum()) ** 2).sum(0)) / c.sum()),
        "once per example"),
    "unbiased": (lambda c, m, v: (combine_pairwise(c, m, v)[0], combine_pairwise(c, m, v)[1] * c.sum() / (c.sum() - 1)),
                 "divided by n − 1"),
    "outputs swapped": (lambda c, m, v: combine_pairwise(c, m, v)[::-1], "wrong order"),
    "merge_moments": (_merge_moments_shortcut, "you called `normlab.layers.sync_batchnorm.merge_moments`"),
}


@pytest.mark.parametrize("attempt", COMBINE_ZOO, ids=list(COMBINE_ZOO))
def test_combine_wrong_attempt_is_named(attempt):
    wrong, words = COMBINE_ZOO[attempt]
    assert words in first_message(check.combine_moments(wrong))


# =========================================================================== distributed_backward


def backward_loop(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
    rows, d = dout.shape
    dx, dgamma, dbeta = np.empty((rows, d)), np.zeros(d), np.zeros(d)
    for j in range(d):
        mean_dy, mean_dy_xhat = total_dout[j] / n, total_dout_xhat[j] / n
        for i in range(rows):
            dx[i, j] = gamma[j] / std[j] * (dout[i, j] - mean_dy - xhat[i, j] * mean_dy_xhat)
            dgamma[j] += dout[i, j] * xhat[i, j]
            dbeta[j] += dout[i, j]
    return dx, dgamma, dbeta


def backward_torch(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
    g, x = t(dout), t(xhat)
    scale = t(gamma) / t(std)
    dx = scale * g - scale * t(total_dout) / n - scale * x * t(total_dout_xhat) / n
    return dx.numpy(), (g * x).sum(0).numpy(), g.sum(0).numpy()


def backward_as_list(*args):
    return list(backward_loop(*args))


@pytest.mark.parametrize("solution", [backward_loop, backward_torch, backward_as_list])
def test_backward_correct_solutions_pass(solution):
    assert check.distributed_backward(solution).passed


def local_batchnorm_backward(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
    """Chapter 2's formula with this rank's own means, as if the rank were the whole batch."""
    dx = gamma / std * (dout - dout.mean(0) - xhat * (dout * xhat).mean(0))
    return dx, (dout * xhat).sum(0), dout.sum(0)


def divided_by_rank_count(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
    m = len(dout)
    dx = gamma / std * (dout - total_dout / m - xhat * total_dout_xhat / m)
    return dx, (dout * xhat).sum(0), dout.sum(0)


def returns_global_sums(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
    return backward_loop(dout, xhat, gamma, std, total_dout, total_dout_xhat, n)[0], total_dout_xhat, total_dout


def forgot_gamma(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
    dx, dgamma, dbeta = backward_loop(dout, xhat, gamma, std, total_dout, total_dout_xhat, n)
    return dx / gamma, dgamma, dbeta


def mean_path_only(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
    dx = gamma / std * (dout - total_dout / n)
    return dx, (dout * xhat).sum(0), dout.sum(0)


def backward_permuted(*args):
    dx, dgamma, dbeta = backward_loop(*args)
    return dx, dbeta, dgamma


def backward_autograd(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
    x = t(xhat).requires_grad_()
    (t(gamma) * x).backward(t(dout))
    return x.grad.numpy() / std, (dout * xhat).sum(0), dout.sum(0)


BACKWARD_ZOO = {
    "local means": (local_batchnorm_backward, "this rank's own means"),
    "divided by the rank's count": (divided_by_rank_count, "divided the global sums by this rank's number"),
    "global sums for dgamma and dbeta": (returns_global_sums, "are the global sums"),
    "forgot gamma": (forgot_gamma, "leaves out γ"),
    "no variance path": (mean_path_only, "misses the path through the (global) batch variance"),
    "permuted outputs": (backward_permuted, "you returned (dx, dbeta, dgamma)"),
    "autograd": (backward_autograd, "you called `torch.Tensor.backward`"),
}


@pytest.mark.parametrize("attempt", BACKWARD_ZOO, ids=list(BACKWARD_ZOO))
def test_backward_wrong_attempt_is_named(attempt):
    wrong, words = BACKWARD_ZOO[attempt]
    assert words in first_message(check.distributed_backward(wrong))


# =========================================================================== ghost_batchnorm_forward


def ghost_keepdims(x, gamma, beta, virtual_batch_size, eps):
    pieces = []
    for start in range(0, x.shape[0], virtual_batch_size):
        block = x[start : start + virtual_batch_size]
        mu = block.mean(axis=0, keepdims=True)
        var = ((block - mu) ** 2).mean(axis=0, keepdims=True)
        pieces.append(gamma[None] * (block - mu) / np.sqrt(var + eps) + beta[None])
    return np.vstack(pieces)


def ghost_torch(x, gamma, beta, virtual_batch_size, eps):
    out = []
    for block in torch.split(t(x), virtual_batch_size, dim=0):
        var, mean = torch.var_mean(block, dim=0, unbiased=False)
        out.append((block - mean) * torch.rsqrt(var + eps) * t(gamma) + t(beta))
    return torch.cat(out).numpy()


def ghost_python(x, gamma, beta, virtual_batch_size, eps):
    n, d = x.shape
    y = np.empty((n, d))
    for start in range(0, n, virtual_batch_size):
        stop = min(start + virtual_batch_size, n)
        for j in range(d):
            column = [float(x[i, j]) for i in range(start, stop)]
            mu = sum(column) / len(column)
            var = sum((v - mu) ** 2 for v in column) / len(column)
            for i in range(start, stop):
                y[i, j] = gamma[j] * (x[i, j] - mu) / (var + eps) ** 0.5 + beta[j]
    return y


@pytest.mark.parametrize("solution", [ghost_keepdims, ghost_torch, ghost_python])
def test_ghost_correct_solutions_pass(solution):
    assert check.ghost_batchnorm_forward(solution).passed


def _bn(x, g, b, eps, ddof=0):
    return g * (x - x.mean(0)) / np.sqrt(x.var(0, ddof=ddof) + eps) + b


def ghost_whole_batch(x, g, b, size, eps):
    return _bn(x, g, b, eps)


def ghost_equal_parts(x, g, b, size, eps):
    parts = np.array_split(x, -(-len(x) // size))
    return np.concatenate([_bn(p, g, b, eps) for p in parts])


def ghost_strided(x, g, b, size, eps):
    groups = -(-len(x) // size)
    y = np.empty_like(x)
    for k in range(groups):
        y[k::groups] = _bn(x[k::groups], g, b, eps)
    return y


def ghost_unbiased(x, g, b, size, eps):
    return np.concatenate([_bn(x[s : s + size], g, b, eps, ddof=1) for s in range(0, len(x), size)])


def ghost_eps_outside(x, g, b, size, eps):
    blocks = [x[s : s + size] for s in range(0, len(x), size)]
    return np.concatenate([g * (p - p.mean(0)) / (p.std(0) + eps) + b for p in blocks])


def ghost_eps_ignored(x, g, b, size, eps):
    return ghost_keepdims(x, g, b, size, 0.0)


def ghost_drops_the_last_block(x, g, b, size, eps):
    full = len(x) // size * size
    return np.concatenate([_bn(x[s : s + size], g, b, eps) for s in range(0, full, size)] or [x[:0]])


def ghost_library(x, g, b, size, eps):
    from normlab.layers import GhostBatchNorm1d

    layer = GhostBatchNorm1d(x.shape[1], size, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(t(g))
        layer.bias.copy_(t(b))
        return layer(t(x)).numpy()


def ghost_torch_batch_norm(x, g, b, size, eps):
    return torch.cat([torch_F.batch_norm(block, None, None, t(g), t(b), training=True, eps=eps)
                      for block in torch.split(t(x), size)]).numpy()


GHOST_ZOO = {
    "whole batch": (ghost_whole_batch, "that is BatchNorm"),
    "equal parts": (ghost_equal_parts, "parts of nearly equal size"),
    "strided": (ghost_strided, "interleave the examples"),
    "unbiased": (ghost_unbiased, "unbiased variance"),
    "eps outside": (ghost_eps_outside, "ε belongs inside the square root"),
    "eps ignored": (ghost_eps_ignored, "ignores its `eps` argument"),
    "last block dropped": (ghost_drops_the_last_block, "returned shape"),
    "GhostBatchNorm1d": (ghost_library, "you called `normlab.layers.GhostBatchNorm1d`"),
    "torch's batch_norm per block": (ghost_torch_batch_norm, "you called `torch.nn.functional.batch_norm`"),
}


@pytest.mark.parametrize("attempt", GHOST_ZOO, ids=list(GHOST_ZOO))
def test_ghost_wrong_attempt_is_named(attempt):
    wrong, words = GHOST_ZOO[attempt]
    assert words in first_message(check.ghost_batchnorm_forward(wrong))


# =========================================================================== the cases themselves


def _expected(exercise, case):
    import normlab.exercises.batchnorm_at_scale as module

    reference = {"combine_moments": module._combine_reference, "distributed_backward": module._backward_reference,
                 "ghost_batchnorm_forward": module._ghost_reference}[exercise.name]
    return reference(*case.args, **case.kwargs)


def test_eps_matters_in_every_ghost_case():
    exercise = check.ghost_batchnorm_forward.exercise
    cases = exercise.cases(np.random.default_rng(exercise.seed))
    assert len({case.args[-1] for case in cases}) >= 3 and max(case.args[-1] for case in cases) >= 0.1
    for case in cases:
        right = exercise.reference(*case.args)
        ignored = exercise.reference(*case.args[:-1], 0.0)
        excess = np.max(np.abs(right - ignored) / (exercise.atol + exercise.rtol * np.abs(right)))
        assert excess > 100, case.description


def test_shards_are_unequal_and_their_means_differ():
    exercise = check.combine_moments.exercise
    for case in exercise.cases(np.random.default_rng(exercise.seed)):
        counts, means, variances = case.args
        if len(counts) > 1:
            between = (counts[:, None] * (means - means.mean(0)) ** 2).sum(0) / counts.sum()
            assert np.all(between > 0.01 * (counts[:, None] * variances).sum(0) / counts.sum())
    assert any(len(set(case.args[0])) > 1 for case in exercise.cases(np.random.default_rng(0)))


@pytest.mark.parametrize("checker", CHECKERS, ids=IDS)
def test_every_forbidden_implementation_exists_and_the_hints_point_to_the_chapter(checker):
    exercise = checker.exercise
    for name in exercise.forbidden:
        resolve(name)
    assert exercise.returns and len(exercise.hints) >= 2
    assert exercise.hints[0].startswith("Equation") and "`eq-scale-" in exercise.hints[0]
