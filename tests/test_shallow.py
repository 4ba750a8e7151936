"""Shallow baselines: KKT of the SVDD/SSLM duals, SVDD == OC-SVM, AUC on separable data, selection hygiene, errors."""
import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from sklearn.svm import OneClassSVM

from imdad_jax.shallow import SHALLOW_METHODS, fit_score, fit_sslm, fit_svdd, scale_gamma
from imdad_jax.shallow.qp import FREE_TOL

# Distances of an RBF model lie in [0, 2]; the solver runs at 1e-10, so 1e-6 leaves room without hiding a real miss.
DIST_TOL = 1e-6
# A point 1e-3 inside (or outside) its sphere must carry alpha ~ 0: complementarity alpha * gap ~ mu ~ 1e-12.
CLEAR_GAP, ZERO_REL = 1e-3, 1e-6


def _blobs(n: int, m: int, dim: int = 4, shift: float = 4.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, dim)), rng.normal(shift, 1, (m, dim))


def _check_group(d, alpha, bound, radius2, tol, *, inner: bool):
    """Complementary slackness of one constraint group against its sphere of squared radius ``radius2``.

    inner (normals, d <= R^2 + xi): alpha > 0 -> on or outside; alpha < bound -> on or inside; clearly inside -> 0.
    outer (anomalies, d >= R^2 + rho^2 - xi): the same with inside and outside swapped.
    """
    rel = alpha / bound
    sign = 1.0 if inner else -1.0
    gap = sign * (d - radius2)  # > 0: the side where the slack is paid
    assert np.all(gap[rel > FREE_TOL] >= -tol), "a support vector lies strictly on the free side"
    assert np.all(gap[rel < 1 - FREE_TOL] <= tol), "a point below its bound pays slack"
    free = (rel > FREE_TOL) & (rel < 1 - FREE_TOL)
    assert free.any(), "no unbounded support vector: the test would be vacuous"
    assert np.max(np.abs(d[free] - radius2)) <= tol
    assert np.all(rel[gap < -CLEAR_GAP] <= ZERO_REL), "a point clearly on the free side has alpha > 0"
    return free


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_svdd_dual_satisfies_kkt(kernel):
    x, _ = _blobs(80, 0, dim=3, seed=1)
    C = 1.0 / (0.15 * len(x))
    m = fit_svdd(x, C=C, kernel=kernel, seed=0)
    d = m.distance(m.x_train)
    assert np.all(m.alpha >= 0) and np.all(m.alpha <= C * (1 + 1e-12))
    assert abs(m.alpha.sum() - 1.0) < 1e-6
    tol = DIST_TOL * max(1.0, abs(m.r2))  # linear-kernel distances are not bounded by 2
    _check_group(d, m.alpha, m.bound, m.r2, tol, inner=True)
    assert np.any(m.alpha >= (1 - FREE_TOL) * C), "no bounded support vector: C should bind at nu = 0.15"
    # The solver's own multiplier of sum(alpha) = 1 gives R^2 independently of the averaging over free SVs.
    assert abs(m.solver_info["eq_multipliers"][0] + m.c_norm2 - m.r2) < tol
    # nu-property: at most 1/(n C) of the points lie outside.
    assert np.mean(d > m.r2 + tol) <= 1.0 / (len(x) * C)


