"""The fast forms of GroupNorm's and LayerNorm's closed-form backward (issue 13, speed part):
GroupNorm's from x, mu and 1/σ without x̂ (centred or not), LayerNorm's one-pass ĝ − mean(ĝ)
for large inputs. Checked against torch in float64, and in float32 against float64 with an
error no larger than torch's own float32 kernel makes on the same input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from normlab import layers
from normlab.layers._common import _GEMV_MIN_NUMEL
from normlab.layers.layernorm import _CENTRED_MAX_NUMEL, _UNCENTRED_MAX_RATIO


def _grads(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    module(x).backward(grad)
    return [x.grad] + [parameter.grad for parameter in module.parameters()]


def _pair(make, dtype: torch.dtype, channels: int, seed: int):
    """normlab's and torch's layer with the same random γ and β."""
    generator = torch.Generator().manual_seed(seed)
    ours, theirs = make(layers).to(dtype), make(nn).to(dtype)
    with torch.no_grad():
        for a, b in zip(ours.parameters(), theirs.parameters()):
            a.copy_(torch.randn(channels, dtype=torch.float64, generator=generator))
            b.copy_(a)
    return ours, theirs


def _max_relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want).abs().max() / want.abs().max())


GROUPNORM = {"make": lambda lib: lib.GroupNorm(8, 32), "channels": 32}
LAYERNORM = {"make": lambda lib: lib.LayerNorm(1024), "channels": 1024}


@pytest.mark.parametrize("seed", [11, 12])
@pytest.mark.parametrize("shape, offset", [
    ((4, 32, 32, 32), 1.0),  # large, |mu|/σ ≤ 4: sums dy·x, never centres
    ((4, 32, 32, 32), 50.0),  # large, |mu|/σ > 4: centres x first
    ((2, 32, 4, 4), 1.0),  # small: always centres
], ids=["large-uncentred", "large-centred", "small"])
def test_groupnorm_backward_matches_torch_in_float64(shape, offset, seed):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=generator) * 2 + offset
    grad = torch.randn(shape, dtype=torch.float64, generator=generator)
    ours, theirs = _pair(GROUPNORM["make"], torch.float64, 32, seed)
    large = x.numel() >= _CENTRED_MAX_NUMEL
    assert large == (shape[0] == 4)
    ratio = float((x.reshape(4 if large else 2, 8, -1).mean(-1).abs() / 2).max())
    assert (ratio > _UNCENTRED_MAX_RATIO) == (offset == 50.0)  # the case is the path it names
    for got, want in zip(_grads(ours, x, grad), _grads(theirs, x, grad)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", [21, 22])
@pytest.mark.parametrize("layer, shape", [
    (GROUPNORM, (4, 32, 32, 32)),
    (GROUPNORM, (2, 32, 4, 4)),
    (LAYERNORM, (128, 1024)),
], ids=["groupnorm-large", "groupnorm-small", "layernorm-large"])
@pytest.mark.parametrize("mean, std", [(0.5, 1.0), (1e3, 1.0)], ids=["mean-0.5", "mean-1e3"])
def test_float32_backward_is_as_accurate_as_torch(layer, shape, mean, std, seed):
    """In float32, against float64: mean 1e3 and std 1 is where a sum of dy·x minus mu·Σ dy
    would cancel about three digits; the error may not exceed torch's float32 kernel's by more
    than a factor 2 (plus float32 rounding of the result)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=generator) * std + mean
    grad = torch.randn(shape, dtype=torch.float64, generator=generator)
    truth = _grads(_pair(layer["make"], torch.float64, layer["channels"], seed)[1], x, grad)
    ours32, theirs32 = _pair(layer["make"], torch.float32, layer["channels"], seed)
    ours = _grads(ours32, x.float(), grad.float())
    theirs = _grads(theirs32, x.float(), grad.float())
    for name, got, reference, want in zip(["dx", "dγ", "dβ"], ours, theirs, truth):
        error, torch_error = _max_relative_error(got, want), _max_relative_error(reference, want)
        assert error <= 2 * torch_error + 1e-6, (name, error, torch_error)


@pytest.mark.parametrize("shape, normalized_shape", [((128, 1024), (1024,)), ((64, 8, 128), (8, 128)),
                                                     ((4, 16), (16,))], ids=str)
def test_layernorm_backward_matches_torch_in_float64(shape, normalized_shape):
    """Large inputs (one normalized dimension or several, flattened) take the one-pass
    ĝ − mean(ĝ); small ones the two-pass form."""
    assert (shape[0] > 4) == (torch.Size(shape).numel() >= _GEMV_MIN_NUMEL)
    generator = torch.Generator().manual_seed(31)
    x = torch.randn(shape, dtype=torch.float64, generator=generator) * 3 + 2
    grad = torch.randn(shape, dtype=torch.float64, generator=generator)
    ours = layers.LayerNorm(normalized_shape, dtype=torch.float64)
    theirs = nn.LayerNorm(normalized_shape, dtype=torch.float64)
    with torch.no_grad():
        for a, b in zip(ours.parameters(), theirs.parameters()):
            a.copy_(torch.randn(normalized_shape, dtype=torch.float64, generator=generator))
            b.copy_(a)
    for got, want in zip(_grads(ours, x, grad), _grads(theirs, x, grad)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make, channels_last", [
    (lambda lib: lib.GroupNorm(8, 32, affine=False), False),  # no γ: scale r per group
    (lambda lib: lib.InstanceNorm2d(32, affine=True), False),  # one channel per group
    (lambda lib: lib.GroupNorm(8, 32), True),  # input not contiguous in (N, C, H, W) order
], ids=["groupnorm-no-affine", "instancenorm", "channels-last"])
def test_groupnorm_backward_variants_match_torch_in_float64(make, channels_last):
    generator = torch.Generator().manual_seed(41)
    x = torch.randn(4, 32, 32, 32, dtype=torch.float64, generator=generator) * 2 + 1
    grad = torch.randn(4, 32, 32, 32, dtype=torch.float64, generator=generator)
    if channels_last:
        x, grad = x.to(memory_format=torch.channels_last), grad.to(memory_format=torch.channels_last)
    ours, theirs = make(layers).to(torch.float64), make(nn).to(torch.float64)
    for got, want in zip(_grads(ours, x, grad), _grads(theirs, x, grad)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
