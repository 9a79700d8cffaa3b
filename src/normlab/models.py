"""Seeded multilayer perceptrons with an optional normalization layer per block.

- :func:`mlp`: Linear -> [norm] -> activation for each hidden width, then a Linear head.
- :func:`hidden_linear_layers`: the hidden Linear layers of such a model, for hooks.

Layers keep PyTorch's default initialization (chapters that study initialization
re-initialize them with ``normlab.init``); only the seed is fixed here.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "hidden_linear_layers", "mlp"]

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
    Used in chapter "Batch normalization" and in every training experiment.
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
                layer = norm(width)
                if not isinstance(layer, nn.Module):
                    raise ValueError(
                        f"norm must be a factory that returns an nn.Module when called with a width, such as "
                        f"torch.nn.BatchNorm1d; norm({width}) returned {type(layer).__name__}."
                    )
                layers[f"norm{index}"] = layer
            layers[f"act{index}"] = ACTIVATIONS[activation]()
            previous = width
        layers["output"] = nn.Linear(previous, out_features, bias=bias)
    return nn.Sequential(layers)


def hidden_linear_layers(model: nn.Sequential) -> list[nn.Linear]:
    """The Linear layers that feed each nonlinearity of an :func:`mlp`, in order.

    Excludes the output layer. Chapters register forward hooks on these to record
    pre-activations layer by layer.
    Used in chapter "Internal covariate shift".
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
