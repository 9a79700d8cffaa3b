"""What several chapters' experiments share, so that no experiment module imports another.

- :data:`HIDDEN`: the hidden widths of the book's standard MLP, three layers of 100 units
  (Ioffe & Szegedy's §4.1 network), used in chapters ``03_batchnorm_experiments``,
  ``04_internal_covariate_shift``, ``05_smoothness`` and ``07_layernorm``.
- :func:`sigmoid_mlp`: that MLP with sigmoids, with or without BatchNorm.
- :func:`steps_to_accuracy`, :func:`median_drift`, :func:`width_change`: how fast a network
  trains and how much the distribution of a layer's inputs moves while it does (chapters
  ``03_batchnorm_experiments`` and ``04_internal_covariate_shift``).
- :func:`as_float64`: a dataset with float64 features, for experiments that check identities
  to float precision (chapters ``06_weightnorm`` and ``09_weight_decay``).
- :func:`relative_change`, :data:`TRANSFORMATIONS`, :data:`PAPER_COLUMNS`, :data:`BA_ET_AL_TABLE1`: how much
  a normalizer's output changes under a transformation of the weights or the data (Ba, Kiros & Hinton's
  Table 1), for chapters ``07_layernorm`` (BN, WN, LN) and ``11_transformers`` (RMSNorm).
- :class:`Claim`: what a claim function returns: whether it holds, what it measured and the
  threshold it compared that with.

The chapter modules re-export what they use, so ``experiments.batchnorm.sigmoid_mlp`` and
``experiments.batchnorm.HIDDEN`` still work.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from normlab import data, models
from normlab.layers import BatchNorm1d, LayerNorm, WeightNormLinear

__all__ = ["BA_ET_AL_TABLE1", "Claim", "HIDDEN", "NORMALIZERS", "NORMS", "PAPER_COLUMNS", "TRANSFORMATIONS", "as_float64",
           "median_drift", "ratio", "relative_change", "sigmoid_mlp", "steps_to_accuracy", "width_change"]

#: Hidden widths of the book's standard MLP: three hidden layers of 100 units (Ioffe & Szegedy, §4.1).
HIDDEN = (100, 100, 100)

#: The normalizations :func:`sigmoid_mlp` builds: none, or BatchNorm before every sigmoid.
NORMS = ("none", "batch")


def sigmoid_mlp(norm: str, num_features: int, num_classes: int, seed: int) -> nn.Sequential:
    """The paper's §4.1 network: 3 hidden layers of 100 sigmoid units, BN (``norm="batch"``)
    between each hidden Linear and its sigmoid, or none (``norm="none"``).

    The Linear layers get the same seeded initial weights with or without BN (BN's own
    γ = 1, β = 0 are not drawn from the generator), so the two networks start from the
    same point. Used in chapters ``03_batchnorm_experiments`` and
    ``04_internal_covariate_shift``.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}; got {norm!r}.")
    factory = BatchNorm1d if norm == "batch" else None
    return models.mlp(num_features, HIDDEN, num_classes, activation="sigmoid", norm=factory, seed=seed)


def steps_to_accuracy(eval_steps: np.ndarray, accuracy: np.ndarray, target: float) -> float:
    """The first evaluated step at which ``accuracy`` reaches ``target`` (inf if it never does).

    Used in chapters ``03_batchnorm_experiments`` and ``04_internal_covariate_shift``.
    """
    reached = np.nonzero(np.asarray(accuracy) >= target)[0]
    return float(eval_steps[reached[0]]) if reached.size else float("inf")


def median_drift(percentiles: np.ndarray, probe_steps: np.ndarray, q: np.ndarray, since: int = 100) -> float:
    """How far the median of a sigmoid input wanders during training, averaged over units.

    For each unit, the range (max − min) of its 50th percentile over the probe steps
    from ``since`` on; then the mean over units. The first steps are left out because
    the BN network is probed in eval mode: its running estimates start at mean 0 and
    variance 1 and move with momentum 0.1, so before about 100 steps (0.9¹⁰⁰ ≈ 3·10⁻⁵)
    its eval-mode sigmoid inputs still reflect those initial values, not the network.
    Used in chapters ``03_batchnorm_experiments`` and ``04_internal_covariate_shift``.
    """
    if 50 not in np.asarray(q):
        raise ValueError(f"median_drift needs the 50th percentile among the recorded q; got q={list(q)}.")
    median = int(np.nonzero(np.asarray(q) == 50)[0][0])
    later = np.asarray(probe_steps) >= since
    track = percentiles[later, :, median]
    return float(np.mean(track.max(axis=0) - track.min(axis=0)))


