"""Checking students' solutions to the coding exercises at the end of each chapter.

A chapter's exercise module describes each coding exercise once, as an
:class:`Exercise`: a reference implementation, a seeded generator of test cases, the
mistakes students commonly make and a hint. It exposes one checker per exercise::

    # src/normlab/exercises/why_normalize.py
    gd_step = make_checker(Exercise(name="gd_step", reference=_gd_step, cases=_cases))

The student writes the function in the notebook and runs the check cell::

    from normlab.exercises import why_normalize as check
    check.gd_step(gd_step)

:func:`run_check` runs the student's function on every case, compares each output with
the reference's and returns a :class:`CheckResult`, which Jupyter shows as a green or
red box. A failure is explained, not just announced: the diagnostic names a known
mistake the output matches, a sign error, a constant factor, a transposed or
broadcast shape, NaNs, an input changed in place, or the line of the student's code
that raised. Only the first failing case is diagnosed (students fix one thing at a
time); the remaining cases are still run, to report how many pass.

Guarantees
----------
* Student code cannot make the checker raise. Exceptions (``SystemExit`` from
  ``sys.exit`` included), wrong return types, ``None``, wrong shapes, NaN, inputs
  changed in place and infinite loops all become a failed result with a message.
  Only ``KeyboardInterrupt`` propagates, so Jupyter's interrupt button still works.
* Every call (student, reference, each known mistake) gets its own deep copy of the
  case's arguments, so none can corrupt another's inputs.
* A stub ``raise NotImplementedError("...")`` (the student edition) is reported as
  "not implemented yet", with the exercise's hint.
* The per-case time limit uses ``SIGALRM`` (``signal.setitimer``) and so works only in
  the main thread on platforms that have it; Jupyter runs cells in the main thread.
  Elsewhere the student's function runs without a limit. The alarm interrupts Python
  code, not a single long call into compiled code. Any previous ``SIGALRM`` handler
  and pending timer are restored afterwards.

Strict mode
-----------
The book's own build executes every check cell with the book's reference solution,
and those must pass. When the environment variable ``NORMLAB_STRICT_CHECKS`` is
``"1"`` at the time :func:`run_check` runs (the Makefile exports it), a failed check
raises ``AssertionError`` carrying the full diagnostic, so the build and the tests
fail loudly. Without the variable, :func:`run_check` never raises.

Used by the exercises at the end of every chapter.
"""

from __future__ import annotations

import copy
import html
import inspect
import os
import re
import reprlib
import signal
import site
import sys
import sysconfig
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

__all__ = [
    "STRICT_ENV_VAR",
    "Case",
    "CheckResult",
    "Exercise",
    "Mistake",
    "make_checker",
    "run_check",
]

STRICT_ENV_VAR = "NORMLAB_STRICT_CHECKS"
"""Environment variable that turns a failed check into an ``AssertionError`` when ``"1"``."""

_NORMLAB_DIR = Path(__file__).resolve().parent.parent
_NUMERIC_KINDS = "biufc"
_REPEAT_ALARM_S = 0.05  # once past the limit, raise again this often, in case code catches it


