"""Checkers for the exercises of chapter ``07_layernorm``.

In a notebook::

    from normlab.exercises import layernorm as check
    check.layernorm_forward(layernorm_forward)

Students' functions take plain arrays rather than a cache; the references come from
:mod:`normlab.functional`. Each checker names the common mistakes: the batch axis instead of
the feature axis (that is BatchNorm), the unbiased variance, ε ignored or outside the square
root, γ factored out of the backward as in BatchNorm, groups not reshaped or interleaved.

Every case has examples (or groups) whose variance is comparable to or smaller than ε, and ε
changes from case to case (10⁻⁵ to 1), so a function that drops ε or puts it in the wrong
place fails by far more than the tolerance. Every library normalizer that computes the answer
(LayerNorm, GroupNorm, RMSNorm, and BatchNorm or InstanceNorm applied to a reshaped input) is
unavailable while a check runs; the backward exercise also refuses autograd.
"""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["groupnorm_forward", "layernorm_backward", "layernorm_forward", "rmsnorm_forward"]

# Everything that normalizes an array for the student, directly or after a reshape or a transpose
# (BatchNorm of xᵀ is LayerNorm of x; LayerNorm of x.reshape(N, G, -1) is GroupNorm).
_NORMALIZERS = (
    "normlab.functional.layer_norm_forward",
    "normlab.functional.layer_norm_backward",
    "normlab.functional.group_norm_forward",
    "normlab.functional.group_norm_backward",
    "normlab.functional.batch_norm_forward",
    "normlab.layers.LayerNorm",
    "normlab.layers.GroupNorm",
    "normlab.layers.RMSNorm",
    "normlab.layers.LayerNormFunction",
    "normlab.layers.GroupNormFunction",
    "normlab.layers.InstanceNorm1d",
    "normlab.layers.InstanceNorm2d",
    "normlab.layers.BatchNorm1d",
    "normlab.layers.BatchNorm2d",
    "torch.nn.functional.layer_norm",
    "torch.nn.functional.group_norm",
    "torch.nn.functional.rms_norm",
    "torch.nn.functional.batch_norm",
    "torch.nn.functional.instance_norm",
    "torch.layer_norm",
    "torch.native_layer_norm",
    "torch.group_norm",
    "torch.native_group_norm",
    "torch.rms_norm",
    "torch._fused_rms_norm",
    "torch.batch_norm",
    "torch.native_batch_norm",
    "torch.instance_norm",
    "torch.nn.LayerNorm",
    "torch.nn.GroupNorm",
    "torch.nn.RMSNorm",
    "torch.nn.BatchNorm1d",
    "torch.nn.BatchNorm2d",
    "torch.nn.InstanceNorm1d",
    "torch.nn.InstanceNorm2d",
)

# The backward exercise asks for the gradient itself: autograd would compute it.
_AUTOGRAD = ("torch.autograd.grad", "torch.autograd.backward")


