"""The one training loop every chapter uses, and the record it returns.

- :func:`default_device`: CUDA when available, else the CPU.
- :class:`History`: per-step training loss and accuracy, periodic test metrics.
- :func:`train`: minibatch SGD or Adam on a :class:`normlab.data.Dataset`.

The loop is deterministic: minibatches come from a ``torch.Generator`` seeded by
``seed`` (never the global RNG), so the same seed and the same initial model give
the same :class:`History`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from normlab.data import Dataset

__all__ = ["History", "Hook", "default_device", "train"]

#: A hook is called after every optimizer step as ``hook(step, model, loss_value)``.
Hook = Callable[[int, nn.Module, float], None]

OPTIMIZERS = ("sgd", "adam")


def default_device() -> torch.device:
    """The device experiments run on by default: CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class History:
    """What happened during one call to :func:`train`.

    ``loss[i]`` and ``accuracy[i]`` are the loss and accuracy of the minibatch of
    step ``i + 1``, measured before that step's update. ``test_loss[j]`` and
    ``test_accuracy[j]`` are measured after ``eval_steps[j]`` updates (step 0 is the
    initial model). Accuracies are NaN for regression. If ``diverged``, training
    stopped at the first step whose loss was non-finite or above the threshold.
    Used by every chapter that trains a network.
    """

    loss: np.ndarray
    accuracy: np.ndarray
    eval_steps: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    diverged: bool
    seconds: float

    @property
    def steps_run(self) -> int:
        """Number of optimizer steps taken (fewer than requested if training diverged)."""
        return len(self.loss)

    @property
    def final_test_loss(self) -> float:
        """Test loss at the last evaluation (the final step run)."""
        return float(self.test_loss[-1])

    @property
    def final_test_accuracy(self) -> float:
        """Test accuracy at the last evaluation (the final step run); NaN for regression."""
        return float(self.test_accuracy[-1])