# --------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class Case:
    """One set of arguments on which the student's function is compared with the reference."""

    args: tuple
    kwargs: dict = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation and what to tell a student whose output matches it."""

    name: str
    implementation: Callable
    message: str


@dataclass(frozen=True)
class Exercise:
    """A coding exercise: a reference, generated cases, known mistakes and a hint.

    ``cases(rng)`` builds the cases from ``np.random.default_rng(seed)``. Outputs are
    compared with ``np.allclose(student, reference, rtol, atol)`` after converting
    tensors, lists and scalars to arrays (tuples elementwise), unless ``compare`` is
    given: ``compare(student_output, expected_output, case)`` receives the converted
    outputs and returns ``None`` when they agree, else a message for the student (for
    outputs that are not unique, such as a whitening matrix up to rotation).
    ``time_limit`` is in seconds per case; ``None`` disables it.
    """

    name: str
    reference: Callable
    cases: Callable[[np.random.Generator], Sequence[Case]]
    mistakes: Sequence[Mistake] = ()
    hint: str = ""
    rtol: float = 1e-6
    atol: float = 1e-8
    compare: Callable[[Any, Any, Case], str | None] | None = None
    time_limit: float | None = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Exercise name must be a non-empty string; got {self.name!r}.")
        for attribute in ("reference", "cases"):
            if not callable(getattr(self, attribute)):
                raise TypeError(f"Exercise {self.name!r}: `{attribute}` must be callable.")
        if self.compare is not None and not callable(self.compare):
            raise TypeError(f"Exercise {self.name!r}: `compare` must be callable or None.")
        mistakes = tuple(self.mistakes)
        if not all(isinstance(m, Mistake) for m in mistakes):
            raise TypeError(f"Exercise {self.name!r}: `mistakes` must hold Mistake objects.")
        object.__setattr__(self, "mistakes", mistakes)
        if self.rtol < 0 or self.atol < 0:
            raise ValueError(f"Exercise {self.name!r}: rtol and atol must be >= 0.")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(
                f"Exercise {self.name!r}: time_limit must be positive seconds or None; "
                f"got {self.time_limit!r}."
            )


@dataclass(repr=False)
class CheckResult:
    """The verdict on one student function; truthy when every case passed.

    ``messages`` holds the diagnostics, most useful first (empty when passed). In
    Jupyter it displays as a green or red box; ``repr`` gives the same as plain text.
    """

    exercise: str
    passed: bool
    cases_passed: int
    cases_total: int
    messages: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def summary(self) -> str:
        """One line: the verdict, the exercise and how many cases passed."""
        if self.passed:
            if self.cases_total == 1:
                return f"✓ {self.exercise}: the 1 case passed"
            return f"✓ {self.exercise}: all {self.cases_total} cases passed"
        if self.cases_total == 0:
            return f"✗ {self.exercise}: not checked"
        return f"✗ {self.exercise}: {self.cases_passed} of {self.cases_total} cases passed"

    def __repr__(self) -> str:
        lines = [self.summary()] + ["  " + m.replace("\n", "\n  ") for m in self.messages]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.passed else "#c62828"
        items = "".join(
            f'<li style="margin:2px 0">{_html_with_code(m)}</li>' for m in self.messages
        )
        body = f'<ul style="margin:4px 0 0 0;padding-left:1.4em">{items}</ul>' if items else ""
        return (
            f'<div class="normlab-check" data-exercise="{html.escape(self.exercise)}" '
            f'data-passed="{str(self.passed).lower()}" data-cases-passed="{self.cases_passed}" '
            f'data-cases-total="{self.cases_total}" style="border:2px solid {colour};'
            f'border-radius:6px;padding:6px 10px;margin:4px 0">'
            f'<div style="font-weight:bold;color:{colour}">{html.escape(self.summary())}</div>'
            f"{body}</div>"
        )


def run_check(exercise: Exercise, student_fn: Callable) -> CheckResult:
    """Run ``student_fn`` on every case of ``exercise`` and diagnose the first failure.

    Never raises because of the student's code (see the module docstring), except
    ``KeyboardInterrupt``; raises ``AssertionError`` on failure in strict mode
    (``NORMLAB_STRICT_CHECKS=1``).
    Used by the exercises at the end of every chapter.
    """
    if not isinstance(exercise, Exercise):
        raise TypeError(f"run_check needs an Exercise; got {type(exercise).__name__}.")
    try:
        result = _check(exercise, student_fn)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # a last line of defence: never fail the student's cell
        message = f"the checker failed unexpectedly ({_exception_line(err)})"
        result = CheckResult(exercise.name, False, 0, 0, [_bug_message(exercise.name, message)])
    if not result.passed and os.environ.get(STRICT_ENV_VAR) == "1":
        raise AssertionError(f"{STRICT_ENV_VAR}=1 and a check failed:\n{result!r}")
    return result


def make_checker(exercise: Exercise) -> Callable[[Callable], CheckResult]:
    """Return ``check(student_fn) -> CheckResult`` for a chapter's exercise module.

    The function is named after the exercise, documents it, and carries the exercise
    as its ``exercise`` attribute so tools can find it.
    Used by the exercises at the end of every chapter.
    """
    if not isinstance(exercise, Exercise):
        raise TypeError(f"make_checker needs an Exercise; got {type(exercise).__name__}.")

    def check(student_fn: Callable) -> CheckResult:
        return run_check(exercise, student_fn)

    check.__name__ = check.__qualname__ = exercise.name
    hint = f"\n\nHint: {exercise.hint}" if exercise.hint else ""
    check.__doc__ = (
        f"Check your implementation of `{exercise.name}` against the reference.\n\n"
        f"Pass the function itself, e.g. `{exercise.name}({exercise.name})`; returns a "
        f"CheckResult that says which cases pass and what is likely wrong.{hint}"
    )
    check.exercise = exercise  # type: ignore[attr-defined]
    return check


# --------------------------------------------------------------------------- running


class _ExerciseBug(Exception):
    """The exercise itself (cases or reference) failed: not the student's fault."""


