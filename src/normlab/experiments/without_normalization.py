"""Experiments of chapter ``13_without_normalization`` (training deep networks without normalization).

Every deep network is a pre-activation residual MLP (:func:`normlab.models.residual_mlp`, blocks
h ↦ h + F(h), F = (ReLU → Linear) twice) in one of the variants of :data:`TECHNIQUES`, built by
:func:`build`:

- ``"plain"``: He-initialized branches, no normalization (chapter 8's unscaled stream);
- ``"bn"``: the same with ``torch.nn.BatchNorm1d`` before each ReLU of the branch (normlab's
  :class:`normlab.layers.BatchNorm1d` is a drop-in replacement; torch's C++ kernel is faster);
- ``"skipinit"``: the plain branches behind a gate α = 0 (:class:`normlab.layers.SkipInit`);
- ``"fixup"``: :func:`normlab.init.fixup_`;
- ``"nf"``: a normalizer-free block h ↦ h + α F(h/β_b), with :class:`normlab.layers.WSLinear`
  (γ for ReLU) in F, α = 0.2 and β_b = √(1 + b α²), the expected standard deviation of the stream
  entering block b (Brock et al. 2021a, section 3).

Functions (each seeded, each returning a small record), and the claims about them. A claim
function returns a :class:`Claim` (holds, measured, threshold), which the notebook glues:

- :func:`stream_variance`: Var[h_b] against b at initialization. Claims: :func:`bn_stream_grows_linearly`,
  :func:`plain_stream_doubles`, :func:`gated_streams_stay_at_input`, :func:`nf_stream_follows_beta`.
- :func:`deep_training`: the 64-block network trained on digits. Claims: :func:`plain_diverges`,
  :func:`without_bn_matches_bn`.
- :func:`fixup_update_size`: the logit change after a few SGD steps against depth, with Fixup's
  L^(−1/2) and with a zero last layer only. Claim: :func:`fixup_keeps_update_size_flat`.
- :func:`cnn_training`: a 16-block residual CNN (:func:`normlab.models.residual_cnn`, built by
  :func:`build_cnn`) trained on digits as 1×8×8 images, plain, with Fixup and with BatchNorm2d. Claim:
  :func:`fixup_cnn_lags_bn`.
- :func:`lr_sweep`: test accuracy against learning rate for BN, NF and NF + AGC. Claims:
  :func:`agc_extends_stable_range`, :func:`nf_agc_reaches_bn`.
- :func:`invariances`: which of BN's invariances each trained network keeps (weight scale, the
  rest of the batch). Claim: :func:`only_bn_and_ws_are_scale_invariant`.
- :func:`coordinate_check` (a wrapper of :func:`normlab.mup.coordinate_check` on MNIST-1D) and
  :func:`lr_transfer`. Claims: :func:`sp_logits_grow_mup_flat`, :func:`large_lr_transfers_under_mup`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from normlab import data, init, models, mup, optim, train
from normlab.layers import ScalarBias, ScalarMultiplier, SkipInit, WSLinear, activation_gamma
from normlab.experiments._common import Claim

__all__ = [
    "CHANCE_LOSS",
    "CNN_TECHNIQUES",
    "TECHNIQUES",
    "CNNTrainingRecord",
    "Claim",
    "DeepTrainingRecord",
    "InvarianceRecord",
    "LRSweepRecord",
    "LRTransferRecord",
    "NFBlock",
    "StreamRecord",
    "UpdateSizeRecord",
    "agc_extends_stable_range",
    "bn_stream_grows_linearly",
    "build",
    "build_cnn",
    "cnn_training",
    "coordinate_check",
    "deep_training",
    "fixup_keeps_update_size_flat",
    "fixup_cnn_lags_bn",
    "fixup_param_groups",
    "fixup_update_size",
    "gated_streams_stay_at_input",
    "invariances",
    "largest_stable_lr",
    "lr_sweep",
    "lr_transfer",
    "large_lr_transfers_under_mup",
    "nf_agc_reaches_bn",
    "nf_stream_follows_beta",
    "only_bn_and_ws_are_scale_invariant",
    "plain_diverges",
    "plain_stream_doubles",
    "sp_logits_grow_mup_flat",
    "stream_variance",
    "width_exponent",
    "without_bn_matches_bn",
]

TECHNIQUES = ("plain", "bn", "skipinit", "fixup", "nf")
NF_ALPHA = 0.2


# ----------------------------------------------------------------------------- the networks


class NFBlock(nn.Module):
    """A normalizer-free residual block h ↦ h + α · F(h / β) (Brock et al. 2021a, NF-ResNets).

    F = ReLU → WSLinear → ReLU → WSLinear, the WSLinear layers with ReLU's γ so that F maps
    a unit-variance input to a unit-variance output; β is the predicted standard deviation of
    the stream entering the block, so F sees unit variance, and the stream's variance grows by
    exactly α² per block: Var[h_b] = 1 + b α².
    """

    def __init__(self, width: int, alpha: float, beta: float) -> None:
        super().__init__()
        # Each WSLinear follows a ReLU of a unit-variance input. Its rows have zero mean, so the mean of
        # relu(z) cancels and only Var[relu(z)] = 1/2 − 1/(2π) passes: γ for ReLU restores unit variance.
        gamma = activation_gamma("relu")
        self.branch = nn.Sequential(nn.ReLU(), WSLinear(width, width, gamma=gamma), nn.ReLU(),
                                    WSLinear(width, width, gamma=gamma))
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.alpha * self.branch(x / self.beta)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}, beta={self.beta:.4g}"


def _he(net: nn.Sequential, generator: torch.Generator) -> None:
    """LeCun for the stem, He (fan-in) for every Linear or Conv2d of the branches, zero biases: the plain init."""
    init.kaiming_normal_(net.input.weight, nonlinearity="linear", generator=generator)
    init.zeros_(net.input.bias)
    for block in models.residual_blocks(net):
        for layer in block.branch.children():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator)
                init.zeros_(layer.bias)


def build(technique: str, in_features: int, width: int, out_features: int, blocks: int, seed: int = 0
          ) -> nn.Sequential:
    """A residual MLP of ``blocks`` blocks for one of :data:`TECHNIQUES` (see the module docstring).

    Children ``input``, ``block0`` …, ``final_act`` (``final_norm`` for BN), ``output``; weights drawn
    from generators seeded by ``seed``.
    """
    if technique not in TECHNIQUES:
        raise ValueError(f"Unknown technique {technique!r}; choose one of {list(TECHNIQUES)}.")
    net = models.residual_mlp(in_features, width, out_features, blocks, norm=nn.BatchNorm1d if technique == "bn" else None,
                              seed=seed)
    generator = torch.Generator().manual_seed(seed)
    if technique == "fixup":
        return init.fixup_(net, generator=generator)
    _he(net, generator)
    if technique == "skipinit":
        for index in range(blocks):
            setattr(net, f"block{index}", SkipInit(getattr(net, f"block{index}").branch))
    if technique == "nf":
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            for index in range(blocks):
                beta = math.sqrt(1.0 + index * NF_ALPHA**2)
                setattr(net, f"block{index}", NFBlock(width, NF_ALPHA, beta))
    return net


def _blocks(net: nn.Sequential) -> list[nn.Module]:
    return [module for name, module in net.named_children() if name.startswith("block")]


# ----------------------------------------------------------------------------- 1. the stream at initialization


@dataclass
class StreamRecord:
    """Var[h_b] at initialization, b = 1 … blocks: ``variance[technique]``; Var[h_0] in ``input_variance``.

    ``branch_ratio[technique][b]`` is Var[branch output] / Var[h_{b-1}] at block b (De & Smith's measure of
    how much a block's branch is downscaled relative to the skip path).
    """

    blocks: int
    techniques: tuple[str, ...]
    variance: dict[str, np.ndarray]
    branch_ratio: dict[str, np.ndarray]
    input_variance: dict[str, float]


def stream_variance(blocks: int = 64, width: int = 256, batch: int = 512, seed: int = 0,
                    techniques: Sequence[str] = TECHNIQUES) -> StreamRecord:
    """Variance of the residual stream after each block at initialization, on x ~ N(0, I), in float64.

    BN in training mode (batch statistics), as at the first step. Used in section "What BN does to a deep
    residual network".
    """
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    variance, ratio, q0 = {}, {}, {}
    for technique in techniques:
        net = build(technique, width, width, 10, blocks, seed).double().train()
        streams, branches = [], []
        with torch.no_grad():
            h = net.input(x)
            q0[technique] = h.var(correction=0).item()
            for block in _blocks(net):
                new = block(h)
                branches.append((new - h).var(correction=0).item() / h.var(correction=0).item())
                h = new
                streams.append(h.var(correction=0).item())
        variance[technique], ratio[technique] = np.asarray(streams), np.asarray(branches)
    return StreamRecord(blocks, tuple(techniques), variance, ratio, q0)


def bn_stream_grows_linearly(record: StreamRecord, factor: float = 1.25) -> Claim:
    """Claim: with BN, Var[h_b] stays within ``factor`` of q0 + b (each branch adds unit variance)."""
    predicted = record.input_variance["bn"] + np.arange(1, record.blocks + 1)
    worst = float(np.max(np.abs(np.log(record.variance["bn"] / predicted))))
    return Claim(worst < math.log(factor), math.exp(worst), factor)


def plain_stream_doubles(record: StreamRecord, tol: float = 0.15) -> Claim:
    """Claim: without BN the stream's variance doubles per block (fitted log₂ growth rate within ``tol`` of 1)."""
    v = np.log2(np.concatenate([[record.input_variance["plain"]], record.variance["plain"]]))
    rate = float(np.polyfit(np.arange(v.size), v, 1)[0])
    return Claim(abs(rate - 1) < tol, rate, tol)


def gated_streams_stay_at_input(record: StreamRecord) -> Claim:
    """Claim: with SkipInit and Fixup every block is the identity at initialization: Var[h_b] = Var[h_0] exactly."""
    worst = max(float(np.max(np.abs(record.variance[t] / record.input_variance[t] - 1)))
                for t in ("skipinit", "fixup"))
    return Claim(worst < 1e-12, worst, 1e-12)


def nf_stream_follows_beta(record: StreamRecord, factor: float = 1.1) -> Claim:
    """Claim: the NF stream follows Var[h_b] = q0 + b α² (scaled WS keeps each branch at unit scale), within ``factor``."""
    predicted = record.input_variance["nf"] + NF_ALPHA**2 * np.arange(1, record.blocks + 1)
    worst = float(np.max(np.abs(np.log(record.variance["nf"] / predicted))))
    return Claim(worst < math.log(factor), math.exp(worst), factor)


# ----------------------------------------------------------------------------- 2. training 64 blocks


@dataclass
class DeepTrainingRecord:
    """Each technique's 64-block network trained on digits: ``accuracy[t]`` final test accuracy, ``diverged[t]``,
    ``steps_run[t]``, ``loss[t]`` the per-step training loss, and ``models[t]`` the trained network (CPU)."""

    blocks: int
    steps: int
    lr: float
    accuracy: dict[str, float]
    diverged: dict[str, bool]
    steps_run: dict[str, int]
    loss: dict[str, np.ndarray]
    models: dict[str, nn.Module] = field(repr=False)


def deep_training(seed: int = 0, blocks: int = 64, width: int = 32, steps: int = 100, lr: float = 0.05,
                  batch_size: int = 64, techniques: Sequence[str] = ("plain", "bn", "skipinit", "fixup")
                  ) -> DeepTrainingRecord:
    """Train each technique's ``blocks``-block residual MLP on scikit-learn's digits with SGD, momentum 0.9.

    Same data split, initial seed and minibatch order for every technique. Used in section "What BN does
    to a deep residual network".
    """
    ds = data.digits(seed=seed)
    accuracy, diverged, steps_run, loss, nets = {}, {}, {}, {}, {}
    for technique in techniques:
        net = build(technique, ds.num_features, width, 10, blocks, seed)
        history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, momentum=0.9, seed=seed,
                              progress=False, device="cpu", eval_every=steps)
        accuracy[technique] = history.final_test_accuracy
        diverged[technique] = history.diverged
        steps_run[technique] = history.steps_run
        loss[technique] = history.loss
        nets[technique] = net
    return DeepTrainingRecord(blocks, steps, lr, accuracy, diverged, steps_run, loss, nets)


