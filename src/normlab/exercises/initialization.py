"""Checkers for the exercises of chapter "Initialization: variance propagation, Xavier, He, orthogonal,
residual scaling".

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


he_std = make_checker(Exercise(
    name="he_std",
    reference=_he_std_reference,
    cases=_he_std_cases,
    hint="std = sqrt(2 / fan); a weight of shape (out, in, *kernel) has fan_in = in * prod(kernel) and "
         "fan_out = out * prod(kernel).",
    mistakes=(
        Mistake("no kernel", lambda shape, mode: math.sqrt(2.0 / (shape[1] if mode == "fan_in" else shape[0])),
                "You left out the kernel: for a Conv weight (out, in, k1, k2) each output sums over "
                "in * k1 * k2 inputs, so fan_in = in * k1 * k2."),
        Mistake("swapped fans", lambda shape, mode: _he_std_reference(shape, "fan_out" if mode == "fan_in"
                                                                          else "fan_in"),
                "You swapped the fans. PyTorch stores a weight as (out, in, ...): fan_in comes from shape[1]."),
        Mistake("lecun", lambda shape, mode: math.sqrt(1.0 / _fans(shape)[0 if mode == "fan_in" else 1]),
                "You returned sqrt(1 / fan) (LeCun). ReLU zeroes half of its input's second moment, so He "
                "doubles the variance: sqrt(2 / fan)."),
        Mistake("variance", lambda shape, mode: 2.0 / _fans(shape)[0 if mode == "fan_in" else 1],
                "You returned the variance 2 / fan; the standard deviation is its square root."),
        Mistake("xavier", lambda shape, mode: math.sqrt(2.0 / sum(_fans(shape))),
                "You returned Xavier's sqrt(2 / (fan_in + fan_out)); He uses one fan, chosen by mode."),
    ),
))


# --- Exercise: the variance after L ReLU or linear layers -------------------------------

def _predicted_variance_reference(q0, depth, weight_var_fan, activation):
    factor = weight_var_fan * (0.5 if activation == "relu" else 1.0)
    return q0 * factor**depth


def _predicted_variance_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((q0, depth, s, act), description=f"q0={q0}, {depth} layers, n·Var[W]={s}, {act}")
            for q0, depth, s, act in [(1.0, 10, 2.0, "relu"), (2.0, 50, 1.0, "relu"), (0.5, 20, 1 / 3, "relu"),
                                      (1.0, 30, 1.0, "linear"), (3.0, 5, 0.9, "linear"), (1.0, 1, 2.5, "relu")]]


predicted_variance = make_checker(Exercise(
    name="predicted_variance",
    reference=_predicted_variance_reference,
    cases=_predicted_variance_cases,
    hint="Each layer multiplies the pre-activation variance by n·Var[W]·E[φ(z)²]/Var[z]: that last ratio is "
         "1/2 for ReLU and 1 for the identity. Apply it `depth` times.",
    rtol=1e-9,
    mistakes=(
        Mistake("no half", lambda q0, depth, s, act: q0 * s**depth,
                "You left out ReLU's factor 1/2: E[relu(z)²] = Var[z]/2 for a symmetric z."),
        Mistake("off by one", lambda q0, depth, s, act: q0 * (s * (0.5 if act == "relu" else 1.0)) ** (depth - 1),
                "Your exponent is one short: `depth` layers apply the factor `depth` times."),
        Mistake("linear growth", lambda q0, depth, s, act: q0 * (1 + depth * (s * (0.5 if act == "relu" else 1.0) - 1)),
                "Your variance changes linearly in depth; each layer multiplies it, so it changes geometrically."),
    ),
))


# --- Exercise: one step of the mean-field variance map -----------------------------------

def _mean_field_reference(q, weight_var_fan, phi):
    nodes, weights = np.polynomial.hermite_e.hermegauss(100)
    weights = weights / math.sqrt(2 * math.pi)
    return weight_var_fan * float(weights @ np.asarray(phi(math.sqrt(q) * nodes)) ** 2)


def _relu(z):
    return np.maximum(z, 0.0)


def _identity(z):
    return z


def _mean_field_cases(rng: np.random.Generator) -> list[Case]:
    return [
        Case((1.0, 1.0, np.tanh), description="tanh, q = 1, n·Var[W] = 1"),
        Case((0.05, 2.0, np.tanh), description="tanh, q = 0.05, n·Var[W] = 2"),
        Case((3.0, 2.0, _relu), description="ReLU, q = 3, n·Var[W] = 2 (He)"),
        Case((2.0, 0.7, _identity), description="identity, q = 2, n·Var[W] = 0.7"),
        Case((4.0, 1.5, np.sin), description="sine, q = 4, n·Var[W] = 1.5"),
    ]


mean_field_step = make_checker(Exercise(
    name="mean_field_step",
    reference=_mean_field_reference,
    cases=_mean_field_cases,
    hint="q' = s·E[φ(√q Z)²] with Z ~ N(0, 1). With nodes, weights = np.polynomial.hermite_e.hermegauss(k), "
         "E[f(Z)] ≈ sum(weights * f(nodes)) / sqrt(2π).",
    rtol=1e-4,
    atol=1e-10,
    mistakes=(
        Mistake("q not sqrt", lambda q, s, phi: _mean_field_reference(q * q, s, phi),
                "You scaled Z by q; a variance q means a standard deviation √q: evaluate φ(√q·Z)."),
        Mistake("unnormalized weights", lambda q, s, phi: math.sqrt(2 * math.pi) * _mean_field_reference(q, s, phi),
                "hermegauss's weights sum to √(2π), not 1: divide them by √(2π) to get an expectation."),
        Mistake("no weight variance", lambda q, s, phi: _mean_field_reference(q, 1.0, phi),
                "You left out the weights: each layer multiplies E[φ²] by n·Var[W]."),
        Mistake("variance of phi", lambda q, s, phi: s * _centred(q, phi),
                "You computed the variance of φ(z) about its mean. The next layer's pre-activation "
                "sums W·φ(z) with zero-mean weights, so its variance is n·Var[W]·E[φ(z)²], the second moment."),
    ),
))


def _centred(q, phi):
    nodes, weights = np.polynomial.hermite_e.hermegauss(100)
    weights = weights / math.sqrt(2 * math.pi)
    values = np.asarray(phi(math.sqrt(q) * nodes))
    mean = float(weights @ values)
    return float(weights @ values**2) - mean**2


# --- Exercise: variance of a residual stream ---------------------------------------------

def _residual_reference(q0, blocks, scale):
    return q0 * (1 + scale**2) ** np.arange(1, blocks + 1)


def _residual_cases(rng: np.random.Generator) -> list[Case]:
    return [Case((q0, blocks, scale), description=f"q0={q0}, B={blocks}, s={scale:.3g}")
            for q0, blocks, scale in [(1.0, 8, 1.0), (2.0, 16, 0.25), (1.0, 32, 1 / math.sqrt(32)),
                                      (0.5, 10, 0.1), (1.0, 4, 0.0)]]


residual_stream_variance = make_checker(Exercise(
    name="residual_stream_variance",
    reference=_residual_reference,
    cases=_residual_cases,
    hint="h_b = h_{b-1} + s·F(h_{b-1}) with F variance-preserving and uncorrelated with its input: "
         "Var[h_b] = (1 + s²)·Var[h_{b-1}]. Return the array for b = 1, ..., B.",
    rtol=1e-9,
    mistakes=(
        Mistake("linear", lambda q0, blocks, scale: q0 + q0 * scale**2 * np.arange(1, blocks + 1),
                "Your variance grows linearly, as if each branch added a fixed amount. A branch that preserves "
                "its input's variance adds s² times the current stream variance: the growth compounds."),
        Mistake("scale not squared", lambda q0, blocks, scale: q0 * (1 + scale) ** np.arange(1, blocks + 1),
                "Scaling a branch by s scales its variance by s², not s."),
        Mistake("from zero", lambda q0, blocks, scale: q0 * (1 + scale**2) ** np.arange(blocks),
                "Your array starts at b = 0 (the input). Return Var[h_1], ..., Var[h_B]."),
    ),
))
