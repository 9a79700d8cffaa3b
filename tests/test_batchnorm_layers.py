"""normlab.layers.BatchNorm1d/2d are drop-in replacements for torch.nn.BatchNorm1d/2d.

torch's built-ins are the oracle: the same initial state and the same inputs must give the
same outputs, gradients and running statistics (tight in float64, loose in float32), in
training and in eval mode, over shapes and settings drawn by hypothesis; the analytic
backward passes ``gradcheck``; state dicts load both ways; bad input raises a ValueError
that says what to do.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from normlab import layers, models

OURS = {"1d": layers.BatchNorm1d, "2d": layers.BatchNorm2d}
TORCH = {"1d": nn.BatchNorm1d, "2d": nn.BatchNorm2d}
F64 = {"rtol": 1e-10, "atol": 1e-10}
F32 = {"rtol": 1e-4, "atol": 1e-4}
HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- helpers


def make_pair(kind: str, num_features: int, dtype: torch.dtype = torch.float64, seed: int = 0, **kwargs):
    """A normlab layer and a torch layer in the same state: random γ, β; torch's loaded from ours."""
    ours = OURS[kind](num_features, dtype=dtype, **kwargs)
    theirs = TORCH[kind](num_features, dtype=dtype, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if ours.weight is not None:
            ours.weight.copy_(torch.rand(num_features, generator=generator, dtype=dtype) + 0.5)
        if ours.bias is not None:
            ours.bias.copy_(torch.randn(num_features, generator=generator, dtype=dtype))
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def randomize_running_stats(ours: nn.Module, theirs: nn.Module, seed: int) -> None:
    """Give both layers the same non-trivial running mean, variance and batch count."""
    if ours.running_mean is None:
        return
    generator = torch.Generator().manual_seed(seed)
    dtype, size = ours.running_mean.dtype, ours.running_mean.shape
    with torch.no_grad():
        ours.running_mean.copy_(torch.randn(size, generator=generator, dtype=dtype))
        ours.running_var.copy_(torch.rand(size, generator=generator, dtype=dtype) * 2 + 0.1)
        ours.num_batches_tracked.fill_(7)
    theirs.load_state_dict(ours.state_dict())


def input_shape(kind: str, batch: int, channels: int, spatial: tuple[int, ...]) -> tuple[int, ...]:
    return (batch, channels, *spatial)


def random_input(shape, seed: int, dtype=torch.float64, scale: float = 1.0, offset: float = 0.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype) * scale + offset


def step(module: nn.Module, x: torch.Tensor, grad_output: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """One forward and backward; everything the two implementations must agree on."""
    for parameter in module.parameters():
        parameter.grad = None
    x = x.clone().requires_grad_(True)
    output = module(x)
    output.backward(grad_output)
    record = {
        "output": output.detach(),
        "grad_input": x.grad,
        "grad_weight": None if module.weight is None else module.weight.grad,
        "grad_bias": None if module.bias is None else module.bias.grad,
    }
    for name, buffer in module.named_buffers():
        record[name] = buffer.clone()
    return record


def assert_records_equal(ours: dict, theirs: dict, tolerance: dict) -> None:
    assert ours.keys() == theirs.keys()
    for name in ours:
        if theirs[name] is None:
            assert ours[name] is None, name
        elif name == "num_batches_tracked":
            assert torch.equal(ours[name], theirs[name]), name
        else:
            torch.testing.assert_close(ours[name], theirs[name], **tolerance, msg=lambda m, n=name: f"{n}: {m}")


# A layer setting: which class, its input shape and its constructor arguments.
settings_strategy = st.fixed_dictionaries(
    {
        "kind_and_spatial": st.one_of(
            st.just(("1d", ())),
            st.tuples(st.just("1d"), st.tuples(st.integers(1, 5))),
            st.tuples(st.just("2d"), st.tuples(st.integers(1, 4), st.integers(1, 4))),
        ),
        "batch": st.integers(1, 6),
        "channels": st.integers(1, 5),
        "affine": st.booleans(),
        "bias": st.booleans(),
        "track_running_stats": st.booleans(),
        "momentum": st.sampled_from([0.1, 0.5, 1.0, 0.0, None]),
        "eps": st.sampled_from([1e-5, 1e-3, 0.5]),
        "seed": st.integers(0, 2**16),
        "scale": st.sampled_from([0.1, 1.0, 10.0]),
        "offset": st.sampled_from([0.0, 3.0, -10.0]),
    }
)


def build(setting: dict, dtype: torch.dtype):
    kind, spatial = setting["kind_and_spatial"]
    shape = input_shape(kind, setting["batch"], setting["channels"], spatial)
    ours, theirs = make_pair(
        kind,
        setting["channels"],
        dtype=dtype,
        seed=setting["seed"],
        eps=setting["eps"],
        momentum=setting["momentum"],
        affine=setting["affine"],
        track_running_stats=setting["track_running_stats"],
        bias=setting["bias"],
    )
    x = random_input(shape, setting["seed"], dtype, setting["scale"], setting["offset"])
    grad_output = random_input(shape, setting["seed"] + 1, dtype)
    return ours, theirs, x, grad_output


def values_per_channel(x: torch.Tensor) -> int:
    return x.shape[0] * math.prod(x.shape[2:])


# ------------------------------------------------------------------ agreement with torch


@HYPOTHESIS
@given(setting=settings_strategy)
def test_training_step_matches_torch_in_float64(setting):
    ours, theirs, x, grad_output = build(setting, torch.float64)
    assume(values_per_channel(x) > 1)
    assert_records_equal(step(ours, x, grad_output), step(theirs, x, grad_output), F64)


@settings(max_examples=60, deadline=None)
@given(setting=settings_strategy)
def test_training_step_matches_torch_in_float32(setting):
    ours, theirs, x, grad_output = build(setting, torch.float32)
    assume(values_per_channel(x) > 1)
    assert_records_equal(step(ours, x, grad_output), step(theirs, x, grad_output), F32)


@HYPOTHESIS
@given(setting=settings_strategy)
def test_eval_mode_matches_torch(setting):
    """Eval with running stats is a fixed affine map; without them it uses the batch's."""
    ours, theirs, x, grad_output = build(setting, torch.float64)
    randomize_running_stats(ours, theirs, setting["seed"])
    ours.eval()
    theirs.eval()
    if ours.running_mean is None:
        assume(values_per_channel(x) > 1)
    assert_records_equal(step(ours, x, grad_output), step(theirs, x, grad_output), F64)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("kind, spatial", [("1d", ()), ("1d", (5,)), ("2d", (3, 4))])
def test_running_stats_match_torch_after_many_steps(kind, spatial, momentum):
    ours, theirs = make_pair(kind, 4, momentum=momentum)
    for index in range(20):
        batch = 2 + index % 5
        x = random_input((batch, 4, *spatial), seed=index, scale=1 + index / 4, offset=index / 3 - 2)
        grad_output = random_input(x.shape, seed=100 + index)
        assert_records_equal(step(ours, x, grad_output), step(theirs, x, grad_output), F64)
    assert ours.num_batches_tracked.item() == 20
    ours.eval()
    theirs.eval()
    x = random_input((3, 4, *spatial), seed=999)
    torch.testing.assert_close(ours(x), theirs(x), **F64)


def test_momentum_none_keeps_the_plain_average_of_batch_statistics():
    """With momentum=None the running mean is the mean of the batch means (CMA)."""
    layer = layers.BatchNorm1d(3, momentum=None, dtype=torch.float64)
    batches = [random_input((4 + k, 3), seed=k, offset=k) for k in range(6)]
    for x in batches:
        layer(x)
    means = torch.stack([x.mean(0) for x in batches])
    unbiased_vars = torch.stack([x.var(0, correction=1) for x in batches])
    torch.testing.assert_close(layer.running_mean, means.mean(0), **F64)
    torch.testing.assert_close(layer.running_var, unbiased_vars.mean(0), **F64)


def test_running_stats_untouched_when_tracking_is_switched_off_after_construction():
    """As torch: buffers exist but track_running_stats=False: training ignores them, eval uses them."""
    ours, theirs = make_pair("1d", 3)
    randomize_running_stats(ours, theirs, seed=1)
    ours.track_running_stats = theirs.track_running_stats = False
    x, grad_output = random_input((5, 3), seed=2), random_input((5, 3), seed=3)
    assert_records_equal(step(ours, x, grad_output), step(theirs, x, grad_output), F64)
    ours.eval()
    theirs.eval()
    assert_records_equal(step(ours, x, grad_output), step(theirs, x, grad_output), F64)


@pytest.mark.parametrize(
    "kind, make_input",
    [
        ("1d", lambda: random_input((6, 4), seed=0).t().contiguous().t()),  # column-major (N, C)
        ("1d", lambda: random_input((4, 5, 3), seed=0).permute(2, 0, 1)),  # (N, C, L) as a permuted view
        ("2d", lambda: random_input((3, 4, 5, 5), seed=0).contiguous(memory_format=torch.channels_last)),
    ],
)
def test_non_contiguous_input_matches_torch(kind, make_input):
    x = make_input()
    ours, theirs = make_pair(kind, x.shape[1])
    grad_output = random_input(x.shape, seed=1)
    assert_records_equal(step(ours, x, grad_output), step(theirs, x, grad_output), F64)


@pytest.mark.parametrize("affine", [True, False])
def test_inplace_relu_after_the_layer_leaves_backward_correct(affine):
    """The output is never the tensor saved for backward, so ReLU(inplace=True) is safe."""
    x, grad_output = random_input((6, 3), seed=0), random_input((6, 3), seed=1)
    results = []
    for layer in make_pair("1d", 3, affine=affine):
        inputs = x.clone().requires_grad_(True)
        output = nn.functional.relu(layer(inputs), inplace=True)
        output.backward(grad_output)
        results.append((output.detach(), inputs.grad))
    torch.testing.assert_close(results[0], results[1], **F64)


@pytest.mark.parametrize("kind, shape", [("1d", (0, 3)), ("2d", (0, 3, 2, 2))])
def test_empty_batch_behaves_like_torch(kind, shape):
    ours, theirs = make_pair(kind, 3)
    x = torch.zeros(shape, dtype=torch.float64)
    assert_records_equal(step(ours, x, x), step(theirs, x, x), F64)


# ------------------------------------------------------------------ analytic backward


@pytest.mark.parametrize(
    "kind, shape", [("1d", (5, 3)), ("1d", (4, 3, 5)), ("2d", (3, 2, 3, 4)), ("2d", (1, 2, 2, 3))]
)
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_passes_in_float64_in_training_mode(kind, shape, affine):
    layer = OURS[kind](shape[1], affine=affine, dtype=torch.float64)
    x = random_input(shape, seed=0, scale=2.0, offset=1.0).requires_grad_(True)
    if affine:
        weight = (torch.rand(shape[1], dtype=torch.float64) + 0.5).requires_grad_(True)
        bias = torch.randn(shape[1], dtype=torch.float64, requires_grad=True)

        def function(x, weight, bias):
            return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (x,))

        assert torch.autograd.gradcheck(function, (x, weight, bias))
    else:
        assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("kind, shape", [("1d", (5, 3)), ("1d", (4, 3, 5)), ("2d", (3, 2, 3, 4))])
def test_gradcheck_passes_in_float64_in_eval_mode(kind, shape):
    ours, theirs = make_pair(kind, shape[1])
    randomize_running_stats(ours, theirs, seed=0)
    ours.eval()
    x = random_input(shape, seed=0).requires_grad_(True)
    weight = ours.weight.detach().clone().requires_grad_(True)
    bias = ours.bias.detach().clone().requires_grad_(True)

    def function(x, weight, bias):
        return torch.func.functional_call(ours, {"weight": weight, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(function, (x, weight, bias))


def test_training_backward_runs_through_batchnormfunction():
    """The graph has one node, the analytic backward, not the autograd of the forward's ops."""
    layer = layers.BatchNorm2d(3)
    output = layer(torch.randn(2, 3, 2, 2, requires_grad=True))
    assert type(output.grad_fn).__name__ == "BatchNormFunctionBackward"
    assert isinstance(output.grad_fn, torch.autograd.function.BackwardCFunction)


def test_batchnormfunction_returns_batch_mean_and_biased_variance_without_gradient():
    x = random_input((6, 3, 2), seed=0, offset=2.0).requires_grad_(True)
    output, mean, var = layers.BatchNormFunction.apply(x, None, None, 1e-5)
    torch.testing.assert_close(mean, x.detach().mean((0, 2)), **F64)
    torch.testing.assert_close(var, x.detach().var((0, 2), correction=0), **F64)
    assert not mean.requires_grad and not var.requires_grad and output.requires_grad


def test_weight_and_bias_gradients_are_the_sums_on_the_page():
    """dγ = Σ dy·x̂ and dβ = Σ dy over the batch and spatial axes."""
    layer = layers.BatchNorm2d(3, dtype=torch.float64)
    x = random_input((4, 3, 2, 5), seed=0, scale=3.0)
    grad_output = random_input(x.shape, seed=1)
    layer(x).backward(grad_output)
    xhat = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(x.var((0, 2, 3), correction=0, keepdim=True) + 1e-5)
    torch.testing.assert_close(layer.weight.grad, (grad_output * xhat).sum((0, 2, 3)), **F64)
    torch.testing.assert_close(layer.bias.grad, grad_output.sum((0, 2, 3)), **F64)


# ------------------------------------------------------------------- module interface


CONFIGS = [
    {},
    {"affine": False},
    {"bias": False},
    {"track_running_stats": False},
    {"affine": False, "track_running_stats": False},
    {"momentum": None, "eps": 1e-3},
]


@pytest.mark.parametrize("kind", ["1d", "2d"])
@pytest.mark.parametrize("kwargs", CONFIGS)
def test_state_dicts_load_both_ways_with_strict_keys(kind, kwargs):
    ours, theirs = OURS[kind](4, **kwargs), TORCH[kind](4, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in theirs.named_parameters()]
    assert [name for name, _ in ours.named_buffers()] == [name for name, _ in theirs.named_buffers()]
    shape = (5, 4) if kind == "1d" else (5, 4, 2, 2)
    theirs(torch.randn(shape))  # non-trivial running stats
    if theirs.weight is not None:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    ours(torch.randn(shape))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    for name, value in ours.state_dict().items():
        assert torch.equal(theirs.state_dict()[name], value), name


@pytest.mark.parametrize("kind", ["1d", "2d"])
@pytest.mark.parametrize("kwargs", CONFIGS)
def test_repr_matches_torch(kind, kwargs):
    ours, theirs = OURS[kind](7, **kwargs), TORCH[kind](7, **kwargs)
    assert ours.extra_repr() == theirs.extra_repr()
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_reset_parameters_and_reset_running_stats_behave_like_torch(kind):
    ours, theirs = make_pair(kind, 3)
    shape = (4, 3) if kind == "1d" else (4, 3, 2, 2)
    x = torch.randn(shape, dtype=torch.float64)
    ours(x)
    theirs(x)
    ours.reset_running_stats()
    theirs.reset_running_stats()
    for name, value in theirs.state_dict().items():  # γ, β kept; running stats reset
        assert torch.equal(ours.state_dict()[name], value), name
    assert ours.num_batches_tracked.item() == 0 and not torch.all(ours.weight == 1)
    ours(x)
    theirs(x)
    ours.reset_parameters()
    theirs.reset_parameters()
    for name, value in theirs.state_dict().items():  # everything back to the initial state
        assert torch.equal(ours.state_dict()[name], value), name
    assert torch.all(ours.weight == 1) and torch.all(ours.bias == 0)


def test_reset_on_layers_without_running_stats_or_affine_is_a_no_op():
    layer = layers.BatchNorm1d(3, affine=False, track_running_stats=False)
    layer.reset_parameters()
    layer.reset_running_stats()
    assert layer.state_dict() == {}


def test_mlp_with_normlab_batchnorm_trains_exactly_like_torch_batchnorm():
    """Same seed, same batches, a few SGD steps: the same parameters and running stats."""
    nets = [
        models.mlp(6, [16, 8], 3, norm=norm, seed=0).double() for norm in (layers.BatchNorm1d, nn.BatchNorm1d)
    ]
    assert list(nets[0].state_dict()) == list(nets[1].state_dict())
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9) for net in nets]
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        x = torch.randn(16, 6, generator=generator, dtype=torch.float64) * 2 + 1
        target = torch.randint(0, 3, (16,), generator=generator)
        for net, optimizer in zip(nets, optimizers):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), target).backward()
            optimizer.step()
    for (name, ours), theirs in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")
    x = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(nets[0].eval()(x), nets[1].eval()(x), rtol=1e-9, atol=1e-11)


