"""The checkers of chapter "Why normalize?": references pass, each known mistake is named."""

import numpy as np
import pytest

from normlab import quadratic
from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import why_normalize as check


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    """Check as a student would: a failing check reports instead of raising."""
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)


def test_strict_mode_raises_on_a_wrong_solution(monkeypatch):
    monkeypatch.setenv(STRICT_ENV_VAR, "1")
    with pytest.raises(AssertionError, match="gd_step"):
        check.gd_step(lambda t, h, m, lr: t)


def test_reference_solutions_pass_every_checker():
    assert check.gd_step(lambda t, h, m, lr: t - lr * h @ (t - m)).passed
    assert check.max_stable_lr(quadratic.max_stable_lr).passed
    assert check.steps_to_tolerance(quadratic.steps_to_tolerance).passed
    assert check.standardize_columns(lambda x: (x - x.mean(0)) / x.std(0)).passed


def test_torch_implementation_of_gd_step_is_accepted():
    import torch

    def gd_step(theta, hessian, minimizer, lr):
        t, h, m = (torch.as_tensor(a) for a in (theta, hessian, minimizer))
        return t - lr * h @ (t - m)

    assert check.gd_step(gd_step).passed


@pytest.mark.parametrize("checker, wrong, expected_words", [
    (check.gd_step, lambda t, h, m, lr: t + lr * h @ (t - m), "uphill"),
    (check.gd_step, lambda t, h, m, lr: t - lr * h @ t, "θ* = 0"),
    (check.gd_step, lambda t, h, m, lr: t - 0.5 * lr * h @ (t - m), "half"),
    (check.max_stable_lr, lambda h: 1 / np.linalg.eigvalsh(h)[-1], "1/λmax"),
    (check.max_stable_lr, lambda h: 2 / np.max(np.diag(h)), "diagonal"),
    (check.max_stable_lr, lambda h: 2 / np.linalg.eigvalsh(h)[0], "smallest eigenvalue"),
    (check.steps_to_tolerance,
     lambda lam, lr, tol: float(np.ceil(np.log(tol) / np.log(abs(1 - lr * np.min(lam))))), "λmin"),
    (check.standardize_columns, lambda x: (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True), "axis=0"),
    (check.standardize_columns, lambda x: x / x.std(0), "mean"),
    (check.standardize_columns, lambda x: (x - x.mean(0)) / x.std(0, ddof=1), "n − 1"),
])
def test_known_mistake_is_named(checker, wrong, expected_words):
    result = checker(wrong)
    assert not result.passed
    assert expected_words in " ".join(result.messages)


def test_stub_is_reported_as_not_implemented_with_hint():
    def gd_step(theta, hessian, minimizer, lr):
        raise NotImplementedError("write one gradient-descent step")

    result = check.gd_step(gd_step)
    text = " ".join(result.messages).lower()
    assert not result.passed and "not implemented" in text and "gradient" in text
