"""The checkers of chapter "Initialization": references pass, each known mistake is named."""

import math

import numpy as np
import pytest
import torch

from normlab import init
from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import initialization as check


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    """Check as a student would: a failing check reports instead of raising."""
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)


def _he_std(shape, mode):
    receptive = math.prod(shape[2:])
    return math.sqrt(2.0 / (shape[1 if mode == "fan_in" else 0] * receptive))


def _mean_field_step(q, s, phi):
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    return s * np.sum(weights * phi(np.sqrt(q) * nodes) ** 2) / np.sqrt(2 * np.pi)


def test_reference_solutions_pass_every_checker():
    assert check.he_std(_he_std).passed
    assert check.predicted_variance(lambda q0, d, s, a: q0 * (s * (0.5 if a == "relu" else 1.0)) ** d).passed
    assert check.mean_field_step(_mean_field_step).passed
    assert check.residual_stream_variance(lambda q0, b, s: q0 * (1 + s * s) ** np.arange(1, b + 1)).passed


def test_he_std_agrees_with_torch_kaiming_normal():
    gen = torch.Generator().manual_seed(0)
    for shape, mode in [((256, 128, 3, 3), "fan_in"), ((512, 64, 5), "fan_out")]:
        w = init.kaiming_normal_(torch.empty(shape), mode=mode, nonlinearity="relu", generator=gen)
        assert w.std().item() == pytest.approx(check._he_std_reference(shape, mode), rel=0.02)


def test_strict_mode_raises_on_a_wrong_solution(monkeypatch):
    monkeypatch.setenv(STRICT_ENV_VAR, "1")
    with pytest.raises(AssertionError, match="he_std"):
        check.he_std(lambda shape, mode: 1.0)


def test_monte_carlo_mean_field_is_not_accurate_enough():
    def monte_carlo(q, s, phi):
        z = np.random.default_rng(0).standard_normal(1000)
        return s * np.mean(phi(np.sqrt(q) * z) ** 2)

    assert not check.mean_field_step(monte_carlo).passed


@pytest.mark.parametrize("checker, wrong, expected_words", [
    (check.he_std, lambda shape, mode: math.sqrt(2.0 / (shape[1] if mode == "fan_in" else shape[0])), "kernel"),
    (check.he_std, lambda shape, mode: _he_std(shape, "fan_out" if mode == "fan_in" else "fan_in"), "swapped"),
    (check.he_std, lambda shape, mode: _he_std(shape, mode) / math.sqrt(2), "LeCun"),
    (check.he_std, lambda shape, mode: _he_std(shape, mode) ** 2, "square root"),
    (check.predicted_variance, lambda q0, d, s, a: q0 * s**d, "1/2"),
    (check.predicted_variance, lambda q0, d, s, a: q0 * (s * (0.5 if a == "relu" else 1.0)) ** (d - 1), "one short"),
    (check.mean_field_step, lambda q, s, phi: _mean_field_step(q * q, s, phi), "√q"),
    (check.mean_field_step, lambda q, s, phi: math.sqrt(2 * math.pi) * _mean_field_step(q, s, phi), "√(2π)"),
    (check.mean_field_step, lambda q, s, phi: _mean_field_step(q, 1.0, phi), "n·Var[W]"),
    (check.residual_stream_variance, lambda q0, b, s: q0 + q0 * s * s * np.arange(1, b + 1), "compounds"),
    (check.residual_stream_variance, lambda q0, b, s: q0 * (1 + s) ** np.arange(1, b + 1), "s²"),
    (check.residual_stream_variance, lambda q0, b, s: q0 * (1 + s * s) ** np.arange(b), "b = 0"),
])
def test_known_mistake_is_named(checker, wrong, expected_words):
    result = checker(wrong)
    assert not result.passed
    assert expected_words in " ".join(result.messages)


def test_stub_is_reported_as_not_implemented_with_hint():
    def he_std(shape, mode):
        raise NotImplementedError("compute the He standard deviation")

    result = check.he_std(he_std)
    text = " ".join(result.messages).lower()
    assert not result.passed and "not implemented" in text and "fan_in" in text
