"""normlab.layers.LayerNorm, RMSNorm, GroupNorm, InstanceNorm1d/2d are drop-in replacements for
their torch.nn namesakes.

torch's built-ins are the oracle: the same state and input give the same outputs and
gradients (tight in float64, loose in float32) over shapes and settings drawn by hypothesis;
the analytic backward passes ``gradcheck`` and agrees with the NumPy reference; state dicts
load both ways; bad input raises a ValueError that says what to do.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from normlab import functional as fn
from normlab import layers

F64 = {"rtol": 1e-10, "atol": 1e-10}
F32 = {"rtol": 1e-4, "atol": 1e-5}
HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INSTANCE = {1: (layers.InstanceNorm1d, nn.InstanceNorm1d), 2: (layers.InstanceNorm2d, nn.InstanceNorm2d)}


# ----------------------------------------------------------------------------- helpers


def pair(ours_cls, torch_cls, *args, dtype=torch.float64, seed=0, **kwargs):
    """A normlab layer and a torch layer in the same state: random γ, β; torch's loaded from ours."""
    ours, theirs = ours_cls(*args, dtype=dtype, **kwargs), torch_cls(*args, dtype=dtype, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in ours.named_parameters():
            offset = 0.5 if name == "weight" else -0.5
            parameter.copy_(torch.rand(parameter.shape, generator=generator, dtype=dtype) + offset)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def random_input(shape, seed, dtype=torch.float64):
    """Values whose scale (10^-2..10^2, so 1/σ <= 100) and offset vary between examples."""
    generator = torch.Generator().manual_seed(seed)
    lead = (shape[0],) + (1,) * (len(shape) - 1) if shape else ()
    scale = 10.0 ** (torch.rand(lead, generator=generator, dtype=torch.float64) * 4 - 2)
    offset = torch.rand(lead, generator=generator, dtype=torch.float64) * 20 - 10
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale + offset).to(dtype)


def step(module, x, grad_output):
    """One forward and backward: everything the two implementations must agree on."""
    for parameter in module.parameters():
        parameter.grad = None
    x = x.clone().requires_grad_(True)
    output = module(x)
    output.backward(grad_output)
    record = {"output": output.detach(), "grad_input": x.grad}
    for name, parameter in module.named_parameters():
        record["grad_" + name] = parameter.grad
    for name, buffer in module.named_buffers():
        record[name] = buffer.clone()
    return record


def assert_records_close(ours, theirs, tolerance, grad_input_scale=None):
    """Every entry close. dx is a difference of terms as large as dy·γ/σ that cancel when few
    values share a statistic; its error is measured against ``grad_input_scale``, their size
    (to 1e-12 of it in float64, 1e-6 in float32)."""
    assert ours.keys() == theirs.keys()
    for name in ours:
        atol = tolerance["atol"]
        if name == "grad_input" and grad_input_scale is not None:
            relative = 1e-6 if ours[name].dtype == torch.float32 else 1e-12
            atol = max(atol, relative * grad_input_scale)
        torch.testing.assert_close(ours[name], theirs[name], rtol=tolerance["rtol"], atol=atol,
                                   msg=lambda m, n=name: f"{n}: {m}")


def cancelling_scale(grad_output, weight, invstd_max):
    """The size of the terms in dx: max |dy · γ| / σ."""
    scaled = grad_output if weight is None else grad_output * weight.detach()
    return float(scaled.abs().max()) * invstd_max


def gradcheck_layer(layer, x):
    """gradcheck with respect to the input and every parameter of ``layer``."""
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters()]

    def function(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))

    return torch.autograd.gradcheck(function, (x.requires_grad_(True), *params))


# ------------------------------------------------------------------- LayerNorm, RMSNorm

layer_settings = st.fixed_dictionaries({
    "lead": st.lists(st.integers(1, 3), max_size=2),
    "normalized_shape": st.lists(st.integers(1, 4), min_size=1, max_size=2).filter(lambda s: np.prod(s) > 1),
    "as_int": st.booleans(),
    "elementwise_affine": st.booleans(),
    "bias": st.booleans(),
    "eps": st.sampled_from([1e-5, 1e-3, 0.1]),
    "seed": st.integers(0, 2**16),
})


