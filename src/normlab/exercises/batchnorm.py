"""Checkers for the exercises of chapter ``02_batchnorm``.

In a notebook::

    from normlab.exercises import batchnorm as check
    check.batchnorm_forward(batchnorm_forward)

Students' functions take plain arrays rather than a cache, so that any internal
bookkeeping is accepted; the references come from :mod:`normlab.functional`.

Every case that takes an ε makes it matter: ε varies from 1e-5 to 1 across the cases and
half the features (channels) have a standard deviation of 0.01–0.1, so a function that
ignores ε, or puts it outside the square root, is off by far more than the tolerance.
"""

from __future__ import annotations

import numpy as np

from normlab import functional as F
from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

EPSILONS = (1e-5, 1e-2, 0.1, 1.0, 1e-3)
"""The ε of the cases, in order: PyTorch's default first, then values as large as the variances."""

_NORMALIZERS_IN_TORCH = (
    "torch.nn.functional.batch_norm", "torch.batch_norm", "torch.native_batch_norm",
    "torch.nn.functional.layer_norm", "torch.layer_norm",
    "torch.nn.functional.instance_norm", "torch.instance_norm",
    "torch.nn.functional.group_norm", "torch.group_norm",
)
"""Library normalizations that compute BN's forward when given the right reshape of x."""

_NORMALIZERS_IN_NORMLAB = (
    "normlab.functional.batch_norm_forward", "normlab.functional.batch_norm_inference",
    "normlab.functional.layer_norm_forward", "normlab.functional.group_norm_forward",
    "normlab.layers.BatchNormFunction",
)


def _scales(rng: np.random.Generator, c: int) -> np.ndarray:
    """Per-channel standard deviations: every other channel small (0.01–0.1), where ε matters."""
    scale = rng.uniform(0.5, 4, c)
    scale[::2] = rng.uniform(0.01, 0.1, len(scale[::2]))
    return scale


