"""Experiments of chapter ``03_batchnorm_experiments``: Ioffe & Szegedy (2015) at CPU scale.

Every experiment trains the same network, the paper's §4.1 MNIST model shrunk to the
data: three fully connected hidden layers of 100 sigmoid units and a linear softmax
output, with or without :class:`normlab.layers.BatchNorm1d` between each hidden Linear
and its sigmoid, by plain minibatch SGD (no momentum, no weight decay).

Data: scikit-learn's 8x8 digits (:func:`normlab.data.digits`, standardized, 1437
training and 360 test images) rather than MNIST-1D. Both nets converge on digits within
2000 steps, so a figure shows the whole of both accuracy curves as the paper's Figure
1(a) does; on MNIST-1D an MLP needs tens of thousands of steps to approach its ceiling
(after 2000 steps at lr 1, seed 0: 34% test accuracy without BN, 55% with BN), so at a
CPU budget both curves would stop mid-rise.

- :func:`sigmoid_mlp_with_and_without_bn`: test accuracy against step and the 15th, 50th
  and 85th percentiles of sigmoid inputs of the last hidden layer (paper, Figure 1).
  Claims: :func:`bn_reaches_accuracy_faster`, :func:`bn_steadies_sigmoid_inputs`,
  :func:`bn_keeps_sigmoid_input_width`.
- :func:`learning_rate_sweep`: which learning rates train, with BN and without (the
  CPU analogue of BN-x5 and BN-x30). Claim: :func:`bn_widens_learning_rate_range`.
- :func:`batch_size_sensitivity`: eval-mode test accuracy against batch size, with BN
  and without. Claims: :func:`bn_degrades_at_small_batch`,
  :func:`bn_small_batch_loss_survives_population_stats`.

Each claim is a function of the returned record(s) that returns a :class:`Claim` (holds,
measured, threshold), so the chapter's check cells and the tests assert exactly the same
thing and the chapter glues the number each check compared, with its threshold.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from normlab import data, models, train
from normlab.experiments._common import (  # re-exported: the chapter's notebook and tests use them from here
    HIDDEN,
    NORMS,
    Claim,
    median_drift,
    ratio,
    sigmoid_mlp,
    steps_to_accuracy,
    width_change,
)
from normlab.layers import BatchNorm1d
from normlab.probes import ActivationPercentiles, in_mode

__all__ = [
    "BatchSizeRecord",
    "LearningRateSweepRecord",
    "SigmoidMLPRecord",
    "batch_size_sensitivity",
    "bn_degrades_at_small_batch",
    "bn_keeps_sigmoid_input_width",
    "bn_reaches_accuracy_faster",
    "bn_small_batch_loss_survives_population_stats",
    "bn_steadies_sigmoid_inputs",
    "bn_widens_learning_rate_range",
    "learning_rate_sweep",
    "median_drift",
    "sigmoid_mlp",
    "sigmoid_mlp_with_and_without_bn",
    "steps_to_accuracy",
    "trainable_span",
    "width_change",
]


def _sigmoid_input_probe(net: nn.Sequential, probe: torch.Tensor, units: Sequence[int], every: int
                         ) -> ActivationPercentiles:
    """Percentiles of the input of the last hidden sigmoid: the BN output with BN, the Linear output without."""
    last = len(models.hidden_linear_layers(net)) - 1
    return ActivationPercentiles(getattr(net, f"act{last}"), probe, units=units, where="input", every=every)


# ----------------------------------------------------------------------------
# 1. Figure 1 of the paper: faster training, steadier sigmoid inputs


@dataclass
class SigmoidMLPRecord:
    """Two identical sigmoid MLPs trained side by side, one with BN and one without.

    ``accuracy_*[j]`` is the test accuracy after ``eval_steps[j]`` steps (eval mode:
    BN uses its running estimates). ``percentiles_*[t, i, k]`` is the ``q[k]``-th
    percentile over the test images of the input of sigmoid unit ``units[i]`` of the
    last hidden layer after ``probe_steps[t]`` steps, also in eval mode.
    """

    eval_steps: np.ndarray
    accuracy_without_bn: np.ndarray
    accuracy_with_bn: np.ndarray
    probe_steps: np.ndarray
    percentiles_without_bn: np.ndarray  # (time, unit, q)
    percentiles_with_bn: np.ndarray     # (time, unit, q)
    q: np.ndarray
    units: np.ndarray
    lr: float
    batch_size: int
    history_without_bn: train.History
    history_with_bn: train.History


def sigmoid_mlp_with_and_without_bn(seed: int = 0, steps: int = 2000, lr: float = 1.0, batch_size: int = 60,
                                    units: Sequence[int] = (0, 1, 2), q: Sequence[float] = (15, 50, 85),
                                    eval_every: int = 20, probe_every: int = 20, progress: bool = False,
                                    device: str | None = "cpu") -> SigmoidMLPRecord:
    """Ioffe & Szegedy §4.1 at CPU scale: the sigmoid MLP on digits, with and without BN.

    Both networks start from the same seeded weights and see the same minibatches
    (batch 60, as the paper) under plain SGD at the same ``lr``. ``lr=1`` is not tuned
    for either network: it is the smallest rate of :func:`learning_rate_sweep`'s grid
    at which the network without BN leaves its initial plateau within 500 steps.
    Every ``probe_every`` steps (and at step 0) the 15th, 50th and 85th percentiles of
    the input of a few sigmoids of the last hidden layer are recorded over the test
    images: the BN output with BN, the Linear output without (the paper's Figure 1(b, c)).
    ``seed`` fixes the train/test split, the initial weights and the minibatch order.
    Used in chapter ``03_batchnorm_experiments``.
    """
    ds = data.digits(seed=seed)
    results = {}
    for norm in NORMS:
        net = sigmoid_mlp(norm, ds.num_features, ds.num_classes, seed)
        probe = _sigmoid_input_probe(net, ds.x_test, units, probe_every)
        probe.record(0, net)
        history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                              eval_every=eval_every, hooks=[probe], progress=progress, device=device,
                              desc=f"sigmoid MLP, norm={norm}")
        results[norm] = (history, probe)
    (h0, p0), (h1, p1) = results["none"], results["batch"]
    return SigmoidMLPRecord(
        eval_steps=h1.eval_steps, accuracy_without_bn=h0.test_accuracy, accuracy_with_bn=h1.test_accuracy,
        probe_steps=p1.steps, percentiles_without_bn=p0.percentiles, percentiles_with_bn=p1.percentiles,
        q=np.asarray(q, dtype=np.float64), units=np.asarray(units), lr=lr, batch_size=batch_size,
        history_without_bn=h0, history_with_bn=h1)


def bn_reaches_accuracy_faster(record: SigmoidMLPRecord, target: float = 0.9, factor: float = 5.0) -> Claim:
    """Claim: with BN the test accuracy reaches ``target`` at least ``factor`` times sooner.

    Holds if the BN network reaches ``target`` within the run and the network without BN
    needs at least ``factor`` times as many steps (or never gets there). Measured: steps
    without BN / steps with BN (inf if only BN gets there); threshold: ``factor``.
    """
    with_bn = steps_to_accuracy(record.eval_steps, record.accuracy_with_bn, target)
    without = steps_to_accuracy(record.eval_steps, record.accuracy_without_bn, target)
    return Claim(holds=bool(np.isfinite(with_bn) and without >= factor * with_bn), measured=ratio(without, with_bn),
                 threshold=factor)


def bn_steadies_sigmoid_inputs(record: SigmoidMLPRecord, factor: float = 2.0, since: int = 100) -> Claim:
    """Claim: after the first ``since`` steps, the median of the sigmoid inputs wanders
    at least ``factor`` times less with BN than without (:func:`median_drift`).
    Measured: drift without BN / drift with BN; threshold: ``factor``."""
    without = median_drift(record.percentiles_without_bn, record.probe_steps, record.q, since)
    with_bn = median_drift(record.percentiles_with_bn, record.probe_steps, record.q, since)
    return Claim(holds=bool(without >= factor * with_bn), measured=ratio(without, with_bn), threshold=factor)


def bn_keeps_sigmoid_input_width(record: SigmoidMLPRecord, at_most: float = 2.0, without_at_least: float = 20.0,
                                 since: int = 100) -> Claim:
    """Claim: after the first ``since`` steps, the width (85th − 15th percentile) of the
    sigmoid inputs changes by less than ``at_most`` times with BN, and by more than
    ``without_at_least`` times without BN (:func:`width_change`).

    Without BN the last hidden layer starts almost constant across examples (its
    Linear sees sigmoid outputs all near 0.5) and its sigmoid inputs spread out as the
    weights grow; with BN their width is set by γ from the first step.
    Measured: (change with BN, change without BN); threshold: (``at_most``, ``without_at_least``).
    """
    with_bn = width_change(record.percentiles_with_bn, record.probe_steps, record.q, since)
    without = width_change(record.percentiles_without_bn, record.probe_steps, record.q, since)
    return Claim(holds=bool(with_bn < at_most and without > without_at_least), measured=(with_bn, without),
                 threshold=(at_most, without_at_least))


# ----------------------------------------------------------------------------
# 2. Learning rates that train


@dataclass
class LearningRateSweepRecord:
    """Final outcome of training the sigmoid MLP at each learning rate of a grid.

    ``trains[i]`` is True when the run at ``lrs[i]`` did not diverge and ended with test
    accuracy at least ``threshold``. ``diverged[i]`` is True when the training loss
    blew up: non-finite, or its mean over the last tenth of the run
    (``final_train_loss``) more than ``DIVERGENCE_FACTOR`` = 1.5 times its value at the
    first step (``initial_loss``, about ln 10 ≈ 2.3 for ten balanced classes). A run
    that neither trains nor diverges *stalled*: its loss stayed near ln 10, on the
    plateau of the sigmoid network (stalled runs end at 0.7–1.05 times their first
    loss, diverged ones at 2.4 times or more, on seeds 0–11).
    ``largest_trainable_lr`` and ``smallest_trainable_lr`` are NaN when no rate trains.
    """

    norm: str
    lrs: np.ndarray
    final_test_accuracy: np.ndarray
    final_train_loss: np.ndarray
    initial_loss: np.ndarray
    diverged: np.ndarray
    trains: np.ndarray
    threshold: float
    steps: int
    largest_trainable_lr: float
    smallest_trainable_lr: float

    @property
    def stalled(self) -> np.ndarray:
        """Runs that neither trained nor diverged: the loss stayed on the initial plateau."""
        return ~self.trains & ~self.diverged


DEFAULT_LRS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
#: A run diverged if its final training loss ends this many times above its first.
DIVERGENCE_FACTOR = 1.5


def learning_rate_sweep(norm: str = "batch", lrs: Sequence[float] = DEFAULT_LRS, seed: int = 0, steps: int = 500,
                        batch_size: int = 60, threshold: float = 0.8, progress: bool = False,
                        device: str | None = "cpu") -> LearningRateSweepRecord:
    """Train the sigmoid MLP (``norm="batch"`` or ``"none"``) on digits at each learning rate.

    Every run starts from the same seeded weights and sees the same minibatches for
    ``steps`` steps of plain SGD. A rate *trains* if the run does not diverge (see
    :class:`LearningRateSweepRecord`) and ends with test accuracy ≥ ``threshold``
    (chance is 0.1). "Trains" is within this budget of steps: a rate that is too small
    fails because it has not yet left the initial plateau, not because it never would.
    Used in chapter ``03_batchnorm_experiments`` (the paper's BN-x5 and BN-x30).
    """
    ds = data.digits(seed=seed)
    accuracy, final_loss, first_loss, diverged = [], [], [], []
    for lr in lrs:
        net = sigmoid_mlp(norm, ds.num_features, ds.num_classes, seed)
        history = train.train(net, ds, steps=steps, lr=float(lr), batch_size=batch_size, seed=seed,
                              eval_every=steps, progress=progress, device=device, desc=f"norm={norm}, lr={lr}")
        tail = history.loss[-max(1, history.steps_run // 10):]
        end = float(np.mean(tail))
        accuracy.append(history.final_test_accuracy)
        final_loss.append(end)
        first_loss.append(float(history.loss[0]))
        diverged.append(history.diverged or not np.isfinite(end) or end > DIVERGENCE_FACTOR * history.loss[0])
    lrs_arr = np.asarray(lrs, dtype=np.float64)
    accuracy_arr, diverged_arr = np.asarray(accuracy), np.asarray(diverged, dtype=bool)
    trains = ~diverged_arr & (accuracy_arr >= threshold)
    return LearningRateSweepRecord(
        norm=norm, lrs=lrs_arr, final_test_accuracy=accuracy_arr, final_train_loss=np.asarray(final_loss),
        initial_loss=np.asarray(first_loss), diverged=diverged_arr, trains=trains, threshold=threshold,
        steps=steps,
        largest_trainable_lr=float(lrs_arr[trains].max()) if trains.any() else float("nan"),
        smallest_trainable_lr=float(lrs_arr[trains].min()) if trains.any() else float("nan"))


def trainable_span(record: LearningRateSweepRecord) -> float:
    """Largest over smallest learning rate that trains (1 for a single rate, 0 if none trains)."""
    if not record.trains.any():
        return 0.0
    return record.largest_trainable_lr / record.smallest_trainable_lr


def bn_widens_learning_rate_range(with_bn: LearningRateSweepRecord, without_bn: LearningRateSweepRecord,
                                  span: float = 300.0, narrow: float = 3.0, larger: float = 3.0) -> Claim:
    """Claim: BN turns a narrow band of learning rates that train into a wide one.

    True when all of these hold on the common grid:

    - with BN every rate of the grid from its smallest to its largest trainable rate
      trains, and that range spans at least ``span`` (largest / smallest);
    - without BN the rates that train (if any) lie within a factor ``narrow``;
    - BN trains at every rate that trains without it, and its largest trainable rate
      is at least ``larger`` times the largest without it.

    Measured: (BN's span, the span without BN (0 if no rate trains), BN's largest trainable
    rate / the largest without BN (inf if none)); threshold: (``span``, ``narrow``, ``larger``).
    """
    if with_bn.norm != "batch" or without_bn.norm != "none":
        raise ValueError(f"Pass the sweep with norm='batch' first and norm='none' second; got "
                         f"{with_bn.norm!r} and {without_bn.norm!r}.")
    if not np.array_equal(with_bn.lrs, without_bn.lrs):
        raise ValueError("The two sweeps must use the same learning rates.")
    measured = (trainable_span(with_bn), trainable_span(without_bn),
                ratio(with_bn.largest_trainable_lr, without_bn.largest_trainable_lr) if without_bn.trains.any()
                else math.inf)
    threshold = (span, narrow, larger)
    if not with_bn.trains.any():
        return Claim(holds=False, measured=measured, threshold=threshold)
    inside = (with_bn.lrs >= with_bn.smallest_trainable_lr) & (with_bn.lrs <= with_bn.largest_trainable_lr)
    bn_wide = bool(with_bn.trains[inside].all()) and trainable_span(with_bn) >= span
    if not without_bn.trains.any():
        return Claim(holds=bn_wide, measured=measured, threshold=threshold)
    return Claim(holds=bool(bn_wide and trainable_span(without_bn) <= narrow
                            and with_bn.trains[without_bn.trains].all()
                            and with_bn.largest_trainable_lr >= larger * without_bn.largest_trainable_lr),
                 measured=measured, threshold=threshold)


# ----------------------------------------------------------------------------
# 3. Batch size


@dataclass
class BatchSizeRecord:
    """Final accuracies of the sigmoid MLP trained at each batch size, with BN and without.

    ``test_accuracy_*`` are in eval mode (BN with its running estimates, as deployed).
    ``test_accuracy_with_bn_population_stats`` re-estimates BN's statistics once over the
    whole training set with the final weights before evaluating: the gap between it and
    ``test_accuracy_with_bn`` is the error of the running averages; what remains is the
    mismatch between normalizing with a tiny batch in training and with population
    statistics at test time. ``train_accuracy_*`` is the training-mode minibatch accuracy
    averaged over the last tenth of each run (BN with the statistics of its own batch).
    ``steps[i]`` and ``lrs[i]`` are the steps taken and the learning rate used at
    ``batch_sizes[i]``.
    """

    batch_sizes: np.ndarray
    steps: np.ndarray
    lrs: np.ndarray
    test_accuracy_without_bn: np.ndarray
    test_accuracy_with_bn: np.ndarray
    test_accuracy_with_bn_population_stats: np.ndarray
    train_accuracy_without_bn: np.ndarray
    train_accuracy_with_bn: np.ndarray
    protocol: str


def batch_size_sensitivity(batch_sizes: Sequence[int] = (2, 32), seed: int = 0, examples: int | None = 24_000,
                           lr: float = 1.0, steps: int | None = None, progress: bool = False,
                           device: str | None = "cpu") -> BatchSizeRecord:
    """Train the sigmoid MLP with BN and without at each batch size; evaluate in eval mode.

    Same seeded initial weights and plain SGD at every batch size, under one of two
    protocols (give ``examples`` or ``steps``, not both):

    - ``examples=E`` (default, "equal examples"): every run sees E examples, ``E // b``
      steps at batch b, with the linear scaling rule lr_b = ``lr`` · b / max(batch_sizes)
      (Goyal et al., 2017). Then, without BN, every batch size follows roughly the same
      path (same lr · steps, gradient noise scaled down with the step), so the network
      without BN is the control for everything except BN's batch statistics. With the
      defaults the batch-32 runs take 750 steps at lr 1 (the learning rate of
      :func:`sigmoid_mlp_with_and_without_bn`) and the batch-2 runs 12,000 steps at
      lr 1/16. E = 24,000 is about the fewest examples at which the network without BN
      has left its initial plateau at batch 2. The batch-2 runs are nearly all the cost
      (about 10 s), which is why the default compares only batch 2 with batch 32; each
      batch size b added costs E / b more steps per network.
    - ``steps=S`` ("equal steps"): S steps at ``lr`` for every batch size; cheap, but a
      smaller batch then also sees fewer examples and takes noisier steps at the same
      learning rate, which hurts both networks and confounds the comparison.

    Test accuracy is in eval mode (BN with its running estimates).
    Used in chapter ``03_batchnorm_experiments``.
    """
    if (examples is None) == (steps is None):
        raise ValueError(f"Give exactly one of examples (equal examples per batch size) or steps (equal steps); "
                         f"got examples={examples}, steps={steps}. Pass examples=None to use steps.")
    ds = data.digits(seed=seed)
    sizes = [int(b) for b in batch_sizes]
    if steps is not None:
        protocol, run_steps, run_lrs = "equal steps", [int(steps)] * len(sizes), [lr] * len(sizes)
    else:
        protocol = "equal examples"
        run_steps = [max(1, examples // b) for b in sizes]
        run_lrs = [lr * b / max(sizes) for b in sizes]
    out: dict[str, list[list[float]]] = {norm: [[], []] for norm in NORMS}
    population = []
    for batch_size, run_step, run_lr in zip(sizes, run_steps, run_lrs):
        for norm in NORMS:
            net = sigmoid_mlp(norm, ds.num_features, ds.num_classes, seed)
            history = train.train(net, ds, steps=run_step, lr=run_lr, batch_size=batch_size, seed=seed,
                                  eval_every=run_step, progress=progress, device=device,
                                  desc=f"norm={norm}, batch={batch_size}")
            out[norm][0].append(history.final_test_accuracy)
            out[norm][1].append(float(np.mean(history.accuracy[-max(1, history.steps_run // 10):])))
            if norm == "batch":
                population.append(_accuracy_with_population_stats(net, ds))
    return BatchSizeRecord(
        batch_sizes=np.asarray(sizes, dtype=np.int64), steps=np.asarray(run_steps, dtype=np.int64),
        lrs=np.asarray(run_lrs, dtype=np.float64),
        test_accuracy_without_bn=np.asarray(out["none"][0]), test_accuracy_with_bn=np.asarray(out["batch"][0]),
        test_accuracy_with_bn_population_stats=np.asarray(population),
        train_accuracy_without_bn=np.asarray(out["none"][1]), train_accuracy_with_bn=np.asarray(out["batch"][1]),
        protocol=protocol)


def _accuracy_with_population_stats(net: nn.Module, ds: data.Dataset) -> float:
    """Test accuracy after replacing every BN layer's running estimates by the mean and
    unbiased variance of its input over the whole training set (on a copy of ``net``)."""
    net = copy.deepcopy(net)
    device = next(net.parameters()).device
    layers = [m for m in net.modules() if isinstance(m, (BatchNorm1d, nn.BatchNorm1d))]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    with in_mode(net, training=True), torch.no_grad():
        net(ds.x_train.to(device))  # one full-batch pass; each layer sees the previous layer's full-batch output
    return train.evaluate(net, ds.to(device))[1]


def _smallest_and_largest(record: BatchSizeRecord) -> tuple[int, int]:
    if record.protocol != "equal examples":
        raise ValueError("The batch-size claims compare runs that saw the same examples; run "
                         f"batch_size_sensitivity with examples=..., not steps=... (got protocol {record.protocol!r}).")
    return int(np.argmin(record.batch_sizes)), int(np.argmax(record.batch_sizes))


def bn_degrades_at_small_batch(record: BatchSizeRecord, bn_drop: float = 0.15, control_drop: float = 0.05) -> Claim:
    """Claim: with BN the test accuracy at the smallest batch is at least ``bn_drop``
    below that at the largest, while without BN it is at most ``control_drop`` below
    (equal-examples protocol, eval mode). Measured: (the drop with BN, the drop without
    BN), each accuracy at the largest batch minus at the smallest; threshold:
    (``bn_drop``, ``control_drop``)."""
    small, large = _smallest_and_largest(record)
    with_bn = float(record.test_accuracy_with_bn[large] - record.test_accuracy_with_bn[small])
    without = float(record.test_accuracy_without_bn[large] - record.test_accuracy_without_bn[small])
    return Claim(holds=bool(with_bn >= bn_drop and without <= control_drop), measured=(with_bn, without),
                 threshold=(bn_drop, control_drop))


def bn_small_batch_loss_survives_population_stats(record: BatchSizeRecord, drop: float = 0.15) -> Claim:
    """Claim: even with its statistics re-estimated over the whole training set, the BN
    network trained at the smallest batch stays at least ``drop`` below the one trained
    at the largest: the loss is not (only) the error of the running averages.
    Measured: that drop; threshold: ``drop``."""
    small, large = _smallest_and_largest(record)
    population = record.test_accuracy_with_bn_population_stats
    measured = float(population[large] - population[small])
    return Claim(holds=bool(measured >= drop), measured=measured, threshold=drop)
