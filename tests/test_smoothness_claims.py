"""The claims of chapter "Lipschitz continuity, smoothness and the loss landscape" that need no
training (the descent lemma, Theorems 4.1 and 4.2), rerun on seeds the chapter does not use.

Each claim is a function in ``normlab.experiments.smoothness``; the chapter's check cells call the
same functions on the chapter's seeds.
"""

import numpy as np
import pytest

from normlab import quadratic
from normlab.experiments import smoothness

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_descent_lemma_bounds_the_step_and_two_over_beta_descends(seed):
    r = smoothness.descent_lemma_on_quadratic(eigenvalues=(0.2, 1.0, 4.0), seed=seed)
    assert np.all(r.loss_after <= r.bound + 1e-12)
    inside = (r.steps > 0) & (r.steps < 2 / r.beta)
    assert np.all(r.loss_after[inside] < r.loss_before)
    assert np.all(r.bound[r.steps > 2 / r.beta] > r.loss_before)      # beyond 2/β the lemma guarantees nothing
    assert r.steps[-1] == pytest.approx(2.5 / r.beta)


@pytest.mark.parametrize("seed", SEEDS)
def test_theorem_4_1_holds_with_one_over_m_and_fails_with_one_over_sqrt_m(seed):
    r = smoothness.bn_gradient_theorem_check(seed=seed, trials=60)
    assert smoothness.gradient_identity_holds(r, rtol=1e-9)
    assert smoothness.sqrt_m_version_fails(r, fraction=0.9)
    assert smoothness.gradient_identity_holds(smoothness.bn_gradient_theorem_check(seed=seed, trials=30, eps=1e-2))


@pytest.mark.parametrize("seed", SEEDS)
def test_theorem_4_2_identity_and_its_assumption(seed):
    r = smoothness.bn_hessian_theorem_check(seed=seed, trials=60)
    assert smoothness.hessian_identity_holds(r, rtol=1e-8)
    assert smoothness.hessian_assumption_often_fails(r, at_least=0.2)
    assert 0 < np.mean(r.quad_bn <= r.paper_rhs) < 1


def test_gradient_claim_detects_a_wrong_constant():
    r = smoothness.bn_gradient_theorem_check(seed=0, trials=20)
    wrong = smoothness.GradientTheoremRecord(r.m, r.eps, r.lhs, r.rhs_1_over_sqrt_m, r.rhs_1_over_m,
                                             r.gamma_over_sigma, r.grad_norm_bn, r.grad_norm_plain)
    assert not smoothness.gradient_identity_holds(wrong)
    assert not smoothness.sqrt_m_version_fails(wrong)


def test_hessian_claim_detects_a_wrong_identity():
    r = smoothness.bn_hessian_theorem_check(seed=0, trials=10)
    r.identity_rhs = r.identity_rhs * 1.01
    assert not smoothness.hessian_identity_holds(r)


def test_descent_threshold_of_chapter_one_is_at_least_two_over_beta():
    rng = np.random.default_rng(0)
    problem = quadratic.random_quadratic([0.2, 1.0, 4.0], seed=0)
    theta = rng.standard_normal(3)
    assert quadratic.descent_threshold(problem.gradient(theta), problem.hessian) >= 2 / 4.0


def test_make_norm_rejects_unknown_names():
    assert smoothness.make_norm("none") is None
    assert smoothness.make_norm("l1")(3).p == 1
    with pytest.raises(ValueError, match="norm must be one of"):
        smoothness.make_norm("layer")
