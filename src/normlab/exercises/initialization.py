"""Checkers for the exercises of chapter ``08_initialization``.

In a notebook::

    from normlab.exercises import initialization as check
    check.he_std(he_std)
"""

from __future__ import annotations

import math

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["he_std", "mean_field_step", "predicted_variance", "residual_stream_variance"]

MEAN_FIELD_NODES = 100
"""Gauss–Hermite nodes of the mean-field reference (exact to ~1e-11 on the cases; 20 nodes are within 3e-4)."""


# --- Exercise: the standard deviation of He initialization ------------------------------

def _fans(shape):
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _he_std_reference(shape, mode):
    fan_in, fan_out = _fans(shape)
    return math.sqrt(2.0 / (fan_in if mode == "fan_in" else fan_out))


def _he_std_cases(rng: np.random.Generator) -> list[Case]:
    shapes = [(100, 64), (10, 300), (32, 24, 3, 3), (8, 3, 5, 5), (64, 40, 3)]  # out != 2 * in: mistakes differ
    cases = []
    for shape in shapes:
        for mode in ("fan_in", "fan_out"):
            cases.append(Case((shape, mode), description=f"weight of shape {shape}, mode={mode!r}"))
    return cases


def _fan(shape, mode):
    return _fans(shape)[0 if mode == "fan_in" else 1]


he_std = make_checker(Exercise(
    name="he_std",
    reference=_he_std_reference,
    cases=_he_std_cases,
    returns="Return a float: the standard deviation of the weights.",
    hint=("Equation eq-he in section 'Variance propagation through one layer', and the paragraph after it "
          "on what n_in counts for a convolution.",
          "He chooses the variance that undoes ReLU's halving of the second moment, for the fan that `mode` "
          "names; a fan counts every input (or output) unit that one weight slice connects, kernel positions "
          "included. The exercise asks for a standard deviation, not a variance."),
    forbidden=("normlab.init.kaiming_normal_", "normlab.init.kaiming_uniform_", "normlab.init.calculate_gain",
               "normlab.init.calculate_fan_in_and_fan_out", "normlab.init._fan",
               "torch.nn.init.kaiming_normal_", "torch.nn.init.kaiming_uniform_", "torch.nn.init.calculate_gain",
               "torch.nn.init._calculate_fan_in_and_fan_out", "torch.nn.init._calculate_correct_fan"),
    atol=0.0,
    mistakes=(
        Mistake("no kernel", lambda shape, mode: math.sqrt(2.0 / (shape[1] if mode == "fan_in" else shape[0])),
                "You left out the kernel: for a Conv weight (out, in, k1, k2) each output sums over "
                "in × k1 × k2 inputs, and the fans count all of them."),
        Mistake("swapped fans", lambda shape, mode: _he_std_reference(shape, "fan_out" if mode == "fan_in"
                                                                          else "fan_in"),
                "You swapped the fans. PyTorch stores a weight as (out, in, ...): the number of inputs comes "
                "second."),
        Mistake("lecun", lambda shape, mode: math.sqrt(1.0 / _fan(shape, mode)),
                "You returned LeCun's standard deviation. ReLU zeroes half of its input's second moment, and "
                "He's variance makes up for it."),
        Mistake("variance", lambda shape, mode: 2.0 / _fan(shape, mode),
                "You returned the variance; the exercise asks for the standard deviation."),
        Mistake("xavier", lambda shape, mode: math.sqrt(2.0 / sum(_fans(shape))),
                "You returned Xavier's standard deviation, which averages both fans; He uses one fan, chosen "
                "by `mode`."),
        Mistake("uniform bound", lambda shape, mode: math.sqrt(6.0 / _fan(shape, mode)),
                "You returned the bound b of He's uniform scheme U(−b, b), not the standard deviation of "
                "He's normal scheme."),
    ),
))


# --- Exercise: the variance after L ReLU or linear layers -------------------------------

def _predicted_variance_reference(q0, depth, weight_var_fan, activation):
    factor = weight_var_fan * (0.5 if activation == "relu" else 1.0)
    return q0 * factor**depth


PYTORCH_DEFAULT_CASE = "PyTorch's default without bias, z_1 to z_20 (19 layers), n·Var[W] = 1/3, relu"