def plain_diverges(record: DeepTrainingRecord, within: int = 5) -> Claim:
    """Claim: the plain network diverges within ``within`` steps (its loss exceeds 1e6 or is not finite)."""
    run = record.steps_run["plain"]
    return Claim(record.diverged["plain"] and run <= within, run, within)


def without_bn_matches_bn(record: DeepTrainingRecord, gap: float = 0.05,
                          techniques: Sequence[str] = ("skipinit", "fixup")) -> Claim:
    """Claim: each of ``techniques`` trains (no divergence) to within ``gap`` of BN's test accuracy.

    ``measured`` is the largest shortfall (BN's accuracy minus the technique's; negative when all beat BN).
    """
    shortfall = max(record.accuracy["bn"] - record.accuracy[t] for t in techniques)
    ok = not any(record.diverged[t] for t in (*techniques, "bn")) and shortfall <= gap
    return Claim(ok, shortfall, gap)


# ----------------------------------------------------------------------------- 3. Fixup's scaling, measured


@dataclass
class UpdateSizeRecord:
    """RMS change of the logits after one full-batch SGD step on the branches' weights, against the number of
    blocks L: ``change["fixup"][k]`` with Fixup's L^(−1/2) on the inner layers, ``change["zero-last"][k]``
    without it (last layers zero, inner layers He-sized)."""

    depths: np.ndarray
    lr: float
    change: dict[str, np.ndarray]


