"""The quadratic model of a loss and gradient descent on it.

Near a minimum θ*, a smooth loss is approximately

    L(θ) ≈ L* + ½ (θ − θ*)ᵀ H (θ − θ*),                                  (quadratic model)

and gradient descent θ ← θ − η H (θ − θ*) acts on each eigen-direction of H on its own:
in the eigenbasis v = Qᵀ(θ − θ*), v_{t+1} = (I − ηΛ) v_t.                (eigen dynamics)

Chapter ``01_why_normalize``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True, eq=False)
class Quadratic:
    """L(θ) = minimum + ½ (θ − minimizer)ᵀ hessian (θ − minimizer), H symmetric.

    H is positive semi-definite at a minimum; an indefinite H (a saddle) is accepted so
    that curvature arguments can be shown there too, and then ``condition_number`` is inf.
    """

    hessian: np.ndarray
    minimizer: np.ndarray
    minimum: float = 0.0

    def __post_init__(self) -> None:
        h = np.asarray(self.hessian, dtype=float)
        m = np.asarray(self.minimizer, dtype=float)
        if h.ndim != 2 or h.shape[0] != h.shape[1] or h.shape[0] == 0:
            raise ValueError(f"the Hessian must be a non-empty square matrix; got shape {h.shape}")
        if not (np.all(np.isfinite(h)) and np.all(np.isfinite(m))):
            raise ValueError("the Hessian and the minimizer must be finite (no NaN or inf)")
        if m.shape != (h.shape[0],):
            raise ValueError(f"the minimizer must have shape ({h.shape[0]},); got {m.shape}")
        if not np.allclose(h, h.T, atol=1e-10 * max(1.0, np.abs(h).max())):
            raise ValueError("the Hessian must be symmetric; symmetrize it with (H + H.T) / 2")
        object.__setattr__(self, "hessian", h)
        object.__setattr__(self, "minimizer", m)

    @property
    def dim(self) -> int:
        return self.minimizer.shape[0]

    def loss(self, theta: np.ndarray) -> np.ndarray:
        """The loss at θ; rows of a 2-D array are separate points."""
        d = np.asarray(theta, dtype=float) - self.minimizer
        return self.minimum + 0.5 * np.einsum("...i,ij,...j->...", d, self.hessian, d)

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        """∇L(θ) = H (θ − θ*)."""
        return (np.asarray(theta, dtype=float) - self.minimizer) @ self.hessian

    @cached_property
    def _eigh(self) -> tuple[np.ndarray, np.ndarray]:
        return np.linalg.eigh(self.hessian)

    @property
    def eigenvalues(self) -> np.ndarray:
        """Eigenvalues of H in increasing order."""
        return self._eigh[0]

    @property
    def eigenvectors(self) -> np.ndarray:
        """Orthonormal eigenvectors of H as columns, matching ``eigenvalues``."""
        return self._eigh[1]

    @property
    def condition_number(self) -> float:
        """κ = λmax / λmin (infinite when H is singular)."""
        lo, hi = self.eigenvalues[0], self.eigenvalues[-1]
        return float(hi / lo) if lo > 0 else float("inf")


def random_quadratic(eigenvalues, seed: int = 0, minimizer=None) -> Quadratic:
    """A quadratic with the given Hessian spectrum in a random orthonormal basis.

    H = Q diag(λ) Qᵀ with Q Haar-distributed (QR of a Gaussian matrix, signs fixed).
    """
    lam = np.asarray(eigenvalues, dtype=float)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D sequence; got shape {lam.shape}")
    if np.any(lam < 0):
        raise ValueError("eigenvalues must be non-negative for a convex quadratic")
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    q = q * np.sign(np.diag(r))
    h = (q * lam) @ q.T
    theta_star = rng.standard_normal(lam.size) if minimizer is None else np.asarray(minimizer)
    return Quadratic(hessian=(h + h.T) / 2, minimizer=theta_star)


def quadratic_2d(condition_number: float, angle: float = 0.0, lam_max: float = 1.0) -> Quadratic:
    """A 2-D quadratic with eigenvalues (λmax/κ, λmax), minimum at 0, axes rotated by ``angle``."""
    if not condition_number >= 1:  # also rejects NaN
        raise ValueError(f"the condition number is at least 1; got {condition_number}")
    c, s = np.cos(angle), np.sin(angle)
    q = np.array([[c, -s], [s, c]])
    lam = np.array([lam_max / condition_number, lam_max])
    return Quadratic(hessian=(q * lam) @ q.T, minimizer=np.zeros(2))


def gradient_descent(problem: Quadratic, theta0, lr: float, steps: int) -> np.ndarray:
    """Iterates θ_0 … θ_steps of θ ← θ − η ∇L(θ); returns shape (steps + 1, dim)."""
    theta = np.asarray(theta0, dtype=float)
    path = [theta]
    for _ in range(steps):
        theta = theta - lr * problem.gradient(theta)
        path.append(theta)
    return np.stack(path)


def eigen_dynamics(problem: Quadratic, theta0, lr: float, steps: int) -> np.ndarray:
    """The same iterates from the closed form v_t = (1 − ηλ_i)^t v_0 in the eigenbasis."""
    q, lam = problem.eigenvectors, problem.eigenvalues
    v0 = (np.asarray(theta0, dtype=float) - problem.minimizer) @ q
    t = np.arange(steps + 1)[:, None]
    return problem.minimizer + (contraction_factors(lam, lr) ** t * v0) @ q.T


def contraction_factors(eigenvalues, lr: float) -> np.ndarray:
    """1 − ηλ_i: the factor by which each eigen-coordinate is multiplied per step."""
    return 1.0 - lr * np.asarray(eigenvalues, dtype=float)


def regime(lr: float, eigenvalue: float, rtol: float = 1e-9) -> str:
    """How gradient descent moves along one eigen-direction.

    "monotone" (η < 1/λ), "one step" (η = 1/λ), "oscillating" (1/λ < η < 2/λ),
    "stuck oscillating" (η = 2/λ), "divergent" (η > 2/λ); "flat" for λ = 0.
    """
    if eigenvalue < 0:
        raise ValueError(f"eigenvalues of a convex quadratic are >= 0; got {eigenvalue}")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive; got {lr}")
    if eigenvalue == 0:
        return "flat"
    x = lr * eigenvalue
    if np.isclose(x, 1.0, rtol=rtol, atol=0):
        return "one step"
    if np.isclose(x, 2.0, rtol=rtol, atol=0):
        return "stuck oscillating"
    return "monotone" if x < 1 else "oscillating" if x < 2 else "divergent"


def max_stable_lr(hessian) -> float:
    """2 / λmax: gradient descent converges on the quadratic iff 0 < η < 2/λmax."""
    return 2.0 / _positive(np.linalg.eigvalsh(np.asarray(hessian, dtype=float))[-1])


def optimal_lr(hessian) -> float:
    """2 / (λmin + λmax): minimises the slowest contraction max_i |1 − ηλ_i|."""
    lam = np.linalg.eigvalsh(np.asarray(hessian, dtype=float))
    return 2.0 / _positive(lam[0] + lam[-1])


def _positive(value: float) -> float:
    if not value > 0:
        raise ValueError("the Hessian has no positive eigenvalue: every learning rate is "
                         "stable and none makes progress")
    return float(value)


def steps_to_tolerance(eigenvalues, lr: float, tol: float) -> float:
    """Steps until every eigen-coordinate has shrunk by the factor ``tol``.

    Solves |1 − ηλ_i|^t ≤ tol for the slowest direction: t = ⌈ln tol / ln max_i |1 − ηλ_i|⌉.
    Returns inf when the slowest factor is ≥ 1 (no convergence) and 1 when it is 0.
    """
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1); got {tol}")
    if np.size(eigenvalues) == 0:
        raise ValueError("need at least one eigenvalue")
    rate = float(np.max(np.abs(contraction_factors(eigenvalues, lr))))
    if rate >= 1:
        return float("inf")
    if rate == 0:
        return 1.0
    return float(np.ceil(np.log(tol) / np.log(rate) - 1e-12))


def descent_threshold(gradient, hessian) -> float:
    """The step α* = 2‖g‖² / gᵀHg beyond which θ − αg no longer lowers the loss.

    From L(θ − αg) ≈ L(θ) − α‖g‖² + (α²/2) gᵀHg: the step fails to descend once
    (α²/2) gᵀHg ≥ α‖g‖². Exact for a quadratic; infinite when gᵀHg ≤ 0.
    """
    g = np.asarray(gradient, dtype=float)
    curvature = float(g @ np.asarray(hessian, dtype=float) @ g)
    return 2.0 * float(g @ g) / curvature if curvature > 0 else float("inf")