class _Timeout(BaseException):
    """Raised by the alarm handler; a BaseException so `except Exception` cannot hide it."""


@dataclass(frozen=True)
class _Failure:
    message: str
    stop: bool = False  # do not run further cases (after a timeout)
    extra: tuple[str, ...] = ()


def _check(exercise: Exercise, student_fn: Callable) -> CheckResult:
    """run_check without strict mode."""
    name = exercise.name
    try:
        cases = _generate_cases(exercise)
    except _ExerciseBug as bug:
        return CheckResult(name, False, 0, 0, [_bug_message(name, bug)])
    total = len(cases)
    if not callable(student_fn):
        return CheckResult(name, False, 0, total, [_not_callable_message(name, student_fn)])

    passed, first_failure = 0, None
    for index, case in enumerate(cases):
        label = _case_label(index, total, case, exercise.reference)
        try:
            failure = _run_case(exercise, student_fn, case, label)
        except _ExerciseBug as bug:
            return CheckResult(name, False, passed, total, [_bug_message(name, bug)])
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # a hostile output object; never let it escape
            failure = _Failure(f"{label}: could not examine your output ({_exception_line(err)}).")
        if failure is None:
            passed += 1
            continue
        first_failure = first_failure or failure
        if failure.stop:
            break
    if first_failure is None:
        return CheckResult(name, True, passed, total, [])
    messages = [first_failure.message, *first_failure.extra]
    if exercise.hint:
        messages.append(f"Hint: {exercise.hint}")
    return CheckResult(name, False, passed, total, messages)


def _generate_cases(exercise: Exercise) -> list[Case]:
    try:
        cases = list(exercise.cases(np.random.default_rng(exercise.seed)))
    except Exception as err:
        raise _ExerciseBug(f"generating the cases raised {_exception_line(err)}") from err
    if not cases:
        raise _ExerciseBug("the exercise generates no cases")
    if not all(isinstance(c, Case) for c in cases):
        raise _ExerciseBug("the case generator must return Case objects")
    return cases


def _run_case(exercise: Exercise, student_fn: Callable, case: Case, label: str) -> _Failure | None:
    """Run one case; None when the student's output agrees with the reference's."""
    try:
        expected = _call_on_copy(exercise.reference, case)
    except Exception as err:
        raise _ExerciseBug(f"the reference raised {_exception_line(err)} on {label}") from err
    pristine = _copy_arguments(case)
    args, kwargs = _copy_arguments(case)
    try:
        output = _call_with_time_limit(lambda: student_fn(*args, **kwargs), exercise.time_limit)
    except KeyboardInterrupt:
        raise
    except _Timeout:
        return _Failure(
            f"{label}: took longer than {exercise.time_limit:g} s: is there an infinite loop?",
            stop=True,
        )
    except NotImplementedError as err:
        if _is_stub(err):
            return _not_implemented_failure(exercise, err)
        return _Failure(f"{label}: {_raised_message(err, exercise.reference)}")
    except SystemExit:
        return _Failure(
            f"{label}: your function called `sys.exit()`, which would stop the notebook; "
            "return the result instead."
        )
    except BaseException as err:
        return _Failure(f"{label}: {_raised_message(err, exercise.reference)}")
    mutated = _first_mutation(pristine, (args, kwargs), exercise.reference)
    if mutated is not None:
        return _Failure(
            f"{label}: your function changed its input {mutated} in place; return a new array "
            "instead (e.g. `y = x * c` or `x.copy()` rather than `x *= c`)."
        )
    problem = _judge(exercise, case, output, expected)
    return None if problem is None else _Failure(f"{label}: {problem}")


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


