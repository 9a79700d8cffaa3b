"""Weight normalization (Salimans & Kingma 2016) and its two initializations.

- :class:`WeightNormLinear`: a Linear layer whose weight is reparameterized per output
  unit as w = g · v / ‖v‖, with parameters ``g`` (out_features,) and ``v``
  (out_features, in_features).
- :func:`weight_norm_grads`: the gradients with respect to g and v from the gradient
  with respect to w, in closed form.
- :func:`data_dependent_init_`, :func:`data_dependent_init_network_`: Salimans & Kingma's
  data-dependent initialization of g and the bias.
- :func:`scaled_weight_norm_init_`, :func:`scaled_weight_norm_gain`: Arpit, Campos &
  Bengio's (2019) initialization: orthogonal v and g = √(k · fan_in / fan_out).

The equations, for one output unit with weight row w, direction v and length g:

    w = g · v / ‖v‖                                                           (1)
    ∇g L = ∇w L · v / ‖v‖                                                     (2)
    ∇v L = g / ‖v‖ · M_w ∇w L,    M_w = I − w wᵀ / ‖w‖²                        (3)

so v ⊥ ∇v L, and a plain SGD step v ← v − η ∇v L grows the length of v:
‖v_{t+1}‖² = ‖v_t‖² + η² ‖∇v L‖².                                             (4)

Chapter ``06_weightnorm``.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normlab import init as nl_init

__all__ = [
    "WeightNormLinear",
    "data_dependent_init_",
    "data_dependent_init_network_",
    "scaled_weight_norm_gain",
    "scaled_weight_norm_init_",
    "weight_norm_grads",
    "weight_norm_layers",
]


class WeightNormLinear(nn.Module):
    r"""A Linear layer with weight normalization: y = x wᵀ + b with w_i = g_i · v_i / ‖v_i‖.

    Each row of the weight (one output unit) has its own length ``g[i]`` and direction
    ``v[i]``; the layer's output depends on v only through v / ‖v‖, so it is invariant to
    rescaling any row of v. The same function as
    ``torch.nn.utils.parametrizations.weight_norm(nn.Linear(in, out))``, whose parameters
    ``parametrizations.weight.original0`` and ``original1`` are ``g.view(-1, 1)`` and
    ``v`` here. Nothing depends on the batch: train and eval modes compute the same
    thing, and a batch of one is fine.

    Parameters ``g`` (out_features,), ``v`` (out_features, in_features) and, if
    ``bias``, ``bias`` (out_features,). The default initialization draws v as
    ``nn.Linear`` draws its weight and sets g = ‖v‖ row by row (as torch's weight_norm
    does), so at initialization the layer computes what ``nn.Linear`` would;
    :func:`data_dependent_init_` and :func:`scaled_weight_norm_init_` re-initialize it.

    >>> layer = WeightNormLinear(5, 3)
    >>> layer(torch.randn(1, 5)).shape
    torch.Size([1, 3])

    Derived in chapter ``06_weightnorm``.
    """

    in_features: int
    out_features: int

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(size, int) or size < 1:
                raise ValueError(f"WeightNormLinear needs {name} to be a positive integer; got {size!r}.")
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.g = nn.Parameter(torch.empty(out_features, **factory_kwargs))
        self.v = nn.Parameter(torch.empty(out_features, in_features, **factory_kwargs))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """v and the bias as ``nn.Linear`` draws its weight and bias; g = ‖v‖ per row."""
        nn.init.kaiming_uniform_(self.v, a=math.sqrt(5))
        with torch.no_grad():
            self.g.copy_(self.v.norm(dim=1))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def weight(self) -> Tensor:
        """The effective weight w = g · v / ‖v‖ (1), shape (out_features, in_features)."""
        return self.v * (self.g / self.v.norm(dim=1)).unsqueeze(1)

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() == 0 or input.shape[-1] != self.in_features:
            raise ValueError(
                f"WeightNormLinear was built with in_features={self.in_features} but got input of shape "
                f"{tuple(input.shape)}; the last dimension must be {self.in_features}."
            )
        return F.linear(input, self.weight, self.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> WeightNormLinear:
        """A WeightNormLinear computing the same function as ``linear``: v = its weight, g = ‖v‖ per row."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.v.copy_(linear.weight)
            layer.g.copy_(linear.weight.norm(dim=1))
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def weight_norm_grads(v: Tensor, g: Tensor, grad_w: Tensor) -> tuple[Tensor, Tensor]:
    r"""The gradients (∇g L, ∇v L) of weight normalization, given ∇w L, row by row.

    Implements equations (2) and (3) of the module docstring for a weight of shape
    (out, in) with w_i = g_i v_i / ‖v_i‖:

    .. math::

        \nabla_{g} L = \frac{\nabla_{w} L \cdot v}{\lVert v\rVert}, \qquad
        \nabla_{v} L = \frac{g}{\lVert v\rVert}\Big(I - \frac{w w^\top}{\lVert w\rVert^2}\Big)\nabla_{w} L .

    Used in chapter ``06_weightnorm``, section "Gradients".
    """
    if v.dim() != 2 or grad_w.shape != v.shape or g.shape != v.shape[:1]:
        raise ValueError(f"weight_norm_grads expects v and grad_w of the same shape (out, in) and g of shape "
                         f"(out,); got v {tuple(v.shape)}, g {tuple(g.shape)}, grad_w {tuple(grad_w.shape)}.")
    norm = v.norm(dim=1, keepdim=True)
    direction = v / norm  # w / ‖w‖ (up to the sign of g)
    grad_g = (grad_w * direction).sum(dim=1)  # (2)
    projected = grad_w - direction * (grad_w * direction).sum(dim=1, keepdim=True)  # M_w ∇w L
    grad_v = (g.unsqueeze(1) / norm) * projected  # (3)
    return grad_g, grad_v


