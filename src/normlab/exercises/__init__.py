"""Exercises: checkers for the coding exercises at the end of each chapter.

Each chapter has a module here (written with :mod:`normlab.exercises.checker`) whose
functions check a student's solution, e.g. ``why_normalize.gd_step(gd_step)``.
"""

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import (
    STRICT_ENV_VAR,
    CheckResult,
    check_pickled,
    make_checker,
    reset_attempts,
    run_check,
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
