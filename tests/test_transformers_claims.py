"""The claims of the Transformers chapter (11_transformers), on seeds the chapter does not use.

Thresholds are the chapter's, set after running the experiments on seeds 0-6 (training) and 0-11
(initialization) and before these seeds were run. Every claim function returns the value it measured, so a
failure message shows how far off it was.
"""

from __future__ import annotations

import functools

import pytest
import torch

from normlab.data import sorting_task
from normlab.experiments import transformers as tx

SEEDS = [101, 102, 103, 104, 105]


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@functools.lru_cache(maxsize=None)
def runs(seed):
    return tx.standard_runs(seed=seed)


@pytest.mark.parametrize("seed", SEEDS)
def test_pre_ln_gradient_falls_with_depth_as_predicted_and_post_ln_does_not(seed):
    grads = tx.gradient_at_init(depths=(6, 12, 24, 48), seeds=(seed, seed + 1000, seed + 2000, seed + 3000))
    assert tx.pre_ln_gradient_follows_prediction(grads, factor=2.0)
    assert tx.post_ln_gradient_does_not_fall(grads, factor=1.5)
    assert tx.post_exceeds_pre_at_depth(grads, factor=2.5)
    assert tx.pre_ln_gradient_falls_across_layers(grads, factor=2.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_pre_ln_stream_is_linear_and_deepnorm_shares_are_level(seed):
    shares = tx.branch_shares(depth=48, seed=seed)
    assert tx.pre_ln_stream_grows_linearly(shares, factor=1.75)
    assert tx.deepnorm_share_is_flat(shares, factor=1.2, pre_fall=2.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_rmsnorm_row_differs_from_layernorm_in_weight_recentering_only(seed):
    assert tx.rms_rows_match_papers(tx.rms_invariance_rows(seed=seed), broken_above=1e-2)


@pytest.mark.parametrize("seed", SEEDS)
def test_post_ln_needs_warmup_and_pre_ln_does_not(seed):
    assert tx.post_ln_needs_warmup(runs(seed), stalled=1.2, learned=0.5)


@pytest.mark.parametrize("seed", SEEDS)
def test_rmsnorm_and_dyt_match_layernorm_large_alpha_and_no_norm_do_not(seed):
    r = runs(seed)
    assert tx.matches(r, "pre-RMSNorm", "pre-LN", tolerance=0.15)
    assert tx.not_worse_than(r, "pre-DyT α₀=0.5", "pre-LN", margin=0.1)
    assert tx.worse_than(r, "pre-DyT α₀=2", "pre-LN", margin=0.4)
    assert tx.worse_than(r, "no normalization", "pre-LN", margin=0.2)


@pytest.mark.parametrize("seed", SEEDS)
def test_layernorm_map_of_a_trained_model_is_closer_to_tanh_than_to_a_line(seed):
    task = sorting_task(num_train=4000, num_test=500, seed=seed)
    ln_map = tx.ln_input_output_map(runs(seed)["pre-LN"].model, task.inputs_test[:200], points=4000, seed=seed)
    assert tx.tanh_fits_better(ln_map, factor=1.03)


@pytest.mark.parametrize("seed", SEEDS)
def test_qk_norm_bounds_the_logits_and_widens_the_stable_range(seed):
    sweep = tx.qk_norm_sweep(lrs=(3e-3, 1e-2, 3e-2, 1e-1), seed=seed)
    assert tx.qk_norm_bounds_logits(sweep, factor=100.0)
    assert tx.qk_logit_bound(sweep, bound=50.0)
    assert tx.qk_norm_widens_stable_range(sweep, below=0.8)


def test_claims_reject_the_opposite_outcome():
    r = runs(101)
    swapped = dict(r)
    swapped["post-LN"], swapped["pre-LN"] = r["pre-LN"], r["post-LN"]
    assert not tx.post_ln_needs_warmup(swapped)
    assert not tx.not_worse_than(r, "pre-DyT α₀=2", "pre-LN", margin=0.1)
