"""The process that runs a student's function, and the plain data it sends back.

:mod:`normlab.exercises._isolation` starts a child process whose target is :func:`serve`.
The child loads the student's function (pickled by value with cloudpickle), then for each
case calls it on a fresh copy of the arguments, with the exercise's implementations made
unavailable (:mod:`normlab.exercises._shortcuts`) and ``print`` captured, and sends one
:class:`Outcome` per case through a pipe. An outcome holds only plain data: NumPy arrays,
numbers, strings, lists and tuples. The parent loads it with :func:`loads`, which refuses
anything else, so nothing the student's code does in the child can run code in the parent
or decide a verdict: the parent compares the outputs itself.

For :mod:`normlab.exercises.checker`.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from normlab.exercises._outputs import _Opaque, _is_tensor, _tensor_to_numpy
from normlab.exercises._sandbox import _first_mutation, _is_stub, _raised_message
from normlab.exercises._shortcuts import ShortcutGuard, ShortcutUsed
from normlab.exercises._text import _describe, _exception_line, _safe_str, _shorten

__all__ = ["Job", "Outcome", "dumps", "loads", "serve"]

_PRINT_LIMIT = 2000  # characters of a case's printed output sent back


@dataclass
class Job:
    """What the child needs besides the student's function (pickled by the parent)."""

    name: str
    cases: list
    parameter_names: list[str]
    signature: str
    forbidden: tuple[str, ...]


@dataclass
class Outcome:
    """What happened on one case. ``kind`` is one of:

    ``returned`` (``output`` holds the plain output, ``mutated`` an argument changed in
    place), ``raised`` (``message``), ``stub`` (``message`` is the stub's text), ``exit``
    (``sys.exit`` was called), ``shortcut`` (``message`` names the forbidden function),
    ``unloadable`` (the function could not be loaded in the child; ``message`` says why),
    ``ready`` (the function is loaded; sent once before the cases).
    """

    kind: str
    output: Any = None
    message: str = ""
    mutated: str | None = None
    printed: str = ""
    extra: list = field(default_factory=list)


# --------------------------------------------------------------------------- plain data


def plain(value: Any, depth: int = 0) -> Any:
    """Tensors → arrays; lists and tuples kept (elementwise); anything else → _Opaque with a description."""
    if depth > 20:
        return _Opaque(None, "a structure nested too deeply")
    if value is None or isinstance(value, (bool, int, float, complex, str)):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            return float(value)
        return value
    if isinstance(value, np.generic):
        return np.asarray(value) if value.dtype.kind in "biufc" else _Opaque(None, _describe(value))
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biufc":
            return np.ascontiguousarray(value)
        return _Opaque(None, _describe(value))
    if _is_tensor(value):
        array = _tensor_to_numpy(value)
        return array if isinstance(array, np.ndarray) else _Opaque(None, array.reason)
    if type(value) in (list, tuple):
        return type(value)(plain(v, depth + 1) for v in value)
    try:  # other array libraries, pandas
        array = np.asarray(value) if hasattr(value, "__array__") else None
    except Exception:
        array = None
    if isinstance(array, np.ndarray) and array.dtype.kind in "biufc":
        return np.ascontiguousarray(array)
    return _Opaque(None, _safe_describe(value))


def _safe_describe(value: Any) -> str:
    try:
        return _describe(value)
    except Exception:
        return "an object that cannot be examined"


_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.multiarray", "scalar"),
    ("builtins", "complex"), ("builtins", "slice"),
    ("normlab.exercises._child", "Outcome"), ("normlab.exercises._outputs", "_Opaque"),
}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} from the child process")


def dumps(outcome: Outcome) -> bytes:
    return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Outcome:
    """An Outcome from the child; only plain data is accepted."""
    outcome = _PlainUnpickler(io.BytesIO(data)).load()
    if not isinstance(outcome, Outcome):
        raise pickle.UnpicklingError("the child sent something other than an outcome")
    return outcome


# --------------------------------------------------------------------------- the child


def serve(conn: Any, function_bytes: bytes | None, job_bytes: bytes, function: Any = None) -> None:
    """Entry point of the child: load the function, run every case, send the outcomes."""
    _single_thread()
    import cloudpickle  # noqa: F401  (the pickles below need it importable)

    try:
        job: Job = pickle.loads(job_bytes)
    except BaseException as err:  # the exercise's own data: a bug in normbook
        conn.send_bytes(dumps(Outcome("unloadable", message=f"the cases could not be loaded ({_exception_line(err)})")))
        return
    guard = ShortcutGuard(job.forbidden)
    if function is None:
        captured = _capture()
        try:
            function = _load_function(function_bytes)
        except BaseException as err:
            message = f"your function could not be loaded in the checker's process ({_exception_line(err)})"
            conn.send_bytes(dumps(Outcome("unloadable", message=message, printed=_release(captured))))
            return
        _release(captured)
    conn.send_bytes(dumps(Outcome("ready")))
    for case in job.cases:
        conn.send_bytes(dumps(_run_case(function, case, job, guard)))
    conn.close()


def _load_function(data: bytes) -> Any:
    """The student's function, after putting its source lines where tracebacks look for them."""
    import linecache

    function_bytes, sources = pickle.loads(data)
    for filename, lines in sources.items():
        linecache.cache[filename] = (sum(map(len, lines)), None, lines, filename)
    return pickle.loads(function_bytes)


def _single_thread() -> None:
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _capture() -> tuple[Any, Any, io.StringIO]:
    buffer = io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = buffer
    return old[0], old[1], buffer


def _release(captured: tuple[Any, Any, io.StringIO]) -> str:
    sys.stdout, sys.stderr = captured[0], captured[1]
    return _shorten(captured[2].getvalue(), _PRINT_LIMIT)


def _run_case(function: Any, case: Any, job: Job, guard: ShortcutGuard) -> Outcome:
    import copy

    pristine = copy.deepcopy((tuple(case.args), dict(case.kwargs)))
    args, kwargs = copy.deepcopy((tuple(case.args), dict(case.kwargs)))
    captured = _capture()
    try:
        with guard:
            output = function(*args, **kwargs)
    except ShortcutUsed as used:
        return Outcome("shortcut", message=_safe_str(used), printed=_release(captured))
    except NotImplementedError as err:
        printed = _release(captured)
        if guard.called:
            return Outcome("shortcut", message=guard.called[0], printed=printed)
        if _is_stub(err):
            return Outcome("stub", message=_safe_str(err), printed=printed)
        return Outcome("raised", message=_raised_message(err, job.signature), printed=printed)
    except SystemExit:
        return Outcome("exit", printed=_release(captured))
    except BaseException as err:  # KeyboardInterrupt too: the parent decides what to do
        printed = _release(captured)
        if guard.called:  # the student caught our exception and raised another
            return Outcome("shortcut", message=guard.called[0], printed=printed)
        return Outcome("raised", message=_raised_message(err, job.signature), printed=printed)
    printed = _release(captured)
    if guard.called:  # the student caught ShortcutUsed and carried on
        return Outcome("shortcut", message=guard.called[0], printed=printed)
    try:
        mutated = _first_mutation(pristine, (args, kwargs), job.parameter_names)
        result = plain(output)
        dumps(Outcome("returned", output=result))  # fails here, not in the parent, if it cannot be sent
    except BaseException as err:
        return Outcome("raised", message=f"your output could not be examined ({_exception_line(err)})",
                       printed=printed)
    return Outcome("returned", output=result, mutated=mutated, printed=printed)


def child_pid() -> int:
    """The process id, for tests that check no child is left behind."""
    return os.getpid()