def fixup_update_size(seed: int = 0, depths: Sequence[int] = (4, 8, 16, 32, 64), width: int = 64,
                      lr: float = 0.1, batch: int = 256) -> UpdateSizeRecord:
    """How far one SGD step on the residual branches' weight matrices moves the logits, against depth.

    Fixup's derivation concerns the branches: each branch's step changes the stream by O(η s²), s the inner
    layers' scale, so L branches change it by O(η L s²), which s² = 1/L keeps at O(η). To isolate that term the
    classifier gets a LeCun initialization here instead of Fixup's zero (with a zero classifier, the first step
    reaches only the classifier), and only the branches' Linear weights are updated (not the scalar biases,
    which add a term that grows with L in every variant). The first ``batch`` training examples of digits.
    Used in section "Fixup".
    """
    ds = data.digits(seed=seed)
    x, y = ds.x_train[:batch], ds.y_train[:batch]
    change: dict[str, list[float]] = {"fixup": [], "zero-last": []}
    for depth in depths:
        for variant in change:
            net = build("fixup", ds.num_features, width, 10, depth, seed)
            generator = torch.Generator().manual_seed(seed + 1)
            init.kaiming_normal_(net.output.weight, nonlinearity="linear", generator=generator)
            branch_weights = []
            for block in _blocks(net):
                if variant == "zero-last":
                    with torch.no_grad():
                        block.branch.linear0.weight.mul_(depth**0.5)   # undo L^(−1/2): He-sized inner layers
                branch_weights += [block.branch.linear0.weight, block.branch.linear1.weight]
            # one SGD step on the branches' weights alone, a measurement of its effect (not training)
            opt = torch.optim.SGD(branch_weights, lr=lr)
            with torch.no_grad():
                f0 = net(x)
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            with torch.no_grad():
                change[variant].append((net(x) - f0).pow(2).mean().sqrt().item())
    return UpdateSizeRecord(np.asarray(depths), lr, {k: np.asarray(v) for k, v in change.items()})


