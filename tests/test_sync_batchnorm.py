"""normlab.layers.SyncBatchNorm on 2 and 3 gloo processes, against BatchNorm on the whole batch in one process.

One group of 2 and one of 3 worker processes serve the whole module (normlab.distributed.Workers,
one torch thread each). Every rank builds the same whole batch from a seed and takes its shard;
the shards have unequal sizes (one is empty with 3 ranks).
"""

import pytest
import torch
import torch.distributed as dist
from torch import nn

from normlab.distributed import Workers
from normlab.layers import BatchNorm1d, BatchNorm2d, BatchRenorm1d, GhostBatchNorm1d, SyncBatchNorm

SHARDS = {2: (5, 2), 3: (4, 0, 7)}
SHAPES = [(3,), (3, 4), (2, 3, 2)]  # per example: (C,), (C, L), (C, H, W)


@pytest.fixture(scope="module")
def groups():
    with Workers(2, timeout=60) as two, Workers(3, timeout=60) as three:
        yield {2: two, 3: three}


def _reference_layer(shape, momentum=0.1, affine=True):
    layer = (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(shape[0], momentum=momentum, affine=affine,
                                                                     dtype=torch.float64)
    if affine:
        with torch.no_grad():
            layer.weight.uniform_(0.5, 2.0)
            layer.bias.normal_()
    return layer


def _shard(tensor, sizes, rank):
    start = sum(sizes[:rank])
    return tensor[start : start + sizes[rank]]


def _compare_with_whole_batch(rank, world_size, sizes, shape, momentum, steps, affine):
    """Train-mode steps on this rank's shard and on the whole batch; the largest differences."""
    torch.manual_seed(len(shape) * 10 + world_size)
    reference = _reference_layer(shape, momentum, affine)
    layer = SyncBatchNorm(shape[0], momentum=momentum, affine=affine, dtype=torch.float64)
    layer.load_state_dict(reference.state_dict())
    worst = {"output": 0.0, "grad_input": 0.0, "running": 0.0}
    grads = []
    for _ in range(steps):
        x = torch.randn((sum(sizes),) + shape, dtype=torch.float64) * 3 + 2
        w = torch.randn_like(x)
        x_all = x.clone().requires_grad_()
        y_all = reference(x_all)
        (y_all * w).sum().backward()
        x_mine = _shard(x, sizes, rank).clone().requires_grad_()
        y_mine = layer(x_mine)
        (y_mine * _shard(w, sizes, rank)).sum().backward()
        worst["output"] = max(worst["output"], (y_mine - _shard(y_all, sizes, rank)).abs().max().item()
                              if y_mine.numel() else 0.0)
        worst["grad_input"] = max(worst["grad_input"], (x_mine.grad - _shard(x_all.grad, sizes, rank)).abs().max()
                                  .item() if y_mine.numel() else 0.0)
    for name in ("running_mean", "running_var"):
        worst["running"] = max(worst["running"], (getattr(layer, name) - getattr(reference, name)).abs().max().item())
    assert int(layer.num_batches_tracked) == int(reference.num_batches_tracked) == steps
    if affine:
        grads = [layer.weight.grad.clone(), layer.bias.grad.clone(), reference.weight.grad, reference.bias.grad]
    return worst, grads


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=["NC", "NCL", "NCHW"])
def test_sync_batchnorm_equals_batchnorm_on_the_whole_batch(groups, world_size, shape):
    results = groups[world_size].run(_compare_with_whole_batch, SHARDS[world_size], shape, 0.1, 2, True)
    for rank, (worst, grads) in enumerate(results):
        assert worst["output"] < 1e-12 and worst["grad_input"] < 1e-12 and worst["running"] < 1e-12, (rank, worst)
    # dγ and dβ: each rank holds its share; the shares sum to the whole batch's gradient (accumulated over steps)
    for k in range(2):
        total = sum(grads[k] for _, grads in results)
        torch.testing.assert_close(total, results[0][1][k + 2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("world_size", [2, 3])
def test_sync_batchnorm_cumulative_average_and_no_affine(groups, world_size):
    results = groups[world_size].run(_compare_with_whole_batch, SHARDS[world_size], (3,), None, 3, False)
    for worst, _ in results:
        assert max(worst.values()) < 1e-12, worst


def _finite_difference_check(rank, world_size, sizes, shape, h=1e-6):
    """Central differences of L = Σ over all ranks of w·y, for every input element of every rank (all ranks
    run every forward, only the owner of element j perturbs it), against the analytic gradient."""
    torch.manual_seed(7)
    x = torch.randn((sum(sizes),) + shape, dtype=torch.float64)
    w = torch.randn_like(x)
    layer = SyncBatchNorm(shape[0], dtype=torch.float64)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.normal_()
    mine, w_mine = _shard(x, sizes, rank).clone(), _shard(w, sizes, rank)

    def loss(local):
        value = torch.stack([(layer(local) * w_mine).sum()])
        dist.all_reduce(value)
        return value.item()

    analytic_x = mine.clone().requires_grad_()
    (layer(analytic_x) * w_mine).sum().backward()
    analytic_gamma = layer.weight.grad.clone()
    dist.all_reduce(analytic_gamma)
    worst = 0.0
    start = sum(sizes[:rank])
    with torch.no_grad():
        for j in range(x.numel() // x.shape[0] * x.shape[0]):
            row = j // (x.numel() // x.shape[0])
            owner = next(r for r in range(world_size) if sum(sizes[:r]) <= row < sum(sizes[: r + 1]))
            flat = mine.view(-1)
            index = j - start * (x.numel() // x.shape[0])
            values = []
            for sign in (1, -1):
                if owner == rank:
                    flat[index] += sign * h
                values.append(loss(mine))
                if owner == rank:
                    flat[index] -= sign * h
            if owner == rank:
                numeric = (values[0] - values[1]) / (2 * h)
                worst = max(worst, abs(numeric - analytic_x.grad.view(-1)[index].item()))
        numeric_gamma = []
        for c in range(shape[0]):
            values = []
            for sign in (1, -1):
                layer.weight[c] += sign * h
                values.append(loss(mine))
                layer.weight[c] -= sign * h
            numeric_gamma.append((values[0] - values[1]) / (2 * h))
    gamma_error = (torch.tensor(numeric_gamma, dtype=torch.float64) - analytic_gamma).abs().max().item()
    return worst, gamma_error


@pytest.mark.parametrize("world_size", [2, 3])
def test_sync_batchnorm_gradient_matches_finite_differences_across_ranks(groups, world_size):
    for worst, gamma_error in groups[world_size].run(_finite_difference_check, SHARDS[world_size], (2, 2)):
        assert worst < 1e-7 and gamma_error < 1e-7, (worst, gamma_error)


def _count_collectives(rank, world_size):
    """How many all-reduces one training forward, one backward and one eval forward make."""
    calls = []
    original = dist.all_reduce

    def counting(tensor, *args, **kwargs):
        calls.append(tensor.numel())
        return original(tensor, *args, **kwargs)

    layer = SyncBatchNorm(4, dtype=torch.float64)
    x = torch.randn(3 + rank, 4, dtype=torch.float64, requires_grad=True)
    layer(x)  # first call: also the one-time consistency check
    dist.all_reduce = counting
    try:
        y = layer(x)
        forward = len(calls)
        y.sum().backward()
        backward = len(calls) - forward
        layer.eval()
        if rank == 0:  # evaluating on one rank alone would hang if eval communicated
            layer(x)
        evaluation = len(calls) - forward - backward
    finally:
        dist.all_reduce = original
    return forward, backward, evaluation, calls[:2]


def test_sync_batchnorm_makes_one_all_reduce_forward_and_one_backward_and_none_in_eval(groups):
    for forward, backward, evaluation, sizes in groups[2].run(_count_collectives):
        assert (forward, backward, evaluation) == (1, 1, 0)
        assert sizes == [2 * (2 * 4 + 1), 2 * 4]  # (world, 2C + 1) partial moments; Σdy and Σdy·x̂


def _mismatched(rank, world_size, what):
    features = 3 + rank if what == "features" else 3
    dtype = torch.float32 if (what == "dtype" and rank == 1) else torch.float64
    layer = SyncBatchNorm(features, dtype=dtype)
    try:
        layer(torch.randn(4, features, dtype=dtype))
    except RuntimeError as error:
        return str(error)
    return "no error"


@pytest.mark.parametrize("what", ["features", "dtype"])
def test_mismatched_layers_across_ranks_raise_on_every_rank_instead_of_hanging(groups, what):
    for message in groups[2].run(_mismatched, what):
        assert "disagree across the ranks" in message


def _too_few_values(rank, world_size):
    layer = SyncBatchNorm(2, dtype=torch.float64)
    try:
        layer(torch.randn(1 if rank == 0 else 0, 2, dtype=torch.float64))
    except ValueError as error:
        return str(error)
    return "no error"


def test_one_value_per_channel_over_all_ranks_raises_on_every_rank(groups):
    for message in groups[2].run(_too_few_values):
        assert "more than one value per channel over all 2 ranks" in message


def _float32_far_from_zero(rank, world_size):
    """Mean 10⁴, standard deviation 1, in float32: partial moments keep the variance."""
    torch.manual_seed(3)
    x = torch.randn(4000, 2, dtype=torch.float64) + 1e4
    exact = x.var(0, unbiased=True)
    layer = SyncBatchNorm(2, momentum=1.0)
    layer(_shard(x, (1500, 2500), rank).float())
    naive_sums = torch.stack([x.float().sum(0), (x.float() ** 2).sum(0)])
    naive = (naive_sums[1] - naive_sums[0] ** 2 / 4000) / 3999
    return ((layer.running_var.double() - exact) / exact).abs().max().item(), ((naive.double() - exact) / exact
                                                                                ).abs().max().item()


def test_partial_moments_avoid_cancellation_in_float32(groups):
    for merged, naive in groups[2].run(_float32_far_from_zero):
        assert merged < 1e-3 < naive, (merged, naive)


def _world_of_one(rank, world_size):
    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    sync, plain = SyncBatchNorm(3, dtype=torch.float64), BatchNorm1d(3, dtype=torch.float64)
    y = sync(x)
    grad = torch.autograd.grad(y.sum() + (y ** 2).sum(), x)[0]
    y2 = plain(x)
    grad2 = torch.autograd.grad(y2.sum() + (y2 ** 2).sum(), x)[0]
    return (y - y2).abs().max().item(), (grad - grad2).abs().max().item(), (sync.running_var - plain.running_var
                                                                            ).abs().max().item()


def test_world_of_one_process_is_batchnorm():
    # to rounding, not bitwise: BatchNorm1d takes a small batch through torch's fused kernel,
    # SyncBatchNorm through BatchNormFunction's ops (1e-12, as against torch below)
    with Workers(1, timeout=60) as one:
        assert max(one.run(_world_of_one)[0]) <= 1e-12


# ------------------------------------------------------------------ without a process group


def test_outside_a_process_group_it_is_batchnorm():
    assert not dist.is_initialized()
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    sync, plain = SyncBatchNorm(3, dtype=torch.float64), nn.BatchNorm2d(3, dtype=torch.float64)
    y, y2 = sync(x), plain(x)
    torch.testing.assert_close(y, y2, rtol=0, atol=1e-12)
    g, g2 = (torch.autograd.grad((out * out).sum(), x)[0] for out in (y, y2))
    torch.testing.assert_close(g, g2, rtol=0, atol=1e-12)
    torch.testing.assert_close(sync.running_var, plain.running_var, rtol=0, atol=1e-12)
    sync.eval(), plain.eval()
    torch.testing.assert_close(sync(x), plain(x), rtol=0, atol=1e-12)


def test_state_and_constructor_match_torch_sync_batchnorm():
    ours = SyncBatchNorm(5, eps=1e-3, momentum=0.2, affine=True, track_running_stats=True, process_group=None)
    theirs = nn.SyncBatchNorm(5, eps=1e-3, momentum=0.2)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    assert (ours.eps, ours.momentum, ours.process_group) == (1e-3, 0.2, None)
    no_stats = SyncBatchNorm(5, affine=False, track_running_stats=False)
    assert no_stats.state_dict().keys() == nn.SyncBatchNorm(5, affine=False, track_running_stats=False
                                                            ).state_dict().keys() == set()


def test_a_process_group_without_torch_distributed_is_a_clear_error():
    layer = SyncBatchNorm(3, process_group=object())
    with pytest.raises(RuntimeError, match="torch.distributed is not initialized"):
        layer(torch.randn(4, 3))


def test_bad_input_is_a_clear_error():
    layer = SyncBatchNorm(3)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        layer(torch.randn(3))
    with pytest.raises(ValueError, match="num_features=3"):
        layer(torch.randn(4, 5))
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer(torch.randn(1, 3))


def test_convert_sync_batchnorm_keeps_state_and_leaves_other_normalizers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, momentum=0.3), nn.Sequential(BatchNorm1d(3, eps=1e-3)),
                          GhostBatchNorm1d(3, virtual_batch_size=2), BatchRenorm1d(3), nn.Conv2d(1, 2, 1),
                          BatchNorm2d(2, affine=False))
    for _ in range(2):
        model[:5](torch.randn(8, 4))
    model[1].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weight = model[1].weight
    converted = SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(converted[1]) is SyncBatchNorm and type(converted[2][0]) is SyncBatchNorm
    assert type(converted[6]) is SyncBatchNorm and converted[6].weight is None
    assert type(converted[3]) is GhostBatchNorm1d and type(converted[4]) is BatchRenorm1d
    assert converted[1].weight is weight and not converted[1].training and converted[2][0].training
    assert (converted[1].momentum, converted[2][0].eps) == (0.3, 1e-3)
    after = converted.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    single = SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm2d(2), process_group=None)
    assert isinstance(single, SyncBatchNorm)
    assert torch.nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(3))).state_dict().keys() \
        == SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(3))).state_dict().keys()


