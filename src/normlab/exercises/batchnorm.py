"""Checkers for the exercises of chapter "BatchNorm: algebra, backpropagation, train vs inference".

In a notebook::

    from normlab.exercises import batchnorm as check
    check.batchnorm_forward(batchnorm_forward)

Students' functions take plain arrays rather than a cache, so that any internal
bookkeeping is accepted; the references come from :mod:`normlab.functional`.
"""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

EPS = 1e-5


def _bn_inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x with a different mean and scale per channel; γ, β not 1 and 0 (so forgetting them shows)."""
    c = shape[1]
    extra = (1,) * (len(shape) - 2)
    loc = rng.uniform(-5, 5, (1, c) + extra)
    scale = rng.uniform(0.5, 4, (1, c) + extra)
    x = rng.standard_normal(shape) * scale + loc
    return x, rng.uniform(0.5, 2.0, c), rng.uniform(-1.0, 1.0, c)


def _axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


# --- Exercise: forward pass, (N, D) ---------------------------------------------------

def _forward_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((*_bn_inputs(rng, shape), EPS), description=f"x of shape {shape}")
            for shape in [(4, 3), (16, 5), (2, 1), (64, 8)]]


def _forward_reference(x, gamma, beta, eps):
    return F.batch_norm_forward(x, gamma, beta, eps)[0]


batchnorm_forward = make_checker(Exercise(
    name="batchnorm_forward",
    reference=_forward_reference,
    cases=_forward_cases,
    hint="Per feature (axis 0): subtract the batch mean, divide by √(biased variance + ε), "
         "then multiply by γ and add β.",
    mistakes=(
        Mistake("unbiased variance", lambda x, g, b, e: g * (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + e) + b,
                "You normalized with the unbiased variance (n − 1). In training mode BN uses "
                "the biased batch variance (1/m); the unbiased one is only for the running estimate."),
        Mistake("eps outside", lambda x, g, b, e: g * (x - x.mean(0)) / (x.std(0) + e) + b,
                "ε belongs inside the square root: (x − μ)/√(σ² + ε), not (x − μ)/(σ + ε)."),
        Mistake("wrong axis", lambda x, g, b, e: g * (x - x.mean(1, keepdims=True))
                / np.sqrt(x.var(1, keepdims=True) + e) + b,
                "You normalized each example over its features (axis 1): that is LayerNorm. "
                "BatchNorm normalizes each feature over the batch (axis 0)."),
        Mistake("no affine", lambda x, g, b, e: (x - x.mean(0)) / np.sqrt(x.var(0) + e),
                "You returned x̂ without the learned scale and shift: y = γ·x̂ + β."),
    ),
))


# --- Exercise: backward pass, (N, D) --------------------------------------------------

def _backward_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape in [(4, 3), (10, 5), (32, 2)]:
        x, gamma, _ = _bn_inputs(rng, shape)
        cases.append(Case((rng.standard_normal(shape), x, gamma, EPS),
                          description=f"x and dout of shape {shape}"))
    return cases


def _backward_reference(dout, x, gamma, eps):
    _, cache = F.batch_norm_forward(x, gamma, np.zeros_like(gamma), eps)
    return F.batch_norm_backward(dout, cache)


def _naive_backward(dout, x, gamma, eps):
    _, cache = F.batch_norm_forward(x, gamma, np.zeros_like(gamma), eps)
    return F.batch_norm_backward_naive(dout, cache)


def _backward_without(term: str):
    def wrong(dout, x, gamma, eps):
        xhat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
        inner = dout.copy()
        if term != "mean":
            inner -= dout.mean(0)
        if term != "variance":
            inner -= xhat * (dout * xhat).mean(0)
        return gamma / np.sqrt(x.var(0) + eps) * inner, (dout * xhat).sum(0), dout.sum(0)
    return wrong


batchnorm_backward = make_checker(Exercise(
    name="batchnorm_backward",
    reference=_backward_reference,
    cases=_backward_cases,
    hint="Return (dx, dgamma, dbeta). dx = γ/√(σ²+ε) · (dout − mean(dout) − x̂·mean(dout·x̂)), "
         "means over the batch; dgamma = Σ dout·x̂; dbeta = Σ dout.",
    mistakes=(
        Mistake("incomplete gradient", _naive_backward,
                "Your dx is γ/√(σ²+ε)·dout: the incomplete gradient from many course notes. It treats "
                "μ and σ² as constants, but both depend on every x in the batch. Differentiate through "
                "them (the true dx sums to zero over the batch; yours does not)."),
        Mistake("no mean path", _backward_without("mean"),
                "Your dx misses the path through the batch mean μ: subtract mean(dout)."),
        Mistake("no variance path", _backward_without("variance"),
                "Your dx misses the path through the batch variance σ²: subtract x̂·mean(dout·x̂)."),
    ),
))


# --- Exercise: running statistics ------------------------------------------------------

def _running_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for n, d, momentum in [(8, 3, 0.1), (2, 4, 0.1), (32, 2, 0.5), (5, 3, 1.0)]:
        x = rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d) + rng.uniform(-2, 2, d)
        cases.append(Case((rng.standard_normal(d), rng.uniform(0.5, 2, d), x, momentum),
                          description=f"batch of {n}, momentum {momentum}"))
    return cases


def _running_reference(running_mean, running_var, x, momentum):
    return F.update_running_stats(running_mean, running_var, x.mean(0), x.var(0), x.shape[0], momentum)


update_running_stats = make_checker(Exercise(
    name="update_running_stats",
    reference=_running_reference,
    cases=_running_cases,
    hint="PyTorch's convention: new = (1 − momentum)·running + momentum·batch, and the batch "
         "variance in the running estimate is the unbiased one (divide by m − 1).",
    mistakes=(
        Mistake("biased", lambda rm, rv, x, mo: ((1 - mo) * rm + mo * x.mean(0), (1 - mo) * rv + mo * x.var(0)),
                "You used the biased batch variance. The running estimate is of the population "
                "variance, so it takes the unbiased m/(m − 1) correction (Ioffe & Szegedy, Algorithm 2)."),
        Mistake("keras momentum", lambda rm, rv, x, mo: (mo * rm + (1 - mo) * x.mean(0),
                                                          mo * rv + (1 - mo) * x.var(0, ddof=1)),
                "You used the Keras/TensorFlow convention (momentum weights the old value). In PyTorch "
                "momentum weights the new batch statistic: (1 − momentum)·running + momentum·batch."),
    ),
))


# --- Exercise: fold BN into the preceding linear layer ---------------------------------

def _fold_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for d_in, d_out in [(3, 2), (5, 4), (8, 1)]:
        cases.append(Case((rng.standard_normal((d_out, d_in)), rng.standard_normal(d_out),
                           rng.uniform(0.5, 2, d_out), rng.uniform(-1, 1, d_out),
                           rng.standard_normal(d_out), rng.uniform(0.2, 3, d_out), EPS),
                          description=f"Linear({d_in} → {d_out}) followed by BatchNorm1d({d_out})"))
    return cases


def _fold_reference(weight, bias, gamma, beta, mean, var, eps):
    return F.fold_batch_norm(weight, bias, gamma, beta, mean, var, eps)


fold_batchnorm = make_checker(Exercise(
    name="fold_batchnorm",
    reference=_fold_reference,
    cases=_fold_cases,
    hint="In eval mode BN is the affine map y = s·(z − mean) + β with s = γ/√(var + ε). "
         "Substitute z = Wx + b: W' = diag(s)·W and b' = s·(b − mean) + β.",
    mistakes=(
        Mistake("bias unscaled", lambda w, b, g, be, m, v, e: ((g / np.sqrt(v + e))[:, None] * w, b - m + be),
                "Your folded bias is b − mean + β: the bias passes through BN's scale too, "
                "b' = γ/√(var+ε)·(b − mean) + β."),
        Mistake("eps outside", lambda w, b, g, be, m, v, e: ((g / (np.sqrt(v) + e))[:, None] * w,
                                                             g / (np.sqrt(v) + e) * (b - m) + be),
                "ε belongs inside the square root: γ/√(var + ε)."),
    ),
))


# --- Exercise: convolutional BN --------------------------------------------------------

def _conv_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((*_bn_inputs(rng, shape), EPS), description=f"x of shape {shape} (N, C, H, W)")
            for shape in [(2, 3, 4, 4), (4, 2, 3, 5), (1, 4, 6, 6)]]


def _conv_normalize(axes):
    def wrong(x, gamma, beta, eps):
        mu, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
        return _channel(gamma, x.ndim) * (x - mu) / np.sqrt(var + eps) + _channel(beta, x.ndim)
    return wrong


batchnorm2d_forward = make_checker(Exercise(
    name="batchnorm2d_forward",
    reference=_forward_reference,
    cases=_conv_cases,
    hint="One mean and one variance per channel, pooled over the batch and both spatial axes "
         "(axes 0, 2, 3); γ and β have shape (C,), reshape them to (1, C, 1, 1).",
    mistakes=(
        Mistake("per position", _conv_normalize((0,)),
                "You normalized each channel at each pixel separately (over axis 0 only). Convolutional "
                "BN shares statistics across positions, like it shares the filter: use axes (0, 2, 3)."),
        Mistake("instance norm", _conv_normalize((2, 3)),
                "You normalized each example's channel over its own pixels (axes 2, 3): that is "
                "InstanceNorm. Pool over the batch too: axes (0, 2, 3)."),
        Mistake("layer norm", _conv_normalize((1, 2, 3)),
                "You normalized each example over all its channels and pixels: that is LayerNorm. "
                "BatchNorm keeps channels apart and pools over the batch: axes (0, 2, 3)."),
    ),
))

__all__ = ["batchnorm2d_forward", "batchnorm_backward", "batchnorm_forward", "fold_batchnorm",
           "update_running_stats"]
