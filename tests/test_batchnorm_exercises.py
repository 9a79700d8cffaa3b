"""The checkers of the BatchNorm chapter: references pass, each known mistake is named."""

import numpy as np
import pytest

from normlab import functional as F
from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import batchnorm as check


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)


def forward(x, g, b, e):
    return F.batch_norm_forward(x, g, b, e)[0]


def backward(dout, x, g, e):
    return F.batch_norm_backward(dout, F.batch_norm_forward(x, g, np.zeros_like(g), e)[1])


def running(rm, rv, x, mo):
    return (1 - mo) * rm + mo * x.mean(0), (1 - mo) * rv + mo * x.var(0, ddof=1)


def fold(w, b, g, be, m, v, e):
    s = g / np.sqrt(v + e)
    return s[:, None] * w, s * (b - m) + be


def test_reference_solutions_pass_every_checker():
    assert check.batchnorm_forward(forward).passed
    assert check.batchnorm_backward(backward).passed
    assert check.update_running_stats(running).passed
    assert check.fold_batchnorm(fold).passed
    assert check.batchnorm2d_forward(forward).passed


def test_backward_checker_recognises_the_incomplete_course_notes_gradient():
    def naive(dout, x, g, e):
        return F.batch_norm_backward_naive(dout, F.batch_norm_forward(x, g, np.zeros_like(g), e)[1])

    result = check.batchnorm_backward(naive)
    assert not result.passed
    assert "incomplete gradient" in " ".join(result.messages)


@pytest.mark.parametrize("checker, wrong, words", [
    (check.batchnorm_forward, lambda x, g, b, e: g * (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + e) + b, "unbiased"),
    (check.batchnorm_forward, lambda x, g, b, e: g * (x - x.mean(0)) / (x.std(0) + e) + b, "inside the square root"),
    (check.batchnorm_forward, lambda x, g, b, e: (x - x.mean(0)) / np.sqrt(x.var(0) + e), "γ·x̂ + β"),
    (check.batchnorm_forward, lambda x, g, b, e: g * (x - x.mean(1, keepdims=True))
     / np.sqrt(x.var(1, keepdims=True) + e) + b, "LayerNorm"),
    (check.update_running_stats, lambda rm, rv, x, mo: ((1 - mo) * rm + mo * x.mean(0), (1 - mo) * rv + mo * x.var(0)),
     "m/(m − 1)"),
    (check.update_running_stats, lambda rm, rv, x, mo: (mo * rm + (1 - mo) * x.mean(0), mo * rv + (1 - mo) * x.var(0, ddof=1)),
     "Keras"),
    (check.fold_batchnorm, lambda w, b, g, be, m, v, e: ((g / np.sqrt(v + e))[:, None] * w, b - m + be), "passes through"),
    (check.batchnorm2d_forward, lambda x, g, b, e: g[None, :, None, None] * (x - x.mean((2, 3), keepdims=True))
     / np.sqrt(x.var((2, 3), keepdims=True) + e) + b[None, :, None, None], "InstanceNorm"),
    (check.batchnorm2d_forward, lambda x, g, b, e: g[None, :, None, None] * (x - x.mean(0, keepdims=True))
     / np.sqrt(x.var(0, keepdims=True) + e) + b[None, :, None, None], "each pixel"),
])
def test_known_mistake_is_named(checker, wrong, words):
    result = checker(wrong)
    assert not result.passed and words in " ".join(result.messages)
