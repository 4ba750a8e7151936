"""The five shallow baselines of the paper behind one call, ``fit_score``, with validation-based model selection.

Selection never sees the test set: a seeded ``val_fraction`` of the training normals and of the labelled anomalies is
held out, every grid point is fitted on the rest and scored by validation AUC (held-out normals 0, held-out
anomalies 1), and the best setting is refitted on all training data before ``x_test`` is scored once.
"""
from __future__ import annotations

import itertools
import numbers
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KernelDensity
from sklearn.svm import OneClassSVM

from .qp import _as_2d, fit_sslm, fit_svdd, scale_gamma

Params = dict[str, Any]
ScoreFn = Callable[[np.ndarray], np.ndarray]
# A fitted setting: its scoring function and the values it resolved (e.g. gamma "scale" -> a number) for the report.
Fitted = tuple[ScoreFn, Params]

NU_GRID = (0.01, 0.05, 0.1, 0.2, 0.5)
BANDWIDTH_FACTORS = tuple(float(f) for f in np.logspace(-1, 1, 7))
SSLM_GRID = {"nu": (0.1, 0.5, 1.0), "nu1": (0.05, 0.1, 0.5), "nu2": (0.05, 0.1, 0.5)}
# The paper fixes these Isolation Forest settings; contamination only moves sklearn's predict() threshold, never
# score_samples, so it does not affect the AUC.
IFOREST_SETTINGS = {"n_estimators": 100, "max_samples": 256, "contamination": 0.1}


@dataclass
class ShallowResult:
    """Outcome of ``fit_score``.

    scores: (n_test,) anomaly scores, higher = more anomalous. params: the chosen setting, plus ``selected_by``.
    val_auc: validation AUC of the chosen setting (None without a validation split). grid_auc: every evaluated
    (setting, validation AUC). fit_s: wall-clock seconds of the whole call (selection, refit, scoring).
    """

    scores: np.ndarray
    params: Params
    val_auc: float | None
    grid_auc: list[tuple[Params, float]] = field(default_factory=list)
    fit_s: float = 0.0


@dataclass(frozen=True)
class ShallowMethod:
    """One registry entry: how to build its grid and fit one setting into a scoring function."""

    name: str
    summary: str
    uses_anomalies: bool
    grid_keys: tuple[str, ...]
    default_grid: Callable[[np.ndarray], dict[str, tuple]]
    default_params: Callable[[np.ndarray], Params]
    fit: Callable[..., Fitted]


