"""Checkers for the exercises of chapter ``12_batchnorm_at_scale`` ("BatchNorm at scale").

In a notebook::

    from normlab.exercises import batchnorm_at_scale as check
    check.combine_moments(combine_moments)

- :func:`combine_moments`: the global mean and biased variance from per-rank counts, means and
  variances of unequal shards (equations 8.1–8.2 of the chapter, Chan et al.'s merge).
- :func:`distributed_backward`: one rank's dx, dγ, dβ of synchronized BN from the all-reduced
  sums Σdy and Σdy·x̂ (equation 8.3).
- :func:`ghost_batchnorm_forward`: BN over consecutive ghost batches of a given size.

The shards of every case come from different distributions (their means differ by several
standard deviations), so a merge that forgets the spread of the shard means is far off; the
shards have different sizes, so equal weights are wrong; and half the features of the ghost-BN
cases have a standard deviation of 0.01–0.1, where ε (varied from 1e-5 to 1) matters.
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["combine_moments", "distributed_backward", "ghost_batchnorm_forward"]

EPSILONS = (1e-5, 1e-2, 0.1, 1.0, 1e-3)
"""The ε of the ghost-BN cases, in order: PyTorch's default first, then values as large as the variances."""

_NORMALIZERS = (
    "normlab.functional.batch_norm_forward", "normlab.functional.batch_norm_inference",
    "normlab.layers.BatchNormFunction", "normlab.layers.BatchNorm1d", "normlab.layers.GhostBatchNorm1d",
    "normlab.layers.SyncBatchNorm", "normlab.layers.BatchRenorm1d",
    "torch.nn.functional.batch_norm", "torch.batch_norm", "torch.native_batch_norm",
    "torch.nn.functional.layer_norm", "torch.layer_norm",
    "torch.nn.functional.instance_norm", "torch.instance_norm",
    "torch.nn.functional.group_norm", "torch.group_norm",
    "torch.nn.BatchNorm1d", "torch.nn.SyncBatchNorm",
)
"""Library normalizations that compute a (ghost) BN forward when given the right slices of x."""


def _shards(rng: np.random.Generator, counts: tuple[int, ...], d: int) -> list[np.ndarray]:
    """One array (n_i, d) per shard, each from its own distribution: shard means several σ apart."""
    shards = []
    for n in counts:
        loc = rng.uniform(-4, 4, d)
        scale = rng.uniform(0.3, 2.0, d)
        shards.append(rng.standard_normal((n, d)) * scale + loc)
    return shards


# --- Exercise: combine per-rank moments ------------------------------------------------

_COMBINE_SHARDS = [(3, 5), (1, 4, 2), (2, 2, 2, 2), (10, 1, 1, 6), (7,)]


def _combine_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for counts, d in zip(_COMBINE_SHARDS, (3, 4, 2, 5, 3)):
        shards = _shards(rng, counts, d)
        cases.append(Case((np.array(counts), np.stack([s.mean(0) for s in shards]),
                           np.stack([s.var(0) for s in shards])),
                          description=f"{len(counts)} shard(s) of {', '.join(map(str, counts))} examples, {d} features"))
    return cases


def _combine_reference(counts, means, variances):
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum()
    mean = (counts[:, None] * means).sum(0) / n
    m2 = (counts[:, None] * variances).sum(0) + (counts[:, None] * (means - mean) ** 2).sum(0)
    return mean, m2 / n


def _combine_variant(mistake: str):
    """The merge with one piece wrong."""
    def wrong(counts, means, variances):
        c = np.asarray(counts, dtype=np.float64)[:, None]
        n = c.sum()
        mean = means.mean(0) if mistake == "equal weights" else (c * means).sum(0) / n
        if mistake == "equal weights":
            return mean, variances.mean(0) + ((means - mean) ** 2).mean(0)
        if mistake == "plain average":
            return means.mean(0), variances.mean(0)
        within = variances.sum(0) if mistake == "variances as sums" else (c * variances).sum(0)
        spread = (means - mean) ** 2
        between = {"no spread": 0.0, "spread unweighted": spread.sum(0)}.get(mistake, (c * spread).sum(0))
        return mean, (within + between) / (n - 1 if mistake == "unbiased" else n)
    return wrong


