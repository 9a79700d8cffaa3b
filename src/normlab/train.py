"""The one training loop every chapter uses, and the record it returns.

- :func:`default_device`: CUDA when available, else the CPU.
- :class:`History`: per-step training loss and accuracy, periodic test metrics.
- :func:`train`: minibatch SGD or Adam on a :class:`normlab.data.Dataset`, with hooks
  after each step (:data:`Hook`) and between ``backward()`` and the step
  (:data:`GradientHook`), and optional parameter groups.
- :func:`evaluate`: test loss and accuracy in eval mode, the one test evaluation of the book.

The loop is deterministic: minibatches come from :func:`normlab.data.epoch_batches` with a
``torch.Generator`` seeded by ``seed`` (never the global RNG), so the same seed and the same
initial model give the same :class:`History`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from normlab.data import Dataset, epoch_batches
from normlab.probes import in_mode

__all__ = ["GradientHook", "History", "Hook", "default_device", "evaluate", "train"]

#: A hook is called after every optimizer step as ``hook(step, model, loss_value)``.
Hook = Callable[[int, nn.Module, float], None]

#: A gradient hook is called after ``backward()`` and before the optimizer step as
#: ``hook(step, model, inputs, targets)``: the gradients of the minibatch ``(inputs, targets)``
#: are in each parameter's ``.grad`` and the parameters are not yet updated.
GradientHook = Callable[[int, nn.Module, torch.Tensor, torch.Tensor], None]

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
    batch_size: int | None,
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
    if batch_size is not None and not 1 <= batch_size <= num_train:
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
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float,
    param_groups: Sequence[dict] | None = None,
) -> torch.optim.Optimizer:
    """torch's SGD or Adam over ``param_groups`` (every parameter of ``model`` if None); the
    other arguments are the defaults of every group that does not set its own."""
    params = model.parameters() if param_groups is None else [dict(group) for group in param_groups]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


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


def evaluate(model: nn.Module, data: Dataset, split: str = "test") -> tuple[float, float]:
    """Loss and accuracy (NaN for regression) of ``model`` on ``data``'s test split (or, with
    ``split="train"``, its training split).

    One forward pass in eval mode (BatchNorm with its running estimates) under
    ``torch.no_grad()``; every submodule's train/eval flag is restored afterwards
    (:func:`normlab.probes.in_mode`). The loss is the one :func:`train` minimizes; the
    accuracy is the fraction of examples whose largest logit is the label. The one
    evaluation of the book: experiments that train with their own loop evaluate with it too.
    Used by every chapter that trains a network; chapter ``02_batchnorm`` explains eval mode.
    """
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train'; got {split!r}.")
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    with in_mode(model, training=False), torch.no_grad():
        predictions = _predictions(model(x), data)
        loss = _loss(predictions, y, data.is_classification).item()
        accuracy = math.nan
        if data.is_classification:
            accuracy = (predictions.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


@dataclass
class _Log:
    """What :func:`train` records as it goes; :meth:`history` turns it into a :class:`History`."""

    steps: int
    device: torch.device
    losses: np.ndarray = field(init=False)
    accuracies: torch.Tensor = field(init=False)
    eval_steps: list[int] = field(default_factory=list)
    test_losses: list[float] = field(default_factory=list)
    test_accuracies: list[float] = field(default_factory=list)
    steps_run: int = 0

    def __post_init__(self) -> None:
        self.losses = np.full(self.steps, np.nan)
        # accuracies stay on the device: no host sync per step for them
        self.accuracies = torch.full((self.steps,), math.nan, device=self.device)

    def step(self, step: int, loss: float, predictions: torch.Tensor, targets: torch.Tensor,
             classification: bool) -> None:
        self.losses[step - 1] = loss
        if classification:
            self.accuracies[step - 1] = (predictions.detach().argmax(dim=1) == targets).float().mean()
        self.steps_run = step

    def evaluate(self, step: int, model: nn.Module, data: Dataset) -> None:
        test_loss, test_accuracy = evaluate(model, data)
        self.eval_steps.append(step)
        self.test_losses.append(test_loss)
        self.test_accuracies.append(test_accuracy)

    def history(self, diverged: bool, seconds: float) -> History:
        return History(
            loss=self.losses[: self.steps_run].copy(),
            accuracy=self.accuracies[: self.steps_run].cpu().numpy().astype(np.float64),
            eval_steps=np.asarray(self.eval_steps, dtype=np.int64),
            test_loss=np.asarray(self.test_losses, dtype=np.float64),
            test_accuracy=np.asarray(self.test_accuracies, dtype=np.float64),
            diverged=diverged,
            seconds=seconds,
        )


def _step(model: nn.Module, data: Dataset, batch: torch.Tensor, opt: torch.optim.Optimizer, step: int,
          before_step: Sequence[GradientHook], log: _Log) -> float:
    """One minibatch step: forward, backward, the gradient hooks, the update; returns the loss."""
    inputs, targets = data.x_train[batch], data.y_train[batch]
    predictions = _predictions(model(inputs), data)
    loss = _loss(predictions, targets, data.is_classification)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    for hook in before_step:
        hook(step, model, inputs, targets)
    opt.step()
    loss_value = loss.item()  # the one host sync per step: hooks and the divergence test need it
    log.step(step, loss_value, predictions, targets, data.is_classification)
    return loss_value


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
    param_groups: Sequence[dict] | None = None,
    before_step: Sequence[GradientHook] = (),
    batches: Iterator[torch.Tensor] | None = None,
) -> History:
    """Train ``model`` on ``data`` for ``steps`` minibatch steps and record what happened.

    Minibatches come from :func:`normlab.data.epoch_batches` seeded by ``seed``: each epoch
    a fresh random order, batches of exactly ``batch_size``, the incomplete last one skipped;
    or, if given, from ``batches`` (index tensors into the training set, at least ``steps``
    of them; the loop draws no more than it uses). The loss is cross-entropy when
    ``data.num_classes`` is set, else mean squared error. After ``backward()`` and before
    the update each ``before_step`` hook is called as ``hook(step, model, inputs, targets)``;
    after the update each hook of ``hooks`` as ``hook(step, model, loss_value)`` with the
    step number (from 1) and that step's minibatch loss. ``param_groups`` (torch.optim's
    groups, each a dict with ``"params"``) give groups their own ``lr`` or ``weight_decay``;
    ``lr``, ``momentum`` and ``weight_decay`` are the defaults. The test set is evaluated
    (:func:`evaluate`) at step 0, every ``eval_every`` steps and at the last step run. If a
    step's loss is non-finite or exceeds ``divergence_threshold``, training stops after that
    step (update applied, hooks called, test set evaluated) and ``History.diverged`` is True.

    The model is moved to ``device`` (default :func:`default_device`) in place, trained in
    place and left in train mode. Used by every chapter that trains a network; introduced in
    chapter ``02_batchnorm``.
    """
    _validate(model, data, steps, lr, None if batches is not None else batch_size, optimizer, momentum,
              weight_decay, eval_every, divergence_threshold)
    device = torch.device(device) if device is not None else default_device()
    model.to(device)
    data = data.to(device)
    opt = _make_optimizer(model, optimizer, lr, momentum, weight_decay, param_groups)
    if batches is None:
        batches = epoch_batches(len(data.x_train), batch_size, torch.Generator().manual_seed(seed))
    log = _Log(steps, device)
    postfix_every = max(1, steps // 20)
    start = time.perf_counter()
    model.train()
    log.evaluate(0, model, data)  # also checks the model's output width against the data
    diverged = False
    with tqdm(total=steps, disable=not progress, desc=desc, leave=False) as bar:
        for step, batch in zip(range(1, steps + 1), batches):  # range first: no batch drawn beyond steps
            loss_value = _step(model, data, batch.to(device), opt, step, before_step, log)
            for hook in hooks:
                hook(step, model, loss_value)
            bar.update(1)
            diverged = not math.isfinite(loss_value) or loss_value > divergence_threshold
            if diverged or step % eval_every == 0 or step == steps:
                log.evaluate(step, model, data)
            if diverged:
                break
            if step % postfix_every == 0:
                bar.set_postfix(loss=f"{log.losses[step - postfix_every : step].mean():.4g}", refresh=False)
    return log.history(diverged, time.perf_counter() - start)