def fixup_keeps_update_size_flat(record: UpdateSizeRecord, flat: float = 1.5, growth: float = 4.0) -> Claim:
    """Claim: from the shallowest to the deepest network Fixup's logit change varies by less than ``flat``×,
    while without the rescaling it grows by more than ``growth``×. ``measured``: Fixup's max/min ratio."""
    fix, zero = record.change["fixup"], record.change["zero-last"]
    spread = float(fix.max() / fix.min())
    grows = float(zero[-1] / zero[0])
    return Claim(spread < flat and grows > growth, spread, flat)


# ----------------------------------------------------------------------------- 3b. Fixup on a residual CNN

CNN_TECHNIQUES = ("plain", "fixup", "bn")


def build_cnn(technique: str, channels: int, blocks: int, seed: int = 0) -> nn.Sequential:
    """A :func:`normlab.models.residual_cnn` for digits (flat rows of 64 pixels read as 1×8×8 images, 10 classes).

    ``"plain"``: no normalization, LeCun stem and He branches (fan-in = channels × 3 × 3); ``"bn"``: the same with
    ``torch.nn.BatchNorm2d`` before each ReLU of the branch; ``"fixup"``: :func:`normlab.init.fixup_`.
    """
    if technique not in CNN_TECHNIQUES:
        raise ValueError(f"Unknown technique {technique!r}; choose one of {list(CNN_TECHNIQUES)}.")
    net = models.residual_cnn(1, channels, 10, blocks, image_size=(8, 8),
                              norm=nn.BatchNorm2d if technique == "bn" else None, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    if technique == "fixup":
        return init.fixup_(net, generator=generator)
    _he(net, generator)
    return net


@dataclass
class CNNTrainingRecord:
    """Each technique's residual CNN trained on digits: ``final_loss[t]``, the mean training loss of the last
    ``window`` steps (inf if training diverged), ``accuracy[t]`` the final test accuracy (0 if diverged),
    ``diverged[t]``, ``steps_run[t]`` and ``loss[t]``, the per-step training loss."""

    blocks: int
    channels: int
    steps: int
    lr: float
    window: int
    final_loss: dict[str, float]
    accuracy: dict[str, float]
    diverged: dict[str, bool]
    steps_run: dict[str, int]
    loss: dict[str, np.ndarray]


def fixup_param_groups(net: nn.Module, lr: float, scalar_lr_factor: float = 0.1) -> list[dict]:
    """Two optimizer groups for a Fixup network: its scalar biases and multipliers at ``scalar_lr_factor`` × ``lr``,
    every other parameter at ``lr``, as in the authors' training scripts (which give the scalars a tenth)."""
    scalars = [p for m in net.modules() if isinstance(m, (ScalarBias, ScalarMultiplier)) for p in m.parameters()]
    ids = {id(p) for p in scalars}
    return [{"params": scalars, "lr": lr * scalar_lr_factor},
            {"params": [p for p in net.parameters() if id(p) not in ids], "lr": lr}]


def cnn_training(seed: int = 0, blocks: int = 16, channels: int = 16, steps: int = 100, lr: float = 0.02,
                 batch_size: int = 64, window: int = 20, scalar_lr_factor: float = 0.1,
                 techniques: Sequence[str] = CNN_TECHNIQUES) -> CNNTrainingRecord:
    """Train each technique's ``blocks``-block residual CNN (:func:`build_cnn`) on digits with SGD, momentum 0.9.

    The same learning rate, data split, initial seed and minibatch order for every technique; Fixup's scalars
    learn at ``scalar_lr_factor`` times the rate (:func:`fixup_param_groups`). Used in section "Fixup",
    subsection "Fixup on a residual CNN".
    """
    ds = data.digits(seed=seed)
    final_loss, accuracy, diverged, steps_run, loss = {}, {}, {}, {}, {}
    for technique in techniques:
        net = build_cnn(technique, channels, blocks, seed)
        groups = fixup_param_groups(net, lr, scalar_lr_factor) if technique == "fixup" else None
        history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, momentum=0.9, seed=seed,
                              progress=False, device="cpu", eval_every=steps, param_groups=groups)
        diverged[technique] = history.diverged
        steps_run[technique] = history.steps_run
        loss[technique] = history.loss
        final_loss[technique] = math.inf if history.diverged else float(history.loss[-window:].mean())
        acc = history.final_test_accuracy
        accuracy[technique] = acc if math.isfinite(acc) and not history.diverged else 0.0
    return CNNTrainingRecord(blocks, channels, steps, lr, window, final_loss, accuracy, diverged, steps_run, loss)