def _not_implemented_failure(exercise: Exercise, err: NotImplementedError) -> _Failure:
    stub_text = _safe_str(err)
    extra = ()
    if stub_text and stub_text != exercise.hint:
        extra = (f"The stub says: {stub_text}",)
    return _Failure(
        f"`{exercise.name}` is not implemented yet: replace the `raise NotImplementedError` "
        "line with your code, then run this check again.",
        extra=extra,
    )


def _raised_message(err: BaseException, reference: Callable) -> str:
    """Exception type, message and where in the student's code it was raised."""
    message = f"your function raised {_exception_line(err)}"
    frame = _student_frame(err)
    if frame is not None:
        where = f"in `{frame.name}`, line {frame.lineno}"
        code = (frame.line or "").strip()
        return f"{message}\n    {where}: `{code}`" if code else f"{message}\n    {where}"
    if isinstance(err, TypeError):
        return f"{message}. Check that your function takes the arguments {_signature(reference)}."
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


def _exception_line(err: BaseException) -> str:
    text = _safe_str(err)
    name = type(err).__name__
    return f"{name}: {_shorten(text, 300)}" if text else name


# --------------------------------------------------------------------------- changed inputs


def _first_mutation(
    pristine: tuple[tuple, dict], used: tuple[tuple, dict], reference: Callable
) -> str | None:
    """Name of the first argument whose contents the student's call changed, quoted."""
    names = _positional_names(reference)
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


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class _Opaque:
    """An output that is not a number, array, tensor or rectangular list."""

    value: Any
    reason: str = ""


def _normalize(value: Any, like: Any = None) -> Any:
    """Tensors, arrays, scalars and lists → ndarray; tuples elementwise; else _Opaque.

    A list becomes a tuple when ``like`` (the normalized expected output) is a tuple.
    """
    if isinstance(value, tuple) or (isinstance(value, list) and isinstance(like, tuple)):
        likes = like if isinstance(like, tuple) else ()
        return tuple(
            _normalize(v, likes[i] if i < len(likes) else None) for i, v in enumerate(value)
        )
    if value is None:
        return None
    return _as_array(value)


def _as_array(value: Any) -> np.ndarray | _Opaque:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (bool, int, float, complex, np.generic)):
        return np.asarray(value)
    if _is_tensor(value):
        return _tensor_to_numpy(value)
    if isinstance(value, (list, tuple)):
        items = [_as_array(v) for v in value]
        if any(isinstance(item, _Opaque) for item in items):
            return _Opaque(value, "a list containing values that are not numbers or arrays")
        try:
            array = np.array(items)
        except (ValueError, TypeError):
            array = None
        if array is None or array.dtype.kind == "O":
            reason = "a list that is not a rectangular array (rows of different lengths?)"
            return _Opaque(value, reason)
        return array
    try:  # other array libraries, pandas; hasattr itself can raise on odd objects
        array = np.asarray(value) if hasattr(value, "__array__") else None
    except Exception:
        return _Opaque(value, f"a `{type(value).__name__}` that cannot be converted to an array")
    if array is not None and array.dtype.kind in _NUMERIC_KINDS:
        return array
    return _Opaque(value)


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # if torch is not imported, nothing is a tensor
    return torch is not None and isinstance(value, torch.Tensor)


def _tensor_to_numpy(tensor: Any) -> np.ndarray | _Opaque:
    try:
        plain = tensor.detach().cpu()
        if plain.layout != sys.modules["torch"].strided:
            plain = plain.to_dense()
        plain = plain.resolve_conj().resolve_neg()
        try:
            return plain.numpy()
        except TypeError:  # dtypes NumPy lacks, e.g. bfloat16
            return plain.double().numpy()
    except Exception:
        return _Opaque(tensor, "a torch tensor that cannot be converted to NumPy")


