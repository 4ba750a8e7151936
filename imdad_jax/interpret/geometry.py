"""The data behind the paper's geometric figures; plotting is ``imdad_jax.plots.figures``.

Distances are squared: ``d = ||z - c||^2``, the inner sphere at ``R^2``, the outer at ``R^2 + rho^2`` and
IMD-AD's decision boundary (score 0) at ``R^2 + rho^2/2``.
"""
from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np
from scipy.stats import gaussian_kde
from sklearn.manifold import TSNE
from sklearn.metrics import auc, roc_curve

from imdad_jax.models.head import sphere_geometry

# Enough for 10k Fashion-MNIST images through CNN2 on a CPU without a multi-GB activation buffer.
_CHUNK = 1024
# Exact t-SNE is O(N^2) but cheap at this size and needs no OpenMP: Barnes-Hut's OpenMP workers took
# 44 s for 12 points on a loaded 2-core CPU (0.3 s exact).
_TSNE_EXACT_MAX = 500


def _batched(fn: Callable[[jnp.ndarray], jnp.ndarray], x: Any, chunk: int = _CHUNK) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return np.concatenate([np.asarray(fn(jnp.asarray(x[i:i + chunk]))) for i in range(0, len(x), chunk)])


def _head(params: Any) -> Any:
    try:
        return params["params"]["head"]
    except (KeyError, TypeError):
        raise ValueError("params must be a SphereDetector's variables, {'params': {'head': ..., ...}}") from None


def squared_distance(params: Any, model: Any, x: Any) -> np.ndarray:
    """``d(x) = ||z - c||^2`` of one run: the head's output ``s = d - R^2`` plus R^2 read off the weights."""
    r2 = float(sphere_geometry(_head(params)).radius2)
    return _batched(lambda xx: model.apply(params, xx), x) + r2


def distance_density(d_normals: Any, d_anomalies: Any, radius2: float, margin2: float,
                     grid: int | Any = 512) -> dict[str, Any]:
    """Gaussian-KDE densities of normals' and anomalies' squared distances, with the sphere marks (paper Fig. 8).

    ``grid``: the points to evaluate at, or their number (then spaced evenly over the data and the marks,
    padded by four bandwidths so each density integrates to about 1). Bandwidth: scipy's Scott rule.
    The KDE is not corrected at d = 0, so a little mass lies below 0 when points sit near the center.
    ``d_anomalies`` may be empty (then its density is None).

    Returns ``{"grid", "normals", "anomalies", "radius2", "outer2" (R^2 + rho^2), "decision2"
    (R^2 + rho^2/2)}``.
    """
    dn = _finite_1d(d_normals, "d_normals", min_size=2)
    da = np.asarray(d_anomalies, dtype=float).ravel()
    if da.size:
        da = _finite_1d(da, "d_anomalies", min_size=2)
    kdes = {"normals": _kde(dn, "d_normals"), "anomalies": _kde(da, "d_anomalies") if da.size else None}
    r2, m2 = float(radius2), float(margin2)
    if np.isscalar(grid) or np.ndim(grid) == 0:
        n = int(grid)
        if n < 2:
            raise ValueError(f"grid must hold at least 2 points, got {n}")
        pad = 4.0 * max(np.sqrt(k.covariance[0, 0]) for k in kdes.values() if k is not None)
        lo = min(dn.min(), da.min() if da.size else np.inf, r2) - pad
        hi = max(dn.max(), da.max() if da.size else -np.inf, r2 + m2) + pad
        g = np.linspace(lo, hi, n)
    else:
        g = _finite_1d(grid, "grid", min_size=2)
    return {"grid": g, **{k: (v(g) if v is not None else None) for k, v in kdes.items()},
            "radius2": r2, "outer2": r2 + m2, "decision2": r2 + m2 / 2.0}


def _finite_1d(a: Any, name: str, min_size: int) -> np.ndarray:
    v = np.asarray(a, dtype=float).ravel()
    if v.size < min_size:
        raise ValueError(f"{name} needs at least {min_size} values, got {v.size}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contain NaN or inf")
    return v


def _kde(v: np.ndarray, name: str) -> gaussian_kde:
    if np.ptp(v) == 0:
        raise ValueError(f"{name} are all equal; a kernel density needs spread")
    return gaussian_kde(v)


def circles_2d(params: Any, margin_param: str = "softplus") -> dict[str, Any]:
    """The sphere of a rep_dim = 2 model as circles: centre, inner radius R, outer ``sqrt(R^2 + rho^2)`` and
    IMD-AD's decision radius ``sqrt(R^2 + rho^2/2)`` (where its score is 0), from one run's variables.

    A negative R^2 (possible mid-training under the dual) gives radius 0; ``radius2`` keeps the raw value.
    """
    head = _head(params)
    if np.shape(head["w"]) != (2,):
        raise ValueError(f"circles_2d needs one run of a rep_dim = 2 model, the head's w has shape "
                         f"{np.shape(head['w'])} (slice a stacked state with imdad_jax.interpret.select_run)")
    g = sphere_geometry(head, margin_param)
    r2, m2 = float(g.radius2), float(g.margin2)
    return {"center": np.asarray(g.center, float), "radius2": r2, "margin2": m2,
            "radius": float(np.sqrt(max(r2, 0.0))), "outer_radius": float(np.sqrt(max(r2 + m2, 0.0))),
            "decision_radius": float(np.sqrt(max(r2 + m2 / 2.0, 0.0)))}


def representation_2d(params: Any, model: Any, x: Any) -> np.ndarray:
    """z = encoder(x) of a rep_dim = 2 model, (N, 2)."""
    z = _batched(lambda xx: model.apply(params, xx, method="embed"), x)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"representation_2d needs a rep_dim = 2 model, z has shape {z.shape}")
    return z


