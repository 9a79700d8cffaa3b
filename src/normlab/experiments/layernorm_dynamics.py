"""More experiments of chapter ``07_layernorm``: LayerNorm across the scale of W and across time steps.

- :func:`effective_learning_rate`: a Linear layer followed by LayerNorm or BatchNorm (ε = 0,
  float64) on one digits batch. LN's output is invariant to scaling the whole matrix W, so its
  gradient scales as 1/c and one SGD step from (cW, c²η) is c times the step from (W, η): the
  effective learning rate of W is η/‖W‖²_F. Scaling each row by its own factor breaks LN's
  invariance but not BN's. Claim: :func:`ln_effective_learning_rate_holds`.
- :func:`rnn_batch_statistics`: the batch statistics of the summed inputs of the chapter's tanh
  RNN (:class:`normlab.models.ElmanRNN`, without LN) at every time step, on
  sequences twice as long as the training ones. Claim: :func:`batch_statistics_trend_then_settle`.

Each claim returns a :class:`~normlab.experiments._common.Claim` (holds, measured, threshold).
The RNN and its task come from :mod:`normlab.experiments.layernorm`, the module of the same chapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from normlab import data
from normlab.data import delayed_copy
from normlab.experiments._common import Claim, as_float64
from normlab.models import ElmanRNN

__all__ = ["EffectiveLRRecord", "RNNBatchStatisticsRecord", "batch_statistics_trend_then_settle",
           "effective_learning_rate", "ln_effective_learning_rate_holds", "rnn_batch_statistics"]

NORMS = ("layer", "batch")


# ----------------------------------------------------------------------------
# 1. The effective learning rate of the weights before LN


@dataclass
class EffectiveLRRecord:
    """Scale invariance and one SGD step, for LN and BN after a Linear layer W (no bias), ε = 0, float64.

    Index ``[n]`` follows ``norms`` ("layer", "batch"); index ``[n, k]`` also ``scales``.

    - ``loss_change[n, k]``: |L(c W) − L(W)| / |L(W)|;
    - ``grad_change[n, k]``: max|c ∇L(cW) − ∇L(W)| / max|∇L(W)| (the 1/c scaling);
    - ``step_change[n, k]``: max|W'_c / c − W'| / max|W'|, where W' is one SGD step from (W, η)
      and W'_c one from (cW, c²η);
    - ``row_scaling_change[n]``: max|y(DW) − y(W)| / max|y(W)| for the normalized output y, with
      each row of W scaled by its own factor (diagonal D);
    - ``frobenius_cos[n]``: |⟨W, ∇L⟩_F| / (‖W‖_F ‖∇L‖_F); ``row_cos[n]``: the largest |cos(w_i, ∇_{w_i} L)|.
    """

    norms: tuple[str, ...]
    scales: np.ndarray
    loss_change: np.ndarray
    grad_change: np.ndarray
    step_change: np.ndarray
    row_scaling_change: np.ndarray
    frobenius_cos: np.ndarray
    row_cos: np.ndarray


def _normalized(z: torch.Tensor, norm: str, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """LN over the units of each example, or BN over the batch (training mode), both with ε = 0
    (torch's ``batch_norm`` refuses ε = 0 in training mode, so both are written out)."""
    dim = 1 if norm == "layer" else 0
    mean, var = z.mean(dim, keepdim=True), z.var(dim, unbiased=False, keepdim=True)
    return gamma * (z - mean) / var.sqrt() + beta


def effective_learning_rate(seed: int = 0, scales: Sequence[float] = (0.1, 3.0, 10.0), width: int = 32,
                            batch_size: int = 128, lr: float = 0.1) -> EffectiveLRRecord:
    """The loss L(W) = CE(V ReLU(norm(W x)), y) on one batch of digits, with the LN or BN layer's γ, β and
    the output layer V random and fixed, so only W is trained.

    Derivation (chapter ``07_layernorm``, section "LayerNorm's effective learning rate"): with ε = 0,
    LN(cWx) = LN(Wx) for c > 0, so L(cW) = L(W), hence c ∇L(cW) = ∇L(W) and ⟨W, ∇L(W)⟩_F = 0; a step
    cW − c²η ∇L(cW) = c (W − η ∇L(W)). Used in chapter ``07_layernorm``.
    """
    ds = as_float64(data.digits(seed=seed))
    x, y = ds.x_train[:batch_size], ds.y_train[:batch_size]
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(width, ds.num_features, generator=g, dtype=torch.float64) / ds.num_features**0.5
    gamma = 1 + 0.5 * torch.rand(width, generator=g, dtype=torch.float64)
    beta = 0.3 * torch.randn(width, generator=g, dtype=torch.float64)
    v = torch.randn(ds.num_classes, width, generator=g, dtype=torch.float64) / width**0.5
    rows = torch.exp(torch.randn(width, 1, generator=g, dtype=torch.float64))  # per-row factors, D

    def loss_and_grad(weight: torch.Tensor, norm: str) -> tuple[float, torch.Tensor]:
        weight = weight.clone().requires_grad_()
        loss = F.cross_entropy(torch.relu(_normalized(x @ weight.T, norm, gamma, beta)) @ v.T, y)
        return float(loss.detach()), torch.autograd.grad(loss, weight)[0]

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).abs().max() / b.abs().max())

    shape = (len(NORMS), len(scales))
    loss_change, grad_change, step_change = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    row_change, fro_cos, row_cos = np.zeros(len(NORMS)), np.zeros(len(NORMS)), np.zeros(len(NORMS))
    for n, norm in enumerate(NORMS):
        loss0, grad0 = loss_and_grad(w, norm)
        step0 = w - lr * grad0
        for k, c in enumerate(scales):
            loss_c, grad_c = loss_and_grad(c * w, norm)
            loss_change[n, k] = abs(loss_c - loss0) / abs(loss0)
            grad_change[n, k] = rel(c * grad_c, grad0)
            step_change[n, k] = rel((c * w - c**2 * lr * grad_c) / c, step0)
        out = _normalized(x @ w.T, norm, gamma, beta)
        row_change[n] = rel(_normalized(x @ (rows * w).T, norm, gamma, beta), out)
        fro_cos[n] = float((w * grad0).sum().abs() / (w.norm() * grad0.norm()))
        row_cos[n] = float(((w * grad0).sum(1).abs() / (w.norm(dim=1) * grad0.norm(dim=1))).max())
    return EffectiveLRRecord(norms=NORMS, scales=np.asarray(scales, dtype=np.float64), loss_change=loss_change,
                             grad_change=grad_change, step_change=step_change, row_scaling_change=row_change,
                             frobenius_cos=fro_cos, row_cos=row_cos)


