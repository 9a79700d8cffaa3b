"""The compiled backward of BatchNorm, LayerNorm and GroupNorm (normlab/layers/_kernels.py, issue 13).

On CPU in float32 and float64 the layers' backward is the closed form as a loop that numba compiles;
elsewhere (CUDA, other dtypes, create_graph, no numba) the same closed form in torch ops. Both must
give torch.nn's gradients, so the tests hold each to torch and to the other, on shapes hypothesis
draws, on non-contiguous tensors, and on a NaN in the incoming gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from normlab import layers
from normlab.layers import _kernels

FLOAT64 = torch.float64


def _pair(kind: str, shape: tuple[int, ...], groups: int = 1, affine: bool = True,
          running: bool = True) -> tuple[nn.Module, nn.Module]:
    """normlab's layer and torch's, with the same random γ and β."""
    channels = shape[1]
    if kind == "layer":
        build = lambda lib: lib.LayerNorm(shape[1:], elementwise_affine=affine, dtype=FLOAT64)  # noqa: E731
    elif kind == "group":
        build = lambda lib: lib.GroupNorm(groups, channels, affine=affine, dtype=FLOAT64)  # noqa: E731
    elif kind == "instance":
        build = lambda lib: lib.InstanceNorm2d(channels, affine=affine, dtype=FLOAT64)  # noqa: E731
    else:
        name = "BatchNorm1d" if len(shape) < 4 else "BatchNorm2d"
        build = lambda lib: getattr(lib, name)(channels, affine=affine, track_running_stats=running,  # noqa: E731
                                               dtype=FLOAT64)
    ours, theirs = build(layers), build(nn)
    if affine:
        generator = torch.Generator().manual_seed(sum(shape))
        with torch.no_grad():
            for name in ("weight", "bias"):
                getattr(ours, name).copy_(torch.randn(getattr(ours, name).shape, dtype=FLOAT64, generator=generator))
                getattr(theirs, name).copy_(getattr(ours, name))
    return ours, theirs


def _gradients(layer: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().requires_grad_()
    wanted = [x] + [p for p in (getattr(layer, "weight", None), getattr(layer, "bias", None)) if p is not None]
    return list(torch.autograd.grad(layer(x), wanted, dy))


def _torch_ops_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the layers take the torch-ops form everywhere, as on a CUDA tensor or without numba."""
    monkeypatch.setattr(_kernels, "available", lambda tensor: False)


def test_the_compiled_backward_serves_cpu_float_tensors_here():
    # requirements.txt installs numba: if it could not be imported every test below would compare
    # the torch-ops form with itself
    assert _kernels._compiled() is not None
    for dtype in (torch.float32, torch.float64):
        assert _kernels.available(torch.zeros(2, dtype=dtype))
    assert not _kernels.available(torch.zeros(2, dtype=torch.bfloat16))
    assert not _kernels.available(torch.zeros(0))


@pytest.mark.parametrize("kind, shape, function", [
    ("layer", (4, 6), "layer_norm_backward"),
    ("group", (4, 6, 5), "group_norm_backward"),
    ("instance", (2, 3, 4, 4), "group_norm_backward"),
    ("batch", (4, 6), "batch_norm_backward"),
    ("batch", (4, 3, 4, 4), "batch_norm_backward"),
], ids=str)
def test_each_layer_backward_runs_the_compiled_loop(monkeypatch, kind, shape, function):
    calls = []
    original = getattr(_kernels, function)
    monkeypatch.setattr(_kernels, function, lambda *args: calls.append(1) or original(*args))
    ours, _ = _pair(kind, shape, groups=3)
    x = torch.randn(shape, dtype=FLOAT64, generator=torch.Generator().manual_seed(0))
    _gradients(ours, x, torch.ones_like(x))
    assert calls == [1]


@st.composite
def _cases(draw: st.DrawFn) -> tuple[str, tuple[int, ...], int, bool, bool]:
    kind = draw(st.sampled_from(["layer", "group", "instance", "batch"]))
    batch = draw(st.integers(2, 6))
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 5), min_size=0 if kind in ("layer", "batch") else 1, max_size=2))
    if kind == "instance":
        spatial = [max(spatial[0], 2), 2][: 2]
    shape = (batch, channels, *spatial)
    return kind, shape, groups, draw(st.booleans()), draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(case=_cases(), seed=st.integers(0, 2**16))
