"""normlab.probes.wasserstein_1d and earth_mover_ics: Huang & Yu's Earth Mover ICS, against SciPy and known answers."""

import copy

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance
from torch import nn

from normlab import models
from normlab.layers import BatchNorm1d
from normlab.probes import earth_mover_ics, wasserstein_1d


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("sizes", [(50, 50), (7, 31), (1, 9)])
def test_wasserstein_matches_scipy(seed, sizes):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(sizes[0]) * rng.uniform(0.1, 3)
    v = rng.standard_t(3, sizes[1]) + rng.uniform(-2, 2)
    assert wasserstein_1d(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-12, abs=1e-14)


def test_wasserstein_known_answers():
    rng = np.random.default_rng(0)
    u = rng.standard_normal(200)
    assert wasserstein_1d(u, u + 0.7) == pytest.approx(0.7)               # a translation moves all mass by c
    assert wasserstein_1d(u, u[::-1].copy()) == 0.0                        # same values, other order
    assert wasserstein_1d([0.0], [3.0]) == pytest.approx(3.0)              # two point masses
    assert wasserstein_1d([0.0, 1.0], [0.0, 0.0]) == pytest.approx(0.5)    # half the mass moves by 1
    # N(0, 1) and N(0, 4) by quantiles: W1 = E|2Z − Z| = E|Z| = sqrt(2/pi), the quantile coupling being optimal in 1-D
    z = np.sort(rng.standard_normal(200_000))
    assert wasserstein_1d(z, 2 * z) == pytest.approx(np.sqrt(2 / np.pi), rel=0.01)
    assert wasserstein_1d(torch.tensor([0.0, 2.0]), np.array([1.0])) == pytest.approx(1.0)


def test_wasserstein_refuses_empty_and_nan():
    with pytest.raises(ValueError, match="at least one value"):
        wasserstein_1d([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        wasserstein_1d([np.nan], [1.0])


class AddBias(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(-1, 1, width, dtype=torch.float64))

    def forward(self, x):
        return x + self.bias


def test_a_moving_bias_shifts_each_unit_by_exactly_its_step():
    """Only a bias sits below the sigmoid: its input translates by lr·|g_b|, so W1 = lower = upper = that."""
    torch.manual_seed(0)
    net = nn.Sequential(AddBias(4), nn.Sigmoid(), nn.Linear(4, 3).double())
    x, y = torch.randn(40, 4, dtype=torch.float64), torch.randint(0, 3, (40,))
    lr = 0.5
    loss = nn.functional.cross_entropy(net(x), y)
    (g,) = torch.autograd.grad(loss, [net[0].bias])
    result = earth_mover_ics(net, [net[1]], (x, y), nn.functional.cross_entropy, lr)
    expected = lr * g.abs().numpy()
    np.testing.assert_allclose(result.distance[0], expected, rtol=1e-9)
    np.testing.assert_allclose(result.lower[0], expected, rtol=1e-9)
    np.testing.assert_allclose(result.upper[0], expected, rtol=1e-9)


def test_the_network_input_does_not_move():
    net = models.mlp(6, (5,), 3, activation="sigmoid", seed=0)
    x, y = torch.randn(20, 6), torch.randint(0, 3, (20,))
    result = earth_mover_ics(net, [net.linear0], (x, y), nn.functional.cross_entropy, 1.0)
    assert np.all(result.distance[0] == 0)


@pytest.mark.parametrize("norm", [None, BatchNorm1d])
def test_bounds_hold_and_model_is_untouched(norm):
    net = models.mlp(8, (16, 16), 4, activation="sigmoid", norm=norm, seed=1)
    before = copy.deepcopy(net.state_dict())
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    acts = [m for m in net.modules() if isinstance(m, nn.Sigmoid)]
    result = earth_mover_ics(net, acts, (x, y), nn.functional.cross_entropy, 0.5)
    assert [d.shape for d in result.distance] == [(16,), (16,)]
    for d, lo, up in zip(result.distance, result.lower, result.upper):
        assert np.all(lo <= d + 1e-7) and np.all(d <= up + 1e-7)
        assert np.all(d > 0)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.training


def test_shift_is_first_order_in_the_learning_rate():
    net = models.mlp(8, (16,), 4, activation="sigmoid", seed=2).double()
    x, y = torch.randn(32, 8, dtype=torch.float64), torch.randint(0, 4, (32,))
    acts = [net.act0]
    small = earth_mover_ics(net, acts, (x, y), nn.functional.cross_entropy, 1e-4).distance[0]
    smaller = earth_mover_ics(net, acts, (x, y), nn.functional.cross_entropy, 1e-5).distance[0]
    np.testing.assert_allclose(small / smaller, 10, rtol=1e-2)


def test_refuses_bad_arguments():
    net = models.mlp(4, (3,), 2, seed=0)
    batch = (torch.randn(5, 4), torch.randint(0, 2, (5,)))
    with pytest.raises(ValueError, match="lr"):
        earth_mover_ics(net, [net.linear0], batch, nn.functional.cross_entropy, -1.0)
    with pytest.raises(ValueError, match="empty"):
        earth_mover_ics(net, [], batch, nn.functional.cross_entropy, 0.1)
