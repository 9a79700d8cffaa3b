"""Experiments of chapter ``07_layernorm``.

- :func:`invariance_table`: Ba, Kiros & Hinton (2016), Table 1, computed: how much the output
  of BatchNorm, WeightNorm and LayerNorm changes under six transformations of the weights or
  the data. Claim: :func:`invariance_matches_paper`. :func:`relative_change` computes one cell,
  also for the caveats (row-specific shifts, negative factors, ε).
- :func:`statistic_masks`: which entries of an (N, C, H, W) input share a statistic with
  entry (0, 0, 0, 0), for each normalizer, found by perturbing that entry (the cube figure of
  Wu & He 2018). Claim: :func:`masks_match_definitions`.
- :func:`batch_size_sensitivity`: test accuracy of the same MLP with BN, GN and LN trained at
  batch sizes 32 down to 2 on the same number of examples. Claim:
  :func:`bn_degrades_where_batch_free_norms_hold`.
- :func:`rnn_hidden_statistics`: a tanh RNN (:class:`normlab.models.ElmanRNN`) with and without LN in the
  recurrence (Ba et al.'s h_t = tanh(g/σ_t ⊙ (a_t − μ_t) + b)) on a delayed-copy task; the
  statistics of the summed inputs over time steps. Claims: :func:`ln_fixes_scale_over_time`,
  :func:`ln_rescues_large_recurrent_gain`, :func:`plain_rnn_wins_at_unit_gain`,
  :func:`ln_insensitive_to_gain`.
- :func:`normalizer_timings` and :func:`comparison_measurements`: the numbers behind the
  chapter's comparison table (speed, train/eval gap, what each normalizer discards).
  Claims: :func:`timings_within`, :func:`comparison_facts_hold`.

Each claim is a function of the returned record(s) that returns a
:class:`~normlab.experiments._common.Claim` (holds, measured, threshold), so the chapter's
check cells and the tests assert exactly the same thing, and the chapter glues what was
measured and the threshold, written once, as the claim's default.

WeightNorm is ``normlab.layers.WeightNormLinear`` (tested against
``torch.nn.utils.parametrizations.weight_norm`` in tests/test_weight_norm_layers.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from normlab import data, models, train
from normlab.data import delayed_copy
from normlab.experiments._common import (
    BA_ET_AL_TABLE1,
    HIDDEN,
    NORMALIZERS,
    PAPER_COLUMNS,
    TRANSFORMATIONS,
    Claim,
    ratio,
    relative_change,
)
from normlab.layers import (
    BatchNorm1d,
    BatchNorm2d,
    GroupNorm,
    InstanceNorm2d,
    LayerNorm,
    RMSNorm,
)
from normlab.models import ElmanRNN

__all__ = [
    "BA_ET_AL_TABLE1",
    "ComparisonRecord",
    "InvarianceRecord",
    "NormBatchSizeRecord",
    "PAPER_COLUMNS",
    "RNNStatisticsRecord",
    "TRANSFORMATIONS",
    "TimingRecord",
    "batch_size_sensitivity",
    "bn_degrades_where_batch_free_norms_hold",
    "comparison_facts_hold",
    "comparison_measurements",
    "invariance_matches_paper",
    "invariance_table",
    "ln_fixes_scale_over_time",
    "ln_insensitive_to_gain",
    "ln_rescues_large_recurrent_gain",
    "masks_match_definitions",
    "normalizer_timings",
    "plain_rnn_wins_at_unit_gain",
    "relative_change",
    "rnn_hidden_statistics",
    "statistic_masks",
    "timings_within",
]

F64 = torch.float64

# ----------------------------------------------------------------------------
# 1. The invariance table (Ba, Kiros & Hinton 2016, Table 1): the transformations and
# relative_change are in experiments/_common.py, since chapter 11 extends the table to RMSNorm.


@dataclass
class InvarianceRecord:
    """``relative_change[i, j]`` for ``norms[i]`` under ``columns[j]``, and the paper's verdicts.

    ``invariant`` is ``relative_change <= tolerance``; ``paper[i, j]`` is True where Ba et al.'s
    Table 1 says "Invariant".
    """

    norms: tuple[str, ...]
    columns: tuple[str, ...]
    relative_change: np.ndarray
    invariant: np.ndarray
    paper: np.ndarray
    tolerance: float
    eps: float


def invariance_table(seed: int = 0, columns: Sequence[str] = PAPER_COLUMNS, eps: float = 0.0,
                     tolerance: float = 1e-9) -> InvarianceRecord:
    """Every cell of Ba, Kiros & Hinton's Table 1 computed with :func:`relative_change`.

    A cell is *invariant* when the output changes by at most ``tolerance`` relative to its
    largest entry (float64, ε = ``eps``). Columns outside the paper's six get ``paper`` False.
    Used in chapter ``07_layernorm``.
    """
    cells = np.array([[relative_change(norm, column, seed=seed, eps=eps) for column in columns]
                      for norm in NORMALIZERS])
    paper = np.array([[BA_ET_AL_TABLE1[norm].get(column, False) for column in columns] for norm in NORMALIZERS])
    return InvarianceRecord(norms=NORMALIZERS, columns=tuple(columns), relative_change=cells,
                            invariant=cells <= tolerance, paper=paper, tolerance=tolerance, eps=eps)


def invariance_matches_paper(record: InvarianceRecord, broken_above: float = 1e-2) -> Claim:
    """Claim: every computed cell agrees with Ba et al.'s Table 1, with a clear gap: an
    invariant cell changes by at most ``record.tolerance``, a non-invariant one by more than
    ``broken_above``. Measured: (the number of cells that disagree with the paper, the largest
    change of an invariant cell, the smallest of a non-invariant one); threshold: (0,
    ``record.tolerance``, ``broken_above``)."""
    if record.columns != PAPER_COLUMNS:
        raise ValueError(f"invariance_matches_paper compares the paper's six columns; got {record.columns}.")
    cells = record.relative_change
    separated = np.all((cells <= record.tolerance) | (cells > broken_above))
    measured = (int((record.invariant != record.paper).sum()),
                float(cells[record.invariant].max()) if record.invariant.any() else 0.0,
                float(cells[~record.invariant].min()) if (~record.invariant).any() else np.inf)
    return Claim(holds=bool(separated and np.array_equal(record.invariant, record.paper)), measured=measured,
                 threshold=(0, record.tolerance, broken_above))


# ----------------------------------------------------------------------------
# 2. Which entries share a statistic: the N × C × (H·W) cube

CUBE_NORMS = ("batch", "layer", "instance", "group", "rms")


def _cube_layer(norm: str, channels: int, height: int, width: int, groups: int) -> nn.Module:
    layers: dict[str, Callable[[], nn.Module]] = {
        "batch": lambda: BatchNorm2d(channels, dtype=F64),
        "layer": lambda: LayerNorm((channels, height, width), dtype=F64),
        "instance": lambda: InstanceNorm2d(channels, dtype=F64),
        "group": lambda: GroupNorm(groups, channels, dtype=F64),
        "rms": lambda: RMSNorm((channels, height, width), dtype=F64),
    }
    if norm not in layers:
        raise ValueError(f"norm must be one of {list(layers)}; got {norm!r}.")
    return layers[norm]().train()


def statistic_masks(shape: tuple[int, int, int, int] = (6, 6, 3, 2), groups: int = 2, seed: int = 0,
                    norms: Sequence[str] = CUBE_NORMS) -> dict[str, np.ndarray]:
    """For each normalizer, the entries of an (N, C, H, W) input whose output moves when entry
    (0, 0, 0, 0) alone is perturbed: the set that shares its statistics (mean and variance, or
    the root mean square for RMSNorm). Returned as boolean arrays of shape (N, C, H·W), the
    axes of Wu & He's (2018) Figure 2. Layers are normlab's: BatchNorm2d in training mode,
    LayerNorm and RMSNorm over (C, H, W), InstanceNorm2d, GroupNorm with ``groups`` groups.
    Used in chapter ``07_layernorm``.
    """
    n, c, h, w = shape
    x = torch.as_tensor(np.random.default_rng(seed).standard_normal(shape), dtype=F64)
    bumped = x.clone()
    bumped[0, 0, 0, 0] += 0.5
    masks = {}
    for norm in norms:
        layer = _cube_layer(norm, c, h, w, groups)
        with torch.no_grad():
            moved = (layer(bumped) - layer(x)).abs() > 1e-12
        masks[norm] = moved.reshape(n, c, h * w).numpy()
    return masks


def masks_match_definitions(masks: dict[str, np.ndarray], groups: int = 2) -> Claim:
    """Claim: the sets found by perturbation are the textbook ones: BN the channel over the
    batch and all positions; LN and RMSNorm the example; IN one channel of one example; GN one
    group of C/G channels of one example. Measured: the number of normalizers whose set differs."""
    n, c, hw = next(iter(masks.values())).shape
    expected = {norm: np.zeros((n, c, hw), dtype=bool) for norm in CUBE_NORMS}
    expected["batch"][:, 0, :] = True
    expected["layer"][0] = True
    expected["rms"][0] = True
    expected["instance"][0, 0] = True
    expected["group"][0, : c // groups] = True
    differ = sum(not np.array_equal(mask, expected[norm]) for norm, mask in masks.items())
    return Claim(holds=differ == 0, measured=differ, threshold=0)


# ----------------------------------------------------------------------------
# 3. Batch size: BN, GN and LN in the same network


BATCH_SIZE_NORMS = ("batch", "group", "layer")


def _norm_factory(norm: str, groups: int) -> Callable[[int], nn.Module]:
    if norm == "batch":
        return BatchNorm1d
    if norm == "layer":
        return LayerNorm
    if norm == "group":
        return lambda width: GroupNorm(groups, width)
    raise ValueError(f"norm must be one of {list(BATCH_SIZE_NORMS)}; got {norm!r}.")


@dataclass
class NormBatchSizeRecord:
    """``test_accuracy[i, j]``: eval-mode test accuracy of ``norms[i]`` trained at ``batch_sizes[j]``
    for ``steps[j]`` steps at learning rate ``lrs[j]`` (same number of examples for every run)."""

    norms: tuple[str, ...]
    batch_sizes: np.ndarray
    steps: np.ndarray
    lrs: np.ndarray
    test_accuracy: np.ndarray
    examples: int
    groups: int

    def accuracy(self, norm: str) -> np.ndarray:
        """Test accuracy of ``norm`` at each batch size."""
        return self.test_accuracy[self.norms.index(norm)]


def batch_size_sensitivity(batch_sizes: Sequence[int] = (32, 16, 8, 4, 2), seed: int = 0, examples: int = 6000,
                           lr: float = 0.1, norms: Sequence[str] = BATCH_SIZE_NORMS, groups: int = 4,
                           progress: bool = False, device: str | None = "cpu") -> NormBatchSizeRecord:
    """Train one MLP with BN, GN or LN after each hidden Linear at each batch size; evaluate.

    The network is the BatchNorm chapter's (three hidden layers of ``HIDDEN`` = 100 units) with
    ReLU, built by :func:`normlab.models.mlp` from the same seeded weights for every run. The
    protocol is :func:`normlab.experiments.batchnorm.batch_size_sensitivity`'s "equal examples":
    every run sees ``examples`` examples, ``examples // b`` steps of plain SGD at batch b, with
    the linear scaling rule lr_b = ``lr`` · b / max(batch_sizes). GroupNorm on (N, C) input puts
    the 100 units in ``groups`` groups of 100/``groups``. ReLU rather than the sigmoid of that
    chapter because with ReLU all three networks are near their ceiling after 6000 examples,
    which keeps five batch sizes affordable (with the sigmoid, LN and GN reached about 0.89 test
    accuracy at batch 32 even after 12,000 examples, seed 0). Test accuracy is in eval mode (BN with its running estimates).
    Used in chapter ``07_layernorm``.
    """
    ds = data.digits(seed=seed)
    sizes = [int(b) for b in batch_sizes]
    run_steps = [max(1, examples // b) for b in sizes]
    run_lrs = [lr * b / max(sizes) for b in sizes]
    accuracy = np.zeros((len(norms), len(sizes)))
    for i, norm in enumerate(norms):
        factory = _norm_factory(norm, groups)
        for j, (batch_size, steps, run_lr) in enumerate(zip(sizes, run_steps, run_lrs)):
            net = models.mlp(ds.num_features, HIDDEN, ds.num_classes, activation="relu", norm=factory, seed=seed)
            history = train.train(net, ds, steps=steps, lr=run_lr, batch_size=batch_size, seed=seed,
                                  eval_every=steps, progress=progress, device=device,
                                  desc=f"norm={norm}, batch={batch_size}")
            accuracy[i, j] = history.final_test_accuracy
    return NormBatchSizeRecord(norms=tuple(norms), batch_sizes=np.asarray(sizes, dtype=np.int64),
                               steps=np.asarray(run_steps, dtype=np.int64), lrs=np.asarray(run_lrs),
                               test_accuracy=accuracy, examples=examples, groups=groups)


def bn_degrades_where_batch_free_norms_hold(record: NormBatchSizeRecord, bn_drop: float = 0.2,
                                            hold: float = 0.03) -> Claim:
    """Claim: BN's test accuracy at the smallest batch is at least ``bn_drop`` below its accuracy
    at the largest, while GN's and LN's accuracies stay within ``hold`` of each other at every
    batch size (max − min over batch sizes ≤ ``hold``). Measured: (BN's drop, the largest
    spread of the others); threshold: (``bn_drop``, ``hold``)."""
    small, large = int(np.argmin(record.batch_sizes)), int(np.argmax(record.batch_sizes))
    bn = record.accuracy("batch")
    others = [record.accuracy(norm) for norm in record.norms if norm != "batch"]
    drop, spread = float(bn[large] - bn[small]), max((float(a.max() - a.min()) for a in others), default=0.0)
    return Claim(holds=bool(drop >= bn_drop and all(a.max() - a.min() <= hold for a in others)),
                 measured=(drop, spread), threshold=(bn_drop, hold))


# ----------------------------------------------------------------------------
# 4. LayerNorm in a recurrent network


@dataclass
class RNNStatisticsRecord:
    """Statistics over time steps of tanh RNNs with and without LN, at several recurrent gains.

    Index order: ``[gain, layer_norm (0: without, 1: with), time step]``.
    ``tanh_input_std_init``: std over hidden units of the input to tanh (a_t + b without LN, the
    LN output with it), averaged over test sequences, at initialization; ``summed_input_std_init``
    the same for a_t itself. ``saturation``: fraction of |h_t| > 0.95 after training.
    ``loss[g, l, k]``: training loss (MSE) at step ``k``; ``test_loss[g, l]`` after training.
    """

    gains: np.ndarray
    tanh_input_std_init: np.ndarray
    summed_input_std_init: np.ndarray
    tanh_input_std_trained: np.ndarray
    saturation: np.ndarray
    loss: np.ndarray
    test_loss: np.ndarray
    length: int
    delay: int
    hidden: int
    steps: int


def _rnn_probe(net: ElmanRNN, x: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, Tensor]:
    with torch.no_grad():
        out, a, h = net(x)
        tanh_in = net.norm(a) if net.norm is not None else a + net.bias
    return (tanh_in.std(2, correction=0).mean(0).numpy(), a.std(2, correction=0).mean(0).numpy(),
            (h.abs() > 0.95).float().mean((0, 2)).numpy(), out)


def rnn_hidden_statistics(gains: Sequence[float] = (1.0, 3.0), seed: int = 0, length: int = 50, delay: int = 5,
                          hidden: int = 32, steps: int = 200, batch_size: int = 32, lr: float = 0.01,
                          test_sequences: int = 256, progress: bool = False) -> RNNStatisticsRecord:
    """Train :class:`ElmanRNN` with and without LN on the delayed-copy task at each recurrent gain.

    The task (:func:`delayed_copy`): read a sequence of ``length`` N(0, 1) numbers and output,
    at each step t ≥ ``delay``, the number seen ``delay`` steps earlier; the loss is the mean
    squared error over those steps (predicting 0 scores 1). Both networks start from the same
    seeded weights and see the same sequences, trained by Adam at ``lr`` for ``steps`` steps of
    ``batch_size`` sequences. Statistics over time steps are measured on ``test_sequences``
    held-out sequences. It trains with its own loop, not :func:`normlab.train.train`: the
    sequences are drawn afresh at every step (there is no fixed training set to sample) and
    the loss counts only the time steps t ≥ ``delay``.
    Used in chapter ``07_layernorm``.
    """
    test_x, test_y = delayed_copy(test_sequences, length, delay, torch.Generator().manual_seed(10_000 + seed))
    shape = (len(gains), 2)
    std_init, summed_init = np.zeros(shape + (length,)), np.zeros(shape + (length,))
    std_trained, saturation = np.zeros(shape + (length,)), np.zeros(shape + (length,))
    losses, test_loss = np.zeros(shape + (steps,)), np.zeros(shape)
    with tqdm(total=len(gains) * 2 * steps, disable=not progress, desc="RNN", leave=False) as bar:
        for i, gain in enumerate(gains):
            for j, layer_norm in enumerate((False, True)):
                net = ElmanRNN(1, hidden, 1, layer_norm, recurrent_gain=gain, seed=seed)
                std_init[i, j], summed_init[i, j], _, _ = _rnn_probe(net, test_x)
                opt = torch.optim.Adam(net.parameters(), lr=lr)
                generator = torch.Generator().manual_seed(seed)
                # own loop: train.train takes a fixed Dataset of (n, features) rows and a loss over whole
                # outputs; the RNN draws fresh sequences every step and scores only the steps t ≥ delay.
                for k in range(steps):
                    x, y = delayed_copy(batch_size, length, delay, generator)
                    loss = ((net(x)[0] - y)[:, delay:] ** 2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses[i, j, k] = loss.item()
                    bar.update(1)
                std_trained[i, j], _, saturation[i, j], out = _rnn_probe(net, test_x)
                test_loss[i, j] = float(((out - test_y)[:, delay:] ** 2).mean())
    return RNNStatisticsRecord(gains=np.asarray(gains, dtype=np.float64), tanh_input_std_init=std_init,
                               summed_input_std_init=summed_init, tanh_input_std_trained=std_trained,
                               saturation=saturation, loss=losses, test_loss=test_loss, length=length,
                               delay=delay, hidden=hidden, steps=steps)


def _gain_index(record: RNNStatisticsRecord, gain: float) -> int:
    matches = np.nonzero(np.isclose(record.gains, gain))[0]
    if not matches.size:
        raise ValueError(f"gain {gain} was not run; the record has gains {list(record.gains)}.")
    return int(matches[0])


def ln_fixes_scale_over_time(record: RNNStatisticsRecord, gain: float = 3.0, growth: float = 2.0,
                             tolerance: float = 0.05) -> Claim:
    """Claim: at initialization with recurrent gain ``gain``, the std over units of the tanh input
    grows by at least ``growth`` from the first to the last step without LN, while with LN it is
    within ``tolerance`` of 1 at every step and every gain. Measured: (the growth without LN,
    the largest |std − 1| with LN); threshold: (``growth``, ``tolerance``)."""
    i = _gain_index(record, gain)
    without = record.tanh_input_std_init[i, 0]
    with_ln = record.tanh_input_std_init[:, 1]
    return Claim(holds=bool(without[-1] >= growth * without[0] and np.all(np.abs(with_ln - 1.0) <= tolerance)),
                 measured=(ratio(float(without[-1]), float(without[0])), float(np.abs(with_ln - 1.0).max())),
                 threshold=(growth, tolerance))


def ln_rescues_large_recurrent_gain(record: RNNStatisticsRecord, gain: float = 3.0, factor: float = 3.0,
                                    saturated: float = 0.3, unsaturated: float = 0.1) -> Claim:
    """Claim: at recurrent gain ``gain``, after training, the RNN without LN has a test loss at
    least ``factor`` times that of the RNN with LN, and more than ``saturated`` of its hidden
    units are saturated (|h| > 0.95, averaged over steps) against fewer than ``unsaturated`` with LN.
    Measured: (the loss ratio, saturation without LN, with LN); threshold: (``factor``,
    ``saturated``, ``unsaturated``)."""
    i = _gain_index(record, gain)
    sat = record.saturation[i].mean(axis=-1)
    return Claim(holds=bool(record.test_loss[i, 0] >= factor * record.test_loss[i, 1]
                            and sat[0] > saturated and sat[1] < unsaturated),
                 measured=(ratio(float(record.test_loss[i, 0]), float(record.test_loss[i, 1])), float(sat[0]),
                           float(sat[1])),
                 threshold=(factor, saturated, unsaturated))


def plain_rnn_wins_at_unit_gain(record: RNNStatisticsRecord, gain: float = 1.0, factor: float = 3.0) -> Claim:
    """Claim (LN is not free): at recurrent gain ``gain`` the RNN without LN ends with a test loss
    at least ``factor`` times smaller than the RNN with LN. Measured: loss with LN / without."""
    i = _gain_index(record, gain)
    return Claim(holds=bool(record.test_loss[i, 1] >= factor * record.test_loss[i, 0]),
                 measured=ratio(float(record.test_loss[i, 1]), float(record.test_loss[i, 0])), threshold=factor)


# ----------------------------------------------------------------------------
# 5. The comparison table: speed, and what each normalizer keeps or discards


TIMED_NORMS = ("batch", "layer", "group", "rms")


def _timed_layer(norm: str, implementation: str, features: int, groups: int) -> nn.Module:
    import normlab.layers as normlab_layers

    module = {"torch": nn, "normlab": normlab_layers}[implementation]
    return {"batch": lambda: module.BatchNorm1d(features), "layer": lambda: module.LayerNorm(features),
            "group": lambda: module.GroupNorm(groups, features), "rms": lambda: module.RMSNorm(features)}[norm]()


@dataclass
class TimingRecord:
    """``seconds[i, k]``: median wall time of one forward and backward pass of ``norms[i]`` by
    ``implementations[k]`` on a (batch, features) input; ``ratio_to_batch`` divides by BN's."""

    norms: tuple[str, ...]
    implementations: tuple[str, ...]
    seconds: np.ndarray
    shape: tuple[int, int]
    repeats: int

    @property
    def ratio_to_batch(self) -> np.ndarray:
        return self.seconds / self.seconds[self.norms.index("batch")]


