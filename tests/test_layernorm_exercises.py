"""The checkers of the LayerNorm chapter: references pass, each known mistake is named."""

import numpy as np
import pytest

from normlab import functional as F
from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import layernorm as check


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)


def ln_forward(x, g, b, e):
    mu, var = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    return g * (x - mu) / np.sqrt(var + e) + b


def ln_backward(dout, x, g, e):
    return F.layer_norm_backward(dout, F.layer_norm_forward(x, g, np.zeros_like(g), e)[1])


def gn_forward(x, groups, g, b, e):
    n = x.shape[0]
    grouped = x.reshape(n, groups, -1)
    xhat = ((grouped - grouped.mean(2, keepdims=True)) / np.sqrt(grouped.var(2, keepdims=True) + e)).reshape(x.shape)
    return g.reshape(1, -1, 1, 1) * xhat + b.reshape(1, -1, 1, 1)


def rms_forward(x, g, e):
    return g * x / np.sqrt((x ** 2).mean(1, keepdims=True) + e)


def test_reference_solutions_pass_every_checker():
    assert check.layernorm_forward(ln_forward).passed
    assert check.layernorm_backward(ln_backward).passed
    assert check.groupnorm_forward(gn_forward).passed
    assert check.rmsnorm_forward(rms_forward).passed


def test_rmsnorm_reference_matches_torch():
    import torch
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((5, 7)), rng.uniform(0.5, 2, 7)
    layer = torch.nn.RMSNorm(7, eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(g))
        expected = layer(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(rms_forward(x, g, 1e-5), expected, rtol=1e-12)


def _interleaved(x, groups, g, b, e):
    n, c, h, w = x.shape
    y = x.reshape(n, c // groups, groups, h * w).transpose(0, 2, 1, 3).reshape(n, groups, -1)
    y = (y - y.mean(2, keepdims=True)) / np.sqrt(y.var(2, keepdims=True) + e)
    y = y.reshape(n, groups, c // groups, h * w).transpose(0, 2, 1, 3).reshape(x.shape)
    return g.reshape(1, -1, 1, 1) * y + b.reshape(1, -1, 1, 1)


def _gamma_outside(dout, x, g, e):
    std = np.sqrt(x.var(1, keepdims=True) + e)
    xhat = (x - x.mean(1, keepdims=True)) / std
    dx = g / std * (dout - dout.mean(1, keepdims=True) - xhat * (dout * xhat).mean(1, keepdims=True))
    return dx, (dout * xhat).sum(0), dout.sum(0)


@pytest.mark.parametrize("checker, wrong, words", [
    (check.layernorm_forward, lambda x, g, b, e: g * (x - x.mean(0)) / np.sqrt(x.var(0) + e) + b, "BatchNorm"),
    (check.layernorm_forward, lambda x, g, b, e: g * (x - x.mean(1, keepdims=True))
     / np.sqrt(x.var(1, ddof=1, keepdims=True) + e) + b, "unbiased"),
    (check.layernorm_forward, lambda x, g, b, e: g * (x - x.mean(1, keepdims=True))
     / (x.std(1, keepdims=True) + e) + b, "inside the square root"),
    (check.layernorm_forward, lambda x, g, b, e: (x - x.mean(1, keepdims=True))
     / np.sqrt(x.var(1, keepdims=True) + e), "γ·x̂ + β"),
    (check.layernorm_backward, _gamma_outside, "factored γ out"),
    (check.layernorm_backward, lambda dout, x, g, e: (g * dout / np.sqrt(x.var(1, keepdims=True) + e),
                                                       (dout * (x - x.mean(1, keepdims=True))
                                                        / np.sqrt(x.var(1, keepdims=True) + e)).sum(0),
                                                       dout.sum(0)), "constants"),
    (check.groupnorm_forward, lambda x, G, g, b, e: g.reshape(1, -1, 1, 1) * (x - x.mean((2, 3), keepdims=True))
     / np.sqrt(x.var((2, 3), keepdims=True) + e) + b.reshape(1, -1, 1, 1), "InstanceNorm"),
    (check.groupnorm_forward, lambda x, G, g, b, e: g.reshape(1, -1, 1, 1) * (x - x.mean((1, 2, 3), keepdims=True))
     / np.sqrt(x.var((1, 2, 3), keepdims=True) + e) + b.reshape(1, -1, 1, 1), "LayerNorm"),
    (check.groupnorm_forward, _interleaved, "interleave"),
    (check.rmsnorm_forward, lambda x, g, e: g * (x - x.mean(1, keepdims=True))
     / np.sqrt(x.var(1, keepdims=True) + e), "LayerNorm"),
    (check.rmsnorm_forward, lambda x, g, e: g * x / np.sqrt(x.var(1, keepdims=True) + e), "root mean square"),
    (check.rmsnorm_forward, lambda x, g, e: g * x / (np.sqrt((x ** 2).mean(1, keepdims=True)) + e),
     "inside the square root"),
])
def test_known_mistake_is_named(checker, wrong, words):
    result = checker(wrong)
    assert not result.passed and words in " ".join(result.messages)


def test_every_listed_mistake_fails_on_some_checker_case():
    """A listed mistake that agrees with the reference on every case would pass the checker."""
    for checker_name in check.__all__:
        exercise = getattr(check, checker_name).exercise
        cases = exercise.cases(np.random.default_rng(exercise.seed))
        for mistake in exercise.mistakes:
            differs = []
            for case in cases:
                got, want = mistake.implementation(*case.args), exercise.reference(*case.args)
                got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
                differs.append(not all(np.allclose(a, b, rtol=exercise.rtol, atol=exercise.atol)
                                       for a, b in zip(got, want)))
            assert any(differs), (checker_name, mistake.name)
