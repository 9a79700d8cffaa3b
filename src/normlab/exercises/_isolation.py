"""Running a student's function in a child process, with limits enforced from outside.

:func:`run_in_child` pickles the student's function by value (cloudpickle), starts a child
process from a clean fork server (numpy, torch and the checker preloaded, so a start
costs milliseconds, and no thread of the notebook's kernel is copied), and reads one
:class:`~normlab.exercises._child.Outcome` per case through a pipe, waiting at most the
exercise's time limit for each. A child that runs past it is killed, whatever its code
catches; one that dies is reported as crashed. A function that cloudpickle cannot pickle
(it refers to an open file, a lock, ...) is run in a plain ``fork`` of this process instead.

Students' code can therefore neither hang, crash nor fool the process that judges it: the
parent compares the outputs with the reference itself (:mod:`normlab.exercises.checker`).
"""

from __future__ import annotations

import io
import linecache
import multiprocessing
import multiprocessing.spawn
import os
import pickle
import threading
import types
import site
import sys
import sysconfig
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from normlab.exercises._child import Job, Outcome, loads, serve
from normlab.exercises._text import _exception_line

__all__ = ["Crashed", "TimedOut", "pickle_function", "run_in_child"]

STARTUP_LIMIT_S = 60.0
"""Seconds allowed to start the child and load the function (a cold fork server imports torch)."""

_PRELOAD = ["numpy", "torch", "cloudpickle", "normlab.exercises._child"]


@dataclass(frozen=True)
class TimedOut:
    """The child ran past its limit on a case and was killed."""

    limit: float


@dataclass(frozen=True)
class Crashed:
    """The child died without reporting (a segfault, ``os._exit``, memory)."""

    exitcode: int | None


def pickle_function(function: Callable) -> bytes:
    """``function`` pickled by value, with what it refers to and the source lines of its code.

    Functions of installed packages (numpy, torch, normlab) stay references; the student's
    own module (``__main__``, a test file, a ``.py`` next to the notebook) is pickled by value,
    keeping each code object's file name, and the lines of those files (from ``linecache``,
    where Jupyter keeps its cells) travel along, so a traceback in the child can quote the
    student's line. Raises what cloudpickle raises when the function cannot be pickled.
    """
    import cloudpickle

    module = sys.modules.get(getattr(function, "__module__", None) or "")
    by_value = module is not None and module.__name__ != "__main__" and not _installed(module)
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        buffer = io.BytesIO()
        pickler = _SourceKeepingPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dump(function)
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)
    sources = {}
    for filename in pickler.filenames:
        lines = linecache.getlines(filename)
        if lines:
            sources[filename] = list(lines)
    return pickle.dumps((buffer.getvalue(), sources), protocol=pickle.HIGHEST_PROTOCOL)


