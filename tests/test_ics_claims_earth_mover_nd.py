"""The bounds on the Earth Mover ICS of a whole layer (chapter 04_internal_covariate_shift, section on the bounds in
d dimensions): first the inequalities themselves on sampled points, BN outputs and unitized outputs, then the
chapter's claims on seeds the chapter does not use.

Thresholds set after seeds 0-9 and 101-105 (widths 4, 16, 64, 256; noise s = 0.5; batch 128). Over those seeds:
every bound held; the largest lower/W1 0.97-0.99, W1/parameter bound at most 0.52-0.64 (BN), 0.61-0.65 (BN + noise),
0.21-0.26 (unitization). BN's parameter bound at step 0 within 0.6% of √(2d) (threshold: 2%); log-log slope of BN's
parameter bound 0.30-0.32 (at least 0.25), of BN's W1 0.15-0.32 (at least 0.1). Noise floor at least 0.63-0.79 of the noisy W1 (at least 0.5), 0.995-1.003 times s√(2d)
at d = 256 (within 2%), noisy W1 1.10-1.44 times BN's at every width (at least 1.05). BN's best lower bound at most
0.15-0.21 of W1 (median; at most 0.25); the noisy mean shift 0.97-1.07 times s√(2d/n) (within 10%). Unitization's
bound 0.40-0.45 times smaller at d = 256 than at d = 4 (not larger), its W1 0.029-0.049 times BN's (at most 0.1).
"""

import copy

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from normlab.experiments import ics
from normlab.layers import Unitization1d
from normlab.probes import wasserstein_1d, wasserstein_nd

SEEDS = [101, 102, 103, 104, 105]


def independent_bound(a, b):
    """sqrt(tr Σ + tr Σ' + ‖μ − μ'‖²) with the batch moments (eq-ics-emd-d-upper)."""
    return np.sqrt(a.var(0).sum() + b.var(0).sum() + np.sum((a.mean(0) - b.mean(0)) ** 2))


@pytest.mark.parametrize("seed", range(8))
def test_lower_and_upper_bounds_hold_for_sampled_clouds(seed):
    rng = np.random.default_rng(seed)
    n, d = 40, int(rng.integers(2, 30))
    a = rng.standard_normal((n, d)) * rng.uniform(0.3, 2, d)
    b = rng.standard_t(4, (n, d)) * rng.uniform(0.3, 2, d) + rng.standard_normal(d) * 0.5
    w = wasserstein_nd(a, b)
    c = rng.standard_normal(d)
    lower = [np.linalg.norm(a.mean(0) - b.mean(0)),
             abs(np.linalg.norm(a - c, axis=1).mean() - np.linalg.norm(b - c, axis=1).mean()),
             max(wasserstein_1d(a[:, j], b[:, j]) for j in range(d))]
    assert max(lower) <= w + 1e-12
    independent_cost = cdist(a, b).mean()                   # the plan that pairs every point with every point
    assert w <= independent_cost <= independent_bound(a, b) + 1e-12
    assert w <= np.linalg.norm(a - b, axis=1).mean() + 1e-12


def batch_norm(x, gamma, beta, eps=1e-5):
    return torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=eps).double().numpy()


