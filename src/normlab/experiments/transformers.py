"""Experiments of chapter ``11_transformers``: where the normalizer goes and what it can be.

Every experiment trains or probes :class:`normlab.transformer.Transformer` on
:func:`normlab.data.sorting_task` and returns a small record; each claim of the chapter is a
function that returns a :class:`Claim` (whether it holds, the measured value, the threshold),
so the page glues the very number its assert checks.

- :func:`train_transformer`: Adam with an optional linear warm-up, per-token cross-entropy.
- :func:`gradient_at_init`: the last layers' gradient norm against depth, post-LN and pre-LN
  (Xiong et al. 2020), with the pre-LN prediction from the residual stream's variance.
- :func:`branch_shares`: what fraction of the stream each sublayer writes, pre-LN, post-LN, DeepNorm.
- :func:`standard_runs`: the chapter's one training setting (depth 6, Adam at 10⁻²) with each choice.
- :func:`qk_norm_sweep`: the largest attention logit and the loss against the learning rate.
- :func:`rms_invariance_rows`: LayerNorm's and RMSNorm's rows of the invariance table.
- :func:`ln_input_output_map`: what the LayerNorms of a trained model do to their inputs, with
  tanh and linear fits (Zhu et al. 2025, Figure 2).

Torch runs on one thread in every function here (``torch.set_num_threads(1)``): these models
are so small that a second thread costs more in synchronization than it saves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from normlab.data import SortingTask, sorting_task
from normlab.layers import LayerNorm, RMSNorm
from normlab.transformer import Transformer, sequence_loss
from normlab.experiments._common import BA_ET_AL_TABLE1, PAPER_COLUMNS, TRANSFORMATIONS, Claim, relative_change

__all__ = [
    "BranchShareRecord",
    "Claim",
    "GradientRecord",
    "InvarianceRows",
    "MapRecord",
    "RunRecord",
    "STANDARD",
    "SweepRecord",
    "branch_shares",
    "gradient_at_init",
    "ln_input_output_map",
    "qk_norm_sweep",
    "rms_invariance_rows",
    "standard_runs",
    "train_transformer",
]


#: The chapter's one training setting: 6 blocks of width 32 (2 heads), Xavier initialization,
#: Adam at 10⁻², batches of 32 sequences, 120 steps, on sorting 8 tokens from 8.
STANDARD = dict(depth=6, width=32, heads=2, lr=1e-2, steps=120, batch_size=32, warmup=0, init="xavier")


def _task(seed: int) -> SortingTask:
    return sorting_task(num_train=4000, num_test=500, length=8, vocab=8, seed=seed)


# --------------------------------------------------------------------------- training


@dataclass
class RunRecord:
    """One training run: ``loss[i]`` and ``max_logit[i]`` at step i + 1 (NaN after a divergence),
    final test loss and token accuracy on the sorted half, seconds per step, and the trained model."""

    label: str
    loss: np.ndarray
    max_logit: np.ndarray
    test_loss: float
    test_accuracy: float
    seconds_per_step: float
    diverged: bool
    model: Transformer | None = None

    def final_loss(self, window: int = 20) -> float:
        """Mean training loss over the last ``window`` steps (inf if training diverged)."""
        return math.inf if self.diverged else float(np.mean(self.loss[-window:]))


def train_transformer(model: Transformer, task: SortingTask, *, steps: int, lr: float, batch_size: int = 32,
                      warmup: int = 0, seed: int = 0, label: str = "", progress: bool = False) -> RunRecord:
    """Train ``model`` on ``task`` with Adam, the learning rate rising linearly over ``warmup`` steps.

    Minibatches are drawn with replacement from a generator seeded by ``seed``. The loss is the
    cross-entropy of the sorted half of each sequence (:func:`normlab.transformer.sequence_loss`);
    after each step the loss and the model's largest attention logit are recorded. Training stops
    at a non-finite loss (``diverged``). The test loss and token accuracy are measured at the end.

    This is not :func:`normlab.train.train`, the book's loop for (n, features) datasets: a
    Transformer needs token sequences, a loss over some positions of each sequence and a
    learning-rate schedule for warm-up, which that loop does not have.
    Chapter ``11_transformers``.
    """
    # own loop: per-position loss on token sequences and a warm-up schedule, which normlab.train.train lacks
    if steps < 1 or not (math.isfinite(lr) and lr > 0) or warmup < 0:
        raise ValueError(f"steps must be >= 1, lr finite and > 0, warmup >= 0; got {steps}, {lr}, {warmup}.")
    torch.set_num_threads(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses, logits_max = np.full(steps, np.nan), np.full(steps, np.nan)
    diverged = False
    start = time.perf_counter()
    model.train()
    for step in tqdm(range(steps), disable=not progress, desc=label or None, leave=False):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        batch = torch.randint(0, len(task.inputs_train), (batch_size,), generator=generator)
        loss = sequence_loss(model(task.inputs_train[batch]), task.targets_train[batch], task.start)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[step], logits_max[step] = loss.item(), model.max_attention_logit
        if not math.isfinite(losses[step]):
            diverged = True
            break
    seconds = (time.perf_counter() - start) / (step + 1)
    model.eval()
    with torch.no_grad():
        logits = model(task.inputs_test)
        test_loss = float(sequence_loss(logits, task.targets_test, task.start))
        correct = logits[:, task.start:].argmax(-1) == task.targets_test[:, task.start:]
    return RunRecord(label, losses, logits_max, test_loss, float(correct.float().mean()), seconds,
                     diverged or not math.isfinite(test_loss), model)


# --------------------------------------------------------------------------- 1. gradients at initialization


@dataclass
class GradientRecord:
    """Gradient norms at initialization (mean over ``seeds``) for ``positions[p]`` at ``depths[j]``.

    ``last_grad[p, j]``: ‖∂L/∂W₂‖_F of the last block's FFN output weights; ``per_layer[p]``: the
    same for every block of the deepest model; ``stream_var[p, j]``: the variance over features of
    the final residual stream (averaged over tokens), the input of pre-LN's final LayerNorm;
    ``q0``: that of the embeddings; ``v``: the variance one sublayer adds, measured at the
    shallowest depth as (stream_var − q0)/(2L).
    """

    depths: np.ndarray
    positions: tuple[str, ...]
    last_grad: np.ndarray
    per_layer: list[np.ndarray]
    stream_var: np.ndarray
    q0: float
    v: float

    def grad(self, position: str) -> np.ndarray:
        return self.last_grad[self.positions.index(position)]

    def predicted_pre_ratio(self) -> np.ndarray:
        """Equation (eq-pre-grad): g(L)/g(L₀) = √((q₀ + 2L₀v)/(q₀ + 2Lv)) for pre-LN, L₀ the shallowest depth."""
        q = self.q0 + 2 * self.depths * self.v
        return np.sqrt(q[0] / q)


def _stream_var(x: Tensor) -> float:
    return float(x.var(dim=-1, unbiased=False).mean())


def gradient_at_init(depths: Sequence[int] = (6, 12, 24, 48), positions: Sequence[str] = ("post", "pre"),
                     seeds: Sequence[int] = (0, 1, 2, 3), width: int = 32, heads: int = 2, batch: int = 64,
                     progress: bool = False) -> GradientRecord:
    """‖∂L/∂W₂‖ of the last FFN at initialization against depth (Xiong et al. 2020, Figure 3 and Theorem 1).

    Each model (Xavier initialization, as in the paper's analysis) is built with each seed in
    ``seeds`` and differentiated once on ``batch`` sequences of the sorting task drawn with that
    seed; the norms are averaged over seeds. Chapter ``11_transformers``.
    """
    torch.set_num_threads(1)
    depths = np.asarray(depths, dtype=np.int64)
    last = np.zeros((len(positions), len(depths)))
    stream = np.zeros_like(last)
    per_layer: list[np.ndarray] = []
    q0s = []
    jobs = [(p, j, s) for p in range(len(positions)) for j in range(len(depths)) for s in seeds]
    for p, j, seed in tqdm(jobs, disable=not progress, leave=False):
        task = _task(seed)
        model = Transformer(task.vocab, task.sequence_length, int(depths[j]), width, heads, "layernorm",
                            positions[p], init="xavier", seed=seed)
        tokens = task.inputs_train[:batch]
        sequence_loss(model(tokens), task.targets_train[:batch], task.start).backward()
        norms = np.array([float(block.ffn[2].weight.grad.norm()) for block in model.blocks])
        last[p, j] += norms[-1] / len(seeds)
        skips, branches = model.trace(tokens)
        stream[p, j] += _stream_var(skips[-1] + branches[-1]) / len(seeds)
        q0s.append(_stream_var(skips[0]))
        if j == len(depths) - 1:
            if seed == seeds[0]:
                per_layer.append(norms / len(seeds))
            else:
                per_layer[p] += norms / len(seeds)
    q0 = float(np.mean(q0s))
    pre = positions.index("pre") if "pre" in positions else 0
    v = float((stream[pre, 0] - q0) / (2 * depths[0]))
    return GradientRecord(depths, tuple(positions), last, per_layer, stream, q0, v)


def pre_ln_gradient_follows_prediction(record: GradientRecord, factor: float = 2.0) -> Claim:
    """Claim: at the largest depth, pre-LN's g(L)/g(L₀) is within ``factor`` of the prediction
    √((q₀ + 2L₀v)/(q₀ + 2Lv)); value: measured over predicted."""
    measured = record.grad("pre")[-1] / record.grad("pre")[0]
    ratio = float(measured / record.predicted_pre_ratio()[-1])
    return Claim(1 / factor <= ratio <= factor, ratio, factor)


def post_ln_gradient_does_not_fall(record: GradientRecord, factor: float = 1.5) -> Claim:
    """Claim: post-LN's last-layer gradient at the largest depth is at least 1/``factor`` of that at the
    shallowest (it stays large); value: g(L)/g(L₀)."""
    ratio = float(record.grad("post")[-1] / record.grad("post")[0])
    return Claim(ratio >= 1 / factor, ratio, 1 / factor)


def post_exceeds_pre_at_depth(record: GradientRecord, factor: float = 2.5) -> Claim:
    """Claim: at the largest depth post-LN's last-layer gradient is at least ``factor`` times pre-LN's."""
    ratio = float(record.grad("post")[-1] / record.grad("pre")[-1])
    return Claim(ratio >= factor, ratio, factor)


def post_ln_last_over_first(record: GradientRecord) -> float:
    """In the deepest post-LN model, the last block's W₂ gradient over the first block's (Xiong et al.'s
    Figure 3 has it grow towards the output)."""
    layers = record.per_layer[record.positions.index("post")]
    return float(layers[-1] / layers[0])


def pre_ln_gradient_falls_across_layers(record: GradientRecord, factor: float = 2.0) -> Claim:
    """Claim: in the deepest pre-LN model the first block's W₂ gradient is at least ``factor`` times the
    last block's (Xiong et al.'s Figure 3 has them about equal); value: first/last."""
    layers = record.per_layer[record.positions.index("pre")]
    ratio = float(layers[0] / layers[-1])
    return Claim(ratio >= factor, ratio, factor)


# --------------------------------------------------------------------------- 2. residual stream and DeepNorm


@dataclass
class BranchShareRecord:
    """Per sublayer b = 1 … 2L of a depth-L model at initialization: ``share[arch][b-1]`` is
    Var(branch)/(Var(skip) + Var(branch)), the fraction of the new stream the sublayer writes;
    ``stream_var["pre"]`` the pre-LN stream's variance after each sublayer; ``predicted[arch]``
    the prediction from ``q0`` and the measured per-sublayer variance ``v[arch]``."""

    depth: int
    share: dict[str, np.ndarray]
    predicted: dict[str, np.ndarray]
    stream_var: np.ndarray
    predicted_stream_var: np.ndarray
    q0: float
    v: dict[str, float]
    alpha: float


def branch_shares(depth: int = 48, width: int = 32, heads: int = 2, batch: int = 64, seed: int = 0) -> BranchShareRecord:
    """How much each sublayer writes into the stream: pre-LN, post-LN and DeepNorm (α = (2L)^¼, β = (8L)^-¼).

    Pre-LN: the stream after b sublayers has variance q₀ + b·v (chapter ``08_initialization``,
    eq-residual with a normalization at the head of each branch), so sublayer b writes a share
    v/(q₀ + b·v) ≈ 1/b. Post-LN: every sublayer sees a normalized stream (variance 1), share
    v/(1 + v), the same at every depth. DeepNorm: α²·1 against β²-scaled branches, share
    v_β/(α² + v_β): constant along the depth and set by L. Chapter ``11_transformers``.
    """
    torch.set_num_threads(1)
    task = _task(seed)
    tokens = task.inputs_train[:batch]
    share, predicted, v = {}, {}, {}
    b = np.arange(1, 2 * depth + 1)
    alpha = (2 * depth) ** 0.25
    stream_var = predicted_stream = np.zeros(0)
    q0 = math.nan
    for arch in ("pre", "post", "deepnorm"):
        model = Transformer(task.vocab, task.sequence_length, depth, width, heads, "layernorm", arch,
                            init="xavier", seed=seed)
        skips, branches = model.trace(tokens)
        s = np.array([_stream_var(t) for t in skips])
        f = np.array([_stream_var(t) for t in branches])
        share[arch] = f / (s + f)
        v[arch] = float(f.mean())
        if arch == "pre":
            q0 = float(s[0])
            stream_var = np.array([_stream_var(x + y) for x, y in zip(skips, branches)])
            predicted_stream = q0 + b * v[arch]  # chapter 8's linear law, s² = v
            predicted[arch] = v[arch] / (q0 + b * v[arch])
        else:
            a2 = alpha**2 if arch == "deepnorm" else 1.0
            predicted[arch] = np.full(len(b), v[arch] / (a2 + v[arch]))
    return BranchShareRecord(depth, share, predicted, stream_var, predicted_stream, q0, v, alpha)


def pre_ln_stream_grows_linearly(record: BranchShareRecord, factor: float = 1.75) -> Claim:
    """Claim: the pre-LN stream's variance after every sublayer is within ``factor`` of q₀ + b·v;
    value: the worst ratio max(measured/predicted, predicted/measured)."""
    ratio = record.stream_var / record.predicted_stream_var
    worst = float(np.max(np.maximum(ratio, 1 / ratio)))
    return Claim(worst <= factor, worst, factor)


def _halves(share: np.ndarray) -> float:
    """Mean share over the first half of the sublayers over that of the second half."""
    n = len(share) // 2
    return float(share[:n].mean() / share[n:].mean())


def deepnorm_share_is_flat(record: BranchShareRecord, factor: float = 1.2, pre_fall: float = 2.0) -> Claim:
    """Claim: DeepNorm's share is as large in the second half of the sublayers as in the first (within
    ``factor``), while pre-LN's falls by at least ``pre_fall``; value: DeepNorm's first-half/second-half ratio."""
    ratio = _halves(record.share["deepnorm"])
    ok = 1 / factor <= ratio <= factor and _halves(record.share["pre"]) >= pre_fall
    return Claim(ok, ratio, factor)


def pre_ln_share_falls(record: BranchShareRecord) -> float:
    """Pre-LN's mean share over the first half of the sublayers over that of the second half."""
    return _halves(record.share["pre"])


