"""The maximal-update parametrization (μP) of an MLP and its coordinate check (Yang & Hu, ICML 2021, arXiv:2011.14522).

A parametrization says how the initial variance and the learning rate of each layer scale
with the width n. Under the standard parametrization (SP: every weight N(0, 1/fan_in), one
learning rate η) a step of SGD changes the logits by an amount that grows with n: the output
layer's update ΔW = −η δ hᵀ has entries of size η, and ΔW·h sums n of them coherently. μP
(Tensor Programs IV, Table 3 for SGD; Tensor Programs V for the base-width convention) makes
every layer's *feature change* Θ(1) in n instead:

    layer            init variance of W        SGD learning rate
    input  (d → n)   1/d                       η · n/n₀
    hidden (n → n)   1/n                       η
    output (n → k)   (1/n) · (n₀/n)            η · n₀/n                                 (1)

n₀ is a base width at which μP equals SP (Tensor Programs V's ``base_shapes``), so an η tuned
at width n₀ transfers. With one optimizer and one learning rate, (1) is realized by a fixed
multiplier a on each layer, W = a·w with w trained: SGD on w changes W by a²× the step on W,
and W's variance is a²·Var[w] (the abc-parametrization of Tensor Programs IV):

    input:  a = √(n/n₀),  Var[w] = n₀/(n d)      output:  a = √(n₀/n),  Var[w] = 1/n        (2)

- :class:`MultipliedLinear`: a bias-free Linear computing x·(a w)ᵀ.
- :func:`mlp`: an SP or μP ReLU MLP of a given width (no biases).
- :func:`coordinate_check`: the size of the change of the logits and of the last hidden
  activations after a few SGD steps, across widths (Yang et al. 2022, Tensor Programs V,
  section "coordinate check"): growing with width under SP, flat under μP.

Chapter ``13_without_normalization``, section "μP".
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PARAMETRIZATIONS", "CoordinateCheckRecord", "MultipliedLinear", "coordinate_check", "mlp"]

PARAMETRIZATIONS = ("sp", "mup")


class MultipliedLinear(nn.Module):
    """y = x (a·w)ᵀ: a bias-free Linear whose trained weight w is multiplied by a fixed scalar a (``multiplier``).

    ``w`` (``weight``, shape (out_features, in_features)) is drawn from N(0, ``init_std``²) by
    :meth:`reset_parameters` with ``generator``. SGD with learning rate η on w moves the
    effective weight a·w as SGD with learning rate a²η would move it.
    """

    def __init__(self, in_features: int, out_features: int, multiplier: float = 1.0, init_std: float | None = None,
                 generator: torch.Generator | None = None, device=None, dtype=None) -> None:
        super().__init__()
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"{name} must be a positive int; got {size!r}.")
        if not (math.isfinite(multiplier) and multiplier > 0):
            raise ValueError(f"multiplier must be a finite number > 0; got {multiplier!r}.")
        if init_std is not None and not (math.isfinite(init_std) and init_std >= 0):
            raise ValueError(f"init_std must be a finite number >= 0; got {init_std!r}.")
        self.in_features, self.out_features = in_features, out_features
        self.multiplier = float(multiplier)
        self.init_std = 1.0 / math.sqrt(in_features) if init_std is None else float(init_std)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.weight.normal_(0.0, self.init_std, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(f"expected input of shape (*, {self.in_features}); got {tuple(x.shape)}.")
        return F.linear(x, self.multiplier * self.weight)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"multiplier={self.multiplier:g}, init_std={self.init_std:.4g}")


def _layer_settings(parametrization: str, fan_in: int, width: int, base_width: int, kind: str) -> tuple[float, float]:
    """(multiplier a, init std of w) of equation (2) for one layer of ``kind`` input/hidden/output."""
    if parametrization == "sp" or kind == "hidden":
        return 1.0, 1.0 / math.sqrt(fan_in)
    ratio = width / base_width
    if kind == "input":
        return math.sqrt(ratio), 1.0 / math.sqrt(fan_in * ratio)   # W = a·w has Var 1/d, LR η·n/n₀
    return math.sqrt(1.0 / ratio), 1.0 / math.sqrt(fan_in)         # W has Var n₀/n², LR η·n₀/n


def mlp(in_features: int, width: int, out_features: int, depth: int = 3, parametrization: str = "sp",
        base_width: int = 64, seed: int = 0) -> nn.Sequential:
    """A bias-free ReLU MLP with ``depth`` hidden layers of ``width`` units, in SP or μP (equations (1)-(2)).

    Children ``input``, ``act0``, ``hidden1``, ``act1``, ..., ``output``, all :class:`MultipliedLinear`.
    At ``width == base_width`` both parametrizations build the same network (same draws for a seed).
    """
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"Unknown parametrization {parametrization!r}; choose one of {list(PARAMETRIZATIONS)}.")
    if depth < 1:
        raise ValueError(f"depth must be at least 1 hidden layer; got {depth}.")
    if not isinstance(base_width, int) or base_width < 1:
        raise ValueError(f"base_width must be a positive int; got {base_width!r}.")
    generator = torch.Generator().manual_seed(seed)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    shapes = [(in_features, width, "input")] + [(width, width, "hidden")] * (depth - 1) + [(width, out_features,
                                                                                              "output")]
    for index, (fan_in, fan_out, kind) in enumerate(shapes):
        a, std = _layer_settings(parametrization, fan_in, width, base_width, kind)
        name = "input" if kind == "input" else "output" if kind == "output" else f"hidden{index}"
        layers[name] = MultipliedLinear(fan_in, fan_out, multiplier=a, init_std=std, generator=generator)
        if kind != "output":
            layers[f"act{index}"] = nn.ReLU()
    return nn.Sequential(layers)


@dataclass
class CoordinateCheckRecord:
    """Coordinate sizes after t SGD steps, per width, for one parametrization.

    ``logit_change[k, t]`` is the root mean square over examples and classes of the change of the
    logits f_t(x) − f_0(x) after t + 1 steps at width ``widths[k]``; ``feature_change[k, t]`` the
    same for the last hidden layer's activations; ``logits[k, t]`` the root mean square of f_t(x).
    """

    parametrization: str
    widths: np.ndarray
    lr: float
    logit_change: np.ndarray
    feature_change: np.ndarray
    logits: np.ndarray


def coordinate_check(x: Tensor, y: Tensor, widths: Sequence[int] = (64, 128, 256, 512, 1024),
                     parametrization: str = "sp", lr: float = 0.1, steps: int = 3, depth: int = 3,
                     base_width: int = 64, num_classes: int | None = None, seed: int = 0) -> CoordinateCheckRecord:
    """Yang et al.'s coordinate check: train :func:`mlp` for ``steps`` full-batch SGD steps on (``x``, ``y``)
    (cross-entropy, learning rate ``lr``) at each width, and record how much the logits and the last hidden
    activations moved, in root-mean-square per coordinate. Same ``seed`` at every width."""
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"x must have shape (n, d) and y shape (n,); got {tuple(x.shape)} and {tuple(y.shape)}.")
    if steps < 1 or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"need steps >= 1 and a finite lr > 0; got steps={steps}, lr={lr}.")
    classes = int(y.max()) + 1 if num_classes is None else num_classes
    logit_change, feature_change, logits = [], [], []
    for width in widths:
        net = mlp(x.shape[1], int(width), classes, depth, parametrization, base_width, seed)
        features = nn.Sequential(*list(net.children())[:-1])
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        with torch.no_grad():
            f0, h0 = net(x), features(x)
        rows = ([], [], [])
        # own loop: full-batch steps on the given (x, y), with the logits and features measured after each one;
        # there is no dataset with a test split to hand to train.train, and nothing of its log is needed.
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
            with torch.no_grad():
                f, h = net(x), features(x)
            rows[0].append((f - f0).pow(2).mean().sqrt().item())
            rows[1].append((h - h0).pow(2).mean().sqrt().item())
            rows[2].append(f.pow(2).mean().sqrt().item())
        logit_change.append(rows[0]); feature_change.append(rows[1]); logits.append(rows[2])
    return CoordinateCheckRecord(parametrization, np.asarray(widths), float(lr), np.asarray(logit_change),
                                 np.asarray(feature_change), np.asarray(logits))
