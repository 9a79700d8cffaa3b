"""Running student code safely, for :mod:`normlab.exercises.checker`.

Every call gets its own deep copy of a case's arguments; the student's call runs
under a ``SIGALRM`` time limit; an exception is reported with the line of the
student's code that raised it; and the arguments are compared afterwards with a
pristine copy to catch inputs changed in place.
"""

from __future__ import annotations

import copy
import os
import signal
import site
import sysconfig
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from normlab.exercises._outputs import _as_array, _is_tensor
from normlab.exercises._text import _exception_line

from normlab.exercises._spec import Case

_NORMLAB_DIR = Path(__file__).resolve().parent.parent
_REPEAT_ALARM_S = 0.05  # once past the limit, raise again this often, in case code catches it


class _ExerciseBug(Exception):
    """The exercise itself (cases or reference) failed: not the student's fault."""


class _Timeout(BaseException):
    """Raised by the alarm handler; a BaseException so `except Exception` cannot hide it."""


# --------------------------------------------------------------------------- running


def _copy_arguments(case: Case) -> tuple[tuple, dict]:
    try:
        return copy.deepcopy(tuple(case.args)), copy.deepcopy(dict(case.kwargs))
    except Exception as err:
        problem = f"the case arguments cannot be deep-copied ({_exception_line(err)})"
        raise _ExerciseBug(problem) from err


def _call_on_copy(fn: Callable, case: Case) -> Any:
    args, kwargs = _copy_arguments(case)
    return fn(*args, **kwargs)


def _call_with_time_limit(fn: Callable[[], Any], limit: float | None) -> Any:
    """Call ``fn()``, raising _Timeout if it runs longer than ``limit`` seconds.

    Uses SIGALRM, so the limit applies only in the main thread; once the limit has
    passed the alarm repeats every few milliseconds until the call gives up, in case
    the code catches the first one. The previous handler and timer are restored.
    """
    if limit is None or not _alarm_available():
        return fn()
    state = {"armed": False, "fired": False}

    def on_alarm(signum: int, frame: Any) -> None:
        if state["armed"]:
            state["fired"] = True
            raise _Timeout

    try:
        previous = signal.signal(signal.SIGALRM, on_alarm)
    except (ValueError, OSError):  # not the main thread of the main interpreter
        return fn()
    old_timer, start = (0.0, 0.0), time.monotonic()
    try:
        state["armed"] = True
        old_timer = signal.setitimer(signal.ITIMER_REAL, limit, min(_REPEAT_ALARM_S, limit))
        try:
            output = fn()
        except (KeyboardInterrupt, _Timeout):
            raise
        except BaseException:
            if state["fired"]:  # the code caught the alarm and raised something else
                raise _Timeout from None
            raise
        if state["fired"]:  # the code caught the alarm and finished late
            raise _Timeout
        return output
    finally:
        state["armed"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        if previous is not None:  # None: set outside Python; ours is now harmless
            signal.signal(signal.SIGALRM, previous)
        if old_timer[0] > 0:
            remaining = max(old_timer[0] - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, old_timer[1])


def _alarm_available() -> bool:
    return (
        hasattr(signal, "setitimer")
        and hasattr(signal, "SIGALRM")
        and threading.current_thread() is threading.main_thread()
    )


# --------------------------------------------------------------------------- exceptions


def _raised_message(err: BaseException, signature: str) -> str:
    """Exception type, message and where in the student's code it was raised."""
    message = f"your function raised {_exception_line(err)}"
    frame = _student_frame(err)
    if frame is not None:
        where = f"in `{frame.name}`, line {frame.lineno}"
        code = (frame.line or "").strip()
        return f"{message}\n    {where}: `{code}`" if code else f"{message}\n    {where}"
    if isinstance(err, TypeError):
        return f"{message}. Check that your function takes the arguments {signature}."
    return message


def _is_stub(err: NotImplementedError) -> bool:
    """Whether the student's own code raised it (a stub), not a library they called.

    Compiled code raises from the calling line, so the raising line must be a `raise`.
    """
    try:
        innermost = traceback.extract_tb(err.__traceback__)[-1]
    except Exception:
        return True
    if _is_library_file(innermost.filename, _library_dirs()):
        return False
    return not innermost.line or innermost.line.lstrip().startswith("raise")


def _student_frame(err: BaseException) -> traceback.FrameSummary | None:
    """The innermost traceback frame in the student's code (not normlab, not a library)."""
    try:
        frames = traceback.extract_tb(err.__traceback__)
    except Exception:
        return None
    library = _library_dirs()
    for frame in reversed(frames):
        if not _is_library_file(frame.filename, library):
            return frame
    return None


def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = [paths.get(key, "") for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    try:
        dirs += [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # some embedded interpreters lack these
        pass
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def _is_library_file(filename: str, library: tuple[str, ...]) -> bool:
    if filename.startswith("<frozen"):
        return True
    if filename.startswith("<"):  # <ipython-input-...>, <string>: the student's code
        return False
    path = os.path.realpath(filename)
    return path.startswith(str(_NORMLAB_DIR) + os.sep) or path.startswith(library)


# --------------------------------------------------------------------------- changed inputs


def _first_mutation(
    pristine: tuple[tuple, dict], used: tuple[tuple, dict], names: list[str]
) -> str | None:
    """Name of the first argument whose contents the student's call changed, quoted.

    ``names`` are the positional parameter names of the exercise's function.
    """
    (old_args, old_kwargs), (new_args, new_kwargs) = pristine, used
    labelled = [
        (names[i] if i < len(names) else None, i, old, new)
        for i, (old, new) in enumerate(zip(old_args, new_args))
    ]
    for name, i, old, new in labelled:
        path = _changed_path(old, new, name or "")
        if path is not None:
            return f"`{path}`" if name else f"argument {i + 1}{path}"
    for key, old in old_kwargs.items():
        path = _changed_path(old, new_kwargs.get(key), key)
        if path is not None:
            return f"`{path}`"
    return None


def _changed_path(old: Any, new: Any, path: str) -> str | None:
    """``path`` (extended into containers) of the first difference, or None."""
    if isinstance(old, np.ndarray) or _is_tensor(old):
        return None if _same_array(old, new) else path
    if isinstance(old, (list, tuple)):
        if not isinstance(new, type(old)) or len(new) != len(old):
            return path
        for i, (a, b) in enumerate(zip(old, new)):
            found = _changed_path(a, b, f"{path}[{i}]")
            if found is not None:
                return found
    if isinstance(old, dict):
        if not isinstance(new, dict) or new.keys() != old.keys():
            return path
        for key in old:
            found = _changed_path(old[key], new[key], f"{path}[{key!r}]")
            if found is not None:
                return found
    return None


def _same_array(old: Any, new: Any) -> bool:
    if type(old) is not type(new):
        return False
    a, b = _as_array(old), _as_array(new)
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        return True  # cannot tell; do not accuse
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