def _scales(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """n scales spread log-uniformly over [10^low, 10^high], smallest first so every case has one."""
    return np.sort(10.0 ** rng.uniform(low, high, n))


def _ln_inputs(rng: np.random.Generator, shape: tuple[int, int], low: float = -2.0, high: float = 0.5
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (N, D) whose examples have different means and spreads (some spreads as small as
    10^low, where ε matters) and whose features differ too; γ, β not 1 and 0 (so forgetting
    them shows). Each row is shuffled into place so the small ones are not always first."""
    n, d = shape
    spread = rng.permutation(_scales(rng, n, low, high))[:, None]
    pattern = rng.standard_normal(shape) * rng.uniform(0.5, 2, (1, d)) + rng.uniform(-1, 1, (1, d))
    x = rng.uniform(-5, 5, (n, 1)) + spread * pattern
    return x, rng.uniform(0.5, 2.0, d), rng.uniform(-1.0, 1.0, d)


def _normalize(x: np.ndarray, axis, ddof: int = 0, eps: float = 1e-5, eps_inside: bool = True) -> np.ndarray:
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, keepdims=True, ddof=ddof)
    return (x - mu) / (np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps)


# --- Exercise: LayerNorm forward, (N, D) ------------------------------------------------

# (shape, ε, smallest and largest spread of an example, as powers of ten)
_LN_CASES = [((4, 3), 1e-2, -2.0, 0.5), ((16, 5), 1e-5, -3.5, 0.0), ((8, 32), 0.1, -1.5, 0.5),
             ((1, 6), 1.0, -0.5, -0.5), ((5, 4), 1e-3, -2.5, 0.0)]


def _forward_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, eps, low, high in _LN_CASES:
        cases.append(Case((*_ln_inputs(rng, shape, low, high), eps),
                          description=f"x of shape {shape}, eps={eps:g}, some examples with a variance near eps"))
    return cases


def _forward_reference(x, gamma, beta, eps):
    return F.layer_norm_forward(x, gamma, beta, eps)[0]


layernorm_forward = make_checker(Exercise(
    name="layernorm_forward",
    reference=_forward_reference,
    cases=_forward_cases,
    returns="Return y, a new array of shape (N, D).",
    hint=('The equation of section "LayerNorm: statistics per example" (label eq-ln): the statistics belong to '
          "one example (one row of x), over its D features.",
          "Per row: one mean and one biased variance (divide by D), kept as a column so they broadcast "
          "against the row; ε is added to the variance before the square root; the learned gain and bias "
          "(one per feature) come last."),
    forbidden=_NORMALIZERS,
    eps_argument="eps",
    mistakes=(
        Mistake("wrong axis", lambda x, g, b, e: g * _normalize(x, 0, eps=e) + b,
                "You normalized each feature over the batch (axis 0): that is BatchNorm. LayerNorm "
                "normalizes each example over its own features (axis 1), so it works for a batch of one."),
        Mistake("whole array", lambda x, g, b, e: g * _normalize(x, None, eps=e) + b,
                "You took one mean and one variance over the whole array (every example and every feature). "
                "LayerNorm takes them per example, over that example's features only."),
        Mistake("unbiased variance", lambda x, g, b, e: g * _normalize(x, 1, ddof=1, eps=e) + b,
                "You normalized with the unbiased variance (divide by D − 1). LayerNorm uses the biased "
                "variance over the D features (divide by D), as torch.nn.LayerNorm does."),
        Mistake("eps outside", lambda x, g, b, e: g * _normalize(x, 1, eps=e, eps_inside=False) + b,
                "ε is in the wrong place: you added it to the standard deviation. It belongs under the square "
                "root, added to the variance (see the equation)."),
        Mistake("no affine", lambda x, g, b, e: _normalize(x, 1, eps=e),
                "You returned x̂ without the learned gain and bias: y = γ·x̂ + β."),
        Mistake("no beta", lambda x, g, b, e: g * _normalize(x, 1, eps=e),
                "You forgot the bias β: your output is γ·x̂."),
        Mistake("no gamma", lambda x, g, b, e: _normalize(x, 1, eps=e) + b,
                "You forgot the gain γ: your output is x̂ + β."),
        Mistake("gamma and beta swapped", lambda x, g, b, e: b * _normalize(x, 1, eps=e) + g,
                "You swapped γ and β: γ multiplies x̂ and β is added."),
    ),
))


# --- Exercise: LayerNorm backward, (N, D) -----------------------------------------------

_LN_BACKWARD_CASES = [((4, 3), 1e-2, -2.0, 0.5), ((6, 8), 1e-5, -3.5, 0.0), ((16, 2), 0.1, -1.5, 0.5),
                      ((1, 5), 1.0, -0.5, -0.5), ((5, 4), 1e-3, -2.5, 0.0)]


def _backward_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, eps, low, high in _LN_BACKWARD_CASES:
        x, gamma, _ = _ln_inputs(rng, shape, low, high)
        cases.append(Case((rng.standard_normal(shape), x, gamma, eps),
                          description=f"x and dout of shape {shape}, eps={eps:g}"))
    return cases


def _backward_reference(dout, x, gamma, eps):
    _, cache = F.layer_norm_forward(x, gamma, np.zeros_like(gamma), eps)
    return F.layer_norm_backward(dout, cache)


def _ln_backward_variant(kind: str):
    def wrong(dout, x, gamma, eps):
        var = x.var(1, keepdims=True, ddof=1 if kind == "unbiased" else 0)
        std = np.sqrt(var) + eps if kind == "eps outside" else np.sqrt(var + eps)
        xhat = (x - x.mean(1, keepdims=True)) / std
        dgamma, dbeta = (dout * xhat).sum(0), dout.sum(0)
        g = gamma * dout
        if kind == "gamma outside":     # BatchNorm's formula: γ factored out of the means
            dx = gamma / std * (dout - dout.mean(1, keepdims=True) - xhat * (dout * xhat).mean(1, keepdims=True))
        elif kind == "incomplete":      # μ and σ treated as constants
            dx = g / std
        elif kind == "no mean term":    # σ differentiated, μ treated as a constant
            dx = (g - xhat * (g * xhat).mean(1, keepdims=True)) / std
        elif kind == "batch axis":      # the means over the batch, as in BatchNorm
            dx = (g - g.mean(0, keepdims=True) - xhat * (g * xhat).mean(0, keepdims=True)) / std
        elif kind in ("unbiased", "eps outside"):
            dx = (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True)) / std
        elif kind == "dgamma with x":   # ∂y/∂γ is x̂, not x
            dx = (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True)) / std
            dgamma = (dout * x).sum(0)
        else:
            raise ValueError(kind)
        return dx, dgamma, dbeta
    return wrong


layernorm_backward = make_checker(Exercise(
    name="layernorm_backward",
    reference=_backward_reference,
    cases=_backward_cases,
    returns="Return (dx, dgamma, dbeta): dx of shape (N, D), dgamma and dbeta of shape (D,).",
    hint=('The equation of section "The backward pass" (label eq-ln-dx): the same three terms as BatchNorm\'s '
          "backward, with the means over the features of one example.",
          "Multiply the upstream gradient by γ first, feature by feature, and only then take the two means over "
          "the row, because γ changes along that row. The gradients of γ and β add up over the batch."),
    forbidden=_NORMALIZERS + _AUTOGRAD,
    eps_argument="eps",
    output_names=("dx", "dgamma", "dbeta"),
    mistakes=(
        Mistake("gamma outside", _ln_backward_variant("gamma outside"),
                "You factored γ out of the means, as in BatchNorm's formula. In BatchNorm γ is constant "
                "along the axis the statistics run over; in LayerNorm γ varies along it (one γ per feature), "
                "so it must multiply dout before the means are taken (reread the paragraph after the equation)."),
        Mistake("incomplete gradient", _ln_backward_variant("incomplete"),
                "Your dx is γ·dout/σ: it treats μ and σ as constants, but both depend on every feature of "
                "the example. Differentiate through them (the true dx of each example sums to zero)."),
        Mistake("no mean term", _ln_backward_variant("no mean term"),
                "Your dx differentiates through σ but treats the mean μ as a constant: the term that comes "
                "from μ is missing (the true dx of each example sums to zero)."),
        Mistake("batch axis", _ln_backward_variant("batch axis"),
                "Your means run over the batch (axis 0), as in BatchNorm. LayerNorm's statistics are per "
                "example, so the means in dx run over the features (axis 1); only dgamma and dbeta sum "
                "over the batch."),
        Mistake("unbiased variance", _ln_backward_variant("unbiased"),
                "You recomputed σ with the unbiased variance (divide by D − 1). The forward pass uses the "
                "biased variance over the D features."),
        Mistake("eps outside", _ln_backward_variant("eps outside"),
                "ε is in the wrong place: you added it to the standard deviation. It belongs under the square "
                "root, added to the variance, as in the forward pass."),
        Mistake("dgamma with x", _ln_backward_variant("dgamma with x"),
                "Your dgamma sums dout·x. γ multiplies the normalized input x̂, not x, so dgamma sums dout·x̂ "
                "over the batch."),
    ),
))


# --- Exercise: GroupNorm forward, (N, C, H, W) -----------------------------------------

def _gn_inputs(rng: np.random.Generator, shape: tuple[int, ...], groups: int, low: float, high: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (N, C, H, W) whose groups have different means and spreads (some as small as 10^low,
    where ε matters); channels within a group differ in mean and scale, so that per-channel
    statistics (InstanceNorm) or interleaved groups give different answers."""
    n, c = shape[:2]
    extra = (1,) * (len(shape) - 2)
    spread = rng.permutation(_scales(rng, n * groups, low, high)).reshape(n, groups, 1)
    spread = np.repeat(spread, c // groups, axis=1).reshape((n, c) + extra)
    mean = np.repeat(rng.uniform(-5, 5, (n, groups, 1)), c // groups, axis=1).reshape((n, c) + extra)
    pattern = (rng.standard_normal(shape) * rng.uniform(0.5, 2, (n, c) + extra)
               + rng.uniform(-1.5, 1.5, (n, c) + extra))
    return mean + spread * pattern, rng.uniform(0.5, 2.0, c), rng.uniform(-1.0, 1.0, c)


# (shape, groups, ε, smallest and largest spread of a group, as powers of ten)
_GN_CASES = [((2, 4, 3, 3), 2, 1e-2, -2.0, 0.5), ((3, 6, 2, 4), 3, 1e-5, -3.5, 0.0),
             ((1, 8, 4, 4), 4, 0.1, -1.5, 0.5), ((4, 6, 5, 2), 2, 1.0, -1.0, 0.5),
             ((2, 6, 3, 6), 3, 1e-3, -2.5, 0.0)]


def _group_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, groups, eps, low, high in _GN_CASES:
        x, gamma, beta = _gn_inputs(rng, shape, groups, low, high)
        cases.append(Case((x, groups, gamma, beta, eps), description=f"x of shape {shape}, {groups} groups, eps={eps:g}"))
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
        elif kind == "group size":      # num_groups taken as the number of channels per group
            xhat = _normalize(x.reshape(n, c // num_groups, -1), 2, eps=eps).reshape(x.shape)
        elif kind == "unbiased":
            xhat = _normalize(x.reshape(n, num_groups, -1), 2, ddof=1, eps=eps).reshape(x.shape)
        elif kind == "eps outside":
            xhat = _normalize(x.reshape(n, num_groups, -1), 2, eps=eps, eps_inside=False).reshape(x.shape)
        elif kind == "no affine":
            return _normalize(x.reshape(n, num_groups, -1), 2, eps=eps).reshape(x.shape)
        else:
            raise ValueError(kind)
        return _channel(gamma) * xhat + _channel(beta)
    return wrong


groupnorm_forward = make_checker(Exercise(
    name="groupnorm_forward",
    reference=_group_reference,
    cases=_group_cases,
    returns="Return y, a new array of shape (N, C, H, W).",
    hint=('The LayerNorm equation (label eq-ln) applied to each group, as drawn in section "Which entries share a '
          'statistic": '
          "one mean and one variance per example and per group of C/G consecutive channels, over those "
          "channels and every position.",
          "Give each example's channels a group axis by reshaping (a group then holds C/G · H · W values), "
          "normalize along the values of a group with ε under the square root, reshape back, then apply the "
          "per-channel γ and β, shaped so that they line up with the channel axis."),
    forbidden=_NORMALIZERS,
    eps_argument="eps",
    mistakes=(
        Mistake("no groups (instance)", _group_variant("instance"),
                "You normalized each channel of each example on its own (axes 2, 3): that is InstanceNorm, "
                "GroupNorm with G = C. The C/G channels of a group share one mean and one variance."),
        Mistake("whole example (layer)", _group_variant("layer"),
                "You normalized each example over all its channels: that is LayerNorm, GroupNorm with G = 1. "
                "Normalize each group of channels separately."),
        Mistake("batch axis", _group_variant("batch"),
                "Your groups pool over the batch as well as the channels. GroupNorm's statistics are per "
                "example: each example's groups have their own mean and variance."),
        Mistake("interleaved groups", _group_variant("interleaved"),
                "Your groups interleave the channels (channel k in group k mod G). GroupNorm puts consecutive "
                "channels together: group j holds channels j·C/G to (j + 1)·C/G − 1."),
        Mistake("group size", _group_variant("group size"),
                "You made groups of num_groups channels each. num_groups is the number of groups G; each "
                "group holds C/G channels."),
        Mistake("unbiased variance", _group_variant("unbiased"),
                "You used the unbiased variance (divide by m − 1). GroupNorm uses the biased variance of "
                "the m = C/G · H · W values of each group."),
        Mistake("eps outside", _group_variant("eps outside"),
                "ε is in the wrong place: you added it to the standard deviation. It belongs under the square "
                "root, added to the variance."),
        Mistake("no affine", _group_variant("no affine"),
                "You returned the normalized x̂ without the per-channel gain γ and bias β."),
    ),
))


# --- Exercise: RMSNorm forward, (N, D) -------------------------------------------------

def _rms_inputs(rng: np.random.Generator, shape: tuple[int, int], low: float, high: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """x (N, D) with nonzero means (so centring shows) and root mean squares as small as 10^low."""
    n, d = shape
    spread = rng.permutation(_scales(rng, n, low, high))[:, None]
    pattern = rng.standard_normal(shape) * rng.uniform(0.5, 2, (1, d)) + rng.uniform(-2, 2, (n, 1))
    return spread * pattern, rng.uniform(0.5, 2.0, d)


# (shape, ε, smallest and largest scale of an example, as powers of ten)
_RMS_CASES = [((4, 3), 1e-2, -2.0, 0.5), ((8, 16), 1e-5, -3.5, 0.0), ((1, 5), 1.0, -0.5, -0.5),
              ((5, 2), 0.1, -1.5, 0.5), ((6, 7), 1e-3, -2.5, 0.0)]


def _rms_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, eps, low, high in _RMS_CASES:
        x, gamma = _rms_inputs(rng, shape, low, high)
        cases.append(Case((x, gamma, eps), description=f"x of shape {shape}, eps={eps:g}, some examples with "
                                                        "mean(x²) near eps"))
    return cases


def _rms_reference(x, gamma, eps):
    return gamma * x / np.sqrt((x ** 2).mean(axis=-1, keepdims=True) + eps)


rmsnorm_forward = make_checker(Exercise(
    name="rmsnorm_forward",
    reference=_rms_reference,
    cases=_rms_cases,
    returns="Return y, a new array of shape (N, D).",
    hint=("The formula in the statement, and the RMSNorm row of the comparison table (section \"Comparing the "
          "normalizers\"): one statistic per example, over its D features.",
          "Per row: the mean of the squared entries (no centring), plus ε, under a square root, kept as a "
          "column so it broadcasts against the row; divide by it and multiply by the per-feature gain. There is "
          "no bias."),
    forbidden=_NORMALIZERS,
    eps_argument="eps",
    mistakes=(
        Mistake("centred", lambda x, g, e: g * _normalize(x, 1, eps=e),
                "You subtracted the mean: that is LayerNorm (without β). RMSNorm skips the centring and "
                "divides by the root mean square."),
        Mistake("divided by std", lambda x, g, e: g * x / np.sqrt(x.var(1, keepdims=True) + e),
                "You divided by the standard deviation √(Var(x) + ε). RMSNorm divides by the root mean "
                "square, which includes the mean: mean(x²) = Var(x) + mean(x)²."),
        Mistake("eps outside", lambda x, g, e: g * x / (np.sqrt((x ** 2).mean(1, keepdims=True)) + e),
                "ε is in the wrong place: you added it after the square root. It belongs under the square "
                "root, added to mean(x²)."),
        Mistake("wrong axis", lambda x, g, e: g * x / np.sqrt((x ** 2).mean(0, keepdims=True) + e),
                "You took the root mean square over the batch (axis 0). RMSNorm, like LayerNorm, "
                "normalizes each example over its own features (axis 1)."),
        Mistake("sum, not mean", lambda x, g, e: g * x / np.sqrt((x ** 2).sum(1, keepdims=True) + e),
                "You summed the squares instead of averaging them: that is the Euclidean norm, not the root "
                "mean square (they differ by √D)."),
        Mistake("no square root", lambda x, g, e: g * x / ((x ** 2).mean(1, keepdims=True) + e),
                "You divided by mean(x²) + ε without the square root: the root mean square is its square root."),
        Mistake("no gamma", lambda x, g, e: x / np.sqrt((x ** 2).mean(1, keepdims=True) + e),
                "You forgot the gain γ: multiply the normalized x by γ (one per feature)."),
    ),
))
