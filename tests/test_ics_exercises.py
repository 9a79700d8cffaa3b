"""The checkers of the internal-covariate-shift chapter against a zoo of student attempts:
independent correct solutions pass (arrays, lists and tuples alike), typical wrong ones fail
with the diagnosis that names their mistake, and calls to the library are refused by name."""

import numpy as np
import pytest
import torch

from normlab.exercises import reset_attempts
from normlab.exercises import ics as check


pytestmark = pytest.mark.usefixtures("student_mode")


def failure(result):
    assert not result.passed, result
    return " ".join(result.messages)


# --------------------------------------------------------------------------- importance_weighted_fit


def fit_lstsq_sqrt_weights(x, y, train_mean, train_std, test_mean, test_std):
    """Rows of the least-squares problem scaled by √w; densities without their constants (they cancel in the fit)."""
    w = np.exp(-0.5 * ((x - test_mean) / test_std) ** 2 + 0.5 * ((x - train_mean) / train_std) ** 2)
    root = np.sqrt(w)
    design = np.column_stack([root, root * x])
    coef, *_ = np.linalg.lstsq(design, root * y, rcond=None)
    return coef


def fit_weighted_moments(x, y, train_mean, train_std, test_mean, test_std):
    """Weighted means and covariance, as a student who remembers b = cov(x, y) / var(x)."""
    from scipy.stats import norm
    w = norm.pdf(x, test_mean, test_std) / norm.pdf(x, train_mean, train_std)
    w = w / w.sum()
    mx, my = np.sum(w * x), np.sum(w * y)
    slope = np.sum(w * (x - mx) * (y - my)) / np.sum(w * (x - mx) ** 2)
    return [my - slope * mx, slope]                       # a list


def fit_torch_tuple(x, y, train_mean, train_std, test_mean, test_std):
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    p_test = torch.distributions.Normal(test_mean, test_std).log_prob(xt)
    p_train = torch.distributions.Normal(train_mean, train_std).log_prob(xt)
    w = torch.exp(p_test - p_train)
    a = torch.stack([torch.ones_like(xt), xt], dim=1)
    theta = torch.linalg.solve(a.T @ (w[:, None] * a), a.T @ (w * yt))
    return float(theta[0]), float(theta[1])               # a tuple of floats