def fit_score(
    method: str,
    x_normals: np.ndarray,
    x_anomalies: np.ndarray | None,
    x_test: np.ndarray,
    *,
    seed: int,
    grid: dict | None = None,
    val_fraction: float = 0.2,
    max_train: int = 1000,
    pca_dims: int | None = None,
) -> ShallowResult:
    """Select a setting of ``method`` on a validation split of the training data, refit it, and score ``x_test``.

    Inputs are float arrays (n, d); images must be flattened by the caller. ``x_anomalies`` (labelled anomalies, may
    be None or empty) are used for validation by every method and for training by SSLM only. ``grid`` maps the
    method's hyperparameter names to sequences of values (see ``SHALLOW_METHODS[method].grid_keys``); None uses the
    defaults in docs/shallow.md. Without labelled anomalies there is nothing to validate on, so the method's default
    setting is used and ``params["selected_by"]`` says so. ``max_train`` caps the QP size of SVDD and SSLM.
    ``pca_dims`` projects all inputs on the top principal components of the training normals first.
    """
    t0 = time.perf_counter()
    spec = _method(method)
    xn, xa, xt = _check_inputs(x_normals, x_anomalies, x_test)
    _check_options(spec, xn, xa, val_fraction, max_train, pca_dims)
    if pca_dims is not None:
        xn, xa, xt = _pca(xn, xa, xt, pca_dims, seed)
    points = _grid_points(spec, grid, xn)

    def fit(p: Params, n: np.ndarray, a: np.ndarray) -> Fitted:
        return spec.fit(p, n, a, seed=seed, max_train=max_train)

    split = _validation_split(len(xn), len(xa), val_fraction, seed)
    if split is None:
        chosen, val_auc, grid_auc = dict(spec.default_params(xn)), None, []
        chosen["selected_by"] = f"default setting: {len(xa)} labelled anomalies are too few for a validation split"
    else:
        (fn, vn), (fa, va) = split
        x_val = np.concatenate([xn[vn], xa[va]])
        y_val = np.concatenate([np.zeros(len(vn)), np.ones(len(va))])
        grid_auc = [(p, float(roc_auc_score(y_val, fit(p, xn[fn], xa[fa])[0](x_val)))) for p in points]
        best = _pick(grid_auc, spec.default_params(xn))
        chosen, val_auc = dict(points[best]), grid_auc[best][1]
        chosen["selected_by"] = (
            f"best validation AUC over {len(points)} settings" if len(points) > 1 else "the only setting (not tuned)"
        )
    score_fn, resolved = fit(chosen, xn, xa)
    scores = np.asarray(score_fn(xt), dtype=np.float64)
    chosen.update(resolved)
    if pca_dims is not None:
        chosen["pca_dims"] = pca_dims
    return ShallowResult(scores, chosen, val_auc, grid_auc, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- per-method fitting


def _fit_iforest(p: Params, xn: np.ndarray, xa: np.ndarray, *, seed: int, max_train: int) -> Fitted:
    # max_samples above n makes sklearn warn and use n; capping here does the same silently.
    model = IsolationForest(
        n_estimators=p["n_estimators"],
        max_samples=min(p["max_samples"], len(xn)),
        contamination=p["contamination"],
        random_state=seed,
    ).fit(xn)
    return (lambda x: -model.score_samples(x)), {}


def _fit_kde(p: Params, xn: np.ndarray, xa: np.ndarray, *, seed: int, max_train: int) -> Fitted:
    model = KernelDensity(kernel="gaussian", bandwidth=p["bandwidth"]).fit(xn)
    return (lambda x: -model.score_samples(x)), {}


def _fit_ocsvm(p: Params, xn: np.ndarray, xa: np.ndarray, *, seed: int, max_train: int) -> Fitted:
    gamma = _gamma(p)
    gamma = scale_gamma(xn) if gamma is None else gamma  # the same value sklearn's "scale" computes
    model = OneClassSVM(kernel="rbf", gamma=gamma, nu=p["nu"]).fit(xn)
    return (lambda x: -model.decision_function(x)), {"gamma_value": gamma}


def _fit_svdd(p: Params, xn: np.ndarray, xa: np.ndarray, *, seed: int, max_train: int) -> Fitted:
    # "nu" is the outlier-fraction form C = 1/(nu n): it stays meaningful when n changes between the validation fit,
    # the refit and the subsample, where a fixed C would not.
    n = min(len(xn), max_train)
    C = p["C"] if "C" in p else 1.0 / (p["nu"] * n)
    model = fit_svdd(xn, C=C, gamma=_gamma(p), max_train=max_train, seed=seed)
    return model.decision, {"C_value": C, "gamma_value": model.gamma, "n_qp": len(model.y)}


def _fit_sslm(p: Params, xn: np.ndarray, xa: np.ndarray, *, seed: int, max_train: int) -> Fitted:
    model = fit_sslm(xn, xa, nu=p["nu"], nu1=p["nu1"], nu2=p["nu2"], gamma=_gamma(p), max_train=max_train, seed=seed)
    resolved = {"gamma_value": model.gamma, "n_qp": len(model.y), "r2": model.r2, "rho2": model.rho2}
    return model.decision, resolved


def _gamma(p: Params) -> float | None:
    g = p.get("gamma", "scale")
    return None if g == "scale" else float(g)


def _scott_bandwidth(xn: np.ndarray) -> float:
    """Scott's rule ``n^(-1/(d+4))`` times the mean per-feature std: the centre of the KDE bandwidth grid."""
    n, d = xn.shape
    std = float(np.sqrt(xn.var(axis=0).mean()))
    return n ** (-1.0 / (d + 4)) * (std if std > 0 else 1.0)


SHALLOW_METHODS: dict[str, ShallowMethod] = {
    m.name: m
    for m in (
        ShallowMethod(
            "iforest",
            "Isolation Forest (Liu et al. 2008), settings fixed by the paper; score -score_samples",
            False,
            (),
            lambda xn: {k: (v,) for k, v in IFOREST_SETTINGS.items()},
            lambda xn: dict(IFOREST_SETTINGS),
            _fit_iforest,
        ),
        ShallowMethod(
            "kde",
            "Gaussian kernel density estimate; score -log density; bandwidth = Scott's rule x logspace(-1, 1, 7)",
            False,
            ("bandwidth",),
            lambda xn: {"bandwidth": tuple(_scott_bandwidth(xn) * f for f in BANDWIDTH_FACTORS)},
            lambda xn: {"bandwidth": _scott_bandwidth(xn)},
            _fit_kde,
        ),
        ShallowMethod(
            "ocsvm",
            "One-class SVM (Schoelkopf et al. 2001), RBF gamma 'scale'; score -decision_function; nu grid",
            False,
            ("nu", "gamma"),
            lambda xn: {"nu": NU_GRID},
            lambda xn: {"nu": 0.1},
            _fit_ocsvm,
        ),
        ShallowMethod(
            "svdd",
            "Kernel SVDD (Tax & Duin 2004), RBF gamma 'scale', Clarabel QP; C = 1/(nu n) over a nu grid, or a C grid",
            False,
            ("nu", "C", "gamma"),
            lambda xn: {"nu": NU_GRID},
            lambda xn: {"nu": 0.1},
            _fit_svdd,
        ),
        ShallowMethod(
            "sslm",
            "Small sphere and large margin (Wu & Ye 2009), RBF gamma 'scale', Clarabel QP; (nu, nu1, nu2) grid",
            True,
            ("nu", "nu1", "nu2", "gamma"),
            lambda xn: dict(SSLM_GRID),
            lambda xn: {"nu": 0.5, "nu1": 0.1, "nu2": 0.1},
            _fit_sslm,
        ),
    )
}


# ---------------------------------------------------------------------------------------------- selection machinery


def _validation_split(
    n: int, m: int, val_fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None:
    """Seeded (fit, val) index pairs for normals and anomalies; None when AUC cannot be measured (m < 2)."""
    if m < 2:
        return None
    rng = np.random.default_rng(seed)
    return _split(n, val_fraction, rng), _split(m, val_fraction, rng)


def _split(n: int, frac: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # At least one point on each side, so both the fit and the AUC have something to work with.
    n_val = min(n - 1, max(1, round(frac * n)))
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _pick(grid_auc: list[tuple[Params, float]], default: Params) -> int:
    """Index of the best validation AUC. Ties (common on easy data, where many settings reach 1.0) go to the default
    setting when it is among them, else to the first in grid order, so an edge of the grid is not picked by accident."""
    aucs = np.array([auc for _, auc in grid_auc])
    tied = np.flatnonzero(aucs == aucs.max())
    for i in tied:
        if all(grid_auc[i][0].get(k) == v for k, v in default.items()):
            return int(i)
    return int(tied[0])


def _grid_points(spec: ShallowMethod, grid: dict | None, xn: np.ndarray) -> list[Params]:
    """The Cartesian product of the grid's values, in the order given; checked before any fitting starts."""
    if grid is None or (spec.name == "iforest" and not grid):
        grid = spec.default_grid(xn)
    else:
        _check_grid_keys(spec, grid)
    # Settings the grid leaves out keep their default (e.g. gamma "scale"); svdd's "C" replaces its default "nu".
    base = {k: (v,) for k, v in spec.default_params(xn).items() if k not in grid and not (k == "nu" and "C" in grid)}
    values = {**base, **{k: _as_tuple(k, v) for k, v in grid.items()}}
    points = [dict(zip(values, combo)) for combo in itertools.product(*values.values())]
    for p in points:
        _check_point(spec.name, p)
    return points


def _check_grid_keys(spec: ShallowMethod, grid: dict) -> None:
    if spec.name == "iforest":
        raise ValueError("iforest takes no grid: the paper fixes n_estimators=100, max_samples=256, contamination=0.1")
    unknown = sorted(set(grid) - set(spec.grid_keys))
    if unknown:
        raise ValueError(f"{spec.name} grid has unknown key(s) {unknown}; allowed: {list(spec.grid_keys)}")
    if spec.name == "svdd" and ("nu" in grid) == ("C" in grid):
        raise ValueError("svdd grid needs exactly one of 'nu' (C = 1/(nu n)) or 'C'")


def _as_tuple(key: str, v: Any) -> tuple:
    vals = tuple(v) if isinstance(v, (list, tuple, np.ndarray)) else (v,)
    if not vals:
        raise ValueError(f"grid[{key!r}] is empty; give at least one value")
    return vals


def _check_point(name: str, p: Params) -> None:
    for k in ("nu", "nu1", "nu2"):
        if k in p and not (_is_real(p[k]) and 0.0 < p[k] <= 1.0):
            raise ValueError(f"{name} {k}={p[k]!r} is out of range; it must lie in (0, 1]")
    for k in ("bandwidth", "C"):
        if k in p and not (_is_real(p[k]) and p[k] > 0):
            raise ValueError(f"{name} {k}={p[k]!r} is out of range; it must be > 0")
    g = p.get("gamma", "scale")
    if not ((isinstance(g, str) and g == "scale") or (_is_real(g) and g > 0)):
        raise ValueError(f"{name} gamma={g!r} is out of range; use 'scale' or a number > 0")
    if name == "sslm" and p["nu1"] * (1.0 + p["nu"]) > 1.0 + 1e-12:
        raise ValueError(
            f"sslm nu={p['nu']}, nu1={p['nu1']} is infeasible (needs nu1 * (1 + nu) <= 1); lower nu1 or nu in the grid"
        )


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)


# ---------------------------------------------------------------------------------------------- input checks, PCA


def _method(method: str) -> ShallowMethod:
    if method not in SHALLOW_METHODS:
        raise ValueError(f"unknown shallow method {method!r}; known: {sorted(SHALLOW_METHODS)}")
    return SHALLOW_METHODS[method]


def _check_inputs(
    x_normals: np.ndarray, x_anomalies: np.ndarray | None, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xn = _as_2d(x_normals, "x_normals")
    if len(xn) < 2:
        raise ValueError(f"x_normals has {len(xn)} rows; give at least 2 training normals")
    d = xn.shape[1]
    if x_anomalies is None or np.size(x_anomalies) == 0:
        xa = np.zeros((0, d))
    else:
        xa = _as_2d(x_anomalies, "x_anomalies")
    xt = _as_2d(x_test, "x_test")
    for name, x in (("x_anomalies", xa), ("x_test", xt)):
        if x.shape[1] != d:
            raise ValueError(f"{name} has {x.shape[1]} features but x_normals has {d}; they must match")
    if len(xt) == 0:
        raise ValueError("x_test is empty; give at least one test point")
    return xn, xa, xt


def _check_options(
    spec: ShallowMethod, xn: np.ndarray, xa: np.ndarray, val_fraction: float, max_train: int, pca_dims: int | None
) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    if not (isinstance(max_train, (int, np.integer)) and max_train >= 10):
        raise ValueError(f"max_train must be an integer >= 10, got {max_train!r}")
    if spec.uses_anomalies and len(xa) == 0:
        raise ValueError(f"{spec.name} trains on labelled anomalies but x_anomalies is empty; pass some or use 'svdd'")
    if pca_dims is not None and not (
        isinstance(pca_dims, (int, np.integer)) and 1 <= pca_dims <= min(xn.shape)
    ):
        raise ValueError(f"pca_dims must be an integer in [1, min(n_normals, d) = {min(xn.shape)}], got {pca_dims!r}")


def _pca(
    xn: np.ndarray, xa: np.ndarray, xt: np.ndarray, dims: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project everything on the top components of the training normals (the only data PCA is fitted on)."""
    pca = PCA(n_components=dims, random_state=seed).fit(xn)
    xa = pca.transform(xa) if len(xa) else np.zeros((0, dims))
    return pca.transform(xn), xa, pca.transform(xt)

