"""The checker's guarantees against hostile or unlucky student code: limits enforced from
outside, shortcuts refused by name, verdicts that the student's process cannot decide, hints
in tiers, and the generic diagnoses (order, batch reduction, length, ε)."""

from __future__ import annotations

import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_F

from normlab import functional as F
from normlab.exercises import (
    STRICT_ENV_VAR,
    Case,
    Exercise,
    check_pickled,
    reset_attempts,
    run_check,
)
from normlab.exercises._isolation import pickle_function


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch):
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)
    reset_attempts()


def _forward(x, gamma, beta, eps):
    return F.batch_norm_forward(x, gamma, beta, eps)[0]


def _bn_cases(rng):
    return [Case((rng.normal(size=(n, 3)) * 0.05, rng.uniform(0.5, 2, 3), rng.uniform(-1, 1, 3), 0.01))
            for n in (4, 7)]


BN = Exercise(
    name="bn_forward", reference=_forward, cases=_bn_cases, eps_argument="eps",
    forbidden=("normlab.functional.batch_norm_forward", "torch.nn.functional.batch_norm",
               "torch.batch_norm"),
    hint=("Equation (2.1) of the chapter.", "Per feature: centre, divide by the standard deviation, scale, shift."),
    time_limit=1.0,
)


def written_by_hand(x, gamma, beta, eps):
    centred = x - x.mean(axis=0)
    return gamma * centred / np.sqrt((centred**2).mean(axis=0) + eps) + beta


def message_of(result):
    assert not result.passed
    return result.messages[0]


# --------------------------------------------------------------------------- limits from outside


def test_a_loop_that_swallows_every_exception_is_stopped_from_outside():
    def never_ends(x, gamma, beta, eps):
        while True:
            try:
                time.sleep(0.01)
            except BaseException:
                pass

    start = time.monotonic()
    result = run_check(BN, never_ends)
    assert result.status == "timed out" and "took longer than 1 s" in message_of(result)
    assert time.monotonic() - start < 8
    assert not multiprocessing.active_children()


def test_a_process_that_exits_hard_is_reported_as_crashed():
    result = run_check(BN, lambda x, gamma, beta, eps: os._exit(3))
    assert result.status == "crashed" and "exit code 3" in message_of(result)


def test_the_students_process_cannot_change_the_verdict():
    def forger(x, gamma, beta, eps):
        import normlab.exercises._diagnosis as diagnosis
        import normlab.exercises.checker as checker

        diagnosis._judge = lambda *args, **kwargs: None
        checker._outcome_failure = lambda *args, **kwargs: None
        return np.zeros_like(x)

    assert not run_check(BN, forger).passed
    assert run_check(BN, written_by_hand).passed  # and the checker here is intact


def test_print_output_of_the_students_function_reaches_the_notebook(capsys):
    def chatty(x, gamma, beta, eps):
        print("shape", x.shape)
        return written_by_hand(x, gamma, beta, eps)

    assert run_check(BN, chatty).passed
    assert "shape (4, 3)" in capsys.readouterr().out


# --------------------------------------------------------------------------- shortcuts


@pytest.mark.parametrize("shortcut, name", [
    (lambda x, g, b, e: F.batch_norm_forward(x, g, b, e)[0], "normlab.functional.batch_norm_forward"),
    (lambda x, g, b, e: torch_F.batch_norm(torch.as_tensor(x), None, None, torch.as_tensor(g),
                                           torch.as_tensor(b), training=True, eps=e),
     "torch.nn.functional.batch_norm"),
    (lambda x, g, b, e: torch.nn.BatchNorm1d(3, eps=e, dtype=torch.float64)(torch.as_tensor(x)),
     "torch.nn.functional.batch_norm"),
    (lambda x, g, b, e: torch.batch_norm(torch.as_tensor(x), torch.as_tensor(g), torch.as_tensor(b),
                                         None, None, True, 0.1, e, False), "torch.batch_norm"),
    (lambda x, g, b, e: _forward(x, g, b, e), "normlab.functional.batch_norm_forward"),
], ids=["normlab", "torch-functional", "torch-module", "torch-builtin", "via-a-helper"])
def test_calling_the_implementation_the_exercise_asks_for_is_refused_by_name(shortcut, name):
    result = run_check(BN, shortcut)
    assert f"you called `{name}`" in message_of(result)


def test_an_aliased_import_of_the_implementation_is_still_refused():
    from normlab.functional import batch_norm_forward as my_own_bn

    result = run_check(BN, lambda x, g, b, e: my_own_bn(x, g, b, e)[0])
    assert "you called `normlab.functional.batch_norm_forward`" in message_of(result)


def test_catching_the_refusal_does_not_hide_it():
    def sneaky(x, g, b, e):
        try:
            return F.batch_norm_forward(x, g, b, e)[0]
        except BaseException:
            return written_by_hand(x, g, b, e)

    assert "you called" in message_of(run_check(BN, sneaky))


def test_the_chapter_reference_is_forbidden_too():
    from normlab.exercises import batchnorm as chapter

    reference = chapter.batchnorm_forward.exercise.reference
    result = chapter.batchnorm_forward(reference)
    assert "you called `normlab.exercises.batchnorm." in message_of(result)


