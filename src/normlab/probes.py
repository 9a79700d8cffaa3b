"""Measurements of a network while it trains, taken by hooks that leave it as they found it.

- :class:`ActivationPercentiles`: percentiles of chosen units' activations over a fixed
  probe batch, recorded at chosen steps (Ioffe & Szegedy 2015, Figure 1(b, c)).
- :func:`layer_statistics`: per-layer activation variance, gradient variance and dead
  ReLU units from one forward and backward pass (:class:`LayerStats`).
- :func:`jacobian_singular_values`: the singular values of the input-output Jacobian.
- :func:`layer_histograms`: a histogram of each chosen layer's output values on one batch.
- :func:`gradient_ics`: Santurkar et al.'s gradient-based internal covariate shift of each
  layer, ‖G − G′‖ and cos(G, G′) (:class:`GradientICS`).
- :func:`wasserstein_1d` and :func:`earth_mover_ics`: Huang & Yu's Earth Mover (Wasserstein-1)
  measure of internal covariate shift, per unit, between a layer's input distribution before
  and after one SGD step, with two bounds that hold for any pair (:class:`EarthMoverICS`).
- :func:`wasserstein_nd`: the same distance between two equal-size samples of vectors in R^d
  (Euclidean ground cost), exactly, by an optimal assignment.
- :func:`in_mode`: a context manager that puts a model in train or eval mode and restores
  every submodule's flag afterwards; every probe measures inside it.

A probe is a training hook with the signature ``hook(step, model, loss)`` of
:func:`normlab.train.train`; it can also be called by hand (for example at step 0,
before training starts) through its ``record`` method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "ActivationPercentiles",
    "EarthMoverICS",
    "earth_mover_ics",
    "wasserstein_1d",
    "wasserstein_nd",
    "GradientICS",
    "LayerStats",
    "gradient_ics",
    "in_mode",
    "jacobian_singular_values",
    "layer_histograms",
    "layer_statistics",
]

_WHERE = ("output", "input")


@contextmanager
def in_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Run the ``with`` block with ``model.train(training)``, then restore every submodule's flag.

    ``model.train(flag)`` sets the flag of every submodule at once, so a model whose parts were
    in different modes (one BatchNorm frozen in eval mode inside a training network, say)
    would not be restored by ``model.train(was_training)``; this saves each submodule's flag
    and puts it back, also when the block raises. A measurement inside it leaves the
    train/eval state of the model as it found it. Used by every probe of this module, by
    :func:`normlab.train.evaluate` and by :func:`normlab.init.lsuv_`; chapter
    ``02_batchnorm`` explains the two modes.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.train(training)
        yield model
    finally:
        for module, was_training in modes:
            module.training = was_training


class ActivationPercentiles:
    """Percentiles over a fixed probe batch of some units of one module, step by step.

    At each chosen step the probe runs ``model(probe)`` in eval mode under
    ``torch.no_grad()`` with a temporary forward hook on ``module``, takes the tensor
    the module returns (``where="output"``) or the first tensor it is called with
    (``where="input"``), and for each unit ``u`` in ``units`` computes the
    percentiles ``q`` of the values of unit ``u`` over the probe batch:

        percentiles[t, i, j] = percentile_{q_j}( a[:, units[i]] )   at step steps[t],

    with NumPy's default (linear) interpolation. Units are indices along dimension 1
    (features of an (N, C) activation, channels of an (N, C, ...) one, pooled over
    the batch and every other position). Afterwards the hook is removed and every
    submodule's train/eval flag is restored, so the training step that follows is
    unchanged; the probe batch never reaches the optimizer and, in eval mode, never
    updates BatchNorm's running statistics.

    To watch the input of a nonlinearity (the quantity of Ioffe & Szegedy's
    Figure 1(b, c)) hook the nonlinearity with ``where="input"``: in a network
    built by :func:`normlab.models.mlp` that is the BatchNorm output when the
    network has BatchNorm, and the Linear output when it has none.

    Steps: ``every=k`` records at every step divisible by k; ``at_steps`` records
    exactly at the steps listed (give one or the other). Step 0 is never passed by
    :func:`normlab.train.train`; call ``probe.record(0, model)`` before training to
    include the initial network.

    For example, with ``net`` built by ``normlab.models.mlp`` and ``ds`` a dataset::

        probe = ActivationPercentiles(net.act2, ds.x_test, units=[0, 1, 2], where="input", every=10)
        probe.record(0, net)
        history = train(net, ds, steps=100, lr=0.1, hooks=[probe])
        probe.steps.shape, probe.percentiles.shape   # (11,), (11, 3, 3)

    Used in chapter ``03_batchnorm_experiments`` (Figure 1 of the paper) and chapter
    ``04_internal_covariate_shift``.
    """

    def __init__(
        self,
        module: nn.Module,
        probe: Tensor,
        units: Sequence[int] | None = None,
        q: Sequence[float] = (15.0, 50.0, 85.0),
        *,
        every: int | None = 1,
        at_steps: Iterable[int] | None = None,
        where: str = "output",
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module to hook; got {type(module).__name__}.")
        if not isinstance(probe, Tensor) or probe.ndim < 1 or probe.shape[0] < 1:
            raise ValueError("probe must be a non-empty tensor with the batch in dimension 0.")
        self.q = np.asarray(q, dtype=np.float64)
        if self.q.ndim != 1 or self.q.size == 0 or np.any((self.q < 0) | (self.q > 100)):
            raise ValueError(f"q must be a non-empty sequence of percentiles in [0, 100]; got {list(q)}.")
        if where not in _WHERE:
            raise ValueError(f"where must be one of {list(_WHERE)}; got {where!r}.")
        if at_steps is not None:
            self._at_steps: frozenset[int] | None = frozenset(int(s) for s in at_steps)
            self.every = None
        else:
            if every is None or every < 1:
                raise ValueError(f"every must be a positive number of steps (or give at_steps); got {every}.")
            self._at_steps = None
            self.every = int(every)
        self.module = module
        self.probe = probe.detach()
        self.units = None if units is None else [int(u) for u in units]
        self.where = where
        self._steps: list[int] = []
        self._values: list[np.ndarray] = []

    # ------------------------------------------------------------------ recording

    def wants(self, step: int) -> bool:
        """True if ``step`` is one of the steps this probe records."""
        if self._at_steps is not None:
            return step in self._at_steps
        return step % self.every == 0

    def __call__(self, step: int, model: nn.Module, loss: float | None = None) -> None:
        """The training hook: record at ``step`` if it is a chosen step."""
        if self.wants(step):
            self.record(step, model)

    def record(self, step: int, model: nn.Module) -> None:
        """Run the probe batch through ``model`` now and store the percentiles as ``step``."""
        activation = self._capture(model)
        values = activation.detach().to("cpu", torch.float64)
        values = values.movedim(1, -1).reshape(-1, values.shape[1]) if values.ndim > 1 else values[:, None]
        if self.units is not None:
            if any(not -values.shape[1] <= u < values.shape[1] for u in self.units):
                raise IndexError(
                    f"units {self.units} out of range for an activation with {values.shape[1]} units in dimension 1."
                )
            values = values[:, self.units]
        # (Q, U) -> (U, Q)
        self._values.append(np.percentile(values.numpy(), self.q, axis=0).T)
        self._steps.append(int(step))

    def _capture(self, model: nn.Module) -> Tensor:
        captured: list[Tensor] = []

        def on_output(_module: nn.Module, _inputs: tuple, output: object) -> None:
            captured.append(_first_tensor(output, "output"))

        def on_input(_module: nn.Module, inputs: tuple) -> None:
            captured.append(_first_tensor(inputs, "input"))

        if self.where == "output":
            handle = self.module.register_forward_hook(on_output)
        else:
            handle = self.module.register_forward_pre_hook(on_input)
        try:
            with in_mode(model, training=False), torch.no_grad():
                device = next((p.device for p in model.parameters()), self.probe.device)
                model(self.probe.to(device))
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(
                f"The hooked module ({type(self.module).__name__}) was not called when the model ran on the "
                "probe batch; pass a module that is part of the model's forward pass."
            )
        return captured[0]

    # ------------------------------------------------------------------ results

    @property
    def steps(self) -> np.ndarray:
        """(time,) the steps recorded, in the order they were recorded."""
        return np.asarray(self._steps, dtype=np.int64)

    @property
    def percentiles(self) -> np.ndarray:
        """(time, unit, q) percentiles ``q`` of each unit over the probe batch at each recorded step."""
        if not self._values:
            num_units = len(self.units) if self.units is not None else 0
            return np.empty((0, num_units, self.q.size))
        return np.stack(self._values)


def _first_tensor(value: object, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    raise TypeError(f"ActivationPercentiles can only record a tensor {what}; got {type(value).__name__}.")


# ---------------------------------------------------------------------- variance propagation


@dataclass(frozen=True)
class LayerStats:
    """Statistics of some layers' outputs and of the gradients flowing back into them.

    Each array has one entry per layer, in the order the layers were given.
    """

    #: (layer,) Var[a_l]: variance of every value the layer outputs on the batch.
    activation_variance: np.ndarray
    #: (layer,) Var[dL/da_l]: variance of the loss's gradient with respect to those values.
    gradient_variance: np.ndarray
    #: (layer,) fraction of units (dimension 1) whose output is <= 0 for every example.
    dead_fraction: np.ndarray


def layer_statistics(
    model: nn.Module,
    x: Tensor,
    layers: Sequence[nn.Module],
    loss_fn: Callable[[Tensor], Tensor] | None = None,
    *,
    training: bool = True,
) -> LayerStats:
    """Activation and gradient variance, and dead units, of each layer on one batch.

    Runs one forward pass of ``x`` and one backward pass of the loss
    ``loss_fn(model(x))`` (by default L = sum(y^2) / 2, so dL/dy = y) and records,
    for the output a_l of each module in ``layers`` (its first call if it is called
    more than once):

        activation_variance[l] = Var[a_l]          over every value (batch, units, positions)
        gradient_variance[l]   = Var[dL/da_l]      likewise, about the mean, without Bessel's correction
        dead_fraction[l]       = (1/U) #{u : a_l[n, u, ...] <= 0 for every example n and position}

    The variances are the quantities whose layer-to-layer ratios Xavier and He
    initialization hold at one, forward and backward. A unit is a slice along
    dimension 1 (a feature of a Linear output, a channel of a Conv output). Hook a
    ReLU, or the Linear that feeds one (such as those of
    :func:`normlab.models.hidden_linear_layers`), and ``dead_fraction`` is the
    fraction of dead ReLU units on the batch: units that pass no signal and no
    gradient for any example. For other nonlinearities it has no such meaning.

    The passes run with every submodule in training mode (``training=True``:
    BatchNorm uses batch statistics, dropout is on) or in eval mode. The gradients
    come from :func:`torch.autograd.grad`, so parameters' ``.grad`` are untouched;
    afterwards the hooks are removed, buffers (BatchNorm's running statistics) are
    restored and every submodule's train/eval flag is as it was. The hooks hand the
    rest of the network a copy of each recorded output, so an in-place operation
    downstream cannot change what is recorded.
    Used in chapter ``08_initialization``.
    """
    layers = _checked_layers(layers, "whose outputs to measure, e.g. hidden_linear_layers(model)")
    if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[0] < 1:
        raise ValueError("x must be a non-empty tensor with the batch in dimension 0.")

    def keep(index: int, module: nn.Module, output: object) -> tuple[Tensor, Tensor]:
        if not isinstance(output, Tensor):
            raise TypeError(f"layer_statistics needs each layer to return a single tensor; layer {index} "
                            f"({type(module).__name__}) returned {type(output).__name__}.")
        return output, output.clone()  # record the output, hand the rest of the network a copy

    with (_first_outputs(layers, keep) as outputs, _buffers_restored(model), in_mode(model, training),
          torch.enable_grad()):
        y = model(x)
        loss = 0.5 * y.pow(2).sum() if loss_fn is None else loss_fn(y)
        captured = _in_layer_order(outputs, len(layers))
        if not all(a.requires_grad for a in captured) or loss.ndim != 0:
            raise ValueError(
                "layer_statistics needs a scalar loss that depends on every layer's output through autograd; "
                f"got a loss of shape {tuple(loss.shape)}, or a layer whose output does not require grad."
            )
        grads = torch.autograd.grad(loss, captured, allow_unused=True)
    return _summarize(captured, grads)


def _checked_layers(layers: Sequence[nn.Module], purpose: str) -> list[nn.Module]:
    """``layers`` as a list, refusing an empty one (naming ``purpose``) or one that is not all modules."""
    layers = list(layers)
    if not layers:
        raise ValueError(f"layers is empty; pass the modules {purpose}.")
    for layer in layers:
        if not isinstance(layer, nn.Module):
            raise TypeError(f"Every entry of layers must be an nn.Module to hook; got {type(layer).__name__}.")
    return layers


@contextmanager
def _first_outputs(layers: Sequence[nn.Module], keep: Callable[[int, nn.Module, object], tuple[Tensor, object]]
                   ) -> Iterator[dict[int, Tensor]]:
    """Forward hooks that store, by position in ``layers``, what ``keep(index, module, output)`` picks from
    each layer's first call: ``keep`` returns (tensor to record, output to pass on, None to leave it).
    The hooks are removed on leaving the block."""
    outputs: dict[int, Tensor] = {}

    def hook_for(index: int) -> Callable[[nn.Module, tuple, object], object]:
        def on_output(module: nn.Module, _inputs: tuple, output: object) -> object:
            if index in outputs:
                return None
            outputs[index], passed_on = keep(index, module, output)
            return passed_on

        return on_output

    handles = [layer.register_forward_hook(hook_for(i)) for i, layer in enumerate(layers)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def _in_layer_order(outputs: dict[int, Tensor], count: int) -> list[Tensor]:
    """The recorded outputs of layers 0 … count − 1, or a RuntimeError naming the layers never called."""
    missing = [i for i in range(count) if i not in outputs]
    if missing:
        raise RuntimeError(f"layers {missing} were not called when the model ran on x; pass modules that are part "
                           "of the model's forward pass.")
    return [outputs[i] for i in range(count)]


@contextmanager
def _buffers_restored(model: nn.Module) -> Iterator[None]:
    """Put every buffer of ``model`` (BatchNorm's running statistics) back as it was on leaving the block."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def _summarize(captured: Sequence[Tensor], grads: Sequence[Tensor | None]) -> LayerStats:
    """Var[a_l], Var[dL/da_l] and the dead-unit fraction of each layer's recorded output a_l."""
    activation_variance, gradient_variance, dead_fraction = [], [], []
    for a, g in zip(captured, grads):
        a = a.detach().to(torch.float64)
        g = torch.zeros_like(a) if g is None else g.detach().to(torch.float64)
        activation_variance.append(a.var(correction=0).item())
        gradient_variance.append(g.var(correction=0).item())
        units = a.movedim(1, -1).reshape(-1, a.shape[1]) if a.ndim > 1 else a[:, None]
        dead_fraction.append((units <= 0).all(dim=0).double().mean().item())
    return LayerStats(
        activation_variance=np.asarray(activation_variance),
        gradient_variance=np.asarray(gradient_variance),
        dead_fraction=np.asarray(dead_fraction),
    )


def jacobian_singular_values(model: nn.Module, x: Tensor) -> np.ndarray:
    """Singular values of the input-output Jacobian J = dy/dx of ``model`` at one input.

    ``x`` is a single example without a batch dimension; the network is evaluated
    as f(x) = model(x[None])[0] in eval mode (every submodule's flag is restored
    afterwards), J is computed by reverse mode with :func:`torch.func.jacrev` and
    flattened to a (output size, input size) matrix. Returns its singular values in
    descending order, as float64. For a linear network W_L ... W_1 x + b these are
    the singular values of the product W_L ... W_1; dynamical isometry (Saxe et al.
    2014; Pennington et al. 2017) means all of them are close to 1. Costs one
    backward pass per output, so it is meant for small networks.
    Used in chapter ``08_initialization``.
    """
    if not isinstance(x, Tensor) or x.numel() == 0:
        raise ValueError("x must be a non-empty tensor holding one example, without a batch dimension.")
    with in_mode(model, training=False):
        jacobian = torch.func.jacrev(lambda v: model(v.unsqueeze(0)).squeeze(0))(x.detach())
    out_size = jacobian.numel() // x.numel()
    matrix = jacobian.detach().to("cpu", torch.float64).reshape(out_size, x.numel())
    return torch.linalg.svdvals(matrix).numpy()


def layer_histograms(
    model: nn.Module, x: Tensor, layers: Sequence[nn.Module], bins: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histograms of the values each module in ``layers`` outputs on the batch ``x``.

    Runs one forward pass under ``torch.no_grad()`` in eval mode (every submodule's
    train/eval flag is restored afterwards) and returns ``(edges, fraction, std)``:

        fraction[l, k] = #{values of a_l in [edges[k], edges[k+1])} / #{values of a_l}
        std[l]         = standard deviation of all values of a_l (without Bessel's correction)

    with the last bin closed on the right, as :func:`numpy.histogram`. Values outside
    [edges[0], edges[-1]] count in no bin, so a row sums to less than one when some
    values fall outside the range. A layer called more than once is recorded at its
    first call. Used in chapter ``08_initialization`` (the per-layer histograms of its explorer).
    """
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be at least two increasing bin edges; got {edges!r}.")
    layers = _checked_layers(layers, "whose outputs to histogram")

    def keep(_index: int, _module: nn.Module, output: object) -> tuple[Tensor, None]:
        return _first_tensor(output, "output").detach(), None

    with _first_outputs(layers, keep) as outputs, in_mode(model, training=False), torch.no_grad():
        model(x)
    fractions, stds = [], []
    for recorded in _in_layer_order(outputs, len(layers)):
        values = recorded.to("cpu", torch.float64).reshape(-1).numpy()
        counts, _ = np.histogram(values, bins=edges)
        fractions.append(counts / values.size)
        stds.append(values.std())
    return edges, np.asarray(fractions), np.asarray(stds)


# ---------------------------------------------------------------------- gradient-based internal covariate shift


@dataclass(frozen=True)
class GradientICS:
    """Santurkar et al.'s gradient-based internal covariate shift of some layers at one point.

    Each array has one entry per layer, in the order the layers were given; G_i is the
    loss's gradient with respect to layer i's weight at the current parameters, G'_i the
    same gradient after every parameter upstream of that weight took its SGD step.
    """

    #: (layer,) ‖G_i − G'_i‖₂, the paper's ICS (0 for a layer with nothing upstream).
    l2: np.ndarray
    #: (layer,) cos(G_i, G'_i) = ⟨G_i, G'_i⟩ / (‖G_i‖ ‖G'_i‖) (1 means the direction did not change).
    cosine: np.ndarray
    #: (layer,) ‖G_i‖₂, to put l2 on a relative scale: l2 / grad_norm.
    grad_norm: np.ndarray


def gradient_ics(
    model: nn.Module,
    layers: Sequence[nn.Module],
    batch: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    lr: float,
    *,
    training: bool = True,
) -> GradientICS:
    """Gradient-based internal covariate shift of each layer (Santurkar et al. 2018, Definition 2.1).

    For layer i with weight W_i, on one batch (x, y) and loss L = ``loss_fn(model(x), y)``:

        G_i  = ∇_{W_i} L(W_1, ..., W_k; x, y)
        G'_i = ∇_{W_i} L(W'_1, ..., W'_{i-1}, W_i, ..., W_k; x, y),   W'_j = W_j − lr · ∇_{W_j} L(W_1, ..., W_k; x, y)

    and returns ‖G_i − G'_i‖₂ and cos(G_i, G'_i) per layer (:class:`GradientICS`). G_i is
    the gradient a simultaneous SGD step applies to W_i; G'_i is what it would be had the
    layers below already taken their step on the same batch. "Upstream of W_i" is every
    parameter that ``model.named_parameters()`` lists before ``layers[i].weight`` (for an
    ``nn.Sequential`` such as :func:`normlab.models.mlp`, the forward order: the weights
    and biases of the Linear layers below and the γ, β of their normalization layers);
    they all move by one SGD step of size ``lr``. Parameters after it, layer i's own bias
    included, stay where they are.

    The passes run in training mode (``training=True``: BatchNorm with batch statistics)
    or eval mode, through :func:`torch.func.functional_call` on detached copies of the
    parameters and buffers, so the model, its ``.grad`` fields and its running statistics
    are unchanged and every submodule's train/eval flag is restored. A layer with random
    behaviour in training mode (dropout, :class:`normlab.layers.NoisyBatchNorm1d`) draws
    differently in each pass; measure such a model with ``training=False`` or not at all.
    Costs one forward and backward pass per layer, plus one.
    Used in chapter ``04_internal_covariate_shift``.
    """
    layers = _checked_layers(layers, "whose weights to measure, e.g. hidden_linear_layers(model)")
    if not (isinstance(lr, (int, float)) and lr > 0 and np.isfinite(lr)):
        raise ValueError(f"lr must be a positive, finite learning rate; got {lr!r}.")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch)):
        raise ValueError("batch must be a pair of tensors (x, y).")
    named = list(model.named_parameters())
    indices = _weight_positions(layers, named)
    x, y = batch
    params = {name: p.detach() for name, p in named}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def loss_at(values: dict[str, Tensor]) -> Tensor:
        state = {**values, **{name: b.clone() for name, b in buffers.items()}}
        loss = loss_fn(torch.func.functional_call(model, state, (x,)), y)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar; got a tensor of shape {tuple(loss.shape)}.")
        return loss

    l2, cosine, grad_norm = [], [], []
    with in_mode(model, training), torch.enable_grad():
        leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
        grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in
                 zip(params.values(), torch.autograd.grad(loss_at(leaves), list(leaves.values()), allow_unused=True))]
        stepped = [p - lr * g for p, g in zip(params.values(), grads)]
        for k in indices:
            name = named[k][0]
            values = {n: (stepped[j] if j < k else p) for j, (n, p) in enumerate(params.items())}
            values[name] = params[name].clone().requires_grad_(True)
            (shifted,) = torch.autograd.grad(loss_at(values), [values[name]], allow_unused=True)
            g = grads[k].double().reshape(-1)
            g_new = (torch.zeros_like(params[name]) if shifted is None else shifted).detach().double().reshape(-1)
            l2.append((g - g_new).norm().item())
            norms = g.norm() * g_new.norm()
            cosine.append((g @ g_new / norms).item() if norms > 0 else float("nan"))
            grad_norm.append(g.norm().item())
    return GradientICS(l2=np.asarray(l2), cosine=np.asarray(cosine), grad_norm=np.asarray(grad_norm))


def _weight_positions(layers: Sequence[nn.Module], named: list[tuple[str, nn.Parameter]]) -> list[int]:
    """The position in ``named`` (the model's ``named_parameters()``) of each layer's ``weight``."""
    position = {id(p): k for k, (_, p) in enumerate(named)}
    indices = []
    for i, layer in enumerate(layers):
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, nn.Parameter) or id(weight) not in position:
            raise ValueError(f"layers[{i}] ({type(layer).__name__}) has no weight parameter that belongs to the model; "
                             "pass submodules of the model with a .weight, such as its Linear layers.")
        indices.append(position[id(weight)])
    return indices


# ---------------------------------------------------------------------- Earth Mover internal covariate shift


def wasserstein_1d(u: np.ndarray | Tensor, v: np.ndarray | Tensor) -> float:
    """Wasserstein-1 (Earth Mover) distance between the empirical distributions of two 1-D samples.

    W₁(P, Q) = ∫ |F_P(t) − F_Q(t)| dt, the area between the two empirical CDFs (each sample
    point has weight 1/len); the samples may differ in size. For equal sizes it equals
    mean |sort(u) − sort(v)|. Agrees with ``scipy.stats.wasserstein_distance`` without weights.
    Used in chapter ``04_internal_covariate_shift``.
    """
    u = np.asarray(u.detach().cpu() if isinstance(u, Tensor) else u, dtype=np.float64).ravel()
    v = np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v, dtype=np.float64).ravel()
    if u.size == 0 or v.size == 0:
        raise ValueError(f"both samples need at least one value; got sizes {u.size} and {v.size}.")
    if not (np.all(np.isfinite(u)) and np.all(np.isfinite(v))):
        raise ValueError("the samples contain NaN or infinite values; W1 is not defined for them.")
    u, v = np.sort(u), np.sort(v)
    grid = np.sort(np.concatenate([u, v]))
    widths = np.diff(grid)
    cdf_u = np.searchsorted(u, grid[:-1], side="right") / u.size
    cdf_v = np.searchsorted(v, grid[:-1], side="right") / v.size
    return float(np.sum(np.abs(cdf_u - cdf_v) * widths))


def _as_points(a: np.ndarray | Tensor, name: str) -> np.ndarray:
    """``a`` as a float64 (n, d) array: one row per sample point (a 1-D array is n points in R^1)."""
    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be an (n, d) array of n >= 1 points in R^d with d >= 1; "
                         f"got shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values; W1 is not defined for them.")
    return a


def wasserstein_nd(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Wasserstein-1 (Earth Mover) distance between two empirical distributions in R^d, Euclidean cost.

    ``a`` and ``b`` hold n points each, shape (n, d) (a 1-D array is n points on the line),
    every point with weight 1/n:

        W₁(P, Q) = min over transport plans π of Σ_ik π_ik ‖a_i − b_k‖₂.

    For two uniform measures of the same size the set of plans is n⁻¹ times the doubly
    stochastic matrices, whose extreme points are the permutation matrices (Birkhoff), and a
    linear cost is minimized at an extreme point: so W₁ = min over permutations σ of
    (1/n) Σ_i ‖a_i − b_σ(i)‖, which ``scipy.optimize.linear_sum_assignment`` solves exactly
    (O(n³); n of a few hundred takes milliseconds). For d = 1 it equals :func:`wasserstein_1d`.
    Samples of different sizes are refused (a plan then splits mass and is not a permutation).
    Used in chapter ``04_internal_covariate_shift`` (section on the bounds in d dimensions).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    a, b = _as_points(a, "a"), _as_points(b, "b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"wasserstein_nd needs the same number of points in both samples (uniform weights, so an "
                         f"optimal plan is a permutation); got {a.shape[0]} and {b.shape[0]}. For 1-D samples of "
                         f"different sizes use wasserstein_1d.")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"the two samples must live in the same space; got points of dimension {a.shape[1]} "
                         f"and {b.shape[1]}.")
    cost = cdist(a, b)                                   # ‖a_i − b_k‖₂ for every pair
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


@dataclass(frozen=True)
class EarthMoverICS:
    """Earth Mover ICS of some layers' inputs across one SGD step, per unit, with two bounds.

    One list entry per layer, in the order given; each entry is an array with one value per
    input unit. For unit j with values x_j (before the step) and x'_j (after it) on the same
    batch of n examples:

        lower[j]    = |mean(x_j) − mean(x'_j)|            ≤ distance[j]   (the identity is 1-Lipschitz)
        distance[j] = W₁(x_j, x'_j)                        (the ICS measure)
        upper[j]    = mean_i |x_ij − x'_ij|               ≥ distance[j]   (pairing each example with itself
                                                                          is one transport plan)
    """

    #: per layer, (units,) W₁ between the unit's input values before and after the step.
    distance: list[np.ndarray]
    #: per layer, (units,) the mean shift |μ − μ'|, a lower bound on distance.
    lower: list[np.ndarray]
    #: per layer, (units,) the cost of the example-to-itself plan, an upper bound on distance.
    upper: list[np.ndarray]


def earth_mover_ics(
    model: nn.Module,
    layers: Sequence[nn.Module],
    batch: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    lr: float,
    *,
    training: bool = True,
) -> EarthMoverICS:
    """Earth Mover internal covariate shift of each layer's input (Huang & Yu 2020), per unit.

    On one batch (x, y), records the input of every module in ``layers`` (for example the
    activations, whose input is the BN output when there is BN), takes one SGD step of size
    ``lr`` on L = ``loss_fn(model(x), y)`` for *every* parameter, records the inputs again on
    the same x, and returns for each unit the Wasserstein-1 distance between the two empirical
    distributions (:func:`wasserstein_1d`) with the bounds of :class:`EarthMoverICS`.
    Runs through :func:`torch.func.functional_call` in training mode (BN with batch
    statistics) or eval mode, so the model, its gradients, running statistics and flags
    are unchanged. Used in chapter ``04_internal_covariate_shift``.
    """
    layers = _checked_layers(layers, "whose inputs to measure, e.g. the activation modules")
    if not (isinstance(lr, (int, float)) and lr > 0 and np.isfinite(lr)):
        raise ValueError(f"lr must be a positive, finite learning rate; got {lr!r}.")
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, Tensor) for t in batch)):
        raise ValueError("batch must be a pair of tensors (x, y).")
    x, y = batch
    named = dict(model.named_parameters())
    params = {name: p.detach() for name, p in named.items()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def inputs_at(values: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
        captured: dict[int, Tensor] = {}

        def hook_for(index: int) -> Callable[[nn.Module, tuple], None]:
            def on_input(_module: nn.Module, inputs: tuple) -> None:
                captured.setdefault(index, _first_tensor(inputs, "layer input").detach().reshape(len(x), -1))
            return on_input

        handles = [layer.register_forward_pre_hook(hook_for(i)) for i, layer in enumerate(layers)]
        try:
            state = {**values, **{name: b.clone() for name, b in buffers.items()}}
            out = torch.func.functional_call(model, state, (x,))
        finally:
            for handle in handles:
                handle.remove()
        return out, _in_layer_order(captured, len(layers))

    with in_mode(model, training), torch.enable_grad():
        leaves = {name: p.clone().requires_grad_(True) for name, p in params.items()}
        out, before = inputs_at(leaves)
        loss = loss_fn(out, y)
        if loss.ndim != 0:
            raise ValueError(f"loss_fn must return a scalar; got a tensor of shape {tuple(loss.shape)}.")
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        stepped = {name: p if g is None else p - lr * g.detach() for (name, p), g in zip(params.items(), grads)}
    with in_mode(model, training), torch.no_grad():
        _, after = inputs_at(stepped)
    distance, lower, upper = [], [], []
    for a, b in zip(before, after):
        a, b = a.double().cpu().numpy(), b.double().cpu().numpy()
        distance.append(np.array([wasserstein_1d(a[:, j], b[:, j]) for j in range(a.shape[1])]))
        lower.append(np.abs(a.mean(0) - b.mean(0)))
        upper.append(np.abs(a - b).mean(0))
    return EarthMoverICS(distance=distance, lower=lower, upper=upper)
