"""The fast claims of the LayerNorm chapter (invariance table, the cube, the comparison table),
on seeds the chapter does not use. Training claims live in test_layernorm_claims_batch_size.py
and test_layernorm_claims_rnn.py, so pytest-xdist (--dist loadfile) can spread them."""

import numpy as np
import pytest
import torch

from normlab import models
from normlab.experiments import layernorm

SEEDS = [101, 102, 103, 104, 105]


@pytest.mark.parametrize("seed", SEEDS)
def test_invariance_table_matches_ba_et_al_table_1(seed):
    record = layernorm.invariance_table(seed=seed)
    assert layernorm.invariance_matches_paper(record)       # every cell ≤ 1e-9 or > 1e-2, as in the paper


@pytest.mark.parametrize("seed", SEEDS)
def test_invariance_caveats(seed):
    # LN's re-centering invariance needs the same shift on every row; no normalizer survives a negative factor
    assert layernorm.relative_change("layer", "rows shifted by different vectors", seed=seed) > 1e-2
    for norm in layernorm.NORMALIZERS:
        assert layernorm.relative_change(norm, "weight matrix re-scaling by a negative factor", seed=seed) > 1e-2
    # with ε = 1e-5, a tiny weight scale breaks BN's and LN's invariance but not WN's (no ε)
    for norm, broken in [("batch", True), ("layer", True), ("weight", False)]:
        change = layernorm.relative_change(norm, "weight matrix re-scaling by 1e-3", seed=seed, eps=1e-5)
        assert (change > 1e-2) == broken


def test_invariance_claim_rejects_a_wrong_table():
    record = layernorm.invariance_table(seed=0)
    record.invariant = ~record.invariant
    assert not layernorm.invariance_matches_paper(record)


@pytest.mark.parametrize("seed", SEEDS)
def test_statistic_masks_are_the_textbook_sets(seed):
    assert layernorm.masks_match_definitions(layernorm.statistic_masks(seed=seed))
    masks = layernorm.statistic_masks(shape=(3, 6, 2, 2), groups=3, seed=seed)
    assert layernorm.masks_match_definitions(masks, groups=3)
    assert not layernorm.masks_match_definitions(masks, groups=2)


@pytest.mark.parametrize("seed", SEEDS)
def test_comparison_table_limitations_show(seed):
    assert layernorm.comparison_facts_hold(layernorm.comparison_measurements(seed=seed))


def test_timings_are_within_a_wide_margin_of_batchnorm():
    torch.set_num_threads(1)
    record = layernorm.normalizer_timings(repeats=21)
    assert np.all(record.seconds > 0)
    assert layernorm.timings_within(record, factor=10.0)


def test_elman_rnn_with_normlab_layernorm_computes_the_same_function():
    from normlab.layers import LayerNorm
    x = torch.randn(3, 7, 1, generator=torch.Generator().manual_seed(0))
    fast = models.ElmanRNN(1, 8, 1, layer_norm=True, recurrent_gain=2.0, seed=0)
    ours = models.ElmanRNN(1, 8, 1, layer_norm=True, recurrent_gain=2.0, seed=0, norm_layer=LayerNorm)
    for a, b in zip(fast(x), ours(x)):
        torch.testing.assert_close(a, b)


def test_comparison_measurements_do_not_depend_on_the_global_generator():
    """Two calls with the same seed agree whatever the global RNG's state (the chapter calls it after timings
    that draw from it, and the book's two executions must glue the same numbers)."""
    torch.manual_seed(1)
    first = layernorm.comparison_measurements(seed=3)
    torch.manual_seed(2)
    torch.randn(100)
    second = layernorm.comparison_measurements(seed=3)
    assert first == second
