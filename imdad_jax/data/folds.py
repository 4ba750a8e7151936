"""The paper's protocol for tabular and synthetic data: stratified k-fold cross-validation, one class normal.

Run (seed s, fold f, normal class k):

- folds: ``StratifiedKFold(n_folds, shuffle=True, random_state=s)`` on (x, y); fold f is the test fold;
- training normals: the training folds' rows of class k;
- labelled anomalies: a random ``anomaly_fraction`` (at least one) of the training folds' other-class
  rows, drawn with ``np.random.default_rng([s, f, k])``;
- scaling: a ``StandardScaler`` fit on the training normals only, applied to every row;
- test: the whole test fold, anomaly = any class but k.

Every run has its own scaler, so ``RunData.x`` stacks one scaled copy of the whole table per run
(run r's copy is rows ``r * n .. (r + 1) * n``) and every index returned points into its own copy.
Folds and anomaly draws depend on y and the seeds only, never on the feature values.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from imdad_jax.data.runs import RunData


def _pad(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged index lists to a zero-padded (R, max len) int32 array and the valid counts (R,)."""
    out = np.zeros((len(rows), max(len(r) for r in rows)), np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out, np.array([len(r) for r in rows], np.int32)


def cv_key(seed: int, fold: int, normal_class: int) -> np.ndarray:
    """The PRNG key (2,) uint32 of run (seed, fold, class): independent of the runs trained beside it."""
    return np.asarray(jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), fold), normal_class))


def cv_runs(x: np.ndarray, y: np.ndarray, classes: Sequence[int], seeds: Sequence[int], n_folds: int = 5,
            anomaly_fraction: float = 0.1, contamination: float = 0.0
            ) -> tuple[list[dict[str, Any]], RunData, np.ndarray, np.ndarray, np.ndarray]:
    """Every (seed, fold, normal class) run, seed-major, then fold, then class.

    ``contamination``: the share of each run's training normal pool made of unlabelled anomalies (training rows
    of the other classes that were not drawn as labelled anomalies, seeded), as in most users' data; 0 is the
    paper's clean protocol. The scaler is then fit on the contaminated pool, as a user's would be.

    Returns ``(ids, data, keys, test_idx, test_valid)``: ``ids[r]`` = {"normal_class", "fold", "seed"};
    ``data.x`` (R * n, d) float32 holds R per-run scaled copies of x, and ``data``'s pools index run
    r's own copy; ``keys`` (R, 2) uint32; ``test_idx`` (R, T) int32 the test-fold rows in run r's
    copy, padded with 0, of which the first ``test_valid[r]`` are valid (labels: ``test_labels``).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"x must be (n, d) and y (n,) with the same n; got x {x.shape} and y {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x holds NaN or inf; fill or drop those cells before cv_runs")
    if not 0 < anomaly_fraction <= 1:
        raise ValueError(f"anomaly fraction must lie in (0, 1], got {anomaly_fraction}")
    if not 0 <= contamination < 1:
        raise ValueError(f"contamination must lie in [0, 1), got {contamination}")
    if len(np.unique(y)) < 2:
        raise ValueError("y has a single class; the protocol needs other classes as anomalies")
    counts = {int(c): int(m) for c, m in zip(*np.unique(y, return_counts=True))}
    for k in classes:
        if k not in counts:
            raise ValueError(f"normal class {k} does not occur in y (classes {sorted(counts)})")
        if counts[k] < n_folds:
            raise ValueError(f"class {k} has {counts[k]} rows, fewer than n_folds={n_folds}; lower n_folds")
    n = len(x)
    n_runs = len(seeds) * n_folds * len(classes)
    if n_runs * n >= 2 ** 31:
        raise ValueError(f"{n_runs} runs x {n} rows overflow int32 indices; run fewer seeds or classes at once")

    ids, blocks, normals, anomalies, tests, keys = [], [], [], [], [], []
    for s in seeds:
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=int(s)).split(x, y)
        for f, (train, test) in enumerate(splits):
            for k in classes:
                off = len(ids) * n
                ids.append({"normal_class": int(k), "fold": f, "seed": int(s)})
                norm = train[y[train] == k]
                others = train[y[train] != k]
                m = max(int(round(anomaly_fraction * len(others))), 1)
                anom = np.sort(np.random.default_rng([int(s), f, int(k)]).choice(others, size=m, replace=False))
                if contamination > 0:  # unlabelled anomalies among the normals, up to what is left of the others
                    rest = np.setdiff1d(others, anom)
                    c = min(int(round(contamination * len(norm) / (1 - contamination))), len(rest))
                    dirt = np.random.default_rng([int(s), f, int(k), 1]).choice(rest, size=c, replace=False)
                    norm = np.sort(np.concatenate([norm, dirt]))
                # Fit on the training normals alone: test rows and labelled anomalies must not leak into
                # the scaling. Zero-variance features get scale 1 from sklearn, so no division by zero.
                scaler = StandardScaler().fit(x[norm])
                blocks.append(scaler.transform(x).astype(np.float32))
                normals.append(norm + off)
                anomalies.append(anom + off)
                tests.append(test + off)
                keys.append(cv_key(s, f, k))
    n_pool, n_valid = _pad(normals)
    a_pool, m_valid = _pad(anomalies)
    test_idx, test_valid = _pad(tests)
    data = RunData(np.concatenate(blocks), n_pool, n_valid, a_pool, m_valid)
    return ids, data, np.stack(keys), test_idx, test_valid


def test_labels(y: np.ndarray, ids: list[dict[str, Any]], test_idx: np.ndarray, test_valid: np.ndarray,
                n: int) -> list[np.ndarray]:
    """Per run, the anomaly labels (True = not the normal class) of its valid test rows, in ``test_idx`` order."""
    y = np.asarray(y)
    return [y[test_idx[r, :test_valid[r]] - r * n] != run["normal_class"] for r, run in enumerate(ids)]


test_labels.__test__ = False  # a helper, not a test: keeps pytest from collecting it where it is imported
