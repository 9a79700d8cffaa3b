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
- :class:`Claim`: what a claim function returns: whether it holds, what it measured and the
  threshold it compared that with.

The chapter modules re-export what they use, so ``experiments.batchnorm.sigmoid_mlp`` and
``experiments.batchnorm.HIDDEN`` still work.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from normlab import data, models
from normlab.layers import BatchNorm1d

__all__ = ["Claim", "HIDDEN", "NORMS", "as_float64", "median_drift", "ratio", "sigmoid_mlp", "steps_to_accuracy",
           "width_change"]

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
