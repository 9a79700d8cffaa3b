"""Checkers for the exercises of chapter ``11_transformers``.

In a notebook::

    from normlab.exercises import transformers as check
    check.rmsnorm_backward(rmsnorm_backward)

Four coding exercises: RMSNorm's backward pass, DyT's forward pass, attention logits with
QK-norm, and the pre-LN prediction of the last layer's gradient against depth. The cases make
every ingredient matter: rows whose mean square (or variance) is near ε, with ε from 10⁻⁵ to 1;
α far from 1; a γ and β that are not 1 and 0; q₀ comparable to the variance the sublayers add.
The library implementations that would compute the answer are unavailable while a check runs.
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["dyt_forward", "pre_ln_gradient_ratio", "qk_norm_logits", "rmsnorm_backward"]

_NORMALIZERS = (
    "normlab.layers.LayerNorm",
    "normlab.layers.RMSNorm",
    "normlab.layers.LayerNormFunction",
    "normlab.layers.DynamicTanh",
    "normlab.functional.layer_norm_forward",
    "normlab.functional.layer_norm_backward",
    "torch.nn.functional.layer_norm",
    "torch.nn.functional.rms_norm",
    "torch.layer_norm",
    "torch.native_layer_norm",
    "torch.rms_norm",
    "torch._fused_rms_norm",
    "torch.nn.LayerNorm",
    "torch.nn.RMSNorm",
)
_AUTOGRAD = ("torch.autograd.grad", "torch.autograd.backward")


def _rows(rng: np.random.Generator, shape: tuple[int, int], low: float, high: float, offset: float = 0.0
          ) -> np.ndarray:
    """(N, D) rows of different scales, 10^low … 10^high (the smallest near ε), shuffled into place."""
    n, d = shape
    scales = rng.permutation(np.sort(10.0 ** rng.uniform(low, high, n)))[:, None]
    return scales * (rng.standard_normal(shape) + offset * rng.uniform(-1, 1, (n, 1)))


# --- Exercise: RMSNorm backward -----------------------------------------------------------

_RMS_CASES = [((4, 3), 1e-2, -1.5, 0.5), ((6, 8), 1e-5, -3.0, 0.0), ((16, 2), 0.1, -1.0, 0.5),
              ((1, 5), 1.0, -0.5, -0.5), ((5, 4), 1e-3, -2.0, 0.0)]


def _rms_backward_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, eps, low, high in _RMS_CASES:
        x = _rows(rng, shape, low, high, offset=1.0)     # rows with a mean: dropping the centring matters
        cases.append(Case((rng.standard_normal(shape), x, rng.uniform(0.5, 2.0, shape[1]), eps),
                          description=f"dout and x of shape {shape}, eps={eps:g}, rows with mean(x²) near eps"))
    return cases


def _rms_backward_reference(dout, x, gamma, eps):
    r = np.sqrt((x * x).mean(axis=1, keepdims=True) + eps)
    xhat = x / r
    g = dout * gamma
    dx = (g - xhat * (g * xhat).mean(axis=1, keepdims=True)) / r
    return dx, (dout * xhat).sum(axis=0)


def _rms_variant(kind: str):
    def wrong(dout, x, gamma, eps):
        ms = (x * x).mean(axis=1, keepdims=True)
        r = np.sqrt(ms) + eps if kind == "eps outside" else np.sqrt(ms + eps)
        xhat = x / r
        g = dout * gamma
        proj = (g * xhat).mean(axis=1, keepdims=True)
        if kind == "layernorm term":
            dx = (g - g.mean(axis=1, keepdims=True) - xhat * proj) / r
        elif kind == "constant r":
            dx = g / r
        elif kind == "gamma outside":
            dx = gamma * (dout - xhat * (dout * xhat).mean(axis=1, keepdims=True)) / r
        elif kind == "batch axis":
            dx = (g - xhat * (g * xhat).mean(axis=0, keepdims=True)) / r
        elif kind == "eps outside":
            dx = (g - xhat * proj) / r
        else:
            raise ValueError(kind)
        return dx, (dout * xhat).sum(axis=0)
    return wrong


rmsnorm_backward = make_checker(Exercise(
    name="rmsnorm_backward",
    reference=_rms_backward_reference,
    cases=_rms_backward_cases,
    returns="Return (dx, dgamma): dx of shape (N, D), dgamma of shape (D,).",
    hint=('Section "RMSNorm": equation eq-rms-dx, LayerNorm\'s backward (chapter 7, eq-ln-dx) without the '
          "term that came from the mean.",
          "Multiply dout by γ first, feature by feature; the only statistic is the root mean square of the "
          "row, so the only correction to γ·dout/r is the projection onto x̂, averaged over the row. dgamma "
          "adds up over the batch."),
    forbidden=_NORMALIZERS + _AUTOGRAD,
    eps_argument="eps",
    output_names=("dx", "dgamma"),
    mistakes=(
        Mistake("layernorm term", _rms_variant("layernorm term"),
                "Your dx subtracts the row mean of γ·dout, a term of LayerNorm's backward that comes from the "
                "mean μ. RMSNorm subtracts no mean, so that term is not there."),
        Mistake("constant r", _rms_variant("constant r"),
                "Your dx is γ·dout/r: it treats the root mean square r as a constant, but r depends on every "
                "feature of the row. Differentiate through it."),
        Mistake("gamma outside", _rms_variant("gamma outside"),
                "You factored γ out of the mean over the row. γ changes along the row (one per feature), so it "
                "must multiply dout before the mean is taken."),
        Mistake("batch axis", _rms_variant("batch axis"),
                "Your mean in dx runs over the batch (axis 0). RMSNorm's statistic belongs to one example, so "
                "the mean runs over its features (axis 1); only dgamma sums over the batch."),
        Mistake("eps outside", _rms_variant("eps outside"),
                "ε is in the wrong place: you added it to the root mean square. It belongs under the square "
                "root, added to mean(x²), as in the forward pass."),
    ),
))


# --- Exercise: DyT forward ---------------------------------------------------------------

_DYT_CASES = [((4, 3), 0.5), ((8, 16), 2.0), ((1, 5), 0.05), ((6, 4), 10.0), ((3, 7), 1.3)]


def _dyt_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, alpha in _DYT_CASES:
        x = rng.standard_normal(shape) * rng.uniform(0.5, 4.0, (shape[0], 1))
        cases.append(Case((x, alpha, rng.uniform(0.5, 2.0, shape[1]), rng.uniform(-1.0, 1.0, shape[1])),
                          description=f"x of shape {shape}, alpha={alpha:g}"))
    return cases


def _dyt_reference(x, alpha, gamma, beta):
    return gamma * np.tanh(alpha * x) + beta


dyt_forward = make_checker(Exercise(
    name="dyt_forward",
    reference=_dyt_reference,
    cases=_dyt_cases,
    returns="Return y, a new array of the shape of x, (N, D).",
    hint=('Section "Transformers without normalization": equation eq-dyt.',
          "Elementwise: the scalar α scales the input of tanh; the learned gain and bias (one per feature) "
          "come after tanh, as in LayerNorm. There is no statistic over any axis."),
    forbidden=("normlab.layers.DynamicTanh",),
    atol=1e-10,
    mistakes=(
        Mistake("alpha outside", lambda x, a, g, b: g * a * np.tanh(x) + b,
                "You multiplied tanh's output by α. α scales tanh's input: it sets where the squashing starts."),
        Mistake("no alpha", lambda x, a, g, b: g * np.tanh(x) + b,
                "Your output does not depend on α: α multiplies x inside tanh."),
        Mistake("affine inside", lambda x, a, g, b: np.tanh(a * (g * x + b)),
                "You applied γ and β before tanh. They come after it, as after LayerNorm's x̂."),
        Mistake("no affine", lambda x, a, g, b: np.tanh(a * x),
                "You returned tanh(αx) without the learned gain and bias."),
        Mistake("swapped", lambda x, a, g, b: b * np.tanh(a * x) + g,
                "You swapped γ and β: γ multiplies tanh(αx) and β is added."),
        Mistake("normalized", lambda x, a, g, b: g * np.tanh(a * (x - x.mean(1, keepdims=True))
                                                             / x.std(1, keepdims=True)) + b,
                "You normalized x before tanh. DyT replaces the normalization: no mean and no variance."),
    ),
))


# --- Exercise: attention logits with QK-norm ----------------------------------------------

_QK_CASES = [((5, 4), 1e-2), ((8, 16), 1e-5), ((3, 8), 0.1), ((6, 2), 1.0), ((4, 6), 1e-3)]


def _qk_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for (t, d), eps in _QK_CASES:
        q = _rows(rng, (t, d), -1.5, 1.5, offset=2.0) + rng.uniform(-3, 3, (1, d))
        k = _rows(rng, (t + 1, d), -1.5, 1.5, offset=2.0)[:t] + rng.uniform(-3, 3, (1, d))
        cases.append(Case((q, k, eps), description=f"q and k of shape {(t, d)}, eps={eps:g}"))
    return cases


def _ln_rows(z, eps):
    return (z - z.mean(axis=1, keepdims=True)) / np.sqrt(z.var(axis=1, keepdims=True) + eps)


def _qk_reference(q, k, eps):
    return _ln_rows(q, eps) @ _ln_rows(k, eps).T / np.sqrt(q.shape[1])


def _l2(z):
    return z / np.linalg.norm(z, axis=1, keepdims=True)


qk_norm_logits = make_checker(Exercise(
    name="qk_norm_logits",
    reference=_qk_reference,
    cases=_qk_cases,
    returns="Return the logits, an array of shape (T, T): entry (i, j) for query i and key j.",
    hint=('Section "QK-norm": equations eq-attn-logits and eq-qk-norm.',
          "Normalize each query and each key (each row) over its d features, as LayerNorm without γ and β "
          "does, with the biased variance and ε under the square root; then the usual scaled dot products."),
    forbidden=_NORMALIZERS + ("torch.nn.functional.scaled_dot_product_attention", "torch.nn.MultiheadAttention"),
    eps_argument="eps",
    rtol=1e-6,
    atol=1e-8,
    mistakes=(
        Mistake("no scaling", lambda q, k, e: _ln_rows(q, e) @ _ln_rows(k, e).T,
                "Your logits are not divided by √d: QK-norm changes the queries and keys, not the scaling of "
                "their dot product."),
        Mistake("only q", lambda q, k, e: _ln_rows(q, e) @ k.T / np.sqrt(q.shape[1]),
                "You normalized the queries only. QK-norm normalizes the keys too; otherwise a key can still "
                "grow without bound."),
        Mistake("no qk norm", lambda q, k, e: q @ k.T / np.sqrt(q.shape[1]),
                "These are the logits without QK-norm: normalize each query and key first."),
        Mistake("wrong axis", lambda q, k, e: ((q - q.mean(0)) / np.sqrt(q.var(0) + e))
                @ ((k - k.mean(0)) / np.sqrt(k.var(0) + e)).T / np.sqrt(q.shape[1]),
                "You normalized each feature over the positions (axis 0). QK-norm normalizes each query and "
                "each key over its own d features (axis 1)."),
        Mistake("no centring", lambda q, k, e: (q / np.sqrt((q * q).mean(1, keepdims=True) + e))
                @ (k / np.sqrt((k * k).mean(1, keepdims=True) + e)).T / np.sqrt(q.shape[1]),
                "You divided by the root mean square without subtracting the mean: that is RMSNorm. This "
                "exercise uses LayerNorm (mean and variance) on the queries and keys."),
        Mistake("unit vectors", lambda q, k, e: _l2(q) @ _l2(k).T / np.sqrt(q.shape[1]),
                "You scaled each query and key to unit length (a cosine). LayerNorm centres them and gives "
                "them unit variance per feature, so their length is √d, not 1."),
    ),
))


# --- Exercise: the pre-LN gradient against depth -------------------------------------------

_GRAD_CASES = [([6, 12, 24, 48], 2.0, 0.2), ([1, 2, 3, 4, 5], 1.0, 1.0), ([10, 100, 1000], 5.0, 0.05),
               ([3, 6], 0.5, 2.0), ([8, 16, 32, 64, 128, 256], 20.0, 0.3)]


def _grad_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((np.asarray(depths), q0, v), description=f"depths={depths}, q0={q0:g}, v={v:g}")
            for depths, q0, v in _GRAD_CASES]


def _grad_reference(depths, q0, v):
    depths = np.asarray(depths, dtype=np.float64)
    q = q0 + 2 * depths * v
    return np.sqrt(q[0] / q)


pre_ln_gradient_ratio = make_checker(Exercise(
    name="pre_ln_gradient_ratio",
    reference=_grad_reference,
    cases=_grad_cases,
    returns="Return an array of the shape of depths: the predicted g(L)/g(L_0) at each depth, 1 at the first.",
    hint=('Section "Post-LN or pre-LN": equations eq-pre-stream and eq-pre-grad.',
          "Count the sublayers that add to the stream (two per block), add up the variances they add to the "
          "embedding's, and remember that the final LayerNorm divides by a standard deviation, not a variance. "
          "Then compare each depth with the first."),
    forbidden=("normlab.experiments.transformers.GradientRecord.predicted_pre_ratio",),
    rtol=1e-9,
    atol=0.0,
    mistakes=(
        Mistake("one sublayer", lambda d, q0, v: np.sqrt((q0 + d[0] * v) / (q0 + np.asarray(d) * v)),
                "You counted one sublayer per block. Each block adds to the stream twice: attention, then "
                "the FFN."),
        Mistake("variance", lambda d, q0, v: (q0 + 2 * d[0] * v) / (q0 + 2 * np.asarray(d) * v),
                "You returned the ratio of variances. The final LayerNorm divides by the standard deviation "
                "of the stream, so the gradient scales with one over its square root."),
        Mistake("inverted", lambda d, q0, v: np.sqrt((q0 + 2 * np.asarray(d) * v) / (q0 + 2 * d[0] * v)),
                "Your ratio grows with depth: it is upside down. A larger stream means a smaller gradient "
                "through the final LayerNorm."),
        Mistake("no q0", lambda d, q0, v: np.sqrt(d[0] / np.asarray(d, dtype=np.float64)),
                "You dropped the embedding's variance q₀: √(L₀/L) is the limit for deep models only. The "
                "stream starts at q₀, not at 0."),
        Mistake("not a ratio", lambda d, q0, v: 1 / np.sqrt(q0 + 2 * np.asarray(d, dtype=np.float64) * v),
                "You returned 1/σ at each depth, not its ratio to the first depth: divide by the value at "
                "depths[0], so the first entry is 1."),
        Mistake("compounding", lambda d, q0, v: (1 + v) ** (-(np.asarray(d) - d[0]) * 1.0),
                "Your stream grows geometrically, as a residual stream without normalization does (chapter "
                "'Initialization'). In pre-LN each branch starts with a LayerNorm, so it adds a fixed "
                "variance v, whatever the stream's size."),
    ),
))