@HYPOTHESIS
@given(s=layer_settings)
def test_layernorm_matches_torch_outputs_and_gradients_in_float64(s):
    normalized = s["normalized_shape"][-1] if s["as_int"] else tuple(s["normalized_shape"])
    shape = (*s["lead"], *s["normalized_shape"][-1:]) if s["as_int"] else (*s["lead"], *s["normalized_shape"])
    ours, theirs = pair(layers.LayerNorm, nn.LayerNorm, normalized, eps=s["eps"],
                        elementwise_affine=s["elementwise_affine"], bias=s["bias"], seed=s["seed"])
    x, grad_output = random_input(shape, s["seed"]), random_input(shape, s["seed"] + 1)
    scale = cancelling_scale(grad_output, ours.weight, s["eps"] ** -0.5)
    assert_records_close(step(ours, x, grad_output), step(theirs, x, grad_output), F64, scale)


rms_settings = st.fixed_dictionaries({
    "lead": st.lists(st.integers(1, 3), max_size=2),
    "normalized_shape": st.lists(st.integers(1, 4), min_size=1, max_size=2),
    "elementwise_affine": st.booleans(),
    "eps": st.sampled_from([None, 1e-6, 0.1]),
    "seed": st.integers(0, 2**16),
})


@HYPOTHESIS
@given(s=rms_settings)
def test_rmsnorm_matches_torch_outputs_and_gradients_in_float64(s):
    normalized = tuple(s["normalized_shape"])
    shape = (*s["lead"], *normalized)
    ours, theirs = pair(layers.RMSNorm, nn.RMSNorm, normalized, eps=s["eps"],
                        elementwise_affine=s["elementwise_affine"], seed=s["seed"])
    x, grad_output = random_input(shape, s["seed"]), random_input(shape, s["seed"] + 1)
    assert_records_close(step(ours, x, grad_output), step(theirs, x, grad_output), F64)


def test_rmsnorm_default_eps_is_the_machine_epsilon_of_the_computation_type():
    """eps=None: finfo(float64).eps for float64 input, finfo(float32).eps for float32 and below.
    With all-zero input the output is 0 either way; with a tiny input eps decides the output."""
    for dtype, eps in [(torch.float64, torch.finfo(torch.float64).eps), (torch.float32, torch.finfo(torch.float32).eps)]:
        x = torch.full((1, 4), 1e-9, dtype=dtype)
        expected = x / torch.sqrt((x.double() ** 2).mean() + eps).to(dtype)
        for layer in (layers.RMSNorm(4, dtype=dtype), nn.RMSNorm(4, dtype=dtype)):
            torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=0)
    half = torch.full((2, 4), 1e-3, dtype=torch.bfloat16)
    torch.testing.assert_close(layers.RMSNorm(4, dtype=torch.bfloat16)(half),
                               nn.RMSNorm(4, dtype=torch.bfloat16)(half))


@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_layernorm_and_rmsnorm_match_torch_in_float32(kind):
    ours_cls, torch_cls = (layers.LayerNorm, nn.LayerNorm) if kind == "layer" else (layers.RMSNorm, nn.RMSNorm)
    ours, theirs = pair(ours_cls, torch_cls, (3, 16), dtype=torch.float32)
    x = random_input((5, 3, 16), seed=0, dtype=torch.float32)
    grad_output = random_input((5, 3, 16), seed=1, dtype=torch.float32)
    scale = cancelling_scale(grad_output, ours.weight, 100.0)
    assert_records_close(step(ours, x, grad_output), step(theirs, x, grad_output), F32, scale)


@pytest.mark.parametrize("kind", ["layer", "rms"])
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_and_rmsnorm_pass_gradcheck_in_float64(kind, affine):
    cls = layers.LayerNorm if kind == "layer" else layers.RMSNorm
    layer, _ = pair(cls, nn.LayerNorm if kind == "layer" else nn.RMSNorm, (2, 3), elementwise_affine=affine)
    assert gradcheck_layer(layer, random_input((3, 2, 3), seed=0))