def test_sslm_dual_satisfies_kkt():
    # Overlapping enough that both groups have free support vectors and points at their bounds.
    xn, xa = _blobs(80, 16, dim=3, shift=2.0, seed=2)
    nu, nu1, nu2 = 0.5, 0.1, 0.5
    m = fit_sslm(xn, xa, nu=nu, nu1=nu1, nu2=nu2, seed=0)
    normal, anomaly = m.y > 0, m.y < 0
    assert np.allclose(m.bound[normal], 1 / (nu1 * 80)) and np.allclose(m.bound[anomaly], 1 / (nu2 * 16))
    assert np.all(m.alpha >= 0) and np.all(m.alpha <= m.bound * (1 + 1e-12))
    assert abs(m.alpha[normal].sum() - m.alpha[anomaly].sum() - 1.0) < 1e-6
    assert abs(m.alpha[anomaly].sum() - nu) < 1e-6
    d = m.distance(m.x_train)
    _check_group(d[normal], m.alpha[normal], m.bound[normal], m.r2, DIST_TOL, inner=True)
    _check_group(d[anomaly], m.alpha[anomaly], m.bound[anomaly], m.r2 + m.rho2, DIST_TOL, inner=False)
    at_bound = m.alpha >= (1 - FREE_TOL) * m.bound
    assert at_bound[normal].any() and at_bound[anomaly].any(), "the bounded branch of KKT would go untested"
    assert m.rho2 > 0
    # Stationarity with Clarabel's multipliers z: R^2 = z0 + ||c||^2 and rho^2 = -z1.
    z = m.solver_info["eq_multipliers"]
    assert abs(z[0] + m.c_norm2 - m.r2) < DIST_TOL and abs(-z[1] - m.rho2) < DIST_TOL
    # nu-property of docs/method.md: bounds on the fractions on the wrong side of each sphere.
    assert np.mean(d[normal] > m.r2 + DIST_TOL) <= nu1 * (1 + nu)
    assert np.mean(d[anomaly] < m.r2 + m.rho2 - DIST_TOL) <= nu * nu2


def test_svdd_ranks_like_ocsvm_with_nu_equal_one_over_nC():
    x, _ = _blobs(60, 0, dim=2, seed=3)
    x_test = np.random.default_rng(4).normal(0, 2, (300, 2))
    nu = 0.2
    gamma = scale_gamma(x)
    svdd = fit_svdd(x, C=1.0 / (nu * len(x)), gamma=gamma)
    ocsvm = OneClassSVM(kernel="rbf", gamma=gamma, nu=nu, tol=1e-10).fit(x)
    rho = spearmanr(svdd.decision(x_test), -ocsvm.decision_function(x_test)).statistic
    assert rho > 0.99


def test_sslm_subsamples_to_max_train_and_keeps_anomalies():
    xn, xa = _blobs(300, 6, dim=2, seed=5)
    m = fit_sslm(xn, xa, nu=0.5, nu1=0.1, nu2=0.1, max_train=100, seed=0)
    assert len(m.y) == 100 and np.sum(m.y < 0) == 5  # proportion would give 2; a few are kept
    again = fit_sslm(xn, xa, nu=0.5, nu1=0.1, nu2=0.1, max_train=100, seed=0)
    assert np.array_equal(m.normal_index, again.normal_index) and np.allclose(m.alpha, again.alpha)


@pytest.fixture(scope="module")
def separable():
    xn, xa = _blobs(150, 15, seed=6)
    tn, ta = _blobs(100, 100, seed=7)
    return xn, xa, np.concatenate([tn, ta]), np.r_[np.zeros(100), np.ones(100)]


@pytest.mark.parametrize("method", sorted(SHALLOW_METHODS))
def test_each_method_separates_blobs(method, separable):
    xn, xa, x_test, y_test = separable
    res = fit_score(method, xn, xa, x_test, seed=0)
    assert res.scores.shape == (len(x_test),) and np.all(np.isfinite(res.scores))
    assert roc_auc_score(y_test, res.scores) > 0.9
    assert res.val_auc is not None and len(res.grid_auc) >= 1 and res.fit_s > 0


@pytest.mark.parametrize("method", sorted(SHALLOW_METHODS))
def test_selection_ignores_test_set_and_seed_fixes_result(method, separable):
    xn, xa, x_test, _ = separable
    other_test = np.random.default_rng(8).uniform(-10, 10, (37, xn.shape[1]))
    a = fit_score(method, xn, xa, x_test, seed=3)
    b = fit_score(method, xn, xa, other_test, seed=3)
    assert a.params == b.params and a.val_auc == b.val_auc and a.grid_auc == b.grid_auc
    both = fit_score(method, xn, xa, np.concatenate([x_test, other_test]), seed=3)
    assert np.allclose(both.scores[: len(x_test)], a.scores)  # test points never influence each other's scores
    assert np.array_equal(fit_score(method, xn, xa, x_test, seed=3).scores, a.scores)


