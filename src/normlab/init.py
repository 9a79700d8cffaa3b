"""Weight initialization schemes, written out from their variance formulas.

Names and signatures follow :mod:`torch.nn.init`, so ``normlab.init.kaiming_normal_``
can replace ``torch.nn.init.kaiming_normal_`` anywhere; every scheme fills a tensor
in place under ``torch.no_grad()``, returns it, and takes an optional
``generator`` to draw from. Nothing here calls :mod:`torch.nn.init`.

- :func:`calculate_gain`: the gain that keeps a nonlinearity's output variance steady.
- :func:`calculate_fan_in_and_fan_out`: fans of a Linear or Conv weight.
- :func:`zeros_`, :func:`normal_`: the constant and plain Gaussian fills.
- :func:`xavier_uniform_`, :func:`xavier_normal_`: Var[W] = gain^2 * 2 / (fan_in + fan_out).
- :func:`kaiming_uniform_`, :func:`kaiming_normal_`: Var[W] = gain^2 / fan.
- :func:`orthogonal_`: a (semi-)orthogonal matrix times gain.
- :func:`lsuv_`: layer-sequential unit-variance rescaling of a whole model.
- :func:`fixup_`, :func:`fixup_scale`: Fixup's rescaled initialization of a residual MLP or CNN without norms.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from normlab.probes import in_mode

__all__ = [
    "calculate_fan_in_and_fan_out",
    "calculate_gain",
    "fixup_",
    "fixup_scale",
    "kaiming_normal_",
    "kaiming_uniform_",
    "lsuv_",
    "normal_",
    "orthogonal_",
    "xavier_normal_",
    "xavier_uniform_",
    "zeros_",
]

#: Nonlinearities whose gain is 1: the linear maps, and the sigmoid (as in torch).
_UNIT_GAIN = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
)
_NONLINEARITIES = (*_UNIT_GAIN, "tanh", "relu", "leaky_relu", "selu")
_MODES = ("fan_in", "fan_out")

#: Layers that :func:`lsuv_` orthogonalizes and rescales.
_LSUV_LAYERS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain g that keeps activations' variance steady through ``nonlinearity``.

    Schemes multiply their standard deviation by g so that a layer followed by the
    nonlinearity neither shrinks nor grows the signal's second moment:

        linear, conv*, sigmoid: 1     tanh: 5/3     relu: sqrt(2)
        leaky_relu: sqrt(2 / (1 + negative_slope^2))  (``param``, default 0.01)
        selu: 3/4

    The ReLU value follows from E[relu(z)^2] = Var[z] / 2 for a symmetric z (He et
    al. 2015); the values match :func:`torch.nn.init.calculate_gain`.
    Used in chapter ``08_initialization``.
    """
    if nonlinearity in _UNIT_GAIN:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            negative_slope = param
        else:
            raise ValueError(f"leaky_relu's negative slope (param) must be a number; got {param!r}.")
        return math.sqrt(2.0 / (1 + negative_slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unknown nonlinearity {nonlinearity!r}; choose one of {list(_NONLINEARITIES)}.")


def calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
    """Fan-in and fan-out of a weight of shape (out, in, *kernel).

    fan_in = in * prod(kernel) and fan_out = out * prod(kernel): the number of
    inputs that feed one output unit and of outputs one input unit feeds, for a
    Linear weight (out, in) and a Conv weight (out, in / groups, k1, k2, ...).
    Computed as :mod:`torch.nn.init` computes it (a ConvTranspose weight, stored
    as (in, out / groups, *kernel), therefore has its fans swapped, as in torch).
    Used in chapter ``08_initialization``.
    """
    if tensor.dim() < 2:
        raise ValueError(
            f"Fan-in and fan-out need a weight with at least 2 dimensions (out, in, *kernel); got a tensor of shape "
            f"{tuple(tensor.shape)}. Initialize biases and 1-d parameters with zeros_ or normal_ instead."
        )
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _fan(tensor: Tensor, mode: str) -> int:
    if mode not in _MODES:
        raise ValueError(f"Unknown mode {mode!r}; choose one of {list(_MODES)}.")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def zeros_(tensor: Tensor) -> Tensor:
    """Fill ``tensor`` with zeros (the usual bias initialization).

    Used in chapter ``08_initialization``.
    """
    with torch.no_grad():
        return tensor.zero_()


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Fill ``tensor`` with independent draws from N(mean, std^2).

    Every other Gaussian scheme here is this one with std set from a variance formula.
    Used in chapter ``08_initialization``.
    """
    with torch.no_grad():
        return tensor.normal_(mean, std, generator=generator)


def _uniform_with_std(tensor: Tensor, std: float, generator: torch.Generator | None) -> Tensor:
    # U(-b, b) has variance b^2 / 3, so b = sqrt(3) * std.
    bound = math.sqrt(3.0) * std
    with torch.no_grad():
        return tensor.uniform_(-bound, bound, generator=generator)


def xavier_uniform_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Glorot & Bengio (2010) uniform: W ~ U(-b, b) with Var[W] = gain^2 * 2 / (fan_in + fan_out).

    The bound is b = gain * sqrt(6 / (fan_in + fan_out)). The variance 2 / (fan_in +
    fan_out) is the compromise between 1 / fan_in (which keeps the forward variance
    of a linear layer steady) and 1 / fan_out (which keeps the backward variance steady).
    Used in chapter ``08_initialization``.
    """
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    if tensor.numel() == 0:
        return tensor
    return _uniform_with_std(tensor, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def xavier_normal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Glorot & Bengio (2010) normal: W ~ N(0, gain^2 * 2 / (fan_in + fan_out)).

    Same variance as :func:`xavier_uniform_`, drawn from a Gaussian.
    Used in chapter ``08_initialization``.
    """
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    if tensor.numel() == 0:
        return tensor
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), generator)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He et al. (2015) uniform: W ~ U(-b, b) with Var[W] = gain^2 / fan.

    gain = calculate_gain(nonlinearity, a), which is sqrt(2) for ReLU (and for the
    default leaky_relu with a = 0), and fan is fan_in (``mode="fan_in"``: keeps the
    variance of the forward pass steady) or fan_out (``mode="fan_out"``: keeps the
    variance of back-propagated gradients steady). The bound is b = gain * sqrt(3 / fan).
    Used in chapter ``08_initialization``.
    """
    fan = _fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    if tensor.numel() == 0:
        return tensor
    return _uniform_with_std(tensor, gain / math.sqrt(fan), generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """He et al. (2015) normal: W ~ N(0, gain^2 / fan), gain sqrt(2) for ReLU.

    Same variance as :func:`kaiming_uniform_`, drawn from a Gaussian.
    Used in chapter ``08_initialization``.
    """
    fan = _fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    if tensor.numel() == 0:
        return tensor
    return normal_(tensor, 0.0, gain / math.sqrt(fan), generator)


def orthogonal_(tensor: Tensor, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Saxe et al. (2014): a (semi-)orthogonal matrix Q times gain.

    The tensor is viewed as a matrix W of shape (rows, cols) = (shape[0], the product
    of the rest). For rows >= cols the columns are orthonormal, W^T W = gain^2 I; for
    rows < cols the rows are, W W^T = gain^2 I. Q comes from the QR decomposition of
    a Gaussian matrix, with the signs of R's diagonal moved into Q so that Q is
    distributed uniformly (Haar) over such matrices (Mezzadri 2007). The
    decomposition runs in float64 and is copied into ``tensor``'s dtype.

    Each singular value of W equals gain, so a deep linear network of orthogonal
    layers has an input-output Jacobian with every singular value gain^depth.
    Used in chapter ``08_initialization``.
    """
    if tensor.dim() < 2:
        raise ValueError(
            f"orthogonal_ needs a tensor with at least 2 dimensions (it is viewed as a matrix of shape "
            f"(shape[0], rest)); got shape {tuple(tensor.shape)}."
        )
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    gaussian = torch.empty(max(rows, cols), min(rows, cols), dtype=torch.float64, device=tensor.device)
    gaussian.normal_(0.0, 1.0, generator=generator)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.diagonal(r).sign()
    if rows < cols:
        q = q.T
    with torch.no_grad():
        tensor.copy_((gain * q).reshape(tensor.shape))
    return tensor


def lsuv_(model: nn.Module, data: Tensor, tol: float = 0.1, max_iters: int = 10) -> dict[str, float]:
    """Layer-sequential unit-variance initialization (Mishkin & Matas 2016).

    First every Linear and Conv weight gets :func:`orthogonal_` (gain 1). Then, for
    each such layer in the order the forward pass first reaches it, the batch
    ``data`` is run through ``model`` and the variance v of all the values the layer
    outputs is measured (about their mean, without Bessel's correction); while
    |v - 1| >= tol and fewer than ``max_iters`` rescalings have been made,

        W <- W / sqrt(v)

    and v is measured again. Layers are done one after another, so each is
    rescaled for the input that the already rescaled layers before it produce.
    Biases are left as they are; a bias with large spread across units can keep a
    layer from reaching unit variance, which the returned values show.

    The passes run under ``torch.no_grad()`` in eval mode (no dropout, and
    BatchNorm's running statistics stay as they are); every submodule's
    train/eval flag is restored afterwards. The orthogonal matrices are drawn from
    the global torch generator. Returns the final variance of each layer's output,
    keyed by its name in ``model.named_modules()`` and in the order processed.
    Layers the forward pass never reaches are orthogonalized but not rescaled and
    are not in the result.
    Used in chapter ``08_initialization``.
    """
    if tol <= 0:
        raise ValueError(f"tol must be positive (LSUV stops when |Var - 1| < tol); got {tol}.")
    if max_iters < 0:
        raise ValueError(f"max_iters must be a non-negative number of rescalings per layer; got {max_iters}.")
    names = {module: name for name, module in model.named_modules() if isinstance(module, _LSUV_LAYERS)}
    if not names:
        raise ValueError(
            f"lsuv_ rescales Linear and Conv layers; the {type(model).__name__} given has none "
            f"({', '.join(sorted({type(m).__name__ for m in model.modules()}))})."
        )
    for module in names:
        orthogonal_(module.weight)

    with in_mode(model, training=False):
        order: list[nn.Module] = []

        def record_order(module: nn.Module, _inputs: tuple, _output: object) -> None:
            if module not in order:
                order.append(module)

        handles = [module.register_forward_hook(record_order) for module in names]
        try:
            with torch.no_grad():
                model(data)
        finally:
            for handle in handles:
                handle.remove()

        variances: dict[str, float] = {}
        for module in order:
            variance = _output_variance(model, module, data)
            for _ in range(max_iters):
                if abs(variance - 1.0) < tol:
                    break
                if not math.isfinite(variance) or variance <= 0:
                    raise ValueError(
                        f"lsuv_ cannot rescale layer {names[module]!r}: the variance of its output on the batch is "
                        f"{variance}. Check that data varies and that the layers before it pass signal through."
                    )
                with torch.no_grad():
                    module.weight.div_(math.sqrt(variance))
                variance = _output_variance(model, module, data)
            variances[names[module]] = variance
    return variances


def _output_variance(model: nn.Module, module: nn.Module, data: Tensor) -> float:
    captured: list[Tensor] = []

    def on_output(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        if not captured:
            captured.append(output.detach().to(torch.float64))

    handle = module.register_forward_hook(on_output)
    try:
        with torch.no_grad():
            model(data)
    finally:
        handle.remove()
    return captured[0].var(correction=0).item()


# ----------------------------------------------------------------------------- Fixup (appended for chapter 13)


def fixup_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Fixup initialization (Zhang, Dauphin & Ma, ICLR 2019) of a residual network without normalization.

    ``model`` is a :func:`normlab.models.residual_mlp` or :func:`normlab.models.residual_cnn` built
    with ``norm=None`` and ``branch_scale=1``. The paper's three rules, for L residual branches of m
    weight layers each (Linear or Conv2d; m = 2 here), applied in the same way to both:

    1. the classifier (``output``) and the last weight layer of every branch start at zero;
    2. every other weight layer gets a standard initialization, N(0, gain²/fan_in) with fan_in the
       number of inputs of one output unit (in_features for a Linear, in_channels × kh × kw for a
       Conv2d): the branch's inner layers He's (gain² = 2, they follow a ReLU), the ``input`` stem
       LeCun's (gain² = 1, it follows nothing); the inner layers of each branch are then multiplied by
       L^(−1/(2m−2)) (L^(−1/2) for m = 2), eq. ``eq-fixup-scale``;
    3. a scalar bias (:class:`normlab.layers.ScalarBias`, 0) is added before each weight layer and
       each activation of a branch and before the classifier, and a scalar multiplier
       (:class:`normlab.layers.ScalarMultiplier`, 1) after each branch (then one more bias), as in
       the authors' code. A scalar broadcasts over every unit, channel and position alike.

    Why L^(−1/(2m−2)): if the update of each branch should change the output by O(η/L) so that the
    L branches together change it by O(η), a branch of m layers with scales s (inner) and a last
    layer of the same order must have s^(2m−2) ∝ 1/L (the paper's section 3). The weight layers' own
    biases are set to zero. (The authors' CIFAR code draws the inner convolution with the fan-out,
    out_channels × kh × kw; for the square layers of these blocks the two fans are equal.) At
    initialization every block is the identity and the output is zero; the zeros do not stall
    training: the first gradient reaches the classifier, the second also the stem, the branches' last
    layers and the scalar biases after them, the third every parameter.
    The model is changed in place (its branches gain the scalar modules, its Sequential a
    ``bias_output`` before ``output``) and returned; a model it cannot handle raises ValueError.
    Used in chapter ``13_without_normalization``, section "Fixup".
    """
    from normlab.layers.skip_init import ScalarBias

    blocks, m = _fixup_blocks(model)
    scale = fixup_scale(len(blocks), m)
    with torch.no_grad():
        kaiming_normal_(model.input.weight, nonlinearity="linear", generator=generator)
        for block in blocks:
            weights = [layer for layer in block.branch.children() if isinstance(layer, _FIXUP_WEIGHT_LAYERS)]
            for layer in weights[:-1]:
                kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator).mul_(scale)
            zeros_(weights[-1].weight)
            for layer in (model.input, *weights):
                if layer.bias is not None:
                    zeros_(layer.bias)
            block.branch = _with_fixup_scalars(block.branch)
        zeros_(model.output.weight)
        if model.output.bias is not None:
            zeros_(model.output.bias)
    factory = {"device": model.output.weight.device, "dtype": model.output.weight.dtype}
    reordered = OrderedDict()
    for name, child in model.named_children():
        if name == "output":
            reordered["bias_output"] = ScalarBias(0.0, **factory)
        reordered[name] = child
    model._modules.clear()
    model._modules.update(reordered)
    return model


#: The weight layers that :func:`fixup_` initializes; a branch may hold these and activations only.
_FIXUP_WEIGHT_LAYERS = (nn.Linear, nn.Conv2d)


def _fixup_blocks(model: nn.Module) -> tuple[list[nn.Module], int]:
    """The residual blocks of a model :func:`fixup_` can handle, and m, the weight layers per branch."""
    from normlab.models import ResidualBlock

    if not isinstance(model, nn.Sequential) or not all(hasattr(model, n) for n in ("input", "output")):
        raise ValueError(f"fixup_ expects a model built by normlab.models.residual_mlp or residual_cnn (children "
                         f"input, block0, ..., output); got {type(model).__name__}.")
    if not isinstance(model.input, _FIXUP_WEIGHT_LAYERS) or not isinstance(model.output, nn.Linear):
        raise ValueError(f"fixup_ needs a Linear or Conv2d input layer and a Linear output layer; got "
                         f"{type(model.input).__name__} and {type(model.output).__name__}.")
    blocks = [m for m in model.children() if isinstance(m, ResidualBlock)]
    if not blocks:
        raise ValueError("fixup_ needs at least one residual block; the model has none.")
    counts = set()
    for index, block in enumerate(blocks):
        kinds = {type(m).__name__ for m in block.branch.children()}
        if not isinstance(block.branch, nn.Sequential) or {"ScalarBias", "ScalarMultiplier"} & kinds:
            raise ValueError(f"block {index} already has Fixup's scalars; fixup_ applies once, to a fresh model.")
        if any(not isinstance(m, (*_FIXUP_WEIGHT_LAYERS, *_ACTIVATION_TYPES)) for m in block.branch.children()):
            raise ValueError(f"Fixup is for residual networks without normalization whose branches hold Linear or "
                             f"Conv2d layers and activations, but block {index}'s branch holds {sorted(kinds)}; "
                             f"build the model with norm=None.")
        if block.scale != 1.0:
            raise ValueError(f"Fixup scales the branch's weights itself; build the model with branch_scale=1 "
                             f"(block {index} has {block.scale:g}).")
        counts.add(sum(isinstance(layer, _FIXUP_WEIGHT_LAYERS) for layer in block.branch.children()))
    if len(counts) > 1:
        raise ValueError(f"Fixup's L^(-1/(2m-2)) needs the same number m of weight layers in every branch; "
                         f"got {sorted(counts)}.")
    m = counts.pop()
    if m < 2:
        raise ValueError(f"Fixup's scaling L^(-1/(2m-2)) needs m >= 2 weight layers per branch; got m = {m}.")
    return blocks, m


def _with_fixup_scalars(branch: nn.Sequential) -> nn.Sequential:
    """Rule 3: a ScalarBias before each child of ``branch``, then a ScalarMultiplier and one more ScalarBias."""
    from normlab.layers.skip_init import ScalarBias, ScalarMultiplier

    parameter = next(branch.parameters())
    factory = {"device": parameter.device, "dtype": parameter.dtype}
    children: list[tuple[str, nn.Module]] = []
    for name, layer in branch.named_children():
        children.append((f"bias_{name}", ScalarBias(0.0, **factory)))
        children.append((name, layer))
    children += [("multiplier", ScalarMultiplier(1.0, **factory)), ("bias_out", ScalarBias(0.0, **factory))]
    return nn.Sequential(OrderedDict(children))


def fixup_scale(blocks: int, layers_per_branch: int = 2) -> float:
    """Fixup's factor L^(−1/(2m−2)) on the inner layers of each branch, for L = ``blocks``, m = ``layers_per_branch``."""
    if blocks < 1 or layers_per_branch < 2:
        raise ValueError(f"need blocks >= 1 and layers_per_branch >= 2; got {blocks} and {layers_per_branch}.")
    return blocks ** (-1.0 / (2 * layers_per_branch - 2))


_ACTIVATION_TYPES = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.SELU)
