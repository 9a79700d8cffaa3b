"""Checkers for the exercises of chapter "Internal covariate shift".

In a notebook::

    from normlab.exercises import ics as check
    check.importance_weighted_fit(importance_weighted_fit)
    check.two_layer_gradient_ics(two_layer_gradient_ics)

Both exercises take and return NumPy arrays; the references are written out here in a
few lines (the weighted fit is :func:`normlab.experiments.ics.weighted_line_fit`), and
:func:`normlab.probes.gradient_ics` is tested against the second in
``tests/test_probes_ics.py``.
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker
from normlab.experiments.ics import weighted_line_fit as _weighted_line


def _normal_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


# --- Exercise: importance-weighted least squares under covariate shift -------------------

def _importance_reference(x, y, train_mean, train_std, test_mean, test_std):
    w = _normal_pdf(x, test_mean, test_std) / _normal_pdf(x, train_mean, train_std)
    return _weighted_line(x, y, w)


def _importance_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for n, (mu0, s0, mu1, s1) in [(50, (0.5, 0.5, 0.0, 0.3)), (200, (1.0, 0.8, -0.5, 0.5)), (30, (0.0, 1.0, 0.8, 0.4))]:
        x = rng.normal(mu0, s0, n)
        y = -x + x ** 3 + rng.normal(0, 0.3, n)
        cases.append(Case((x, y, mu0, s0, mu1, s1), description=f"{n} points, train N({mu0}, {s0}²), "
                                                                 f"test N({mu1}, {s1}²)"))
    return cases


importance_weighted_fit = make_checker(Exercise(
    name="importance_weighted_fit",
    reference=_importance_reference,
    cases=_importance_cases,
    hint="Weight each training point by w(x) = p_test(x) / p_train(x) (both Gaussian densities), then solve the "
         "weighted normal equations for (intercept, slope): (Aᵀ W A) θ = Aᵀ W y with A = [1, x].",
    mistakes=(
        Mistake("unweighted", lambda x, y, m0, s0, m1, s1: _weighted_line(x, y, np.ones_like(x)),
                "You fitted ordinary least squares: every training point counts the same, so the line fits where "
                "the training inputs are dense, not where the test inputs are. Weight by p_test(x)/p_train(x)."),
        Mistake("inverted weights", lambda x, y, m0, s0, m1, s1: _weighted_line(
                    x, y, _normal_pdf(x, m0, s0) / _normal_pdf(x, m1, s1)),
                "Your weights are p_train(x)/p_test(x): upside down. Points likely under the *test* distribution "
                "must count more: w(x) = p_test(x)/p_train(x)."),
        Mistake("std as variance", lambda x, y, m0, s0, m1, s1: _weighted_line(
                    x, y, _normal_pdf(x, m1, s1 ** 2) / _normal_pdf(x, m0, s0 ** 2)),
                "The arguments are standard deviations; you used them as variances in the Gaussian density."),
    ),
))


# --- Exercise: gradient ICS of a two-layer linear network --------------------------------

def _two_layer_grads(w1, w2, x, y):
    """Gradients of L = ‖X W1ᵀ W2ᵀ − Y‖² / (2n) with respect to W1 and W2."""
    n = x.shape[0]
    h = x @ w1.T
    r = h @ w2.T - y
    return w2.T @ r.T @ x / n, r.T @ h / n


def _ics_from(g, g_new):
    return np.array([np.linalg.norm(g - g_new), np.sum(g * g_new) / (np.linalg.norm(g) * np.linalg.norm(g_new))])


def _two_layer_reference(w1, w2, x, y, lr):
    g1, g2 = _two_layer_grads(w1, w2, x, y)
    _, g2_new = _two_layer_grads(w1 - lr * g1, w2, x, y)
    return _ics_from(g2, g2_new)


def _both_stepped(w1, w2, x, y, lr):
    g1, g2 = _two_layer_grads(w1, w2, x, y)
    _, g2_new = _two_layer_grads(w1 - lr * g1, w2 - lr * g2, x, y)
    return _ics_from(g2, g2_new)


def _wrong_sign(w1, w2, x, y, lr):
    g1, g2 = _two_layer_grads(w1, w2, x, y)
    _, g2_new = _two_layer_grads(w1 + lr * g1, w2, x, y)
    return _ics_from(g2, g2_new)


def _stale_hidden(w1, w2, x, y, lr):
    """G′ with the new W1 in the residual but the old hidden activations in the outer product."""
    n = x.shape[0]
    g1, g2 = _two_layer_grads(w1, w2, x, y)
    h, h_new = x @ w1.T, x @ (w1 - lr * g1).T
    g2_new = (h_new @ w2.T - y).T @ h / n
    return _ics_from(g2, g2_new)


def _angle(w1, w2, x, y, lr):
    l2, cos = _two_layer_reference(w1, w2, x, y, lr)
    return np.array([l2, np.arccos(np.clip(cos, -1, 1))])


def _two_layer_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for n, d, h, c, lr in [(20, 4, 3, 2, 0.1), (50, 6, 5, 3, 0.5), (8, 3, 4, 1, 1.0)]:
        x = rng.standard_normal((n, d))
        y = rng.standard_normal((n, c))
        w1 = rng.standard_normal((h, d)) / np.sqrt(d)
        w2 = rng.standard_normal((c, h)) / np.sqrt(h)
        cases.append(Case((w1, w2, x, y, lr), description=f"X {n}×{d}, W1 {h}×{d}, W2 {c}×{h}, lr {lr}"))
    return cases


two_layer_gradient_ics = make_checker(Exercise(
    name="two_layer_gradient_ics",
    reference=_two_layer_reference,
    cases=_two_layer_cases,
    hint="Return np.array([‖G − G′‖, cos(G, G′)]) for W2. G = ∇_{W2} L at (W1, W2); G′ = ∇_{W2} L at (W1 − lr·∇_{W1}L, W2): "
         "only the layer *below* moves. With H = X W1ᵀ and R = H W2ᵀ − Y: ∇_{W2} L = Rᵀ H / n, ∇_{W1} L = W2ᵀ Rᵀ X / n.",
    mistakes=(
        Mistake("both stepped", _both_stepped,
                "You moved W2 as well before recomputing its gradient. Definition 2.1 updates only the layers "
                "before layer i; W2 itself stays where it was."),
        Mistake("wrong sign", _wrong_sign,
                "You stepped W1 uphill (W1 + lr·G1). An SGD step is W1 − lr·∇_{W1} L."),
        Mistake("stale hidden", _stale_hidden,
                "Your G′ uses the new W1 in the residual but the old hidden activations H = X W1ᵀ in Rᵀ H / n. "
                "Recompute H with the updated W1 everywhere."),
        Mistake("angle", _angle,
                "Your second number is the angle (arccos) between G and G′; return the cosine itself."),
    ),
))