def _pickler_class() -> type:
    import cloudpickle
    from cloudpickle import cloudpickle as implementation

    class SourceKeepingPickler(cloudpickle.Pickler):
        """cloudpickle's pickler, except that code objects keep their file name."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.filenames: set[str] = set()
            # set before Pickler.__init__, which is where the C pickler reads it
            self.dispatch_table = {**cloudpickle.Pickler.dispatch_table, types.CodeType: self._code_reduce}
            super().__init__(*args, **kwargs)

        def _code_reduce(self, code: types.CodeType) -> Any:
            constructor, args = implementation._code_reduce(code)
            self.filenames.add(code.co_filename)
            args = list(args)
            args[args.index("<dynamic-code>")] = code.co_filename
            return constructor, tuple(args)

    return SourceKeepingPickler


class _LazyPickler:
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _pickler_class()(*args, **kwargs)


_SourceKeepingPickler = _LazyPickler()


def _installed(module: Any) -> bool:
    path = getattr(module, "__file__", None)
    if not path:
        return True  # built-in modules
    path = os.path.realpath(path)
    roots = [sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    try:
        roots += site.getsitepackages()
    except AttributeError:
        pass
    normlab_root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    roots.append(normlab_root)
    return any(root and path.startswith(os.path.realpath(root) + os.sep) for root in roots)


def _forkserver() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def run_in_child(
    function: Callable | None, job: Job, limit: float, function_bytes: bytes | None = None
) -> Iterator[Outcome | TimedOut | Crashed]:
    """Yield the outcome of each case of ``job`` as the child reports it.

    Give the function itself, or ``function_bytes`` (pickled by :func:`pickle_function`
    elsewhere, e.g. in a submission's kernel: then the bytes are only ever loaded in the
    child). The first item is an ``Outcome("ready")`` or the reason there is none.
    The child is killed on the way out, however the iteration ends.
    """
    if not _processes_available():
        if function is None:
            raise RuntimeError("this platform cannot start the child process that a pickled function needs")
        yield from _run_in_process(function, job, limit)
        return
    job_bytes = _pickle_job(job)
    fork_function = None
    if function_bytes is None:
        try:
            function_bytes = pickle_function(function)
        except Exception:  # unpicklable globals: fork this process instead
            fork_function = function
    if fork_function is None:
        context, args = _forkserver(), (function_bytes, job_bytes)
    else:
        context, args = multiprocessing.get_context("fork"), (None, job_bytes, fork_function)
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=serve, args=(send, *args), daemon=True)
    try:
        _start_without_main(process)
        send.close()
        yield _receive(receive, process, STARTUP_LIMIT_S)
        for _ in job.cases:
            outcome = _receive(receive, process, limit)
            yield outcome
            if not isinstance(outcome, Outcome):
                return
    finally:
        receive.close()
        _stop(process)


_start_lock = threading.Lock()


def _start_without_main(process: Any) -> None:
    """Start ``process`` without re-importing ``__main__`` in it.

    multiprocessing re-runs the parent's main script in a forkserver or spawn child (to
    find functions defined there); the student's function is pickled by value and needs
    none of it, and a script without an ``if __name__ == "__main__"`` guard would run again.
    """
    original = multiprocessing.spawn.get_preparation_data

    def without_main(name: str) -> dict:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    with _start_lock:
        multiprocessing.spawn.get_preparation_data = without_main
        try:
            process.start()
        finally:
            multiprocessing.spawn.get_preparation_data = original


def _processes_available() -> bool:
    """Whether a fork server can run here (not on Windows, nor where NORMLAB_CHECK_IN_PROCESS=1)."""
    if os.environ.get("NORMLAB_CHECK_IN_PROCESS") == "1":
        return False
    return "forkserver" in multiprocessing.get_all_start_methods()


def _run_in_process(function: Callable, job: Job, limit: float) -> Iterator[Outcome | TimedOut]:
    """The fallback where no child process can start: the same cases in this process.

    The time limit then uses SIGALRM (main thread, POSIX only) and cannot stop code that
    catches every exception; shortcuts are still refused.
    """
    from normlab.exercises._child import _run_case
    from normlab.exercises._sandbox import _call_with_time_limit, _Timeout
    from normlab.exercises._shortcuts import ShortcutGuard

    guard = ShortcutGuard(job.forbidden)
    yield Outcome("ready")
    for case in job.cases:
        try:
            yield _call_with_time_limit(lambda: _run_case(function, case, job, guard), limit)
        except _Timeout:
            yield TimedOut(limit)
            return


def _pickle_job(job: Job) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)


def _receive(connection: Any, process: Any, limit: float) -> Outcome | TimedOut | Crashed:
    try:
        if not connection.poll(limit):
            return TimedOut(limit)
        return loads(connection.recv_bytes())
    except (EOFError, OSError):
        process.join(timeout=5)
        return Crashed(process.exitcode)
    except pickle.UnpicklingError as err:
        return Outcome("raised", message=f"your function's process sent something unexpected ({_exception_line(err)})")


def _stop(process: Any) -> None:
    if process.is_alive():
        process.kill()
    process.join(timeout=10)
    try:
        process.close()
    except ValueError:  # still running after kill + join: leave it to the OS
        pass
