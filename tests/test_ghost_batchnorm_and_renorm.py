"""normlab.layers.GhostBatchNorm1d (Hoffer et al. 2017) and BatchRenorm1d (Ioffe 2017) against their equations."""

import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm1d, BatchRenorm1d, GhostBatchNorm1d, renorm_limits
from normlab.layers.batch_renorm import PAPER_SCHEDULE, scaled_renorm_schedule


def _bn(x, eps):
    mean = x.mean(0, keepdim=True)
    var = x.var(0, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps), mean[0], var[0]


# ------------------------------------------------------------------ ghost batches


@pytest.mark.parametrize("n, size", [(12, 4), (10, 4), (8, 3), (6, 6), (6, 100)])
def test_ghost_batchnorm_normalizes_each_virtual_batch_and_updates_running_stats_per_ghost(n, size):
    torch.manual_seed(n + size)
    layer = GhostBatchNorm1d(3, virtual_batch_size=size, momentum=0.2, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2), layer.bias.normal_()
    x = torch.randn(n, 3, dtype=torch.float64) * 2 + 1
    y = layer(x)
    mean_run, var_run = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    pieces = []
    for ghost in torch.split(x, size):
        xhat, mean, var = _bn(ghost, layer.eps)
        pieces.append(xhat * layer.weight + layer.bias)
        m = len(ghost)
        mean_run = 0.8 * mean_run + 0.2 * mean
        var_run = 0.8 * var_run + 0.2 * var * m / (m - 1)
    torch.testing.assert_close(y, torch.cat(pieces), rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.running_mean, mean_run, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.running_var, var_run, rtol=0, atol=1e-12)
    assert int(layer.num_batches_tracked) == len(torch.split(x, size))
    layer.eval()
    expected = (x - layer.running_mean) / torch.sqrt(layer.running_var + layer.eps) * layer.weight + layer.bias
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape, size, momentum", [((512, 3), 4, 0.1), ((16, 3, 5), 4, 0.2), ((12, 2), 2, None),
                                                    ((12, 2, 3), 6, None)])
def test_full_ghost_batches_side_by_side_equal_torch_batchnorm_on_each_ghost_in_turn(shape, size, momentum):
    """The fast path (every ghost batch full): one call over G·C channels and the closed-form running estimates
    (equation 2) give what torch's BatchNorm1d gives applied to the ghost batches one after another."""
    torch.manual_seed(shape[0] + size)
    layer = GhostBatchNorm1d(shape[1], virtual_batch_size=size, momentum=momentum, dtype=torch.float64)
    oracle = nn.BatchNorm1d(shape[1], momentum=momentum, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2), layer.bias.normal_()
        oracle.weight.copy_(layer.weight), oracle.bias.copy_(layer.bias)
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    dy = torch.randn(*shape, dtype=torch.float64)
    for _ in range(2):  # the second call starts from running estimates that are not the initial ones
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y = layer(x1)
        expected = torch.cat([oracle(ghost) for ghost in torch.split(x2, size)])
        (y * dy).sum().backward()
        (expected * dy).sum().backward()
        torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.running_mean, oracle.running_mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.running_var, oracle.running_var, rtol=0, atol=1e-12)
        assert int(layer.num_batches_tracked) == int(oracle.num_batches_tracked)
    torch.testing.assert_close(layer.weight.grad, oracle.weight.grad, rtol=0, atol=1e-10)
    torch.testing.assert_close(layer.bias.grad, oracle.bias.grad, rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x: layer(x), (x[: 2 * size].clone().requires_grad_(),))


