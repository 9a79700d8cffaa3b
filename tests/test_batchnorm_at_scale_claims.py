"""The claims of chapter "BatchNorm at scale", rerun on seeds the chapter does not use.

Thresholds were set after seeds 0-9 (measured minima/maxima in brackets):
- per-device BN in DDP (2 ranks, 2 examples each, 300 steps) ends ≥ 0.15 below one process on the global batch
  [gap 0.27-0.65], SyncBatchNorm within 0.06 of it [≤ 0.033];
- the cause: per-device BN's training-mode output agrees with its eval-mode output (correlation 0.545-0.560) far
  less than SyncBN's (0.78-0.80): the disagreement ratio ≥ 1.6 [2.00-2.20];
- ghost-batch mean noise follows sampling theory within 25 % at every virtual batch size [≤ 0.164];
- ghost batches in one batch of 512 (100 steps, lr 0.1): ghost batches of 4 cost test accuracy against plain BN
  on the whole batch, mean over seeds ≥ 0.008 [per seed 0.008-0.033, mean 0.019]; ghost batches of 16 and 64
  move neither test accuracy nor the train − test gap by more than 0.01 on average [means ≤ 0.004]; batches of 32
  over the same epochs beat the batch of 512 by ≤ 0.015 on average [per seed 0.000-0.017, mean 0.006];
- BatchNorm trained on two-class batches loses ≥ 0.10 of accuracy in training mode on such batches [0.133-0.281];
  Batch Renorm and GroupNorm differ between modes by ≤ 0.05 [≤ 0.022] and are not worse than BN in eval mode.
"""

import numpy as np
import pytest

from normlab.distributed import Workers
from normlab.experiments import batchnorm_at_scale as scale

SEEDS = [101, 102, 103, 104, 105]


@pytest.fixture(scope="module")
def per_device():
    with Workers(2, timeout=120) as workers:
        return [scale.per_device_statistics(seed, workers=workers) for seed in SEEDS]


def test_per_device_batchnorm_falls_behind_and_sync_batchnorm_closes_the_gap(per_device):
    for record in per_device:
        claim = scale.sync_closes_the_gap(record)
        assert claim.holds, record


def test_the_cause_is_the_train_eval_mismatch_of_tiny_device_batches(per_device):
    for record in per_device:
        assert scale.small_device_batches_mislead_running_statistics(record).holds, record
        assert record.step_seconds_sync > 0 and np.isfinite(record.sync_cost_ratio)


@pytest.mark.parametrize("seed", SEEDS)
def test_ghost_batch_noise_follows_sampling_theory(seed):
    record = scale.ghost_batch_noise(seed)
    claim = scale.ghost_noise_scales_as_inverse_sqrt(record)
    assert claim.holds, claim
    assert np.all(np.diff(record.mean_noise) < 0)  # (the spread of the ghost std is not monotone at B = 2, 4)


@pytest.fixture(scope="module")
def ghost_training():
    return scale.ghost_batch_training(seeds=SEEDS)


def test_tiny_ghost_batches_cost_accuracy_and_moderate_ones_change_nothing(ghost_training):
    record = ghost_training
    assert record.test_accuracy.shape == record.train_accuracy.shape == (len(SEEDS), 4)
    assert scale.tiny_ghost_batches_hurt(record).holds, record
    assert scale.moderate_ghost_batches_change_nothing(record).holds, record
    # the chapter's reading of the train − test gap at B = 4: test accuracy falls on every seed [seeds 0-9 and
    # 101-105: by 0.008-0.039], so a gap that shrinks there shrinks because training accuracy falls further
    four, full = record.column(4), record.column(record.batch_size)
    assert np.all(record.test_accuracy[:, four] < record.test_accuracy[:, full]), record


def test_there_is_little_large_batch_gap_to_close_at_this_scale(ghost_training):
    record = ghost_training
    assert scale.little_large_batch_gap_to_close(record).holds, record
    # sixteen times more steps: the small batch fits the training set at least as well
    assert np.all(record.small_batch_train_accuracy >= record.train_accuracy[:, -1])


def test_ghost_batch_training_validates_its_sizes():
    with pytest.raises(ValueError, match="divide batch_size=512"):
        scale.ghost_batch_training(seeds=(0,), sizes=(4, 24, 512), steps=1)
    with pytest.raises(ValueError, match="largest must equal it"):
        scale.ghost_batch_training(seeds=(0,), sizes=(4, 16), steps=1)
    with pytest.raises(ValueError, match="same number of epochs"):
        scale.ghost_batch_training(seeds=(0,), small_batch_size=48, steps=1)
    record = scale.ghost_batch_training(seeds=(0,), sizes=(8, 512), steps=2, small_batch_size=256)
    with pytest.raises(ValueError, match="was not run"):
        record.column(4)
    assert record.gap.shape == (1, 2) and record.column(512) == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_non_iid_batches_break_batchnorm_and_renorm_and_groupnorm_do_not(seed):
    record = scale.non_iid_batches(seed)
    assert scale.non_iid_batches_break_batchnorm(record).holds, record
    assert scale.renorm_and_groupnorm_recover(record).holds, record


def test_records_and_claims_are_what_the_chapter_glues():
    record = scale.ghost_batch_noise(0, sizes=(2, 8), draws=20)
    assert record.mean_noise.shape == record.std_noise.shape == record.predicted_mean_noise.shape == (2,)
    claim = scale.ghost_noise_scales_as_inverse_sqrt(record, tolerance=10.0)
    assert claim.holds and bool(claim) and claim.threshold == 10.0 and claim.measured >= 0
    with Workers(2, timeout=60) as workers:
        with pytest.raises(ValueError, match="workers has 2 processes"):
            scale.per_device_statistics(0, world_size=3, workers=workers, steps=2)
