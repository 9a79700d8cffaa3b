"""Data parallelism on one machine: k CPU processes joined by torch.distributed (gloo).

- :class:`Workers`: starts k processes (one torch thread each) in a gloo process group on
  localhost, runs functions on every rank and returns their results; stops them cleanly, and on
  any failure kills them all and raises :class:`WorkerError` naming the rank. Usable from a
  notebook: functions are sent by value (cloudpickle), so a function defined in a cell runs.
- :func:`run`: start workers, run one function on every rank, stop them.
- :func:`train_data_parallel`: the book's minibatch SGD with torch's ``DistributedDataParallel``,
  to be run on every rank: each step draws one global batch and each rank takes its slice.

Chapter ``12_batchnorm_at_scale``.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import queue
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from normlab import train
from normlab.data import Dataset

__all__ = ["DataParallelHistory", "WorkerError", "Workers", "free_port", "run", "train_data_parallel"]


class WorkerError(RuntimeError):
    """A rank failed (raised, crashed or timed out); ``rank`` names it, the message carries its traceback."""

    def __init__(self, rank: int | None, message: str) -> None:
        super().__init__(message)
        self.rank = rank


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _environment(**values: str):
    """Set environment variables for the duration (spawned children copy the parent's environment)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _worker_main(rank: int, world_size: int, init_method: str, backend: str, timeout: float,
                 tasks: Any, results: Any) -> None:
    """Body of each worker process: join the group, then run tasks until told to stop."""
    torch.set_num_threads(1)
    try:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=timeout))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises
        results.put((rank, None, "error", traceback.format_exc()))
        return
    results.put((rank, None, "ready", None))
    try:
        while True:
            item = tasks.get()
            if item is None:
                break
            task_id, payload = item
            try:
                import cloudpickle

                fn, args, kwargs = cloudpickle.loads(payload)
                value = pickle.dumps(fn(rank, world_size, *args, **kwargs))
                results.put((rank, task_id, "ok", value))
            except BaseException:  # noqa: BLE001 - reported to the parent, which raises
                results.put((rank, task_id, "error", traceback.format_exc()))
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


