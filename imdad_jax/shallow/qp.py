"""Kernel SVDD (Tax & Duin 2004) and SSLM (Wu & Ye 2009) as dual quadratic programs solved by Clarabel.

Both methods describe the normals by a hypersphere in the feature space of a kernel. Their duals share one shape:
with labels ``y`` (+1 normal, -1 labelled anomaly) and ``b = y * alpha``,

    max_alpha  sum_l b_l K_ll - b^T K b     s.t. linear equalities on alpha,  0 <= alpha_l <= bound_l,

and the centre is the expansion ``c = sum_l b_l phi(x_l)``, so that
``||phi(x) - c||^2 = k(x, x) - 2 k(x, X) b + b^T K b``.

- SVDD: all y = +1, ``sum alpha = 1``, bound ``C``.
- SSLM: ``sum_normals alpha - sum_anomalies alpha = 1``, ``sum_anomalies alpha = nu``, bounds ``1/(nu1 n)`` on normals
  and ``1/(nu2 m)`` on anomalies (derivation in docs/shallow.md).

The QP is handed to Clarabel, an interior-point solver, rather than solved by a hand-written SMO: it is a maintained
package, reaches 1e-10 accuracy in about ten iterations, and reports its status. Radii come from the KKT conditions,
averaged over the unbounded support vectors. A dense QP costs O(n^3), so the training set is subsampled to
``max_train`` points with a seeded RNG.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import clarabel
import numpy as np
from scipy import sparse
from sklearn.metrics.pairwise import linear_kernel, rbf_kernel

KernelName = Literal["rbf", "linear"]

# An alpha below SUPPORT_TOL * bound carries no weight worth keeping in the kernel expansion (interior-point zeros
# sit near 1e-11 * bound); dropping them keeps scoring cheap at a cost far below the solver's tolerance.
SUPPORT_TOL = 1e-8
# Interior-point iterates approach the box only asymptotically: complementarity gives |d_l - R^2| ~ mu / alpha_l,
# so a point certifies the radius only when its alpha is well inside the box. 1e-3 of the bound keeps that error
# near 1e-9 at the solver tolerance below.
FREE_TOL = 1e-3
SOLVER_TOL = 1e-10
MIN_ANOMALIES_KEPT = 5


@dataclass
class SphereModel:
    """A hypersphere fitted in kernel feature space; centre ``c = sum_l y_l alpha_l phi(x_l)``.

    ``alpha``, ``y``, ``bound`` and ``x_train`` cover every point the QP saw (after subsampling); ``support`` indexes
    into them. ``normal_index`` / ``anomaly_index`` say which rows of the caller's arrays were used.
    ``r2`` is the squared inner radius; ``rho2`` (SSLM only) the squared margin, so the outer sphere has squared
    radius ``r2 + rho2``.
    """

    method: str
    kernel: KernelName
    gamma: float | None
    x_train: np.ndarray
    y: np.ndarray
    alpha: np.ndarray
    bound: np.ndarray
    support: np.ndarray
    r2: float
    rho2: float | None
    c_norm2: float
    normal_index: np.ndarray
    anomaly_index: np.ndarray
    solver_info: dict = field(default_factory=dict)

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Squared feature-space distance ``||phi(x) - c||^2`` of each row of ``x`` to the centre."""
        x = np.asarray(x, dtype=np.float64)
        coef = (self.y * self.alpha)[self.support]
        cross = kernel_matrix(x, self.x_train[self.support], self.kernel, self.gamma) @ coef
        return kernel_diag(x, self.kernel) - 2.0 * cross + self.c_norm2

    def decision(self, x: np.ndarray) -> np.ndarray:
        """``||phi(x) - c||^2 - R^2``: positive outside the inner sphere; higher = more anomalous."""
        return self.distance(x) - self.r2

    score = decision


def scale_gamma(x: np.ndarray) -> float:
    """sklearn's ``gamma="scale"``: ``1 / (d * var(X))`` over all entries, so the kernel width follows the data."""
    var = float(np.asarray(x, dtype=np.float64).var())
    # Constant data has no scale; sklearn falls back to 1 in that case too.
    return 1.0 / (x.shape[1] * var) if var > 0 else 1.0