combine_moments = make_checker(Exercise(
    name="combine_moments",
    reference=_combine_reference,
    cases=_combine_cases,
    rtol=1e-6,
    atol=1e-10,
    returns="Return the tuple (mean, var): two new arrays of shape (D,), the mean and the biased variance "
            "of the union of the shards.",
    hint=(
        'Equations (12.1), `eq-scale-merge-mean`, and (12.2), `eq-scale-merge-var`, in section 12.2 '
        '"Merging moments".',
        "A shard's mean counts as many times as it has examples. A shard's variance measures the spread "
        "around its own mean, not around the global one: turn it back into a sum of squared deviations, "
        "and add what each shard's offset from the global mean contributes, once per example of the shard.",
    ),
    forbidden=("normlab.layers.sync_batchnorm.merge_moments",),
    output_names=("mean", "var"),
    mistakes=(
        Mistake("equal weights", _combine_variant("equal weights"),
                "You gave every shard the same weight. The shards hold different numbers of examples; "
                "a shard of 10 examples must count ten times as much as a shard of 1."),
        Mistake("plain average", _combine_variant("plain average"),
                "You averaged the shards' means and variances with the same weight for every shard. The "
                "shards hold different numbers of examples, and the shard means need not agree: their "
                "spread is part of the global variance."),
        Mistake("no spread", _combine_variant("no spread"),
                "Your variance is the weighted average of the shards' variances: it misses the spread of "
                "the shard means around the global mean (the shards need not share a mean)."),
        Mistake("variances as sums", _combine_variant("variances as sums"),
                "You added the shards' variances as if they were sums of squared deviations. A variance is "
                "a sum divided by the shard's count: multiply back before adding."),
        Mistake("spread unweighted", _combine_variant("spread unweighted"),
                "Your between-shard term counts each shard's offset from the global mean once; each of the "
                "shard's examples carries that offset, so it counts once per example."),
        Mistake("unbiased", _combine_variant("unbiased"),
                "You divided by n − 1. BN normalizes with the biased variance (divide by the total count n); "
                "the unbiased one is only for the running estimate."),
    ),
))


# --- Exercise: the distributed backward ------------------------------------------------

_BACKWARD_SHARDS = [((3, 5), 0), ((4, 2, 6), 1), ((1, 7), 0), ((2, 2, 2), 2), ((5, 3), 1)]
"""(shard sizes, this rank): the rank's own shard is one of them."""


def _backward_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for (counts, rank), d, eps in zip(_BACKWARD_SHARDS, (3, 2, 4, 3, 2), EPSILONS):
        x = np.concatenate(_shards(rng, counts, d))
        dout = rng.standard_normal(x.shape) + rng.uniform(-1, 1, d)  # Σdy ≠ 0: the mean path matters
        gamma = rng.uniform(0.5, 2.0, d)
        std = np.sqrt(x.var(0) + eps)
        xhat = (x - x.mean(0)) / std
        mine = slice(sum(counts[:rank]), sum(counts[: rank + 1]))
        cases.append(Case((dout[mine], xhat[mine], gamma, std, dout.sum(0), (dout * xhat).sum(0), len(x)),
                          description=f"rank {rank} of shards {counts}, {d} features"))
    return cases


