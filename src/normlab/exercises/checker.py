"""Checking students' solutions to the coding exercises at the end of each chapter.

A chapter's exercise module describes each coding exercise once, as an
:class:`Exercise` (:mod:`normlab.exercises._spec`): a reference implementation, a seeded
generator of test cases, the mistakes students commonly make, hints in tiers, and the
implementations the student may not call. It exposes one checker per exercise::

    # src/normlab/exercises/why_normalize.py
    gd_step = make_checker(Exercise(name="gd_step", reference=_gd_step, cases=_cases))

The student writes the function in the notebook and runs the check cell::

    from normlab.exercises import why_normalize as check
    check.gd_step(gd_step)

:func:`run_check` computes the reference's output on every case, runs the student's
function on the same cases **in a child process** (:mod:`normlab.exercises._isolation`),
compares each output with the reference's and returns a :class:`CheckResult`, which
Jupyter shows as a green or red box. A failure is explained, not just announced: the
diagnostic names a known mistake the output matches, ε ignored, outputs in the wrong
order, a missing sum over the batch, a length off by one, a sign error, a constant
factor, a transposed or broadcast shape, NaNs, an input changed in place, a call to the
implementation the exercise asks for, or the line of the student's code that raised. Only
the first failing case is diagnosed (students fix one thing at a time); the remaining
cases are still run, to report how many pass. Each failed attempt reveals one more tier of
the exercise's hint.

Guarantees
----------
* The student's code runs in its own process, started from a clean fork server; the
  time limit is enforced from outside (the process is killed), so no loop, however it
  catches exceptions, can hang the check, and a crash (``os._exit``, a segfault) is
  reported as such. The child sends back only plain data (arrays, numbers, strings) and
  the verdict is computed here, so nothing the student's code does can decide it.
* While the student's function runs, the implementations the exercise asks for (and the
  exercise's own reference) are unavailable: a call raises at once and is reported by
  name (:mod:`normlab.exercises._shortcuts`).
* Every call gets its own copy of the case's arguments; an input changed in place is
  reported.
* A stub ``raise NotImplementedError("...")`` (the student edition) is reported as
  "not implemented yet".
* Where no child process can start (Windows, or ``NORMLAB_CHECK_IN_PROCESS=1``), the same
  check runs in this process with a ``SIGALRM`` time limit, which code that catches every
  exception can defeat; everything else is the same.

Strict mode
-----------
The book's own build executes every check cell with the book's reference solution,
and those must pass. When the environment variable ``NORMLAB_STRICT_CHECKS`` is
``"1"`` at the time :func:`run_check` runs (the Makefile exports it), a failed check
raises ``AssertionError`` carrying the full diagnostic, so the build and the tests
fail loudly. Without the variable, :func:`run_check` never raises.

Layout
------
* :mod:`normlab.exercises._spec`: :class:`Case`, :class:`Mistake`, :class:`Exercise`.
* :mod:`normlab.exercises._isolation` and :mod:`normlab.exercises._child`: the child process.
* :mod:`normlab.exercises._shortcuts`: the forbidden implementations.
* :mod:`normlab.exercises._sandbox`: copies of arguments, the student's line in a traceback,
  inputs changed in place, and the in-process time limit used where processes cannot start.
* :mod:`normlab.exercises._outputs`: converting outputs to NumPy for comparison.
* :mod:`normlab.exercises._diagnosis`: comparing an output with the expected one.
* :mod:`normlab.exercises._text`: formatting: case labels, numbers, HTML.

Used by the exercises at the end of every chapter.
"""

from __future__ import annotations

import html
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from normlab.exercises._child import Job, Outcome
from normlab.exercises._diagnosis import _judge
from normlab.exercises._isolation import Crashed, TimedOut, run_in_child
from normlab.exercises._outputs import _normalize
from normlab.exercises._sandbox import _call_on_copy, _ExerciseBug
from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises._text import (
    _case_label,
    _describe,
    _exception_line,
    _html_with_code,
    _positional_names,
    _signature,
)

__all__ = [
    "STRICT_ENV_VAR",
    "Case",
    "CheckResult",
    "Exercise",
    "Mistake",
    "check_pickled",
    "make_checker",
    "reset_attempts",
    "run_check",
]

STRICT_ENV_VAR = "NORMLAB_STRICT_CHECKS"
"""Environment variable that turns a failed check into an ``AssertionError`` when ``"1"``."""

STATUSES = ("passed", "failed", "timed out", "crashed")
"""What :attr:`CheckResult.status` can be; grading adds ``missing``."""

