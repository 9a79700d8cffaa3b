"""Normalization layers as torch modules, drop-in compatible with ``torch.nn``.

- :class:`BatchNorm1d`, :class:`BatchNorm2d`: batch normalization with the analytic
  backward of :class:`BatchNormFunction`.
- :class:`LayerNorm`, :class:`RMSNorm`, :class:`GroupNorm`, :class:`InstanceNorm1d`,
  :class:`InstanceNorm2d`: the normalizers that do not depend on the batch, with the
  analytic backward of :class:`LayerNormFunction` and :class:`GroupNormFunction`.
"""

from normlab.layers.batchnorm import BatchNorm1d, BatchNorm2d, BatchNormFunction
from normlab.layers.layernorm import (
    GroupNorm,
    GroupNormFunction,
    InstanceNorm1d,
    InstanceNorm2d,
    LayerNorm,
    LayerNormFunction,
    RMSNorm,
)

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNormFunction",
    "GroupNorm",
    "GroupNormFunction",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "LayerNorm",
    "LayerNormFunction",
    "RMSNorm",
]