class Workers:
    """k worker processes in one gloo process group on localhost, for data parallelism on a CPU.

    >>> with Workers(2) as workers:                       # doctest: +SKIP
    ...     workers.run(lambda rank, world_size: rank)
    [0, 1]

    :meth:`run` calls ``fn(rank, world_size, *args, **kwargs)`` on every rank at once and returns
    the list of results by rank; the group stays up between calls, so collectives
    (``torch.distributed.all_reduce``, ``DistributedDataParallel``) work inside ``fn`` and the
    start-up cost (a second or two: each process imports torch) is paid once. Each worker runs
    with one torch thread (``OMP_NUM_THREADS=1``).

    If a rank raises, dies or does not answer within ``timeout`` seconds, every worker is killed
    and :class:`WorkerError` is raised naming the rank, with its traceback; the object is then
    closed. :meth:`close` (or leaving the ``with`` block) stops the workers and waits for them;
    none is left behind.
    Chapter ``12_batchnorm_at_scale``.
    """

    def __init__(self, world_size: int, backend: str = "gloo", timeout: float = 120.0,
                 start_method: str = "spawn") -> None:
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive integer; got {world_size!r}.")
        if not (dist.is_available() and (backend != "gloo" or dist.is_gloo_available())):
            raise RuntimeError(f"torch.distributed with the {backend!r} backend is not available in this build.")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds; got {timeout}.")
        self.world_size = world_size
        self.backend = backend
        self.timeout = float(timeout)
        self.start_method = start_method
        self._processes: list[Any] = []
        self._tasks: list[Any] = []
        self._results: Any = None
        self._next_task = 0
        self.startup_seconds = math.nan

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (empty once closed)."""
        return [p.pid for p in self._processes]

    @property
    def running(self) -> bool:
        return bool(self._processes)

    def start(self) -> Workers:
        """Start the processes and wait until all have joined the process group."""
        if self._processes:
            return self
        start = time.perf_counter()
        context = mp.get_context(self.start_method)
        self._results = context.Queue()
        init_method = f"tcp://127.0.0.1:{free_port()}"
        with _environment(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"):
            for rank in range(self.world_size):
                tasks = context.Queue()
                process = context.Process(
                    target=_worker_main, name=f"normlab-rank-{rank}", daemon=True,
                    args=(rank, self.world_size, init_method, self.backend, self.timeout, tasks, self._results))
                process.start()
                self._processes.append(process)
                self._tasks.append(tasks)
        self._collect(None, "start the process group")
        self.startup_seconds = time.perf_counter() - start
        return self

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Call ``fn(rank, world_size, *args, **kwargs)`` on every rank; return the results by rank."""
        import cloudpickle

        if not self._processes:
            raise RuntimeError("The workers are not running: call start() or use `with Workers(k) as workers:`.")
        payload = cloudpickle.dumps((fn, args, kwargs))
        task_id = self._next_task
        self._next_task += 1
        for tasks in self._tasks:
            tasks.put((task_id, payload))
        name = getattr(fn, "__qualname__", repr(fn))
        return [pickle.loads(value) for value in self._collect(task_id, f"run {name}")]

    def _collect(self, task_id: int | None, what: str) -> list[Any]:
        """Wait for one answer per rank; on an error, a dead process or the timeout, kill all and raise."""
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + self.timeout
        while len(answers) < self.world_size:
            try:
                rank, answered, status, value = self._results.get(timeout=0.05)
            except queue.Empty:
                for rank, process in enumerate(self._processes):
                    if not process.is_alive() and rank not in answers:
                        self._fail(rank, f"rank {rank} died with exit code {process.exitcode} while trying to {what}.")
                if time.monotonic() > deadline:
                    waiting = sorted(set(range(self.world_size)) - set(answers))
                    self._fail(waiting[0], f"rank(s) {waiting} did not finish within {self.timeout:g} s while trying "
                                           f"to {what}; all workers were stopped.")
                continue
            if status == "error":
                dead = self._dead_rank(grace=0.5)  # a rank that died makes its peers' collectives fail: name it
                if dead is not None and dead != rank:
                    process = self._processes[dead]
                    self._fail(dead, f"rank {dead} died with exit code {process.exitcode} while trying to {what}; "
                                     f"rank {rank} then failed:\n{value}")
                self._fail(rank, f"rank {rank} of {self.world_size} failed while trying to {what}:\n{value}")
            if answered == task_id:
                answers[rank] = value
        return [answers[rank] for rank in range(self.world_size)]

    def _dead_rank(self, grace: float) -> int | None:
        """The first rank whose process has exited, waiting up to ``grace`` seconds for one to."""
        deadline = time.monotonic() + grace
        while True:
            for rank, process in enumerate(self._processes):
                if not process.is_alive():
                    return rank
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def _fail(self, rank: int | None, message: str) -> None:
        self._stop(force=True)
        raise WorkerError(rank, message)

    def _stop(self, force: bool) -> None:
        if not force:
            for tasks in self._tasks:
                with contextlib.suppress(Exception):
                    tasks.put(None)
            for process in self._processes:
                process.join(timeout=5.0)
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(timeout=2.0)
            if process.is_alive():
                process.kill()
                process.join()
        for q in [*self._tasks, self._results]:
            if q is not None:
                q.close()
                q.join_thread() if not force else q.cancel_join_thread()
        self._processes, self._tasks, self._results = [], [], None

    def close(self) -> None:
        """Stop the workers (they leave the process group) and wait for them to exit."""
        if self._processes:
            self._stop(force=False)

    def __enter__(self) -> Workers:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._stop(force=True)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stop(force=True)


def run(fn: Callable[..., Any], world_size: int, *args: Any, timeout: float = 120.0, **kwargs: Any) -> list[Any]:
    """Start ``world_size`` gloo workers, call ``fn(rank, world_size, *args, **kwargs)`` on each, stop them.

    Returns the results by rank; raises :class:`WorkerError` naming the rank that failed.
    Chapter ``12_batchnorm_at_scale``.
    """
    with Workers(world_size, timeout=timeout) as workers:
        return workers.run(fn, *args, **kwargs)


# ----------------------------------------------------------------------------
# Data-parallel training


