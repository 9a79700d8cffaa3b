"""Seeded, reusable experiments; each returns a small record of arrays.

Notebooks plot the records; tests run the same functions over several seeds and check
the claims the chapters make (each claim returns a :class:`normlab.experiments._common.Claim`). The modules,
by the chapter (file stem) that uses them:

- :mod:`~normlab.experiments.conditioning`: chapter ``01_why_normalize`` (re-exported here).
- :mod:`~normlab.experiments.batchnorm_algebra`: chapter ``02_batchnorm``.
- :mod:`~normlab.experiments.batchnorm`: chapter ``03_batchnorm_experiments`` (Ioffe & Szegedy at CPU scale).
- :mod:`~normlab.experiments.ics`, :mod:`~normlab.experiments.outside_gradient`,
  :mod:`~normlab.experiments.noise_scale`: chapter ``04_internal_covariate_shift`` (covariate shift, noisy BN,
  the gradient-based and Earth Mover ICS measures; normalizing outside the gradient; SGD's noise scale).
- :mod:`~normlab.experiments.smoothness`: chapter ``05_smoothness``.
- :mod:`~normlab.experiments.weightnorm`: chapter ``06_weightnorm``.
- :mod:`~normlab.experiments.layernorm`, :mod:`~normlab.experiments.layernorm_dynamics`: chapter
  ``07_layernorm`` (the batch-independent normalizers; LayerNorm's effective learning rate, BN in an RNN).
- :mod:`~normlab.experiments.initialization`, :mod:`~normlab.experiments.activation_moments`: chapter
  ``08_initialization`` (variance propagation, residual streams; ELU, SELU, normalization propagation).
- :mod:`~normlab.experiments.weight_decay`: chapter ``09_weight_decay``.
- :mod:`~normlab.experiments.transformers`: chapter ``11_transformers``.
- :mod:`~normlab.experiments.batchnorm_at_scale`: chapter ``12_batchnorm_at_scale``.
- :mod:`~normlab.experiments.without_normalization`: chapter ``13_without_normalization``.

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
