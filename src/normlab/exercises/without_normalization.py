"""Checkers for the exercises of chapter ``13_without_normalization`` (training deep networks without normalization).

In a notebook::

    from normlab.exercises import without_normalization as check
    check.agc_clip(agc_clip)
"""

from __future__ import annotations

import math

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["agc_clip", "fixup_branch_stds", "scaled_ws", "skipinit_stream_variance"]


# --- Exercise: adaptive gradient clipping -------------------------------------------------

def _unit_norms(x: np.ndarray, axis: str = "rows") -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim <= 1 or axis == "all":
        return np.full((1,) * max(x.ndim, 1), np.sqrt((x**2).sum()))
    if axis == "columns":
        return np.sqrt((x**2).sum(axis=0, keepdims=True))
    return np.sqrt((x**2).reshape(x.shape[0], -1).sum(axis=1)).reshape((-1,) + (1,) * (x.ndim - 1))


def _agc(weight, grad, clipping, eps, axis="rows", floor="max", always=False):
    w_norm = _unit_norms(weight, axis)
    w_star = np.maximum(w_norm, eps) if floor == "max" else w_norm + eps
    g_norm = _unit_norms(grad, axis)
    limit = clipping * w_star
    factor = np.where(always | (g_norm > limit), limit / g_norm, 1.0)
    return np.asarray(grad, dtype=float) * factor


def _agc_reference(weight, grad, clipping, eps):
    return _agc(weight, grad, clipping, eps)


def _agc_cases(rng: np.random.Generator) -> list[Case]:
    """Each unit's gradient is drawn at a chosen multiple of λ‖W_i‖*: some units below the threshold, some above."""
    cases = []
    specs = [((6, 5), 0.01, 1e-3, 1.0, "a Linear weight"),
             ((4, 3, 3, 3), 0.05, 1e-3, 1.0, "a Conv2d kernel (out, in, kH, kW)"),
             ((5, 8), 0.1, 1e-2, 1.0, "a Linear weight with two zero rows (Fixup's zero layer)"),
             ((7,), 0.02, 1e-3, 1.0, "a bias vector (one unit: the whole vector)"),
             ((6, 6), 0.5, 0.2, 0.08, "rows of norm near ε"),
             ((8, 4), 0.01, 1e-3, 1.0, "rows of very different norms")]
    for shape, clipping, eps, scale, description in specs:
        units = shape[0] if len(shape) > 1 else 1
        unit_shape = (units,) + (1,) * (len(shape) - 1)
        weight = rng.standard_normal(shape)
        weight /= np.sqrt((weight.reshape(units, -1) ** 2).sum(axis=1)).reshape(unit_shape if len(shape) > 1 else ())
        norms = scale * rng.uniform(0.3, 3.0, units)
        if "very different" in description:
            norms = np.array([1e-2, 1.0, 10.0, 0.1, 1.0, 3.0, 1e-4, 0.5])
        if "zero rows" in description:
            norms[[1, 3]] = 0.0
        weight = weight * (norms.reshape(unit_shape) if len(shape) > 1 else norms[0])
        direction = rng.standard_normal(shape)
        direction /= np.sqrt((direction.reshape(units, -1) ** 2).sum(axis=1)).reshape(
            unit_shape if len(shape) > 1 else ())
        ratio = np.resize([0.4, 3.0, 0.8, 6.0, 1.5, 0.2, 20.0, 0.6], units)   # ‖G_i‖ / (λ ‖W_i‖*)
        if len(shape) == 1:
            ratio = np.array([4.0])
        grad_norms = ratio * clipping * np.maximum(norms, eps)
        grad = direction * (grad_norms.reshape(unit_shape) if len(shape) > 1 else grad_norms[0])
        cases.append(Case((weight, grad, clipping, eps), description=f"weight {shape}: {description}, λ={clipping:g}, "
                                                                      f"eps={eps:g}"))
    return cases