# --------------------------------------------------------------------------- 3-5. training runs


#: (label, keyword arguments of Transformer, warm-up steps) of :func:`standard_runs`.
STANDARD_RUNS = (
    ("post-LN", dict(position="post"), 0),
    ("post-LN, warm-up", dict(position="post"), 60),
    ("pre-LN", dict(), 0),
    ("pre-LN, warm-up", dict(), 60),
    ("pre-RMSNorm", dict(normalizer="rmsnorm"), 0),
    ("pre-DyT α₀=0.5", dict(normalizer="dyt", dyt_alpha=0.5), 0),
    ("pre-DyT α₀=2", dict(normalizer="dyt", dyt_alpha=2.0), 0),
    ("no normalization", dict(normalizer="none"), 0),
)


def standard_runs(seed: int = 0, labels: Sequence[str] | None = None, steps: int = STANDARD["steps"],
                  progress: bool = False) -> dict[str, RunRecord]:
    """Train the :data:`STANDARD` model once per entry of :data:`STANDARD_RUNS` (or those in ``labels``).

    Same seed for the data, the initialization and the minibatches, so runs differ only in the
    choice being compared. Chapter ``11_transformers``.
    """
    task = _task(seed)
    runs = {}
    chosen = [r for r in STANDARD_RUNS if labels is None or r[0] in labels]
    for label, kwargs, warmup in tqdm(chosen, disable=not progress, leave=False):
        model = Transformer(task.vocab, task.sequence_length, STANDARD["depth"], STANDARD["width"], STANDARD["heads"],
                            init=STANDARD["init"], seed=seed, **kwargs)
        runs[label] = train_transformer(model, task, steps=steps, lr=STANDARD["lr"], batch_size=STANDARD["batch_size"],
                                        warmup=warmup, seed=seed, label=label)
    return runs


