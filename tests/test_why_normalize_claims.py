"""The claims of chapter "Why normalize?", rerun on seeds the chapter does not use."""

import numpy as np
import pytest

from normlab import experiments
from normlab.experiments import conditioning

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_steps_grow_linearly_with_condition_number(seed):
    r = experiments.steps_vs_condition_number(seed=seed)
    assert 0.9 <= r.loglog_slope <= 1.1
    assert np.all(r.measured_steps <= r.predicted_steps)
    assert np.all(r.measured_steps >= 0.5 * r.predicted_steps)


@pytest.mark.parametrize("seed", SEEDS)
def test_whitening_makes_regression_perfectly_conditioned(seed):
    r = experiments.regression_conditioning(seed=seed)
    k_raw, k_std, k_white = r.condition_numbers
    assert k_raw > 1e6 and k_std < 1e3 and abs(k_white - 1) < 1e-6
    assert r.steps_to_tolerance[0] == np.inf and r.relative_excess_loss[0, -1] > 1e-2
    assert r.steps_to_tolerance[1] < 300
    assert r.steps_to_tolerance[2] == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_hidden_layers_drift_more_with_depth_while_inputs_are_fixed(seed):
    d = experiments.hidden_layer_drift(seed=seed)
    shift, scale = d.mean_shift[:, -1], np.exp(d.log_scale_change[:, -1])
    assert np.all(np.diff(shift) > 0) and np.all(np.diff(scale) > 0)
    assert shift[-1] > 5 and scale[-1] > 5
    assert d.history.final_test_accuracy > 0.9
    # statistics at step 0 are the reference: no drift recorded there
    assert np.all(d.mean_shift[:, 0] == 0) and np.all(d.log_scale_change[:, 0] == 0)


def test_quadratic_model_predicts_descent_threshold_within_factor_three_for_most_seeds():
    records = [experiments.descent_threshold_on_network(seed=s) for s in SEEDS]
    ratios = np.array([t.actual_threshold / t.predicted_threshold for t in records])
    assert np.sum((ratios > 1 / 3) & (ratios < 3)) >= 4
    for t in records:  # for short steps the quadratic model matches the loss
        short = t.alphas <= t.predicted_threshold / 4
        drop = t.loss[0] - t.loss.min()
        assert np.max(np.abs(t.quadratic_model[short] - t.loss[short])) < 0.15 * drop


@pytest.mark.parametrize("seed", [101, 102, 103, 104, 105])
def test_per_coordinate_standardization_fails_when_the_principal_axes_are_rotated(seed):
    r = conditioning.rotated_standardization(seed=seed)
    assert conditioning.standardization_fails_off_axis(r, aligned_at_most=1.2, diagonal_at_least=0.8,
                                                       whitened_tol=1e-6, rtol=0.25)


def test_rotated_claim_fails_on_a_record_that_contradicts_it():
    r = conditioning.rotated_standardization(seed=0)
    r.kappa[-1, 1] = 1.0                     # standardization that also fixed the rotated bowl
    assert not conditioning.standardization_fails_off_axis(r)