@dataclass
class DataParallelHistory:
    """What one rank saw during :func:`train_data_parallel`.

    ``loss[i]`` is this rank's minibatch loss at step i + 1, before the update;
    ``test_accuracy[j]`` the eval-mode test accuracy after ``eval_steps[j]`` steps (the same on
    every rank when the parameters and buffers are synchronized). ``seconds`` is the wall time of
    the loop, ``state`` the model's final ``state_dict``.
    """

    loss: np.ndarray
    eval_steps: np.ndarray
    test_accuracy: np.ndarray
    seconds: float
    state: dict


def _global_batches(num_train: int, global_batch: int, steps: int, seed: int):
    """The book's batch order (:func:`normlab.train.train`): a fresh permutation each epoch from a generator
    seeded by ``seed``, consecutive batches of ``global_batch``, the incomplete last one skipped."""
    generator = torch.Generator().manual_seed(seed)
    per_epoch = num_train // global_batch
    order = torch.empty(0, dtype=torch.int64)
    for step in range(steps):
        position = step % per_epoch
        if position == 0:
            order = torch.randperm(num_train, generator=generator)
        yield order[position * global_batch : (position + 1) * global_batch]


def train_data_parallel(rank: int, world_size: int, model: nn.Module, data: Dataset, *, steps: int, lr: float,
                        per_rank_batch: int, seed: int = 0, eval_every: int = 50, momentum: float = 0.0,
                        ddp: bool = True) -> DataParallelHistory:
    """Minibatch SGD of ``model`` on ``data`` on this rank, gradients averaged by ``DistributedDataParallel``.

    Run it on every rank (``Workers.run(train_data_parallel, model, data, ...)``). Each step draws
    one global batch of ``world_size · per_rank_batch`` examples in the order of
    :func:`normlab.train.train` with the same ``seed``, and rank r takes rows
    r·per_rank_batch … (r+1)·per_rank_batch − 1 of it. So with SyncBatchNorm (or no BN) the run
    follows one-process training on the global batch step for step; with plain BatchNorm each rank
    normalizes its own slice. Cross-entropy, plain SGD; the test set is evaluated in eval mode on
    every rank at step 0, every ``eval_every`` steps and at the end. ``ddp=False`` trains each rank
    alone (no gradient averaging), for measuring the cost of synchronization.
    Chapter ``12_batchnorm_at_scale``.
    """
    if per_rank_batch < 1 or world_size * per_rank_batch > len(data.x_train):
        raise ValueError(f"per_rank_batch must lie in 1..{len(data.x_train) // world_size} for {world_size} ranks "
                         f"and {len(data.x_train)} training examples; got {per_rank_batch}.")
    net = nn.parallel.DistributedDataParallel(model) if ddp and world_size > 1 else model
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    losses = np.full(steps, np.nan)
    eval_steps, accuracies = [], []

    def evaluate(step: int) -> None:
        accuracies.append(train.evaluate(model, data)[1])  # the module itself, not its DDP wrapper
        eval_steps.append(step)

    start = time.perf_counter()
    model.train()
    evaluate(0)
    # own loop: one rank's share of a data-parallel run (its slice of each global batch, the loss of that slice,
    # gradients averaged by DDP); train.train's loop knows no ranks, and its evaluation would run through DDP.
    for step, batch in enumerate(_global_batches(len(data.x_train), world_size * per_rank_batch, steps, seed), 1):
        mine = batch[rank * per_rank_batch : (rank + 1) * per_rank_batch]
        loss = F.cross_entropy(net(data.x_train[mine]), data.y_train[mine])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step - 1] = loss.item()
        if step % eval_every == 0 or step == steps:
            evaluate(step)
    return DataParallelHistory(loss=losses, eval_steps=np.asarray(eval_steps), test_accuracy=np.asarray(accuracies),
                               seconds=time.perf_counter() - start,
                               state={k: v.detach().clone() for k, v in model.state_dict().items()})


def all_ranks_equal(values: Sequence[Any]) -> bool:
    """True when every rank returned the same arrays (for checks on the page)."""
    first = values[0]
    return all(np.array_equal(np.asarray(first), np.asarray(v)) for v in values[1:])