def post_ln_needs_warmup(runs: dict[str, RunRecord], stalled: float = 1.2, learned: float = 0.5) -> Claim:
    """Claim (Xiong et al. 2020): without warm-up post-LN stalls (final loss above ``stalled``) while
    post-LN with warm-up and pre-LN without it learn (below ``learned``); value: post-LN's final loss."""
    post = runs["post-LN"].final_loss()
    ok = post > stalled and runs["post-LN, warm-up"].final_loss() < learned and runs["pre-LN"].final_loss() < learned
    return Claim(ok, post, stalled)


def matches(runs: dict[str, RunRecord], label: str, reference: str = "pre-LN", tolerance: float = 0.15) -> Claim:
    """Claim: ``label`` ends within ``tolerance`` (absolute, final training loss) of ``reference``;
    value: the difference label − reference."""
    gap = runs[label].final_loss() - runs[reference].final_loss()
    return Claim(abs(gap) <= tolerance, float(gap), tolerance)


def not_worse_than(runs: dict[str, RunRecord], label: str, reference: str = "pre-LN", margin: float = 0.1) -> Claim:
    """Claim: ``label`` ends no more than ``margin`` (final training loss) above ``reference`` (it matches
    or beats it); value: the gap label − reference."""
    gap = runs[label].final_loss() - runs[reference].final_loss()
    return Claim(gap <= margin, float(gap), margin)