def test_layernorm_backward_equals_the_numpy_reference():
    ours, _ = pair(layers.LayerNorm, nn.LayerNorm, 6)
    x, grad_output = random_input((4, 3, 6), seed=0), random_input((4, 3, 6), seed=1)
    record = step(ours, x, grad_output)
    out, cache = fn.layer_norm_forward(x.numpy(), ours.weight.detach().numpy(), ours.bias.detach().numpy())
    dx, dgamma, dbeta = fn.layer_norm_backward(grad_output.numpy(), cache)
    for name, expected in [("output", out), ("grad_input", dx), ("grad_weight", dgamma), ("grad_bias", dbeta)]:
        np.testing.assert_allclose(record[name].numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=name)


def test_layernorm_and_rmsnorm_backward_run_through_layernormfunction():
    for layer in (layers.LayerNorm(3), layers.RMSNorm(3)):
        output = layer(torch.randn(2, 3, requires_grad=True))
        assert type(output.grad_fn).__name__ == "LayerNormFunctionBackward"


def test_layernorm_output_of_one_example_does_not_depend_on_the_batch():
    layer = layers.LayerNorm(5, dtype=torch.float64)
    x = random_input((6, 5), seed=0)
    torch.testing.assert_close(layer(x[2:3]), layer(x)[2:3], rtol=0, atol=0)
    torch.testing.assert_close(layer.eval()(x), layer.train()(x), rtol=0, atol=0)


# ----------------------------------------------------------------------------- GroupNorm

group_settings = st.fixed_dictionaries({
    "batch": st.integers(1, 4),
    "groups": st.integers(1, 4),
    "per_group": st.integers(1, 3),
    "spatial": st.lists(st.integers(1, 4), max_size=2),
    "affine": st.booleans(),
    "bias": st.booleans(),
    "eps": st.sampled_from([1e-5, 1e-3]),
    "seed": st.integers(0, 2**16),
}).filter(lambda s: s["per_group"] * np.prod(s["spatial"]) > 1)


@HYPOTHESIS
@given(s=group_settings)
def test_groupnorm_matches_torch_outputs_and_gradients_in_float64(s):
    channels = s["groups"] * s["per_group"]
    shape = (s["batch"], channels, *s["spatial"])
    ours, theirs = pair(layers.GroupNorm, nn.GroupNorm, s["groups"], channels, eps=s["eps"], affine=s["affine"],
                        bias=s["bias"], seed=s["seed"])
    x, grad_output = random_input(shape, s["seed"]), random_input(shape, s["seed"] + 1)
    weight = None if ours.weight is None else ours.weight.view((1, -1) + (1,) * len(s["spatial"]))
    scale = cancelling_scale(grad_output, weight, s["eps"] ** -0.5)
    assert_records_close(step(ours, x, grad_output), step(theirs, x, grad_output), F64, scale)


def test_groupnorm_matches_torch_in_float32():
    ours, theirs = pair(layers.GroupNorm, nn.GroupNorm, 4, 16, dtype=torch.float32)
    x = random_input((3, 16, 5, 5), seed=0, dtype=torch.float32)
    grad_output = random_input(x.shape, seed=1, dtype=torch.float32)
    scale = cancelling_scale(grad_output, ours.weight.view(1, -1, 1, 1), 100.0)
    assert_records_close(step(ours, x, grad_output), step(theirs, x, grad_output), F32, scale)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(2, 4), (2, 4, 3), (1, 4, 2, 3)])
def test_groupnorm_passes_gradcheck_in_float64(affine, shape):
    layer, _ = pair(layers.GroupNorm, nn.GroupNorm, 2, 4, affine=affine)
    assert gradcheck_layer(layer, random_input(shape, seed=0))