CHANCE_LOSS = math.log(10)
"""Cross-entropy of the uniform prediction over digits' 10 classes, ln 10 ≈ 2.303: the loss of a network that
predicts nothing."""


def fixup_cnn_lags_bn(records: Sequence[CNNTrainingRecord], gap: float = 0.5, plain_at_least: float = 2.25
                      ) -> Claim:
    """Claim, on every record (seed): the plain CNN does not train (it diverges, or its final loss stays at or above
    ``plain_at_least``, near chance :data:`CHANCE_LOSS`); Fixup and BN do not diverge; and Fixup's final training
    loss exceeds BN's by more than ``gap``: at the same learning rate and number of steps Fixup lags BN on this CNN.
    ``measured``: the smallest Fixup − BN difference over the records; threshold ``gap``."""
    plain_fails = all(r.diverged["plain"] or r.final_loss["plain"] >= plain_at_least for r in records)
    stable = not any(r.diverged[t] for r in records for t in ("fixup", "bn"))
    smallest = min(r.final_loss["fixup"] - r.final_loss["bn"] for r in records)
    return Claim(plain_fails and stable and smallest > gap, smallest, gap)


# ----------------------------------------------------------------------------- 4. learning-rate sweep, AGC


@dataclass
class LRSweepRecord:
    """Final test accuracy ``accuracy[variant][k]`` at learning rate ``lrs[k]`` (NaN-free: a diverged run
    scores its last evaluation, 0.1 or less), ``diverged[variant][k]``."""

    lrs: np.ndarray
    variants: tuple[str, ...]
    accuracy: dict[str, np.ndarray]
    diverged: dict[str, np.ndarray]
    clipping: float
    batch_size: int