def _validate(
    model: nn.Module,
    data: Dataset,
    steps: int,
    lr: float,
    batch_size: int,
    optimizer: str,
    momentum: float,
    weight_decay: float,
    eval_every: int,
    divergence_threshold: float,
) -> None:
    """Raise a ValueError naming the first bad argument to :func:`train`."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1; got {steps}.")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0; got {lr}.")
    num_train = len(data.x_train)
    if not 1 <= batch_size <= num_train:
        raise ValueError(
            f"batch_size must lie between 1 and the training set size ({num_train}) of {data.name!r}; "
            f"got {batch_size}."
        )
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; choose one of {list(OPTIMIZERS)}.")
    if optimizer == "sgd" and not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must lie in [0, 1); got {momentum}.")
    if optimizer == "adam" and momentum != 0.0:
        raise ValueError(
            f"momentum={momentum} applies only to optimizer='sgd'; Adam keeps its own moving averages. "
            "Leave momentum at 0 with optimizer='adam'."
        )
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0; got {weight_decay}.")
    if eval_every < 1:
        raise ValueError(f"eval_every must be at least 1; got {eval_every}.")
    if not divergence_threshold > 0:
        raise ValueError(f"divergence_threshold must be > 0; got {divergence_threshold}.")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"The model ({type(model).__name__}) has no parameters to train.")


def _make_optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def _predictions(outputs: torch.Tensor, data: Dataset) -> torch.Tensor:
    """Model outputs as logits (n, num_classes) or regression predictions (n,), checking the width."""
    width = outputs.shape[-1] if outputs.ndim == 2 else None
    if data.num_classes is not None:
        if width != data.num_classes:
            raise ValueError(
                f"The model outputs {width if width is not None else tuple(outputs.shape)} values per example "
                f"but {data.name!r} has {data.num_classes} classes; build the model with "
                f"out_features={data.num_classes}."
            )
        return outputs
    if outputs.ndim == 1:
        return outputs
    if width != 1:
        raise ValueError(
            f"The model outputs {width if width is not None else tuple(outputs.shape)} values per example but "
            f"{data.name!r} is a regression problem with one target; build the model with out_features=1."
        )
    return outputs[:, 0]


def _loss(predictions: torch.Tensor, targets: torch.Tensor, classification: bool) -> torch.Tensor:
    """Cross-entropy for classification, mean squared error for regression."""
    if classification:
        return F.cross_entropy(predictions, targets)
    return F.mse_loss(predictions, targets)


def _evaluate(model: nn.Module, data: Dataset) -> tuple[float, float]:
    """Test loss and accuracy (NaN for regression) in eval mode; leaves the model in train mode."""
    model.eval()
    try:
        with torch.no_grad():
            predictions = _predictions(model(data.x_test), data)
            loss = _loss(predictions, data.y_test, data.is_classification).item()
            accuracy = math.nan
            if data.is_classification:
                accuracy = (predictions.argmax(dim=1) == data.y_test).float().mean().item()
    finally:
        model.train()
    return loss, accuracy


def train(
    model: nn.Module,
    data: Dataset,
    *,
    steps: int,
    lr: float,
    batch_size: int = 64,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    eval_every: int = 50,
    hooks: Sequence[Hook] = (),
    progress: bool = True,
    device: torch.device | str | None = None,
    divergence_threshold: float = 1e6,
    desc: str | None = None,
) -> History:
    """Train ``model`` on ``data`` for ``steps`` minibatch steps and record what happened.

    Each epoch visits the training set in a fresh random order drawn from a
    generator seeded by ``seed``, in batches of exactly ``batch_size`` (the
    incomplete last batch of an epoch is skipped). The loss is cross-entropy when
    ``data.num_classes`` is set, else mean squared error. After every optimizer
    step each hook is called as ``hook(step, model, loss_value)`` with the step
    number (from 1) and that step's minibatch loss. The test set is evaluated in
    eval mode at step 0, every ``eval_every`` steps and at the last step run. If
    a step's loss is non-finite or exceeds ``divergence_threshold``, training
    stops after that step (its update applied, its hooks called, the test set
    evaluated) and ``History.diverged`` is True; nothing is raised.

    The model is moved to ``device`` (default :func:`default_device`) in place,
    trained in place and left in train mode.
    Used by every chapter that trains a network; introduced in chapter "Batch
    normalization".
    """
    _validate(model, data, steps, lr, batch_size, optimizer, momentum, weight_decay, eval_every, divergence_threshold)
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    data = data.to(device)
    classification = data.is_classification
    opt = _make_optimizer(model, optimizer, lr, momentum, weight_decay)
    generator = torch.Generator().manual_seed(seed)
    num_train = len(data.x_train)
    batches_per_epoch = num_train // batch_size
    postfix_every = max(1, steps // 20)

    losses = np.full(steps, np.nan)
    accuracies = torch.full((steps,), math.nan, device=device)
    eval_steps: list[int] = []
    test_losses: list[float] = []
    test_accuracies: list[float] = []

    def evaluate(step: int) -> None:
        test_loss, test_accuracy = _evaluate(model, data)
        eval_steps.append(step)
        test_losses.append(test_loss)
        test_accuracies.append(test_accuracy)

    start = time.perf_counter()
    model.train()
    evaluate(0)  # also checks the model's output width against the data
    diverged = False
    steps_run = 0
    order = torch.empty(0, dtype=torch.int64, device=device)
    with tqdm(total=steps, disable=not progress, desc=desc, leave=False) as bar:
        for step in range(1, steps + 1):
            position = (step - 1) % batches_per_epoch
            if position == 0:
                order = torch.randperm(num_train, generator=generator).to(device)
            batch = order[position * batch_size : (position + 1) * batch_size]
            inputs, targets = data.x_train[batch], data.y_train[batch]

            predictions = _predictions(model(inputs), data)
            loss = _loss(predictions, targets, classification)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

            loss_value = loss.item()  # the one host sync per step: hooks and the divergence test need it
            losses[step - 1] = loss_value
            if classification:
                accuracies[step - 1] = (predictions.detach().argmax(dim=1) == targets).float().mean()
            steps_run = step
            for hook in hooks:
                hook(step, model, loss_value)
            bar.update(1)

            diverged = not math.isfinite(loss_value) or loss_value > divergence_threshold
            if diverged or step % eval_every == 0 or step == steps:
                evaluate(step)
            if diverged:
                break
            if step % postfix_every == 0:
                window = losses[step - postfix_every : step]
                bar.set_postfix(loss=f"{window.mean():.4g}", refresh=False)

    seconds = time.perf_counter() - start
    return History(
        loss=losses[:steps_run].copy(),
        accuracy=accuracies[:steps_run].cpu().numpy().astype(np.float64),
        eval_steps=np.asarray(eval_steps, dtype=np.int64),
        test_loss=np.asarray(test_losses, dtype=np.float64),
        test_accuracy=np.asarray(test_accuracies, dtype=np.float64),
        diverged=diverged,
        seconds=seconds,
    )