def ln_effective_learning_rate_holds(record: EffectiveLRRecord, tol: float = 1e-10, broken: float = 1e-2) -> Claim:
    """Claim: for LN and BN alike, L(cW) = L(W), c ∇L(cW) = ∇L(W), the step from (cW, c²η) is c times the
    step from (W, η), and ⟨W, ∇L⟩_F = 0, all to ``tol``; scaling each row by its own factor changes LN's
    output by more than ``broken`` and BN's by less than ``tol``; and LN's gradient is not orthogonal to
    each row (largest |cos(w_i, ∇_{w_i} L)| above ``broken``) while BN's is (below ``tol``).

    Measured: (the largest whole-matrix deviation over both norms, LN's change under row scaling, BN's,
    LN's largest row cosine, BN's); threshold: (``tol``, ``broken``, ``tol``, ``broken``, ``tol``).
    Used in chapter ``07_layernorm``.
    """
    layer, batch = record.norms.index("layer"), record.norms.index("batch")
    whole = float(max(record.loss_change.max(), record.grad_change.max(), record.step_change.max(),
                      record.frobenius_cos.max()))
    measured = (whole, float(record.row_scaling_change[layer]), float(record.row_scaling_change[batch]),
                float(record.row_cos[layer]), float(record.row_cos[batch]))
    holds = (whole < tol and measured[1] > broken and measured[2] < tol and measured[3] > broken
             and measured[4] < tol)
    return Claim(holds=holds, measured=measured, threshold=(tol, broken, tol, broken, tol))