SWEEP_VARIANTS = ("bn", "nf", "nf+agc")


def lr_sweep(seed: int = 0, lrs: Sequence[float] = (0.1, 0.5, 2.5), blocks: int = 12, width: int = 64,
             steps: int = 40, batch_size: int = 256, clipping: float = 0.02,
             variants: Sequence[str] = SWEEP_VARIANTS) -> LRSweepRecord:
    """Test accuracy after ``steps`` SGD steps (momentum 0.9, large batch) against the learning rate, for BN,
    the normalizer-free network, and the normalizer-free network with AGC at λ = ``clipping`` (every layer
    but the classifier). Used in section "Normalizer-free networks"."""
    ds = data.digits(seed=seed)
    accuracy = {v: [] for v in variants}
    diverged = {v: [] for v in variants}
    for variant in variants:
        for lr in lrs:
            net = build("bn" if variant == "bn" else "nf", ds.num_features, width, 10, blocks, seed)
            handles = optim.install_agc(net, clipping=clipping) if variant.endswith("+agc") else []
            history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, momentum=0.9, seed=seed,
                                  progress=False, device="cpu", eval_every=steps)
            for handle in handles:
                handle.remove()
            acc = history.final_test_accuracy
            accuracy[variant].append(acc if math.isfinite(acc) else 0.0)
            diverged[variant].append(history.diverged)
    return LRSweepRecord(np.asarray(lrs), tuple(variants), {k: np.asarray(v) for k, v in accuracy.items()},
                         {k: np.asarray(v) for k, v in diverged.items()}, clipping, batch_size)


def largest_stable_lr(record: LRSweepRecord, variant: str) -> float:
    """The largest learning rate of the sweep at which ``variant`` did not diverge (0 if it diverged at every one)."""
    stable = record.lrs[~record.diverged[variant]]
    return float(stable.max()) if stable.size else 0.0