def test_groupnorm_backward_equals_the_numpy_reference():
    ours, _ = pair(layers.GroupNorm, nn.GroupNorm, 3, 6)
    x, grad_output = random_input((4, 6, 2, 3), seed=0), random_input((4, 6, 2, 3), seed=1)
    record = step(ours, x, grad_output)
    out, cache = fn.group_norm_forward(x.numpy(), 3, ours.weight.detach().numpy(), ours.bias.detach().numpy())
    dx, dgamma, dbeta = fn.group_norm_backward(grad_output.numpy(), cache)
    for name, expected in [("output", out), ("grad_input", dx), ("grad_weight", dgamma), ("grad_bias", dbeta)]:
        np.testing.assert_allclose(record[name].numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=name)


def test_groupnorm_backward_runs_through_groupnormfunction():
    output = layers.GroupNorm(2, 4)(torch.randn(2, 4, 3, requires_grad=True))
    assert type(output.grad_fn).__name__ == "GroupNormFunctionBackward"


# -------------------------------------------------------------------------- InstanceNorm

instance_settings = st.fixed_dictionaries({
    "dims": st.sampled_from([1, 2]),
    "batched": st.booleans(),
    "batch": st.integers(1, 4),
    "channels": st.integers(1, 4),
    "spatial": st.integers(2, 4),
    "affine": st.booleans(),
    "bias": st.booleans(),
    "track_running_stats": st.booleans(),
    "momentum": st.sampled_from([0.1, 0.5, 1.0, None]),
    "training": st.booleans(),
    "seed": st.integers(0, 2**16),
})


@HYPOTHESIS
@given(s=instance_settings)
def test_instancenorm_matches_torch_outputs_gradients_and_running_stats_in_float64(s):
    ours_cls, torch_cls = INSTANCE[s["dims"]]
    spatial = (s["spatial"],) * s["dims"]
    shape = ((s["batch"],) if s["batched"] else ()) + (s["channels"], *spatial)
    ours, theirs = pair(ours_cls, torch_cls, s["channels"], affine=s["affine"], bias=s["bias"],
                        track_running_stats=s["track_running_stats"], momentum=s["momentum"], seed=s["seed"])
    if s["track_running_stats"]:
        generator = torch.Generator().manual_seed(s["seed"])
        with torch.no_grad():
            ours.running_mean.copy_(torch.randn(s["channels"], generator=generator, dtype=torch.float64))
            ours.running_var.uniform_(0.5, 2.0, generator=generator)
        theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.train(s["training"])
    theirs.train(s["training"])
    x, grad_output = random_input(shape, s["seed"]), random_input(shape, s["seed"] + 1)
    weight = None if ours.weight is None else ours.weight.view((-1,) + (1,) * s["dims"])
    scale = cancelling_scale(grad_output, weight, 1e-5 ** -0.5)
    assert_records_close(step(ours, x, grad_output), step(theirs, x, grad_output), F64, scale)


@pytest.mark.parametrize("dims", [1, 2])
def test_instancenorm_passes_gradcheck_in_float64(dims):
    ours, _ = pair(*INSTANCE[dims], 3, affine=True)
    assert gradcheck_layer(ours, random_input((2, 3) + (3,) * dims, seed=0))


def test_instancenorm_in_training_runs_through_groupnormfunction():
    output = layers.InstanceNorm2d(3)(torch.randn(2, 3, 4, 4, requires_grad=True))
    assert type(output.grad_fn).__name__ == "GroupNormFunctionBackward"


# ------------------------------------------------------------------- module interface

CONFIGS = [
    (layers.LayerNorm, nn.LayerNorm, (4,), {}),
    (layers.LayerNorm, nn.LayerNorm, ((2, 4),), {"eps": 1e-3, "bias": False}),
    (layers.LayerNorm, nn.LayerNorm, (4,), {"elementwise_affine": False}),
    (layers.RMSNorm, nn.RMSNorm, (4,), {}),
    (layers.RMSNorm, nn.RMSNorm, ([2, 4],), {"eps": 1e-6, "elementwise_affine": False}),
    (layers.GroupNorm, nn.GroupNorm, (2, 4), {}),
    (layers.GroupNorm, nn.GroupNorm, (1, 4), {"affine": False, "eps": 1e-3}),
    (layers.GroupNorm, nn.GroupNorm, (4, 4), {"bias": False}),
    (layers.InstanceNorm1d, nn.InstanceNorm1d, (4,), {}),
    (layers.InstanceNorm1d, nn.InstanceNorm1d, (4,), {"affine": True, "track_running_stats": True}),
    (layers.InstanceNorm2d, nn.InstanceNorm2d, (4,), {"affine": True, "bias": False, "momentum": None}),
    (layers.InstanceNorm2d, nn.InstanceNorm2d, (4,), {"track_running_stats": True}),
]
CONFIG_IDS = [f"{cls.__name__}-{args}-{kwargs}" for cls, _, args, kwargs in CONFIGS]


