"""Chapter "LayerNorm and the normalizers that do not depend on the batch" (chapter 07_layernorm): LayerNorm's
effective learning rate and the batch statistics of a recurrent network along a sequence, rerun on seeds the
chapter does not use."""

import numpy as np
import pytest

from normlab.experiments import layernorm_dynamics as ln_dyn

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_ln_effective_learning_rate(seed):
    claim = ln_dyn.ln_effective_learning_rate_holds(ln_dyn.effective_learning_rate(seed=seed))
    assert claim, claim


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_statistics_trend_then_settle(seed):
    record = ln_dyn.rnn_batch_statistics(seed=seed)
    claim = ln_dyn.batch_statistics_trend_then_settle(record)
    assert claim, claim
    assert record.batch_std[0, 0] < record.stationary(0)  # the chapter: gain 1 shows the same rise, weaker


def test_record_shapes_and_whole_matrix_identities():
    r = ln_dyn.effective_learning_rate(seed=3, scales=(2.0, 0.5), width=8, batch_size=16)
    assert r.norms == ("layer", "batch") and r.step_change.shape == (2, 2)
    for values in (r.loss_change, r.grad_change, r.step_change, r.frobenius_cos):
        assert np.all(values < 1e-10)


def test_claims_can_fail():
    r = ln_dyn.effective_learning_rate(seed=3)
    r.row_scaling_change[r.norms.index("batch")] = 0.5  # BN not invariant per row: the claim must notice
    assert not ln_dyn.ln_effective_learning_rate_holds(r)
    q = ln_dyn.rnn_batch_statistics(seed=3, train_length=10, sequences=64)
    q.batch_std[:, q.train_length + 2] *= 1.5  # statistics that move beyond T
    assert not ln_dyn.batch_statistics_trend_then_settle(q)
    with pytest.raises(ValueError, match="gain 2"):
        ln_dyn.batch_statistics_trend_then_settle(q, gain=2.0)
