"""Claims of the weight-decay chapter's Taylor section (BN rescales the step, it does not guarantee descent),
on seeds the chapter does not use."""

import pytest

from normlab.experiments import weight_decay

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_taylor_terms_at_cw_are_those_of_the_step_alpha_over_c_squared_and_descent_is_not_guaranteed(seed):
    r = weight_decay.taylor_terms_under_rescaling(seed=seed)
    assert weight_decay.taylor_terms_scale_as_learning_rate(r, exponent_tol=1e-6, step_tol=1e-9)
    assert weight_decay.descent_not_guaranteed(r)


def test_taylor_claims_fail_on_records_that_contradict_them():
    r = weight_decay.taylor_terms_under_rescaling(seed=0, steps_trained=100)
    r.rayleigh = r.rayleigh * r.scales   # the misstatement's Hessian, scaled by 1/c instead of 1/c²
    assert not weight_decay.taylor_terms_scale_as_learning_rate(r)
    r = weight_decay.taylor_terms_under_rescaling(seed=0, steps_trained=100)
    r.fixed_lr_change[:] = -1.0          # every scale descends
    assert not weight_decay.descent_not_guaranteed(r)
