"""Tests for normlab.exercises.checker: verdicts and diagnostics on right and wrong code."""

from __future__ import annotations

import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from normlab.exercises import (
    STRICT_ENV_VAR,
    Case,
    CheckResult,
    Exercise,
    Mistake,
    make_checker,
    run_check,
)


@pytest.fixture(autouse=True, scope="module")
def _not_strict():
    """The Makefile exports NORMLAB_STRICT_CHECKS=1; these tests fail on purpose."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(STRICT_ENV_VAR, raising=False)
        yield


# --------------------------------------------------------------------------- toy exercises


def scale_vector(x, c):
    return c * x


def _scale_cases(rng):
    return [
        Case((rng.normal(size=5), float(rng.uniform(0.5, 2.0))), description="vector of 5"),
        Case((rng.normal(size=(3, 4)), float(rng.uniform(0.5, 2.0))), description="3x4 matrix"),
        Case((rng.normal(size=4),), {"c": float(rng.uniform(0.5, 2.0))}),
    ]


FORGOT_C = "You returned `x` unchanged: multiply it by `c`."
ADDED_C = "You added `c` to `x`; the exercise asks for the product."
SCALE = Exercise(
    name="scale_vector",
    reference=scale_vector,
    cases=_scale_cases,
    mistakes=[
        Mistake("forgot c", lambda x, c: x, FORGOT_C),
        Mistake("added c", lambda x, c: x + c, ADDED_C),
    ],
    hint="Multiply every entry of x by c.",
)


def mean_and_var(x):
    return x.mean(), x.var()


MEAN_VAR = Exercise(
    name="mean_and_var",
    reference=mean_and_var,
    cases=lambda rng: [Case((rng.normal(size=n),), description=f"{n} samples") for n in (3, 7)],
)


def _up_to_sign(got, want, case):
    if np.allclose(got, want) or np.allclose(got, -want):
        return None
    return "not a unit vector along x (either sign is fine)"


DIRECTION = Exercise(
    name="direction",
    reference=lambda x: x / np.linalg.norm(x),
    cases=lambda rng: [Case((rng.normal(size=4),)) for _ in range(3)],
    compare=_up_to_sign,
)


def check_scale(student, **changes):
    exercise = SCALE if not changes else Exercise(**{**SCALE.__dict__, **changes})
    return run_check(exercise, student)


def only_message(result: CheckResult) -> str:
    assert not result.passed
    assert result.messages, "a failed check must say why"
    return result.messages[0]


# --------------------------------------------------------------------------- passing


def test_reference_solution_passes():
    result = check_scale(scale_vector)
    assert result.passed and bool(result)
    assert (result.cases_passed, result.cases_total) == (3, 3)
    assert result.messages == []


@pytest.mark.parametrize(
    "student",
    [
        lambda x, c: torch.as_tensor(x) * c,
        lambda x, c: torch.as_tensor(x, dtype=torch.float64).requires_grad_() * c,
        lambda x, c: (c * x).tolist(),
        lambda x, c: np.multiply(x, c),
    ],
    ids=["torch-tensor", "tensor-requiring-grad", "nested-list", "np.multiply"],
)
def test_correct_alternative_implementations_pass(student):
    assert check_scale(student).passed


def test_tuple_output_compared_elementwise_and_a_list_is_accepted():
    assert run_check(MEAN_VAR, mean_and_var).passed
    assert run_check(MEAN_VAR, lambda x: [torch.tensor(x.mean()), float(x.var())]).passed
    message = only_message(run_check(MEAN_VAR, lambda x: (x.mean(), x.std())))
    assert "element [1] of the returned tuple" in message


def test_wrong_scalar_reports_both_values_and_their_ratio():
    message = only_message(run_check(MEAN_VAR, lambda x: (2 * x.mean(), x.var())))
    assert message.startswith("case 1 of 2 (3 samples): element [0] of the returned tuple")
    assert "wrong value: yours is" in message and "relative error 1" in message


def test_tuple_of_wrong_length_is_named():
    message = only_message(run_check(MEAN_VAR, lambda x: (x.mean(), x.var(), x.std())))
    assert "tuple of 3 values, expected 2" in message


def test_tuple_returned_where_a_single_array_is_expected_is_named():
    message = only_message(check_scale(lambda x, c: (c * x, c)))
    assert "tuple of 2 values" in message and "expected an array" in message


# --------------------------------------------------------------------------- exceptions


def test_exception_is_reported_with_type_message_and_student_line():
    def buggy(x, c):
        y = c * x
        return y[len(y) + 5]

    message = only_message(check_scale(buggy))
    line = buggy.__code__.co_firstlineno + 2
    assert "IndexError" in message and "out of bounds" in message
    assert f"`buggy`, line {line}" in message
    assert "return y[len(y) + 5]" in message


def test_exception_inside_numpy_points_at_the_student_line_not_numpy():
    def buggy(x, c):
        return x @ np.ones(len(x) + 1) * c

    message = only_message(check_scale(buggy))
    assert "ValueError" in message
    assert f"line {buggy.__code__.co_firstlineno + 1}" in message


def test_not_implemented_stub_is_reported_kindly_with_the_hint():
    def stub(x, c):
        raise NotImplementedError("Multiply every entry of x by c.")

    result = check_scale(stub)
    assert "not implemented yet" in result.messages[0]
    assert "Traceback" not in repr(result)
    assert result.messages[-1] == "The stub says: Multiply every entry of x by c."
    assert not any(m.startswith("Hint") for m in result.messages)  # a stub is not an attempt
    assert result.cases_passed == 0


def test_not_implemented_error_from_a_library_is_a_plain_exception_not_a_stub():
    def uses_unsupported_op(x, c):
        return torch.as_tensor(x).to_sparse().cumsum(0) * c  # not implemented in torch

    message = only_message(check_scale(uses_unsupported_op))
    assert "not implemented yet" not in message
    assert "raised NotImplementedError" in message and "`uses_unsupported_op`" in message


def test_wrong_signature_names_the_expected_arguments():
    message = only_message(check_scale(lambda x: 2 * x))
    assert "TypeError" in message and "(x, c)" in message


def test_sys_exit_is_caught():
    message = only_message(check_scale(lambda x, c: sys.exit(1)))
    assert "sys.exit()" in message


def test_keyboard_interrupt_raised_by_the_student_is_an_error_in_their_process_only():
    def interrupted(x, c):
        raise KeyboardInterrupt

    message = only_message(check_scale(interrupted))
    assert "raised KeyboardInterrupt" in message


def test_non_callable_is_named_with_how_to_pass_a_function():
    message = only_message(check_scale(scale_vector(np.ones(3), 2.0)))
    assert "cannot be called" in message and "scale_vector(scale_vector)" in message
    assert "a number" in only_message(check_scale(3.0))


def test_broken_reference_is_blamed_on_the_exercise_not_the_student():
    def broken(x, c):
        raise ValueError("oops")

    message = only_message(run_check(Exercise("broken", broken, _scale_cases), scale_vector))
    assert "bug in normbook, not in your code" in message and "ValueError: oops" in message


# --------------------------------------------------------------------------- wrong outputs


def test_returning_none_asks_about_return():
    def forgot_return(x, c):
        c * x

    message = only_message(check_scale(forgot_return))
    assert message.endswith("returned None: did you forget `return`?")


@pytest.mark.parametrize(
    "student, kind",
    [(lambda x, c: "c * x", "`str`"), (lambda x, c: {"out": c * x}, "`dict`"),
     (lambda x, c: [[1.0], [1.0, 2.0]], "not a rectangular array")],
    ids=["str", "dict", "ragged-list"],
)
def test_non_numeric_output_names_its_type(student, kind):
    message = only_message(check_scale(student))
    assert kind in message and "expected an array of shape (5,)" in message


def test_extra_size_one_axis_gets_a_broadcasting_hint():
    message = only_message(check_scale(lambda x, c: (c * x)[..., None]))
    assert "returned shape (5, 1), expected shape (5,)" in message
    assert "axis of size 1" in message and "keepdims" in message


def test_transposed_output_is_named_and_other_cases_still_counted():
    result = check_scale(lambda x, c: (c * x).T)  # .T is a no-op on the vector cases
    message = only_message(result)
    assert message.startswith("case 2 of 3 (3x4 matrix)")
    assert "(4, 3), expected shape (3, 4)" in message and "transpose" in message
    assert (result.cases_passed, result.cases_total) == (2, 3)
    assert len(result.messages) == 2  # one diagnosis and the hint: one thing at a time


def test_accidental_broadcast_to_a_larger_array_is_named():
    message = only_message(check_scale(lambda x, c: c * x + 0 * x[..., None]))
    assert "returned shape (5, 5)" in message and "Broadcasting" in message


def test_nan_output_is_counted_and_located():
    def with_nan(x, c):
        out = c * x
        out[2] = np.nan
        return out

    message = only_message(check_scale(with_nan))
    assert "1 NaN value where the expected output is finite" in message
    assert "index [2]" in message and message.startswith("case 1 of 3 (vector of 5)")


def test_sign_error_is_named():
    assert "sign error" in only_message(check_scale(lambda x, c: -c * x))


def test_constant_factor_is_named_with_its_value():
    assert "constant factor ≈ 3" in only_message(check_scale(lambda x, c: 3 * c * x))


def test_constant_offset_is_named_with_its_value():
    assert "off by a constant ≈ 0.25" in only_message(check_scale(lambda x, c: c * x + 0.25))


@pytest.mark.parametrize(
    "student, expected", [(lambda x, c: x, FORGOT_C), (lambda x, c: x + c, ADDED_C)],
    ids=["forgot-c", "added-c"],
)
def test_output_matching_a_known_mistake_gets_its_message(student, expected):
    assert only_message(check_scale(student)) == f"case 1 of 3 (vector of 5): {expected}"


def test_other_wrong_values_report_errors_and_the_case():
    def one_wrong(x, c):
        out = c * x
        out[-1] += 0.5
        return out

    message = only_message(check_scale(one_wrong))
    assert message.startswith("case 1 of 3 (vector of 5)")
    assert "1 of 5 values differs" in message and "index [4]" in message
    assert "max absolute error 0.5" in message and "max relative error" in message


def test_float32_output_that_is_nearly_right_gets_a_precision_note():
    message = only_message(check_scale(lambda x, c: (c * x * (1 + 1e-5)).astype(np.float32)))
    assert "values differ" in message and "Your output is float32" in message


def test_case_without_description_is_labelled_by_its_arguments():
    def wrong_on_kwarg_case(x, c):
        return c * x if x.shape != (4,) else -c * x

    message = only_message(check_scale(wrong_on_kwarg_case))
    assert message.startswith("case 3 of 3 (x=array of shape (4,), c=")


def test_custom_compare_decides_and_is_used_for_known_mistakes():
    assert run_check(DIRECTION, lambda x: -x / np.linalg.norm(x)).passed
    assert only_message(run_check(DIRECTION, lambda x: x)).endswith("either sign is fine)")
    squared = Mistake("squared norm", lambda x: x / np.sum(x**2), "squared")
    with_mistake = Exercise(**{**DIRECTION.__dict__, "mistakes": [squared]})
    assert only_message(run_check(with_mistake, lambda x: -x / np.sum(x**2))).endswith("squared")


# --------------------------------------------------------------------------- changed inputs


def test_mutating_a_numpy_input_fails_and_names_the_argument():
    def in_place(x, c):
        x *= c
        return x

    message = only_message(check_scale(in_place))
    assert "changed its input `x` in place" in message and "return a new array" in message


def test_mutating_a_tensor_input_fails_and_names_the_argument():
    doubling = Exercise("double", lambda t: 2 * t, lambda rng: [Case((torch.randn(3),))])
    message = only_message(run_check(doubling, lambda t: t.mul_(2)))
    assert "changed its input `t` in place" in message


def test_a_mutating_student_cannot_corrupt_the_cases_or_the_reference():
    x = np.arange(1.0, 6.0)
    fixed = Exercise("fixed", scale_vector, lambda rng: [Case((x, 2.0))])

    def in_place(x, c):
        x *= c
        return x

    assert not run_check(fixed, in_place).passed
    np.testing.assert_array_equal(x, np.arange(1.0, 6.0))
    assert run_check(fixed, scale_vector).passed


# --------------------------------------------------------------------------- time limit

needs_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="the time limit uses SIGALRM, which only the main thread receives",
)


def _spin(seconds: float) -> None:
    """A loop that is 'infinite' for the test but ends, so a broken timer fails, not hangs."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


