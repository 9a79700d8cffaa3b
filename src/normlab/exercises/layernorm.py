"""Checkers for the exercises of chapter "LayerNorm and the normalizers that do not depend on the batch".

In a notebook::

    from normlab.exercises import layernorm as check
    check.layernorm_forward(layernorm_forward)

Students' functions take plain arrays rather than a cache; the references come from
:mod:`normlab.functional`. Each checker names the common mistakes: the batch axis instead of
the feature axis (that is BatchNorm), the unbiased variance, ε outside the square root,
γ factored out of the backward as in BatchNorm, groups not reshaped or interleaved.
"""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

EPS = 1e-5


def _ln_inputs(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (N, D) whose examples have different means and scales and whose features do too; γ, β
    not 1 and 0 (so forgetting them shows)."""
    n, d = shape
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 4, (n, 1)) * rng.uniform(0.5, 2, (1, d))
         + rng.uniform(-5, 5, (n, 1)) + rng.uniform(-2, 2, (1, d)))
    return x, rng.uniform(0.5, 2.0, d), rng.uniform(-1.0, 1.0, d)


def _normalize(x: np.ndarray, axis, ddof: int = 0, eps: float = EPS, eps_inside: bool = True) -> np.ndarray:
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True, ddof=ddof)
    return (x - mu) / (np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps)


# --- Exercise: LayerNorm forward, (N, D) ------------------------------------------------

def _forward_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((*_ln_inputs(rng, shape), EPS), description=f"x of shape {shape}")
            for shape in [(4, 3), (16, 5), (1, 6), (8, 32)]]


def _forward_reference(x, gamma, beta, eps):
    return F.layer_norm_forward(x, gamma, beta, eps)[0]


layernorm_forward = make_checker(Exercise(
    name="layernorm_forward",
    reference=_forward_reference,
    cases=_forward_cases,
    hint="Per example (axis 1, keepdims=True): subtract the mean over its D features, divide by "
         "√(biased variance + ε), then multiply by γ and add β (both of shape (D,)).",
    mistakes=(
        Mistake("wrong axis", lambda x, g, b, e: g * _normalize(x, 0, eps=e) + b,
                "You normalized each feature over the batch (axis 0): that is BatchNorm. LayerNorm "
                "normalizes each example over its own features (axis 1), so it works for a batch of one."),
        Mistake("unbiased variance", lambda x, g, b, e: g * _normalize(x, 1, ddof=1, eps=e) + b,
                "You normalized with the unbiased variance (divide by D − 1). LayerNorm uses the biased "
                "variance over the D features (divide by D), as torch.nn.LayerNorm does."),
        Mistake("eps outside", lambda x, g, b, e: g * _normalize(x, 1, eps=e, eps_inside=False) + b,
                "ε belongs inside the square root: (x − μ)/√(σ² + ε), not (x − μ)/(σ + ε)."),
        Mistake("no affine", lambda x, g, b, e: _normalize(x, 1, eps=e),
                "You returned x̂ without the learned gain and bias: y = γ·x̂ + β."),
    ),
))


# --- Exercise: LayerNorm backward, (N, D) -----------------------------------------------

def _backward_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape in [(4, 3), (6, 8), (1, 5), (16, 2)]:
        x, gamma, _ = _ln_inputs(rng, shape)
        cases.append(Case((rng.standard_normal(shape), x, gamma, EPS), description=f"x and dout of shape {shape}"))
    return cases


def _backward_reference(dout, x, gamma, eps):
    _, cache = F.layer_norm_forward(x, gamma, np.zeros_like(gamma), eps)
    return F.layer_norm_backward(dout, cache)


def _ln_backward_variant(kind: str):
    def wrong(dout, x, gamma, eps):
        std = np.sqrt(x.var(1, keepdims=True) + eps)
        xhat = (x - x.mean(1, keepdims=True)) / std
        dgamma, dbeta = (dout * xhat).sum(0), dout.sum(0)
        if kind == "gamma outside":     # BatchNorm's formula: γ factored out of the means
            dx = gamma / std * (dout - dout.mean(1, keepdims=True) - xhat * (dout * xhat).mean(1, keepdims=True))
        elif kind == "incomplete":      # μ and σ treated as constants
            dx = gamma * dout / std
        elif kind == "batch axis":      # the means over the batch, as in BatchNorm
            g = gamma * dout
            dx = (g - g.mean(0, keepdims=True) - xhat * (g * xhat).mean(0, keepdims=True)) / std
        else:
            raise ValueError(kind)
        return dx, dgamma, dbeta
    return wrong


layernorm_backward = make_checker(Exercise(
    name="layernorm_backward",
    reference=_backward_reference,
    cases=_backward_cases,
    hint="Return (dx, dgamma, dbeta). With ĝ = dout·γ and means over the D features of each example: "
         "dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / √(σ² + ε); dgamma = Σ_batch dout·x̂; dbeta = Σ_batch dout.",
    mistakes=(
        Mistake("gamma outside", _ln_backward_variant("gamma outside"),
                "You factored γ out of the means, as in BatchNorm's formula. In BatchNorm γ is constant "
                "along the axis the statistics run over; in LayerNorm γ varies along it (one γ per feature), "
                "so it must multiply dout first: ĝ = dout·γ, then dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))/σ."),
        Mistake("incomplete gradient", _ln_backward_variant("incomplete"),
                "Your dx is γ·dout/σ: it treats μ and σ as constants, but both depend on every feature of "
                "the example. Differentiate through them (the true dx of each example sums to zero)."),
        Mistake("batch axis", _ln_backward_variant("batch axis"),
                "Your means run over the batch (axis 0), as in BatchNorm. LayerNorm's statistics are per "
                "example, so the means in dx run over the features (axis 1); only dgamma and dbeta sum "
                "over the batch."),
    ),
))


# --- Exercise: GroupNorm forward, (N, C, H, W) -----------------------------------------

def _gn_inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, c = shape[:2]
    extra = (1,) * (len(shape) - 2)
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 4, (n, c) + extra) + rng.uniform(-5, 5, (n, c) + extra))
    return x, rng.uniform(0.5, 2.0, c), rng.uniform(-1.0, 1.0, c)


def _group_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, groups in [((2, 4, 3, 3), 2), ((3, 6, 2, 4), 3), ((1, 8, 4, 4), 4), ((4, 6, 5, 2), 2)]:
        x, gamma, beta = _gn_inputs(rng, shape)
        cases.append(Case((x, groups, gamma, beta, EPS), description=f"x of shape {shape}, {groups} groups"))
    return cases


def _group_reference(x, num_groups, gamma, beta, eps):
    return F.group_norm_forward(x, num_groups, gamma, beta, eps)[0]


def _channel(v: np.ndarray) -> np.ndarray:
    return v.reshape(1, -1, 1, 1)


def _group_variant(kind: str):
    def wrong(x, num_groups, gamma, beta, eps):
        n, c, h, w = x.shape
        if kind == "instance":          # forgot the groups: one statistic per channel
            xhat = _normalize(x, (2, 3), eps=eps)
        elif kind == "layer":           # the whole example
            xhat = _normalize(x, (1, 2, 3), eps=eps)
        elif kind == "batch":           # grouped, but over the batch as well
            g = x.reshape(n, num_groups, -1)
            xhat = _normalize(g.transpose(1, 0, 2).reshape(num_groups, -1), 1, eps=eps)
            xhat = xhat.reshape(num_groups, n, -1).transpose(1, 0, 2).reshape(x.shape)
        elif kind == "interleaved":     # channel k in group k mod G instead of k // (C/G)
            g = x.reshape(n, c // num_groups, num_groups, h * w).transpose(0, 2, 1, 3).reshape(n, num_groups, -1)
            xhat = _normalize(g, 2, eps=eps).reshape(n, num_groups, c // num_groups, h * w)
            xhat = xhat.transpose(0, 2, 1, 3).reshape(x.shape)
        elif kind == "unbiased":
            xhat = _normalize(x.reshape(n, num_groups, -1), 2, ddof=1, eps=eps).reshape(x.shape)
        else:
            raise ValueError(kind)
        return _channel(gamma) * xhat + _channel(beta)
    return wrong


groupnorm_forward = make_checker(Exercise(
    name="groupnorm_forward",
    reference=_group_reference,
    cases=_group_cases,
    hint="Reshape x to (N, G, C/G · H · W), normalize over the last axis (biased variance, ε inside "
         "the square root), reshape back to (N, C, H, W), then apply γ and β reshaped to (1, C, 1, 1).",
    mistakes=(
        Mistake("no groups (instance)", _group_variant("instance"),
                "You normalized each channel of each example on its own (axes 2, 3): that is InstanceNorm, "
                "GroupNorm with G = C. Reshape to (N, G, −1) first, so that C/G channels share a statistic."),
        Mistake("whole example (layer)", _group_variant("layer"),
                "You normalized each example over all its channels: that is LayerNorm, GroupNorm with G = 1. "
                "Reshape to (N, G, −1) and normalize each group separately."),
        Mistake("batch axis", _group_variant("batch"),
                "Your groups pool over the batch as well as the channels. GroupNorm's statistics are per "
                "example: reshape to (N, G, −1) and take the mean over the last axis only."),
        Mistake("interleaved groups", _group_variant("interleaved"),
                "Your groups interleave the channels (channel k in group k mod G). GroupNorm, like "
                "x.reshape(N, G, −1), puts consecutive channels together: group j holds channels "
                "j·C/G to (j + 1)·C/G − 1."),
        Mistake("unbiased variance", _group_variant("unbiased"),
                "You used the unbiased variance (divide by m − 1). GroupNorm uses the biased variance of "
                "the m = C/G · H · W values of each group."),
    ),
))


# --- Exercise: RMSNorm forward, (N, D) -------------------------------------------------

def _rms_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, scale in [((4, 3), 0.01), ((8, 16), 1.0), ((1, 5), 1.0), ((5, 2), 1.0)]:
        x, gamma, _ = _ln_inputs(rng, shape)
        cases.append(Case((scale * x, gamma, EPS), description=f"x of shape {shape}"
                          + (f", entries of order {scale:g} (so that ε matters)" if scale != 1 else "")))
    return cases


def _rms_reference(x, gamma, eps):
    return gamma * x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps)


rmsnorm_forward = make_checker(Exercise(
    name="rmsnorm_forward",
    reference=_rms_reference,
    cases=_rms_cases,
    hint="Per example: divide x by √(mean(x²) + ε), the mean over its D features (axis 1, keepdims=True), "
         "then multiply by γ. No mean is subtracted and there is no β.",
    mistakes=(
        Mistake("centred", lambda x, g, e: g * _normalize(x, 1, eps=e),
                "You subtracted the mean: that is LayerNorm (without β). RMSNorm skips the centring and "
                "divides by the root mean square √(mean(x²) + ε)."),
        Mistake("divided by std", lambda x, g, e: g * x / np.sqrt(x.var(1, keepdims=True) + e),
                "You divided by the standard deviation √(Var(x) + ε). RMSNorm divides by the root mean "
                "square √(mean(x²) + ε), which includes the mean: mean(x²) = Var(x) + mean(x)²."),
        Mistake("eps outside", lambda x, g, e: g * x / (np.sqrt((x ** 2).mean(1, keepdims=True)) + e),
                "ε belongs inside the square root: x/√(mean(x²) + ε)."),
        Mistake("wrong axis", lambda x, g, e: g * x / np.sqrt((x ** 2).mean(0, keepdims=True) + e),
                "You took the root mean square over the batch (axis 0). RMSNorm, like LayerNorm, "
                "normalizes each example over its own features (axis 1)."),
    ),
))

__all__ = ["groupnorm_forward", "layernorm_backward", "layernorm_forward", "rmsnorm_forward"]
