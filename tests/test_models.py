"""Tests for normlab.models: structure, seeding and the layer helper of mlp; the residual MLP and CNN."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torch.nn.functional as F

from normlab.models import (
    ACTIVATIONS,
    GlobalAvgPool2d,
    hidden_linear_layers,
    mlp,
    residual_blocks,
    residual_cnn,
    residual_mlp,
)


def test_mlp_builds_linear_activation_blocks_then_a_linear_head() -> None:
    model = mlp(5, [7, 3], 2, activation="tanh")
    assert [name for name, _ in model.named_children()] == ["linear0", "act0", "linear1", "act1", "output"]
    assert [type(m) for m in model] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [(5, 7), (7, 3), (3, 2)]


def test_mlp_without_hidden_layers_is_a_single_linear_map() -> None:
    model = mlp(4, [], 3)
    assert [type(m) for m in model] == [nn.Linear]
    assert hidden_linear_layers(model) == []


def test_mlp_inserts_norm_before_activation() -> None:
    model = mlp(6, [8, 4], 3, norm=nn.BatchNorm1d)
    names = [name for name, _ in model.named_children()]
    assert names == ["linear0", "norm0", "act0", "linear1", "norm1", "act1", "output"]
    seen: dict[str, torch.Tensor] = {}
    model.linear0.register_forward_hook(lambda m, i, o: seen.__setitem__("linear_out", o))
    model.norm0.register_forward_hook(lambda m, i, o: seen.__setitem__("norm_in", i[0]))
    model.norm0.register_forward_hook(lambda m, i, o: seen.__setitem__("norm_out", o))
    model.act0.register_forward_hook(lambda m, i, o: seen.__setitem__("act_in", i[0]))
    model(torch.randn(16, 6, generator=torch.Generator().manual_seed(0)))
    assert seen["norm_in"] is seen["linear_out"]
    assert seen["act_in"] is seen["norm_out"]
    # In train mode BatchNorm output is standardized per feature, so the norm really ran.
    torch.testing.assert_close(seen["norm_out"].mean(0), torch.zeros(8), atol=1e-5, rtol=0)


def test_mlp_calls_norm_factory_with_each_hidden_width() -> None:
    widths: list[int] = []

    def factory(width: int) -> nn.Module:
        widths.append(width)
        return nn.LayerNorm(width)

    model = mlp(3, [5, 9, 2], 1, norm=factory)
    assert widths == [5, 9, 2]
    assert [m.normalized_shape for m in model if isinstance(m, nn.LayerNorm)] == [(5,), (9,), (2,)]


def test_mlp_rejects_norm_factory_that_returns_no_module() -> None:
    with pytest.raises(ValueError, match="norm must be a factory"):
        mlp(3, [4], 2, norm=lambda width: width)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize("name, module", [(n, m) for n, m in ACTIVATIONS.items()])
def test_mlp_uses_the_named_activation(name: str, module: type[nn.Module]) -> None:
    model = mlp(3, [4], 2, activation=name)
    assert type(model.act0) is module


def test_mlp_rejects_unknown_activation_and_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"Unknown activation 'gelu'.*relu"):
        mlp(3, [4], 2, activation="gelu")


@pytest.mark.parametrize(
    "args, message",
    [((0, [4], 2), "in_features"), ((3, [4], 0), "out_features"), ((3, [4, 0], 2), "hidden width")],
)
def test_mlp_rejects_empty_layers(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mlp(*args)


def test_mlp_without_bias_has_no_bias_parameters() -> None:
    model = mlp(3, [4, 4], 2, bias=False)
    assert all(m.bias is None for m in model if isinstance(m, nn.Linear))


def test_mlp_init_is_seeded_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = mlp(10, [20, 20], 3, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    b = mlp(10, [20, 20], 3, seed=7)
    c = mlp(10, [20, 20], 3, seed=8)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.linear0.weight, c.linear0.weight)


def test_mlp_keeps_pytorch_default_initialization() -> None:
    model = mlp(10, [20, 30], 3, seed=5)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(5)
        expected = [nn.Linear(10, 20), nn.Linear(20, 30), nn.Linear(30, 3)]
    actual = [m for m in model if isinstance(m, nn.Linear)]
    for layer, reference in zip(actual, expected, strict=True):
        assert torch.equal(layer.weight, reference.weight)
        assert torch.equal(layer.bias, reference.bias)


@settings(max_examples=20, deadline=None)
@given(
    in_features=st.integers(1, 12),
    hidden=st.lists(st.integers(1, 12), max_size=4),
    out_features=st.integers(1, 6),
    batch=st.integers(2, 8),
)
def test_mlp_maps_batches_to_out_features(in_features: int, hidden: list[int], out_features: int, batch: int) -> None:
    model = mlp(in_features, hidden, out_features, norm=nn.BatchNorm1d)
    assert model(torch.zeros(batch, in_features)).shape == (batch, out_features)
    layers = hidden_linear_layers(model)
    assert [layer.out_features for layer in layers] == hidden


def test_hidden_linear_layers_returns_the_layers_feeding_each_nonlinearity() -> None:
    model = mlp(4, [6, 5, 3], 2, norm=nn.BatchNorm1d)
    layers = hidden_linear_layers(model)
    assert layers == [model.linear0, model.linear1, model.linear2]
    assert model.output not in layers
    children = list(model)
    for layer in layers:
        after = children[children.index(layer) + 1 :]
        assert isinstance(after[0], nn.BatchNorm1d) and isinstance(after[1], nn.ReLU)


def test_hidden_linear_layers_rejects_models_not_built_by_mlp() -> None:
    with pytest.raises(ValueError, match="built by normlab.models.mlp"):
        hidden_linear_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)))


def test_residual_mlp_blocks_add_the_scaled_branch_to_the_stream() -> None:
    model = residual_mlp(4, 6, 3, blocks=2, branch_scale=0.5, seed=1)
    assert [name for name, _ in model.named_children()] == ["input", "block0", "block1", "final_act", "output"]
    blocks = residual_blocks(model)
    assert len(blocks) == 2 and [n for n, _ in blocks[0].branch.named_children()] == [
        "act0", "linear0", "act1", "linear1"]
    h = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(blocks[0](h), h + 0.5 * blocks[0].branch(h))
    assert "scale=0.5" in repr(blocks[0])


def test_residual_mlp_zero_init_last_makes_every_block_the_identity() -> None:
    model = residual_mlp(3, 5, 2, blocks=3, norm=nn.LayerNorm, zero_init_last=True)
    h = torch.randn(7, 5, generator=torch.Generator().manual_seed(2))
    for block in residual_blocks(model):
        torch.testing.assert_close(block(h), h)
        assert isinstance(block.branch.norm0, nn.LayerNorm)
    assert isinstance(model.final_norm, nn.LayerNorm)


def test_residual_mlp_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b = residual_mlp(3, 4, 2, blocks=2, seed=7), residual_mlp(3, 4, 2, blocks=2, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_residual_mlp_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Unknown activation"):
        residual_mlp(3, 4, 2, blocks=1, activation="gelu")
    with pytest.raises(ValueError, match="blocks must be non-negative"):
        residual_mlp(3, 4, 2, blocks=-1)
    with pytest.raises(ValueError, match="norm must be a factory"):
        residual_mlp(3, 4, 2, blocks=1, norm=lambda width: width)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="residual_mlp"):
        residual_blocks(nn.Sequential(nn.Linear(2, 2)))


# ----------------------------------------------------------------------------- residual_cnn


def _cnn_by_hand(model: nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    """The residual CNN's forward written with torch.nn.functional (the oracle): stem, pre-activation blocks
    h + s·conv1(relu(conv0(relu(h)))), relu, mean over H × W, Linear."""
    same = {"padding": "same"}
    h = F.conv2d(images, model.input.weight, model.input.bias, **same)
    for block in residual_blocks(model):
        b = block.branch
        inner = F.conv2d(torch.relu(h), b.conv0.weight, b.conv0.bias, **same)
        h = h + block.scale * F.conv2d(torch.relu(inner), b.conv1.weight, b.conv1.bias, **same)
    return F.linear(torch.relu(h).mean(dim=(2, 3)), model.output.weight, model.output.bias)


def test_residual_cnn_children_and_forward_match_the_functional_oracle() -> None:
    model = residual_cnn(2, 6, 4, blocks=3, branch_scale=0.5, seed=1).double()
    assert [name for name, _ in model.named_children()] == ["input", "block0", "block1", "block2", "final_act",
                                                            "pool", "output"]
    assert [n for n, _ in residual_blocks(model)[0].branch.named_children()] == ["act0", "conv0", "act1", "conv1"]
    conv = residual_blocks(model)[0].branch.conv0
    assert conv.in_channels == conv.out_channels == 6 and conv.kernel_size == (3, 3)
    images = torch.randn(5, 2, 7, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(model(images), _cnn_by_hand(model, images))


def test_residual_cnn_reads_flat_rows_as_images_channels_first() -> None:
    flat_model = residual_cnn(3, 4, 5, blocks=2, image_size=(4, 6), seed=2)
    image_model = residual_cnn(3, 4, 5, blocks=2, seed=2)
    assert isinstance(flat_model.unflatten, nn.Unflatten)
    rows = torch.randn(7, 3 * 4 * 6, generator=torch.Generator().manual_seed(1))
    images = rows.reshape(7, 3, 4, 6)                        # channels first: row = (c, y, x) in C order
    torch.testing.assert_close(flat_model(rows), image_model(images))
    torch.testing.assert_close(image_model(images[0]), image_model(images[:1])[0])   # an unbatched (C, H, W) image


@settings(max_examples=25, deadline=None)
@given(
    in_channels=st.integers(1, 3),
    channels=st.integers(1, 6),
    out_features=st.integers(1, 5),
    blocks=st.integers(0, 3),
    size=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    kernel_size=st.sampled_from([1, 3, 5]),
    batch=st.integers(2, 5),
    batch_norm=st.booleans(),
)
def test_residual_cnn_maps_images_to_out_features_with_and_without_batchnorm(
        in_channels: int, channels: int, out_features: int, blocks: int, size: tuple[int, int], kernel_size: int,
        batch: int, batch_norm: bool) -> None:
    model = residual_cnn(in_channels, channels, out_features, blocks, kernel_size=kernel_size,
                         norm=nn.BatchNorm2d if batch_norm else None)
    images = torch.randn(batch, in_channels, *size, generator=torch.Generator().manual_seed(blocks))
    assert model(images).shape == (batch, out_features)
    h = model.input(images)
    for block in residual_blocks(model):
        assert block(h).shape == h.shape == (batch, channels, *size)       # "same" padding keeps H × W
        h = block(h)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == (2 * blocks + 1 if batch_norm else 0)
    assert all(n.num_features == channels for n in norms)
    if batch_norm:
        assert all(isinstance(b.branch.norm0, nn.BatchNorm2d) for b in residual_blocks(model))
        assert isinstance(model.final_norm, nn.BatchNorm2d)
        assert model.eval()(images).shape == (batch, out_features)


def test_residual_cnn_zero_init_last_makes_every_block_the_identity_and_is_seeded() -> None:
    model = residual_cnn(1, 4, 3, blocks=3, norm=nn.BatchNorm2d, zero_init_last=True)
    h = torch.randn(6, 4, 5, 5, generator=torch.Generator().manual_seed(2))
    for block in residual_blocks(model):
        torch.testing.assert_close(block(h), h)
    state = torch.get_rng_state()
    a, b = residual_cnn(1, 4, 3, blocks=2, seed=7), residual_cnn(1, 4, 3, blocks=2, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not any("bias" in name for name, _ in residual_cnn(1, 4, 3, blocks=2, bias=False).named_parameters())


def test_residual_cnn_and_pool_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="Unknown activation"):
        residual_cnn(1, 4, 2, blocks=1, activation="gelu")
    with pytest.raises(ValueError, match="channels must be at least 1"):
        residual_cnn(1, 0, 2, blocks=1)
    for kernel_size in (0, 2):
        with pytest.raises(ValueError, match="kernel_size must be a positive odd number"):
            residual_cnn(1, 4, 2, blocks=1, kernel_size=kernel_size)
    with pytest.raises(ValueError, match="blocks must be non-negative"):
        residual_cnn(1, 4, 2, blocks=-1)
    with pytest.raises(ValueError, match="image_size"):
        residual_cnn(1, 4, 2, blocks=1, image_size=(8,))
    with pytest.raises(ValueError, match="norm must be a factory"):
        residual_cnn(1, 4, 2, blocks=1, norm=lambda width: width)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        GlobalAvgPool2d()(torch.zeros(2, 3))