def test_without_anomalies_falls_back_to_default_and_says_so(separable):
    xn, _, x_test, _ = separable
    res = fit_score("ocsvm", xn, None, x_test, seed=0)
    assert res.params["nu"] == 0.1 and "default" in res.params["selected_by"]
    assert res.val_auc is None and res.grid_auc == []


def test_pca_path_and_custom_grid(separable):
    xn, xa, x_test, y_test = separable
    res = fit_score("svdd", xn, xa, x_test, seed=0, grid={"C": [0.05, 0.5]}, pca_dims=2)
    assert res.params["pca_dims"] == 2 and res.params["C"] in (0.05, 0.5) and len(res.grid_auc) == 2
    assert roc_auc_score(y_test, res.scores) > 0.9


def _bad_cases():
    xn, xa = _blobs(40, 6, seed=9)
    xt = xn[:5]
    nan = xn.copy()
    nan[0, 0] = np.nan
    return [
        (("lof", xn, xa, xt), {}, "unknown shallow method"),
        (("kde", xn, xa, xt[:, :3]), {}, "x_test has 3 features"),
        (("kde", xn, xa[:, :2], xt), {}, "x_anomalies has 2 features"),
        (("kde", xn[:0], xa, xt), {}, "at least 2 training normals"),
        (("kde", xn[:, 0], xa, xt), {}, "must be a 2-D array"),
        (("kde", nan, xa, xt), {}, "NaN"),
        (("ocsvm", xn, xa, xt), {"grid": {"nu": [0.1, 1.5]}}, "out of range"),
        (("ocsvm", xn, xa, xt), {"grid": {"nu": [0.0]}}, "out of range"),
        (("kde", xn, xa, xt), {"grid": {"bandwidth": [-1.0]}}, "out of range"),
        (("kde", xn, xa, xt), {"grid": {"bandwith": [1.0]}}, "unknown key"),
        (("kde", xn, xa, xt), {"grid": {"bandwidth": []}}, "empty"),
        (("iforest", xn, xa, xt), {"grid": {"n_estimators": [50]}}, "takes no grid"),
        (("svdd", xn, xa, xt), {"grid": {"nu": [0.1], "C": [0.5]}}, "exactly one of"),
        (("svdd", xn, xa, xt), {"grid": {"C": [1e-4]}}, "below 1/n"),
        (("sslm", xn, xa, xt), {"grid": {"nu": [1.0], "nu1": [0.9], "nu2": [0.1]}}, "infeasible"),
        (("sslm", xn, None, xt), {}, "x_anomalies is empty"),
        (("kde", xn, xa, xt), {"val_fraction": 1.0}, "val_fraction"),
        (("kde", xn, xa, xt), {"pca_dims": 0}, "pca_dims"),
        (("kde", xn, xa, xt), {"pca_dims": 5}, "pca_dims"),
        (("svdd", xn, xa, xt), {"max_train": 3}, "max_train"),
    ]


@pytest.mark.parametrize("args,kwargs,match", _bad_cases(), ids=[case[2] for case in _bad_cases()])
def test_bad_input_raises_one_clear_line(args, kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        fit_score(*args, seed=0, **kwargs)
    assert "\n" not in str(err.value)


def test_qp_functions_reject_infeasible_parameters():
    xn, xa = _blobs(20, 4, seed=10)
    with pytest.raises(ValueError, match="C >= 1/n"):
        fit_svdd(xn, C=0.01)
    with pytest.raises(ValueError, match="nu1 <= 1/"):
        fit_sslm(xn, xa, nu=1.0, nu1=0.8, nu2=0.1)
    with pytest.raises(ValueError, match="kernel must be"):
        fit_svdd(xn, C=0.5, kernel="poly")
