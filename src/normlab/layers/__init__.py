"""Normalization layers as torch modules, drop-in compatible with ``torch.nn``.

- :class:`BatchNorm1d`, :class:`BatchNorm2d`: batch normalization with the analytic
  backward of :class:`BatchNormFunction`.
- :class:`LayerNorm`, :class:`RMSNorm`, :class:`GroupNorm`, :class:`InstanceNorm1d`,
  :class:`InstanceNorm2d`: the normalizers that do not depend on the batch, with the
  analytic backward of :class:`LayerNormFunction` and :class:`GroupNormFunction`.
- :class:`WeightNormLinear`: weight normalization w = g · v / ‖v‖, with
  :func:`data_dependent_init_` (Salimans & Kingma) and :func:`scaled_weight_norm_init_`
  (Arpit, Campos & Bengio); :class:`MeanOnlyBatchNorm1d`: subtract the batch mean only.
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
from normlab.layers.mean_only import MeanOnlyBatchNorm1d
from normlab.layers.weight_norm import (
    WeightNormLinear,
    data_dependent_init_,
    data_dependent_init_network_,
    scaled_weight_norm_gain,
    scaled_weight_norm_init_,
    weight_norm_grads,
    weight_norm_layers,
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
    "MeanOnlyBatchNorm1d",
    "RMSNorm",
    "WeightNormLinear",
    "data_dependent_init_",
    "data_dependent_init_network_",
    "scaled_weight_norm_gain",
    "scaled_weight_norm_init_",
    "weight_norm_grads",
    "weight_norm_layers",
]