def test_second_derivatives_through_the_input_are_refused():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = SyncBatchNorm(3, dtype=torch.float64)(x)
    # outside a group it is BatchNorm, whose closed-form backward refuses create_graph through x
    with pytest.raises(RuntimeError, match="cannot be differentiated twice"):
        torch.autograd.grad((y ** 3).sum(), x, create_graph=True)


# ------------------------------------------------------------------ against torch.nn.SyncBatchNorm on a GPU


def _against_torch_on_cuda(rank, world_size):
    torch.manual_seed(0)
    device = f"cuda:{rank % torch.cuda.device_count()}"
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64).to(device) + 1
    ours = SyncBatchNorm(3, dtype=torch.float64, device=device)
    theirs = nn.SyncBatchNorm(3, dtype=torch.float64, device=device)
    a, b = x[3 * rank : 3 * rank + 3].clone().requires_grad_(), x[3 * rank : 3 * rank + 3].clone().requires_grad_()
    ya, yb = ours(a), theirs(b)
    (ya * ya).sum().backward()
    (yb * yb).sum().backward()
    return [(p - q).abs().max().item() for p, q in ((ya, yb), (a.grad, b.grad), (ours.running_var, theirs.running_var))]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.nn.SyncBatchNorm runs only there)")
def test_matches_torch_sync_batchnorm_on_cuda():
    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"
    with Workers(2, backend=backend, timeout=120) as two:
        for errors in two.run(_against_torch_on_cuda):
            assert max(errors) < 1e-10, errors