@pytest.mark.parametrize("ours_cls, torch_cls, args, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_state_dicts_load_both_ways_with_strict_keys(ours_cls, torch_cls, args, kwargs):
    ours, theirs = ours_cls(*args, **kwargs), torch_cls(*args, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    with torch.no_grad():
        for tensor in theirs.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    with torch.no_grad():
        for tensor in ours.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(-1.5, -0.5)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    for name, value in ours.state_dict().items():
        assert torch.equal(theirs.state_dict()[name], value), name


@pytest.mark.parametrize("ours_cls, torch_cls, args, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_repr_matches_torch(ours_cls, torch_cls, args, kwargs):
    ours, theirs = ours_cls(*args, **kwargs), torch_cls(*args, **kwargs)
    assert ours.extra_repr() == theirs.extra_repr()
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("ours_cls, torch_cls, args, kwargs", CONFIGS, ids=CONFIG_IDS)
def test_reset_parameters_returns_to_torchs_initial_state(ours_cls, torch_cls, args, kwargs):
    ours, theirs = ours_cls(*args, **kwargs), torch_cls(*args, **kwargs)
    with torch.no_grad():
        for tensor in ours.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(2, 3)
    ours.reset_parameters()
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_arguments_place_every_parameter(dtype):
    for layer in (layers.LayerNorm(3, dtype=dtype), layers.RMSNorm(3, dtype=dtype), layers.GroupNorm(1, 3, dtype=dtype),
                  layers.InstanceNorm1d(3, affine=True, track_running_stats=True, dtype=dtype)):
        for name, tensor in layer.state_dict().items():
            if name != "num_batches_tracked":
                assert tensor.dtype == dtype, (type(layer).__name__, name)
    assert layers.LayerNorm(1024, device="meta").weight.is_meta


@pytest.mark.parametrize(
    "ours_cls, torch_cls, args, shape",
    [(layers.LayerNorm, nn.LayerNorm, (4,), (0, 4)), (layers.RMSNorm, nn.RMSNorm, (4,), (0, 3, 4)),
     (layers.GroupNorm, nn.GroupNorm, (2, 4), (0, 4, 3)), (layers.InstanceNorm2d, nn.InstanceNorm2d, (4,), (0, 4, 2, 2))],
)
def test_empty_batch_behaves_like_torch(ours_cls, torch_cls, args, shape):
    ours, theirs = pair(ours_cls, torch_cls, *args)
    x = torch.zeros(shape, dtype=torch.float64)
    assert_records_close(step(ours, x, x), step(theirs, x, x), F64)


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [layers.LayerNorm, layers.RMSNorm])
@pytest.mark.parametrize("shape, got", [((8, 5), "(8, 5)"), ((8, 3, 4), "(3, 4)"), ((4,), "(4,)")])
def test_trailing_shape_not_matching_normalized_shape_raises_value_error_naming_both(cls, shape, got):
    layer = cls((4, 4))
    message = (rf"{cls.__name__} was built with normalized_shape=\(4, 4\) but got input of shape "
               rf"{re.escape(str(shape))}, whose last 2 dimension\(s\) are {re.escape(got)}\. The normalized "
               r"dimensions must come last")
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))


def test_groupnorm_with_channels_not_divisible_by_groups_raises_value_error_suggesting_divisors():
    message = re.escape("num_channels=6 is not divisible by num_groups=4. Use one of the divisors of 6: [1, 2, 3, 6].")
    with pytest.raises(ValueError, match=message):
        layers.GroupNorm(4, 6)