@needs_main_thread
def test_infinite_loop_is_stopped_by_the_time_limit_and_the_old_handler_restored():
    def previous_handler(signum, frame):
        raise AssertionError("the checker's alarm reached the previous handler")

    old = signal.signal(signal.SIGALRM, previous_handler)
    try:
        start = time.monotonic()
        result = check_scale(lambda x, c: _spin(5.0), time_limit=0.2)
        elapsed = time.monotonic() - start
        assert signal.getsignal(signal.SIGALRM) is previous_handler
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    finally:
        signal.signal(signal.SIGALRM, old)
    message = only_message(result)
    assert "took longer than 0.2 s" in message and "infinite loop" in message
    assert elapsed < 1.5  # stopped after the first case instead of timing out on each


@needs_main_thread
def test_time_limit_survives_code_that_swallows_the_first_alarm():
    def swallow(x, c):
        try:
            _spin(5.0)
        except BaseException:
            pass
        _spin(5.0)
        return c * x

    start = time.monotonic()
    message = only_message(check_scale(swallow, time_limit=0.2))
    assert "took longer than 0.2 s" in message and time.monotonic() - start < 1.5


@needs_main_thread
def test_correct_output_delivered_after_swallowing_the_alarm_still_times_out():
    def swallow_then_answer(x, c):
        try:
            _spin(5.0)
        except BaseException:
            pass
        return c * x

    message = only_message(check_scale(swallow_then_answer, time_limit=0.2))
    assert "took longer than 0.2 s" in message


