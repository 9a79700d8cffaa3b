"""The checkers of the WeightNorm chapter: references pass, each known mistake is named."""

import numpy as np
import pytest
import torch

from normlab.exercises import STRICT_ENV_VAR
from normlab.exercises import weightnorm as check
from normlab.layers import WeightNormLinear, data_dependent_init_, weight_norm_grads


@pytest.fixture(autouse=True)
def student_mode(monkeypatch):
    monkeypatch.delenv(STRICT_ENV_VAR, raising=False)


def grads(v, g, grad_w):
    out = weight_norm_grads(torch.from_numpy(v), torch.from_numpy(g), torch.from_numpy(grad_w))
    return tuple(t.numpy() for t in out)


def ddi(v, x):
    layer = WeightNormLinear(v.shape[1], v.shape[0], dtype=torch.float64)
    with torch.no_grad():
        layer.v.copy_(torch.from_numpy(v))
    data_dependent_init_(layer, torch.from_numpy(x), eps=0.0)
    return layer.g.detach().numpy(), layer.bias.detach().numpy()


def predict(norm0, lr, c, k):
    sq = norm0**2
    for _ in range(k):
        sq += (lr * c) ** 2 / sq
    return sq**0.5


def test_library_implementations_pass_every_checker():
    assert check.weight_norm_grads(grads).passed
    assert check.data_dependent_init(ddi).passed
    assert check.predict_norm(predict).passed


def test_a_stub_is_reported_as_not_implemented():
    def stub(v, g, grad_w):
        raise NotImplementedError("write me")

    result = check.weight_norm_grads(stub)
    assert not result.passed and "not implemented" in " ".join(result.messages).lower()


@pytest.mark.parametrize("checker, wrong, words", [
    (check.weight_norm_grads,
     lambda v, g, gw: ((gw * v / np.linalg.norm(v, axis=1, keepdims=True)).sum(1),
                       g[:, None] / np.linalg.norm(v, axis=1, keepdims=True) * gw), "M_w"),
    (check.data_dependent_init,
     lambda v, x: (1 / (x @ v.T).std(0), -(x @ v.T).mean(0) / (x @ v.T).std(0)), "off by ‖v‖"),
    (check.data_dependent_init,
     lambda v, x: (1 / (x @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T).std(0, ddof=1),
                   -(x @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T).mean(0)
                   / (x @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T).std(0, ddof=1)), "ddof=1"),
    (check.predict_norm, lambda n0, lr, c, k: np.sqrt(n0**2 + k * (lr * c) ** 2), "shrinks like 1/‖v_t‖"),
    (check.predict_norm, lambda n0, lr, c, k: n0 + k * lr * c, "quadrature"),
])
def test_known_mistake_is_named(checker, wrong, words):
    result = checker(wrong)
    assert not result.passed and words in " ".join(result.messages)
