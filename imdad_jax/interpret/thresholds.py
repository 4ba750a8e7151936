"""Decision thresholds a user can act on: which test points to flag, and how good that choice is.

Every rule returns a ``Decision``: the statistic it thresholds, the threshold, the predictions
(1 = anomaly) and, when labels are given, precision / recall / F1 / accuracy with the anomaly as
the positive class (scikit-learn, ``zero_division=0``). The reference statistics come from the
training normals only, so no rule looks at the test labels.

Defaults (``docs/interpretability.md`` says why):
  * boundary: ``score > 0`` (IMD-AD's score is ``d - R^2 - rho^2/2``: the sphere halfway between the two).
  * Gaussian: ``score > mean + k std`` of the training normals' scores, ``k = 3``.
  * z-score: ``(score - mean) / std > k``, ``k = 3``; ``robust=True`` uses the median and the normal-consistent MAD.
  * Mahalanobis on z: squared distance ``> chi2.ppf(1 - alpha, dim)``, ``alpha = 0.01``, Ledoit-Wolf covariance.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np
from scipy import stats
from sklearn.covariance import EmpiricalCovariance, LedoitWolf
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

DEFAULT_K = 3.0
DEFAULT_ALPHA = 0.01
COVARIANCE_ESTIMATORS = ("ledoit_wolf", "empirical")
MAHALANOBIS_RULES = ("chi2", "std")


class Decision(NamedTuple):
    """One threshold rule applied to a test set."""

    statistic: np.ndarray  # (N,) the thresholded value (score, z-score or squared Mahalanobis distance)
    threshold: float
    predictions: np.ndarray  # (N,) 1 = flagged as anomaly
    metrics: dict[str, float]  # precision, recall, f1, accuracy (empty without labels), flagged_fraction


def _vector(a: Any, name: str, *, min_size: int = 1) -> np.ndarray:
    v = np.asarray(a, dtype=float)
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {v.shape}")
    if v.size < min_size:
        raise ValueError(f"{name} needs at least {min_size} value(s), got {v.size}"
                         + ("; the training normals are empty" if "train" in name else ""))
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contain NaN or inf ({int(np.sum(~np.isfinite(v)))} of {v.size}); "
                         "the run may have diverged")
    return v


def _matrix(a: Any, name: str, *, min_rows: int = 1) -> np.ndarray:
    m = np.asarray(a, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"{name} must be 2-D (points, dims), got shape {m.shape}")
    if m.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {m.shape[0]}"
                         + ("; the training normals are empty" if "train" in name else ""))
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} contain NaN or inf")
    return m


def _labels(labels: Any, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the scores, got {y.shape}")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError(f"labels must be 0 (normal) or 1 (anomaly), got values {np.unique(y)[:10].tolist()}")
    return y.astype(int)


def _k(k: float) -> float:
    if not np.isfinite(k):
        raise ValueError(f"k must be finite, got {k}")
    return float(k)


def classification_metrics(labels: Any, predictions: Any) -> dict[str, float]:
    """Precision, recall, F1 (anomaly = positive class) and accuracy of 0/1 predictions."""
    y = _labels(labels, np.asarray(predictions).shape[0])
    p = np.asarray(predictions).astype(int)
    return {"precision": float(precision_score(y, p, zero_division=0)),
            "recall": float(recall_score(y, p, zero_division=0)),
            "f1": float(f1_score(y, p, zero_division=0)),
            "accuracy": float(accuracy_score(y, p))}


def _decide(statistic: np.ndarray, threshold: float, labels: np.ndarray | None) -> Decision:
    pred = (statistic > threshold).astype(int)
    metrics = classification_metrics(labels, pred) if labels is not None else {}
    metrics["flagged_fraction"] = float(pred.mean())
    return Decision(statistic, float(threshold), pred, metrics)


def _mean_std(train: np.ndarray, robust: bool) -> tuple[float, float]:
    if robust:
        center = float(np.median(train))
        scale = float(stats.median_abs_deviation(train, scale="normal"))
    else:
        center, scale = float(np.mean(train)), float(np.std(train, ddof=1))
    if not scale > 0:
        raise ValueError("the training normals' scores have zero spread; a standardised threshold is undefined")
    return center, scale


def boundary_threshold(scores: Any, labels: Any | None = None) -> Decision:
    """The model's own boundary: flag ``score > 0``."""
    s = _vector(scores, "scores")
    return _decide(s, 0.0, _labels(labels, s.size))


def gaussian_threshold(scores: Any, train_normal_scores: Any, labels: Any | None = None,
                       k: float = DEFAULT_K) -> Decision:
    """Flag ``score > mean + k std`` of the training normals' scores (sample std, ddof 1).

    If the normals' scores were Gaussian, ``k = 3`` would flag 0.13% of normals.
    """
    s = _vector(scores, "scores")
    train = _vector(train_normal_scores, "train_normal_scores", min_size=2)
    mean, std = _mean_std(train, robust=False)
    return _decide(s, mean + _k(k) * std, _labels(labels, s.size))


