"""Per-run evaluation: test AUC, the nu-property on the training set, the sphere read off the weights."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from sklearn.metrics import roc_auc_score


def auc_per_run(scores: np.ndarray, is_anomaly: np.ndarray) -> np.ndarray:
    """ROC AUC of each run's scores (R, N) against labels (N,) or (R, N); NaN where scores are not finite."""
    scores = np.asarray(scores)
    labels = np.broadcast_to(np.asarray(is_anomaly, bool), scores.shape)
    out = np.full(scores.shape[0], np.nan)
    for r in range(scores.shape[0]):
        if np.all(np.isfinite(scores[r])):
            out[r] = roc_auc_score(labels[r], scores[r])
    return out


def nu_property(s_normals: list[np.ndarray], s_anomalies: list[np.ndarray], margin2: np.ndarray,
                hp: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Empirical nu-property fractions on the training set, with their bounds.

    ``s = d - R^2``. Normals outside the inner sphere: ``s > 0``, bound ``nu1 (1 + nu)``.
    Anomalies inside the outer sphere: ``s < rho^2``, bound ``nu nu2``.
    """
    frac_n = np.array([np.mean(s > 0) for s in s_normals])
    frac_a = np.array([np.mean(s < m) for s, m in zip(s_anomalies, np.asarray(margin2))])
    nu, nu1, nu2 = (np.asarray(hp[k], float) for k in ("nu", "nu1", "nu2"))
    return {"frac_normals_out": frac_n, "bound_normals_out": nu1 * (1 + nu),
            "frac_anomalies_in": frac_a, "bound_anomalies_in": nu * nu2}


def summarize_runs(run_ids: list[Mapping[str, Any]], auc: np.ndarray, geometry: Mapping[str, np.ndarray],
                   nu: Mapping[str, np.ndarray], diverged: np.ndarray) -> list[dict[str, Any]]:
    """One flat record per run (JSON-ready)."""
    rows = []
    for r, rid in enumerate(run_ids):
        row = dict(rid)
        row.update({"auc": None if not np.isfinite(auc[r]) else float(auc[r]), "diverged": bool(diverged[r])})
        # The sphere read off the weights, for the methods that have one (R^2, rho^2, ||c||).
        row.update({k: float(np.asarray(v)[r]) for k, v in geometry.items()})
        for k, v in nu.items():
            row[k] = float(np.broadcast_to(v, auc.shape)[r])
        rows.append(row)
    return rows