def _predicted_variance_cases(rng: np.random.Generator) -> list[Case]:
    cases = [Case((q0, depth, s, act), description=f"q0={q0}, {depth} layers, n·Var[W]={s:.4g}, {act}")
             for q0, depth, s, act in [(1.0, 10, 2.0, "relu"), (2.0, 50, 1.0, "relu"), (0.5, 20, 1 / 3, "relu"),
                                       (1.0, 30, 1.1, "linear"), (3.0, 5, 0.9, "linear"), (1.0, 1, 2.5, "relu"),
                                       (1.5, 12, 3.0, "relu")]]
    cases.insert(3, Case((1 / 3, 19, 1 / 3, "relu"), description=PYTORCH_DEFAULT_CASE))
    return cases


predicted_variance = make_checker(Exercise(
    name="predicted_variance",
    reference=_predicted_variance_reference,
    cases=_predicted_variance_cases,
    returns="Return a float: the predicted variance after `depth` layers.",
    hint=("Equation eq-init-forward in section 'Variance propagation through one layer' (the ReLU paragraph), "
          "and eq-mean-field in 'Many layers: the mean-field recursion'.",
          "Each layer multiplies the pre-activation variance by the same factor: n·Var[W] times the fraction "
          "of the second moment that the activation lets through (all of it for the identity). Apply that "
          "factor once per layer."),
    rtol=1e-9,
    atol=0.0,
    mistakes=(
        Mistake("no half", lambda q0, depth, s, act: q0 * s**depth,
                "You left out ReLU's effect on the second moment: it passes only part of E[z²] for a "
                "symmetric z."),
        Mistake("half once", lambda q0, depth, s, act: q0 * s**depth * (0.5 if act == "relu" else 1.0),
                "You applied ReLU's factor once; every one of the `depth` layers has a ReLU."),
        Mistake("off by one", lambda q0, depth, s, act: q0 * (s * (0.5 if act == "relu" else 1.0)) ** (depth - 1),
                "Your exponent is one short: `depth` layers apply the per-layer factor `depth` times."),
        Mistake("one too many", lambda q0, depth, s, act: q0 * (s * (0.5 if act == "relu" else 1.0)) ** (depth + 1),
                "Your exponent is one too large: `depth` layers apply the per-layer factor `depth` times."),
        Mistake("relu doubles", lambda q0, depth, s, act: q0 * (s * (2.0 if act == "relu" else 1.0)) ** depth,
                "You multiplied by 2 for ReLU. He's 2 in Var[W] = 2/n is there to undo ReLU's effect; ReLU "
                "itself shrinks the second moment."),
        Mistake("linear growth",
                lambda q0, depth, s, act: q0 * (1 + depth * (s * (0.5 if act == "relu" else 1.0) - 1)),
                "Your variance changes linearly in depth; each layer multiplies it, so it changes "
                "geometrically."),
    ),
))


# --- Exercise: one step of the mean-field variance map -----------------------------------