def test_groupnorm_input_without_channel_dimension_raises_value_error():
    with pytest.raises(ValueError, match=r"GroupNorm expects input of shape \(N, C, \*\) with at least 2 "
                                         r"dimensions; got 1D input of shape \(4,\)"):
        layers.GroupNorm(2, 4)(torch.randn(4))


def test_groupnorm_channel_count_mismatch_raises_value_error_naming_both():
    with pytest.raises(ValueError, match=r"GroupNorm was built with num_channels=4 but got input of shape "
                                         r"\(2, 6, 3\) with 6 channels in dimension 1\. Build it with num_channels=6"):
        layers.GroupNorm(2, 4)(torch.randn(2, 6, 3))


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        (layers.InstanceNorm1d(3), (2, 3, 4, 4), r"InstanceNorm1d expects 3D input \(N, C, L\) or unbatched 2D "
         r"input \(C, L\); got 4D input of shape \(2, 3, 4, 4\)\. For images \(N, C, H, W\) use InstanceNorm2d"),
        (layers.InstanceNorm1d(3), (3,), r"InstanceNorm1d expects 3D .* got 1D input of shape \(3,\)"),
        (layers.InstanceNorm2d(3), (2, 3), r"InstanceNorm2d expects 4D input \(N, C, H, W\) or unbatched 3D "
         r"input \(C, H, W\); got 2D input of shape \(2, 3\)\. For \(N, C, L\) input use InstanceNorm1d"),
        (layers.InstanceNorm2d(3), (1, 3, 2, 2, 2), r"InstanceNorm2d expects 4D .* got 5D input"),
    ],
)
def test_instancenorm_wrong_number_of_dimensions_raises_value_error(layer, shape, message):
    with pytest.raises(ValueError, match=message):
        layer(torch.randn(shape))


@pytest.mark.parametrize("kwargs", [{"affine": True}, {"track_running_stats": True}])
def test_instancenorm_channel_count_mismatch_raises_value_error_when_channels_are_used(kwargs):
    with pytest.raises(ValueError, match=r"InstanceNorm2d was built with num_features=4 but got input of shape "
                                         r"\(2, 3, 5, 5\) with 3 channels in dimension 1\. Build it with num_features=3"):
        layers.InstanceNorm2d(4, **kwargs)(torch.randn(2, 3, 5, 5))


def test_instancenorm_channel_count_mismatch_only_warns_like_torch_without_affine_or_running_stats():
    x = random_input((2, 3, 5), seed=0)
    with pytest.warns(UserWarning, match=r"built with num_features=4 .* unused with affine=False"):
        ours = layers.InstanceNorm1d(4)(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = nn.InstanceNorm1d(4)(x)
    torch.testing.assert_close(ours, theirs, **F64)


def test_instancenorm_with_one_spatial_value_raises_value_error():
    with pytest.raises(ValueError, match=r"InstanceNorm2d needs more than one spatial value per channel to compute "
                                         r"statistics; got input of shape \(2, 3, 1, 1\)"):
        layers.InstanceNorm2d(3)(torch.randn(2, 3, 1, 1))
    layer = layers.InstanceNorm2d(3, track_running_stats=True).eval()
    assert layer(torch.randn(2, 3, 1, 1)).shape == (2, 3, 1, 1)  # running stats need none



@pytest.mark.parametrize("make, oracle", [(lambda: layers.LayerNorm(6, dtype=torch.float64), "LayerNorm"),
                                          (lambda: layers.RMSNorm(6, dtype=torch.float64), "RMSNorm"),
                                          (lambda: layers.GroupNorm(2, 6, dtype=torch.float64), "GroupNorm")])
def test_create_graph_through_the_input_raises_instead_of_a_wrong_second_derivative(make, oracle):
    """The closed-form backward is first-order only: building a graph of it through x must raise."""
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match=rf"cannot be differentiated twice.*torch\.nn\.{oracle}"):
        torch.autograd.grad(make()(x).pow(3).sum(), x, create_graph=True)