def agc_extends_stable_range(record: LRSweepRecord) -> Claim:
    """Claim: the largest learning rate at which the NF network trains without diverging is larger with AGC.
    ``measured``: that learning rate with AGC over the one without; threshold 1."""
    with_agc, without = (largest_stable_lr(record, v) for v in ("nf+agc", "nf"))
    ratio = with_agc / without if without > 0 else math.inf if with_agc > 0 else 0.0
    return Claim(ratio > 1, ratio, 1.0)


def nf_agc_reaches_bn(record: LRSweepRecord, gap: float = 0.04) -> Claim:
    """Claim: the best accuracy of NF + AGC over the sweep is within ``gap`` of BN's best. ``measured``: BN's best
    minus NF + AGC's best."""
    shortfall = float(record.accuracy["bn"].max() - record.accuracy["nf+agc"].max())
    return Claim(shortfall <= gap, shortfall, gap)


# ----------------------------------------------------------------------------- 5. which invariances survive


@dataclass
class InvarianceRecord:
    """For each trained network: ``weight_scale[t]``, the RMS relative change of its outputs when one inner
    weight matrix (the middle block's first Linear) is multiplied by 10; ``batch_dependence[t]``, the RMS
    relative change of example 0's output when the rest of its batch is replaced (training mode)."""

    weight_scale: dict[str, float]
    batch_dependence: dict[str, float]


def _relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).pow(2).mean().sqrt() / a.pow(2).mean().sqrt()).item()


def invariances(nets: dict[str, nn.Module], in_features: int, seed: int = 0, batch: int = 64) -> InvarianceRecord:
    """Measure two of BN's properties on trained networks (``nets``, e.g. :attr:`DeepTrainingRecord.models`)."""
    gen = torch.Generator().manual_seed(seed + 7)
    x = torch.randn(batch, in_features, generator=gen)
    other = torch.cat([x[:1], torch.randn(batch - 1, in_features, generator=gen)])
    scale, batch_dep = {}, {}
    for name, net in nets.items():
        net = net.cpu().train()
        blocks = _blocks(net)
        middle = blocks[len(blocks) // 2].branch
        linear = next(m for m in middle.children() if isinstance(m, nn.Linear))
        with torch.no_grad():
            before = net(x)
            batch_dep[name] = _relative_change(before[:1], net(other)[:1])
            linear.weight.mul_(10.0)
            scale[name] = _relative_change(before, net(x))
            linear.weight.div_(10.0)
    return InvarianceRecord(scale, batch_dep)


def only_bn_and_ws_are_scale_invariant(record: InvarianceRecord, invariant_below: float = 1e-4,
                                       sensitive_above: float = 1e-3) -> Claim:
    """Claim: scaling a weight by 10 changes the outputs of BN and NF (scaled WS) networks by less than
    ``invariant_below`` (relative) and those of SkipInit and Fixup by more than ``sensitive_above``; and only
    BN's outputs depend on the rest of the batch. ``measured``: the largest change among BN and NF."""
    invariant = max(record.weight_scale[t] for t in ("bn", "nf") if t in record.weight_scale)
    sensitive = min(record.weight_scale[t] for t in ("skipinit", "fixup") if t in record.weight_scale)
    batch_free = max(v for t, v in record.batch_dependence.items() if t not in ("bn", "plain"))
    ok = (invariant < invariant_below and sensitive > sensitive_above and batch_free < 1e-6
          and record.batch_dependence["bn"] > sensitive_above)
    return Claim(ok, invariant, invariant_below)


# ----------------------------------------------------------------------------- 6. μP


def coordinate_check(seed: int = 0, widths: Sequence[int] = (32, 64, 128, 256, 512), lr: float = 0.05,
                     steps: int = 3, batch: int = 256, repeats: int = 4) -> dict[str, mup.CoordinateCheckRecord]:
    """:func:`normlab.mup.coordinate_check` for SP and μP on ``batch`` MNIST-1D training examples (base width
    ``widths[0]``), its three arrays averaged over ``repeats`` initializations (seeds ``seed``·100 + r), as
    Yang et al. average theirs over seeds. Used in section "μP"."""
    ds = data.mnist1d()
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(ds.x_train), generator=gen)[:batch]
    x, y = ds.x_train[rows], ds.y_train[rows]
    records = {}
    for p in mup.PARAMETRIZATIONS:
        runs = [mup.coordinate_check(x, y, widths, p, lr=lr, steps=steps, base_width=int(widths[0]), num_classes=10,
                                     seed=seed * 100 + r) for r in range(repeats)]
        records[p] = mup.CoordinateCheckRecord(
            p, runs[0].widths, float(lr), *(np.mean([getattr(r, name) for r in runs], axis=0)
                                            for name in ("logit_change", "feature_change", "logits")))
    return records


