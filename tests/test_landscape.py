"""normlab.landscape against exact answers: a quadratic's Hessian, a small network's Hessian,
the definitions of the gradient-direction measures, and the filter-normalization property."""

import numpy as np
import pytest
import torch
from torch import nn

from normlab import landscape, models

f64 = torch.float64


def _quadratic(seed=0, eigenvalues=(0.5, 1.0, 3.0, 7.0)):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    a = torch.tensor(q @ np.diag(eigenvalues) @ q.T, dtype=f64)
    return a, (lambda t: 0.5 * t @ a @ t)


def test_hessian_vector_product_and_top_eigenvalue_of_a_quadratic():
    a, f = _quadratic()
    theta, v = torch.randn(4, dtype=f64), torch.randn(4, dtype=f64)
    torch.testing.assert_close(landscape.hessian_vector_product(f, theta, v), a @ v)
    assert landscape.top_hessian_eigenvalue(f, theta, iterations=200, rtol=1e-12) == pytest.approx(7.0, rel=1e-6)
    with pytest.raises(ValueError, match="shape of theta"):
        landscape.hessian_vector_product(f, theta, torch.ones(3, dtype=f64))


def test_top_eigenvalue_matches_the_exact_hessian_of_a_small_network():
    torch.manual_seed(0)
    net = models.mlp(3, (4,), 2, activation="tanh", norm=nn.BatchNorm1d, seed=0).double()
    x, y = torch.randn(10, 3, dtype=f64), torch.randint(0, 2, (10,))
    f = landscape.flat_loss(net, x, y)
    theta = landscape.flat_parameters(net)
    # reverse-over-reverse: torch.func.hessian (vmap over jacfwd) gives a non-symmetric matrix
    # through nn.BatchNorm1d in training mode with torch 2.13; our forward-over-reverse HVP is right
    hessian = torch.autograd.functional.hessian(f, theta)
    torch.testing.assert_close(landscape.hessian_vector_product(f, theta, theta), hessian @ theta)
    eig = torch.linalg.eigvalsh(hessian)
    top = eig[eig.abs().argmax()]
    assert landscape.top_hessian_eigenvalue(f, theta, iterations=500, rtol=1e-10) == pytest.approx(float(top), rel=1e-4)
    before = net.norm0.running_mean.clone()
    f(theta)
    torch.testing.assert_close(net.norm0.running_mean, before)        # the loss moves no running estimate


def test_gradient_direction_measures_follow_their_definitions():
    a, f = _quadratic(eigenvalues=(1.0, 2.0, 5.0))
    theta = torch.randn(3, dtype=f64)
    etas = (0.05, 0.2, 0.4)
    m = landscape.gradient_direction_measures(f, theta, etas)
    g = a @ theta
    for k, eta in enumerate(etas):
        assert m.loss[k] == pytest.approx(float(f(theta - eta * g)))
        assert m.gradient_change[k] == pytest.approx(float(eta * (a @ g).norm()))
    # on a quadratic the effective β is ‖Ag‖/‖g‖, between λ_min and λ_max
    assert np.allclose(m.beta, float((a @ g).norm() / g.norm()))
    assert 1.0 <= m.effective_beta <= 5.0
    assert m.gradient_predictiveness == pytest.approx(m.gradient_change.max())
    assert m.loss_variation == pytest.approx(m.loss.max() - m.loss.min())
    with pytest.raises(ValueError, match="positive steps"):
        landscape.gradient_direction_measures(f, theta, (0.0, 0.1))


def test_flat_loss_rejects_a_vector_of_the_wrong_size():
    net = models.mlp(3, (4,), 2, seed=0)
    f = landscape.flat_loss(net, torch.randn(5, 3), torch.randint(0, 2, (5,)))
    with pytest.raises(ValueError, match="flat vector of 26 parameters"):
        f(torch.zeros(25))


def test_filter_normalized_direction_matches_each_filter_norm():
    net = models.mlp(5, (7, 6), 3, norm=nn.BatchNorm1d, seed=2)
    d = landscape.filter_normalized_direction(net, seed=0)
    assert d.shape == landscape.flat_parameters(net).shape
    offset = 0
    for p in net.parameters():
        part = d[offset:offset + p.numel()].reshape(p.shape)
        offset += p.numel()
        if p.dim() < 2:
            assert torch.all(part == 0)                                 # biases, γ, β are not perturbed
        else:
            torch.testing.assert_close(part.norm(dim=1), p.detach().norm(dim=1))
    assert not torch.equal(d, landscape.filter_normalized_direction(net, seed=1))
    torch.testing.assert_close(d, landscape.filter_normalized_direction(net, seed=0))


def test_loss_slices_pass_through_theta():
    a, f = _quadratic(eigenvalues=(1.0, 4.0))
    theta = torch.tensor([1.0, -1.0], dtype=f64)
    d1, d2 = torch.tensor([1.0, 0.0], dtype=f64), torch.tensor([0.0, 1.0], dtype=f64)
    alphas = np.linspace(-1, 1, 5)
    s1 = landscape.loss_slice_1d(f, theta, d1, alphas)
    s2 = landscape.loss_slice_2d(f, theta, d1, d2, alphas, alphas)
    assert s1[2] == pytest.approx(float(f(theta))) == pytest.approx(s2[2, 2])
    np.testing.assert_allclose(s2[:, 2], s1)
    assert s2.shape == (5, 5)