agc_clip = make_checker(Exercise(
    name="agc_clip",
    reference=_agc_reference,
    cases=_agc_cases,
    returns="Return a new array of grad's shape: the clipped gradient.",
    hint=("Equations eq-agc-norm and eq-agc in section 'Adaptive gradient clipping'.",
          "Work unit by unit: a unit is the slice of the weight that feeds one output (everything after the first "
          "axis), or the whole array for a 1-D parameter. Compare the ratio of the gradient's norm to the floored "
          "weight norm with λ, and rescale only the units that exceed it, so that their ratio becomes exactly λ."),
    rtol=1e-6,
    atol=0.0,
    eps_argument="eps",
    forbidden=("normlab.optim.adaptive_gradient_clipping_", "normlab.optim.unitwise_norm", "normlab.optim.install_agc",
               "torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_value_"),
    mistakes=(
        Mistake("global norm", lambda w, g, lam, eps: _agc(w, g, lam, eps, axis="all"),
                "You clipped with the norms of the whole tensor. AGC is unit-wise: each output unit's gradient "
                "is compared with that unit's own weights."),
        Mistake("columns", lambda w, g, lam, eps: _agc(w, g, lam, eps, axis="columns"),
                "Your units are the columns (inputs). PyTorch stores weights as (out, in, ...): a unit is a slice "
                "along the first axis."),
        Mistake("eps added", lambda w, g, lam, eps: _agc(w, g, lam, eps, floor="add"),
                "You added ε to the weight norm; the paper floors the norm at ε (it only matters for tiny weights)."),
        Mistake("always rescaled", lambda w, g, lam, eps: _agc(w, g, lam, eps, always=True),
                "You rescaled every unit, also those whose ratio is already below λ: AGC leaves those unchanged."),
        Mistake("inverted ratio", lambda w, g, lam, eps: np.asarray(g, float) * np.where(
                    _unit_norms(g) > lam * np.maximum(_unit_norms(w), eps),
                    _unit_norms(g) / (lam * np.maximum(_unit_norms(w), eps)), 1.0),
                "Your clipped units grew: the rescaling factor is upside down."),
    ),
))


# --- Exercise: Fixup's scaling -------------------------------------------------------------

def _fixup_reference(fan_in, blocks, layers_per_branch):
    he = math.sqrt(2.0 / fan_in)
    scale = blocks ** (-1.0 / (2 * layers_per_branch - 2))
    return np.array([he * scale] * (layers_per_branch - 1) + [0.0])


def _fixup_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((fan, blocks, m), description=f"fan_in={fan}, L={blocks} branches of m={m} layers")
            for fan, blocks, m in [(64, 16, 2), (256, 64, 2), (128, 8, 3), (32, 100, 3), (512, 27, 4), (100, 5, 2)]]


def _fixup_branch_mistakes():
    def rule(exponent):
        def wrong(fan, blocks, m):
            out = _fixup_reference(fan, blocks, m)
            out[:-1] = math.sqrt(2.0 / fan) * blocks ** exponent(m)
            return out
        return wrong

    def lecun(fan, blocks, m):
        out = _fixup_reference(fan, blocks, m)
        out[:-1] /= math.sqrt(2.0)
        return out

    def variance(fan, blocks, m):
        out = _fixup_reference(fan, blocks, m)
        return out**2

    def last_scaled(fan, blocks, m):
        out = _fixup_reference(fan, blocks, m)
        out[-1] = out[0]
        return out

    return (
        Mistake("one over sqrt L", rule(lambda m: -0.5),
                "Your exponent of L does not depend on m. With m layers in a branch the branch's output scales "
                "like the product of m − 1 scaled layers: the exponent must depend on m."),
        Mistake("1/(2m)", rule(lambda m: -1.0 / (2 * m)),
                "Your exponent counts all m layers of the branch; the last one starts at zero and does not scale "
                "the branch's first update."),
        Mistake("1/(m-1)", rule(lambda m: -1.0 / (m - 1)),
                "Your exponent is twice too large: the requirement is on the *variance* of the branch's change, "
                "the square of the scale."),
        Mistake("lecun", lecun, "Your standard deviation before rescaling is LeCun's; the branch has ReLUs, "
                                "so start from He's."),
        Mistake("variance", variance, "You returned variances; the exercise asks for standard deviations."),
        Mistake("last layer scaled", last_scaled,
                "The last layer of each branch starts at zero in Fixup; you gave it the scaled He value."),
    )


