"""Seeded multilayer perceptrons with an optional normalization layer per block.

- :func:`mlp`: Linear -> [norm] -> activation for each hidden width, then a Linear head.
- :func:`hidden_linear_layers`: the hidden Linear layers of such a model, for hooks.
- :func:`residual_mlp`: a stack of pre-activation residual blocks x + s·F(x), with a
  chosen branch scale s, for the chapters on initialization and scaled WeightNorm.
- :func:`residual_cnn`: the same blocks with 3×3 convolutions on small images (digits as
  1×8×8), a global average pool and a Linear head, for chapter 13 (Fixup on a CNN).
- :class:`ElmanRNN`: a tanh RNN with or without LayerNorm on its summed inputs, for chapter
  ``07_layernorm``.

Layers keep PyTorch's default initialization (chapters that study initialization
re-initialize them with ``normlab.init``); only the seed is fixed here.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "ElmanRNN",
    "GlobalAvgPool2d",
    "ResidualBlock",
    "hidden_linear_layers",
    "mlp",
    "residual_blocks",
    "residual_cnn",
    "residual_mlp",
]

#: Names accepted by ``mlp(activation=...)`` and the modules they build.
ACTIVATIONS: Mapping[str, Callable[[], nn.Module]] = MappingProxyType(
    {
        "relu": nn.ReLU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "linear": nn.Identity,
        "selu": nn.SELU,
    }
)


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "relu",
    norm: Callable[[int], nn.Module] | None = None,
    bias: bool = True,
    seed: int = 0,
) -> nn.Sequential:
    """A multilayer perceptron: (Linear -> [norm] -> activation) per hidden width, then Linear.

    The normalization layer, built by calling ``norm(width)`` (for example
    ``torch.nn.BatchNorm1d``), sits between each hidden Linear and its
    nonlinearity, as in Ioffe & Szegedy (2015). Children are named ``linear0``,
    ``norm0``, ``act0``, ``linear1``, ... and ``output``, so ``model.linear0`` reads
    as it prints. Parameters use PyTorch's default initialization drawn from a
    CPU generator seeded by ``seed``; the global torch RNG state is left as it was.
    Used in chapter ``03_batchnorm_experiments`` and in every training experiment.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
    widths = [int(width) for width in hidden]
    for name, size in (("in_features", in_features), ("out_features", out_features)):
        if size < 1:
            raise ValueError(f"{name} must be at least 1; got {size}.")
    if any(width < 1 for width in widths):
        raise ValueError(f"Every hidden width must be at least 1; got hidden={widths}.")

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    with torch.random.fork_rng(devices=[]):
        # Only the CPU generator is seeded and restored: layers are built on the CPU,
        # and torch.manual_seed would also reseed (and not restore) every CUDA device.
        torch.default_generator.manual_seed(seed)
        previous = in_features
        for index, width in enumerate(widths):
            layers[f"linear{index}"] = nn.Linear(previous, width, bias=bias)
            if norm is not None:
                layers[f"norm{index}"] = _checked_norm(norm, width)
            layers[f"act{index}"] = ACTIVATIONS[activation]()
            previous = width
        layers["output"] = nn.Linear(previous, out_features, bias=bias)
    return nn.Sequential(layers)


def hidden_linear_layers(model: nn.Sequential) -> list[nn.Linear]:
    """The Linear layers that feed each nonlinearity of an :func:`mlp`, in order.

    Excludes the output layer. Chapters register forward hooks on these to record
    pre-activations layer by layer.
    Used in chapter ``04_internal_covariate_shift``.
    """
    names = [name for name, _ in model.named_children()] if isinstance(model, nn.Sequential) else []
    if "output" not in names:
        raise ValueError(
            "hidden_linear_layers expects a model built by normlab.models.mlp (an nn.Sequential with children "
            f"named linear0, ..., output); got a {type(model).__name__} with children {names}."
        )
    layers = []
    while f"linear{len(layers)}" in names:
        layers.append(getattr(model, f"linear{len(layers)}"))
    return layers