def _judge(exercise: Exercise, case: Case, output: Any, expected: Any) -> str | None:
    """None if the output agrees with the expected one, else the diagnosis."""
    if expected is None:
        if output is None:
            return None
        return f"returned {_describe(output)}, but nothing (None) was expected."
    if output is None:
        return "returned None: did you forget `return`?"
    want = _normalize(expected)
    got = _normalize(output, like=want)
    problem = _difference(exercise, case, got, want)
    if problem is None:
        return None
    for mistake in exercise.mistakes:
        if _matches_mistake(exercise, case, got, want, mistake):
            return mistake.message
    return problem


def _matches_mistake(exercise: Exercise, case: Case, got: Any, want: Any, mistake: Mistake) -> bool:
    try:
        wrong = _normalize(_call_on_copy(mistake.implementation, case), like=want)
    except Exception:  # the mistake may not apply to this case
        return False
    return wrong is not None and _difference(exercise, case, got, wrong) is None


def _difference(exercise: Exercise, case: Case, got: Any, want: Any) -> str | None:
    """None if ``got`` agrees with ``want`` (both normalized), else a diagnosis."""
    problem = _structure_problem(got, want)
    if problem is not None:
        return problem
    if exercise.compare is None:
        return _value_problem(got, want, exercise.rtol, exercise.atol)
    try:
        verdict = exercise.compare(got, want, case)
    except Exception as err:
        return f"your output could not be compared with the expected one ({_exception_line(err)})."
    return None if verdict is None else str(verdict)


