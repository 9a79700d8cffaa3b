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

Layout
------
This module holds the public API and runs the check, one case after another. The
work is done by private helpers, each a small module:

* :mod:`normlab.exercises._sandbox`: running student code safely: a deep copy of the
  arguments for every call, the ``SIGALRM`` time limit, the student's line in a
  traceback, and detecting inputs changed in place.
* :mod:`normlab.exercises._outputs`: converting outputs (tensors, arrays, scalars,
  lists, tuples elementwise) to NumPy for comparison.
* :mod:`normlab.exercises._diagnosis`: comparing an output with the expected one and
  every diagnostic message about it (shape, non-finite values, sign, constant
  factor, known mistakes, generic).
* :mod:`normlab.exercises._text`: formatting: case labels, short reprs, numbers,
  exception lines and the HTML of a result.

Used by the exercises at the end of every chapter.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from normlab.exercises._diagnosis import _judge
from normlab.exercises._outputs import _normalize
from normlab.exercises._sandbox import (
    _call_on_copy,
    _call_with_time_limit,
    _copy_arguments,
    _ExerciseBug,
    _first_mutation,
    _is_stub,
    _raised_message,
    _Timeout,
)
from normlab.exercises._text import (
    _case_label,
    _describe,
    _exception_line,
    _html_with_code,
    _safe_str,
)

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


# --------------------------------------------------------------------------- messages


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
