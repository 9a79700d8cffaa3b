"""Large (N, C) inputs take a different code path (per-channel sums as a matrix-vector product,
layers/_common.py): the layers must still match torch there, forward and backward."""

from __future__ import annotations

import pytest
import torch

from normlab import layers
from normlab.layers._common import _GEMV_MIN_NUMEL, _use_gemv


@pytest.mark.parametrize("shape", [(512, 1024), (64, 4096), (40000, 1)], ids=str)
@pytest.mark.parametrize("ours, theirs", [
    (lambda c: layers.BatchNorm1d(c, dtype=torch.float64), lambda c: torch.nn.BatchNorm1d(c, dtype=torch.float64)),
    (lambda c: layers.LayerNorm(c, dtype=torch.float64), lambda c: torch.nn.LayerNorm(c, dtype=torch.float64)),
    (lambda c: layers.RMSNorm(c, eps=1e-6, dtype=torch.float64), lambda c: torch.nn.RMSNorm(c, eps=1e-6, dtype=torch.float64)),
], ids=["batchnorm1d", "layernorm", "rmsnorm"])
def test_large_inputs_match_torch_forward_and_backward(shape, ours, theirs):
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=generator, dtype=torch.float64) * 3 + 1).requires_grad_()
    grad = torch.randn(shape, generator=generator, dtype=torch.float64)
    assert _use_gemv(x) == (x.numel() >= _GEMV_MIN_NUMEL)
    outputs, grads = [], []
    for make in (ours, theirs):
        layer = make(shape[1]).train()
        x.grad = None
        y = layer(x)
        y.backward(grad)
        outputs.append(y.detach())
        grads.append(x.grad.clone())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-9)
