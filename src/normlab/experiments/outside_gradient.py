"""Experiments of chapter ``04_internal_covariate_shift``: normalizing outside the gradient.

Ioffe & Szegedy (2015, section 2) explain why BN backpropagates through its batch
statistics. If a layer's inputs are centred by a mean that gradient descent treats as a
constant, the gradient step on the bias ``b`` before the centring is undone by the next
centring: ``u + (b + Δb) − E[u + (b + Δb)] = u + b − E[u + b]``. The output and the loss do
not change, nothing pulls ``b`` back, and ``b`` keeps moving; scaling by a constant σ makes
it worse. They report that their model blew up when the statistics were computed outside the
gradient step.

- :class:`DetachedBatchNorm1d`: BN whose batch mean and variance are detached from the
  graph in training mode (treated as constants by backprop); eval mode is BN's.
- :func:`bias_step_check`: the identity above on the chapter's network: one step on the
  pre-BN biases along the detached gradient leaves the training-mode output unchanged, while
  ordinary BN's gradient for those biases is zero.
- :func:`outside_gradient_experiment`: the sigmoid MLP of chapter ``03_batchnorm_experiments``
  trained with ordinary BN and with :class:`DetachedBatchNorm1d`, from the same weights and
  minibatches, recording test accuracy, the minibatch loss, and the size of the pre-BN
  biases and weights. Claims: :func:`detached_biases_drift`, :func:`detached_weights_grow`,
  :func:`detached_statistics_train_worse`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from normlab import data, models, train
from normlab.experiments._common import HIDDEN, Claim, ratio
from normlab.layers import BatchNorm1d

__all__ = [
    "NORMS",
    "DetachedBatchNorm1d",
    "OutsideGradientRecord",
    "bias_step_check",
    "detached_biases_drift",
    "detached_statistics_train_worse",
    "detached_weights_grow",
    "outside_gradient_experiment",
]

#: The two networks: ordinary BN, and BN with its batch statistics outside the gradient.
NORMS = ("batch", "detached")


class DetachedBatchNorm1d(BatchNorm1d):
    r"""Batch normalization whose batch statistics are constants to backprop.

    Training mode: ``y = (x − μ) / √(σ² + ε) · γ + β`` with the batch mean μ and biased
    variance σ² *detached*, so the gradient reaching ``x`` is ``γ/√(σ² + ε)`` times the
    gradient reaching ``y``, without the projection off **1** and x̂ that the full BN backward
    applies. Running estimates are updated as by :class:`normlab.layers.BatchNorm1d`; eval
    mode is BN's. For 2D input ``(N, C)``. Chapter ``04_internal_covariate_shift``
    (Ioffe & Szegedy's section 2 argument).
    """

    def forward(self, input: Tensor) -> Tensor:
        if not self.training:
            return super().forward(input)
        if input.dim() != 2:
            raise ValueError(f"DetachedBatchNorm1d expects 2D input (N, C); got shape {tuple(input.shape)}.")
        self._check_num_channels(input)
        self._check_batch_size(input)
        mean = input.mean(0).detach()                                   # a constant to backprop
        var = input.var(0, unbiased=False).detach()                     # likewise
        output = (input - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            output = output * self.weight
        if self.bias is not None:
            output = output + self.bias
        if self.track_running_stats:
            self._update_running_stats(input, mean, var)
        return output


def _network(norm: str, ds: data.Dataset, seed: int) -> nn.Sequential:
    """The chapter's sigmoid MLP (3 × 100) with ordinary or detached BN; same seeded Linear weights."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {list(NORMS)}; got {norm!r}.")
    factory = BatchNorm1d if norm == "batch" else DetachedBatchNorm1d
    return models.mlp(ds.num_features, HIDDEN, ds.num_classes, activation="sigmoid", norm=factory, seed=seed)


def _pre_bn_biases(net: nn.Sequential) -> list[Tensor]:
    return [getattr(net, f"linear{i}").bias for i in range(len(HIDDEN))]


def bias_step_check(seed: int = 0, lr: float = 1.0, batch_size: int = 60) -> Claim:
    """Ioffe & Szegedy's identity ``u + (b + Δb) − E[u + (b + Δb)] = u + b − E[u + b]``, measured.

    On a batch of the digits, the detached-BN network takes one step of size ``lr`` on its
    pre-BN biases only, along their (detached) gradient. Measured: the largest change of the
    training-mode output (logits, on the same batch), the norm of the step, and the norm of
    ordinary BN's gradient for the same biases (zero: BN's backward removes the mean).
    Holds when the output moves by less than 1e-5, the step is larger than 1e-3, and BN's
    gradient is below 1e-5. Chapter ``04_internal_covariate_shift``.
    """
    ds = data.digits(seed=seed)
    x, y = ds.x_train[:batch_size], ds.y_train[:batch_size]
    measured = {}
    for norm in NORMS:
        net = _network(norm, ds, seed)
        before = net(x)
        nn.functional.cross_entropy(before, y).backward()
        biases = _pre_bn_biases(net)
        measured[norm] = torch.cat([b.grad for b in biases]).norm().item()
        if norm == "detached":
            with torch.no_grad():
                for b in biases:
                    b -= lr * b.grad
                output_change = (net(x) - before).abs().max().item()
    step = lr * measured["detached"]
    limits = (1e-5, 1e-3, 1e-5)
    holds = output_change < limits[0] and step > limits[1] and measured["batch"] < limits[2]
    return Claim(holds, (output_change, step, measured["batch"]), limits)


@dataclass
class OutsideGradientRecord:
    """Ordinary BN and detached BN on the sigmoid MLP, side by side (:func:`outside_gradient_experiment`).

    ``accuracy[norm][j]``: test accuracy (eval mode) after ``eval_steps[j]`` steps.
    ``loss[norm][t]``: minibatch loss of step ``t + 1`` (training mode, before its update).
    ``bias[norm][k]`` and ``weight[norm][k]``: mean |b| over the pre-BN biases and the mean
    Frobenius norm of the pre-BN weight matrices of the three hidden layers, after
    ``probe_steps[k]`` steps (step 0: the shared initial values).
    """

    eval_steps: np.ndarray
    accuracy: dict[str, np.ndarray]
    loss: dict[str, np.ndarray]
    probe_steps: np.ndarray
    bias: dict[str, np.ndarray]
    weight: dict[str, np.ndarray]
    lr: float


class _SizeProbe:
    """A :func:`normlab.train.train` hook: mean |b| and mean ‖W‖ of the pre-BN layers every ``every`` steps."""

    def __init__(self, net: nn.Sequential, every: int) -> None:
        self.layers = [getattr(net, f"linear{i}") for i in range(len(HIDDEN))]
        self.every, self.steps, self.bias, self.weight = every, [], [], []
        self(0, net, float("nan"))

    def __call__(self, step: int, model: nn.Module, loss: float) -> None:
        if step % self.every:
            return
        with torch.no_grad():
            self.steps.append(step)
            self.bias.append(float(np.mean([layer.bias.abs().mean().item() for layer in self.layers])))
            self.weight.append(float(np.mean([layer.weight.norm().item() for layer in self.layers])))


def outside_gradient_experiment(seed: int = 0, steps: int = 500, lr: float = 1.0, batch_size: int = 60,
                                eval_every: int = 25, probe_every: int = 10,
                                progress: bool = False) -> OutsideGradientRecord:
    """The chapter's sigmoid MLP on the digits, with ordinary BN and with :class:`DetachedBatchNorm1d`.

    Both networks start from the same seeded weights and see the same minibatches (batch 60,
    SGD at ``lr``, as in the noisy-BN experiment of chapter ``04_internal_covariate_shift``).
    """
    ds = data.digits(seed=seed)
    accuracy, loss, bias, weight = {}, {}, {}, {}
    eval_steps = probe_steps = None
    for norm in NORMS:
        net = _network(norm, ds, seed)
        probe = _SizeProbe(net, probe_every)
        history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=eval_every,
                              hooks=[probe], progress=progress, device="cpu", desc=f"statistics outside, {norm}")
        accuracy[norm], loss[norm] = history.test_accuracy, history.loss
        bias[norm], weight[norm] = np.asarray(probe.bias), np.asarray(probe.weight)
        eval_steps, probe_steps = history.eval_steps, np.asarray(probe.steps)
    return OutsideGradientRecord(eval_steps=np.asarray(eval_steps), accuracy=accuracy, loss=loss,
                                 probe_steps=probe_steps, bias=bias, weight=weight, lr=lr)