def pdf(v, mean, std):
    return np.exp(-0.5 * ((v - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def solve_with(w_of, order=(0, 1)):
    def fit(x, y, m0, s0, m1, s1):
        w = w_of(x, m0, s0, m1, s1)
        a = np.stack([np.ones_like(x), x], axis=1)
        coef = np.linalg.solve(a.T @ (w[:, None] * a), a.T @ (w * y))
        return coef[list(order)]
    return fit


@pytest.mark.parametrize("solution", [fit_lstsq_sqrt_weights, fit_weighted_moments, fit_torch_tuple])
def test_independent_importance_fits_pass(solution):
    result = check.importance_weighted_fit(solution)
    assert result.passed, result


def test_the_fit_accepts_a_tuple_and_a_list_alike():
    as_tuple = lambda *args: tuple(fit_lstsq_sqrt_weights(*args))       # noqa: E731
    as_list = lambda *args: list(fit_lstsq_sqrt_weights(*args))         # noqa: E731
    assert check.importance_weighted_fit(as_tuple).passed
    assert check.importance_weighted_fit(as_list).passed


def polyfit_order_by_hand(x, y, m0, s0, m1, s1):
    """np.polyfit's order, [slope, intercept], with the design columns [x, 1]."""
    w = pdf(x, m1, s1) / pdf(x, m0, s0)
    a = np.stack([x, np.ones_like(x)], axis=1)
    return np.linalg.solve(a.T @ (w[:, None] * a), a.T @ (w * y))


def rows_scaled_by_w(x, y, m0, s0, m1, s1):
    w = pdf(x, m1, s1) / pdf(x, m0, s0)
    coef, *_ = np.linalg.lstsq(np.column_stack([w, w * x]), w * y, rcond=None)
    return coef


def variance_as_std(x, y, m0, s0, m1, s1):
    def density(v, mean, var):
        return np.exp(-(v - mean) ** 2 / (2 * var)) / np.sqrt(2 * np.pi * var)
    return solve_with(lambda v, *_: density(v, m1, s1) / density(v, m0, s0))(x, y, m0, s0, m1, s1)


@pytest.mark.parametrize("wrong, words", [
    (lambda x, y, *_: np.linalg.lstsq(np.column_stack([np.ones_like(x), x]), y, rcond=None)[0],
     "ordinary least squares"),
    (solve_with(lambda x, m0, s0, m1, s1: pdf(x, m0, s0) / pdf(x, m1, s1)), "upside down"),
    (variance_as_std, "used them as variances"),
    (rows_scaled_by_w, "w(x)², not w(x)"),
    (solve_with(lambda x, m0, s0, m1, s1: pdf(x, m1, s1)), "test density alone"),
    (polyfit_order_by_hand, "right but in reverse order: return them in the order the exercise states (intercept, slope)"),
])
def test_wrong_importance_fits_are_named(wrong, words):
    assert words in failure(check.importance_weighted_fit(wrong))


@pytest.mark.parametrize("shortcut, name", [
    (lambda x, y, m0, s0, m1, s1: np.polyfit(x, y, 1, w=np.sqrt(pdf(x, m1, s1) / pdf(x, m0, s0)))[::-1],
     "numpy.polyfit"),
    (lambda x, y, m0, s0, m1, s1: np.polynomial.Polynomial.fit(
        x, y, 1, w=np.sqrt(pdf(x, m1, s1) / pdf(x, m0, s0))).convert().coef, "numpy.polynomial.Polynomial.fit"),
    (lambda x, y, m0, s0, m1, s1: __import__("normlab.experiments.ics", fromlist=["x"]).weighted_line_fit(
        x, y, pdf(x, m1, s1) / pdf(x, m0, s0)), "normlab.experiments.ics.weighted_line_fit"),
])
def test_fitting_helpers_that_do_the_exercise_are_refused_by_name(shortcut, name):
    assert f"you called `{name}`" in failure(check.importance_weighted_fit(shortcut))


def test_scikit_learn_weighted_regression_is_refused():
    from sklearn.linear_model import LinearRegression

    def with_sklearn(x, y, m0, s0, m1, s1):
        model = LinearRegression().fit(x[:, None], y, sample_weight=pdf(x, m1, s1) / pdf(x, m0, s0))
        return np.array([model.intercept_, model.coef_[0]])

    assert "you called `sklearn.linear_model.LinearRegression.fit`" in failure(
        check.importance_weighted_fit(with_sklearn))


# --------------------------------------------------------------------------- two_layer_gradient_ics


def ics_numpy_closed_form(W1, W2, X, Y, lr):
    """Gradients written out twice, no helper; Frobenius norms with np.linalg.norm(..., 'fro')."""
    n = len(X)
    H = X @ W1.T
    R = H @ W2.T - Y
    G = R.T @ H / n
    W1_new = W1 - lr * (W2.T @ R.T @ X) / n
    H_new = X @ W1_new.T
    G_new = (H_new @ W2.T - Y).T @ H_new / n
    distance = np.linalg.norm(G - G_new, "fro")
    cosine = np.dot(G.ravel(), G_new.ravel()) / (np.linalg.norm(G.ravel()) * np.linalg.norm(G_new.ravel()))
    return np.array([distance, cosine])


def ics_torch_autograd(W1, W2, X, Y, lr):
    """torch autograd for both gradients, returned as a tuple of floats."""
    X, Y = torch.from_numpy(X), torch.from_numpy(Y)

    def grads(a, b):
        a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
        loss = ((X @ a.T @ b.T - Y) ** 2).sum() / (2 * len(X))
        return torch.autograd.grad(loss, (a, b))

    w1, w2 = torch.from_numpy(W1), torch.from_numpy(W2)
    g1, g = grads(w1, w2)
    _, g_new = grads(w1 - lr * g1, w2)
    cosine = torch.nn.functional.cosine_similarity(g.flatten(), g_new.flatten(), dim=0)
    return float((g - g_new).norm()), float(cosine)


def ics_einsum_list(W1, W2, X, Y, lr):
    """einsum gradients, returned as a list."""
    n = X.shape[0]

    def grad_w2(w1):
        h = np.einsum("nd,hd->nh", X, w1)
        r = np.einsum("nh,ch->nc", h, W2) - Y
        return np.einsum("nc,nh->ch", r, h) / n, r

    G, R = grad_w2(W1)
    G1 = np.einsum("ch,nc,nd->hd", W2, R, X) / n
    G_new, _ = grad_w2(W1 - lr * G1)
    return [np.sqrt(((G - G_new) ** 2).sum()),
            (G * G_new).sum() / np.sqrt((G ** 2).sum() * (G_new ** 2).sum())]


@pytest.mark.parametrize("solution", [ics_numpy_closed_form, ics_torch_autograd, ics_einsum_list])
def test_independent_gradient_ics_solutions_pass(solution):
    result = check.two_layer_gradient_ics(solution)
    assert result.passed, result


def test_gradient_ics_accepts_a_tuple_and_a_list_alike():
    assert check.two_layer_gradient_ics(lambda *a: tuple(ics_numpy_closed_form(*a))).passed
    assert check.two_layer_gradient_ics(lambda *a: list(ics_numpy_closed_form(*a))).passed


def ics_with(step_w2=False, sign=-1.0, summed=False, finish=None):
    """A student's gradient ICS with one thing changed."""
    def attempt(W1, W2, X, Y, lr):
        n = 1 if summed else len(X)

        def grads(a, b):
            h = X @ a.T
            r = h @ b.T - Y
            return b.T @ r.T @ X / n, r.T @ h / n

        G1, G = grads(W1, W2)
        G_new = grads(W1 + sign * lr * G1, W2 - lr * G if step_w2 else W2)[1]
        distance = np.linalg.norm(G - G_new)
        cosine = np.sum(G * G_new) / (np.linalg.norm(G) * np.linalg.norm(G_new))
        return np.array([distance, cosine]) if finish is None else finish(distance, cosine, G)
    return attempt


def stale_activations(W1, W2, X, Y, lr):
    n = len(X)
    H = X @ W1.T
    R = H @ W2.T - Y
    G, G1 = R.T @ H / n, W2.T @ R.T @ X / n
    R_new = X @ (W1 - lr * G1).T @ W2.T - Y
    G_new = R_new.T @ H / n                                # H not recomputed
    return np.array([np.linalg.norm(G - G_new), np.sum(G * G_new) / np.linalg.norm(G) / np.linalg.norm(G_new)])


@pytest.mark.parametrize("wrong, words", [
    (ics_with(step_w2=True), "W2 itself stays"),
    (ics_with(sign=+1.0), "uphill"),
    (stale_activations, "old hidden activations"),
    (ics_with(finish=lambda d, c, G: np.array([d, np.arccos(c)])), "cosine itself"),
    (ics_with(summed=True), "n times too large"),
    (ics_with(finish=lambda d, c, G: np.array([d / np.linalg.norm(G), c])), "divided by ‖G‖"),
    (ics_with(finish=lambda d, c, G: np.array([d**2, c])), "squared distance"),
    (ics_with(sign=0.0), "G′ equals G"),
    (ics_with(finish=lambda d, c, G: np.array([c, d])), "in reverse order: return them in the order the exercise states (‖G − G′‖, cos(G, G′))"),
    (ics_with(finish=lambda d, c, G: (c, d)), "reverse order"),
])
def test_wrong_gradient_ics_attempts_are_named(wrong, words):
    assert words in failure(check.two_layer_gradient_ics(wrong))


def test_the_library_probe_is_refused_by_name():
    def with_the_probe(W1, W2, X, Y, lr):
        from normlab.probes import gradient_ics
        net = torch.nn.Sequential(torch.nn.Linear(W1.shape[1], W1.shape[0], bias=False),
                                  torch.nn.Linear(W2.shape[1], W2.shape[0], bias=False)).double()
        with torch.no_grad():
            net[0].weight.copy_(torch.from_numpy(W1))
            net[1].weight.copy_(torch.from_numpy(W2))
        result = gradient_ics(net, [net[1]], (torch.from_numpy(X), torch.from_numpy(Y)),
                              lambda out, t: ((out - t) ** 2).sum() / (2 * len(t)), lr)
        return np.array([result.l2[0], result.cosine[0]])

    assert "you called `normlab.probes.gradient_ics`" in failure(check.two_layer_gradient_ics(with_the_probe))


# --------------------------------------------------------------------------- the checkers themselves


def test_hints_come_one_tier_per_failed_attempt():
    wrong = ics_with(sign=+1.0)
    first = check.two_layer_gradient_ics(wrong).messages
    second = check.two_layer_gradient_ics(wrong).messages
    assert any(m.startswith("Hint 1 of 2") for m in first) and not any(m.startswith("Hint 2") for m in first)
    assert any(m.startswith("Hint 2 of 2") for m in second)


@pytest.mark.parametrize("checker", [check.importance_weighted_fit, check.two_layer_gradient_ics])
def test_every_known_mistake_gets_its_own_message(checker):
    for mistake in checker.exercise.mistakes:
        reset_attempts()
        assert failure(checker(mistake.implementation)).split(": ", 1)[1].startswith(mistake.message), mistake.name