def _gauss_expectation(f, q, nodes=MEAN_FIELD_NODES):
    """E[f(√q Z)] for Z ~ N(0, 1) by probabilists' Gauss–Hermite quadrature."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float(w @ np.asarray(f(math.sqrt(q) * x), dtype=float)) / math.sqrt(2 * math.pi)


def _mean_field_reference(q, weight_var_fan, phi):
    return weight_var_fan * _gauss_expectation(lambda z: np.asarray(phi(z), dtype=float) ** 2, q)


def _relu(z):
    return np.maximum(z, 0.0)


def _identity(z):
    return z


def _mean_field_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case((1.0, 1.0, np.tanh), description="tanh, q = 1, n·Var[W] = 1"),
        Case((0.05, 2.0, np.tanh), description="tanh, q = 0.05, n·Var[W] = 2"),
        Case((1.0, 1.5, np.cos), description="cosine (an even φ, mean not 0), q = 1, n·Var[W] = 1.5"),
        Case((3.0, 2.0, _relu), description="ReLU, q = 3, n·Var[W] = 2 (He)"),
        Case((2.0, 0.7, _identity), description="identity, q = 2, n·Var[W] = 0.7"),
        Case((4.0, 1.5, np.sin), description="sine, q = 4, n·Var[W] = 1.5"),
    ]


def _centred(q, s, phi):
    mean = _gauss_expectation(lambda z: np.asarray(phi(z), dtype=float), q)
    return s * (_gauss_expectation(lambda z: np.asarray(phi(z), dtype=float) ** 2, q) - mean**2)


mean_field_step = make_checker(Exercise(
    name="mean_field_step",
    reference=_mean_field_reference,
    cases=_mean_field_cases,
    returns="Return a float: the next layer's pre-activation variance q'.",
    hint=("Equation eq-mean-field in section 'Many layers: the mean-field recursion'; the quadrature is "
          "NumPy's np.polynomial.hermite_e.hermegauss.",
          "The pre-activation is √q times a standard normal Z. Evaluate φ² at the quadrature nodes scaled "
          "accordingly, and turn the weighted sum into an expectation over N(0, 1): hermegauss's weights are "
          "for the weight function exp(−x²/2), which is not normalized. Then multiply by n·Var[W]."),
    rtol=1e-3,
    atol=0.0,
    forbidden=("normlab.experiments.initialization.mean_field_variances",),
    mistakes=(
        Mistake("q not sqrt", lambda q, s, phi: _mean_field_reference(q * q, s, phi),
                "You scaled Z by q; a variance q means a standard deviation √q."),
        Mistake("unnormalized weights", lambda q, s, phi: math.sqrt(2 * math.pi) * _mean_field_reference(q, s, phi),
                "Your expectation is √(2π) times too large: hermegauss's weights sum to √(2π), not 1."),
        Mistake("physicists' Hermite", lambda q, s, phi: _mean_field_reference(q / 2, s, phi),
                "Your expectation is over N(0, q/2) instead of N(0, q): np.polynomial.hermite.hermgauss is for "
                "the weight exp(−x²), whose nodes are those of a normal with variance 1/2. Use hermite_e's "
                "hermegauss, or rescale the nodes."),
        Mistake("no weight variance", lambda q, s, phi: _mean_field_reference(q, 1.0, phi),
                "You left out the weights: each layer multiplies E[φ²] by n·Var[W]."),
        Mistake("square of mean", lambda q, s, phi: s * _gauss_expectation(lambda z: np.asarray(phi(z), dtype=float),
                                                                          q) ** 2,
                "You squared the expectation of φ; the recursion needs the expectation of φ², the second "
                "moment."),
        Mistake("variance of phi", _centred,
                "You computed the variance of φ(z) about its mean. The next layer's pre-activation sums W·φ(z) "
                "with zero-mean weights, so its variance is n·Var[W] times the second moment E[φ(z)²]."),
    ),
))


# --- Exercise: variance of a residual stream ---------------------------------------------

def _residual_reference(q0, blocks, scale):
    return q0 * (1 + scale**2) ** np.arange(1, blocks + 1)


def _residual_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((q0, blocks, scale), description=f"q0={q0}, B={blocks}, s={scale:.3g}")
            for q0, blocks, scale in [(2.0, 8, 1.0), (2.0, 16, 0.25), (1.0, 32, 1 / math.sqrt(32)),
                                      (0.5, 10, 0.1), (1.0, 4, 0.0), (3.0, 12, 0.6)]]


residual_stream_variance = make_checker(Exercise(
    name="residual_stream_variance",
    reference=_residual_reference,
    cases=_residual_cases,
    returns="Return an array of shape (blocks,): Var[h_1], ..., Var[h_B].",
    hint=("Equation eq-residual in section 'Residual networks: the stream grows unless the branches are scaled'.",
          "A block adds to the stream a branch output that is uncorrelated with it and has the stream's "
          "variance times the square of the branch scale; variances of uncorrelated terms add. Each block "
          "therefore multiplies the variance by the same factor. The array starts after the first block."),
    rtol=1e-9,
    atol=0.0,
    forbidden=("normlab.experiments.initialization.predicted_residual_variance",),
    mistakes=(
        Mistake("linear", lambda q0, blocks, scale: q0 + q0 * scale**2 * np.arange(1, blocks + 1),
                "Your variance grows linearly, as if each branch added a fixed amount. A branch that preserves "
                "its input's variance adds s² times the current stream variance: the growth compounds."),
        Mistake("normalized branch", lambda q0, blocks, scale: q0 + scale**2 * np.arange(1, blocks + 1),
                "That is the stream whose branches start with a normalization layer (unit-variance branch "
                "outputs). Here the branches preserve the variance of their input, which grows."),
        Mistake("scale not squared", lambda q0, blocks, scale: q0 * (1 + scale) ** np.arange(1, blocks + 1),
                "Scaling a branch by s scales its variance by s², not s."),
        Mistake("from zero", lambda q0, blocks, scale: q0 * (1 + scale**2) ** np.arange(blocks),
                "Your array starts at b = 0 (the input). Return Var[h_1], ..., Var[h_B]."),
    ),
))
