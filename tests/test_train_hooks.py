"""The pieces of normlab.train.train that other loops used to copy: gradient hooks, parameter groups,
a given batch sampler, data.epoch_batches, train.evaluate and probes.in_mode."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from normlab import data
from normlab.models import mlp
from normlab.probes import in_mode
from normlab.train import evaluate, train


@pytest.fixture(scope="module")
def gaussians() -> data.Dataset:
    return data.gaussian_classification(num_samples=200, num_features=6, num_classes=3, separation=3.0, seed=2)


def _fit(model: nn.Module, dataset: data.Dataset, **kwargs):
    options = {"steps": 12, "lr": 0.1, "batch_size": 16, "progress": False, "device": "cpu"}
    return train(model, dataset, **(options | kwargs))


def test_gradient_hooks_see_the_batch_gradients_before_the_update(gaussians) -> None:
    model = mlp(6, [8], 3, seed=0)
    seen = []

    def before_step(step, net, inputs, targets):
        weight = net.linear0.weight
        expected = torch.autograd.grad(nn.functional.cross_entropy(net(inputs), targets), weight)[0]
        seen.append((step, weight.detach().clone(), torch.allclose(weight.grad, expected), len(inputs)))

    after = []
    _fit(model, gaussians, before_step=[before_step], hooks=[lambda s, net, loss: after.append(
        net.linear0.weight.detach().clone())])
    assert [s for s, *_ in seen] == list(range(1, 13))
    assert all(matches and size == 16 for _, _, matches, size in seen)
    for (_, before, _, _), updated in zip(seen, after):
        assert not torch.equal(before, updated)  # the hook ran before the step changed the weights
    for (_, before, _, _), previous in zip(seen[1:], after):
        assert torch.equal(before, previous)


def test_parameter_groups_set_their_own_learning_rate_and_decay(gaussians) -> None:
    model = mlp(6, [8], 3, seed=0)
    frozen = model.linear0.weight.detach().clone()
    others = [p for name, p in model.named_parameters() if name != "linear0.weight"]
    before = [p.detach().clone() for p in others]
    _fit(model, gaussians, param_groups=[{"params": [model.linear0.weight], "lr": 0.0, "weight_decay": 0.0},
                                         {"params": others}])
    assert torch.equal(model.linear0.weight, frozen)
    assert all(not torch.equal(p, b) for p, b in zip(others, before))


def test_param_groups_reproduce_the_default_optimizer(gaussians) -> None:
    a, b = mlp(6, [8], 3, seed=0), mlp(6, [8], 3, seed=0)
    plain = _fit(a, gaussians, weight_decay=1e-2)
    grouped = _fit(b, gaussians, weight_decay=1e-2, param_groups=[{"params": list(b.parameters())}])
    np.testing.assert_array_equal(plain.loss, grouped.loss)


def test_given_batches_are_used_and_none_drawn_beyond_the_last_step(gaussians) -> None:
    generator = torch.Generator().manual_seed(5)
    batches = data.epoch_batches(len(gaussians.x_train), 16, generator)
    history = _fit(mlp(6, [8], 3, seed=0), gaussians, batches=batches, steps=7)
    again = data.epoch_batches(len(gaussians.x_train), 16, torch.Generator().manual_seed(5))
    expected_next = next(itertools.islice(again, 7, None))
    assert history.steps_run == 7
    assert torch.equal(next(batches), expected_next)


def test_the_default_batches_are_epoch_batches_seeded_by_seed(gaussians) -> None:
    inputs_seen = []
    _fit(mlp(6, [8], 3, seed=0), gaussians, seed=3, before_step=[lambda s, m, x, y: inputs_seen.append(x)])
    expected = data.epoch_batches(len(gaussians.x_train), 16, torch.Generator().manual_seed(3))
    for x, batch in zip(inputs_seen, expected):
        assert torch.equal(x, gaussians.x_train[batch])


def test_epoch_batches_visit_every_example_once_per_epoch_in_full_batches() -> None:
    batches = list(itertools.islice(data.epoch_batches(10, 3, torch.Generator().manual_seed(0)), 6))
    assert all(len(b) == 3 and b.dtype == torch.int64 for b in batches)
    for epoch in (batches[:3], batches[3:]):
        seen = torch.cat(epoch)
        assert len(set(seen.tolist())) == 9  # three full batches; the tenth example waits for the next epoch
    assert not torch.equal(torch.cat(batches[:3]), torch.cat(batches[3:]))
    with pytest.raises(ValueError, match="batch_size"):
        next(data.epoch_batches(10, 11, torch.Generator()))


def test_evaluate_runs_in_eval_mode_and_restores_each_flag(gaussians) -> None:
    model = mlp(6, [8], 3, norm=nn.BatchNorm1d, seed=0)
    model.train()
    model.norm0.eval()
    running = model.norm0.running_mean.clone()
    loss, accuracy = evaluate(model, gaussians)
    assert np.isfinite(loss) and 0 <= accuracy <= 1
    assert model.training and not model.norm0.training
    assert torch.equal(model.norm0.running_mean, running)


def test_in_mode_restores_mixed_flags_even_when_the_block_raises() -> None:
    model = mlp(4, [5], 2, norm=nn.BatchNorm1d, seed=0)
    model.train()
    model.norm0.eval()
    with pytest.raises(RuntimeError, match="boom"), in_mode(model, training=False):
        assert not any(m.training for m in model.modules())
        raise RuntimeError("boom")
    assert model.training and not model.norm0.training
    with in_mode(model, training=True):
        assert all(m.training for m in model.modules())
    assert not model.norm0.training