fixup_branch_stds = make_checker(Exercise(
    name="fixup_branch_stds",
    reference=_fixup_reference,
    cases=_fixup_cases,
    returns="Return an array of shape (layers_per_branch,): the initial standard deviation of each layer of a branch.",
    hint=("Equation eq-fixup-scale in section 'Fixup', and rule 2 of the list above it.",
          "Start from the standard deviation that keeps a ReLU layer's variance steady. A branch's change after one "
          "step is the product of its m − 1 non-zero layers' scales squared; ask that L such branches together "
          "change the output by a depth-independent amount. The last layer is special."),
    rtol=1e-9,
    atol=0.0,
    forbidden=("normlab.init.fixup_", "normlab.init.fixup_scale", "normlab.init.kaiming_normal_",
               "normlab.init.kaiming_uniform_", "normlab.init.calculate_gain", "torch.nn.init.kaiming_normal_",
               "torch.nn.init.kaiming_uniform_", "torch.nn.init.calculate_gain"),
    mistakes=_fixup_branch_mistakes(),
))


# --- Exercise: scaled weight standardization ----------------------------------------------

def _ws(weight, gain, gamma, eps, sqrt_n=True, correction=0, floor="max", axis="rows", center=True):
    w = np.asarray(weight, dtype=float)
    if axis == "rows":
        flat = w.reshape(w.shape[0], -1)
        mean = flat.mean(axis=1, keepdims=True)
        var = flat.var(axis=1, ddof=correction, keepdims=True)
        n = flat.shape[1]
        g = np.asarray(gain, dtype=float)[:, None]
    else:
        flat = w.reshape(w.shape[0], -1)
        mean = flat.mean(axis=0, keepdims=True)
        var = flat.var(axis=0, ddof=correction, keepdims=True)
        n = flat.shape[0]
        g = np.asarray(gain, dtype=float)[:, None]
    scaled = var * n if sqrt_n else var
    denominator = np.sqrt(np.maximum(scaled, eps)) if floor == "max" else np.sqrt(scaled + eps)
    centered = flat - mean if center else flat
    return (g * gamma * centered / denominator).reshape(w.shape)


def _ws_reference(weight, gain, gamma, eps):
    return _ws(weight, gain, gamma, eps)


def _ws_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for shape, gamma, eps, std, description in [
            ((6, 10), 1.0, 1e-4, 1.0, "a Linear weight, γ = 1"),
            ((4, 3, 3, 3), 1.7129, 1e-4, 0.5, "a Conv2d kernel (out, in, kH, kW), γ for ReLU"),
            ((5, 8), 1.7129, 1e-2, 0.025, "small weights: N·σ² is near ε = 0.01"),
            ((3, 20), 0.8, 0.5, 0.1, "ε = 0.5, larger than some rows' N·σ²"),
            ((8, 2, 5), 2.0, 1e-4, 2.0, "a Conv1d kernel, rows with a large mean")]:
        weight = rng.standard_normal(shape) * std * rng.uniform(0.3, 2.0, (shape[0],) + (1,) * (len(shape) - 1))
        weight += rng.uniform(-1, 1, (shape[0],) + (1,) * (len(shape) - 1)) * std
        gain = rng.uniform(0.5, 2.0, shape[0])
        cases.append(Case((weight, gain, gamma, eps), description=f"weight {shape}: {description}, eps={eps:g}"))
    return cases


