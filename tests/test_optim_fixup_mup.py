"""normlab.optim (adaptive gradient clipping), normlab.init.fixup_ (residual MLP and CNN) and normlab.mup (chapter 13).

AGC is checked against the paper's definition written out unit by unit (ε = 1e-3, the final
layer excluded); Fixup against its three rules; μP against its table of variances and learning
rates, and its coordinate check against the width scaling it predicts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from normlab import init, models, mup, optim, train
from normlab.data import gaussian_classification
from normlab.layers import ScalarBias, ScalarMultiplier

HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- AGC


def _agc_by_definition(w: np.ndarray, g: np.ndarray, lam: float, eps: float) -> np.ndarray:
    """Brock et al. (2021), section 4.1, one unit at a time: rows of a matrix / kernel, the whole of a vector."""
    if sum(s > 1 for s in w.shape) <= 1:
        units = [(slice(None),)]
    else:
        units = [(i,) for i in range(w.shape[0])]
    out = g.copy()
    for unit in units:
        w_norm = max(math.sqrt((w[unit] ** 2).sum()), eps)
        g_norm = math.sqrt((g[unit] ** 2).sum())
        if g_norm / w_norm > lam:
            out[unit] = lam * w_norm / g_norm * g[unit]
    return out


@HYPOTHESIS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), lam=st.sampled_from([0.01, 0.1, 1.0]),
       eps=st.sampled_from([1e-3, 0.5]), w_scale=st.sampled_from([0.0, 1e-4, 1.0]),
       g_scale=st.sampled_from([1e-4, 0.1, 10.0]), seed=st.integers(0, 999))
def test_agc_matches_the_paper_definition_for_all_shapes(shape, lam, eps, w_scale, g_scale, seed):
    gen = torch.Generator().manual_seed(seed)
    p = nn.Parameter(torch.randn(*shape, generator=gen, dtype=torch.float64) * w_scale)
    p.grad = torch.randn(*shape, generator=gen, dtype=torch.float64) * g_scale
    expected = _agc_by_definition(p.detach().numpy(), p.grad.numpy(), lam, eps)
    optim.adaptive_gradient_clipping_([p], clipping=lam, eps=eps)
    np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-12, atol=1e-300)


def test_agc_eps_lets_zero_weights_learn_and_units_are_rows():
    w = nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))            # a Fixup zero layer
    w.grad = torch.full((3, 4), 5.0, dtype=torch.float64)
    optim.adaptive_gradient_clipping_([w], clipping=0.01)
    torch.testing.assert_close(w.grad.norm(dim=1), torch.full((3,), 0.01 * 1e-3, dtype=torch.float64))
    v = nn.Parameter(torch.tensor([[1.0, 0.0], [100.0, 0.0]], dtype=torch.float64))
    v.grad = torch.ones(2, 2, dtype=torch.float64)
    fraction = optim.adaptive_gradient_clipping_(v, clipping=0.1)
    torch.testing.assert_close(v.grad[0], torch.full((2,), 0.1 / math.sqrt(2), dtype=torch.float64))
    torch.testing.assert_close(v.grad[1], torch.ones(2, dtype=torch.float64))   # ratio √2/100 < λ: untouched
    assert fraction == 0.5


def test_agc_excludes_the_final_layer_and_hooks_clip_during_train():
    net = models.mlp(5, [8, 8], 3, seed=0)
    params = optim.agc_parameters(net)
    assert {id(p) for p in params} == {id(p) for n, p in net.named_parameters() if not n.startswith("output")}
    with pytest.raises(ValueError, match="no submodule named 'head'"):
        optim.agc_parameters(net, final="head")
    x = torch.randn(16, 5)
    nn.functional.cross_entropy(net(x), torch.arange(16) % 3).backward()
    raw = {n: p.grad.clone() for n, p in net.named_parameters()}
    optim.adaptive_gradient_clipping_(params, clipping=1e-4)
    assert torch.equal(net.output.weight.grad, raw["output.weight"])
    assert not torch.equal(net.linear0.weight.grad, raw["linear0.weight"])

    record: list[float] = []
    data = gaussian_classification(num_samples=96, num_features=5, num_classes=3, seed=0)
    hooked = models.mlp(5, [8, 8], 3, seed=0)
    handles = optim.install_agc(hooked, clipping=1e-4, record=record)
    assert len(handles) == 4                                 # two weights and two biases; not the output's
    train.train(hooked, data, steps=2, lr=0.1, batch_size=16, progress=False, device="cpu")
    assert len(record) == 8 and max(record) == 1.0
    for h in handles:
        h.remove()


def test_agc_errors_are_clear():
    p = nn.Parameter(torch.ones(2, 2))
    with pytest.raises(ValueError, match="clipping"):
        optim.adaptive_gradient_clipping_([p], clipping=0.0)
    with pytest.raises(ValueError, match="eps"):
        optim.adaptive_gradient_clipping_([p], eps=-1.0)
    with pytest.raises(TypeError, match="tensors"):
        optim.adaptive_gradient_clipping_([1.0])
    assert optim.adaptive_gradient_clipping_([p]) == 0.0       # no gradient: nothing to clip


def test_agc_gradcheck_of_the_clipping_map():
    """The clipped gradient is a differentiable function of (W, G) away from the threshold."""
    def clip(w, g):
        p = nn.Parameter(w.detach().clone())
        scale = optim.unitwise_norm(w).clamp(min=1e-3) * 0.05 / optim.unitwise_norm(g)
        return g * torch.where(optim.unitwise_norm(g) > optim.unitwise_norm(w).clamp(min=1e-3) * 0.05, scale,
                               torch.ones_like(scale))

    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(clip, (w, g))
    p = nn.Parameter(w.detach().clone())
    p.grad = g.detach().clone()
    optim.adaptive_gradient_clipping_([p], clipping=0.05)
    torch.testing.assert_close(p.grad, clip(w, g).detach())


# ----------------------------------------------------------------------------- Fixup


@pytest.mark.parametrize("blocks", [1, 4, 16])
def test_fixup_follows_its_three_rules(blocks):
    net = models.residual_mlp(20, 256, 5, blocks, seed=0)
    init.fixup_(net, generator=torch.Generator().manual_seed(0))
    assert torch.all(net.output.weight == 0) and torch.all(net.output.bias == 0)       # rule 1
    assert isinstance(net.bias_output, ScalarBias)
    names = [n for n, _ in net.named_children()]
    assert names.index("bias_output") == names.index("output") - 1
    for block in models.residual_blocks(net):
        branch = block.branch
        assert torch.all(branch.linear1.weight == 0) and torch.all(branch.linear1.bias == 0)   # rule 1
        std = branch.linear0.weight.std().item()                                      # rule 2: He × L^(-1/2)
        assert std == pytest.approx(math.sqrt(2 / 256) * blocks ** -0.5, rel=0.03)
        assert [type(m).__name__ for m in branch] == ["ScalarBias", "ReLU", "ScalarBias", "Linear", "ScalarBias",
                                                      "ReLU", "ScalarBias", "Linear", "ScalarMultiplier",
                                                      "ScalarBias"]                    # rule 3
        assert isinstance(branch.multiplier, ScalarMultiplier) and branch.multiplier.weight.item() == 1.0
    assert init.fixup_scale(blocks) == pytest.approx(blocks ** -0.5)
    assert init.fixup_scale(8, 3) == pytest.approx(8 ** -0.25)
    x = torch.randn(7, 20)
    assert torch.equal(net(x), torch.zeros(7, 5))                                    # output zero at init
    stream = net.input(x)
    h = stream
    for block in models.residual_blocks(net):
        h = block(h)
    assert torch.equal(h, stream)                                                     # every block the identity


def test_fixup_trains_with_the_book_loop():
    data = gaussian_classification(num_samples=400, num_features=10, num_classes=3, seed=0)
    net = init.fixup_(models.residual_mlp(10, 32, 3, 8, seed=0), generator=torch.Generator().manual_seed(0))
    history = train.train(net, data, steps=60, lr=0.05, batch_size=32, progress=False, device="cpu")
    assert not history.diverged and history.final_test_accuracy > 0.6
    assert all(p.grad is not None for p in net.parameters())


def test_fixup_errors_are_clear():
    with pytest.raises(ValueError, match="residual_mlp"):
        init.fixup_(models.mlp(3, [4], 2))
    with pytest.raises(ValueError, match="norm=None"):
        init.fixup_(models.residual_mlp(3, 4, 2, 2, norm=nn.BatchNorm1d))
    with pytest.raises(ValueError, match="branch_scale=1"):
        init.fixup_(models.residual_mlp(3, 4, 2, 2, branch_scale=0.5))
    with pytest.raises(ValueError, match="at least one residual block"):
        init.fixup_(models.residual_mlp(3, 4, 2, 0))
    net = init.fixup_(models.residual_mlp(3, 4, 2, 2))
    with pytest.raises(ValueError, match="applies once"):
        init.fixup_(net)
    with pytest.raises(ValueError, match="layers_per_branch"):
        init.fixup_scale(4, 1)


# ----------------------------------------------------------------------------- Fixup on a residual CNN


def _fixup_cnn(blocks, channels=8, in_channels=1, seed=0, **kwargs):
    net = models.residual_cnn(in_channels, channels, 10, blocks, seed=seed, **kwargs)
    return init.fixup_(net, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("blocks", [1, 4, 16])
def test_fixup_on_a_cnn_zeroes_the_last_conv_and_the_classifier(blocks):
    net = _fixup_cnn(blocks, channels=16)
    assert torch.all(net.output.weight == 0) and torch.all(net.output.bias == 0)
    names = [n for n, _ in net.named_children()]
    assert names == ["input", *(f"block{b}" for b in range(blocks)), "final_act", "pool", "bias_output", "output"]
    for block in models.residual_blocks(net):
        branch = block.branch
        assert torch.all(branch.conv1.weight == 0) and torch.all(branch.conv1.bias == 0)
        assert torch.all(branch.conv0.bias == 0) and branch.conv0.weight.abs().min() > 0
        assert [n for n, _ in branch.named_children()] == ["bias_act0", "act0", "bias_conv0", "conv0", "bias_act1",
                                                           "act1", "bias_conv1", "conv1", "multiplier", "bias_out"]
        assert all(p.shape == (1,) for n, p in branch.named_parameters() if not n.startswith("conv"))
    assert torch.all(net.input.bias == 0)


@pytest.mark.parametrize("blocks", [1, 4, 16])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fixup_inner_convs_have_he_std_with_fan_in_times_l_to_the_minus_half(blocks, seed):
    """Rule 2 for a Conv2d: std √(2 / (C_in · 3 · 3)) · L^(−1/2), mean 0; the stem LeCun's √(1 / (C_in · 3 · 3)).

    64 → 64 channels of 3 × 3 give 36 864 weights per layer: the sample std is within about 0.4% (one standard
    error) of the truth, so 3% is a wide margin that still catches a missing L^(−1/2) (×2 at L = 4) or a fan-in
    without the kernel (×3).
    """
    net = _fixup_cnn(blocks, channels=64, in_channels=16, seed=seed)
    he = math.sqrt(2 / (64 * 3 * 3))
    for block in models.residual_blocks(net):
        w = block.branch.conv0.weight
        assert w.std().item() == pytest.approx(he * blocks**-0.5, rel=0.03)
        assert abs(w.mean().item()) < 0.03 * he * blocks**-0.5
    assert net.input.weight.std().item() == pytest.approx(math.sqrt(1 / (16 * 3 * 3)), rel=0.05)


def test_fixup_cnn_starts_as_its_stem_path():
    """Every branch contributes nothing at initialization: with any classifier, the output is the stem path's."""
    net = _fixup_cnn(6, channels=8, image_size=(8, 8))
    x = torch.randn(9, 64, generator=torch.Generator().manual_seed(3))
    assert torch.equal(net(x), torch.zeros(9, 10))                       # the classifier is zero
    with torch.no_grad():
        net.output.weight.normal_(generator=torch.Generator().manual_seed(4))
        net.output.bias.normal_(generator=torch.Generator().manual_seed(5))
    stem = net.input(net.unflatten(x))
    h = stem
    for block in models.residual_blocks(net):
        h = block(h)
    assert torch.equal(h, stem)
    torch.testing.assert_close(net(x), net.output(net.bias_output(torch.relu(stem).mean(dim=(2, 3)))), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
def test_fixup_zeros_do_not_stall_training(kind):
    """Section 3 of the paper: the zero layers learn. The first gradient reaches the classifier only; the second
    also the stem, the branches' last layers and the scalar biases after them; the third every parameter."""
    if kind == "cnn":
        net, last = _fixup_cnn(3, channels=4, image_size=(5, 5)), "conv1"
        x = torch.randn(8, 25, generator=torch.Generator().manual_seed(0))
    else:
        net = init.fixup_(models.residual_mlp(6, 5, 10, 3), generator=torch.Generator().manual_seed(0))
        x, last = torch.randn(8, 6, generator=torch.Generator().manual_seed(0)), "linear1"
    y = torch.arange(8) % 10
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    first_nonzero = {}
    for step in (1, 2, 3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        for name, p in net.named_parameters():
            if p.grad is not None and p.grad.abs().max() > 0:
                first_nonzero.setdefault(name, step)
        opt.step()
    names = [name for name, _ in net.named_parameters()]
    assert set(first_nonzero) == set(names)                                  # everything learns by step 3
    assert {n for n in names if first_nonzero[n] == 1} == {"output.weight", "output.bias"}
    second = {n for n in names if first_nonzero[n] == 2}
    expected = {"input.weight", "input.bias", "bias_output.bias"} | {
        f"block{b}.branch.{p}" for b in range(3) for p in (f"{last}.weight", f"{last}.bias", "bias_out.bias")}
    assert second == expected


@HYPOTHESIS
@given(in_channels=st.integers(1, 3), channels=st.integers(1, 5), blocks=st.integers(1, 4),
       size=st.tuples(st.integers(1, 5), st.integers(1, 5)), kernel_size=st.sampled_from([1, 3]),
       batch=st.integers(1, 4), seed=st.integers(0, 99))
def test_fixup_cnn_blocks_are_the_identity_for_all_shapes(in_channels, channels, blocks, size, kernel_size, batch,
                                                           seed):
    net = _fixup_cnn(blocks, channels=channels, in_channels=in_channels, seed=seed, kernel_size=kernel_size)
    x = torch.randn(batch, in_channels, *size, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(net(x), torch.zeros(batch, 10))
    h = net.input(x)
    for block in models.residual_blocks(net):
        assert torch.equal(block(h), h)
    scalars = [m for m in net.modules() if isinstance(m, (ScalarBias, ScalarMultiplier))]
    assert len(scalars) == 6 * blocks + 1


def test_fixup_cnn_errors_are_clear():
    with pytest.raises(ValueError, match="norm=None"):
        init.fixup_(models.residual_cnn(1, 4, 2, 2, norm=nn.BatchNorm2d))
    with pytest.raises(ValueError, match="branch_scale=1"):
        init.fixup_(models.residual_cnn(1, 4, 2, 2, branch_scale=0.5))
    with pytest.raises(ValueError, match="applies once"):
        init.fixup_(init.fixup_(models.residual_cnn(1, 4, 2, 2)))
    net = models.residual_cnn(1, 4, 2, 2)
    net.block1.branch.conv0 = nn.Conv1d(4, 4, 3, padding=1)
    with pytest.raises(ValueError, match=r"Linear or Conv2d layers.*Conv1d"):
        init.fixup_(net)
    net = models.residual_cnn(1, 4, 2, 2)
    del net.block1.branch.conv0
    with pytest.raises(ValueError, match=r"same number m of weight layers in every branch; got \[1, 2\]"):
        init.fixup_(net)
    net = models.residual_cnn(1, 4, 2, 2)
    net.input = nn.Conv1d(1, 4, 3)
    with pytest.raises(ValueError, match="Linear or Conv2d input layer"):
        init.fixup_(net)
    plain_cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match="residual_mlp or residual_cnn"):
        init.fixup_(plain_cnn)


# ----------------------------------------------------------------------------- μP


@pytest.mark.parametrize("width", [64, 256, 1024])
def test_mup_table_of_variances_and_learning_rates(width):
    base = 64
    nets = {p: mup.mlp(10, width, 4, depth=3, parametrization=p, base_width=base, seed=0) for p in ("sp", "mup")}
    # effective variance of W = a·w, and the factor a² on the SGD step of W
    expected = {"sp": {"input": (1 / 10, 1.0), "hidden1": (1 / width, 1.0), "output": (1 / width, 1.0)},
                "mup": {"input": (1 / 10, width / base), "hidden1": (1 / width, 1.0),
                        "output": (base / width**2, base / width)}}
    for p, net in nets.items():
        for name, (var, lr_factor) in expected[p].items():
            layer = getattr(net, name)
            assert layer.multiplier**2 == pytest.approx(lr_factor)
            assert layer.init_std**2 * layer.multiplier**2 == pytest.approx(var)
            measured = (layer.multiplier * layer.weight).var().item()
            assert measured == pytest.approx(var, rel=0.35 if layer.weight.numel() < 200 else 0.1)


def test_mup_equals_sp_at_the_base_width():
    sp, mp = (mup.mlp(10, 64, 4, parametrization=p, base_width=64, seed=3) for p in ("sp", "mup"))
    x = torch.randn(5, 10)
    assert torch.equal(sp(x), mp(x))


@HYPOTHESIS
@given(d=st.integers(1, 6), width=st.integers(1, 9), k=st.integers(1, 4), depth=st.integers(1, 3),
       lead=st.lists(st.integers(1, 3), max_size=2), p=st.sampled_from(mup.PARAMETRIZATIONS))
def test_mup_mlp_shapes_and_formula(d, width, k, depth, lead, p):
    net = mup.mlp(d, width, k, depth, p, base_width=4).double()
    x = torch.randn(*lead, d, dtype=torch.float64)
    h = x
    for layer in net:
        h = torch.relu(h) if isinstance(layer, nn.ReLU) else h @ (layer.multiplier * layer.weight).T
    torch.testing.assert_close(net(x), h)
    assert net(x).shape == (*lead, k)


def test_multiplied_linear_gradcheck_and_errors():
    layer = mup.MultipliedLinear(3, 2, multiplier=2.5, dtype=torch.float64)
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = layer.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w: torch.func.functional_call(layer, {"weight": w}, (x,)), (x, w))
    with pytest.raises(ValueError, match="multiplier"):
        mup.MultipliedLinear(3, 2, multiplier=0.0)
    with pytest.raises(ValueError, match=r"\(\*, 3\)"):
        layer(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="Unknown parametrization"):
        mup.mlp(3, 4, 2, parametrization="ntk")
    with pytest.raises(ValueError, match="shape"):
        mup.coordinate_check(torch.randn(4, 3), torch.zeros(5, dtype=torch.long))


def test_coordinate_check_grows_under_sp_and_stays_flat_under_mup():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 20, generator=gen)
    y = torch.randint(0, 5, (128,), generator=gen)
    widths = (64, 256, 1024)
    sp, mp = (mup.coordinate_check(x, y, widths, p, lr=0.05, steps=2) for p in ("sp", "mup"))
    assert sp.logit_change[-1, -1] > 4 * sp.logit_change[0, -1]
    assert 0.5 < mp.logit_change[-1, -1] / mp.logit_change[0, -1] < 2
    np.testing.assert_allclose(sp.logit_change[0], mp.logit_change[0])      # the base width: identical