def _bn_inputs(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x with a different mean and scale per channel (half of them small); γ, β not 1 and 0
    (so forgetting them shows)."""
    c = shape[1]
    extra = (1,) * (len(shape) - 2)
    loc = rng.uniform(-5, 5, (1, c) + extra)
    scale = _scales(rng, c).reshape((1, c) + extra)
    x = rng.standard_normal(shape) * scale + loc
    return x, rng.uniform(0.5, 2.0, c), rng.uniform(-1.0, 1.0, c)


def _channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return np.asarray(v).reshape((1, -1) + (1,) * (ndim - 2))


def _normalize(x, gamma, beta, eps, axes, ddof=0, eps_inside=True, sqrt=True):
    """BN-like normalization over ``axes`` with γ, β per channel; the switches make the mistakes."""
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True, ddof=ddof)
    if not sqrt:
        scale = var + eps
    else:
        scale = np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps
    return _channel(gamma, x.ndim) * (x - mu) / scale + _channel(beta, x.ndim)


def _batch_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


# --- Exercise: forward pass, (N, D) ---------------------------------------------------

def _forward_cases(rng: np.random.Generator) -> list[Case]:
    shapes = [(4, 3), (16, 5), (2, 1), (64, 8), (8, 6)]
    return [Case((*_bn_inputs(rng, shape), eps), description=f"x of shape {shape}, eps={eps:g}")
            for shape, eps in zip(shapes, EPSILONS)]


def _forward_reference(x, gamma, beta, eps):
    return F.batch_norm_forward(x, gamma, beta, eps)[0]


batchnorm_forward = make_checker(Exercise(
    name="batchnorm_forward",
    reference=_forward_reference,
    cases=_forward_cases,
    returns="Return y, a new array of shape (N, D), the shape of x.",
    hint=(
        'Equation (2.1), `eq-bn-transform`, in section 2.1 "The transform": it describes one '
        "feature; apply it to every column of x separately.",
        "Each feature (column) has its own statistics, computed over the N examples of the batch "
        "(axis 0), with the biased variance (divide by N). Normalize with them, then apply that "
        "feature's own scale γ and shift β: reductions with `axis=0` give (D,) arrays, which "
        "broadcast against (N, D).",
    ),
    forbidden=(*_NORMALIZERS_IN_NORMLAB, "normlab.layers.BatchNorm1d", "torch.nn.BatchNorm1d",
               *_NORMALIZERS_IN_TORCH),
    eps_argument="eps",
    mistakes=(
        Mistake("unbiased variance", lambda x, g, b, e: _normalize(x, g, b, e, 0, ddof=1),
                "You normalized with the unbiased variance (dividing by N − 1). In training mode BN "
                "uses the biased batch variance (1/N); the unbiased one is only for the running estimate."),
        Mistake("eps outside", lambda x, g, b, e: _normalize(x, g, b, e, 0, eps_inside=False),
                "You added ε to the standard deviation; ε belongs inside the square root, added to "
                "the variance."),
        Mistake("no square root", lambda x, g, b, e: _normalize(x, g, b, e, 0, sqrt=False),
                "You divided by the variance (plus ε) instead of by its square root: x̂ must be "
                "measured in standard deviations."),
        Mistake("wrong axis", lambda x, g, b, e: _normalize(x.T, np.ones(len(x)), np.zeros(len(x)), e, 0).T
                * g + b,
                "You normalized each example over its features (axis 1): that is LayerNorm. "
                "BatchNorm normalizes each feature over the batch (axis 0)."),
        Mistake("no affine", lambda x, g, b, e: _normalize(x, np.ones_like(g), np.zeros_like(b), e, 0),
                "You returned x̂ without the learned scale γ and shift β."),
        Mistake("gamma and beta swapped", lambda x, g, b, e: _normalize(x, b, g, e, 0),
                "You swapped γ and β: γ is the scale (it multiplies x̂) and β the shift."),
    ),
))


# --- Exercise: backward pass, (N, D) --------------------------------------------------

def _backward_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, eps in zip([(4, 3), (10, 5), (32, 2), (6, 4)], EPSILONS):
        x, gamma, _ = _bn_inputs(rng, shape)
        cases.append(Case((rng.standard_normal(shape), x, gamma, eps),
                          description=f"x and dout of shape {shape}, eps={eps:g}"))
    return cases


def _backward_reference(dout, x, gamma, eps):
    _, cache = F.batch_norm_forward(x, gamma, np.zeros_like(gamma), eps)
    return F.batch_norm_backward(dout, cache)


def _naive_backward(dout, x, gamma, eps):
    _, cache = F.batch_norm_forward(x, gamma, np.zeros_like(gamma), eps)
    return F.batch_norm_backward_naive(dout, cache)


def _backward_variant(without: str = ""):
    """The gradient with one piece wrong: a path left out, γ forgotten, x for x̂, means for sums,
    dβ left per example (``dout`` itself, without the sum over the batch)."""
    def wrong(dout, x, gamma, eps):
        std = np.sqrt(x.var(0) + eps)
        xhat = (x - x.mean(0)) / std
        inner = dout.copy()
        if without != "mean":
            inner -= dout.mean(0)
        if without != "variance":
            inner -= xhat * (dout * xhat).mean(0)
        dx = (1.0 if without == "gamma" else gamma) / std * inner
        dgamma = (dout * (x if without == "xhat" else xhat)).sum(0)
        dbeta = dout.sum(0)
        if without == "sum":
            dgamma, dbeta = dgamma / len(x), dbeta / len(x)
        if without == "dbeta sum":
            dbeta = dout.copy()
        return dx, dgamma, dbeta
    return wrong


batchnorm_backward = make_checker(Exercise(
    name="batchnorm_backward",
    reference=_backward_reference,
    cases=_backward_cases,
    returns="Return a tuple of three new arrays, in this order: dx of shape (N, D) like x, then dgamma "
            "and dbeta, each of shape (D,).",
    hint=(
        'Equation (2.5), `eq-bn-dx`, in section 2.4 "Backpropagation through BN"; equation (2.4), '
        "`eq-bn-stepwise`, gives the same gradient step by step.",
        "Each x_i reaches the loss along three paths: directly through its own x̂_i, through the "
        "batch mean μ and through the batch variance σ², both of which depend on every x in the "
        "batch. dx is the sum of the three contributions. γ and β are shared by every example, so "
        "their gradients collect one contribution per example.",
    ),
    forbidden=(
        "normlab.functional.batch_norm_backward", "normlab.functional.batch_norm_backward_stepwise",
        "normlab.layers.BatchNormFunction.backward", "normlab.layers.BatchNorm1d",
        "torch.nn.BatchNorm1d", "torch.nn.functional.batch_norm", "torch.batch_norm",
        "torch.autograd.grad", "torch.autograd.backward", "torch.Tensor.backward",
        "torch.autograd.functional.vjp", "torch.autograd.functional.jacobian",
        "torch.func.vjp", "torch.func.grad", "torch.func.jacrev",
    ),
    output_names=("dx", "dgamma", "dbeta"),
    eps_argument="eps",
    mistakes=(
        Mistake("incomplete gradient", _naive_backward,
                "Your dx is the incomplete gradient of equation (2.6), `eq-bn-naive`, from many course "
                "notes: it treats μ and σ² as constants, but both depend on every x in the batch. "
                "Differentiate through them (the true dx sums to zero over the batch; yours does not)."),
        Mistake("no mean path", _backward_variant("mean"),
                "Your dx misses the path through the batch mean μ (the true dx sums to zero over "
                "the batch; yours does not)."),
        Mistake("no variance path", _backward_variant("variance"),
                "Your dx misses the path through the batch variance σ²."),
        Mistake("dx without gamma", _backward_variant("gamma"),
                "Your dx leaves out γ: every path from x to the loss passes through y = γ·x̂ + β, "
                "so each is multiplied by γ."),
        Mistake("dgamma from x", _backward_variant("xhat"),
                "Your dgamma uses x where the forward pass multiplies γ by x̂: the derivative of γ·x̂ "
                "with respect to γ is x̂."),
        Mistake("dbeta not summed", _backward_variant("dbeta sum"),
                "Your dbeta is dout itself, one row per example: the gradient g_β written without its sum "
                "over the batch, a common misstatement. β is shared by every example, so "
                "∂ℓ/∂β = Σ_i ∂ℓ/∂y_i: sum dout over the batch (axis 0)."),
        Mistake("means for sums", _backward_variant("sum"),
                "Your dgamma and dbeta are averages over the batch. Each example's loss adds a "
                "contribution to the gradient of the shared γ and β: sum them, do not average."),
    ),
))


# --- Exercise: running statistics ------------------------------------------------------

def _running_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for m, d, momentum in [(8, 3, 0.1), (2, 4, 0.1), (32, 2, 0.5), (5, 3, 1.0), (3, 5, 0.9)]:
        x = rng.standard_normal((m, d)) * rng.uniform(0.5, 3, d) + rng.uniform(-2, 2, d)
        cases.append(Case((rng.standard_normal(d), rng.uniform(0.5, 2, d), x, momentum),
                          description=f"batch of m={m}, momentum {momentum}"))
    return cases


def _running_reference(running_mean, running_var, x, momentum):
    return F.update_running_stats(running_mean, running_var, x.mean(0), x.var(0), x.shape[0], momentum)


update_running_stats = make_checker(Exercise(
    name="update_running_stats",
    reference=_running_reference,
    cases=_running_cases,
    returns="Return the tuple (new running_mean, new running_var): two new arrays of shape (D,); "
            "leave the arguments unchanged.",
    hint=(
        'Equation (2.3), `eq-running-average`, in section 2.2 "Training versus inference" '
        "(PyTorch's convention).",
        "momentum is the weight of the new batch's statistic, not of the old running value. The "
        "running variance estimates the population variance, so the batch variance enters it "
        "unbiased (m is the number of examples in x, its number of rows), unlike the biased one BN "
        "normalizes with. Build new arrays rather than updating the ones you were given.",
    ),
    forbidden=("normlab.functional.update_running_stats", "normlab.layers.BatchNorm1d",
               "torch.nn.BatchNorm1d", "torch.nn.functional.batch_norm", "torch.batch_norm"),
    output_names=("running_mean", "running_var"),
    mistakes=(
        Mistake("biased", lambda rm, rv, x, mo: ((1 - mo) * rm + mo * x.mean(0), (1 - mo) * rv + mo * x.var(0)),
                "Your running variance takes the biased batch variance (dividing by m). The running "
                "estimate is of the population variance, so it takes the unbiased batch variance "
                "(Ioffe & Szegedy, Algorithm 2); the biased one is only for normalizing the batch."),
        Mistake("keras momentum", lambda rm, rv, x, mo: (mo * rm + (1 - mo) * x.mean(0),
                                                          mo * rv + (1 - mo) * x.var(0, ddof=1)),
                "You used the Keras/TensorFlow convention, where momentum weights the old running "
                "value. In PyTorch's convention momentum weights the new batch statistic."),
        Mistake("standard deviation", lambda rm, rv, x, mo: ((1 - mo) * rm + mo * x.mean(0),
                                                              (1 - mo) * rv + mo * x.std(0, ddof=1)),
                "Your running variance averages in the batch's standard deviation; it is a running "
                "estimate of the variance, so average in a variance."),
    ),
))


# --- Exercise: fold BN into the preceding linear layer ---------------------------------

def _fold_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for (d_in, d_out), eps in zip([(4, 4), (3, 2), (5, 4), (8, 1)], EPSILONS):
        var = _scales(rng, d_out) ** 2
        cases.append(Case((rng.standard_normal((d_out, d_in)), rng.standard_normal(d_out),
                           rng.uniform(0.5, 2, d_out), rng.uniform(-1, 1, d_out),
                           rng.standard_normal(d_out), var, eps),
                          description=f"Linear({d_in} → {d_out}) followed by BatchNorm1d({d_out}), eps={eps:g}"))
    return cases


def _fold_reference(weight, bias, gamma, beta, mean, var, eps):
    return F.fold_batch_norm(weight, bias, gamma, beta, mean, var, eps)


def _fold_variant(mistake: str):
    """A folding with one piece wrong."""
    def wrong(w, b, g, be, m, v, e):
        if mistake == "eps outside":
            s = g / (np.sqrt(v) + e)
        elif mistake == "no square root":
            s = g / (v + e)
        else:
            s = g / np.sqrt(v + e)
        weight = w * s[None, :] if mistake == "columns" else s[:, None] * w
        if mistake == "bias unscaled":
            return weight, b - m + be
        if mistake == "mean forgotten":
            return weight, s * b + be
        if mistake == "beta forgotten":
            return weight, s * (b - m)
        return weight, s * (b - m) + be
    return wrong


fold_batchnorm = make_checker(Exercise(
    name="fold_batchnorm",
    reference=_fold_reference,
    cases=_fold_cases,
    returns="Return the tuple (folded_weight, folded_bias): new arrays of shapes (D_out, D_in) and (D_out,).",
    hint=(
        'Equation (2.2), `eq-bn-inference`, in section 2.2 "Training versus inference": in eval mode '
        "BN is a fixed affine map of each output feature.",
        "Write eval-mode BN as a scale and a shift per output feature, then substitute the linear "
        "layer's output Wu + b into it. Output feature j is computed by row j of the weight, so the "
        "scale of feature j applies to that row; the bias goes through BN like the rest of the output.",
    ),
    forbidden=("normlab.functional.fold_batch_norm", "normlab.functional.batch_norm_inference",
               "torch.nn.utils.fuse_linear_bn_weights", "torch.nn.utils.fuse_linear_bn_eval"),
    output_names=("weight", "bias"),
    eps_argument="eps",
    mistakes=(
        Mistake("eps outside", _fold_variant("eps outside"),
                "You added ε to the standard deviation; ε belongs inside the square root, added to "
                "the variance."),
        Mistake("no square root", _fold_variant("no square root"),
                "Your scale divides by the variance (plus ε) instead of by its square root."),
        Mistake("columns", _fold_variant("columns"),
                "Your folded weight scales the columns of the weight (its inputs) instead of its rows "
                "(its outputs): BN's scale belongs to the output features, the first axis of the weight."),
        Mistake("bias unscaled", _fold_variant("bias unscaled"),
                "Your folded bias does not go through BN's scale: the linear layer's bias is part of "
                "its output, which BN scales as a whole."),
        Mistake("mean forgotten", _fold_variant("mean forgotten"),
                "Your folded bias ignores the population mean `mean`: eval-mode BN centres its input."),
        Mistake("beta forgotten", _fold_variant("beta forgotten"),
                "Your folded bias leaves out BN's shift β."),
    ),
))


# --- Exercise: convolutional BN --------------------------------------------------------

def _conv_cases(rng: np.random.Generator) -> list[Case]:
    # The first case has W = C, so γ and β broadcast along the width by mistake give a wrong
    # answer that can be named instead of a broadcasting error.
    shapes = [(2, 3, 4, 3), (4, 2, 3, 5), (1, 4, 6, 6), (3, 5, 2, 2)]
    return [Case((*_bn_inputs(rng, shape), eps), description=f"x of shape {shape} (N, C, H, W), eps={eps:g}")
            for shape, eps in zip(shapes, EPSILONS)]


def _conv_axes(axes, **switches):
    return lambda x, g, b, e: _normalize(x, g, b, e, axes, **switches)


def _conv_along_width(x, g, b, e):
    if x.shape[1] != x.shape[-1]:
        raise ValueError("only a case with W = C broadcasts γ along the width")
    xhat = _normalize(x, np.ones_like(g), np.zeros_like(b), e, (0, 2, 3))
    return g * xhat + b


batchnorm2d_forward = make_checker(Exercise(
    name="batchnorm2d_forward",
    reference=_forward_reference,
    cases=_conv_cases,
    returns="Return y, a new array of shape (N, C, H, W), the shape of x.",
    hint=(
        'Equation (2.1), `eq-bn-transform`, with the statistics of section 2.3 "Convolutional BN": '
        "one mean and one variance per channel.",
        "A channel's statistics pool all of its N·H·W values: over the batch and both spatial axes, "
        "never across channels, with the biased variance. γ and β hold one value per channel, so give "
        "them a shape that broadcasts along axis 1 of x.",
    ),
    forbidden=(*_NORMALIZERS_IN_NORMLAB, "normlab.layers.BatchNorm2d", "torch.nn.BatchNorm2d",
               *_NORMALIZERS_IN_TORCH),
    eps_argument="eps",
    mistakes=(
        Mistake("unbiased variance", _conv_axes((0, 2, 3), ddof=1),
                "You normalized with the unbiased variance (dividing by m − 1, where m = N·H·W values "
                "per channel). In training mode BN uses the biased batch variance (1/m); the unbiased "
                "one is only for the running estimate."),
        Mistake("eps outside", _conv_axes((0, 2, 3), eps_inside=False),
                "You added ε to the standard deviation; ε belongs inside the square root, added to "
                "the variance."),
        Mistake("per position", _conv_axes((0,)),
                "You normalized each channel at each pixel separately (over axis 0 only). Convolutional "
                "BN shares statistics across positions, as the filter is shared: pool over the batch "
                "and both spatial axes."),
        Mistake("instance norm", _conv_axes((2, 3)),
                "You normalized each example's channel over its own pixels (axes 2, 3): that is "
                "InstanceNorm. Pool over the batch too."),
        Mistake("layer norm", _conv_axes((1, 2, 3)),
                "You normalized each example over all its channels and pixels: that is LayerNorm. "
                "BatchNorm keeps channels apart and pools over the batch."),
        Mistake("gamma along width", _conv_along_width,
                "Your γ and β of shape (C,) broadcast along the last axis of x (the width W), not "
                "along the channels (axis 1): reshape them before multiplying."),
        Mistake("no affine", lambda x, g, b, e: _normalize(x, np.ones_like(g), np.zeros_like(b), e, (0, 2, 3)),
                "You returned x̂ without the learned scale γ and shift β."),
    ),
))

__all__ = ["batchnorm2d_forward", "batchnorm_backward", "batchnorm_forward", "fold_batchnorm",
           "update_running_stats"]
