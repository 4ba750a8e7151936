"""Per-run evaluation: test AUC, the nu-property on the training set, the sphere read off the weights."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from sklearn.metrics import roc_auc_score


def auc_per_run(scores: np.ndarray, is_anomaly: Any) -> np.ndarray:
    """ROC AUC of each run's scores (R, N).

    ``is_anomaly``: labels (N,) shared by every run, (R, N), or a list of R label arrays of their own lengths (run
    r is scored on its first ``len(is_anomaly[r])`` scores: padded per-run rows). NaN for a run whose scores are
    not all finite (a diverged run) or whose labels hold one class only (AUC undefined).
    """
    scores = np.asarray(scores)
    if isinstance(is_anomaly, (list, tuple)):
        labels = [np.asarray(lab, bool) for lab in is_anomaly]
    else:
        labels = list(np.broadcast_to(np.asarray(is_anomaly, bool), scores.shape))
    out = np.full(len(labels), np.nan)
    for r, lab in enumerate(labels):
        s = scores[r, :len(lab)]
        if np.all(np.isfinite(s)) and 0 < lab.sum() < len(lab):
            out[r] = roc_auc_score(lab, s)
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