def test_outside_the_main_thread_the_check_runs_without_a_time_limit():
    results = []
    worker = threading.Thread(target=lambda: results.append(check_scale(scale_vector)))
    worker.start()
    worker.join(timeout=10)
    assert results and results[0].passed


# --------------------------------------------------------------------------- strict mode, display


def test_strict_mode_raises_on_failure_with_the_diagnostic(monkeypatch):
    monkeypatch.setenv(STRICT_ENV_VAR, "1")
    with pytest.raises(AssertionError, match="sign error"):
        check_scale(lambda x, c: -c * x)


def test_strict_mode_does_not_raise_on_success(monkeypatch):
    monkeypatch.setenv(STRICT_ENV_VAR, "1")
    assert check_scale(scale_vector).passed


def test_without_strict_mode_a_failure_is_returned_not_raised(monkeypatch):
    monkeypatch.setenv(STRICT_ENV_VAR, "0")
    assert not check_scale(lambda x, c: -c * x).passed


def test_repr_and_html_show_the_verdict():
    good, bad = check_scale(scale_vector), check_scale(lambda x, c: None)
    assert repr(good).startswith("✓ scale_vector: all 3 cases passed")
    assert repr(bad).startswith("✗ scale_vector: 0 of 3 cases passed")
    assert "did you forget" in repr(bad)
    assert "✓" in good._repr_html_() and "#2e7d32" in good._repr_html_()
    html_text = bad._repr_html_()
    assert "✗" in html_text and "#c62828" in html_text and 'data-passed="false"' in html_text
    assert "<code>return</code>" in html_text