def normalizer_timings(batch: int = 128, features: int = 512, groups: int = 32, repeats: int = 41,
                       implementations: Sequence[str] = ("torch", "normlab"), seed: int = 0) -> TimingRecord:
    """Median time of forward + backward for BN, LN, GN and RMSNorm on one (batch, features) input.

    The layers run interleaved (one pass of each, ``repeats`` rounds) so that a slow moment of
    a shared CPU hits all of them alike; the median discards the outliers. ``torch`` times the
    built-ins of ``torch.nn``, ``normlab`` the layers of :mod:`normlab.layers` (a Python
    ``autograd.Function`` whose closed-form backward numba compiles on the CPU). Times are for
    the current thread settings and machine: compare ratios, not absolute numbers.
    Used in chapter ``07_layernorm``.
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, features, generator=generator)
    grad = torch.randn(batch, features, generator=generator)  # a dense upstream gradient, as in a network
    layers = {(norm, impl): _timed_layer(norm, impl, features, groups)
              for norm in TIMED_NORMS for impl in implementations}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in layers}
    for _ in range(repeats):
        for key, layer in layers.items():
            inp = x.clone().requires_grad_(True)
            start = time.perf_counter()
            layer(inp).backward(grad)
            times[key].append(time.perf_counter() - start)
    seconds = np.array([[np.median(times[(norm, impl)][1:]) for impl in implementations] for norm in TIMED_NORMS])
    return TimingRecord(norms=TIMED_NORMS, implementations=tuple(implementations), seconds=seconds,
                        shape=(batch, features), repeats=repeats)


def timings_within(record: TimingRecord, factor: float = 10.0) -> Claim:
    """Claim (coarse, timings are noisy): every normalizer's forward + backward takes less than
    ``factor`` times BN's, for every implementation. Measured: the largest ratio to BN."""
    return Claim(holds=bool(np.all(record.ratio_to_batch < factor)), measured=float(record.ratio_to_batch.max()),
                 threshold=factor)