def worse_than(runs: dict[str, RunRecord], label: str, reference: str = "pre-LN", margin: float = 0.2) -> Claim:
    """Claim: ``label`` ends at least ``margin`` (final training loss) above ``reference``; value: the gap."""
    gap = runs[label].final_loss() - runs[reference].final_loss()
    return Claim(gap >= margin, float(gap), margin)


# --------------------------------------------------------------------------- 4. QK-norm


@dataclass
class SweepRecord:
    """``final_loss[q, i]`` and ``max_logit[q, i]`` (largest over training) with ``qk_norm[q]`` at
    ``lrs[i]``; ``runs[q][i]`` the full records."""

    lrs: np.ndarray
    qk_norm: tuple[bool, ...]
    final_loss: np.ndarray
    max_logit: np.ndarray
    runs: list[list[RunRecord]]

    def stable_lrs(self, qk: bool, below: float) -> np.ndarray:
        """The learning rates at which the run with ``qk_norm=qk`` ends below loss ``below``."""
        return self.lrs[self.final_loss[self.qk_norm.index(qk)] < below]


def qk_norm_sweep(lrs: Sequence[float] = (3e-3, 1e-2, 3e-2, 1e-1), seed: int = 0, depth: int = 2,
                  steps: int = 150, progress: bool = False) -> SweepRecord:
    """Pre-LN with and without QK-norm (Dehghani et al. 2023; Wortsman et al. 2024) at each learning rate.

    A depth-``depth`` model of the standard width, no warm-up, Adam. Chapter ``11_transformers``.
    """
    task = _task(seed)
    lrs = np.asarray(lrs, dtype=np.float64)
    flags = (False, True)
    runs = [[None] * len(lrs) for _ in flags]
    jobs = [(q, i) for q in range(2) for i in range(len(lrs))]
    for q, i in tqdm(jobs, disable=not progress, leave=False):
        model = Transformer(task.vocab, task.sequence_length, depth, STANDARD["width"], STANDARD["heads"],
                            qk_norm=flags[q], init=STANDARD["init"], seed=seed)
        runs[q][i] = train_transformer(model, task, steps=steps, lr=float(lrs[i]), batch_size=STANDARD["batch_size"],
                                       seed=seed, label=f"qk={flags[q]} lr={lrs[i]:g}")
    final = np.array([[r.final_loss() for r in row] for row in runs])
    logit = np.array([[np.nanmax(r.max_logit) for r in row] for row in runs])
    return SweepRecord(lrs, flags, final, logit, runs)


