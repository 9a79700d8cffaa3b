"""Properties every coding exercise's checker must have, whatever its chapter: its cases test something
(no expected value below the absolute tolerance; ε changes every case by far more than the tolerance), its
forbidden implementations exist and are recognised by their own code, and it has a `returns` text and hints
in tiers. The chapter's zoo (tests/test_<chapter>_exercises.py) then tests the diagnoses."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pytest

import normlab.exercises
from normlab.exercises._shortcuts import resolve


def _checkers():
    found = []
    for info in pkgutil.iter_modules(normlab.exercises.__path__):
        if info.name.startswith("_") or info.name == "checker":
            continue
        module = importlib.import_module(f"normlab.exercises.{info.name}")
        found += [getattr(module, name) for name in getattr(module, "__all__", [])
                  if hasattr(getattr(module, name), "exercise")]
    return found


CHECKERS = _checkers()
IDS = [f"{c.__module__.rsplit('.', 1)[-1]}.{c.exercise.name}" for c in CHECKERS]
EPS_CHECKERS = [c for c in CHECKERS if c.exercise.eps_argument]


def _cases(exercise):
    return list(exercise.cases(np.random.default_rng(exercise.seed)))


def _parts(output):
    return output if isinstance(output, (tuple, list)) else (output,)


def test_every_exercise_module_is_found():
    assert len(CHECKERS) >= 38


@pytest.mark.parametrize("checker", CHECKERS, ids=IDS)
def test_no_case_expects_a_value_below_the_absolute_tolerance(checker):
    exercise = checker.exercise
    if exercise.compare is not None:
        pytest.skip("compared by the exercise's own rule")
    for case in _cases(exercise):
        for part in _parts(exercise.reference(*case.args, **case.kwargs)):
            values = np.abs(np.asarray(part, dtype=float))
            exact_zero = (values == 0) & (exercise.atol == 0)  # with atol 0, a 0 must be met exactly: not vacuous
            assert values.size and np.all((values > 100 * exercise.atol) | exact_zero), \
                f"{exercise.name}: {case.description}"


@pytest.mark.parametrize("checker", EPS_CHECKERS, ids=[f"{c.exercise.name}" for c in EPS_CHECKERS])
def test_ignoring_eps_changes_some_case_by_far_more_than_the_tolerance(checker):
    """So the automatic "ε ignored" diagnosis has a case to fire on (chapter 2's zoo asks more: every case)."""
    exercise = checker.exercise
    position = list(inspect.signature(exercise.reference).parameters).index(exercise.eps_argument)
    excesses = []
    for case in _cases(exercise):
        args = list(case.args)
        right = exercise.reference(*args, **case.kwargs)
        args[position] = 0.0
        ignored = exercise.reference(*args, **case.kwargs)
        excess = max(np.max(np.abs(np.asarray(r) - np.asarray(w)) / (exercise.atol + exercise.rtol * np.abs(r)))
                     for r, w in zip(_parts(right), _parts(ignored)))
        excesses.append(excess)
    assert max(excesses) > 100, f"{exercise.name}: ignoring ε changes no case by more than {max(excesses):.3g}× the tolerance"


@pytest.mark.parametrize("checker", CHECKERS, ids=IDS)
def test_every_forbidden_implementation_exists_and_is_recognised_by_its_own_code(checker):
    """The guard knows a Python function by its code object; a decorator's wrapper (torch.no_grad()) shares one
    code object with every function it decorates, so the guard unwraps first, and so does this test."""
    for name in checker.exercise.forbidden:
        obj = resolve(name)
        assert callable(obj), f"{name} resolves to {obj!r}, which is not callable"
        is_class = isinstance(obj, type)
        target = getattr(obj, "forward", None) if is_class else inspect.unwrap(obj)
        code = getattr(target, "__code__", None)
        if code is not None and is_class:
            assert code.co_name == "forward", name
        elif code is not None:
            parts = name.split(".")
            expected = parts[-2] if parts[-1] == "fget" else parts[-1]  # a property's getter
            assert code.co_name == expected, f"{name} is a wrapper ({code.co_name})"


@pytest.mark.parametrize("checker", CHECKERS, ids=IDS)
def test_the_checker_says_what_to_return_and_has_hints_in_tiers(checker):
    exercise = checker.exercise
    assert exercise.returns, f"{exercise.name}: say what the function returns (the stub shows it)"
    assert len(exercise.hints) >= 2, f"{exercise.name}: a pointer to the equation, then the idea"
