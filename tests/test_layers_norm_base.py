"""BatchNorm and InstanceNorm share torch's _NormBase structure, and nothing batch-only (issue 13)."""

import pytest
import torch

from normlab import layers
from normlab.layers._common import _NormBase
from normlab.layers.batchnorm import _BatchNorm

BATCH_ONLY = ("_fused_training_step", "_update_running_stats", "_check_batch_size", "_fusable")


@pytest.mark.parametrize("cls", [layers.InstanceNorm1d, layers.InstanceNorm2d])
def test_instance_norm_shares_the_base_and_inherits_no_batch_statistics(cls) -> None:
    layer = cls(3, affine=True, track_running_stats=True)
    assert isinstance(layer, _NormBase) and not isinstance(layer, _BatchNorm)
    assert not any(hasattr(layer, name) for name in BATCH_ONLY)


@pytest.mark.parametrize("cls", [layers.BatchNorm1d, layers.BatchNorm2d, layers.SyncBatchNorm])
def test_batch_norm_layers_are_norm_bases_with_batch_statistics(cls) -> None:
    layer = cls(3)
    assert isinstance(layer, _BatchNorm) and isinstance(layer, _NormBase)
    assert all(hasattr(layer, name) for name in BATCH_ONLY)


@pytest.mark.parametrize("ours, theirs", [(layers.InstanceNorm2d, torch.nn.InstanceNorm2d),
                                          (layers.BatchNorm2d, torch.nn.BatchNorm2d)])
def test_the_base_gives_torchs_buffers_and_eval_map(ours, theirs) -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = ours(4, affine=True, track_running_stats=True), theirs(4, affine=True, track_running_stats=True)
    with torch.no_grad():
        for tensor in (b.weight, b.bias, b.running_mean):
            tensor.copy_(torch.randn(4, generator=gen))
        b.running_var.copy_(torch.rand(4, generator=gen) + 0.5)
    assert a.load_state_dict(b.state_dict()).missing_keys == []
    x = torch.randn(2, 4, 5, 5, generator=gen)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))
