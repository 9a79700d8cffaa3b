"""Seeded, reusable experiments; each returns a small record of arrays.

Notebooks plot the records; tests run the same functions over several seeds and check
the claims the chapters make. One module per chapter:

- :mod:`normlab.experiments.conditioning`: "Why normalize?" (re-exported here).
- :mod:`normlab.experiments.batchnorm_algebra`: "Batch normalization: the algebra ...".
- :mod:`normlab.experiments.batchnorm`: "Batch normalization in practice" (Ioffe & Szegedy
  at CPU scale), with one claim function per acceptance criterion.
- :mod:`normlab.experiments.ics`: "Internal covariate shift" (covariate shift, noisy BN, gradient-based ICS).
- :mod:`normlab.experiments.smoothness`: "Lipschitz continuity, smoothness and the loss landscape".
- :mod:`normlab.experiments.layernorm`: "LayerNorm and the normalizers that do not depend on the batch".
- :mod:`normlab.experiments.weightnorm`: "WeightNorm and scaled WeightNorm" (gradient identities,
  norm growth, data-dependent and scaled initialization, deep networks).
- :mod:`normlab.experiments.weight_decay`: "Weight decay in scale-invariant networks".
- :mod:`normlab.experiments.initialization`: "Initialization: variance propagation, Xavier, He, orthogonal,
  residual scaling" (50-layer variance, PyTorch's default, deep ReLU training, residual streams).

Import a chapter's module by name: ``from normlab.experiments import batchnorm``.
"""

from normlab.experiments.conditioning import (
    DescentThresholdRecord,
    DriftRecord,
    RegressionRecord,
    StepsRecord,
    descent_threshold_on_network,
    hidden_layer_drift,
    regression_conditioning,
    steps_vs_condition_number,
)

__all__ = [
    "DescentThresholdRecord",
    "DriftRecord",
    "RegressionRecord",
    "StepsRecord",
    "descent_threshold_on_network",
    "hidden_layer_drift",
    "regression_conditioning",
    "steps_vs_condition_number",
]
