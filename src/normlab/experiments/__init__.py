"""Seeded, reusable experiments; each returns a small record of arrays.

Notebooks plot the records; tests run the same functions over several seeds and check
the claims the chapters make. One module per chapter.
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