def test_small_cnn_with_normlab_batchnorm2d_trains_exactly_like_torch_batchnorm2d():
    def cnn(norm):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return nn.Sequential(
                nn.Conv2d(2, 4, 3, padding=1), norm(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)
            ).double()

    nets = [cnn(layers.BatchNorm2d), cnn(nn.BatchNorm2d)]
    optimizers = [torch.optim.SGD(net.parameters(), lr=0.05) for net in nets]
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = torch.randn(6, 2, 5, 5, generator=generator, dtype=torch.float64)
        target = torch.randint(0, 3, (6,), generator=generator)
        for net, optimizer in zip(nets, optimizers):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x), target).backward()
            optimizer.step()
    for (name, ours), theirs in zip(nets[0].state_dict().items(), nets[1].state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-11, msg=lambda m, n=name: f"{n}: {m}")


def test_to_float64_converts_parameters_and_running_stats_but_not_the_batch_count():
    ours, theirs = layers.BatchNorm2d(3).to(torch.float64), nn.BatchNorm2d(3).to(torch.float64)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert a.dtype == b.dtype, name
    assert ours.weight.dtype == ours.running_var.dtype == torch.float64
    assert ours.num_batches_tracked.dtype == torch.long
    assert ours(torch.randn(2, 3, 2, 2, dtype=torch.float64)).dtype == torch.float64


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_arguments_place_every_tensor(device, dtype):
    ours = layers.BatchNorm1d(4, device=device, dtype=dtype)
    theirs = nn.BatchNorm1d(4, device=device, dtype=dtype)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert (a.device, a.dtype) == (b.device, b.dtype), name
    x = torch.randn(5, 4, device=device, dtype=dtype)
    tolerance = F64 if dtype == torch.float64 else F32
    torch.testing.assert_close(ours(x), theirs(x), **tolerance)
    torch.testing.assert_close(ours.running_var, theirs.running_var, **tolerance)
    torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), **tolerance)


