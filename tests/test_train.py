"""Tests for normlab.train: the training loop's record, determinism and safeguards."""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normlab import data
from normlab.data import Dataset
from normlab.models import mlp
from normlab.train import History, default_device, train

train_module = importlib.import_module("normlab.train")  # the module, even if the package re-exports train()


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    """Tiny models train far faster on one thread, especially on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gaussians() -> Dataset:
    return data.gaussian_classification(num_samples=600, num_features=10, num_classes=3, separation=4.0, seed=1)


def _fit(model: nn.Module, dataset: Dataset, **kwargs) -> History:
    options = {"steps": 60, "lr": 0.1, "batch_size": 32, "progress": False, "device": "cpu"}
    return train(model, dataset, **(options | kwargs))


def _assert_same_history(a: History, b: History) -> None:
    for field in ("loss", "accuracy", "eval_steps", "test_loss", "test_accuracy"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    assert a.diverged == b.diverged


def test_train_reduces_loss_on_separable_gaussians(gaussians: Dataset) -> None:
    history = _fit(mlp(10, [32], 3), gaussians, steps=200)
    assert history.loss[-20:].mean() < 0.25 * history.loss[:5].mean()
    assert history.test_loss[-1] < 0.25 * history.test_loss[0]
    assert history.final_test_accuracy > 0.95
    assert not history.diverged


def test_train_with_adam_and_momentum_also_learns(gaussians: Dataset) -> None:
    adam = _fit(mlp(10, [32], 3), gaussians, optimizer="adam", lr=0.01, steps=100)
    momentum = _fit(mlp(10, [32], 3), gaussians, momentum=0.9, lr=0.02, steps=100)
    plain = _fit(mlp(10, [32], 3), gaussians, lr=0.02, steps=100)
    assert adam.final_test_accuracy > 0.95 and momentum.final_test_accuracy > 0.95
    assert not np.array_equal(momentum.loss, plain.loss)


def test_weight_decay_shrinks_the_weights(gaussians: Dataset) -> None:
    plain, decayed = mlp(10, [32], 3), mlp(10, [32], 3)
    _fit(plain, gaussians, steps=100)
    _fit(decayed, gaussians, steps=100, weight_decay=0.1)
    assert decayed.linear0.weight.norm() < plain.linear0.weight.norm()


def test_train_is_deterministic_by_seed(gaussians: Dataset) -> None:
    first = _fit(mlp(10, [16], 3, seed=3), gaussians, seed=9)
    again = _fit(mlp(10, [16], 3, seed=3), gaussians, seed=9)
    _assert_same_history(first, again)
    other = _fit(mlp(10, [16], 3, seed=3), gaussians, seed=10)
    assert not np.array_equal(first.loss, other.loss)


def test_train_leaves_global_rng_untouched(gaussians: Dataset) -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    _fit(mlp(10, [16], 3), gaussians, steps=10)
    assert torch.equal(torch.get_rng_state(), before)


def test_train_flags_divergence_at_huge_learning_rate(gaussians: Dataset) -> None:
    history = _fit(mlp(10, [32, 32], 3), gaussians, lr=1e4, steps=200, eval_every=5)
    assert history.diverged
    assert 1 <= history.steps_run < 200
    assert len(history.loss) == len(history.accuracy) == history.steps_run
    last = history.loss[-1]
    assert not math.isfinite(last) or last > 1e6
    assert np.all(np.isfinite(history.loss[:-1]) & (history.loss[:-1] <= 1e6))
    assert history.eval_steps[0] == 0 and history.eval_steps[-1] == history.steps_run


def test_train_stops_when_loss_exceeds_divergence_threshold(gaussians: Dataset) -> None:
    history = _fit(mlp(10, [16], 3), gaussians, divergence_threshold=1e-3)
    assert history.diverged and history.steps_run == 1
    assert history.eval_steps.tolist() == [0, 1]


def test_hooks_are_called_every_step(gaussians: Dataset) -> None:
    calls: list[tuple[int, nn.Module, float]] = []
    model = mlp(10, [16], 3)
    history = _fit(model, gaussians, steps=37, hooks=[lambda step, m, loss: calls.append((step, m, loss))])
    assert [step for step, _, _ in calls] == list(range(1, 38))
    assert all(m is model for _, m, _ in calls)
    np.testing.assert_array_equal([loss for _, _, loss in calls], history.loss)


def test_hooks_see_the_model_after_each_update(gaussians: Dataset) -> None:
    model = mlp(10, [16], 3)
    initial = model.output.weight.detach().clone()
    changed: list[bool] = []
    _fit(model, gaussians, steps=3, hooks=[lambda s, m, l: changed.append(not torch.equal(m.output.weight, initial))])
    assert changed == [True, True, True]


def test_eval_schedule_includes_start_every_interval_and_final_step(gaussians: Dataset) -> None:
    history = _fit(mlp(10, [16], 3), gaussians, steps=120, eval_every=50)
    assert history.eval_steps.tolist() == [0, 50, 100, 120]
    assert len(history.test_loss) == len(history.test_accuracy) == 4
    assert history.steps_run == 120 and len(history.loss) == 120


def test_history_holds_float_numpy_arrays_on_cpu(gaussians: Dataset) -> None:
    history = _fit(mlp(10, [16], 3), gaussians, steps=20)
    for field in ("loss", "accuracy", "test_loss", "test_accuracy"):
        value = getattr(history, field)
        assert isinstance(value, np.ndarray) and value.dtype == np.float64, field
    assert history.eval_steps.dtype == np.int64
    assert np.all((history.accuracy >= 0) & (history.accuracy <= 1))
    assert history.seconds > 0


def test_minibatch_accuracy_matches_the_predictions(gaussians: Dataset) -> None:
    """Accuracy of step 1 equals the accuracy of the untrained model on the first batch."""
    model = mlp(10, [16], 3)
    initial = mlp(10, [16], 3)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()) if m.training else None)
    history = _fit(model, gaussians, steps=1, batch_size=50)
    batch = seen[0]
    rows = (batch[:, None, :] == gaussians.x_train[None]).all(-1).nonzero()[:, 1]
    assert len(rows) == 50
    labels = gaussians.y_train[rows]
    expected = (initial(batch).argmax(1) == labels).float().mean().item()
    assert history.accuracy[0] == pytest.approx(expected)


def test_test_loss_is_cross_entropy_for_classification(gaussians: Dataset) -> None:
    model = mlp(10, [16], 3)
    with torch.no_grad():
        expected = F.cross_entropy(model(gaussians.x_test), gaussians.y_test).item()
        accuracy = (model(gaussians.x_test).argmax(1) == gaussians.y_test).float().mean().item()
    history = _fit(model, gaussians, steps=1)
    assert history.test_loss[0] == pytest.approx(expected, rel=1e-6)
    assert history.test_accuracy[0] == pytest.approx(accuracy)


def test_regression_uses_mean_squared_error_and_nan_accuracy() -> None:
    dataset = data.linear_regression(num_samples=300, num_features=4, noise=0.1, seed=0)
    model = mlp(4, [], 1)
    with torch.no_grad():
        expected = F.mse_loss(model(dataset.x_test)[:, 0], dataset.y_test).item()
    history = _fit(model, dataset, steps=200, lr=0.05)
    assert history.test_loss[0] == pytest.approx(expected, rel=1e-6)
    assert np.isnan(history.accuracy).all() and np.isnan(history.test_accuracy).all()
    assert math.isnan(history.final_test_accuracy)
    assert history.test_loss[-1] < 0.05  # noise variance is 0.01


def test_batches_are_drawn_without_replacement_each_epoch() -> None:
    n, batch_size = 40, 8
    ids = torch.arange(n, dtype=torch.float32)[:, None]
    dataset = Dataset("ids", ids, torch.zeros(n, dtype=torch.int64), ids[:4], torch.zeros(4, dtype=torch.int64), 2)
    batches: list[torch.Tensor] = []
    model = nn.Linear(1, 2)
    model.register_forward_pre_hook(lambda m, args: batches.append(args[0][:, 0].long()) if m.training else None)
    _fit(model, dataset, steps=15, batch_size=batch_size, lr=1e-3)
    assert all(len(b) == batch_size for b in batches)
    epoch0, epoch1 = torch.cat(batches[:5]), torch.cat(batches[5:10])
    assert sorted(epoch0.tolist()) == list(range(n)) == sorted(epoch1.tolist())
    assert not torch.equal(epoch0, epoch1)  # reshuffled every epoch


def test_incomplete_last_batch_of_an_epoch_is_skipped() -> None:
    n = 10
    ids = torch.arange(n, dtype=torch.float32)[:, None]
    dataset = Dataset("ids", ids, torch.zeros(n, dtype=torch.int64), ids[:2], torch.zeros(2, dtype=torch.int64), 2)
    sizes: list[int] = []
    model = nn.Linear(1, 2)
    model.register_forward_pre_hook(lambda m, args: sizes.append(len(args[0])) if m.training else None)
    _fit(model, dataset, steps=6, batch_size=4, lr=1e-3)
    assert sizes == [4] * 6


def test_evaluation_runs_in_eval_mode_without_gradients_and_training_resumes(gaussians: Dataset) -> None:
    calls: list[tuple[bool, bool, int]] = []
    model = mlp(10, [16], 3, norm=nn.BatchNorm1d)
    model.register_forward_hook(lambda m, i, o: calls.append((m.training, o.requires_grad, len(i[0]))))
    _fit(model, gaussians, steps=10, eval_every=5, batch_size=32)
    n_test = len(gaussians.x_test)
    assert [c for c in calls if not c[0]] == [(False, False, n_test)] * 3  # steps 0, 5, 10
    assert [c for c in calls if c[0]] == [(True, True, 32)] * 10
    assert model.training


def test_train_rejects_model_with_wrong_output_width(gaussians: Dataset) -> None:
    with pytest.raises(ValueError, match=r"outputs 2 values per example.*has 3 classes.*out_features=3"):
        _fit(mlp(10, [16], 2), gaussians)


def test_train_rejects_regression_model_with_several_outputs() -> None:
    dataset = data.linear_regression(num_samples=100, num_features=3)
    with pytest.raises(ValueError, match=r"outputs 2 values.*out_features=1"):
        _fit(mlp(3, [], 2), dataset)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 0}, "steps must be at least 1"),
        ({"lr": 0.0}, "lr must be"),
        ({"lr": float("nan")}, "lr must be"),
        ({"batch_size": 0}, r"between 1 and the training set size \(480\)"),
        ({"batch_size": 481}, r"between 1 and the training set size \(480\)"),
        ({"optimizer": "rmsprop"}, r"Unknown optimizer 'rmsprop'.*sgd.*adam"),
        ({"momentum": 1.0}, "momentum must lie"),
        ({"optimizer": "adam", "momentum": 0.9}, "only to optimizer='sgd'"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"eval_every": 0}, "eval_every"),
        ({"divergence_threshold": 0.0}, "divergence_threshold"),
    ],
)
def test_train_rejects_bad_arguments(gaussians: Dataset, options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _fit(mlp(10, [16], 3), gaussians, **options)


def test_progress_bar_shows_only_when_asked(gaussians: Dataset, capsys: pytest.CaptureFixture[str]) -> None:
    _fit(mlp(10, [16], 3), gaussians, steps=40, progress=True, desc="fitting")
    assert "fitting" in capsys.readouterr().err
    _fit(mlp(10, [16], 3), gaussians, steps=40, progress=False, desc="fitting")
    assert capsys.readouterr().err == ""


def test_progress_bar_shows_running_loss_occasionally(gaussians: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    postfixes: list[dict] = []

    class RecordingBar(train_module.tqdm):  # type: ignore[name-defined,misc]
        def set_postfix(self, *args, **kwargs):
            postfixes.append(kwargs)
            return super().set_postfix(*args, **kwargs)

    monkeypatch.setattr(train_module, "tqdm", RecordingBar)
    _fit(mlp(10, [16], 3), gaussians, steps=200, progress=True)
    assert 1 <= len(postfixes) <= 50
    assert all(float(p["loss"]) > 0 for p in postfixes)


def test_default_device_prefers_cuda_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_on_cuda_matches_shapes_and_learns(gaussians: Dataset) -> None:
    model = mlp(10, [32], 3)
    history = train(model, gaussians, steps=200, lr=0.1, batch_size=32, progress=False)
    assert next(model.parameters()).device.type == "cuda"
    assert isinstance(history.loss, np.ndarray) and history.final_test_accuracy > 0.95