def _structure_problem(got: Any, want: Any, where: str = "") -> str | None:
    """Type and tuple-length problems, recursively; shapes and values are not looked at."""
    prefix = f"element {where} of the returned tuple: " if where else ""
    if isinstance(want, tuple):
        if not isinstance(got, tuple):
            return f"{prefix}returned {_describe(got)}, expected a tuple of {len(want)} values."
        if len(got) != len(want):
            return f"{prefix}returned a tuple of {len(got)} values, expected {len(want)}."
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _structure_problem(g, w, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if isinstance(want, np.ndarray) and want.dtype.kind in _NUMERIC_KINDS:
        if isinstance(got, np.ndarray) and got.dtype.kind in _NUMERIC_KINDS:
            return None
        return f"{prefix}returned {_describe(got)}, expected {_describe(want)}."
    if not _equal_objects(got, want):
        return f"{prefix}returned {_describe(got)}, expected {_describe(want)}."
    return None


def _equal_objects(got: Any, want: Any) -> bool:
    try:
        if isinstance(got, np.ndarray) and isinstance(want, np.ndarray):
            return got.shape == want.shape and bool(np.array_equal(got, want))
        raw_got = got.value if isinstance(got, _Opaque) else got
        raw_want = want.value if isinstance(want, _Opaque) else want
        return type(raw_got) is type(raw_want) and bool(raw_got == raw_want)
    except Exception:
        return False


def _value_problem(got: Any, want: Any, rtol: float, atol: float, where: str = "") -> str | None:
    """Shapes, non-finite values and values of structurally equal normalized outputs."""
    if isinstance(want, tuple):
        for i, (g, w) in enumerate(zip(got, want)):
            problem = _value_problem(g, w, rtol, atol, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if not isinstance(want, np.ndarray) or want.dtype.kind not in _NUMERIC_KINDS:
        return None  # compared for equality in _structure_problem
    prefix = f"element {where} of the returned tuple: " if where else ""
    problem = _array_problem(got, want, rtol, atol)
    return None if problem is None else prefix + problem


def _array_problem(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    if got.shape != want.shape:
        return _shape_message(got, want, rtol, atol)
    g, w = _as_float(got), _as_float(want)
    with np.errstate(all="ignore"):
        bad = ~np.isfinite(g) & np.isfinite(w)
        if bad.any():
            return _nonfinite_message(g, bad)
        if np.allclose(g, w, rtol=rtol, atol=atol, equal_nan=True):
            return None
        return _value_message(got, g, w, rtol, atol)


def _as_float(a: np.ndarray) -> np.ndarray:
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def _shape_message(got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str:
    message = f"returned shape {got.shape}, expected shape {want.shape}"
    if got.squeeze().shape == want.squeeze().shape:
        return (
            f"{message}: they differ only by an axis of size 1. Check `keepdims=True`, "
            "indexing with `[:, None]`, or broadcasting; `reshape` to the expected shape."
        )
    if got.ndim == 2 and got.shape == want.shape[::-1]:
        exact = np.allclose(_as_float(got).T, _as_float(want), rtol=rtol, atol=atol, equal_nan=True)
        detail = "is exactly the transpose of the expected one" if exact else "looks transposed"
        return f"{message}: your output {detail}. Check the order of a matrix product, or a `.T`."
    if got.ndim == want.ndim and sorted(got.shape) == sorted(want.shape):
        return (
            f"{message}: the same axes in a different order. Check a transpose or an "
            "`axis` argument."
        )
    if got.size > want.size and got.ndim > want.ndim:
        return (
            f"{message}: more values than expected. Broadcasting may have combined arrays of "
            "shapes like (n,) and (n, 1) into an (n, n) result."
        )
    if got.size == 1 and want.size > 1:
        return f"{message}: a single value. Did you reduce over every axis instead of one `axis`?"
    return f"{message}. Check the `axis` of each reduction and the shapes of intermediate results."


def _nonfinite_message(g: np.ndarray, bad: np.ndarray) -> str:
    n_nan = int(np.count_nonzero(np.isnan(g) & bad))
    n_inf = int(np.count_nonzero(np.isinf(g) & bad))
    counts = " and ".join(
        text for text in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else "") if text
    )
    first = _index_text(np.unravel_index(int(np.argmax(bad)), bad.shape))
    return (
        f"your output has {counts} value{'s' if n_nan + n_inf > 1 else ''} where the expected "
        f"output is finite (the first{first}). Look for a division by zero, a log or sqrt "
        "of a negative number, or an overflow."
    )


def _value_message(
    original: np.ndarray, g: np.ndarray, w: np.ndarray, rtol: float, atol: float
) -> str:
    """Name the pattern of a same-shape, finite but wrong output."""

    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))

    w_is_zero = close(w, np.zeros_like(w))
    if g.size > 1 and not w_is_zero and np.all(g == 0):
        return "your output is all zeros, but the expected one is not."
    if not w_is_zero and close(g, -w):
        return (
            "your output is the negative of the expected one: look for a sign error "
            "(`a - b` instead of `b - a`?)."
        )
    if g.ndim == 2 and g.shape[0] == g.shape[1] > 1 and close(g, w.T):
        return (
            "your output is the transpose of the expected one. Check the order of a "
            "matrix product, or a `.T`."
        )
    if g.size > 1 and not w_is_zero and g.dtype.kind == "f":
        k = float(np.vdot(w, g) / np.vdot(w, w))
        if abs(k - 1) > 1e-3 and close(g, k * w):  # k ≈ 1 is a precision problem
            return (
                f"your output is off by a constant factor ≈ {k:.4g} "
                f"(yours = {k:.4g} × expected)."
            )
        b = float(np.mean(g - w))
        if abs(b) > 1e-3 * np.abs(w).max() and close(g, w + b):
            return f"your output is off by a constant ≈ {b:.4g} (yours = expected + {b:.4g})."
    return _generic_value_message(original, g, w, rtol, atol)


def _generic_value_message(
    original: np.ndarray, g: np.ndarray, w: np.ndarray, rtol: float, atol: float
) -> str:
    """How many values are wrong, the worst one, and the largest errors."""
    wrong = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
    error = np.abs(g - w)
    ranking = np.where(wrong, np.nan_to_num(error, nan=np.inf), -1.0)
    worst = np.unravel_index(int(np.argmax(ranking)), g.shape)
    yours, theirs = g[worst], w[worst]
    if g.size == 1:
        ratio = yours / theirs if theirs != 0 else np.nan
        real_ratio = np.isfinite(ratio) and ratio.imag == 0
        about = f" (ratio {float(ratio.real):.4g})" if real_ratio else ""
        return f"wrong value: yours is {_number(yours)}, expected {_number(theirs)}{about}."
    n_wrong, finite = int(wrong.sum()), wrong & np.isfinite(error)
    nonzero = finite & (w != 0)
    relative = float((error[nonzero] / np.abs(w[nonzero])).max()) if nonzero.any() else np.inf
    details = [f"max absolute error {_number(error[finite].max())}"] if finite.any() else []
    details += [f"max relative error {_number(relative)}"] if nonzero.any() else []
    message = (
        f"{n_wrong} of {g.size} values {'differs' if n_wrong == 1 else 'differ'} from the "
        f"expected ones; the largest difference is{_index_text(worst)}: yours "
        f"{_number(yours)}, expected {_number(theirs)}"
        + (f" ({', '.join(details)})" if details else "")
        + f". Tolerance: rtol={rtol:g}, atol={atol:g}."
    )
    low_precision = original.dtype in (np.float16, np.float32) and w.dtype == np.float64
    if low_precision and relative < 1e-2:
        message += f" Your output is {original.dtype}: compute in float64 for this precision."
    return message


# --------------------------------------------------------------------------- formatting


def _case_label(index: int, total: int, case: Case, reference: Callable) -> str:
    about = case.description or _summarize_arguments(case, reference)
    return f"case {index + 1} of {total}" + (f" ({about})" if about else "")


def _summarize_arguments(case: Case, reference: Callable) -> str:
    names = _positional_names(reference)
    parts = [
        f"{names[i] if i < len(names) else f'arg{i + 1}'}={_summarize(v)}"
        for i, v in enumerate(case.args)
    ]
    parts += [f"{key}={_summarize(v)}" for key, v in case.kwargs.items()]
    return ", ".join(parts)


def _summarize(value: Any) -> str:
    if isinstance(value, np.ndarray) or _is_tensor(value):
        kind = "array" if isinstance(value, np.ndarray) else "tensor"
        return f"{kind} of shape {tuple(value.shape)}"
    if isinstance(value, (bool, int, float, np.generic)):
        return _number(value)
    return _short_repr(value)


def _positional_names(fn: Callable) -> list[str]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in parameters if p.kind in positional]