def test_helpers_that_are_not_forbidden_stay_usable():
    def with_torch_helpers(x, g, b, e):
        t = torch.as_tensor(x)
        var, mean = torch.var_mean(t, dim=0, unbiased=False)
        return (torch.as_tensor(g) * (t - mean) / torch.sqrt(var + e) + torch.as_tensor(b)).numpy()

    assert run_check(BN, with_torch_helpers).passed


# --------------------------------------------------------------------------- diagnoses


def test_ignoring_eps_is_named():
    def no_eps(x, gamma, beta, eps):
        return gamma * (x - x.mean(0)) / x.std(0) + beta

    assert "ignores its `eps` argument" in message_of(run_check(BN, no_eps))


def _three(x):
    return x.sum(), (x**2).sum(), x.max()


THREE = Exercise("three", _three, lambda rng: [Case((rng.normal(size=6),))],
                 output_names=("total", "energy", "peak"))


def test_permuted_outputs_are_named_with_their_names():
    message = message_of(run_check(THREE, lambda x: ((x**2).sum(), x.max(), x.sum())))
    assert "wrong order" in message and "(energy, peak, total)" in message
    assert "(total, energy, peak)" in message


def test_a_list_is_as_good_as_a_tuple_and_a_tuple_as_good_as_a_list():
    assert run_check(THREE, lambda x: [x.sum(), (x**2).sum(), x.max()]).passed
    line = Exercise("line", lambda x, y: np.polyfit(x, y, 1),
                    lambda rng: [Case((np.arange(5.0), 2 * np.arange(5.0) + 1))],
                    output_names=("slope", "intercept"))
    assert run_check(line, lambda x, y: (2.0, 1.0)).passed
    assert run_check(line, lambda x, y: [2.0, 1.0]).passed
    assert "reverse order" in message_of(run_check(line, lambda x, y: [1.0, 2.0]))


def _column_sums(x):
    return x.sum(axis=0)


SUMS = Exercise("sums", _column_sums, lambda rng: [Case((rng.normal(size=(5, 3)),))])


def test_a_missing_sum_over_the_batch_is_named():
    assert "reduce over the batch" in message_of(run_check(SUMS, lambda x: x * 1.0))


def _cumulative(n):
    return np.cumsum(np.ones(n))


STEPS = Exercise("steps", _cumulative, lambda rng: [Case((5,))])


def test_an_output_one_element_too_long_is_named():
    message = message_of(run_check(STEPS, lambda n: np.arange(0.0, n + 1)))
    assert "one value too many" in message and "the first value is extra" in message


def test_a_scalar_close_but_wrong_prints_its_relative_error_not_a_ratio_of_one():
    near = Exercise("near", lambda a: a, lambda rng: [Case((1.0,))])
    message = message_of(run_check(near, lambda a: a * (1 + 2e-4)))
    assert "relative error 0.0002" in message and "ratio" not in message


# --------------------------------------------------------------------------- hints and grading


def test_hints_are_revealed_one_tier_per_failed_attempt():
    def wrong(x, gamma, beta, eps):
        return x

    first = run_check(BN, wrong).messages
    assert "Hint 1 of 2: Equation (2.1) of the chapter." in first
    assert not any("Hint 2" in m for m in first)
    second = run_check(BN, wrong).messages
    assert "Hint 2 of 2: Per feature: centre, divide by the standard deviation, scale, shift." in second


def test_a_pickled_function_is_checked_on_other_cases_without_loading_it_here():
    data = pickle_function(written_by_hand)
    assert check_pickled(BN, data, seed=12345).passed
    assert not check_pickled(BN, pickle_function(lambda x, g, b, e: x), seed=12345).passed


def test_bytes_that_are_not_a_function_are_reported_not_raised():
    result = check_pickled(BN, b"not a pickle", seed=1)
    assert result.status == "crashed" and "could not be loaded" in message_of(result)


def test_a_forbidden_class_without_forward_is_refused_through_any_of_its_methods():
    from sklearn.preprocessing import StandardScaler

    scale = Exercise("scale", lambda x: (x - x.mean(0)) / x.std(0), lambda rng: [Case((rng.normal(size=(6, 2)),))],
                     forbidden=("sklearn.preprocessing.StandardScaler",))
    result = run_check(scale, lambda x: StandardScaler().fit_transform(x))
    assert "you called `sklearn.preprocessing.StandardScaler`" in message_of(result)


def test_a_forbidden_decorated_function_is_recognised_by_its_own_code_not_its_wrapper():
    from normlab.exercises._shortcuts import ShortcutGuard

    guard = ShortcutGuard(("normlab.layers.data_dependent_init_",))
    assert len(guard._codes) == 1
    assert all(code.co_name == "data_dependent_init_" for code in guard._codes)


def test_where_no_process_can_start_the_check_runs_in_process_with_the_same_verdicts(monkeypatch):
    monkeypatch.setenv("NORMLAB_CHECK_IN_PROCESS", "1")
    assert run_check(BN, written_by_hand).passed
    assert "ignores its `eps` argument" in message_of(run_check(BN, lambda x, g, b, e: g * (x - x.mean(0)) / x.std(0) + b))
    assert "you called" in message_of(run_check(BN, lambda x, g, b, e: F.batch_norm_forward(x, g, b, e)[0]))
