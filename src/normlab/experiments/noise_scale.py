"""Experiments of chapter ``04_internal_covariate_shift``: the noise scale of SGD, η/B.

Smith & Le (2018) and Jastrzębski et al. (2017) model SGD with learning rate η and batch
size B on N examples as gradient descent plus noise whose scale grows like η/B (Smith & Le's
g = η(N/B − 1) ≈ ηN/B when B ≪ N). Two predictions follow: runs with the same η/B trained for
the same number of epochs end in the same place, and a larger η/B (a larger learning rate or
a smaller batch) regularizes, so it should generalize better.

- :func:`noise_scale_grid`: the BN sigmoid MLP of chapter ``03_batchnorm_experiments`` on the
  digits, trained for a fixed number of epochs on a grid of batch sizes and ratios η/B.
  Claims: :func:`same_ratio_same_training_loss` (the first prediction) and
  :func:`larger_ratio_no_better_test_accuracy` (the second, which does not reproduce here).

Chapter ``12_batchnorm_at_scale`` measures the other noise that the batch size sets in a BN
network, the noise of the batch statistics (ghost batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from normlab import data, train
from normlab.experiments._common import Claim, sigmoid_mlp

__all__ = [
    "BATCH_SIZES",
    "RATIOS",
    "NoiseScaleRecord",
    "larger_ratio_no_better_test_accuracy",
    "noise_scale_grid",
    "same_ratio_same_training_loss",
]

#: Batch sizes of the grid: a factor 4 apart, both well below the 1437 training examples.
BATCH_SIZES = (32, 128)
#: Ratios η/B of the grid, a factor 4 apart (η from 1/16 to 4).
RATIOS = (1 / 512, 1 / 128, 1 / 32)


@dataclass
class NoiseScaleRecord:
    """Final results of :func:`noise_scale_grid`; arrays are indexed ``[batch size, ratio]``.

    Losses and accuracies are measured in eval mode on the whole training or test set, as the
    median over the ends of the last few of the ``epochs`` epochs; ``lr[i, j] = ratios[j] · batch_sizes[i]`` and ``steps[i]`` is the
    number of SGD steps at batch size ``batch_sizes[i]``.
    """

    batch_sizes: np.ndarray
    ratios: np.ndarray
    lr: np.ndarray
    steps: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    num_train: int
    epochs: int


def _train_and_measure(net: nn.Module, ds: data.Dataset, lr: float, batch_size: int, epochs: int, seed: int,
                       last: int) -> np.ndarray:
    """Plain minibatch SGD for ``epochs`` epochs; (train loss, train acc, test loss, test acc) at the end of each
    of the ``last`` epochs, shape ``(last, 4)``.

    The minibatches come from :func:`normlab.data.epoch_batches` seeded by ``seed``. A bare loop
    rather than :func:`normlab.train.train`, which also logs every step: the grid runs about
    3000 steps per seed and has to fit the chapter's time budget.
    """
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    per_epoch = len(ds.x_train) // batch_size
    batches = data.epoch_batches(len(ds.x_train), batch_size, torch.Generator().manual_seed(seed))
    measured = []
    for epoch in range(1, epochs + 1):
        net.train()
        # own loop: no per-step log (train.train records every step's loss and accuracy), for the time budget
        for _, idx in zip(range(per_epoch), batches):
            loss = nn.functional.cross_entropy(net(ds.x_train[idx]), ds.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if epoch > epochs - last:
            measured.append(train.evaluate(net, ds, split="train") + train.evaluate(net, ds))
    return np.asarray(measured)


def noise_scale_grid(seed: int = 0, epochs: int = 20, batch_sizes: Sequence[int] = BATCH_SIZES,
                     ratios: Sequence[float] = RATIOS, last: int = 5) -> NoiseScaleRecord:
    """Train the BN sigmoid MLP for ``epochs`` epochs at every (B, η = ratio · B) of the grid.

    Every run starts from the same seeded weights (:func:`normlab.experiments._common.sigmoid_mlp`
    with BN) and draws its minibatches from a generator seeded by ``seed``; a run at batch size
    B takes ``epochs · (N // B)`` steps, so runs at one ratio cover the same number of epochs
    with the same η·steps. Each result is the median over the ends of the ``last`` epochs, so
    that one noisy final step at a large learning rate does not decide it.
    Chapter ``04_internal_covariate_shift``.
    """
    ds = data.digits(seed=seed)
    n = len(ds.x_train)
    runs = np.stack([np.stack([np.median(_train_and_measure(sigmoid_mlp("batch", ds.num_features, ds.num_classes,
                                                                        seed), ds, r * b, b, epochs, seed, last),
                                         axis=0)
                               for r in ratios]) for b in batch_sizes])         # (batch size, ratio, 4)
    return NoiseScaleRecord(batch_sizes=np.asarray(batch_sizes), ratios=np.asarray(ratios, dtype=np.float64),
                            lr=np.outer(batch_sizes, ratios), steps=np.array([epochs * (n // b) for b in batch_sizes]),
                            train_loss=runs[..., 0], train_accuracy=runs[..., 1], test_loss=runs[..., 2],
                            test_accuracy=runs[..., 3], num_train=n, epochs=epochs)


def same_ratio_same_training_loss(record: NoiseScaleRecord, agree: float = 1.3, apart: float = 2.0,
                                  ratios: int = 2) -> Claim:
    """At the same η/B the batch sizes end at the same training loss; at another η/B they do not.

    Over the ``ratios`` smallest ratios of the grid: ``agree_measured``, the largest factor
    between the final training losses of two batch sizes at one ratio, and ``apart_measured``,
    the smallest factor between the losses of one batch size at two neighbouring ratios (a
    factor 4 in η/B). Holds when the first is at most ``agree`` and the second at least
    ``apart``. Chapter ``04_internal_covariate_shift``.
    """
    loss = record.train_loss[:, :ratios]
    same = float(np.max(loss.max(axis=0) / loss.min(axis=0)))
    other = float(np.min(loss[:, :-1] / loss[:, 1:]))
    return Claim(same <= agree and other >= apart, (same, other), (agree, apart))


def larger_ratio_no_better_test_accuracy(record: NoiseScaleRecord, at_most: float = 0.02) -> Claim:
    """A 16 times larger η/B does not raise the test accuracy by more than ``at_most`` (absolute).

    Measured: the test accuracy at the largest ratio minus that at the smallest, averaged over
    the batch sizes. The prediction that a larger noise scale generalizes better would make
    this clearly positive; on the digits it is not. Chapter ``04_internal_covariate_shift``.
    """
    gain = float(np.mean(record.test_accuracy[:, -1] - record.test_accuracy[:, 0]))
    return Claim(gain <= at_most, gain, at_most)