def _signature(fn: Callable) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "of the exercise"


def _describe(value: Any) -> str:
    """A short phrase for a student's output: 'a str 'abc'', 'an array of shape (3,) ...'."""
    if isinstance(value, _Opaque):
        return value.reason or _describe(value.value)
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _NUMERIC_KINDS:
            return f"an array of {value.dtype} (not numbers)"
        if value.ndim == 0:
            return f"a number ({_number(value[()])})"
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} values"
    return f"a `{type(value).__name__}` ({_short_repr(value)})"


def _not_callable_message(name: str, value: Any) -> str:
    return (
        f"expected your function, but got {_describe(_normalize(value))}, which cannot be "
        f"called. Pass the function itself, without calling it: `{name}({name})`, not "
        f"`{name}({name}(...))`."
    )


def _bug_message(name: str, bug: _ExerciseBug | str) -> str:
    return (
        f"the checker for `{name}` is broken: {bug}. This is a bug in normbook, not in "
        "your code."
    )


def _number(value: Any) -> str:
    try:
        return f"{value:.6g}"
    except (TypeError, ValueError):
        return _short_repr(value)


def _index_text(index: tuple) -> str:
    return f" at index [{', '.join(str(int(i)) for i in index)}]" if len(index) else ""


def _short_repr(value: Any) -> str:
    limits = reprlib.Repr()
    limits.maxstring = limits.maxother = 60
    try:
        return limits.repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return ""


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _html_with_code(message: str) -> str:
    """Escape a message for HTML, showing `backticked` spans as code."""
    escaped = html.escape(message).replace("\n", "<br>")
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
