"""The paper's one-class protocol (IV-A3), for many runs at once.

Run (class k, seed s): normals = every training sample of class k; labelled anomalies = a
seeded random ``anomaly_fraction`` of the other classes' training samples; test = the whole
test set, anomaly = any class but k. The anomaly subset depends only on (k, s).

Pixels go to [0, 1], shared by all runs; any further preprocessing (``imdad_jax.data.preprocess``)
is fit on each run's own training normals, so ``per_run_preprocess`` gives every run its own copy.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from imdad_jax.data.preprocess import fit_transform
from imdad_jax.data.runs import RunData


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


def per_run_preprocess(name: str, data: RunData, x_test: np.ndarray
                       ) -> tuple[RunData, np.ndarray, np.ndarray, np.ndarray]:
    """Each run's own copy of its training rows and of the test set, under the preprocessing ``name``
    (``imdad_jax.data.preprocess``) fit on that run's training normals only.

    ``data`` and ``x_test`` are the shared [0, 1] arrays of ``one_vs_rest_runs``. Returns
    ``(data, x_test, test_idx, test_valid)`` in the layout of the tabular protocol (``folds.cv_runs``):
    the new ``data.x`` stacks one transformed block per group of runs with the same training normals
    (the seeds of one normal class: their transform is the same), holding the rows those runs train on,
    and every run's pools point into its group's block; the new ``x_test`` stacks one transformed copy
    of the test set (T rows) per group, and ``test_idx[r]`` = ``g * T + arange(T)`` for run r's group g,
    so every run scores its own transform of the whole test set in the original order (the labels
    stay as they were).
    """
    x_test = np.asarray(x_test)
    t = len(x_test)
    norms = [data.normal_pool[r, :data.n_valid[r]] for r in range(data.n_runs)]
    anoms = [data.anomaly_pool[r, :data.m_valid[r]] for r in range(data.n_runs)]
    group: dict[bytes, list[int]] = {}
    for r, norm in enumerate(norms):
        group.setdefault(np.sort(norm).tobytes(), []).append(r)
    blocks, tests = [], []
    pools: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # run -> (normal pool, anomaly pool) in the new x
    test_idx = np.zeros((data.n_runs, t), np.int32)
    off = 0
    for g, runs in enumerate(group.values()):
        # Only the rows the group trains on are copied, not the whole training set: with one class in
        # ten normal and 10% of the rest as anomalies, that is about a fifth of it per class and seed.
        rows = np.unique(np.concatenate([norms[runs[0]], *(anoms[r] for r in runs)]))
        if off + len(rows) >= 2 ** 31 or (g + 1) * t >= 2 ** 31:
            raise ValueError("the per-run copies overflow int32 indices; run fewer seeds or classes at once")
        tf = fit_transform(name, data.x[norms[runs[0]]])  # the training normals, nothing else
        blocks.append(tf.transform(data.x[rows]))
        tests.append(tf.transform(x_test))
        for r in runs:
            pools[r] = off + np.searchsorted(rows, norms[r]), off + np.searchsorted(rows, anoms[r])
            test_idx[r] = g * t + np.arange(t)
        off += len(rows)
    n_pool, n_valid = _pad([pools[r][0] for r in range(data.n_runs)])
    a_pool, m_valid = _pad([pools[r][1] for r in range(data.n_runs)])
    return (RunData(np.concatenate(blocks), n_pool, n_valid, a_pool, m_valid), np.concatenate(tests), test_idx,
            np.full(data.n_runs, t, np.int32))