def test_html_escapes_student_text():
    message = only_message(check_scale(lambda x, c: "<script>"))
    html_text = check_scale(lambda x, c: "<script>")._repr_html_()
    assert "<script>" in message and "<script>" not in html_text and "&lt;script&gt;" in html_text


def test_make_checker_returns_a_named_documented_checker():
    check = make_checker(SCALE)
    assert check.__name__ == "scale_vector" and "scale_vector" in check.__doc__
    assert check.exercise is SCALE
    assert check(scale_vector).passed and not check(lambda x, c: x).passed


def test_exercise_rejects_invalid_settings():
    with pytest.raises(ValueError, match="time_limit"):
        Exercise("bad", scale_vector, _scale_cases, time_limit=0)
    with pytest.raises(TypeError, match="callable"):
        Exercise("bad", "not a function", _scale_cases)


# --------------------------------------------------------------------------- garbage never crashes


class _Hostile:
    """An output whose every special method fails."""

    def __array__(self, *args, **kwargs):
        raise RuntimeError("no array")

    def __repr__(self):
        raise RuntimeError("no repr")

    def __eq__(self, other):
        raise RuntimeError("no eq")

    def __len__(self):
        raise RuntimeError("no len")

    __hash__ = object.__hash__


class _UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("no str")


_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
    | st.builds(_Hostile)
    | arrays(np.float64, array_shapes(min_dims=0, max_dims=3, max_side=4))
)
_garbage = st.recursive(
    _leaves,
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)
_exception_types = st.sampled_from(
    [ValueError, TypeError, IndexError, ZeroDivisionError, RuntimeError, MemoryError,
     RecursionError, StopIteration, NotImplementedError, SystemExit, GeneratorExit,
     _UnprintableError]
)


def _returning(value):
    return lambda *args, **kwargs: value


def _raising(exception_type):
    def student(*args, **kwargs):
        raise exception_type("garbage")

    return student


@settings(max_examples=80, deadline=None)
@given(
    exercise=st.sampled_from([SCALE, MEAN_VAR, DIRECTION]),
    student=st.one_of(_garbage.map(_returning), _exception_types.map(_raising)),
)
def test_garbage_student_functions_never_crash_the_checker(exercise, student):
    result = run_check(exercise, student)
    assert isinstance(result, CheckResult)
    assert not result.passed and result.messages
    assert repr(result) and result._repr_html_()
    # the diagnosis came from the checks, not from the last-resort safety nets
    assert "could not examine" not in repr(result) and "unexpectedly" not in repr(result)
