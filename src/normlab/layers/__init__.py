"""Normalization layers as torch modules, drop-in compatible with ``torch.nn``.

- :class:`BatchNorm1d`, :class:`BatchNorm2d`: batch normalization with the analytic
  backward of :class:`BatchNormFunction`.
- :class:`LayerNorm`, :class:`RMSNorm`, :class:`GroupNorm`, :class:`InstanceNorm1d`,
  :class:`InstanceNorm2d`: the normalizers that do not depend on the batch, with the
  analytic backward of :class:`LayerNormFunction` and :class:`GroupNormFunction`.
- :class:`WeightNormLinear`: weight normalization w = g · v / ‖v‖, with
  :func:`data_dependent_init_` (Salimans & Kingma) and :func:`scaled_weight_norm_init_`
  (Arpit, Campos & Bengio); :class:`MeanOnlyBatchNorm1d`: subtract the batch mean only.
- :class:`NoisyBatchNorm1d` (with :class:`ShiftNoise`): BatchNorm followed by a random,
  time-varying shift and rescale per unit (Santurkar et al.'s noisy-BN experiment).
- :class:`LpBatchNorm1d`: batch normalization with an ℓp scale (p = 1, 2, ∞) in place of the
  standard deviation.
- :class:`Unitization1d`: BatchNorm whose output vector per example is pulled towards unit norm by a
  trainable α per feature (Huang & Yu 2020).
"""

from normlab.layers.batch_renorm import BatchRenorm1d, renorm_limits, scaled_renorm_schedule
from normlab.layers.batchnorm import BatchNorm1d, BatchNorm2d, BatchNormFunction
from normlab.layers.dynamic_tanh import DynamicTanh
from normlab.layers.ghost_batchnorm import GhostBatchNorm1d
from normlab.layers.layernorm import (
    GroupNorm,
    GroupNormFunction,
    InstanceNorm1d,
    InstanceNorm2d,
    LayerNorm,
    LayerNormFunction,
    RMSNorm,
)
from normlab.layers.lp_batchnorm import LpBatchNorm1d
from normlab.layers.mean_only import MeanOnlyBatchNorm1d
from normlab.layers.noisy import NoisyBatchNorm1d, ShiftNoise
from normlab.layers.skip_init import ScalarBias, ScalarMultiplier, SkipInit
from normlab.layers.sync_batchnorm import SyncBatchNorm, SyncBatchNormFunction
from normlab.layers.unitization import Unitization1d
from normlab.layers.weight_norm import (
    WeightNormLinear,
    data_dependent_init_,
    data_dependent_init_network_,
    scaled_weight_norm_gain,
    scaled_weight_norm_init_,
    weight_norm_grads,
    weight_norm_layers,
)
from normlab.layers.weight_standardization import WSConv2d, WSLinear, activation_gamma, standardized_weight

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNormFunction",
    "BatchRenorm1d",
    "DynamicTanh",
    "GhostBatchNorm1d",
    "GroupNorm",
    "GroupNormFunction",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "LayerNorm",
    "LayerNormFunction",
    "LpBatchNorm1d",
    "MeanOnlyBatchNorm1d",
    "NoisyBatchNorm1d",
    "RMSNorm",
    "ScalarBias",
    "ScalarMultiplier",
    "ShiftNoise",
    "SkipInit",
    "SyncBatchNorm",
    "SyncBatchNormFunction",
    "Unitization1d",
    "WSConv2d",
    "WSLinear",
    "WeightNormLinear",
    "activation_gamma",
    "data_dependent_init_",
    "data_dependent_init_network_",
    "renorm_limits",
    "scaled_renorm_schedule",
    "scaled_weight_norm_gain",
    "scaled_weight_norm_init_",
    "standardized_weight",
    "weight_norm_grads",
    "weight_norm_layers",
]
