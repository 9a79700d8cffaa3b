"""normlab.distributed: worker processes that start and stop cleanly, name the rank that fails, leave nothing
behind, and data-parallel training that follows one-process training."""

import os
import time

import numpy as np
import psutil
import pytest
import torch
import torch.distributed as dist

from normlab import data, models, train
from normlab.distributed import WorkerError, Workers, free_port, run, train_data_parallel
from normlab.layers import BatchNorm1d, SyncBatchNorm


def _all_reduce_rank(rank, world_size):
    value = torch.tensor([float(rank + 1)])
    dist.all_reduce(value)
    return rank, world_size, value.item(), torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def _fails_on_rank_one(rank, world_size):
    if rank == 1:
        raise ValueError("shard is empty")
    time.sleep(30)  # rank 0 would wait here; the parent must not


def _crashes_on_rank_one(rank, world_size):
    if rank == 1:
        os._exit(3)
    dist.barrier()  # would hang without rank 1


def _gone(pids):
    return all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in pids)


def test_workers_run_collectives_with_one_thread_each_and_stop_cleanly():
    with Workers(2, timeout=60) as workers:
        pids = workers.pids
        results = workers.run(_all_reduce_rank)
        assert [r[:3] for r in results] == [(0, 2, 3.0), (1, 2, 3.0)]
        assert all(r[3] == 1 and r[4] == "1" for r in results)
        assert workers.run(lambda rank, world_size, k: rank * k, k=10) == [0, 10]  # defined here: sent by value
    assert not workers.running and _gone(pids)


def test_a_failing_rank_is_named_and_no_process_is_left_behind():
    workers = Workers(2, timeout=60).start()
    pids = workers.pids
    start = time.perf_counter()
    with pytest.raises(WorkerError, match="rank 1 of 2 failed") as info:
        workers.run(_fails_on_rank_one)
    assert info.value.rank == 1 and "shard is empty" in str(info.value)
    assert time.perf_counter() - start < 10
    assert not workers.running and _gone(pids)
    assert not [p for p in psutil.Process().children(recursive=True) if p.pid in pids]
    with pytest.raises(RuntimeError, match="not running"):
        workers.run(_all_reduce_rank)


def test_a_crashing_rank_is_named_and_no_process_is_left_behind():
    with pytest.raises(WorkerError, match="rank 1 died with exit code 3") as info:
        with Workers(2, timeout=60) as workers:
            pids = workers.pids
            workers.run(_crashes_on_rank_one)
    assert info.value.rank == 1 and _gone(pids)


def test_a_rank_that_does_not_answer_is_stopped_after_the_timeout():
    with pytest.raises(WorkerError, match=r"did not finish within 2 s") as info:
        run(lambda rank, world_size: time.sleep(60 if rank == 0 else 0), 2, timeout=2)
    assert info.value.rank == 0


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="world_size must be a positive integer"):
        Workers(0)
    with pytest.raises(ValueError, match="timeout must be > 0"):
        Workers(2, timeout=0)
    assert 0 < free_port() < 65536


def _data_parallel(rank, world_size, norm, steps):
    torch.manual_seed(0)
    ds = data.digits(seed=0)
    net = models.mlp(ds.num_features, (16,), ds.num_classes, activation="relu", norm=BatchNorm1d, seed=0)
    if norm == "sync":
        net = SyncBatchNorm.convert_sync_batchnorm(net)
    return train_data_parallel(rank, world_size, net, ds, steps=steps, lr=0.1, per_rank_batch=4, seed=0, eval_every=5)


def test_data_parallel_with_sync_batchnorm_follows_one_process_training_on_the_global_batch():
    ds = data.digits(seed=0)
    net = models.mlp(ds.num_features, (16,), ds.num_classes, activation="relu", norm=BatchNorm1d, seed=0)
    history = train.train(net, ds, steps=10, lr=0.1, batch_size=8, seed=0, eval_every=5, progress=False,
                          device="cpu")
    with Workers(2, timeout=60) as workers:
        synced = workers.run(_data_parallel, "sync", 10)
        local = workers.run(_data_parallel, "plain", 10)
    reference = net.state_dict()
    for rank in range(2):
        for key, value in reference.items():
            torch.testing.assert_close(synced[rank].state[key], value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(synced[0].test_accuracy, history.test_accuracy, atol=1e-9)
    np.testing.assert_allclose((synced[0].loss + synced[1].loss) / 2, history.loss, rtol=1e-5)
    # plain BN: each rank normalizes its own 4 examples; the parameters stay equal (DDP), the statistics differ
    assert not np.allclose((local[0].loss + local[1].loss) / 2, history.loss, rtol=1e-3)
    torch.testing.assert_close(local[0].state["linear0.weight"], local[1].state["linear0.weight"])


def test_train_data_parallel_checks_the_batch():
    ds = data.digits(seed=0)
    net = models.mlp(ds.num_features, (4,), ds.num_classes, seed=0)
    with pytest.raises(ValueError, match="per_rank_batch must lie in"):
        train_data_parallel(0, 2, net, ds, steps=1, lr=0.1, per_rank_batch=0)