def input_score_grid(score_fn: Callable[[jnp.ndarray], Any], x: Any, resolution: int = 100,
                     pad: float = 0.1) -> dict[str, np.ndarray]:
    """Scores on a regular grid over 2-D inputs' bounding box (padded by ``pad`` of its size), for a
    decision-boundary contour beside the representations. ``score_fn(x) -> (N,)``.

    Returns ``{"xx", "yy", "score"}``, each (resolution, resolution).
    """
    x = np.asarray(x, float)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"input_score_grid needs 2-D inputs (N, 2), got shape {x.shape}")
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    axes = [np.linspace(lo[j] - pad * span[j], hi[j] + pad * span[j], resolution) for j in range(2)]
    xx, yy = np.meshgrid(*axes)
    s = _batched(score_fn, np.stack([xx.ravel(), yy.ravel()], axis=1))
    return {"xx": xx, "yy": yy, "score": s.reshape(xx.shape)}


def roc_curves(scores: Any, labels: Any) -> list[dict[str, Any]]:
    """One ROC curve per run (scikit-learn ``roc_curve``, anomaly = 1).

    ``scores`` (R, N) or (N,); ``labels`` (N,) or (R, N). A run with non-finite scores gets empty
    curves and AUC NaN, as ``imdad_jax.evaluate.auc_per_run`` does.
    """
    s = np.asarray(scores, dtype=float)
    s = s[None] if s.ndim == 1 else s
    if s.ndim != 2:
        raise ValueError(f"scores must be (N,) or (runs, N), got shape {np.shape(scores)}")
    try:
        y = np.broadcast_to(np.asarray(labels), s.shape)
    except ValueError:
        raise ValueError(f"labels of shape {np.shape(labels)} do not match scores of shape {s.shape}") from None
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0 (normal) or 1 (anomaly)")
    out = []
    for r in range(s.shape[0]):
        if len(np.unique(y[r])) < 2:
            raise ValueError(f"run {r}: labels hold one class only; a ROC curve needs normals and anomalies")
        if not np.all(np.isfinite(s[r])):
            out.append({"fpr": np.empty(0), "tpr": np.empty(0), "thresholds": np.empty(0), "auc": float("nan")})
            continue
        fpr, tpr, thr = roc_curve(y[r], s[r])
        out.append({"fpr": fpr, "tpr": tpr, "thresholds": thr, "auc": float(auc(fpr, tpr))})
    return out


def tsne_embedding(z: Any, seed: int = 0, perplexity: float | None = None) -> np.ndarray:
    """2-D t-SNE of representations (N, k) (scikit-learn, PCA init).

    Default perplexity ``min(30, (N - 1) / 3)``: scikit-learn's 30 where N allows, smaller for small
    samples (it must stay below N). Up to ``_TSNE_EXACT_MAX`` points the exact gradient is used, above
    it Barnes-Hut.
    """
    z = np.asarray(z, dtype=float)
    if z.ndim != 2 or z.shape[0] < 4:
        raise ValueError(f"z must be (N, k) with N >= 4, got shape {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("z contains NaN or inf")
    p = min(30.0, (z.shape[0] - 1) / 3.0) if perplexity is None else float(perplexity)
    if not 0 < p < z.shape[0]:
        raise ValueError(f"perplexity must lie in (0, {z.shape[0]}), got {p}")
    # PCA init needs at least 2 dims; a 1-D z is padded (t-SNE of a line is the line).
    if z.shape[1] < 2:
        z = np.concatenate([z, np.zeros_like(z)], axis=1)
    method = "exact" if z.shape[0] <= _TSNE_EXACT_MAX else "barnes_hut"
    return TSNE(n_components=2, perplexity=p, init="pca", random_state=seed, method=method).fit_transform(z)


def nu_property_grid(nu1: Any, nu2: Any, frac_normals_out: Any, frac_anomalies_in: Any,
                     nu: Any = 0.5) -> dict[str, np.ndarray]:
    """Bounds beside measured fractions, one row per run, sorted by (nu1, nu2, nu).

    The nu-property: normals outside the inner sphere ``<= nu1 (1 + nu)``, labelled anomalies inside the
    outer sphere ``<= nu nu2`` (``imdad_jax.evaluate.nu_property`` measures the fractions; its
    ``frac_*`` entries fit here). ``nu`` is a scalar or per-run; default IMD-AD's 0.5.
    """
    cols = [np.asarray(a, dtype=float).ravel() for a in (nu1, nu2, frac_normals_out, frac_anomalies_in)]
    n = cols[0].size
    if n == 0 or any(c.size != n for c in cols):
        raise ValueError(f"nu1, nu2 and both fractions need one value per run, got sizes {[c.size for c in cols]}")
    nu_v = np.broadcast_to(np.asarray(nu, dtype=float), (n,)).copy()
    n1, n2, fn, fa = cols
    order = np.lexsort((nu_v, n2, n1))
    bn, ba = n1 * (1.0 + nu_v), nu_v * n2
    table = {"nu": nu_v, "nu1": n1, "nu2": n2, "bound_normals_out": bn, "frac_normals_out": fn,
             "holds_normals_out": fn <= bn, "bound_anomalies_in": ba, "frac_anomalies_in": fa,
             "holds_anomalies_in": fa <= ba}
    return {k: v[order] for k, v in table.items()}


def score_on(params: Any, model: Any, x: Any, score_fn: Callable[[Any, jnp.ndarray], Any] | None = None) -> np.ndarray:
    """One run's scores on ``x`` in chunks (default the head's output); ``score_fn(params, x)`` else."""
    fn = score_fn or (lambda p, xx: model.apply(p, xx))
    return _batched(lambda xx: fn(params, xx), x)

