"""Tests for normlab.probes' variance-propagation probes: layer_statistics and jacobian_singular_values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from normlab import init
from normlab.models import hidden_linear_layers, mlp
from normlab.probes import LayerStats, jacobian_singular_values, layer_statistics

SEEDS = (0, 1, 2)


def _tiny_relu_network(inplace: bool = False) -> nn.Sequential:
    """x -> Linear(3, 4) -> ReLU -> Linear(4, 2), with hand-chosen weights."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=inplace), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, -3.0], [1.0, 1.0, 1.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
        model[2].weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 2.0], [0.0, 3.0, -1.0, 1.0]]))
        model[2].bias.copy_(torch.tensor([0.2, -0.1]))
    return model


def _by_hand(model: nn.Sequential, x: torch.Tensor, dy_of=lambda y: y):
    """Forward and backward of the tiny network in NumPy: (h, r, y) and (dh, dr, dy)."""
    w0, b0 = (p.detach().double().numpy() for p in (model[0].weight, model[0].bias))
    w1, b1 = (p.detach().double().numpy() for p in (model[2].weight, model[2].bias))
    xs = x.double().numpy()
    h = xs @ w0.T + b0
    r = np.maximum(h, 0)
    y = r @ w1.T + b1
    dy = dy_of(y)
    dr = dy @ w1
    dh = dr * (h > 0)
    return (h, r, y), (dh, dr, dy)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((9, 3))).float()


def test_variances_equal_a_hand_computation_on_a_tiny_network(batch) -> None:
    model = _tiny_relu_network()
    stats = layer_statistics(model, batch, [model[0], model[1], model[2]])
    activations, gradients = _by_hand(model, batch)
    assert isinstance(stats, LayerStats)
    np.testing.assert_allclose(stats.activation_variance, [a.var() for a in activations], rtol=1e-5)
    np.testing.assert_allclose(stats.gradient_variance, [g.var() for g in gradients], rtol=1e-5)


def test_a_given_loss_sets_the_gradient(batch) -> None:
    # L = sum(y): dL/dy = 1 everywhere, so its variance is 0 and dL/dr = 1^T W1 is the same for every example.
    model = _tiny_relu_network()
    stats = layer_statistics(model, batch, [model[0], model[1], model[2]], loss_fn=lambda y: y.sum())
    _, gradients = _by_hand(model, batch, dy_of=np.ones_like)
    assert stats.gradient_variance[2] == 0.0
    np.testing.assert_allclose(stats.gradient_variance, [g.var() for g in gradients], rtol=1e-5, atol=1e-12)
    column_sums = model[2].weight.detach().sum(0).double()
    np.testing.assert_allclose(stats.gradient_variance[1], column_sums.var(correction=0), rtol=1e-5)


def test_an_inplace_relu_downstream_does_not_change_what_is_recorded(batch) -> None:
    model = _tiny_relu_network(inplace=True)
    stats = layer_statistics(model, batch, [model[0]])
    (h, _, _), (dh, _, _) = _by_hand(model, batch)
    np.testing.assert_allclose(stats.activation_variance, [h.var()], rtol=1e-5)
    np.testing.assert_allclose(stats.gradient_variance, [dh.var()], rtol=1e-5)
    torch.testing.assert_close(model(batch), _tiny_relu_network()(batch))


def test_dead_fraction_counts_units_that_are_zero_for_every_example() -> None:
    # Inputs are positive. Units 0 and 1 are negative for every example (dead), unit 2 only for
    # some (alive), units 3 and 4 are positive for every example: 2 of 5 dead.
    layer = nn.Linear(2, 5)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.0, -1.0], [0.0, -2.0], [1.0, -1.0], [1.0, 1.0], [0.0, 0.5]]))
        layer.bias.copy_(torch.tensor([0.0, -0.5, 0.0, 0.0, 0.1]))
    model = nn.Sequential(layer, nn.ReLU(), nn.Linear(5, 1))
    x = torch.tensor([[1.0, 2.0], [3.0, 1.0], [0.5, 0.5], [2.0, 0.1]])
    stats = layer_statistics(model, x, [model[0], model[1]])
    np.testing.assert_array_equal(stats.dead_fraction, [0.4, 0.4])
    # With the first example alone, unit 2 (1 - 2 = -1) is dead too.
    np.testing.assert_array_equal(layer_statistics(model, x[:1], [model[1]]).dead_fraction, [0.6])


def test_dead_fraction_of_a_conv_layer_counts_channels() -> None:
    conv = nn.Conv2d(1, 4, kernel_size=1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 0.0, 2.0]).reshape(4, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.0, -1.0, -1.0]))
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 1))
    x = torch.rand(5, 1, 3, 3, generator=torch.Generator().manual_seed(0)) + 0.1
    # Channel 1 (-x) and channel 2 (-1) are dead; channel 3 (2x - 1) is alive somewhere.
    assert layer_statistics(model, x, [model[1]]).dead_fraction.tolist() == [0.5]


