"""normlab.probes.gradient_ics: Santurkar et al.'s Definition 2.1, against two independent computations."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from normlab import models
from normlab.exercises import ics as ics_exercises
from normlab.layers import BatchNorm1d
from normlab.probes import gradient_ics


def two_layer(w1, w2):
    net = nn.Sequential(nn.Linear(w1.shape[1], w1.shape[0], bias=False),
                        nn.Linear(w2.shape[1], w2.shape[0], bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.as_tensor(w1))
        net[1].weight.copy_(torch.as_tensor(w2))
    return net


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_closed_form_of_a_two_layer_linear_network(seed):
    rng = np.random.default_rng(seed)
    n, d, h, c, lr = 30, 5, 4, 3, 0.3
    x, y = rng.standard_normal((n, d)), rng.standard_normal((n, c))
    w1, w2 = rng.standard_normal((h, d)) / np.sqrt(d), rng.standard_normal((c, h)) / np.sqrt(h)
    net = two_layer(w1, w2)
    result = gradient_ics(net, [net[0], net[1]], (torch.as_tensor(x), torch.as_tensor(y)),
                          lambda out, target: ((out - target) ** 2).sum() / (2 * n), lr)
    expected = ics_exercises._two_layer_reference(w1, w2, x, y, lr)
    np.testing.assert_allclose([result.l2[1], result.cosine[1]], expected, rtol=1e-10)
    assert result.l2[0] == 0.0 and result.cosine[0] == pytest.approx(1.0)   # nothing upstream of layer 0
    g2 = ics_exercises._two_layer_grads(w1, w2, x, y)[1]
    assert result.grad_norm[1] == pytest.approx(np.linalg.norm(g2))


def brute_force(net, layers, x, y, lr):
    """G and G' by stepping copies of the network with torch.optim.SGD and calling backward."""
    reference = copy.deepcopy(net)
    reference.train()
    loss = nn.functional.cross_entropy(reference(x), y)
    loss.backward()
    names = [n for n, _ in net.named_parameters()]
    grads = {n: p.grad.clone() for n, p in reference.named_parameters()}
    out = []
    for layer in layers:
        target = [n for n, p in net.named_parameters() if p is layer.weight][0]
        moved = copy.deepcopy(net)
        moved.train()
        with torch.no_grad():
            for name, p in moved.named_parameters():
                if names.index(name) < names.index(target):
                    p -= lr * grads[name]
        nn.functional.cross_entropy(moved(x), y).backward()
        g, g_new = grads[target].flatten(), dict(moved.named_parameters())[target].grad.flatten()
        out.append(((g - g_new).norm().item(), (g @ g_new / (g.norm() * g_new.norm())).item()))
    return np.array(out)


@pytest.mark.parametrize("norm", [None, BatchNorm1d])
def test_matches_stepping_copies_of_a_network_with_batchnorm_and_biases(norm):
    torch.manual_seed(0)
    net = models.mlp(6, (8, 7, 5), 4, activation="tanh", norm=norm, seed=3).double()
    x, y = torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 4, (16,))
    layers = [m for m in net.modules() if isinstance(m, nn.Linear)]
    result = gradient_ics(net, layers, (x, y), nn.functional.cross_entropy, lr=0.5)
    expected = brute_force(net, layers, x, y, 0.5)
    np.testing.assert_allclose(result.l2, expected[:, 0], rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(result.cosine, expected[:, 1], rtol=1e-8)
    assert np.all(result.l2[1:] > 0)


def test_leaves_the_model_as_it_found_it():
    net = models.mlp(6, (8, 8), 3, activation="sigmoid", norm=BatchNorm1d, seed=0)
    net.eval()
    net.norm0.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    gradient_ics(net, models.hidden_linear_layers(net), (torch.randn(10, 6), torch.randint(0, 3, (10,))),
                 nn.functional.cross_entropy, lr=1.0)
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert [m.training for m in net.modules()] == modes
    assert all(p.grad is None for p in net.parameters())


def test_first_order_change_is_the_cross_hessian_times_the_upstream_gradient():
    """G' − G ≈ −lr · (∂²L / ∂W_i ∂W_<i) g_<i for small lr (the chapter's Taylor expansion)."""
    torch.manual_seed(1)
    net = models.mlp(5, (6, 6), 3, activation="tanh", seed=1).double()
    x, y = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 3, (12,))
    params = dict(net.named_parameters())
    loss = nn.functional.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    grads = dict(zip(params, grads))
    upstream = ["linear0.weight", "linear0.bias"]
    # (∂/∂W_1) of <∇_{W_<1} L, g_<1> = cross-Hessian times the upstream gradient
    inner = sum((grads[n] * grads[n].detach()).sum() for n in upstream)
    (cross,) = torch.autograd.grad(inner, [params["linear1.weight"]])
    g = grads["linear1.weight"].detach()
    lr = 1e-4
    result = gradient_ics(net, [net.linear1], (x, y), nn.functional.cross_entropy, lr)
    predicted = (lr * cross).norm().item()
    assert result.l2[0] == pytest.approx(predicted, rel=1e-3)
    assert result.grad_norm[0] == pytest.approx(g.norm().item())


@pytest.mark.parametrize("kwargs, words", [
    (dict(layers=[]), "layers is empty"),
    (dict(lr=0.0), "positive, finite learning rate"),
    (dict(layers=[nn.Linear(3, 3)]), "belongs to the model"),
    (dict(batch=torch.randn(4, 3)), "pair of tensors"),
])
def test_bad_arguments_are_named(kwargs, words):
    net = models.mlp(3, (4,), 2, seed=0)
    arguments = dict(model=net, layers=[net.output], batch=(torch.randn(4, 3), torch.randint(0, 2, (4,))),
                     loss_fn=nn.functional.cross_entropy, lr=0.1)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=words):
        gradient_ics(**arguments)
