"""Chapter "WeightNorm and scaled WeightNorm", section "The size of the gradient": the norm of ∇v L
(equation eq-wn-grad-norm of chapter 06_weightnorm) against autograd, on seeds the chapter does not use."""

import numpy as np
import pytest

from normlab.experiments import weightnorm as wn

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_gradient_norm_formula_bound_and_scaling(seed):
    r = wn.gradient_norm_split(seed=seed)
    claim = wn.gradient_norm_formula_holds(r)
    assert claim, claim
    assert np.all(r.kept_fraction <= 1 + 1e-12) and np.median(r.kept_fraction) > 0.9  # what the chapter says


def test_record_shapes_and_pythagoras():
    r = wn.gradient_norm_split(seed=7, scales=(1.0, 2.5), batch_size=32, hidden=(12,))
    assert r.grad_v_norm.shape == (2, 12 + 10) and r.grad_w_norm.shape == (22,)
    np.testing.assert_allclose(r.grad_v_norm[1] * 2.5, r.grad_v_norm[0], rtol=1e-10)
    # ‖∇w L‖² = (∇g L)² + (‖v‖/g)²‖∇v L‖²: the bound squared minus the prediction squared is the radial part
    np.testing.assert_allclose(r.bound[0] ** 2 - r.predicted_norm[0] ** 2,
                               (r.bound[0] / r.grad_w_norm) ** 2 * r.grad_g ** 2, rtol=1e-8, atol=1e-20)


def test_claim_can_fail():
    r = wn.gradient_norm_split(seed=7, scales=(1.0, 2.5), batch_size=32, hidden=(12,))
    r.predicted_norm = r.bound.copy()  # forgetting the projection M_w
    assert not wn.gradient_norm_formula_holds(r)
    r = wn.gradient_norm_split(seed=7, scales=(1.0, 2.5), batch_size=32, hidden=(12,))
    r.grad_v_norm[1] = r.grad_v_norm[0]  # a gradient that did not scale as 1/‖v‖
    r.predicted_norm[1] = r.predicted_norm[0]
    assert not wn.gradient_norm_formula_holds(r)