@pytest.mark.parametrize("seed", range(5))
def test_bn_outputs_have_mean_beta_trace_at_most_gamma_squared_and_w1_below_the_parameter_bound(seed):
    g = torch.Generator().manual_seed(seed)
    n, d = 64, 32
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 1
    x2 = x + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64) ** 3     # the inputs after a "step"
    gamma = torch.rand(d, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(d, generator=g, dtype=torch.float64)
    gamma2, beta2 = gamma * 1.1, beta + 0.05
    y, y2 = batch_norm(x, gamma, beta), batch_norm(x2, gamma2, beta2)
    var = x.var(0, unbiased=False).numpy()
    np.testing.assert_allclose(y.mean(0), beta.numpy(), atol=1e-12)                          # the batch mean is β
    assert y.var(0).sum() == pytest.approx(np.sum(gamma.numpy() ** 2 * var / (var + 1e-5)), rel=1e-10)
    bound = np.sqrt(np.sum(gamma.numpy() ** 2) + np.sum(gamma2.numpy() ** 2) + np.sum((beta2 - beta).numpy() ** 2))
    assert wasserstein_nd(y, y2) <= independent_bound(y, y2) <= bound                         # eq-ics-emd-d-bn


def test_noise_adds_two_d_s_squared_to_the_squared_bound_in_expectation():
    """E over the noise of tr Σ + tr Σ' + ‖μ − μ'‖² is the noiseless value plus 2ds²: (n−1)/n in each trace, 1/n
    in the mean."""
    g = torch.Generator().manual_seed(0)
    n, d, s = 32, 8, 0.5
    y = batch_norm(torch.randn(n, d, generator=g, dtype=torch.float64), torch.ones(d, dtype=torch.float64),
                   torch.zeros(d, dtype=torch.float64))
    rng = np.random.default_rng(0)
    draws = [independent_bound(y + s * rng.standard_normal((n, d)), y + s * rng.standard_normal((n, d))) ** 2
             for _ in range(4000)]
    assert np.mean(draws) == pytest.approx(independent_bound(y, y) ** 2 + 2 * d * s ** 2, rel=0.01)


@pytest.mark.parametrize("d", [4, 64, 256])
def test_unitized_outputs_lie_within_max_gamma_of_beta_whatever_the_width(d):
    g = torch.Generator().manual_seed(d)
    layers = []
    for _ in range(2):
        layer = Unitization1d(d, initial_alpha=1.0, learn_alpha=False).double()
        with torch.no_grad():
            layer.weight.copy_(torch.rand(d, generator=g, dtype=torch.float64) * 2)
            layer.bias.copy_(torch.randn(d, generator=g, dtype=torch.float64))
        layers.append(layer)
    x = torch.randn(100, d, generator=g, dtype=torch.float64) * 5
    y, y2 = (layer(x * (k + 1) + k).detach().numpy() for k, layer in enumerate(layers))
    (g1, b1), (g2, b2) = ((layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in layers)
    assert np.linalg.norm(y - b1, axis=1).max() <= np.abs(g1).max()
    bound = np.abs(g1).max() + np.abs(g2).max() + np.linalg.norm(b1 - b2)                   # eq-ics-emd-d-unit
    assert wasserstein_nd(y, y2) <= np.linalg.norm(y - y2, axis=1).mean() <= bound


def test_a_measurement_leaves_the_network_as_it_found_it():
    from normlab import data
    ds = data.digits(seed=0)
    net = ics._bounds_network("noisy_batch", 16, 0.5, ds, seed=0)
    before = copy.deepcopy(net.state_dict())
    batch = (ds.x_train[:128], ds.y_train[:128])
    a, b, floor, (gamma, beta, gamma2, beta2) = ics._measured_outputs(net, batch, 1.0, noisy=True)
    assert a.shape == b.shape == floor.shape == (128, 16)
    assert not np.allclose(a, floor)                                     # a second noise draw
    assert not torch.equal(gamma, gamma2) and not torch.equal(beta, beta2)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in net.parameters())


def test_refuses_unknown_networks_widths_and_incomplete_records():
    with pytest.raises(ValueError, match="network must be one of"):
        ics.earth_mover_bounds_run("layer")
    with pytest.raises(ValueError, match="width must be a positive integer"):
        ics.earth_mover_bounds_run("batch", width=0)
    record = ics.earth_mover_bounds_run("batch", width=4, steps=10, measure_every=5)
    assert record.steps.tolist() == [0, 5, 10] and record.measured_batch == 128
    with pytest.raises(ValueError, match="every network"):
        ics.bn_bound_grows_with_width({("batch", 4): record})


@pytest.mark.parametrize("seed", SEEDS)
def test_the_chapter_claims_hold_on_other_seeds(seed):
    records = ics.earth_mover_bounds_by_width(seed=seed)
    for claim in (ics.earth_mover_d_bounds_hold(records), ics.bn_bound_grows_with_width(records),
                  ics.noise_sets_a_floor(records), ics.noise_drives_the_lower_bound(records),
                  ics.unitization_bound_is_width_free(records)):
        assert claim.holds, claim
    for record in records.values():
        assert np.all(record.noise_floor == 0) == (record.network != "noisy_batch")
