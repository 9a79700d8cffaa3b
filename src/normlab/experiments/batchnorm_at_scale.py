"""Experiments of chapter ``12_batchnorm_at_scale``: statistics across devices, ghost batches, non-i.i.d. batches.

Every experiment trains a small ReLU MLP (hidden widths ``HIDDEN``) on scikit-learn's 8x8 digits
(:func:`normlab.data.digits`) by plain SGD.

- :func:`per_device_statistics`: k data-parallel CPU processes with a per-device batch of 2–4:
  BatchNorm in DDP (each rank normalizes its own few examples) vs SyncBatchNorm vs the same
  global batch in one process; and the cost of synchronizing, as a ratio of time.
  Claims: :func:`sync_closes_the_gap`, :func:`small_device_batches_mislead_running_statistics`
  (the cause: tiny per-device batches make the training-mode output disagree with eval mode).
- :func:`ghost_batch_noise`: the spread of ghost-batch statistics against the virtual batch size.
  Claim: :func:`ghost_noise_scales_as_inverse_sqrt`.
- :func:`ghost_batch_training`: one large batch (512) normalized in ghost batches of 4 to 512, a fixed
  number of steps, several seeds: test accuracy and the generalization gap (train − test) per ghost size,
  and a small-batch run over the same number of epochs as the reference Hoffer et al. compare with.
  Claims: :func:`tiny_ghost_batches_hurt`, :func:`moderate_ghost_batches_change_nothing`,
  :func:`little_large_batch_gap_to_close`.
- :func:`non_iid_batches`: batches of two classes at a time: BatchNorm, Batch Renormalization with
  the paper's schedule (scaled to the run), GroupNorm, and BatchNorm on i.i.d. batches.
  Claims: :func:`non_iid_batches_break_batchnorm` (BN's training-mode output depends on the
  batch's classes), :func:`renorm_and_groupnorm_recover` (theirs does not).

A claim function returns a :class:`Claim` (holds, measured, threshold), which the chapter glues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from normlab import data, models, train
from normlab.distributed import Workers, train_data_parallel
from normlab.layers import BatchNorm1d, BatchRenorm1d, GhostBatchNorm1d, GroupNorm, SyncBatchNorm
from normlab.layers.batch_renorm import scaled_renorm_schedule
from normlab.experiments._common import Claim

__all__ = [
    "Claim",
    "GhostNoiseRecord",
    "GhostTrainingRecord",
    "NonIIDRecord",
    "PerDeviceRecord",
    "ghost_batch_noise",
    "ghost_batch_training",
    "ghost_batchnorm_mlp",
    "ghost_noise_scales_as_inverse_sqrt",
    "little_large_batch_gap_to_close",
    "moderate_ghost_batches_change_nothing",
    "non_iid_batches",
    "non_iid_batches_break_batchnorm",
    "per_device_statistics",
    "renorm_and_groupnorm_recover",
    "small_device_batches_mislead_running_statistics",
    "sync_closes_the_gap",
    "tiny_ghost_batches_hurt",
]

HIDDEN = (64, 64)


def _mlp(norm, ds: data.Dataset, seed: int) -> nn.Sequential:
    return models.mlp(ds.num_features, HIDDEN, ds.num_classes, activation="relu", norm=norm, seed=seed)


# ----------------------------------------------------------------------------
# 1. Per-device statistics


@dataclass
class PerDeviceRecord:
    """Final eval-mode test accuracy of the three runs, and what their running statistics estimate.

    ``agreement_*`` is the cause, measured on the first BN layer at the end of training: the
    correlation, over the training set and averaged over units, between its training-mode output
    (normalized with the statistics of batches of the size that run normalized over: the
    per-device batch for ``ddp_batchnorm``, the global batch for ``ddp_sync``) and its eval-mode
    output (running statistics). With 2 values per batch the training-mode output is ±1 whatever
    the input's magnitude, so what the network learns on is a coarse version of what it is tested on. ``step_seconds_*`` is the
    mean wall time of one step on rank 0: ``local`` trains each rank alone (no communication),
    ``sync`` is DDP with SyncBatchNorm (gradient all-reduce plus two all-reduces per BN layer).
    """

    world_size: int
    per_rank_batch: int
    steps: int
    accuracy_one_process: float
    accuracy_ddp_batchnorm: float
    accuracy_ddp_sync: float
    agreement_ddp_batchnorm: float
    agreement_ddp_sync: float
    step_seconds_local: float
    step_seconds_sync: float

    @property
    def sync_cost_ratio(self) -> float:
        """Communication time over compute time per step: (sync − local) / local."""
        return (self.step_seconds_sync - self.step_seconds_local) / self.step_seconds_local


def _train_eval_agreement(net: nn.Module, state: dict, ds: data.Dataset, batch: int, seed: int) -> float:
    """Mean over units of corr(train-mode output in batches of ``batch``, eval-mode output) of the first BN layer."""
    net.load_state_dict(state)
    with torch.no_grad():
        pre = net.linear0(ds.x_train)
        order = torch.randperm(len(pre), generator=torch.Generator().manual_seed(seed))
        pre = pre[order[: len(pre) // batch * batch]].double()
        ghosts = pre.view(-1, batch, pre.shape[1])
        train_mode = (ghosts - ghosts.mean(1, keepdim=True)) / torch.sqrt(ghosts.var(1, unbiased=False, keepdim=True)
                                                                           + net.norm0.eps)
        train_mode = train_mode.reshape(pre.shape)
        eval_mode = (pre - state["norm0.running_mean"].double()) / torch.sqrt(state["norm0.running_var"].double()
                                                                             + net.norm0.eps)
    a = train_mode - train_mode.mean(0)
    b = eval_mode - eval_mode.mean(0)
    return float(((a * b).sum(0) / torch.sqrt((a * a).sum(0) * (b * b).sum(0))).mean())


def _ddp_run(rank: int, world_size: int, sync: bool, ds: data.Dataset, seed: int, steps: int, lr: float,
             per_rank_batch: int, ddp: bool = True):
    net = _mlp(BatchNorm1d, ds, seed)
    if sync:
        net = SyncBatchNorm.convert_sync_batchnorm(net)
    return train_data_parallel(rank, world_size, net, ds, steps=steps, lr=lr, per_rank_batch=per_rank_batch,
                               seed=seed, eval_every=steps, ddp=ddp)


def per_device_statistics(seed: int = 0, world_size: int = 2, per_rank_batch: int = 2, steps: int = 300,
                          lr: float = 0.1, workers: Workers | None = None) -> PerDeviceRecord:
    """BatchNorm in data-parallel training with ``per_rank_batch`` examples per device.

    Three runs from the same seeded weights through the same global batches of
    ``world_size · per_rank_batch`` examples: one process (:func:`normlab.train.train`), DDP with
    each rank's BatchNorm using its own slice, DDP with :class:`SyncBatchNorm`; then a fourth run
    of each rank alone (no DDP, plain BN) only to time a step without communication. ``workers``:
    running :class:`Workers` of ``world_size`` processes to reuse (else started and stopped here).
    Chapter ``12_batchnorm_at_scale``.
    """
    ds = data.digits(seed=seed)
    own = workers is None
    workers = workers or Workers(world_size).start()
    try:
        if workers.world_size != world_size:
            raise ValueError(f"workers has {workers.world_size} processes but world_size={world_size}.")
        plain = workers.run(_ddp_run, False, ds, seed, steps, lr, per_rank_batch)[0]
        synced = workers.run(_ddp_run, True, ds, seed, steps, lr, per_rank_batch)[0]
        alone = workers.run(_ddp_run, False, ds, seed, steps, lr, per_rank_batch, ddp=False)[0]
    finally:
        if own:
            workers.close()
    net = _mlp(BatchNorm1d, ds, seed)
    history = train.train(net, ds, steps=steps, lr=lr, batch_size=world_size * per_rank_batch, seed=seed,
                          eval_every=steps, progress=False, device="cpu")
    probe = _mlp(BatchNorm1d, ds, seed)
    return PerDeviceRecord(
        world_size=world_size, per_rank_batch=per_rank_batch, steps=steps,
        accuracy_one_process=history.final_test_accuracy, accuracy_ddp_batchnorm=float(plain.test_accuracy[-1]),
        accuracy_ddp_sync=float(synced.test_accuracy[-1]),
        agreement_ddp_batchnorm=_train_eval_agreement(probe, plain.state, ds, per_rank_batch, seed),
        agreement_ddp_sync=_train_eval_agreement(probe, synced.state, ds, world_size * per_rank_batch, seed),
        step_seconds_local=alone.seconds / steps, step_seconds_sync=synced.seconds / steps)


def sync_closes_the_gap(record: PerDeviceRecord, gap_at_least: float = 0.15, sync_within: float = 0.06) -> Claim:
    """Claim: DDP with per-device BatchNorm ends at least ``gap_at_least`` below one-process training on the
    same global batch, and SyncBatchNorm ends within ``sync_within`` of it. ``measured`` is the gap."""
    gap = record.accuracy_one_process - record.accuracy_ddp_batchnorm
    sync_gap = abs(record.accuracy_one_process - record.accuracy_ddp_sync)
    return Claim(bool(gap >= gap_at_least and sync_gap <= sync_within), float(gap), gap_at_least)


def small_device_batches_mislead_running_statistics(record: PerDeviceRecord, factor: float = 1.6) -> Claim:
    """Claim: the cause. Per-device BatchNorm's training-mode output disagrees with its eval-mode output
    (1 − correlation, :class:`PerDeviceRecord`) at least ``factor`` times more than SyncBatchNorm's.
    ``measured`` is the ratio of the disagreements."""
    ratio = (1 - record.agreement_ddp_batchnorm) / max(1 - record.agreement_ddp_sync, 1e-12)
    return Claim(bool(ratio >= factor), float(ratio), factor)


# ----------------------------------------------------------------------------
# 2. Ghost batches: noise of the statistics


@dataclass
class GhostNoiseRecord:
    """Spread of ghost-batch statistics of the pre-activations of a random first layer on digits.

    ``mean_noise[i]`` is the standard deviation, over ghost batches of ``sizes[i]`` examples and
    averaged over units, of the ghost-batch mean divided by the population standard deviation;
    ``std_noise[i]`` the same for the ghost-batch standard deviation divided by the population one.
    Sampling theory: mean_noise ≈ 1/√B (without replacement from n: √((n − B)/(n − 1)/B)).
    """

    sizes: np.ndarray
    mean_noise: np.ndarray
    std_noise: np.ndarray
    predicted_mean_noise: np.ndarray


def ghost_batch_noise(seed: int = 0, sizes: Sequence[int] = (2, 4, 8, 16, 32, 64, 128), draws: int = 200
                      ) -> GhostNoiseRecord:
    """Noise of batch statistics against the virtual batch size, measured on ``draws`` random ghost batches each.
    Chapter ``12_batchnorm_at_scale``."""
    ds = data.digits(seed=seed)
    generator = torch.Generator().manual_seed(seed)
    layer = nn.Linear(ds.num_features, HIDDEN[0])
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / ds.num_features ** 0.5)
        layer.bias.zero_()
        pre = layer(ds.x_train).double()
    n = len(pre)
    mu, sigma = pre.mean(0), pre.std(0, unbiased=False)
    mean_noise, std_noise = [], []
    for size in sizes:
        batches = torch.stack([torch.randperm(n, generator=generator)[:size] for _ in range(draws)])
        ghosts = pre[batches]  # (draws, size, units)
        mean_noise.append(float(((ghosts.mean(1) - mu) / sigma).std(0).mean()))
        std_noise.append(float((ghosts.std(1, unbiased=False) / sigma).std(0).mean()))
    sizes_array = np.asarray(sizes, dtype=np.float64)
    return GhostNoiseRecord(sizes=np.asarray(sizes), mean_noise=np.asarray(mean_noise), std_noise=np.asarray(std_noise),
                            predicted_mean_noise=np.sqrt((n - sizes_array) / (n - 1) / sizes_array))


def ghost_noise_scales_as_inverse_sqrt(record: GhostNoiseRecord, tolerance: float = 0.25) -> Claim:
    """Claim: the noise of the ghost-batch mean follows sampling theory within a relative ``tolerance`` at
    every size. ``measured`` is the largest relative deviation."""
    deviation = float(np.max(np.abs(record.mean_noise / record.predicted_mean_noise - 1)))
    return Claim(deviation <= tolerance, deviation, tolerance)


# ----------------------------------------------------------------------------
# 2b. Ghost batches: effect on training


@dataclass
class GhostTrainingRecord:
    """Accuracy after training with one large batch normalized in ghost batches, per seed and ghost size.

    ``train_accuracy[i, j]`` and ``test_accuracy[i, j]`` are the eval-mode accuracies on the whole
    training and test sets of ``seeds[i]`` after ``steps`` steps with batches of ``batch_size`` in ghost
    batches of ``sizes[j]`` (``sizes[-1] == batch_size``: plain BatchNorm). ``small_batch_*[i]``: the
    same network with plain BatchNorm trained on batches of ``small_batch_size`` for the same number of
    epochs (``steps · batch_size / small_batch_size`` steps), the small-batch reference.
    """

    seeds: np.ndarray
    sizes: np.ndarray
    batch_size: int
    steps: int
    lr: float
    train_accuracy: np.ndarray
    test_accuracy: np.ndarray
    small_batch_size: int
    small_batch_train_accuracy: np.ndarray
    small_batch_test_accuracy: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        """The generalization gap, train − test accuracy, (seeds, sizes)."""
        return self.train_accuracy - self.test_accuracy

    def column(self, size: int) -> int:
        """Index of virtual batch size ``size`` in ``sizes``."""
        matches = np.flatnonzero(self.sizes == size)
        if len(matches) == 0:
            raise ValueError(f"virtual batch size {size} was not run; sizes are {self.sizes.tolist()}.")
        return int(matches[0])


def _train_and_score(net: nn.Module, ds: data.Dataset, steps: int, lr: float, batch_size: int, seed: int
                     ) -> tuple[float, float]:
    train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=steps, progress=False,
                device="cpu")
    return train.evaluate(net, ds, split="train")[1], train.evaluate(net, ds)[1]


def ghost_batch_training(seeds: Sequence[int] = (0, 1, 2), batch_size: int = 512,
                         sizes: Sequence[int] = (4, 16, 64, 512), steps: int = 100, lr: float = 0.1,
                         small_batch_size: int = 32, progress: bool = False) -> GhostTrainingRecord:
    """Train the chapter's MLP with batches of ``batch_size`` normalized in ghost batches of each of ``sizes``.

    Hoffer, Hubara & Soudry's setting at the scale of digits: one large batch (512 of the 1437 training
    images), :class:`GhostBatchNorm1d` after each hidden layer, plain SGD at ``lr`` for ``steps`` steps
    (about 36 epochs), from the same seeded weights and through the same batches for every ghost size of a
    seed. Every size must divide ``batch_size`` (every ghost batch full) and the largest must equal it.
    The reference: plain BN on batches of ``small_batch_size`` for the same number of epochs.
    Chapter ``12_batchnorm_at_scale``.
    """
    sizes = [int(size) for size in sizes]
    if any(size < 2 or batch_size % size for size in sizes) or max(sizes) != batch_size:
        raise ValueError(f"every virtual batch size must be at least 2 and divide batch_size={batch_size}, and the "
                         f"largest must equal it (plain BatchNorm, the baseline); got {sizes}.")
    if batch_size % small_batch_size:
        raise ValueError(f"small_batch_size={small_batch_size} must divide batch_size={batch_size}, so that the "
                         "reference trains for the same number of epochs.")
    scores, small = [], []
    with tqdm(total=len(seeds) * (len(sizes) + 1), disable=not progress, desc="ghost batches", leave=False) as bar:
        for seed in seeds:
            ds = data.digits(seed=seed)
            row = []
            for size in sizes:
                row.append(_train_and_score(ghost_batchnorm_mlp(size, ds, seed), ds, steps, lr, batch_size, seed))
                bar.update(1)
            scores.append(row)
            small.append(_train_and_score(_mlp(BatchNorm1d, ds, seed), ds, steps * batch_size // small_batch_size,
                                          lr, small_batch_size, seed))
            bar.update(1)
    scores_array, small_array = np.asarray(scores), np.asarray(small)
    return GhostTrainingRecord(
        seeds=np.asarray(seeds), sizes=np.asarray(sizes), batch_size=batch_size, steps=steps, lr=lr,
        train_accuracy=scores_array[:, :, 0], test_accuracy=scores_array[:, :, 1], small_batch_size=small_batch_size,
        small_batch_train_accuracy=small_array[:, 0], small_batch_test_accuracy=small_array[:, 1])


def tiny_ghost_batches_hurt(record: GhostTrainingRecord, size: int = 4, drop_at_least: float = 0.008) -> Claim:
    """Claim: ghost batches of ``size`` lower the test accuracy of the full batch's plain BN by at least
    ``drop_at_least`` on average over the seeds (paired by seed). ``measured`` is that mean drop."""
    drop = float(np.mean(record.test_accuracy[:, -1] - record.test_accuracy[:, record.column(size)]))
    return Claim(drop >= drop_at_least, drop, drop_at_least)


def moderate_ghost_batches_change_nothing(record: GhostTrainingRecord, sizes: Sequence[int] = (16, 64),
                                          within: float = 0.01) -> Claim:
    """Claim: ghost batches of ``sizes`` change neither the test accuracy nor the generalization gap of plain
    BN on the full batch by more than ``within`` on average over the seeds (paired by seed; 0.01 is 3.6 of the
    360 test images). ``measured`` is the largest mean change, in absolute value."""
    changes = [abs(float(np.mean(values[:, record.column(size)] - values[:, -1])))
               for size in sizes for values in (record.test_accuracy, record.gap)]
    largest = max(changes)
    return Claim(largest <= within, largest, within)


def little_large_batch_gap_to_close(record: GhostTrainingRecord, at_most: float = 0.015) -> Claim:
    """Claim: the small-batch reference beats plain BN on the large batch in test accuracy by at most
    ``at_most`` on average over the seeds: there is little of Hoffer et al.'s large-batch generalization gap
    to close at this scale. ``measured`` is the mean advantage of the small batch."""
    advantage = float(np.mean(record.small_batch_test_accuracy - record.test_accuracy[:, -1]))
    return Claim(advantage <= at_most, advantage, at_most)


# ----------------------------------------------------------------------------
# 3. Non-i.i.d. batches


@dataclass
class NonIIDRecord:
    """Final eval-mode test accuracy of each normalizer trained on batches of ``classes_per_batch`` classes
    (``accuracy[name]``), and of BatchNorm on i.i.d. batches (``accuracy["batch, i.i.d."]``);
    ``train_mode_accuracy[name]`` is the accuracy on the test set in training mode, in batches built the
    same non-i.i.d. way (what the network saw while learning). ``renorm_schedule``: the keyword arguments
    (``warmup_steps``, ``d_max_steps``, ``r_max_steps``) Batch Renorm trained with, and ``renorm_momentum`` its α."""

    classes_per_batch: int
    batch_size: int
    steps: int
    accuracy: dict
    train_mode_accuracy: dict
    renorm_schedule: dict
    renorm_momentum: float


def _class_batches(ds_y: torch.Tensor, classes_per_batch: int, batch_size: int, steps: int, generator: torch.Generator):
    """Batches whose examples come from ``classes_per_batch`` randomly chosen classes, in equal parts."""
    by_class = [torch.nonzero(ds_y == c).flatten() for c in range(int(ds_y.max()) + 1)]
    per_class = batch_size // classes_per_batch
    for _ in range(steps):
        chosen = torch.randperm(len(by_class), generator=generator)[:classes_per_batch]
        parts = [by_class[c][torch.randint(len(by_class[c]), (per_class,), generator=generator)] for c in chosen]
        yield torch.cat(parts)


def non_iid_batches(seed: int = 0, classes_per_batch: int = 2, batch_size: int = 32, steps: int = 600,
                    lr: float = 0.1, groups: int = 8) -> NonIIDRecord:
    """Train on batches drawn from ``classes_per_batch`` classes at a time; evaluate on the usual test set.

    Normalizers: BatchNorm, Batch Renormalization (r_max = 3, d_max = 5 as the paper, its
    5k/25k/40k-step schedule scaled to ``steps`` by :func:`scaled_renorm_schedule`: plain BN for the first
    eighth, d_max reached at five eighths, r_max at the end, linear ramps in between; momentum 0.01, the
    paper's α), GroupNorm with ``groups`` groups, and BatchNorm on i.i.d. batches as the reference. All start
    from the same seeded weights and see batches from the same generator. Chapter ``12_batchnorm_at_scale``.
    """
    ds = data.digits(seed=seed)
    schedule, renorm_momentum = scaled_renorm_schedule(steps), 0.01

    def renorm(width):
        return BatchRenorm1d(width, momentum=renorm_momentum, **schedule)

    norms = {"batch": BatchNorm1d, "renorm": renorm, "group": lambda width: GroupNorm(groups, width)}
    accuracy, train_mode = {}, {}
    for name, norm in norms.items():
        net = _mlp(norm, ds, seed)
        batches = _class_batches(ds.y_train, classes_per_batch, batch_size, steps, torch.Generator().manual_seed(seed))
        history = train.train(net, ds, steps=steps, lr=lr, batches=batches, eval_every=steps, progress=False,
                              device="cpu")
        accuracy[name] = history.final_test_accuracy
        train_mode[name] = _train_mode_accuracy(net, ds, classes_per_batch, batch_size, seed)
    net = _mlp(BatchNorm1d, ds, seed)
    history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, eval_every=steps,
                          progress=False, device="cpu")
    accuracy["batch, i.i.d."] = history.final_test_accuracy
    return NonIIDRecord(classes_per_batch=classes_per_batch, batch_size=batch_size, steps=steps, accuracy=accuracy,
                        train_mode_accuracy=train_mode, renorm_schedule=schedule, renorm_momentum=renorm_momentum)


def _train_mode_accuracy(net: nn.Module, ds: data.Dataset, classes_per_batch: int, batch_size: int, seed: int) -> float:
    """Test accuracy in training mode (no running-statistics update kept), test batches of a few classes."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    generator = torch.Generator().manual_seed(seed + 1)
    correct = total = 0
    for batch in _class_batches(ds.y_test, classes_per_batch, batch_size, 20, generator):
        with torch.no_grad():
            correct += (net(ds.x_test[batch]).argmax(1) == ds.y_test[batch]).sum().item()
        total += len(batch)
    net.load_state_dict(state)
    return correct / total


def non_iid_batches_break_batchnorm(record: NonIIDRecord, drop_at_least: float = 0.1) -> Claim:
    """Claim: BatchNorm trained on batches of few classes depends on the batch it is in: its training-mode
    accuracy on test batches built the same way is at least ``drop_at_least`` below its eval-mode accuracy.
    ``measured`` is the drop."""
    drop = record.accuracy["batch"] - record.train_mode_accuracy["batch"]
    return Claim(bool(drop >= drop_at_least), float(drop), drop_at_least)


def renorm_and_groupnorm_recover(record: NonIIDRecord, within: float = 0.05) -> Claim:
    """Claim: Batch Renormalization and GroupNorm trained on the same batches give the same accuracy in
    training and eval mode (within ``within``) and at least BatchNorm's eval-mode accuracy minus ``within``.
    ``measured`` is the largest train/eval difference of the two."""
    difference = max(abs(record.accuracy[n] - record.train_mode_accuracy[n]) for n in ("renorm", "group"))
    not_worse = min(record.accuracy["renorm"], record.accuracy["group"]) >= record.accuracy["batch"] - within
    return Claim(bool(difference <= within and not_worse), float(difference), within)


def ghost_batchnorm_mlp(virtual_batch_size: int, ds: data.Dataset, seed: int) -> nn.Sequential:
    """The chapter's MLP with :class:`GhostBatchNorm1d` of the given virtual batch size."""
    return _mlp(lambda width: GhostBatchNorm1d(width, virtual_batch_size), ds, seed)
