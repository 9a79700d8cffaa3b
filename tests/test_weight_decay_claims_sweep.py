"""Claims of the weight-decay chapter (norm dynamics, decay on γ and β), on seeds the chapter does not use.

One file per experiment, so pytest-xdist (--dist loadfile) can spread them over workers."""

import numpy as np
import pytest

from normlab.experiments import weight_decay

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_weight_norms_follow_the_sgd_identity_and_reach_equilibrium_under_decay(seed):
    r = weight_decay.weight_decay_sweep(seed=seed)
    assert weight_decay.norm_identity_holds(r, tol=2e-2)
    assert weight_decay.norm_grows_without_decay(r, factor=1.0)
    assert weight_decay.decay_reaches_equilibrium(r, min_decay=3e-3, rtol=0.1)
    assert weight_decay.effective_lr_raised_by_decay(r, factor=2.0)
    no_affine = weight_decay.weight_decay_sweep(seed=seed, weight_decays=(1e-2,), decay_bn_affine=False)
    assert weight_decay.gamma_shrinks_under_decay(r, no_affine, weight_decay=1e-2, below=0.5)


def test_equilibrium_claim_rejects_a_run_far_from_equilibrium():
    r = weight_decay.weight_decay_sweep(seed=0, weight_decays=(0.0, 1e-2), steps=60, eval_every=60)
    assert not weight_decay.decay_reaches_equilibrium(r, min_decay=1e-2, rtol=0.1)   # 60 steps: not there yet
    r.norms[0, 0, 10] = 0.5 * r.norms[0, 0, 9]
    assert not weight_decay.norm_grows_without_decay(r)
    with pytest.raises(ValueError, match="decay_bn_affine"):
        weight_decay.gamma_shrinks_under_decay(r, r)