_attempts: Counter[str] = Counter()  # failed attempts per exercise in this process: the hint tier


@dataclass(repr=False)
class CheckResult:
    """The verdict on one student function; truthy when every case passed.

    ``status`` is one of :data:`STATUSES`. ``messages`` holds the diagnostics, most
    useful first (empty when passed). In Jupyter it displays as a green or red box;
    ``repr`` gives the same as plain text.
    """

    exercise: str
    passed: bool
    cases_passed: int
    cases_total: int
    messages: list[str] = field(default_factory=list)
    status: str = ""

    def __post_init__(self) -> None:
        if not self.status:
            self.status = "passed" if self.passed else "failed"

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
    ``KeyboardInterrupt`` from Jupyter's interrupt button; raises ``AssertionError`` on
    failure in strict mode (``NORMLAB_STRICT_CHECKS=1``).
    Used by the exercises at the end of every chapter.
    """
    if not isinstance(exercise, Exercise):
        raise TypeError(f"run_check needs an Exercise; got {type(exercise).__name__}.")
    result = _guarded(lambda: _check(exercise, student_fn), exercise.name)
    if not result.passed and not _is_stub_result(result):
        _attempts[exercise.name] += 1
        result.messages += _hint_messages(exercise, _attempts[exercise.name])
    if not result.passed and os.environ.get(STRICT_ENV_VAR) == "1":
        raise AssertionError(f"{STRICT_ENV_VAR}=1 and a check failed:\n{result!r}")
    return result


def check_pickled(exercise: Exercise, function_bytes: bytes, seed: int | None = None) -> CheckResult:
    """Check a function pickled elsewhere (a submission's kernel), on cases drawn from ``seed``.

    The bytes are loaded only in the child process, never here; with a ``seed`` other than
    the exercise's, the cases differ from those the student saw. No hints, never strict.
    Used by :mod:`normlab.grading`.
    """
    return _guarded(lambda: _check(exercise, None, function_bytes, seed), exercise.name)


def reset_attempts(name: str | None = None) -> None:
    """Forget the failed attempts (all, or one exercise's), so hints start again from the first tier."""
    if name is None:
        _attempts.clear()
    else:
        _attempts.pop(name, None)


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
    returns = f"\n\n{exercise.returns}" if exercise.returns else ""
    check.__doc__ = (
        f"Check your implementation of `{exercise.name}` against the reference.\n\n"
        f"Pass the function itself, e.g. `{exercise.name}({exercise.name})`; returns a "
        f"CheckResult that says which cases pass and what is likely wrong.{returns}"
    )
    check.exercise = exercise  # type: ignore[attr-defined]
    return check


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class _Failure:
    message: str
    status: str = "failed"
    stop: bool = False  # do not run further cases (a timeout or crash ends the child)
    extra: tuple[str, ...] = ()


def _guarded(check: Callable[[], CheckResult], name: str) -> CheckResult:
    try:
        return check()
    except KeyboardInterrupt:
        raise
    except _ExerciseBug as bug:
        return CheckResult(name, False, 0, 0, [_bug_message(name, bug)])
    except BaseException as err:  # a last line of defence: never fail the student's cell
        message = f"the checker failed unexpectedly ({_exception_line(err)})"
        return CheckResult(name, False, 0, 0, [_bug_message(name, message)])


def _check(
    exercise: Exercise, student_fn: Callable | None, function_bytes: bytes | None = None,
    seed: int | None = None,
) -> CheckResult:
    """run_check without hints and strict mode."""
    name = exercise.name
    cases = _generate_cases(exercise, exercise.seed if seed is None else seed)
    total = len(cases)
    if function_bytes is None and not callable(student_fn):
        return CheckResult(name, False, 0, total, [_not_callable_message(name, student_fn)])
    expected = [_reference_output(exercise, case, i, total) for i, case in enumerate(cases)]
    job = Job(name, cases, _positional_names(exercise.reference), _signature(exercise.reference),
              _forbidden(exercise))
    outcomes = run_in_child(student_fn, job, exercise.time_limit, function_bytes)
    try:
        ready = next(outcomes)
        if not (isinstance(ready, Outcome) and ready.kind == "ready"):
            failure = _outcome_failure(exercise, "loading your function", ready, None, None)
            return CheckResult(name, False, 0, total, [failure.message], failure.status)
        passed, first = 0, None
        for index, case in enumerate(cases):
            label = _case_label(index, total, case, exercise.reference)
            outcome = next(outcomes, Crashed(None))
            failure = _outcome_failure(exercise, label, outcome, case, expected[index])
            if failure is None:
                passed += 1
                continue
            first = first or failure
            if failure.stop:
                break
    finally:
        outcomes.close()
    if first is None:
        return CheckResult(name, True, passed, total, [])
    return CheckResult(name, False, passed, total, [first.message, *first.extra], first.status)


def _generate_cases(exercise: Exercise, seed: int) -> list[Case]:
    try:
        cases = list(exercise.cases(np.random.default_rng(seed)))
    except Exception as err:
        raise _ExerciseBug(f"generating the cases raised {_exception_line(err)}") from err
    if not cases:
        raise _ExerciseBug("the exercise generates no cases")
    if not all(isinstance(c, Case) for c in cases):
        raise _ExerciseBug("the case generator must return Case objects")
    return cases


def _reference_output(exercise: Exercise, case: Case, index: int, total: int) -> Any:
    try:
        return _call_on_copy(exercise.reference, case)
    except Exception as err:
        label = _case_label(index, total, case, exercise.reference)
        raise _ExerciseBug(f"the reference raised {_exception_line(err)} on {label}") from err


def _forbidden(exercise: Exercise) -> tuple[str, ...]:
    """The exercise's forbidden implementations, and its reference when that is normlab's."""
    reference = exercise.reference
    qualname, module = getattr(reference, "__qualname__", ""), getattr(reference, "__module__", "") or ""
    ours = module.startswith("normlab.") and qualname and "<" not in qualname
    own = (f"{module}.{qualname}",) if ours else ()
    return (*own, *exercise.forbidden)


def _outcome_failure(
    exercise: Exercise, label: str, outcome: Outcome | TimedOut | Crashed, case: Case | None,
    expected: Any,
) -> _Failure | None:
    """None when the case passed, else what went wrong."""
    if isinstance(outcome, TimedOut):
        return _Failure(
            f"{label}: took longer than {outcome.limit:g} s and was stopped: is there an infinite "
            "loop (or a loop that catches every exception)?", "timed out", stop=True)
    if isinstance(outcome, Crashed):
        code = "" if outcome.exitcode is None else f" (exit code {outcome.exitcode})"
        return _Failure(
            f"{label}: the process running your function died{code}: it called `os._exit`, "
            "crashed the interpreter or ran out of memory.", "crashed", stop=True)
    if outcome.printed:
        sys.stdout.write(outcome.printed if outcome.printed.endswith("\n") else outcome.printed + "\n")
    kind = outcome.kind
    if kind == "returned":
        if outcome.mutated is not None:
            return _Failure(
                f"{label}: your function changed its input {outcome.mutated} in place; return a new "
                "array instead (e.g. `y = x * c` or `x.copy()` rather than `x *= c`).")
        problem = _judge(exercise, case, outcome.output, expected)
        return None if problem is None else _Failure(f"{label}: {problem}")
    if kind == "stub":
        return _not_implemented_failure(exercise, outcome.message)
    if kind == "shortcut":
        return _Failure(
            f"{label}: you called `{outcome.message}`, which is what this exercise asks you to "
            "write: it is unavailable while the check runs. Write it yourself from the chapter's "
            "equations; elementary operations (sums, means, square roots, matrix products) are fine.")
    if kind == "exit":
        return _Failure(f"{label}: your function called `sys.exit()`, which would stop the notebook; "
                        "return the result instead.")
    if kind == "unloadable":
        return _Failure(f"{label}: {outcome.message}.", "crashed", stop=True)
    return _Failure(f"{label}: {outcome.message}")


# --------------------------------------------------------------------------- messages


def _not_implemented_failure(exercise: Exercise, stub_text: str) -> _Failure:
    extra = (f"The stub says: {stub_text}",) if stub_text else ()
    return _Failure(
        f"`{exercise.name}` is not implemented yet: replace the `raise NotImplementedError` "
        "line with your code, then run this check again.",
        extra=extra,
    )


def _is_stub_result(result: CheckResult) -> bool:
    return bool(result.messages) and "is not implemented yet" in result.messages[0]


def _hint_messages(exercise: Exercise, attempts: int) -> list[str]:
    """The hint tiers earned after ``attempts`` failed checks: one more per failure."""
    hints = exercise.hints
    if not hints:
        return []
    shown = hints[: min(attempts, len(hints))]
    if len(hints) == 1:
        return [f"Hint: {hints[0]}"]
    messages = [f"Hint {i + 1} of {len(hints)}: {text}" for i, text in enumerate(shown)]
    if len(shown) < len(hints):
        messages.append("(If the next check fails too, it shows the next hint.)")
    return messages


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