# ----------------------------------------------------------------------------
# 2. Batch statistics along a sequence


@dataclass
class RNNBatchStatisticsRecord:
    """Batch statistics of the summed inputs a_t of :class:`ElmanRNN` (no LN) at initialization.

    ``batch_std[i, t]``: at gain ``gains[i]`` and step t + 1, the standard deviation over the batch of
    each hidden unit's a_t, averaged over the units. ``train_length``: the length of the chapter's
    training sequences; the record runs to ``length`` = twice that.
    """

    gains: np.ndarray
    batch_std: np.ndarray
    train_length: int
    length: int

    def stationary(self, i: int) -> float:
        """The mean per-step batch std over the second half of the training length (steps T/2+1 … T)."""
        return float(self.batch_std[i, self.train_length // 2: self.train_length].mean())

    def pooled(self, i: int) -> float:
        """The mean per-step batch std over the training length: the scale of one statistic for all steps
        (close to, not exactly, the std pooled over steps, which also counts the spread of per-step means)."""
        return float(self.batch_std[i, : self.train_length].mean())


def rnn_batch_statistics(gains: Sequence[float] = (1.0, 3.0), seed: int = 0, train_length: int = 50,
                         hidden: int = 32, sequences: int = 512) -> RNNBatchStatisticsRecord:
    """Run the chapter's RNN (without LN, same seeded weights) on ``sequences`` delayed-copy inputs of
    length 2 × ``train_length`` and record the batch std of the summed inputs at every step.

    Used in chapter ``07_layernorm``, section "Why BatchNorm does not fit a recurrent network".
    """
    length = 2 * train_length
    x, _ = delayed_copy(sequences, length, 5, torch.Generator().manual_seed(20_000 + seed))
    stds = []
    for gain in gains:
        net = ElmanRNN(1, hidden, 1, False, recurrent_gain=gain, seed=seed)
        with torch.no_grad():
            _, summed, _ = net(x)
        stds.append(summed.std(dim=0).mean(dim=1).numpy())
    return RNNBatchStatisticsRecord(gains=np.asarray(gains, dtype=np.float64), batch_std=np.asarray(stds),
                                    train_length=train_length, length=length)


def batch_statistics_trend_then_settle(record: RNNBatchStatisticsRecord, gain: float = 3.0,
                                       first_at_most: float = 0.5, beyond_within: float = 0.1) -> Claim:
    """Claim: at ``gain``, the batch std at step 1 is at most ``first_at_most`` of its stationary value
    (a trend along the sequence: one statistic cannot serve every step), and at every step beyond the
    training length it stays within ``beyond_within`` (relative) of the last training step's (so
    Cooijmans et al.'s fallback to the statistics of step T_max works once the statistics settle).

    Measured: (step 1 over stationary, the largest relative deviation beyond T from step T); threshold:
    (``first_at_most``, ``beyond_within``). Used in chapter ``07_layernorm``.
    """
    matches = np.nonzero(np.isclose(record.gains, gain))[0]
    if not matches.size:
        raise ValueError(f"gain {gain} was not run; the record has gains {list(record.gains)}.")
    i, t = int(matches[0]), record.train_length
    first = float(record.batch_std[i, 0] / record.stationary(i))
    beyond = float(np.abs(record.batch_std[i, t:] / record.batch_std[i, t - 1] - 1).max())
    return Claim(holds=first <= first_at_most and beyond <= beyond_within, measured=(first, beyond),
                 threshold=(first_at_most, beyond_within))