@dataclass
class ComparisonRecord:
    """Measurements behind the limitations column of the comparison table (relative changes are
    max |Δy| / max |y|).

    - ``bn_train_eval_gap``: BN after training steps, train-mode output vs eval-mode output on
      the same batch; ``ln_train_eval_gap``: the same for LN (0: one computation).
    - ``bn_batch_dependence``: how much one example's BN output moves when its batch-mates
      change (train mode); ``ln_batch_dependence``: the same for LN.
    - ``instance_contrast_change``: InstanceNorm's output change when each channel of an image
      is scaled and shifted (contrast and brightness): ~0, the information is discarded.
    - ``instance_single_pixel_error``: whether InstanceNorm refuses a 1 × 1 feature map.
    - ``rms_shift_change`` / ``ln_shift_change``: output change when a constant is added to
      every feature of an example (RMSNorm does not centre; LN does).
    - ``group_equals_layer`` / ``group_equals_instance``: GN with G = 1 vs LN over (C, H, W),
      and GN with G = C vs InstanceNorm (max absolute difference).
    """

    bn_train_eval_gap: float
    ln_train_eval_gap: float
    bn_batch_dependence: float
    ln_batch_dependence: float
    instance_contrast_change: float
    instance_single_pixel_error: bool
    rms_shift_change: float
    ln_shift_change: float
    group_equals_layer: float
    group_equals_instance: float


