"""Tests for normlab.probes: percentiles as NumPy computes them, and a model left as found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normlab import data, models
from normlab.layers import BatchNorm1d
from normlab.probes import ActivationPercentiles
from normlab.train import train


def _hand_made_model() -> nn.Sequential:
    """x -> Linear(3, 4) with known weights -> BatchNorm1d -> Sigmoid -> Linear(4, 2)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), BatchNorm1d(4), nn.Sigmoid(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, -3.0], [1.0, 1.0, 1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
        model[1].running_mean.copy_(torch.tensor([0.5, -0.5, 1.0, 0.0]))
        model[1].running_var.copy_(torch.tensor([4.0, 1.0, 0.25, 2.0]))
        model[1].weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        model[1].bias.copy_(torch.tensor([0.0, 0.1, -0.2, 0.3]))
    return model


@pytest.fixture
def probe_batch() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((57, 3))).float()


def test_percentiles_equal_numpys_on_a_hand_made_model(probe_batch):
    model = _hand_made_model()
    probe = ActivationPercentiles(model[0], probe_batch, units=[3, 0], q=(5, 15, 50, 85, 99))
    probe.record(0, model)
    linear = probe_batch.double().numpy() @ model[0].weight.detach().double().numpy().T
    linear += model[0].bias.detach().double().numpy()
    expected = np.percentile(linear[:, [3, 0]], [5, 15, 50, 85, 99], axis=0).T
    assert probe.percentiles.shape == (1, 2, 5)
    np.testing.assert_allclose(probe.percentiles[0], expected, rtol=1e-5, atol=1e-5)


def test_sigmoid_input_is_the_eval_mode_batchnorm_output(probe_batch):
    model = _hand_made_model()
    at_norm = ActivationPercentiles(model[1], probe_batch)  # every unit, default q
    at_sigmoid = ActivationPercentiles(model[2], probe_batch, where="input")
    at_norm.record(7, model)
    at_sigmoid.record(7, model)
    bn = model[1]
    linear = model[0](probe_batch).detach().double().numpy()
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
    normalized = (linear - bn.running_mean.double().numpy()) * scale + bn.bias.detach().double().numpy()
    expected = np.percentile(normalized, [15, 50, 85], axis=0).T
    np.testing.assert_allclose(at_norm.percentiles[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(at_norm.percentiles, at_sigmoid.percentiles)
    np.testing.assert_array_equal(at_norm.steps, [7])


def test_channels_of_a_3d_activation_pool_the_batch_and_length():
    x = torch.randn(6, 2, 5)
    probe = ActivationPercentiles(nn.Identity(), x, q=(50,))
    probe.record(0, nn.Sequential(probe.module))
    expected = np.percentile(x.permute(0, 2, 1).reshape(-1, 2).double().numpy(), 50, axis=0)
    np.testing.assert_allclose(probe.percentiles[0, :, 0], expected, rtol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_train_and_eval_mode_are_restored_module_by_module(probe_batch, training):
    model = _hand_made_model()
    model.train(training)
    model[1].eval()  # a mixed state must come back as it was, not as model.train(training)
    before = [m.training for m in model.modules()]
    running = model[1].running_mean.clone(), model[1].running_var.clone(), model[1].num_batches_tracked.clone()
    ActivationPercentiles(model[1], probe_batch).record(0, model)
    assert [m.training for m in model.modules()] == before
    # the probe runs in eval mode: BatchNorm's running estimates are untouched
    for kept, now in zip(running, (model[1].running_mean, model[1].running_var, model[1].num_batches_tracked)):
        assert torch.equal(kept, now)


def test_mode_is_restored_and_hooks_removed_when_the_forward_pass_fails():
    model = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(5, 1))  # width mismatch in the last layer
    model.train()
    with pytest.raises(RuntimeError):
        ActivationPercentiles(model[0], torch.randn(8, 3)).record(0, model)
    assert all(m.training for m in model.modules())
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks


@pytest.mark.parametrize("where", ["output", "input"])
def test_hooks_are_removed_after_each_record(probe_batch, where):
    model = _hand_made_model()
    probe = ActivationPercentiles(model[2], probe_batch, where=where)
    probe.record(0, model)
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_records_every_k_steps_during_training_and_leaves_training_unchanged():
    ds = data.gaussian_classification(num_samples=300, num_features=6, num_classes=3, separation=3.0, seed=0)
    probed = models.mlp(6, [8, 8], 3, activation="sigmoid", norm=BatchNorm1d, seed=1)
    plain = models.mlp(6, [8, 8], 3, activation="sigmoid", norm=BatchNorm1d, seed=1)
    probe = ActivationPercentiles(probed.act1, ds.x_test[:50], units=[0, 5], where="input", every=7)
    probe.record(0, probed)
    options = dict(steps=30, lr=0.1, batch_size=16, seed=2, progress=False, device="cpu")
    with_probe = train(probed, ds, hooks=[probe], **options)
    without = train(plain, ds, **options)
    np.testing.assert_array_equal(probe.steps, [0, 7, 14, 21, 28])
    assert probe.percentiles.shape == (5, 2, 3)
    assert np.all(np.diff(probe.percentiles, axis=2) >= 0)  # 15th <= 50th <= 85th
    np.testing.assert_array_equal(with_probe.loss, without.loss)  # the probe changed nothing
    assert probed.training


def test_at_steps_records_exactly_the_steps_listed(probe_batch):
    model = _hand_made_model()
    probe = ActivationPercentiles(model[0], probe_batch, at_steps=[1, 4])
    for step in range(1, 6):
        probe(step, model, 0.0)
    np.testing.assert_array_equal(probe.steps, [1, 4])
    assert probe.wants(4) and not probe.wants(5)


def test_empty_probe_has_shaped_empty_results(probe_batch):
    probe = ActivationPercentiles(nn.Identity(), probe_batch, units=[0, 1])
    assert probe.steps.shape == (0,) and probe.percentiles.shape == (0, 2, 3)


def test_bad_arguments_are_named():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="q must"):
        ActivationPercentiles(nn.Identity(), x, q=(50, 120))
    with pytest.raises(ValueError, match="where must"):
        ActivationPercentiles(nn.Identity(), x, where="grad")
    with pytest.raises(ValueError, match="every must"):
        ActivationPercentiles(nn.Identity(), x, every=0)
    identity = nn.Identity()
    with pytest.raises(IndexError, match="out of range"):
        ActivationPercentiles(identity, x, units=[3]).record(0, nn.Sequential(identity))
    with pytest.raises(RuntimeError, match="not called"):
        ActivationPercentiles(nn.Linear(3, 3), x).record(0, nn.Sequential(nn.Identity()))