# ---------------------------------------------------------------------------- initializations


def _check_weight_norm_layer(layer: nn.Module, who: str) -> None:
    if not isinstance(layer, WeightNormLinear):
        raise ValueError(f"{who} expects a normlab.layers.WeightNormLinear; got {type(layer).__name__}. "
                         f"Convert an nn.Linear with WeightNormLinear.from_linear(linear).")


@torch.no_grad()
def data_dependent_init_(layer: WeightNormLinear, x: Tensor, eps: float = 1e-8) -> Tensor:
    r"""Salimans & Kingma's data-dependent initialization of one layer, in place.

    With the layer's direction v kept, compute t = x · (v / ‖v‖)ᵀ per output unit on
    the batch ``x``, then set

    .. math::

        g \leftarrow \frac{1}{\sigma[t]}, \qquad b \leftarrow -\frac{\mu[t]}{\sigma[t]},

    so that the pre-activations g·t + b on this batch have mean 0 and (biased) variance
    1 per unit. Returns those pre-activations, so the caller can pass them on through
    the nonlinearity to initialize the next layer. Needs a bias and a batch of at least
    two examples; ``eps`` guards σ = 0 (a unit constant on the batch).
    Used in chapter ``06_weightnorm``, section "Data-dependent initialization".
    """
    _check_weight_norm_layer(layer, "data_dependent_init_")
    if layer.bias is None:
        raise ValueError("data_dependent_init_ sets the bias to −μ/σ, but the layer has no bias; build it with "
                         "bias=True, or centre its output with MeanOnlyBatchNorm1d instead.")
    if x.dim() != 2 or x.shape[0] < 2 or x.shape[1] != layer.in_features:
        raise ValueError(f"data_dependent_init_ needs a batch of shape (N, {layer.in_features}) with N ≥ 2 to "
                         f"estimate a mean and a variance; got {tuple(x.shape)}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("data_dependent_init_ got a batch containing NaN or Inf; its statistics would set g "
                         "and b to NaN.")
    t = F.linear(x, layer.v / layer.v.norm(dim=1, keepdim=True))
    mean = t.mean(dim=0)
    std = t.var(dim=0, unbiased=False).add(eps).sqrt()
    layer.g.copy_(1.0 / std)
    layer.bias.copy_(-mean / std)
    return layer(x)


