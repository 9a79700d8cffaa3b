"""The claims of chapter "Initialization" (variance propagation, PyTorch's default, symmetry, orthogonal
initialization), rerun on seeds the chapter does not use.

Each claim is a function in ``normlab.experiments.initialization``; the chapter's check cells call the same
functions, with the same thresholds, on its own seeds.
"""

import math

import numpy as np
import pytest
import torch

from normlab.experiments import initialization as ini

SEEDS = [101, 102, 103, 104, 105]
CONFIGS = [(a, s) for a in ("tanh", "relu") for s in ("small", "xavier", "he")]


# ---------------------------------------------------------------- sanity: predictions, records, seeds


def test_mean_field_relu_has_closed_form():
    q, chi = ini.mean_field_variances("relu", 2.0, 1.7, 10)
    np.testing.assert_allclose(q, 1.7, rtol=1e-10)
    np.testing.assert_allclose(chi, 1.0, rtol=1e-10)
    q, chi = ini.mean_field_variances("relu", 1.0, 1.0, 5)
    np.testing.assert_allclose(q, 0.5 ** np.arange(5), rtol=1e-10)


def test_mean_field_tanh_matches_monte_carlo():
    q, chi = ini.mean_field_variances("tanh", 1.5, 0.8, 2)
    z = np.random.default_rng(0).standard_normal(2_000_000) * math.sqrt(0.8)
    assert q[1] == pytest.approx(1.5 * np.mean(np.tanh(z) ** 2), rel=3e-3)
    assert chi[0] == pytest.approx(1.5 * np.mean(np.cosh(z) ** -4), rel=3e-3)


def test_mean_field_selu_keeps_unit_variance_under_lecun():
    q, _ = ini.mean_field_variances("selu", 1.0, 1.0, 20)
    np.testing.assert_allclose(q, 1.0, atol=2e-3)


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="Unknown activation"):
        ini.mean_field_variances("gelu", 1.0, 1.0, 3)
    with pytest.raises(ValueError, match="Unknown scheme"):
        ini.initialize(torch.nn.Linear(3, 3), "glorot", seed=0)
    with pytest.raises(ValueError, match="norm must be"):
        ini.residual_stream(blocks=2, norm="layer")


def test_initialize_sets_the_scheme_variance_and_zero_biases():
    net = ini.deep_mlp("relu", "he", depth=3, width=512, seed=0)
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            assert layer.weight.var().item() * 512 == pytest.approx(2.0, rel=0.02)
            assert torch.count_nonzero(layer.bias) == 0
    net = ini.deep_mlp("tanh", "orthogonal", depth=2, width=64, seed=0)
    w = net.linear0.weight.detach().double()
    torch.testing.assert_close(w @ w.T, torch.eye(64, dtype=torch.float64), atol=1e-5, rtol=0)


def test_variance_record_is_deterministic_by_seed_and_shaped_per_layer():
    a, b = ini.variance_propagation("relu", "he", depth=8, width=32, batch=16, seed=3), \
        ini.variance_propagation("relu", "he", depth=8, width=32, batch=16, seed=3)
    c = ini.variance_propagation("relu", "he", depth=8, width=32, batch=16, seed=4)
    assert a.activation_variance.shape == a.gradient_variance.shape == a.predicted_gradient_variance.shape == (8,)
    np.testing.assert_array_equal(a.activation_variance, b.activation_variance)
    assert not np.array_equal(a.activation_variance, c.activation_variance)
    assert a.predicted_gradient_variance[-1] == a.gradient_variance[-1]


def test_rate_claim_rejects_a_wrong_prediction():
    r = ini.variance_propagation("relu", "xavier", depth=50, width=64, batch=32, seed=0)
    r.predicted_activation_variance = r.predicted_activation_variance * 2.0 ** -np.arange(50)  # off by log 2 / layer
    assert not ini.variance_rates_match_prediction(r)


def test_fitted_log_slope_of_a_geometric_sequence():
    assert ini.fitted_log_slope(3.0 * 0.25 ** np.arange(20)) == pytest.approx(math.log(0.25))
    assert ini.fitted_log_slope(np.r_[100.0, 1.0, 1.0, 1.0], start=1) == pytest.approx(0.0, abs=1e-12)


def test_predicted_residual_variance():
    np.testing.assert_allclose(ini.predicted_residual_variance(2.0, 3, 1.0, "none"), [4, 8, 16])
    np.testing.assert_allclose(ini.predicted_residual_variance(1.0, 3, 0.5, "batch"), [1.25, 1.5, 1.75])


# ---------------------------------------------------------------- the chapter's claims over seeds


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("activation, scheme", CONFIGS)
def test_fifty_layer_variance_rates_match_mean_field(activation, scheme, seed):
    r = ini.variance_propagation(activation, scheme, seed=seed)
    assert ini.variance_rates_match_prediction(r, tol=0.06, start=10)


@pytest.mark.parametrize("seed", SEEDS)
def test_he_relu_variance_is_steady_and_xavier_is_not(seed):
    assert ini.he_relu_variance_is_steady(ini.variance_propagation("relu", "he", seed=seed), factor=20.0)
    assert not ini.he_relu_variance_is_steady(ini.variance_propagation("relu", "xavier", seed=seed), factor=20.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_pytorch_default_is_one_third_of_lecun_and_kills_deep_relu_signal(seed):
    r = ini.pytorch_default_init(seed=seed)
    assert ini.default_weight_variance_is_one_third_lecun(r)
    assert ini.default_relu_signal_decays_by_one_sixth(r, tol=0.1)


def test_default_claim_rejects_he_variance():
    r = ini.pytorch_default_init(seed=0)
    r.weight_var_fan = r.weight_var_fan * 6
    assert not ini.default_weight_variance_is_one_third_lecun(r)


@pytest.mark.parametrize("seed", SEEDS)
def test_constant_init_keeps_units_identical(seed):
    r = ini.constant_init_training(seed=seed)
    assert ini.constant_init_units_stay_identical(r, random_at_least=0.1)
    assert r.accuracy_constant < 0.3 < 0.9 < r.accuracy_random


@pytest.mark.parametrize("seed", SEEDS)
def test_orthogonal_jacobian_claims(seed):
    r = ini.jacobian_spectra(seed=seed)
    assert ini.orthogonal_linear_is_isometric(r, atol=1e-5, gaussian_ratio_at_least=1e3)
    assert ini.orthogonal_narrows_tanh_spectrum(r, factor=10.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_histograms_tell_the_variance_story(seed):
    small, he = ini.activation_histograms("relu", "small", seed=seed), ini.activation_histograms("relu", "he", seed=seed)
    assert small.std[-1] < 1e-40 < 0.1 < he.std[-1]
    tanh_he = ini.activation_histograms("tanh", "he", seed=seed)
    centers = 0.5 * (tanh_he.edges[1:] + tanh_he.edges[:-1])
    assert tanh_he.density[-1, np.abs(centers) > 0.9].sum() > 0.03
    assert np.ptp(tanh_he.std[1:]) < 0.05
    xavier = ini.activation_histograms("tanh", "xavier", seed=seed)
    assert xavier.std[-1] < xavier.std[0] / 3