def width_change(percentiles: np.ndarray, probe_steps: np.ndarray, q: np.ndarray, since: int = 100) -> float:
    """How much the width of a sigmoid input's distribution changes during training.

    The width is the distance between the highest and the lowest recorded percentile
    (85th − 15th by default); for each unit, the ratio of its largest to its smallest
    width over the probe steps from ``since`` on (1 means constant); then the mean over
    units. ``since`` as in :func:`median_drift`.
    Used in chapters ``03_batchnorm_experiments`` and ``04_internal_covariate_shift``.
    """
    q = np.asarray(q)
    later = np.asarray(probe_steps) >= since
    width = percentiles[later, :, int(np.argmax(q))] - percentiles[later, :, int(np.argmin(q))]
    return float(np.mean(width.max(axis=0) / width.min(axis=0)))


@dataclass(frozen=True)
class Claim:
    """What a claim function measured, the threshold it compared that with, and whether the claim holds.

    ``measured`` and ``threshold`` are numbers, or tuples of numbers in the same order for a
    claim with several parts. The notebook asserts ``holds`` and glues ``measured`` and
    ``threshold``, so the page shows exactly the numbers the check compared, and a threshold
    is written once, as the default of the claim function. A claim is truthy when it holds,
    so ``assert claim(record)`` and ``assert not claim(record)`` read as they always did.
    Used by the claims of chapter ``03_batchnorm_experiments``.
    """

    holds: bool
    measured: float | tuple[float, ...]
    threshold: float | tuple[float, ...]

    def __bool__(self) -> bool:
        return bool(self.holds)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, with x / 0 = inf for x > 0 (a claim's "at least k times" with nothing below)."""
    if denominator == 0:
        return math.inf if numerator > 0 else math.nan
    return numerator / denominator


def as_float64(ds: data.Dataset) -> data.Dataset:
    """``ds`` with its features in float64 (targets unchanged).

    Used in chapters ``06_weightnorm`` and ``09_weight_decay``, whose identities hold to float64
    precision (about 1e-16) and are checked to 1e-10 or tighter.
    """
    return dataclasses.replace(ds, x_train=ds.x_train.to(torch.float64), x_test=ds.x_test.to(torch.float64))


# ----------------------------------------------------------------------------
# The invariance table (Ba, Kiros & Hinton 2016, Table 1): chapters 07_layernorm and 11_transformers
#
# Each normalizer is one layer acting on a batch X of shape (N, d_in):
#   BN: y = BatchNorm1d(W x), training mode (statistics of this batch)
#   LN: y = LayerNorm(W x)
#   WN: y = g ⊙ (V x) / ‖v_i‖ + b   (normlab's WeightNormLinear; "the weights" are V)
# with no bias inside W x (the normalizer's β, or WN's b, is the bias), and γ, β (g, b) drawn
# at random so that the affine part is not the identity. A transformation changes the weights
# or the data; the cell is max |y' − y| / max |y| over the whole batch.

NORMALIZERS = ("batch", "weight", "layer")

#: The columns of Ba et al.'s Table 1, in their order.
PAPER_COLUMNS = (
    "weight matrix re-scaling",
    "weight matrix re-centering",
    "weight vector re-scaling",
    "dataset re-scaling",
    "dataset re-centering",
    "single training case re-scaling",
)

#: Ba, Kiros & Hinton (2016), Table 1: True where the paper says "Invariant", False for "No".
BA_ET_AL_TABLE1: dict[str, dict[str, bool]] = {
    "batch": dict(zip(PAPER_COLUMNS, (True, False, True, True, True, False))),
    "weight": dict(zip(PAPER_COLUMNS, (True, False, True, False, False, False))),
    "layer": dict(zip(PAPER_COLUMNS, (True, True, False, True, False, True))),
}

# A transformation maps (W, X, rng) to (W', X'). W has shape (d_out, d_in), X (N, d_in).
Transformation = Callable[[Tensor, Tensor, np.random.Generator], tuple[Tensor, Tensor]]


def _float64_tensor(values: np.ndarray) -> Tensor:
    """``values`` as a float64 torch tensor (the transformations draw with NumPy, the layers run in torch)."""
    return torch.as_tensor(values, dtype=torch.float64)


def _rescale_matrix(w, x, rng):
    """W' = δ W, one factor δ > 0 for the whole matrix."""
    return rng.uniform(2.0, 5.0) * w, x


def _recenter_matrix(w, x, rng):
    """W' = W + 1 γᵀ: every row (every unit's incoming weights) shifted by the same vector γ."""
    return w + _float64_tensor(rng.standard_normal((1, w.shape[1]))), x


def _recenter_rows_differently(w, x, rng):
    """W' = W + Γ: each row shifted by its own vector (not a re-centering of the matrix)."""
    return w + _float64_tensor(rng.standard_normal(w.shape)), x


def _rescale_vectors(w, x, rng):
    """w_i' = δ_i w_i: each unit's incoming weight vector scaled by its own δ_i > 0."""
    return w * _float64_tensor(rng.uniform(0.2, 5.0, (w.shape[0], 1))), x


def _rescale_matrix_negative(w, x, rng):
    """W' = −δ W: a re-scaling by a negative factor."""
    return -rng.uniform(2.0, 5.0) * w, x


def _rescale_matrix_tiny(w, x, rng):
    """W' = 10⁻³ W: a re-scaling that brings the summed inputs' variance near ε = 10⁻⁵."""
    return 1e-3 * w, x


def _rescale_data(w, x, rng):
    """X' = δ X: every example scaled by the same δ > 0."""
    return w, rng.uniform(2.0, 5.0) * x


def _recenter_data(w, x, rng):
    """X' = X + 1 γᵀ: the same vector γ added to every example."""
    return w, x + _float64_tensor(rng.standard_normal((1, x.shape[1])))


def _rescale_one_case(w, x, rng):
    """x_0' = δ x_0: one training example scaled, the others unchanged."""
    x = x.clone()
    x[0] *= rng.uniform(2.0, 5.0)
    return w, x


#: Every transformation :func:`relative_change` knows: the paper's six, then three caveats.
TRANSFORMATIONS: dict[str, Transformation] = {
    "weight matrix re-scaling": _rescale_matrix,
    "weight matrix re-centering": _recenter_matrix,
    "weight vector re-scaling": _rescale_vectors,
    "dataset re-scaling": _rescale_data,
    "dataset re-centering": _recenter_data,
    "single training case re-scaling": _rescale_one_case,
    "rows shifted by different vectors": _recenter_rows_differently,
    "weight matrix re-scaling by a negative factor": _rescale_matrix_negative,
    "weight matrix re-scaling by 1e-3": _rescale_matrix_tiny,
}


def _normalized_layer(norm: str, d_in: int, d_out: int, eps: float,
                      rng: np.random.Generator) -> tuple[Callable[[Tensor, Tensor], Tensor], Tensor]:
    """A function (W, X) ↦ y for ``norm`` with fixed random affine parameters, and a random W."""
    w = _float64_tensor(rng.standard_normal((d_out, d_in)))
    scale = _float64_tensor(rng.uniform(0.5, 2.0, d_out))
    shift = _float64_tensor(rng.standard_normal(d_out))
    if norm in ("batch", "layer"):
        layer = BatchNorm1d(d_out, eps=eps, dtype=torch.float64) if norm == "batch" else LayerNorm(d_out, eps=eps, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(scale)
            layer.bias.copy_(shift)
        layer.train()  # BN: statistics of the batch at hand

        def apply(weights: Tensor, x: Tensor) -> Tensor:
            return layer(x @ weights.T)
        return apply, w
    if norm == "weight":
        linear = WeightNormLinear(d_in, d_out, dtype=torch.float64)
        with torch.no_grad():
            linear.g.copy_(scale)     # g
            linear.bias.copy_(shift)  # b

        def apply(weights: Tensor, x: Tensor) -> Tensor:
            with torch.no_grad():
                linear.v.copy_(weights)  # v, the direction
            return linear(x)
        return apply, w
    raise ValueError(f"norm must be one of {list(NORMALIZERS)}; got {norm!r}.")


def relative_change(norm: str, transformation: str, seed: int = 0, n: int = 16, d_in: int = 8,
                    d_out: int = 6, eps: float = 0.0) -> float:
    """max |y' − y| / max |y| for one normalizer under one transformation of weights or data.

    y is the layer's output on a random batch X (N = ``n`` examples, ``d_in`` features, entries
    N(1, 2²) so the data are not centred) with random weights W (``d_out`` × ``d_in``); y' is
    the output after ``TRANSFORMATIONS[transformation]``. BN is in training mode; ``eps=0`` (the
    default) makes the invariances exact up to float64 rounding, so an invariant cell is
    about 1e-15 and a non-invariant one is of order 0.1–1.
    Used in chapter ``07_layernorm``.
    """
    if transformation not in TRANSFORMATIONS:
        raise ValueError(f"Unknown transformation {transformation!r}; choose one of {list(TRANSFORMATIONS)}.")
    rng = np.random.default_rng(seed)
    apply, w = _normalized_layer(norm, d_in, d_out, eps, rng)
    x = _float64_tensor(1.0 + 2.0 * rng.standard_normal((n, d_in)))
    w2, x2 = TRANSFORMATIONS[transformation](w, x, rng)
    with torch.no_grad():
        y, y2 = apply(w, x), apply(w2, x2)
    return float((y2 - y).abs().max() / y.abs().max())