@torch.no_grad()
def data_dependent_init_network_(model: nn.Module, x: Tensor) -> list[WeightNormLinear]:
    """Data-dependent initialization of every WeightNormLinear of ``model``, first to last.

    Layer by layer, in the order of ``model.modules()`` (the order of the forward pass
    for a sequential model): run the model on ``x`` up to that layer, capture the
    layer's input and call :func:`data_dependent_init_` on it, so each layer is
    initialized on the activations that the already initialized layers below it
    produce. Returns the layers initialized.
    Used in chapter ``06_weightnorm``, section "Data-dependent initialization".
    """
    layers = weight_norm_layers(model)
    if not layers:
        raise ValueError(f"data_dependent_init_network_ found no WeightNormLinear in {type(model).__name__}.")

    class _Stop(Exception):
        pass

    for layer in layers:
        captured: list[Tensor] = []

        def grab(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            captured.append(inputs[0])
            raise _Stop

        handle = layer.register_forward_pre_hook(grab)
        try:
            model(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        data_dependent_init_(layer, captured[0])
    return layers


def scaled_weight_norm_gain(fan_in: int, fan_out: int, nonlinearity: str = "relu",
                            residual_blocks: int | None = None) -> float:
    r"""Arpit, Campos & Bengio's (2019) initial length g = √(k · fan_in / fan_out).

    k = 2 for a layer whose output goes through a ReLU (``"relu"``), k = 1 for a layer
    whose output does not (``"linear"``); for the last layer of each of B residual
    branches (``residual_blocks=B``) k is divided by B. With v orthogonal (or any
    direction uniform on the sphere) and zero bias, a layer h = φ(W u) with this g keeps
    the squared norm in expectation: E‖h‖² = ‖u‖² (ReLU, k = 2) or E‖W u‖² = ‖u‖²
    (linear, k = 1). The ratio fan_in/fan_out is the one that preserves the *forward*
    pass; the backward pass would need k alone (no fan ratio). The two coincide when
    fan_in = fan_out. This is the ratio of the paper's code (``proposed_weight_norm_g_init``).
    Used in chapter ``06_weightnorm``, section "Scaled WeightNorm".
    """
    gains = {"relu": 2.0, "linear": 1.0}
    if nonlinearity not in gains:
        raise ValueError(f"nonlinearity must be one of {sorted(gains)}; got {nonlinearity!r}.")
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fan_in and fan_out must be positive; got {fan_in} and {fan_out}.")
    k = gains[nonlinearity]
    if residual_blocks is not None:
        if residual_blocks < 1:
            raise ValueError(f"residual_blocks must be a positive number of blocks; got {residual_blocks}.")
        k /= residual_blocks
    return math.sqrt(k * fan_in / fan_out)


@torch.no_grad()
def scaled_weight_norm_init_(layer: WeightNormLinear, nonlinearity: str = "relu",
                             residual_blocks: int | None = None,
                             generator: torch.Generator | None = None) -> WeightNormLinear:
    """Arpit, Campos & Bengio's (2019) initialization of one WeightNorm layer, in place.

    v is a (semi-)orthogonal matrix (:func:`normlab.init.orthogonal_`), every g_i is
    :func:`scaled_weight_norm_gain` (fan_in, fan_out, ``nonlinearity``,
    ``residual_blocks``) and the bias is 0. Returns the layer.
    Used in chapter ``06_weightnorm``, section "Scaled WeightNorm".
    """
    _check_weight_norm_layer(layer, "scaled_weight_norm_init_")
    nl_init.orthogonal_(layer.v, generator=generator)
    layer.g.fill_(scaled_weight_norm_gain(layer.in_features, layer.out_features, nonlinearity, residual_blocks))
    if layer.bias is not None:
        layer.bias.zero_()
    return layer


def weight_norm_layers(model: nn.Module) -> list[WeightNormLinear]:
    """The WeightNormLinear layers of ``model``, in ``model.modules()`` order.

    Used in chapter ``06_weightnorm``.
    """
    return [m for m in model.modules() if isinstance(m, WeightNormLinear)]