def _max_relative_difference(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max |b|: how much ``a`` differs from the reference ``b``, relative to b's size."""
    return float((a - b).abs().max() / b.abs().max())


def comparison_measurements(seed: int = 0, features: int = 16, batch: int = 8) -> ComparisonRecord:
    """The small computations behind the chapter's comparison table (see :class:`ComparisonRecord`).

    Float64 throughout; BN and LN layers get a few SGD steps on a random regression so that
    BN's running estimates differ from the batch statistics as they do in practice. Those
    20 steps are their own loop, not :func:`normlab.train.train`: fresh random batches, no
    dataset, nothing recorded.
    Used in chapter ``07_layernorm``.
    """
    g = torch.Generator().manual_seed(seed)
    x = 2.0 + 3.0 * torch.randn(batch, features, generator=g, dtype=F64)
    gaps, dependence = {}, {}
    for name, layer in (("batch", BatchNorm1d(features, dtype=F64)), ("layer", LayerNorm(features, dtype=F64))):
        with torch.random.fork_rng(devices=[]):  # the Linear's default init from `seed`, not from whatever
            torch.default_generator.manual_seed(seed)  # ran before (the timings draw from the global RNG)
            net = nn.Sequential(nn.Linear(features, features, dtype=F64), layer)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        # own loop: 20 full-batch steps on batches drawn afresh, only to move BN's running estimates
        # away from the batch statistics; there is no dataset, test split or record to keep.
        for _ in range(20):
            xb = 2.0 + 3.0 * torch.randn(batch, features, generator=g, dtype=F64)
            loss = (net(xb) - xb.flip(1)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            net.train()
            train_out = net(x)
            other = torch.cat([x[:1], 2.0 + 3.0 * torch.randn(batch - 1, features, generator=g, dtype=F64)])
            dependence[name] = _max_relative_difference(net(other)[0], train_out[0])
            net.eval()
            gaps[name] = _max_relative_difference(net(x), train_out)

    image = torch.randn(2, 3, 5, 5, generator=g, dtype=F64)
    contrast = torch.tensor([0.5, 2.0, 3.0], dtype=F64).reshape(1, 3, 1, 1)
    brightness = torch.tensor([1.0, -2.0, 0.3], dtype=F64).reshape(1, 3, 1, 1)
    instance = InstanceNorm2d(3, eps=0.0, dtype=F64)  # ε = 0: exact invariance to contrast
    try:
        instance(torch.randn(2, 3, 1, 1, dtype=F64))
        refused = False
    except ValueError:
        refused = True

    shift = 5.0
    rms, ln = RMSNorm(features, dtype=F64), LayerNorm(features, dtype=F64)
    c, h, w = 4, 3, 3
    maps = torch.randn(2, c, h, w, generator=g, dtype=F64)
    with torch.no_grad():
        instance_change = _max_relative_difference(instance(image * contrast + brightness), instance(image))
        rms_change = _max_relative_difference(rms(x + shift), rms(x))
        ln_change = _max_relative_difference(ln(x + shift), ln(x))
        as_layer = (GroupNorm(1, c, dtype=F64)(maps) - LayerNorm((c, h, w), dtype=F64)(maps)).abs().max()
        as_instance = (GroupNorm(c, c, dtype=F64)(maps) - InstanceNorm2d(c, dtype=F64)(maps)).abs().max()
    return ComparisonRecord(
        bn_train_eval_gap=gaps["batch"], ln_train_eval_gap=gaps["layer"],
        bn_batch_dependence=dependence["batch"], ln_batch_dependence=dependence["layer"],
        instance_contrast_change=instance_change, instance_single_pixel_error=refused,
        rms_shift_change=rms_change, ln_shift_change=ln_change,
        group_equals_layer=float(as_layer), group_equals_instance=float(as_instance))


def comparison_facts_hold(record: ComparisonRecord, exact: float = 1e-9, visible: float = 0.01) -> Claim:
    """Claim: every limitation in the comparison table shows. BN's train and eval outputs differ
    and one example's BN output depends on its batch-mates (> ``visible``), LN's do not
    (≤ ``exact``); InstanceNorm forgets per-channel contrast and brightness (≤ ``exact``) and
    refuses 1 × 1 maps; RMSNorm moves under a shift of all features (> ``visible``), LN does
    not; GN with G = 1 is LN and with G = C is InstanceNorm (≤ ``exact``). Measured: (the largest
    of the changes that must be exact, the smallest of those that must be visible); threshold:
    (``exact``, ``visible``)."""
    should_vanish = (record.ln_train_eval_gap, record.ln_batch_dependence, record.instance_contrast_change,
                     record.ln_shift_change, record.group_equals_layer, record.group_equals_instance)
    should_show = (record.bn_train_eval_gap, record.bn_batch_dependence, record.rms_shift_change)
    holds = bool(record.bn_train_eval_gap > visible and record.ln_train_eval_gap <= exact
                and record.bn_batch_dependence > visible and record.ln_batch_dependence <= exact
                and record.instance_contrast_change <= exact and record.instance_single_pixel_error
                and record.rms_shift_change > visible and record.ln_shift_change <= exact
                and record.group_equals_layer <= exact and record.group_equals_instance <= exact)
    return Claim(holds=holds, measured=(float(max(should_vanish)), float(min(should_show))), threshold=(exact, visible))


def ln_insensitive_to_gain(record: RNNStatisticsRecord, factor: float = 2.0) -> Claim:
    """Claim: with LN, the largest test loss over the recurrent gains is at most ``factor`` times
    the smallest. Measured: largest / smallest."""
    with_ln = record.test_loss[:, 1]
    return Claim(holds=bool(with_ln.max() <= factor * with_ln.min()),
                 measured=ratio(float(with_ln.max()), float(with_ln.min())), threshold=factor)