def test_compiled_and_torch_ops_backward_both_give_torchs_gradients(case, seed):
    kind, shape, groups, affine, running = case
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=FLOAT64, generator=generator) * 3 + 2
    dy = torch.randn(shape, dtype=FLOAT64, generator=generator)
    ours, theirs = _pair(kind, shape, groups, affine, running)
    expected = _gradients(theirs, x, dy)
    compiled = _gradients(ours, x, dy)
    with pytest.MonkeyPatch.context() as monkeypatch:
        _torch_ops_only(monkeypatch)
        torch_ops = _gradients(_pair(kind, shape, groups, affine, running)[0], x, dy)
    for got_compiled, got_torch_ops, want in zip(compiled, torch_ops, expected, strict=True):
        torch.testing.assert_close(got_compiled, want, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got_compiled, got_torch_ops, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind, shape", [("layer", (3, 4, 5)), ("group", (3, 4, 5, 2)), ("batch", (3, 4, 5, 2))],
                         ids=str)
def test_compiled_backward_in_float64_passes_gradcheck(kind, shape):
    ours, _ = _pair(kind, shape, groups=2)
    x = torch.randn(shape, dtype=FLOAT64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x,))


Layout = Callable[[torch.Tensor], torch.Tensor]


@pytest.mark.parametrize("kind", ["layer", "group", "batch"])
@pytest.mark.parametrize("layout", [
    lambda t: t.contiguous(memory_format=torch.channels_last),
    lambda t: t.transpose(2, 3).contiguous().transpose(2, 3),
], ids=["channels_last", "transposed"])
def test_compiled_backward_takes_non_contiguous_tensors(kind, layout: Layout):
    shape = (3, 4, 5, 6)
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(shape, dtype=FLOAT64, generator=generator)
    dy = torch.randn(shape, dtype=FLOAT64, generator=generator)
    ours, theirs = _pair(kind, shape, groups=2)
    for got, want in zip(_gradients(ours, layout(x), layout(dy)), _gradients(theirs, x, dy), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["layer", "group", "batch"])
def test_compiled_backward_takes_the_expanded_gradient_of_a_sum(kind):
    # y.sum().backward() hands the layer a gradient of ones with zero strides
    shape = (3, 4, 5)
    x = torch.randn(shape, dtype=FLOAT64, generator=torch.Generator().manual_seed(6))
    ours, theirs = _pair(kind, shape, groups=2)
    grads = []
    for layer in (ours, theirs):
        leaf = x.clone().requires_grad_()
        layer(leaf).pow(3).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["layer", "group", "batch"])
def test_a_nan_in_the_gradient_spreads_where_torchs_does(kind):
    # fastmath may reorder sums, never assume the absence of NaN: the NaN must reach exactly the
    # entries it reaches in torch's backward, and no finite entry may become NaN or vice versa
    shape = (4, 4, 3)
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(shape, dtype=FLOAT64, generator=generator)
    dy = torch.randn(shape, dtype=FLOAT64, generator=generator)
    dy[1, 2, 0] = float("nan")
    ours, theirs = _pair(kind, shape, groups=2)
    for got, want in zip(_gradients(ours, x, dy), _gradients(theirs, x, dy), strict=True):
        assert torch.equal(got.isnan(), want.isnan())
        assert got.isnan().any()
        torch.testing.assert_close(got.nan_to_num(), want.nan_to_num(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["layer", "group", "batch"])
def test_float32_compiled_backward_is_as_accurate_as_torchs(kind):
    # far from zero mean, against float64: the loops form x − mu per element, so they lose no more
    # than torch's own kernels
    shape = (16, 8, 32)
    generator = torch.Generator().manual_seed(8)
    x = torch.randn(shape, dtype=FLOAT64, generator=generator) + 1e3
    dy = torch.randn(shape, dtype=FLOAT64, generator=generator)
    ours, theirs = _pair(kind, shape, groups=4)
    exact = _gradients(theirs, x, dy)
    ours32, theirs32 = ours.float(), theirs.float()
    for got, torch32, want in zip(_gradients(ours32, x.float(), dy.float()),
                                  _gradients(theirs32, x.float(), dy.float()), exact, strict=True):
        error, torch_error = (got.double() - want).abs().max(), (torch32.double() - want).abs().max()
        assert error <= 2 * torch_error + 1e-6 * want.abs().max()