def width_exponent(record: mup.CoordinateCheckRecord) -> float:
    """The fitted exponent p of logit change ∝ width^p after the last step, over every width but the base one."""
    widths, change = record.widths[1:], record.logit_change[1:, -1]
    return float(np.polyfit(np.log(widths), np.log(change), 1)[0])


def sp_logits_grow_mup_flat(records: dict[str, mup.CoordinateCheckRecord], sp_at_least: float = 0.4,
                            mup_at_most: float = 0.15) -> Claim:
    """Claim: the logit change after the last step grows like width^p with p > ``sp_at_least`` under SP, and does
    not grow under μP, p < ``mup_at_most`` (:func:`width_exponent`; the base width is left out: there SP and μP
    coincide, and its logits fluctuate most). At these small widths μP's p is often slightly negative: the change
    is still settling towards its infinite-width limit. ``measured``: SP's exponent."""
    sp, mp = width_exponent(records["sp"]), width_exponent(records["mup"])
    return Claim(sp > sp_at_least and mp < mup_at_most, sp, sp_at_least)


@dataclass
class LRTransferRecord:
    """Mean training loss over the last 10 of ``steps`` steps, ``loss[p][i, k]`` at width ``widths[i]`` and
    learning rate ``lrs[k]`` (inf where training diverged)."""

    widths: np.ndarray
    lrs: np.ndarray
    loss: dict[str, np.ndarray]


def lr_transfer(seed: int = 0, widths: Sequence[int] = (32, 128, 512), lrs: Sequence[float] = (0.1, 0.3, 1.0, 3.0),
                steps: int = 50, batch_size: int = 64) -> LRTransferRecord:
    """Train :func:`normlab.mup.mlp` (3 hidden layers, base width ``widths[0]``) with plain SGD on MNIST-1D at each
    width and learning rate, under SP and μP. Used in section "μP"."""
    ds = data.mnist1d()
    loss = {}
    for p in mup.PARAMETRIZATIONS:
        grid = np.full((len(widths), len(lrs)), np.inf)
        for i, width in enumerate(widths):
            for k, lr in enumerate(lrs):
                net = mup.mlp(ds.num_features, int(width), 10, 3, p, int(widths[0]), seed)
                history = train.train(net, ds, steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=False,
                                      device="cpu", eval_every=steps)
                if not history.diverged:
                    grid[i, k] = float(history.loss[-10:].mean())
        loss[p] = grid
    return LRTransferRecord(np.asarray(widths), np.asarray(lrs), loss)


def large_lr_transfers_under_mup(record: LRTransferRecord, probe: float = 1.0) -> Claim:
    """Claim: at learning rate ``probe``, going from the base width to the largest raises the final loss more under
    SP than under μP. ``measured``: SP's increase minus μP's (threshold 0)."""
    k = int(np.flatnonzero(np.isclose(record.lrs, probe))[0])
    sp_worse = float(record.loss["sp"][-1, k] - record.loss["sp"][0, k])
    mup_worse = float(record.loss["mup"][-1, k] - record.loss["mup"][0, k])
    return Claim(sp_worse - mup_worse > 0, sp_worse - mup_worse, 0.0)