def qk_norm_bounds_logits(record: SweepRecord, factor: float = 100.0) -> Claim:
    """Claim: at the largest learning rate the max attention logit without QK-norm is at least
    ``factor`` times that with it; value: the ratio."""
    ratio = float(record.max_logit[0, -1] / record.max_logit[1, -1])
    return Claim(ratio >= factor, ratio, factor)


def qk_logit_bound(record: SweepRecord, bound: float = 50.0) -> Claim:
    """Claim: with QK-norm the max attention logit stays below ``bound`` at every learning rate; value: the largest."""
    largest = float(record.max_logit[1].max())
    return Claim(largest <= bound, largest, bound)


def qk_norm_widens_stable_range(record: SweepRecord, below: float = 0.8) -> Claim:
    """Claim: the largest learning rate ending below loss ``below`` is higher with QK-norm; value:
    the ratio of the two largest stable rates (0 when none is stable without QK-norm)."""
    without, with_qk = record.stable_lrs(False, below), record.stable_lrs(True, below)
    if len(with_qk) == 0:
        return Claim(False, 0.0, 1.0)
    ratio = float(with_qk.max() / without.max()) if len(without) else math.inf
    return Claim(ratio > 1.0, ratio, 1.0)


# --------------------------------------------------------------------------- 3. RMSNorm's invariances