def kernel_matrix(a: np.ndarray, b: np.ndarray, kernel: KernelName, gamma: float | None) -> np.ndarray:
    """Gram matrix ``k(a_i, b_j)`` for the RBF ``exp(-gamma ||a - b||^2)`` or the linear kernel."""
    if kernel == "rbf":
        return rbf_kernel(a, b, gamma=gamma)
    if kernel == "linear":
        return linear_kernel(a, b)
    raise ValueError(f"kernel must be 'rbf' or 'linear', got {kernel!r}")


def kernel_diag(x: np.ndarray, kernel: KernelName) -> np.ndarray:
    """``k(x_i, x_i)`` without building the Gram matrix."""
    return np.ones(len(x)) if kernel == "rbf" else np.einsum("ij,ij->i", x, x)


def fit_svdd(
    x: np.ndarray,
    *,
    C: float,
    kernel: KernelName = "rbf",
    gamma: float | None = None,
    max_train: int = 1000,
    seed: int = 0,
) -> SphereModel:
    """Kernel SVDD: the smallest sphere holding the normals ``x``, with slack weighted by ``C``.

    Dual: ``max sum_i a_i K_ii - a^T K a`` s.t. ``sum a = 1``, ``0 <= a_i <= C``. ``C >= 1/n`` is needed for
    feasibility (n after subsampling); ``1/(n C)`` bounds the fraction of training points outside the sphere.
    ``gamma=None`` uses ``scale_gamma(x)``. More than ``max_train`` points are subsampled with ``seed``.
    """
    x = _as_2d(x, "x")
    if len(x) == 0:
        raise ValueError("fit_svdd needs at least one training point; x is empty")
    _check_max_train(max_train)
    rng = np.random.default_rng(seed)
    idx = _subsample(len(x), max_train, rng)
    n = len(idx)
    if not C >= 1.0 / n:
        raise ValueError(
            f"C={C} is below 1/n={1.0 / n:.4g} for n={n} training points, so sum(alpha)=1 is infeasible: use C >= 1/n"
        )
    gamma = _resolve_gamma(gamma, kernel, x)
    xt = x[idx]
    y = np.ones(n)
    bound = np.full(n, float(C))
    K = _gram(xt, kernel, gamma)
    alpha, info = _solve_sphere_dual(K, y, bound, eq_rows=y[None, :], eq_rhs=np.array([1.0]))
    d = _train_distances(K, y, alpha)
    r2 = _radius_from_kkt(d, alpha, bound, inside_when_zero=True)
    return _make_model("svdd", kernel, gamma, xt, y, alpha, bound, K, r2, None, idx, np.arange(0), info)