def detached_biases_drift(record: OutsideGradientRecord, factor: float = 5.0, still: float = 1.001) -> Claim:
    """The pre-BN biases, which cannot change the output, drift when the statistics are detached.

    Measured: mean |b| at the end over its initial value, with detached BN and with ordinary
    BN. Holds when the first is at least ``factor`` and the second at most ``still`` (ordinary
    BN's gradient for these biases is zero, so they stay where they started).
    Chapter ``04_internal_covariate_shift``.
    """
    grown = tuple(ratio(record.bias[norm][-1], record.bias[norm][0]) for norm in ("detached", "batch"))
    return Claim(grown[0] >= factor and grown[1] <= still, grown, (factor, still))


def detached_statistics_train_worse(record: OutsideGradientRecord, points: float = 0.3) -> Claim:
    """Detached BN ends with a test accuracy at least ``points`` (absolute) below ordinary BN's.

    Measured: final test accuracy of ordinary BN minus that of detached BN.
    Chapter ``04_internal_covariate_shift``.
    """
    gap = float(record.accuracy["batch"][-1] - record.accuracy["detached"][-1])
    return Claim(gap >= points, gap, points)


def detached_weights_grow(record: OutsideGradientRecord, factor: float = 3.0, ordinary: float = 2.0) -> Claim:
    """The pre-BN weight matrices grow several times over when the statistics are detached.

    BN's output does not depend on the scale of the weights before it, and its true gradient
    is orthogonal to them, so they grow only slowly (chapter ``09_weight_decay``); the detached
    gradient has a radial part. Measured: the mean ‖W‖ at the end over its initial value, with
    detached BN and with ordinary BN. Holds when the first is at least ``factor`` and the
    second at most ``ordinary``. Chapter ``04_internal_covariate_shift``.
    """
    grown = tuple(ratio(record.weight[norm][-1], record.weight[norm][0]) for norm in ("detached", "batch"))
    return Claim(grown[0] >= factor and grown[1] <= ordinary, grown, (factor, ordinary))