@dataclass
class InvarianceRows:
    """``relative_change[i, j]`` for ``norms[i]`` ("layer", "rms") under ``columns[j]`` (Ba et al.'s six),
    with Zhang & Sennrich's Table 1 verdicts in ``paper``."""

    norms: tuple[str, ...]
    columns: tuple[str, ...]
    relative_change: np.ndarray
    paper: np.ndarray
    tolerance: float

    @property
    def invariant(self) -> np.ndarray:
        return self.relative_change <= self.tolerance


#: Zhang & Sennrich (2019), Table 1, RMSNorm's row (LayerNorm's is Ba et al.'s).
RMS_TABLE1 = dict(zip(PAPER_COLUMNS, (True, False, False, True, False, True)))


def _rms_relative_change(transformation: str, seed: int, n: int = 16, d_in: int = 8, d_out: int = 6) -> float:
    """As :func:`normlab.experiments.layernorm.relative_change`, for RMSNorm (ε = 0, random γ, no β)."""
    rng = np.random.default_rng(seed)
    w = torch.as_tensor(rng.standard_normal((d_out, d_in)), dtype=torch.float64)
    layer = RMSNorm(d_out, eps=0.0, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(rng.uniform(0.5, 2.0, d_out)))
    x = torch.as_tensor(1.0 + 2.0 * rng.standard_normal((n, d_in)), dtype=torch.float64)
    w2, x2 = TRANSFORMATIONS[transformation](w, x, rng)
    with torch.no_grad():
        y, y2 = layer(x @ w.T), layer(x2 @ w2.T)
    return float((y2 - y).abs().max() / y.abs().max())


def rms_invariance_rows(seed: int = 0, tolerance: float = 1e-9) -> InvarianceRows:
    """LayerNorm's row of Ba et al.'s invariance table (chapter 7) and RMSNorm's, computed the same way.
    Chapter ``11_transformers``."""
    columns = PAPER_COLUMNS
    cells = np.array([[relative_change("layer", c, seed=seed) for c in columns],
                      [_rms_relative_change(c, seed) for c in columns]])
    paper = np.array([[BA_ET_AL_TABLE1["layer"][c] for c in columns], [RMS_TABLE1[c] for c in columns]])
    return InvarianceRows(("layer", "rms"), tuple(columns), cells, paper, tolerance)


