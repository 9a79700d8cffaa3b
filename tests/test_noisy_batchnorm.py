"""NoisyBatchNorm1d and ShiftNoise: the noise is exactly y = √v·z + m, seeded, training-mode only."""

import pytest
import torch
from torch import nn

from normlab.layers import BatchNorm1d, NoisyBatchNorm1d, ShiftNoise


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_shift_noise_draws_mean_and_variance_from_the_stated_uniforms():
    noise = ShiftNoise(2000, n_mu=1.5, n_sigma=4.0, generator=generator())
    x = torch.randn(7, 2000, dtype=torch.float64)
    y = noise(x)
    m, v = noise.last_mean, noise.last_variance
    torch.testing.assert_close(y, v.sqrt() * x + m)
    assert m.min() >= -1.5 and m.max() <= 1.5 and v.min() >= 1.0 and v.max() <= 4.0
    # uniform on its interval: mean and spread of 2000 draws (tolerances are 6 standard errors)
    assert abs(m.mean().item()) < 6 * 1.5 / (3 * 2000) ** 0.5
    assert abs(v.mean().item() - 2.5) < 6 * 3 / (12 * 2000) ** 0.5
    assert m.min() < -1.4 and m.max() > 1.4


def test_noise_is_redrawn_every_training_call_and_reproducible_from_the_seed():
    x = torch.randn(5, 3)
    a, b = ShiftNoise(3, 1.0, 2.0, generator(3)), ShiftNoise(3, 1.0, 2.0, generator(3))
    first, second = a(x), a(x)
    assert not torch.equal(first, second)
    torch.testing.assert_close(b(x), first)
    torch.testing.assert_close(b(x), second)


def test_noise_is_off_in_eval_mode_and_noisy_bn_is_then_plain_bn():
    torch.manual_seed(0)
    x = torch.randn(16, 4) * 3 + 1
    noisy = NoisyBatchNorm1d(4, n_mu=2.0, n_sigma=9.0, generator=generator())
    plain = BatchNorm1d(4)
    noisy(x), plain(x)                      # one training step each: same running statistics
    torch.testing.assert_close(noisy.running_mean, plain.running_mean)
    torch.testing.assert_close(noisy.running_var, plain.running_var)
    noisy.eval(), plain.eval()
    torch.testing.assert_close(noisy(x), plain(x))
    assert ShiftNoise(4, 1.0, 2.0, generator()).eval()(x) is x


def test_noisy_bn_in_training_mode_matches_torch_bn_followed_by_the_noise():
    torch.manual_seed(1)
    x = torch.randn(32, 6, dtype=torch.float64) * 2 - 1
    noisy = NoisyBatchNorm1d(6, n_mu=1.0, n_sigma=4.0, generator=generator(5), dtype=torch.float64)
    reference = nn.BatchNorm1d(6, dtype=torch.float64)
    with torch.no_grad():
        for layer in (noisy, reference):
            layer.weight.uniform_(0.5, 2.0, generator=generator(9))
            layer.bias.uniform_(-1.0, 1.0, generator=generator(10))
    y = noisy(x)
    m, v = noisy.noise.last_mean, noisy.noise.last_variance
    torch.testing.assert_close(y, v.sqrt() * reference(x) + m)
    # so the batch mean and std of each unit are √v·β + m and √v·|γ| (up to eps)
    torch.testing.assert_close(y.mean(0), v.sqrt() * reference.bias + m)
    torch.testing.assert_close(y.std(0, unbiased=False), v.sqrt() * reference.weight, rtol=1e-4, atol=1e-4)


def test_noisy_bn_has_batchnorms_state_dict_and_gradients_flow_through_the_noise():
    noisy = NoisyBatchNorm1d(3, n_mu=1.0, n_sigma=2.0, generator=generator())
    assert set(noisy.state_dict()) == set(nn.BatchNorm1d(3).state_dict())
    noisy.load_state_dict(nn.BatchNorm1d(3).state_dict())
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    layer = ShiftNoise(3, 1.0, 3.0, generator(2))
    y = layer(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, layer.last_variance.sqrt().double().expand(8, 3))


def test_three_dimensional_input_shares_the_noise_along_the_length():
    x = torch.randn(4, 2, 5)
    noise = ShiftNoise(2, 1.0, 4.0, generator())
    y = noise(x)
    torch.testing.assert_close(y, noise.last_variance.sqrt()[None, :, None] * x + noise.last_mean[None, :, None])


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(n_mu=-1.0, n_sigma=2.0, generator=generator()), ValueError, "n_mu"),
    (dict(n_mu=1.0, n_sigma=0.5, generator=generator()), ValueError, "n_sigma"),
    (dict(n_mu=1.0, n_sigma=float("inf"), generator=generator()), ValueError, "n_sigma"),
    (dict(n_mu=1.0, n_sigma=2.0, generator=0), TypeError, "torch.Generator"),
])
def test_bad_noise_arguments_are_named(kwargs, error, words):
    with pytest.raises(error, match=words):
        NoisyBatchNorm1d(4, **kwargs)
    with pytest.raises(error, match=words):
        ShiftNoise(4, **kwargs)


def test_wrong_input_width_is_reported():
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3\)"):
        ShiftNoise(3, 1.0, 2.0, generator())(torch.randn(5, 4))
    with pytest.raises(ValueError, match="num_features"):
        ShiftNoise(0, 1.0, 2.0, generator())