def test_meta_device_builds_without_memory():
    layer = layers.BatchNorm2d(1024, device="meta")
    assert layer.weight.is_meta and layer.running_mean.is_meta


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        (layers.BatchNorm1d(3), (2, 3, 4, 4), r"BatchNorm1d expects 2D input \(N, C\) or 3D input \(N, C, L\); "
         r"got 4D input of shape \(2, 3, 4, 4\)\. For images \(N, C, H, W\) use BatchNorm2d"),
        (layers.BatchNorm1d(3), (3,), r"BatchNorm1d expects 2D .* got 1D input of shape \(3,\)"),
        (layers.BatchNorm2d(3), (2, 3, 4), r"BatchNorm2d expects 4D input \(N, C, H, W\); got 3D input "
         r"of shape \(2, 3, 4\)\. For \(N, C\) or \(N, C, L\) input use BatchNorm1d"),
        (layers.BatchNorm2d(3), (1, 2, 3, 4, 5), r"BatchNorm2d expects 4D .* got 5D input"),
    ],
)
def test_wrong_number_of_dimensions_raises_value_error_naming_expected_and_got(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))


@pytest.mark.parametrize("layer, shape", [(layers.BatchNorm1d(64), (8, 32)), (layers.BatchNorm2d(64), (8, 32, 2, 2))])
def test_channel_count_mismatch_raises_value_error_naming_both(layer, shape):
    name = type(layer).__name__
    message = (rf"{name} was built with num_features=64 but got input of shape \({', '.join(map(str, shape))}\) "
               r"with 32 channels in dimension 1\. Build it with num_features=32")
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))