def _backward_reference(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
    dx = gamma / std * (dout - total_dout / n - xhat * (total_dout_xhat / n))
    return dx, (dout * xhat).sum(0), dout.sum(0)


def _backward_variant(mistake: str):
    """The rank's gradient with one piece wrong."""
    def wrong(dout, xhat, gamma, std, total_dout, total_dout_xhat, n):
        s1, s2, count = total_dout, total_dout_xhat, n
        if mistake == "local means":
            s1, s2, count = dout.sum(0), (dout * xhat).sum(0), len(dout)
        elif mistake == "local count":
            count = len(dout)
        inner = dout - s1 / count
        if mistake != "no variance path":
            inner = inner - xhat * (s2 / count)
        dx = (1.0 if mistake == "no gamma" else gamma) / std * inner
        if mistake == "global shares":
            return dx, total_dout_xhat, total_dout
        return dx, (dout * xhat).sum(0), dout.sum(0)
    return wrong


distributed_backward = make_checker(Exercise(
    name="distributed_backward",
    reference=_backward_reference,
    cases=_backward_cases,
    rtol=1e-6,
    atol=1e-10,
    returns="Return a tuple of three new arrays, in this order: this rank's dx of shape (n_r, D) like dout, "
            "then this rank's dgamma and dbeta, each of shape (D,).",
    hint=(
        'Equation (12.3), `eq-scale-dx`, in section 12.3 "The distributed backward pass"; it is chapter 2\'s '
        "equation (2.5) with the batch replaced by the union of all shards.",
        "The forward pass normalized with statistics of all n values, so every mean in the backward pass "
        "is over all n values too: you were given the global sums, and n. γ and β are replicated on every "
        "rank; each rank returns only what its own examples contribute to their gradients, and the "
        "data-parallel gradient all-reduce adds the ranks' shares.",
    ),
    forbidden=("normlab.layers.SyncBatchNorm", "normlab.layers.SyncBatchNormFunction",
               "normlab.layers.BatchNormFunction", "normlab.layers.BatchNorm1d",
               "normlab.functional.batch_norm_backward", "normlab.functional.batch_norm_backward_stepwise",
               "torch.nn.SyncBatchNorm", "torch.nn.BatchNorm1d", "torch.nn.functional.batch_norm",
               "torch.batch_norm", "torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward",
               "torch.autograd.functional.vjp", "torch.func.vjp", "torch.func.grad"),
    output_names=("dx", "dgamma", "dbeta"),
    mistakes=(
        Mistake("local means", _backward_variant("local means"),
                "Your dx subtracts this rank's own means of dout and dout·x̂. The forward pass normalized "
                "with the statistics of every rank, so the means in the backward pass are global ones: use "
                "the all-reduced sums you were given."),
        Mistake("local count", _backward_variant("local count"),
                "You divided the global sums by this rank's number of examples. They are sums over all n "
                "values of every rank: divide by n."),
        Mistake("global shares", _backward_variant("global shares"),
                "Your dgamma and dbeta are the global sums. Each rank returns its own examples' share: the "
                "data-parallel all-reduce of the gradients adds the shares, and would count the whole batch "
                "k times."),
        Mistake("no gamma", _backward_variant("no gamma"),
                "Your dx leaves out γ: every path from x to the loss passes through y = γ·x̂ + β."),
        Mistake("no variance path", _backward_variant("no variance path"),
                "Your dx misses the path through the (global) batch variance."),
    ),
))


# --- Exercise: ghost batch normalization -----------------------------------------------

_GHOST_SHAPES = [(12, 3, 4), (10, 4, 4), (13, 2, 5), (8, 3, 16), (10, 4, 2)]
"""(N, D, virtual batch size): ghost batches of 4+4+4, 4+4+2, 5+5+3, one of 8 (BN itself), 2·5.
None has a ghost batch of one example, which has no variance."""


def _ghost_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for (n, d, size), eps in zip(_GHOST_SHAPES, EPSILONS):
        scale = rng.uniform(0.5, 4, d)
        scale[::2] = rng.uniform(0.01, 0.1, len(scale[::2]))
        x = rng.standard_normal((n, d)) * scale + rng.uniform(-5, 5, d)
        x += np.repeat(rng.uniform(-2, 2, (-(-n // size), d)) * scale, size, axis=0)[:n]  # ghost batches differ
        cases.append(Case((x, rng.uniform(0.5, 2.0, d), rng.uniform(-1.0, 1.0, d), size, eps),
                          description=f"x of shape {(n, d)}, virtual_batch_size={size}, eps={eps:g}"))
    return cases


def _normalize(x, gamma, beta, eps, ddof=0, eps_inside=True):
    var = x.var(0, ddof=ddof)
    scale = np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps
    return gamma * (x - x.mean(0)) / scale + beta


def _ghost_reference(x, gamma, beta, virtual_batch_size, eps):
    starts = range(0, len(x), virtual_batch_size)
    return np.concatenate([_normalize(x[s : s + virtual_batch_size], gamma, beta, eps) for s in starts])


def _ghost_variant(mistake: str):
    """Ghost BN with one piece wrong."""
    def wrong(x, gamma, beta, size, eps):
        n = len(x)
        if mistake == "whole batch":
            return _normalize(x, gamma, beta, eps)
        if mistake in ("equal parts", "interleaved"):
            parts = -(-n // size)
            groups = (np.array_split(np.arange(n), parts) if mistake == "equal parts"
                      else [np.arange(g, n, parts) for g in range(parts)])
            y = np.empty_like(x)
            for rows in groups:
                y[rows] = _normalize(x[rows], gamma, beta, eps)
            return y
        switches = {"unbiased": {"ddof": 1}, "eps outside": {"eps_inside": False}}[mistake]
        return np.concatenate([_normalize(x[s : s + size], gamma, beta, eps, **switches)
                               for s in range(0, n, size)])
    return wrong


ghost_batchnorm_forward = make_checker(Exercise(
    name="ghost_batchnorm_forward",
    reference=_ghost_reference,
    cases=_ghost_cases,
    returns="Return y, a new array of shape (N, D), the shape of x.",
    hint=(
        'Equation (12.5), `eq-scale-ghost`, in section 12.5 "Ghost batches"; each ghost batch is normalized '
        "by chapter 2's equation (2.1).",
        "Cut the batch into consecutive blocks of rows of the virtual batch size (the last block takes the "
        "rows that remain) and treat each block as if it were the whole batch: its own mean and biased "
        "variance per feature. γ and β are shared by all blocks.",
    ),
    forbidden=_NORMALIZERS,
    eps_argument="eps",
    mistakes=(
        Mistake("whole batch", _ghost_variant("whole batch"),
                "You normalized the whole batch with one set of statistics: that is BatchNorm. Each ghost "
                "batch is normalized with its own statistics."),
        Mistake("equal parts", _ghost_variant("equal parts"),
                "You cut the batch into parts of nearly equal size. Every ghost batch has exactly "
                "virtual_batch_size rows, except the last, which takes the rows that remain."),
        Mistake("interleaved", _ghost_variant("interleaved"),
                "Your ghost batches interleave the examples (every G-th row). A ghost batch is a block of "
                "consecutive rows, as a device would receive it."),
        Mistake("unbiased", _ghost_variant("unbiased"),
                "You normalized with the unbiased variance (dividing by the ghost batch's size minus one). "
                "In training mode BN uses the biased variance."),
        Mistake("eps outside", _ghost_variant("eps outside"),
                "You added ε to the standard deviation; ε belongs inside the square root, added to the "
                "variance."),
    ),
))