def fit_sslm(
    x_normals: np.ndarray,
    x_anomalies: np.ndarray,
    *,
    nu: float,
    nu1: float,
    nu2: float,
    kernel: KernelName = "rbf",
    gamma: float | None = None,
    max_train: int = 1000,
    seed: int = 0,
) -> SphereModel:
    """SSLM: a small sphere around the normals and a large margin ``rho^2`` to the labelled anomalies.

    Primal: ``min R^2 - nu rho^2 + 1/(nu1 n) sum xi_i + 1/(nu2 m) sum xi_j`` s.t.
    ``||phi(x_i) - c||^2 <= R^2 + xi_i`` (normals), ``||phi(x_j) - c||^2 >= R^2 + rho^2 - xi_j`` (anomalies),
    ``xi >= 0``.
    Dual: ``max sum_l y_l a_l K_ll - (y a)^T K (y a)`` s.t. ``sum_N a - sum_A a = 1``, ``sum_A a = nu``,
    ``0 <= a_i <= 1/(nu1 n)``, ``0 <= a_j <= 1/(nu2 m)``; feasible iff ``nu1 (1 + nu) <= 1`` and ``nu nu2 <= 1``.
    ``gamma=None`` uses ``scale_gamma(x_normals)``. Above ``max_train`` points the two sets are subsampled in
    proportion with ``seed``, keeping at least a few anomalies.
    """
    xn = _as_2d(x_normals, "x_normals")
    xa = _as_2d(x_anomalies, "x_anomalies")
    if len(xn) == 0 or len(xa) == 0:
        raise ValueError(
            f"fit_sslm needs normals and labelled anomalies, got {len(xn)} and {len(xa)}; "
            "use fit_svdd without anomalies"
        )
    if xn.shape[1] != xa.shape[1]:
        raise ValueError(f"x_normals has {xn.shape[1]} features but x_anomalies has {xa.shape[1]}; they must match")
    _check_sslm_params(nu, nu1, nu2)
    _check_max_train(max_train)
    rng = np.random.default_rng(seed)
    n_keep, m_keep = _sslm_sizes(len(xn), len(xa), max_train)
    idx_n, idx_a = _subsample(len(xn), n_keep, rng), _subsample(len(xa), m_keep, rng)
    gamma = _resolve_gamma(gamma, kernel, xn)
    xt = np.concatenate([xn[idx_n], xa[idx_a]])
    n, m = len(idx_n), len(idx_a)
    y = np.concatenate([np.ones(n), -np.ones(m)])
    bound = np.concatenate([np.full(n, 1.0 / (nu1 * n)), np.full(m, 1.0 / (nu2 * m))])
    eq_rows = np.stack([y, (y < 0).astype(np.float64)])  # sum_N a - sum_A a = 1 ; sum_A a = nu
    K = _gram(xt, kernel, gamma)
    alpha, info = _solve_sphere_dual(K, y, bound, eq_rows=eq_rows, eq_rhs=np.array([1.0, nu]))
    d = _train_distances(K, y, alpha)
    normal, anomaly = y > 0, y < 0
    r2 = _radius_from_kkt(d[normal], alpha[normal], bound[normal], inside_when_zero=True)
    outer2 = _radius_from_kkt(d[anomaly], alpha[anomaly], bound[anomaly], inside_when_zero=False)
    info.update(nu=nu, nu1=nu1, nu2=nu2)
    return _make_model("sslm", kernel, gamma, xt, y, alpha, bound, K, r2, outer2 - r2, idx_n, idx_a, info)


def _solve_sphere_dual(
    K: np.ndarray, y: np.ndarray, bound: np.ndarray, *, eq_rows: np.ndarray, eq_rhs: np.ndarray
) -> tuple[np.ndarray, dict]:
    """Solve ``max sum y a diag(K) - (y a)^T K (y a)`` over the box and equalities with Clarabel.

    Clarabel's form is ``min 1/2 a^T P a + q^T a`` s.t. ``A a + s = b``, ``s`` in a cone: the equalities go to the
    zero cone, ``-a <= 0`` and ``a <= bound`` to the nonnegative cone.
    """
    n = len(y)
    Q = (y[:, None] * y[None, :]) * K
    P = sparse.triu(sparse.csc_matrix(2.0 * Q), format="csc")  # Clarabel reads the upper triangle only
    q = -y * np.diag(K)
    A = sparse.vstack([sparse.csc_matrix(eq_rows), -sparse.identity(n), sparse.identity(n)], format="csc")
    b = np.concatenate([eq_rhs, np.zeros(n), bound])
    cones = [clarabel.ZeroConeT(len(eq_rhs)), clarabel.NonnegativeConeT(2 * n)]
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.tol_gap_abs = settings.tol_gap_rel = settings.tol_feas = SOLVER_TOL
    sol = clarabel.DefaultSolver(P, q, A, b, cones, settings).solve()
    status = str(sol.status)
    if status not in ("Solved", "AlmostSolved"):
        raise RuntimeError(f"Clarabel could not solve the sphere dual (status {status}); check the data and parameters")
    # The solver may step a hair outside the box; clipping moves alpha by less than its tolerance.
    alpha = np.clip(np.asarray(sol.x, dtype=np.float64), 0.0, bound)
    info = {
        "solver": "clarabel",
        "status": status,
        "iterations": int(sol.iterations),
        "solve_s": float(sol.solve_time),
        "objective": float(-sol.obj_val),
        # Multipliers of the equality rows: for SVDD R^2 = eq_multipliers[0] + ||c||^2, an independent check.
        "eq_multipliers": np.asarray(sol.z[: len(eq_rhs)], dtype=np.float64).copy(),
    }
    return alpha, info


