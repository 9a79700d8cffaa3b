"""Checkers for the exercises of chapter ``04_internal_covariate_shift``.

In a notebook::

    from normlab.exercises import ics as check
    check.importance_weighted_fit(importance_weighted_fit)
    check.two_layer_gradient_ics(two_layer_gradient_ics)

Both exercises take and return NumPy arrays. The references are written out here in a
few lines; the library versions the exercises mirror (:func:`normlab.experiments.ics.
weighted_line_fit` and :func:`normlab.probes.gradient_ics`, tested against the second
reference in ``tests/test_probes_ics.py``) are forbidden while a check runs.
"""

from __future__ import annotations

import numpy as np

from normlab.exercises._spec import Case, Exercise, Mistake
from normlab.exercises.checker import make_checker

__all__ = ["importance_weighted_fit", "two_layer_gradient_ics"]


def _normal_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def _line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(intercept, slope) minimizing Σ w_n (y_n − a − b x_n)²: the weighted normal equations."""
    design = np.stack([np.ones_like(x), x], axis=1)
    return np.linalg.solve(design.T @ (w[:, None] * design), design.T @ (w * y))


# --- Exercise: importance-weighted least squares under covariate shift -------------------

def _importance_reference(x, y, train_mean, train_std, test_mean, test_std):
    return _line(x, y, _normal_pdf(x, test_mean, test_std) / _normal_pdf(x, train_mean, train_std))


def _importance_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    # The chapter's own shift first, then a wider and a reversed one. Train and test stds differ in every
    # case, so reading them as variances, or the weights upside down, changes the fit by far more than 1e-6.
    for n, (mu0, s0, mu1, s1) in [(50, (0.5, 0.5, 0.0, 0.3)), (200, (1.0, 0.8, -0.5, 0.5)),
                                  (30, (0.0, 1.0, 0.8, 0.4)), (80, (-0.3, 0.6, 0.2, 0.9))]:
        x = rng.normal(mu0, s0, n)
        y = -x + x ** 3 + rng.normal(0, 0.3, n)
        cases.append(Case((x, y, mu0, s0, mu1, s1), description=f"{n} points, train N({mu0}, {s0}²), "
                                                                 f"test N({mu1}, {s1}²)"))
    return cases


importance_weighted_fit = make_checker(Exercise(
    name="importance_weighted_fit",
    reference=_importance_reference,
    cases=_importance_cases,
    returns="Return np.array([intercept, slope]), an array of shape (2,): the intercept first.",
    hint=(
        "Equation (4.2), `eq-ics-importance`, in section \"Covariate shift\": the weight of a training point is the "
        "ratio of its test density to its training density, both Gaussian with the given mean and standard "
        "deviation.",
        "Minimizing a weighted sum of squared residuals over (intercept, slope) gives two linear equations: set "
        "the derivatives with respect to both to zero, or scale each row of a least-squares problem by the square "
        "root of its weight and use np.linalg.lstsq.",
    ),
    forbidden=(
        "normlab.experiments.ics.weighted_line_fit", "normlab.experiments.ics.importance_weights",
        "numpy.polyfit", "numpy.polynomial.polynomial.polyfit", "numpy.polynomial.Polynomial.fit",
        "sklearn.linear_model.LinearRegression.fit",
    ),
    output_names=("intercept", "slope"),
    mistakes=(
        Mistake("unweighted", lambda x, y, m0, s0, m1, s1: _line(x, y, np.ones_like(x)),
                "You fitted ordinary least squares: every training point counts the same, so the line fits where "
                "the training inputs are dense, not where the test inputs are."),
        Mistake("inverted weights", lambda x, y, m0, s0, m1, s1: _line(
                    x, y, _normal_pdf(x, m0, s0) / _normal_pdf(x, m1, s1)),
                "Your weights are upside down: you divided the training density by the test density. Points "
                "likely under the *test* distribution must count more."),
        Mistake("std as variance", lambda x, y, m0, s0, m1, s1: _line(
                    x, y, _normal_pdf(x, m1, np.sqrt(s1)) / _normal_pdf(x, m0, np.sqrt(s0))),
                "The arguments are standard deviations; you used them as variances in the Gaussian density."),
        Mistake("squared weights", lambda x, y, m0, s0, m1, s1: _line(
                    x, y, (_normal_pdf(x, m1, s1) / _normal_pdf(x, m0, s0)) ** 2),
                "Your fit weights each squared residual by w(x)², not w(x): scaling the rows of a least-squares "
                "problem by a factor multiplies the squared residual by that factor squared."),
        Mistake("test mean only", lambda x, y, m0, s0, m1, s1: _line(
                    x, y, _normal_pdf(x, m1, s1)),
                "Your weights are the test density alone. Importance weights divide it by the density the "
                "training points were drawn from."),
    ),
))


# --- Exercise: gradient ICS of a two-layer linear network --------------------------------

def _two_layer_grads(W1, W2, X, Y):
    """Gradients of L = ‖X W1ᵀ W2ᵀ − Y‖² / (2n) with respect to W1 and W2."""
    n = X.shape[0]
    H = X @ W1.T
    R = H @ W2.T - Y
    return W2.T @ R.T @ X / n, R.T @ H / n


def _ics_from(G, G_new):
    return np.array([np.linalg.norm(G - G_new), np.sum(G * G_new) / (np.linalg.norm(G) * np.linalg.norm(G_new))])


def _two_layer_reference(W1, W2, X, Y, lr):
    G1, G = _two_layer_grads(W1, W2, X, Y)
    _, G_new = _two_layer_grads(W1 - lr * G1, W2, X, Y)
    return _ics_from(G, G_new)


def _two_layer_variant(step_w1=-1.0, step_w2=0.0, scale=1.0, stale=False, finish=_ics_from):
    """A wrong gradient ICS: W1 stepped by ``step_w1``·lr·G1, W2 by ``step_w2``·lr·G2, loss times ``scale``."""
    def variant(W1, W2, X, Y, lr):
        G1, G = (scale * g for g in _two_layer_grads(W1, W2, X, Y))
        W1_new, W2_new = W1 + step_w1 * lr * G1, W2 + step_w2 * lr * G
        if stale:   # the new residual, but the old hidden activations in the outer product
            G_new = scale * (X @ W1_new.T @ W2.T - Y).T @ (X @ W1.T) / X.shape[0]
        else:
            G_new = scale * _two_layer_grads(W1_new, W2_new, X, Y)[1]
        return finish(G, G_new)
    return variant


def _angle(G, G_new):
    l2, cos = _ics_from(G, G_new)
    return np.array([l2, np.arccos(np.clip(cos, -1, 1))])


def _relative(G, G_new):
    l2, cos = _ics_from(G, G_new)
    return np.array([l2 / np.linalg.norm(G), cos])


def _squared(G, G_new):
    l2, cos = _ics_from(G, G_new)
    return np.array([l2**2, cos])


def _two_layer_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for n, d, h, c, lr in [(20, 4, 3, 2, 0.1), (50, 6, 5, 3, 0.5), (8, 3, 4, 1, 1.0), (32, 5, 7, 4, 0.05)]:
        X = rng.standard_normal((n, d))
        Y = rng.standard_normal((n, c))
        W1 = rng.standard_normal((h, d)) / np.sqrt(d)
        W2 = rng.standard_normal((c, h)) / np.sqrt(h)
        cases.append(Case((W1, W2, X, Y, lr), description=f"X {n}×{d}, W1 {h}×{d}, W2 {c}×{h}, Y {n}×{c}, lr {lr}"))
    return cases


two_layer_gradient_ics = make_checker(Exercise(
    name="two_layer_gradient_ics",
    reference=_two_layer_reference,
    cases=_two_layer_cases,
    returns="Return np.array([‖G − G′‖, cos(G, G′)]), an array of shape (2,), for the second layer's weight W2.",
    hint=(
        "Equation (4.5), `eq-ics-definition` (Definition 2.1), in section \"Objection 2: a gradient-based "
        "definition\", "
        "with i = 2: G is the gradient for W2 before the step, G′ the same gradient after the layers below W2 "
        "took their SGD step.",
        "Write one helper that returns both gradients at any (W1, W2); call it at the current weights, then again "
        "with only W1 moved by one SGD step of size lr. The norm of a matrix here is the Frobenius norm, and the "
        "cosine treats both matrices as long vectors.",
    ),
    forbidden=("normlab.probes.gradient_ics",),
    output_names=("‖G − G′‖", "cos(G, G′)"),
    mistakes=(
        Mistake("both stepped", _two_layer_variant(step_w2=-1.0),
                "You moved W2 as well before recomputing its gradient. Definition 2.1 updates only the layers "
                "before layer i; W2 itself stays where it was."),
        Mistake("wrong sign", _two_layer_variant(step_w1=+1.0),
                "You stepped W1 uphill (along +∇_{W1} L). An SGD step goes against the gradient."),
        Mistake("stale hidden", _two_layer_variant(stale=True),
                "Your G′ uses the new W1 in the residual but the old hidden activations X W1ᵀ in the gradient "
                "for W2. Recompute the hidden activations with the updated W1 everywhere."),
        Mistake("angle", _two_layer_variant(finish=_angle),
                "Your second number is the angle (arccos) between G and G′; return the cosine itself."),
        Mistake("summed loss", lambda W1, W2, X, Y, lr: _two_layer_variant(scale=X.shape[0])(W1, W2, X, Y, lr),
                "Your gradients are n times too large: the loss is the squared error divided by 2n (a mean over "
                "the n examples), and its gradients carry the 1/n."),
        Mistake("relative", _two_layer_variant(finish=_relative),
                "Your first number is ‖G − G′‖ divided by ‖G‖. Definition 2.1 reports the distance itself."),
        Mistake("squared", _two_layer_variant(finish=_squared),
                "Your first number is the squared distance ‖G − G′‖²; return the norm itself."),
        Mistake("first layer", lambda W1, W2, X, Y, lr: np.array([0.0, 1.0]),
                "Your G′ equals G (distance 0, cosine 1): either W1 never took its step before G′ was computed, "
                "or you measured the first layer, which has nothing below it. Measure W2 after W1 has moved."),
    ),
))
