"""The paper's one-class protocol (IV-A3), for many runs at once.

Run (class k, seed s): normals = every training sample of class k; labelled anomalies = a
seeded random ``anomaly_fraction`` of the other classes' training samples; test = the whole
test set, anomaly = any class but k. The anomaly subset depends only on (k, s).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from imdad_jax.train.engine import RunData


def labelled_anomalies(y_train: np.ndarray, normal_class: int, seed: int, fraction: float = 0.1) -> np.ndarray:
    """Sorted indices of the labelled anomalies of run (normal_class, seed)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"anomaly fraction must lie in (0, 1], got {fraction}")
    others = np.flatnonzero(y_train != normal_class)
    rng = np.random.default_rng([seed, normal_class])
    m = max(int(round(fraction * len(others))), 1)
    return np.sort(rng.choice(others, size=m, replace=False))


def _pad(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), width), np.int32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out, np.array([len(r) for r in rows], np.int32)


def run_key(seed: int, normal_class: int) -> np.ndarray:
    """The PRNG key of run (class, seed): independent of which other runs train beside it."""
    return np.asarray(jax.random.fold_in(jax.random.PRNGKey(seed), normal_class))


def one_vs_rest_runs(x_train: np.ndarray, y_train: np.ndarray, classes: Sequence[int], seeds: Sequence[int],
                     anomaly_fraction: float = 0.1) -> tuple[list[dict[str, Any]], RunData, np.ndarray]:
    """Runs for every (class, seed) pair: their ids, the shared training data and their keys (R, 2)."""
    present = set(np.unique(y_train).tolist())
    for k in classes:
        if k not in present:
            raise ValueError(f"normal class {k} does not occur in the training labels {sorted(present)}")
    ids, normals, anomalies, keys = [], [], [], []
    for s in seeds:
        for k in classes:
            ids.append({"normal_class": int(k), "seed": int(s)})
            normals.append(np.flatnonzero(y_train == k))
            anomalies.append(labelled_anomalies(y_train, k, s, anomaly_fraction))
            keys.append(run_key(s, k))
    n_pool, n_valid = _pad(normals)
    a_pool, m_valid = _pad(anomalies)
    return ids, RunData(x_train, n_pool, n_valid, a_pool, m_valid), np.stack(keys)


def preprocess_images(x: np.ndarray) -> np.ndarray:
    """uint8 images to float32 in [0, 1], NHWC."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    return (x.astype(np.float32) / 255.0)
