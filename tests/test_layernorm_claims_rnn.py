"""The recurrent-network claims of the LayerNorm chapter, on seeds the chapter does not use."""

import pytest

from normlab.experiments import layernorm

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_layernorm_in_a_tanh_rnn(seed):
    record = layernorm.rnn_hidden_statistics(gains=(1.0, 3.0), seed=seed)
    assert layernorm.ln_fixes_scale_over_time(record, gain=3.0, growth=2.0, tolerance=0.05)
    assert layernorm.ln_rescues_large_recurrent_gain(record, gain=3.0, factor=3.0, saturated=0.3, unsaturated=0.1)
    assert layernorm.plain_rnn_wins_at_unit_gain(record, gain=1.0, factor=3.0)
    assert layernorm.ln_insensitive_to_gain(record, factor=2.0)
