"""normlab.probes.layer_histograms: agrees with numpy.histogram, leaves the model as it found it."""

import numpy as np
import pytest
import torch
from torch import nn

from normlab import models, probes


def test_layer_histograms_match_numpy():
    net = models.mlp(8, [16, 16], 3, activation="tanh", seed=0)
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1))
    edges, fraction, std = probes.layer_histograms(net, x, [net.act0, net.linear1], bins=np.linspace(-1, 1, 11))
    with torch.no_grad():
        a0 = net.act0(net.linear0(x))
        z1 = net.linear1(a0)
    for row, values in enumerate((a0, z1)):
        counts, _ = np.histogram(values.numpy().ravel(), bins=edges)
        np.testing.assert_allclose(fraction[row], counts / values.numel())
        assert std[row] == pytest.approx(values.double().std(unbiased=False).item(), rel=1e-6)
    assert fraction[0].sum() == pytest.approx(1.0)          # tanh values all lie in [-1, 1]


def test_layer_histograms_restore_training_mode_and_reject_bad_bins():
    net = models.mlp(4, [6], 2, norm=nn.BatchNorm1d, seed=0).train()
    running = net.norm0.running_mean.clone()
    probes.layer_histograms(net, torch.randn(10, 4), [net.act0], bins=[0.0, 1.0, 2.0])
    assert net.training and net.norm0.training
    torch.testing.assert_close(net.norm0.running_mean, running)
    with pytest.raises(ValueError, match="increasing"):
        probes.layer_histograms(net, torch.randn(10, 4), [net.act0], bins=[1.0, 0.0])
    with pytest.raises(ValueError, match="empty"):
        probes.layer_histograms(net, torch.randn(10, 4), [], bins=[0.0, 1.0])
    with pytest.raises(RuntimeError, match="not called"):
        probes.layer_histograms(net, torch.randn(10, 4), [nn.ReLU()], bins=[0.0, 1.0])