class ResidualBlock(nn.Module):
    """x ↦ x + scale · F(x), where F = ([norm] → activation → weight layer) twice (pre-activation).

    The pre-activation ordering follows He et al. (2016), "Identity mappings in deep
    residual networks": the skip path carries x untouched, so the residual stream is
    the sum of the branch outputs, and its variance grows with depth unless ``scale``
    (or the branch's last layer) is small. The branch is ``self.branch``, an
    ``nn.Sequential`` with children ``norm0, act0, linear0, norm1, act1, linear1``
    (norms only when a factory is given). With ``kernel_size`` set, the weight layers are
    ``width → width`` convolutions ``conv0``, ``conv1`` (odd ``kernel_size``, "same" padding, stride 1), so the
    block maps channels-first tensors (N, width, H, W) to the same shape; ``norm`` is then
    called with the number of channels (for example ``torch.nn.BatchNorm2d``).
    Used in chapters ``08_initialization``, section "Residual networks", and ``13_without_normalization``.
    """

    def __init__(self, width: int, activation: str, norm: Callable[[int], nn.Module] | None, scale: float,
                 bias: bool = True, kernel_size: int | None = None) -> None:
        super().__init__()
        if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be a positive odd number, so that 'same' padding is symmetric "
                             f"(or None for Linear layers); got {kernel_size}.")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for index in range(2):
            if norm is not None:
                layers[f"norm{index}"] = _checked_norm(norm, width)
            layers[f"act{index}"] = ACTIVATIONS[activation]()
            if kernel_size is None:
                layers[f"linear{index}"] = nn.Linear(width, width, bias=bias)
            else:
                layers[f"conv{index}"] = nn.Conv2d(width, width, kernel_size, padding="same", bias=bias)
        self.branch = nn.Sequential(layers)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.branch(x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class GlobalAvgPool2d(nn.Module):
    """(N, C, H, W) ↦ (N, C): the mean of each channel over its H × W positions (also (C, H, W) ↦ (C,)).

    The pooling between the convolutional body and the Linear head of :func:`residual_cnn`.
    Used in chapter ``13_without_normalization``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4):
            raise ValueError(f"GlobalAvgPool2d expects a channels-first image tensor (N, C, H, W) or (C, H, W); "
                             f"got shape {tuple(x.shape)}.")
        return x.mean(dim=(-2, -1))


def _checked_norm(norm: Callable[[int], nn.Module], width: int) -> nn.Module:
    layer = norm(width)
    if not isinstance(layer, nn.Module):
        raise ValueError(
            f"norm must be a factory that returns an nn.Module when called with a width, such as "
            f"torch.nn.BatchNorm1d; norm({width}) returned {type(layer).__name__}."
        )
    return layer


def residual_mlp(
    in_features: int,
    width: int,
    out_features: int,
    blocks: int,
    activation: str = "relu",
    norm: Callable[[int], nn.Module] | None = None,
    branch_scale: float = 1.0,
    zero_init_last: bool = False,
    bias: bool = True,
    seed: int = 0,
) -> nn.Sequential:
    """A residual MLP: Linear ``input`` → ``blocks`` × :class:`ResidualBlock` → [norm] → activation → Linear ``output``.

    Each block computes h + branch_scale · F(h). When each branch preserves the variance of
    its input (He-initialized ReLU branches), the stream's variance is multiplied by
    (1 + branch_scale²) per block: geometric growth, 2^B at scale 1, bounded (about e) at
    1/√B; it grows linearly only when each branch outputs a fixed variance, as with a
    normalization layer at its head. And
    ``zero_init_last=True`` zeroes each branch's last Linear (weights and bias), so every block starts as the
    identity (Goyal et al. 2017's zero-γ trick in Linear form). Children are named ``input``,
    ``block0`` … ``block{B-1}``, ``final_norm`` (only with a norm), ``final_act``, ``output``.
    Parameters use PyTorch's default initialization from a CPU generator seeded by
    ``seed``; the global RNG state is left as it was.
    Used in chapters ``08_initialization`` (residual scaling) and "WeightNorm" (scaled WeightNorm).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
    for name, size in (("in_features", in_features), ("width", width), ("out_features", out_features)):
        if size < 1:
            raise ValueError(f"{name} must be at least 1; got {size}.")
    if blocks < 0:
        raise ValueError(f"blocks must be non-negative; got {blocks}.")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        layers["input"] = nn.Linear(in_features, width, bias=bias)
        for index in range(blocks):
            block = ResidualBlock(width, activation, norm, branch_scale, bias=bias)
            if zero_init_last:
                last = block.branch.linear1
                nn.init.zeros_(last.weight)
                if last.bias is not None:
                    nn.init.zeros_(last.bias)
            layers[f"block{index}"] = block
        if norm is not None:
            layers["final_norm"] = _checked_norm(norm, width)
        layers["final_act"] = ACTIVATIONS[activation]()
        layers["output"] = nn.Linear(width, out_features, bias=bias)
    return nn.Sequential(layers)


def residual_cnn(
    in_channels: int,
    channels: int,
    out_features: int,
    blocks: int,
    image_size: tuple[int, int] | None = None,
    kernel_size: int = 3,
    activation: str = "relu",
    norm: Callable[[int], nn.Module] | None = None,
    branch_scale: float = 1.0,
    zero_init_last: bool = False,
    bias: bool = True,
    seed: int = 0,
) -> nn.Sequential:
    """A residual CNN: Conv2d ``input`` → ``blocks`` × :class:`ResidualBlock` → [norm] → activation → pool → Linear.

    The convolutional twin of :func:`residual_mlp`, with the same arguments (``channels`` for
    ``width``, ``norm`` a factory such as ``torch.nn.BatchNorm2d``): the stem ``input`` maps
    ``in_channels`` to ``channels`` with a ``kernel_size`` convolution, each block computes
    h + branch_scale · F(h) with F = ([norm] → activation → Conv2d) twice at constant width and
    resolution ("same" padding), ``pool`` (:class:`GlobalAvgPool2d`) averages each channel over
    the image and the Linear ``output`` maps ``channels`` to ``out_features``. Inputs are
    channels-first, (N, in_channels, H, W); with ``image_size=(H, W)`` a first child ``unflatten``
    takes the flat (N, in_channels·H·W) rows that :class:`normlab.data.Dataset` stores instead
    (scikit-learn's digits: ``in_channels=1, image_size=(8, 8)``). ``zero_init_last`` zeroes each
    branch's last convolution. Children: [``unflatten``], ``input``, ``block0`` …, [``final_norm``],
    ``final_act``, ``pool``, ``output``. PyTorch's default initialization from a CPU generator
    seeded by ``seed``; the global RNG state is left as it was.
    Used in chapter ``13_without_normalization`` (Fixup on a CNN).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}.")
    for name, size in (("in_channels", in_channels), ("channels", channels), ("out_features", out_features)):
        if size < 1:
            raise ValueError(f"{name} must be at least 1; got {size}.")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, so that 'same' padding is symmetric; "
                         f"got {kernel_size}.")
    if blocks < 0:
        raise ValueError(f"blocks must be non-negative; got {blocks}.")
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ValueError(f"image_size must be (height, width) of positive ints, or None; got {image_size!r}.")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        if image_size is not None:
            layers["unflatten"] = nn.Unflatten(1, (in_channels, *(int(n) for n in image_size)))
        layers["input"] = nn.Conv2d(in_channels, channels, kernel_size, padding="same", bias=bias)
        for index in range(blocks):
            block = ResidualBlock(channels, activation, norm, branch_scale, bias=bias, kernel_size=kernel_size)
            if zero_init_last:
                nn.init.zeros_(block.branch.conv1.weight)
                if block.branch.conv1.bias is not None:
                    nn.init.zeros_(block.branch.conv1.bias)
            layers[f"block{index}"] = block
        if norm is not None:
            layers["final_norm"] = _checked_norm(norm, channels)
        layers["final_act"] = ACTIVATIONS[activation]()
        layers["pool"] = GlobalAvgPool2d()
        layers["output"] = nn.Linear(channels, out_features, bias=bias)
    return nn.Sequential(layers)


def residual_blocks(model: nn.Sequential) -> list[ResidualBlock]:
    """The :class:`ResidualBlock` children of a :func:`residual_mlp` or :func:`residual_cnn`, in order.

    For hooks on the stream.

    Used in chapter ``08_initialization``, section "Residual networks".
    """
    blocks = [module for module in model.children() if isinstance(module, ResidualBlock)]
    if not isinstance(model, nn.Sequential) or not hasattr(model, "output"):
        raise ValueError(f"residual_blocks expects a model built by normlab.models.residual_mlp or "
                         f"residual_cnn; got {type(model).__name__}.")
    return blocks


class ElmanRNN(nn.Module):
    """A tanh RNN, with LayerNorm on the summed inputs (Ba, Kiros & Hinton 2016, §3.1) or without.

    a_t = W_hh h_{t−1} + W_xh x_t,  h_t = tanh(g/σ_t ⊙ (a_t − μ_t) + b)  with ``layer_norm=True``
    (μ_t, σ_t over the hidden units of each example at each step: normlab's :class:`LayerNorm`),
    h_t = tanh(a_t + b) without; h_0 = 0; the output at each step is a Linear of h_t.
    W_hh starts as ``recurrent_gain`` times a random orthogonal matrix, W_xh with entries of
    variance 1/input_size; all drawn from a generator seeded by ``seed``. ``norm_layer`` builds
    the LayerNorm: ``torch.nn.LayerNorm`` by default because it runs 50 times per sequence and
    the fused built-in is cheaper per call than :class:`normlab.layers.LayerNorm` (a Python
    ``autograd.Function``), which is a drop-in replacement computing the same function.
    Used in chapter ``07_layernorm``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, layer_norm: bool,
                 recurrent_gain: float = 1.0, seed: int = 0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight_ih = nn.Parameter(torch.randn(hidden_size, input_size, generator=g) / math.sqrt(input_size))
        self.weight_hh = nn.Parameter(torch.linalg.qr(torch.randn(hidden_size, hidden_size, generator=g))[0]
                                      * recurrent_gain)
        self.norm = norm_layer(hidden_size) if layer_norm else None
        self.bias = None if layer_norm else nn.Parameter(torch.zeros(hidden_size))  # LN's β is the bias
        self.output = nn.Linear(hidden_size, output_size)
        with torch.no_grad():
            self.output.weight.copy_(torch.randn(output_size, hidden_size, generator=g) / math.sqrt(hidden_size))
            self.output.bias.zero_()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x of shape (N, T, input_size) → (outputs (N, T, out), summed inputs a (N, T, H), h (N, T, H))."""
        if x.dim() != 3:
            raise ValueError(f"ElmanRNN expects input of shape (N, T, input_size); got shape {tuple(x.shape)}.")
        h = x.new_zeros(x.shape[0], self.weight_hh.shape[0])
        summed, hidden = [], []
        inputs = x @ self.weight_ih.T
        for t in range(x.shape[1]):
            a = h @ self.weight_hh.T + inputs[:, t]
            h = torch.tanh(self.norm(a) if self.norm is not None else a + self.bias)
            summed.append(a)
            hidden.append(h)
        hidden_t = torch.stack(hidden, 1)
        return self.output(hidden_t), torch.stack(summed, 1), hidden_t