def test_layer_statistics_leaves_the_model_as_it_found_it() -> None:
    model = mlp(6, [16, 16], 3, norm=nn.BatchNorm1d, seed=0)
    model.train()
    model.norm1.eval()
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(0))
    buffers = [b.clone() for b in model.buffers()]
    modes = [m.training for m in model.modules()]
    layer_statistics(model, x, hidden_linear_layers(model) + [model.norm0])
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_training_mode_uses_batch_statistics_and_eval_mode_running_ones() -> None:
    model = mlp(6, [64], 3, norm=nn.BatchNorm1d, seed=0)
    x = 5.0 * torch.randn(256, 6, generator=torch.Generator().manual_seed(0)) + 2.0
    linear_var = layer_statistics(model, x, [model.linear0]).activation_variance[0]
    train_var = layer_statistics(model, x, [model.norm0], training=True).activation_variance[0]
    eval_var = layer_statistics(model, x, [model.norm0], training=False).activation_variance[0]
    # Batch-normalized features have mean 0 and variance v / (v + eps) ~ 1 each; fresh running
    # statistics (mean 0, var 1) leave the linear output as it is, up to 1 / (1 + eps).
    assert train_var == pytest.approx(1.0, abs=1e-3)
    assert eval_var == pytest.approx(linear_var / (1 + 1e-5), rel=1e-5)


def test_he_init_keeps_relu_activation_variance_steady_where_xavier_halves_it() -> None:
    # Per layer the variance ratio is 1 (He) or 1/2 (Xavier, fan_in = fan_out) up to finite-width
    # noise of relative size ~ 0.1 at width 256; over five layers log(var5 / var0) has noise ~ 0.22,
    # so its mean over three seeds is within log 2 (about 5 standard errors) of 5 log(ratio).
    log_growth: dict[str, list[float]] = {"he": [], "xavier": []}
    for seed in SEEDS:
        model = mlp(256, [256] * 6, 10, seed=seed)
        x = torch.randn(512, 256, generator=torch.Generator().manual_seed(seed))
        for name, scheme, per_layer in (("he", init.kaiming_normal_, 1.0), ("xavier", init.xavier_normal_, 0.5)):
            generator = torch.Generator().manual_seed(seed)
            for layer in hidden_linear_layers(model):
                scheme(layer.weight, generator=generator)
                init.zeros_(layer.bias)
            var = layer_statistics(model, x, hidden_linear_layers(model)).activation_variance
            assert np.all(np.abs(var[1:] / var[:-1] / per_layer - 1) < 0.5), var
            log_growth[name].append(np.log(var[-1] / var[0]))
    assert abs(np.mean(log_growth["he"])) < np.log(2)
    assert abs(np.mean(log_growth["xavier"]) - 5 * np.log(0.5)) < np.log(2)


def test_layer_statistics_rejects_what_it_cannot_measure(batch) -> None:
    model = _tiny_relu_network()
    with pytest.raises(ValueError, match="layers is empty"):
        layer_statistics(model, batch, [])
    with pytest.raises(RuntimeError, match=r"layers \[0\] were not called"):
        layer_statistics(model, batch, [nn.Linear(3, 4)])
    with pytest.raises(ValueError, match="scalar loss"):
        layer_statistics(model, batch, [model[0]], loss_fn=lambda y: y)
    with pytest.raises(ValueError, match="non-empty tensor"):
        layer_statistics(model, batch[:0], [model[0]])
    assert all(not m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------------- Jacobian


def test_jacobian_singular_values_of_a_linear_network_are_those_of_the_weight_product() -> None:
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(5, 7), nn.Linear(7, 4), nn.Identity(), nn.Linear(4, 6))
        product = model[3].weight @ model[1].weight @ model[0].weight
        expected = np.linalg.svd(product.detach().double().numpy(), compute_uv=False)
        x = torch.randn(5, generator=torch.Generator().manual_seed(seed))
        values = jacobian_singular_values(model, x)
        # A 6 x 5 matrix of rank 4: five singular values, the last zero.
        assert values.dtype == np.float64 and values.shape == (5,)
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
        assert values[-1] < 1e-6 < values[-2]


def test_jacobian_of_a_relu_network_masks_the_dead_units_at_that_input() -> None:
    model = _tiny_relu_network()
    x = torch.tensor([0.5, -1.0, 0.3])
    (h, _, _), _ = _by_hand(model, x[None])
    jacobian = model[2].weight.detach().double().numpy() @ np.diag(h[0] > 0) @ model[0].weight.detach().double().numpy()
    np.testing.assert_allclose(jacobian_singular_values(model, x), np.linalg.svd(jacobian, compute_uv=False), rtol=1e-6)


def test_orthogonal_linear_network_is_dynamically_isometric() -> None:
    model = mlp(16, [16] * 4, 16, activation="linear", seed=0)
    generator = torch.Generator().manual_seed(0)
    for layer in model:
        if isinstance(layer, nn.Linear):
            init.orthogonal_(layer.weight, generator=generator)
    np.testing.assert_allclose(jacobian_singular_values(model, torch.randn(16)), np.ones(16), atol=1e-5)


def test_jacobian_runs_in_eval_mode_and_restores_modes() -> None:
    model = mlp(4, [8], 3, norm=nn.BatchNorm1d, seed=0)
    model.train()
    values = jacobian_singular_values(model, torch.randn(4))  # one example: BatchNorm needs eval mode
    assert values.shape == (3,) and all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="one example"):
        jacobian_singular_values(model, torch.empty(0))