def rms_rows_match_papers(record: InvarianceRows, broken_above: float = 1e-2) -> Claim:
    """Claim: both rows agree with the papers, with a gap (invariant ≤ tolerance, others > ``broken_above``),
    and they differ in exactly one column, weight-matrix re-centering; value: the smallest broken cell."""
    cells = record.relative_change
    separated = bool(np.all((cells <= record.tolerance) | (cells > broken_above)))
    differ = [c for j, c in enumerate(record.columns) if record.invariant[0, j] != record.invariant[1, j]]
    smallest = float(cells[~record.invariant].min())
    ok = separated and np.array_equal(record.invariant, record.paper) and differ == ["weight matrix re-centering"]
    return Claim(ok, smallest, broken_above)


# --------------------------------------------------------------------------- 5. LayerNorm's map in a trained model


@dataclass
class MapRecord:
    """Inputs ``x`` and outputs ``y`` (before γ, β) of the LayerNorms of a trained model (one
    channel subsample), with the least-squares fits y ≈ a·tanh(b·x) and y ≈ c·x: their
    parameters and root-mean-square residuals."""

    x: np.ndarray
    y: np.ndarray
    layer: np.ndarray
    tanh_params: tuple[float, float]
    linear_slope: float
    tanh_rmse: float
    linear_rmse: float


def ln_input_output_map(model: Transformer, tokens: Tensor, points: int = 4000, seed: int = 0) -> MapRecord:
    """What every LayerNorm of ``model`` does to its input on ``tokens``: (x, x̂) pairs, subsampled to ``points``.

    The paper's Figure 2 plots LayerNorm's output (before the affine γ, β) against its input in
    trained ViT, wav2vec 2.0 and DiT models. The fit of a·tanh(b·x) is a grid search over b with
    the best a in closed form. Chapter ``11_transformers``.
    """
    xs, ys, layers = [], [], []
    handles = []
    modules = [m for m in model.modules() if isinstance(m, LayerNorm) and m.normalized_shape == (model.width,)]

    def hook(index):
        def record(module, inputs, output):
            x = inputs[0].detach()
            xhat = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + module.eps)
            xs.append(x.flatten().numpy())
            ys.append(xhat.flatten().numpy())
            layers.append(np.full(x.numel(), index))
        return record

    for i, module in enumerate(modules):
        handles.append(module.register_forward_hook(hook(i)))
    try:
        with torch.no_grad():
            model.eval()
            model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    x, y, layer = np.concatenate(xs), np.concatenate(ys), np.concatenate(layers)
    pick = np.random.default_rng(seed).choice(len(x), size=min(points, len(x)), replace=False)
    x, y, layer = x[pick], y[pick], layer[pick]
    best = (math.inf, 0.0, 0.0)
    for b in np.geomspace(0.01, 10, 200):
        t = np.tanh(b * x)
        a = float(t @ y / (t @ t))
        err = float(np.sqrt(np.mean((y - a * t) ** 2)))
        best = min(best, (err, a, float(b)))
    c = float(x @ y / (x @ x))
    return MapRecord(x, y, layer, (best[1], best[2]), c, best[0], float(np.sqrt(np.mean((y - c * x) ** 2))))


def tanh_fits_better(record: MapRecord, factor: float = 1.03) -> Claim:
    """Claim: a·tanh(b·x) fits LayerNorm's map better than a line through 0, by ``factor``:
    value: linear RMSE / tanh RMSE."""
    ratio = record.linear_rmse / record.tanh_rmse
    return Claim(ratio > factor, float(ratio), factor)


def step_time_ratio(runs: dict[str, RunRecord], label: str = "pre-RMSNorm", reference: str = "pre-LN") -> float:
    """Seconds per training step of ``label`` over ``reference``, measured in the same call."""
    return runs[label].seconds_per_step / runs[reference].seconds_per_step