def _train_distances(K: np.ndarray, y: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``||phi(x_l) - c||^2`` for the training points, from the Gram matrix."""
    coef = y * alpha
    Kc = K @ coef
    return np.diag(K) - 2.0 * Kc + coef @ Kc


def _radius_from_kkt(d: np.ndarray, alpha: np.ndarray, bound: np.ndarray, *, inside_when_zero: bool) -> float:
    """Squared radius of a sphere whose constraint group is (d, alpha, bound), from complementary slackness.

    Unbounded support vectors (0 < alpha < bound) lie on the sphere: the radius is their mean distance. Without one,
    KKT only brackets it - for the inner sphere alpha = 0 means inside and alpha = bound outside, for the outer sphere
    the reverse - and the midpoint of the bracket is taken, as libsvm does for its offset.
    """
    rel = alpha / bound
    free = (rel > FREE_TOL) & (rel < 1.0 - FREE_TOL)
    if free.any():
        return float(d[free].mean())
    at_zero, at_bound = rel <= FREE_TOL, rel >= 1.0 - FREE_TOL
    below, above = (at_zero, at_bound) if inside_when_zero else (at_bound, at_zero)
    lo = d[below].max() if below.any() else None
    hi = d[above].min() if above.any() else None
    if lo is None:
        return float(hi)
    if hi is None:
        return float(lo)
    return float(0.5 * (lo + hi))


def _make_model(method, kernel, gamma, xt, y, alpha, bound, K, r2, rho2, idx_n, idx_a, info) -> SphereModel:
    """Assemble the model; ``||c||^2`` uses the same truncated expansion the scoring uses, so scores stay consistent."""
    support = np.flatnonzero(alpha > SUPPORT_TOL * bound)
    coef = (y * alpha)[support]
    c_norm2 = float(coef @ K[np.ix_(support, support)] @ coef)
    return SphereModel(
        method=method,
        kernel=kernel,
        gamma=gamma,
        x_train=xt,
        y=y,
        alpha=alpha,
        bound=bound,
        support=support,
        r2=r2,
        rho2=rho2,
        c_norm2=c_norm2,
        normal_index=idx_n,
        anomaly_index=idx_a,
        solver_info=info,
    )


def _gram(x: np.ndarray, kernel: KernelName, gamma: float | None) -> np.ndarray:
    K = kernel_matrix(x, x, kernel, gamma)
    # The distance trick inside rbf_kernel leaves K asymmetric at 1e-16; the QP wants it exactly symmetric.
    return 0.5 * (K + K.T)


def _resolve_gamma(gamma: float | None, kernel: KernelName, x: np.ndarray) -> float | None:
    if kernel not in ("rbf", "linear"):
        raise ValueError(f"kernel must be 'rbf' or 'linear', got {kernel!r}")
    if kernel == "linear":
        return None
    if gamma is None:
        return scale_gamma(x)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0 (or None for 1/(d var X)), got {gamma}")
    return float(gamma)


def _subsample(n: int, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``keep`` of ``n`` rows drawn without replacement (all rows when ``keep >= n``)."""
    if keep >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=keep, replace=False))


def _sslm_sizes(n: int, m: int, max_train: int) -> tuple[int, int]:
    """Normals and anomalies to keep: the original proportion, but never fewer than a few anomalies."""
    if n + m <= max_train:
        return n, m
    m_keep = min(m, max(MIN_ANOMALIES_KEPT, round(max_train * m / (n + m))))
    return min(n, max_train - m_keep), m_keep


def _check_sslm_params(nu: float, nu1: float, nu2: float) -> None:
    for name, v in (("nu", nu), ("nu1", nu1), ("nu2", nu2)):
        if not 0.0 < v <= 1.0:
            raise ValueError(f"SSLM {name} must lie in (0, 1], got {v}")
    if nu1 * (1.0 + nu) > 1.0 + 1e-12:
        raise ValueError(
            f"SSLM with nu={nu}, nu1={nu1} is infeasible: the normals' alphas must sum to 1+nu, at most 1/nu1; "
            f"use nu1 <= 1/(1+nu) = {1.0 / (1.0 + nu):.4g}"
        )


def _check_max_train(max_train: int) -> None:
    if not (isinstance(max_train, (int, np.integer)) and max_train >= 2 * MIN_ANOMALIES_KEPT):
        raise ValueError(f"max_train must be an integer >= {2 * MIN_ANOMALIES_KEPT}, got {max_train!r}")


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n, d), got shape {x.shape}; flatten images first")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf; clean or impute it first")
    return x