@pytest.mark.parametrize("layer, shape", [(layers.BatchNorm1d(64), (1, 64)), (layers.BatchNorm2d(64), (1, 64, 1, 1))])
def test_one_value_per_channel_in_training_raises_value_error(layer, shape):
    message = (r"BatchNorm needs more than one value per channel in training mode; got input of shape "
               rf"\({', '.join(map(str, shape))}\)\. Use eval\(\) or a batch larger than 1\.")
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))
    assert layer.num_batches_tracked.item() == 0  # the rejected batch is not counted
    assert layer.eval()(torch.randn(shape)).shape == shape  # eval with running stats is fine


def test_one_value_per_channel_without_running_stats_raises_value_error_even_in_eval():
    layer = layers.BatchNorm1d(4, track_running_stats=False).eval()
    with pytest.raises(ValueError, match=r"more than one value per channel when it has no running statistics"):
        layer(torch.randn(1, 4))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_in_training_raises_value_error_and_keeps_running_stats(bad):
    layer = layers.BatchNorm2d(3)
    layer(torch.randn(4, 3, 2, 2))
    before = {name: value.clone() for name, value in layer.state_dict().items()}
    x = torch.randn(4, 3, 2, 2)
    x[1, 2, 0, 1] = bad
    with pytest.raises(ValueError, match=r"BatchNorm2d got input of shape \(4, 3, 2, 2\) containing NaN or Inf "
                       r"in training mode; its batch statistics would poison running_mean and running_var"):
        layer(x)
    for name, value in layer.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_variance_overflow_in_training_raises_value_error():
    x = torch.tensor([[3e30], [-3e30]], dtype=torch.float32)
    with pytest.raises(ValueError, match=r"batch variance of input of shape \(2, 1\) overflowed to inf"):
        layers.BatchNorm1d(1)(x)