def zscore_threshold(scores: Any, train_normal_scores: Any, labels: Any | None = None, k: float = DEFAULT_K,
                     *, robust: bool = False) -> Decision:
    """Standardise scores by the training normals' scores and flag ``z > k``.

    ``robust=False`` uses mean and sample std (the same flags as ``gaussian_threshold``, on a unit-free
    scale that reads the same across runs); ``robust=True`` uses the median and the MAD scaled to match
    a Gaussian std (scipy ``median_abs_deviation(scale="normal")``), which the few normals far outside
    the sphere cannot inflate.
    """
    s = _vector(scores, "scores")
    train = _vector(train_normal_scores, "train_normal_scores", min_size=2)
    center, scale = _mean_std(train, robust)
    return _decide((s - center) / scale, _k(k), _labels(labels, s.size))


class MahalanobisModel(NamedTuple):
    """Location and covariance of the training normals' representations, and the threshold on d^2."""

    estimator: Any  # a fitted sklearn.covariance estimator
    threshold: float
    train_distances: np.ndarray  # squared Mahalanobis distances of the training normals


def fit_mahalanobis(z_train_normals: Any, *, estimator: str = "ledoit_wolf", rule: str = "chi2",
                    alpha: float = DEFAULT_ALPHA, k: float = DEFAULT_K) -> MahalanobisModel:
    """Fit the normals' mean and covariance on z and choose the threshold on the squared distance.

    ``rule="chi2"``: ``chi2.ppf(1 - alpha, dim)``, the quantile squared distances of Gaussian normals follow.
    ``rule="std"``: ``mean + k std`` of the training normals' own squared distances (no Gaussian assumption).
    ``estimator``: ``"ledoit_wolf"`` (shrunk, well conditioned when points are few against dims) or
    ``"empirical"``.
    """
    z = _matrix(z_train_normals, "z_train_normals", min_rows=2)
    if estimator not in COVARIANCE_ESTIMATORS:
        raise ValueError(f"estimator must be one of {COVARIANCE_ESTIMATORS}, got {estimator!r}")
    if rule not in MAHALANOBIS_RULES:
        raise ValueError(f"rule must be one of {MAHALANOBIS_RULES}, got {rule!r}")
    est = (LedoitWolf() if estimator == "ledoit_wolf" else EmpiricalCovariance()).fit(z)
    d2 = est.mahalanobis(z)
    if rule == "chi2":
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        thr = float(stats.chi2.ppf(1.0 - alpha, df=z.shape[1]))
    else:
        mean, std = _mean_std(d2, robust=False)
        thr = mean + _k(k) * std
    return MahalanobisModel(est, thr, d2)


def mahalanobis_threshold(z: Any, z_train_normals: Any, labels: Any | None = None, *,
                          estimator: str = "ledoit_wolf", rule: str = "chi2", alpha: float = DEFAULT_ALPHA,
                          k: float = DEFAULT_K) -> Decision:
    """Flag test representations whose squared Mahalanobis distance to the training normals exceeds the
    threshold of ``fit_mahalanobis`` (same arguments). Ignores the sphere: a check on z itself."""
    fitted = fit_mahalanobis(z_train_normals, estimator=estimator, rule=rule, alpha=alpha, k=k)
    zt = _matrix(z, "z")
    if zt.shape[1] != fitted.estimator.location_.shape[0]:
        raise ValueError(f"z has {zt.shape[1]} dims, the training normals {fitted.estimator.location_.shape[0]}")
    return _decide(fitted.estimator.mahalanobis(zt), fitted.threshold, _labels(labels, zt.shape[0]))


def all_thresholds(scores: Any, train_normal_scores: Any, labels: Any | None = None, *,
                   z: Any | None = None, z_train_normals: Any | None = None,
                   k: float = DEFAULT_K) -> dict[str, Decision]:
    """Every rule on one run's test set (Mahalanobis only when both ``z`` arrays are given), by name."""
    out = {"boundary": boundary_threshold(scores, labels),
           "gaussian": gaussian_threshold(scores, train_normal_scores, labels, k),
           "zscore": zscore_threshold(scores, train_normal_scores, labels, k),
           "zscore_robust": zscore_threshold(scores, train_normal_scores, labels, k, robust=True)}
    if (z is None) != (z_train_normals is None):
        raise ValueError("pass both z and z_train_normals for the Mahalanobis rule, or neither")
    if z is not None:
        out["mahalanobis"] = mahalanobis_threshold(z, z_train_normals, labels)
    return out


def metrics_table(decisions: Mapping[str, Decision]) -> dict[str, dict[str, float]]:
    """``{rule: metrics}`` (with the threshold), the data of the threshold bar chart."""
    return {name: {**d.metrics, "threshold": d.threshold} for name, d in decisions.items()}