def test_full_ghost_batches_reject_nan_before_touching_the_running_estimates():
    layer = GhostBatchNorm1d(2, virtual_batch_size=2)
    x = torch.randn(8, 2)
    x[5, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(x)
    assert torch.equal(layer.running_mean, torch.zeros(2)) and int(layer.num_batches_tracked) == 0


def test_ghost_batchnorm_with_one_ghost_is_batchnorm_and_state_dicts_are_torchs():
    x = torch.randn(8, 4, 5, dtype=torch.float64)
    ghost, plain = GhostBatchNorm1d(4, 8, dtype=torch.float64), nn.BatchNorm1d(4, dtype=torch.float64)
    torch.testing.assert_close(ghost(x), plain(x))
    assert ghost.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(ghost.state_dict())
    assert "virtual_batch_size=8" in repr(ghost)


def test_ghost_batchnorm_gradient_is_autograd_through_each_ghost():
    torch.manual_seed(1)
    layer = GhostBatchNorm1d(3, virtual_batch_size=4, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(10, 3, dtype=torch.float64)
    (layer(x) * w).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    weight = layer.weight.detach().clone().requires_grad_()
    out = torch.cat([_bn(g, layer.eps)[0] * weight for g in torch.split(x2, 4)])
    (out * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x: layer(x), (x.detach().clone().requires_grad_(),))


def test_ghost_batchnorm_errors():
    with pytest.raises(ValueError, match="virtual_batch_size must be a positive integer"):
        GhostBatchNorm1d(3, virtual_batch_size=0)
    with pytest.raises(ValueError, match="virtual_batch_size must be a positive integer"):
        GhostBatchNorm1d(3, virtual_batch_size=2.5)
    layer = GhostBatchNorm1d(3, virtual_batch_size=4)
    with pytest.raises(ValueError, match="last ghost batch has a single value"):
        layer(torch.randn(9, 3))
    with pytest.raises(ValueError, match="expects 2D input"):
        layer(torch.randn(4, 3, 2, 2))
    with pytest.raises(ValueError, match="num_features=3"):
        layer(torch.randn(8, 4))


# ------------------------------------------------------------------ batch renormalization


def test_renorm_limits_follow_the_papers_schedule():
    assert renorm_limits(0) == (1.0, 0.0) and renorm_limits(5000) == (1.0, 0.0)
    assert renorm_limits(40000) == (3.0, 5.0) and renorm_limits(10**6) == (3.0, 5.0)
    assert renorm_limits(25000)[1] == 5.0 and renorm_limits(25000)[0] == pytest.approx(1 + 2 * 20000 / 35000)
    assert renorm_limits(15000) == pytest.approx((1 + 2 * 10000 / 35000, 5 * 10000 / 20000))
    assert renorm_limits(3, 2.0, 1.0, 0, 0, 0) == (2.0, 1.0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        renorm_limits(-1)


def test_renorm_limits_ramp_linearly_between_the_papers_milestones():
    """The paper fixes the milestones (5k, 25k, 40k) but not the shape in between; normlab's is linear."""
    steps = range(5000, 40001, 500)
    r = [renorm_limits(s)[0] for s in steps]
    d = [renorm_limits(s)[1] for s in steps if s <= 25000]
    assert max(abs(b - a - 2 * 500 / 35000) for a, b in zip(r, r[1:])) < 1e-12  # constant increments
    assert max(abs(b - a - 5 * 500 / 20000) for a, b in zip(d, d[1:])) < 1e-12
    assert renorm_limits(4999) == (1.0, 0.0) and renorm_limits(5001)[0] > 1.0 and renorm_limits(5001)[1] > 0.0


def test_defaults_are_the_papers_schedule_limits_and_moving_average_rate():
    layer = BatchRenorm1d(3)
    assert (layer.r_max, layer.d_max) == (3.0, 5.0)
    assert {"warmup_steps": layer.warmup_steps, "d_max_steps": layer.d_max_steps,
            "r_max_steps": layer.r_max_steps} == PAPER_SCHEDULE == {"warmup_steps": 5000, "d_max_steps": 25000,
                                                                    "r_max_steps": 40000}
    assert layer.momentum == 0.01  # the paper's alpha, not BatchNorm's 0.1


def test_scaled_schedule_keeps_the_papers_proportions():
    assert scaled_renorm_schedule(40000) == PAPER_SCHEDULE
    assert scaled_renorm_schedule(600) == {"warmup_steps": 75, "d_max_steps": 375, "r_max_steps": 600}
    assert scaled_renorm_schedule(80000) == {"warmup_steps": 10000, "d_max_steps": 50000, "r_max_steps": 80000}
    for total in (8, 100, 600, 1234):
        schedule = scaled_renorm_schedule(total)
        assert renorm_limits(total, **schedule) == (3.0, 5.0)
        assert renorm_limits(schedule["warmup_steps"], **schedule) == (1.0, 0.0)
        assert renorm_limits(schedule["d_max_steps"], **schedule)[1] == 5.0
    with pytest.raises(ValueError, match="total_steps must be at least 1"):
        scaled_renorm_schedule(0)


def test_moving_averages_follow_algorithm_1_over_many_steps():
    """Algorithm 1 averages sigma_B (biased variance plus eps, square-rooted), not the variance, and computes r and d
    from the averages before this step's update: checked over 20 steps of a scaled schedule."""
    torch.manual_seed(7)
    layer = BatchRenorm1d(3, dtype=torch.float64, **scaled_renorm_schedule(16))
    mu, sigma = torch.zeros(3, dtype=torch.float64), torch.sqrt(torch.ones(3, dtype=torch.float64) + layer.eps)
    for step in range(20):
        x = torch.randn(8, 3, dtype=torch.float64) * torch.tensor([0.5, 2.0, 4.0]) + torch.tensor([-1.0, 0.0, 3.0])
        r_max, d_max = renorm_limits(step, **scaled_renorm_schedule(16))
        mean_b, sigma_b = x.mean(0), torch.sqrt(x.var(0, unbiased=False) + layer.eps)
        r = (sigma_b / sigma).clamp(1 / r_max, r_max)
        d = ((mean_b - mu) / sigma).clamp(-d_max, d_max)
        y = layer(x)
        torch.testing.assert_close(y, ((x - mean_b) / sigma_b * r + d) * layer.weight + layer.bias, rtol=0, atol=1e-12)
        mu, sigma = mu + 0.01 * (mean_b - mu), sigma + 0.01 * (sigma_b - sigma)
        torch.testing.assert_close(layer.running_mean, mu, rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.sqrt(layer.running_var + layer.eps), sigma, rtol=0, atol=1e-12)
    assert layer.current_limits() == (3.0, 5.0)


def _renorm_reference(x, running_mean, running_var, eps, r_max, d_max, gamma, beta, momentum):
    mean_b = x.mean(0)
    sigma_b = torch.sqrt(x.var(0, unbiased=False) + eps)
    sigma = torch.sqrt(running_var + eps)
    r = (sigma_b / sigma).clamp(1 / r_max, r_max)
    d = ((mean_b - running_mean) / sigma).clamp(-d_max, d_max)
    y = ((x - mean_b) / sigma_b * r + d) * gamma + beta
    new_sigma = sigma + momentum * (sigma_b - sigma)
    return y, r, d, running_mean + momentum * (mean_b - running_mean), new_sigma ** 2 - eps


@pytest.mark.parametrize("r_max, d_max", [(1.0, 0.0), (1.5, 0.5), (3.0, 5.0)])
def test_batch_renorm_follows_its_equations(r_max, d_max):
    torch.manual_seed(2)
    layer = BatchRenorm1d(4, momentum=0.3, r_max=r_max, d_max=d_max, warmup_steps=0, r_max_steps=0, d_max_steps=0,
                          dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2), layer.bias.normal_()
        layer.running_mean.copy_(torch.tensor([0.0, 1.0, -2.0, 0.5]))
        layer.running_var.copy_(torch.tensor([1.0, 0.2, 4.0, 9.0]))
    for _ in range(3):
        x = torch.randn(6, 4, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.5, 2.0]) + 1
        expected = _renorm_reference(x, layer.running_mean.clone(), layer.running_var.clone(), layer.eps, r_max, d_max,
                                     layer.weight, layer.bias, 0.3)
        y = layer(x)
        torch.testing.assert_close(y, expected[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.last_r, expected[1], rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.last_d, expected[2], rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.running_mean, expected[3], rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.running_var, expected[4], rtol=0, atol=1e-12)
    if r_max == 1.0 and d_max == 0.0:  # no correction: BatchNorm's output
        torch.testing.assert_close(y, _bn(x, layer.eps)[0] * layer.weight + layer.bias, rtol=0, atol=1e-12)


def test_batch_renorm_unclipped_training_output_equals_inference_output():
    torch.manual_seed(3)
    layer = BatchRenorm1d(3, r_max=100.0, d_max=100.0, warmup_steps=0, r_max_steps=0, d_max_steps=0,
                          dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64) * 2 + 3
    running = (layer.running_mean.clone(), layer.running_var.clone())
    y = layer(x)
    expected = (x - running[0]) / torch.sqrt(running[1] + layer.eps) * layer.weight + layer.bias
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


def test_batch_renorm_backward_treats_r_and_d_as_constants():
    torch.manual_seed(4)
    layer = BatchRenorm1d(3, r_max=2.0, d_max=1.0, warmup_steps=0, r_max_steps=0, d_max_steps=0, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2)
    x = torch.randn(7, 3, 2, dtype=torch.float64, requires_grad=True) * 1.5
    x.retain_grad()
    w = torch.randn(7, 3, 2, dtype=torch.float64)
    running = (layer.running_mean.clone(), layer.running_var.clone())
    (layer(x) * w).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    gamma = layer.weight.detach().clone().requires_grad_()
    mean_b = x2.mean((0, 2), keepdim=True)
    sigma_b = torch.sqrt(x2.var((0, 2), unbiased=False, keepdim=True) + layer.eps)
    sigma = torch.sqrt(running[1] + layer.eps).view(1, -1, 1)
    r = (sigma_b / sigma).clamp(0.5, 2.0).detach()
    d = ((mean_b - running[0].view(1, -1, 1)) / sigma).clamp(-1, 1).detach()
    (((x2 - mean_b) / sigma_b * r + d) * gamma.view(1, -1, 1) * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, gamma.grad, rtol=0, atol=1e-12)


def test_batch_renorm_gradcheck_where_r_and_d_are_clipped():
    """Where r and d sit at their clipping limits they are locally constant, so finite differences of the
    layer itself agree with the stop-gradient backward."""
    torch.manual_seed(5)
    layer = BatchRenorm1d(3, affine=False, r_max=1.5, d_max=0.5, warmup_steps=0, r_max_steps=0, d_max_steps=0,
                          dtype=torch.float64)
    with torch.no_grad():
        layer.running_var.fill_(0.01)  # σ_B/σ ≈ 10 > r_max
        layer.running_mean.fill_(-3.0)  # (μ_B − μ)/σ ≈ 30 > d_max
    state = {k: v.clone() for k, v in layer.state_dict().items()}

    def function(x, w, b):
        layer.load_state_dict(state)  # the same moving averages on every call
        return layer(x) * w + b

    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64, requires_grad=True) + 0.5
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    function(x, w, b)
    assert torch.all(layer.last_r == 1.5) and torch.all(layer.last_d == 0.5)
    assert torch.autograd.gradcheck(function, (x, w, b))


def test_batch_renorm_schedule_starts_as_batchnorm_and_relaxes():
    torch.manual_seed(6)
    layer = BatchRenorm1d(2, warmup_steps=2, r_max_steps=4, d_max_steps=3, dtype=torch.float64)
    plain = BatchNorm1d(2, dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64) * 4 + 2
    torch.testing.assert_close(layer(x), plain(x), rtol=0, atol=1e-12)
    assert layer.current_limits() == (1.0, 0.0)
    for _ in range(3):
        layer(x)
    assert layer.current_limits() == (3.0, 5.0)


def test_batch_renorm_eval_is_batchnorm_eval_and_state_dict_is_torchs():
    layer, plain = BatchRenorm1d(3), nn.BatchNorm1d(3)
    layer(torch.randn(8, 3))
    assert layer.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(layer.state_dict())
    layer.eval(), plain.eval()
    x = torch.randn(4, 3)
    torch.testing.assert_close(layer(x), plain(x))
    assert "r_max=3.0" in repr(layer)


def test_batch_renorm_errors():
    with pytest.raises(ValueError, match="track_running_stats=True"):
        BatchRenorm1d(3, track_running_stats=False)
    with pytest.raises(ValueError, match="r_max must be"):
        BatchRenorm1d(3, r_max=0.5)
    with pytest.raises(ValueError, match="d_max must be"):
        BatchRenorm1d(3, d_max=-1)
    with pytest.raises(ValueError, match="momentum"):
        BatchRenorm1d(3, momentum=None)
    with pytest.raises(ValueError, match="must be >= 0"):
        BatchRenorm1d(3, warmup_steps=-1)
    layer = BatchRenorm1d(3)
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer(torch.randn(1, 3))
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(torch.tensor([[0.0, 1.0, float("nan")], [1.0, 2.0, 3.0]]))