@pytest.mark.parametrize(
    "layer", [layers.BatchNorm1d(2).eval(), layers.BatchNorm1d(2, track_running_stats=False)]
)
def test_non_finite_input_passes_through_like_torch_when_running_stats_are_not_updated(layer):
    x = torch.tensor([[math.nan, 1.0], [2.0, 3.0], [0.0, 1.0]])
    reference = nn.BatchNorm1d(2, track_running_stats=layer.track_running_stats).train(layer.training)
    torch.testing.assert_close(layer(x), reference(x), equal_nan=True)



@pytest.mark.parametrize("wrt", ["input", "weight"])
def test_create_graph_through_the_input_raises_instead_of_a_wrong_second_derivative(wrt):
    """The closed-form backward treats x̂ as a constant, so a graph built from it would give
    wrong second derivatives through x: it must refuse, whichever first derivative is asked."""
    bn = layers.BatchNorm1d(3, dtype=torch.float64)
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    target = x if wrt == "input" else bn.weight
    with pytest.raises(RuntimeError, match=r"cannot be differentiated twice.*torch\.nn\.BatchNorm1d"):
        torch.autograd.grad(bn(x).pow(3).sum(), target, create_graph=True)


def test_second_derivatives_in_gamma_and_beta_alone_match_torch():
    """With a constant input x̂ is a constant too, so second derivatives in γ, β are right."""
    x = torch.randn(8, 3, dtype=torch.float64)
    ours, theirs = layers.BatchNorm1d(3, dtype=torch.float64), nn.BatchNorm1d(3, dtype=torch.float64)
    second = []
    for bn in (ours, theirs):
        (g,) = torch.autograd.grad(bn(x).pow(3).sum(), bn.weight, create_graph=True)
        second.append(torch.autograd.grad(g.sum(), (bn.weight, bn.bias)))
    for a, b in zip(*second):
        torch.testing.assert_close(a, b)