scaled_ws = make_checker(Exercise(
    name="scaled_ws",
    reference=_ws_reference,
    cases=_ws_cases,
    returns="Return a new array of weight's shape: the scaled standardized weight.",
    hint=("Equations eq-ws-stats and eq-ws in section 'Normalizer-free networks'.",
          "Each output unit (a slice along the first axis) is standardized over all its fan-in entries, with the "
          "population variance; the fan-in also enters the scale so that the row's norm, not its entries, comes "
          "out fixed. ε floors the quantity under the square root. Then γ and the unit's gain multiply."),
    rtol=1e-6,
    atol=1e-12,
    eps_argument="eps",
    forbidden=("normlab.layers.standardized_weight", "normlab.layers.WSLinear", "normlab.layers.WSConv2d",
               "normlab.layers.weight_standardization.standardized_weight", "torch.nn.functional.layer_norm",
               "torch.layer_norm", "torch.nn.functional.batch_norm", "torch.batch_norm",
               "torch.nn.functional.instance_norm", "torch.nn.functional.group_norm"),
    mistakes=(
        Mistake("no sqrt N", lambda w, g, gamma, eps: _ws(w, g, gamma, eps, sqrt_n=False),
                "This is plain weight standardization (Qiao et al.): the scaled version also divides by the square "
                "root of the fan-in, so that each row's norm, not each entry, is fixed."),
        Mistake("unbiased", lambda w, g, gamma, eps: _ws(w, g, gamma, eps, correction=1),
                "You used the unbiased variance (dividing by N − 1); the standardization uses the population "
                "variance, dividing by N."),
        Mistake("eps added", lambda w, g, gamma, eps: _ws(w, g, gamma, eps, floor="add"),
                "You added ε under the square root; here ε is a floor (a maximum), as in the NFNets code."),
        Mistake("wrong axis", lambda w, g, gamma, eps: _ws(w, g, gamma, eps, axis="columns"),
                "Your statistics are over the output units; standardize each output unit over its fan-in."),
        Mistake("no centering", lambda w, g, gamma, eps: _ws(w, g, gamma, eps, center=False),
                "You did not subtract each row's mean: weight standardization centers the rows, which is what "
                "stops ReLU's mean shift from building up."),
        Mistake("no gamma", lambda w, g, gamma, eps: _ws(w, g, 1.0, eps),
                "Your output ignores γ, the nonlinearity's gain."),
        Mistake("no gain", lambda w, g, gamma, eps: _ws(w, np.ones_like(np.asarray(g, float)), gamma, eps),
                "Your output ignores the learnable gain g of each unit."),
    ),
))


# --- Exercise: the SkipInit stream after training -----------------------------------------

def _skipinit_reference(q0, alphas, branch_gain):
    alphas = np.asarray(alphas, dtype=float)
    return q0 * np.cumprod(1.0 + branch_gain * alphas**2)


def _skipinit_cases(rng: np.random.Generator) -> list[Case]:
    cases = [Case((1.0, np.zeros(8), 1.0), description="at initialization: every α = 0, 8 blocks"),
             Case((1.0, np.full(16, 0.25), 1.0), description="16 blocks, every α = 0.25, c = 1"),
             Case((2.0, np.array([0.5, -0.5, 0.3, -0.1, 0.8]), 1.0), description="5 blocks, α of both signs, q0 = 2"),
             Case((0.7, rng.uniform(-1, 1, 12), 2.0), description="12 blocks, random α, c = 2"),
             Case((1.5, rng.uniform(-0.3, 0.3, 64), 0.5), description="64 blocks, random α, c = 0.5")]
    return cases


skipinit_stream_variance = make_checker(Exercise(
    name="skipinit_stream_variance",
    reference=_skipinit_reference,
    cases=_skipinit_cases,
    returns="Return an array of shape (B,): Var[h_1], ..., Var[h_B].",
    hint=("Equation eq-skipinit in section 'What BN does to a deep residual network', and eq-residual of chapter 8.",
          "The branch's output is uncorrelated with the stream it reads, so variances add; the gate multiplies the "
          "branch's output, and the branch multiplies its input's variance by c. Each block acts on the stream "
          "that the previous blocks produced."),
    rtol=1e-9,
    atol=0.0,
    forbidden=("normlab.experiments.initialization.predicted_residual_variance",),
    mistakes=(
        Mistake("amplitudes add", lambda q0, a, c: q0 * np.cumprod((1.0 + math.sqrt(c) * np.abs(np.asarray(a, float))) ** 2),
                "You added standard deviations, as if the branch were perfectly correlated with the stream. They are "
                "uncorrelated at initialization: variances add."),
        Mistake("alpha not squared", lambda q0, a, c: q0 * np.cumprod(1.0 + c * np.asarray(a, float)),
                "The gate multiplies the branch's output, so it multiplies its variance by its square."),
        Mistake("linear", lambda q0, a, c: q0 + np.cumsum(c * np.asarray(a, float) ** 2),
                "Your variance grows by a fixed amount per block, as with BN at the head of the branch. Here the "
                "branch's variance is proportional to the stream's: the growth compounds."),
        Mistake("no branch gain", lambda q0, a, c: q0 * np.cumprod(1.0 + np.asarray(a, float) ** 2),
                "You left out c, the factor by which the branch multiplies its input's variance."),
        Mistake("includes h0", lambda q0, a, c: q0 * np.cumprod(np.concatenate([[1.0], 1.0 + c * np.asarray(a, float) ** 2]))[:-1],
                "Your array is shifted by one block: element b should include block b's own gate."),
    ),
))
