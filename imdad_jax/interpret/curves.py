"""Per-epoch train and test metrics of every run from the engine's snapshots (paper Fig. 4).

The step itself only accumulates batch means on device (``FitResult.history``: loss, R^2, rho^2,
the batch nu-fractions); whole-set AUC and accuracy need a forward pass over the data, so they are
computed here, after training, from the ``(params, obj_state)`` copies that ``fit`` kept at the
requested epochs (``snapshot_epochs``). Training never waits for them.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np
from sklearn.metrics import accuracy_score

from imdad_jax.data.runs import RunData
from imdad_jax.evaluate.metrics import auc_per_run
from imdad_jax.train.apply import apply_runs


def training_rows(data: RunData) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Each run's training normals then labelled anomalies: ``(idx (R, P) padded, valid (R,), labels)``."""
    rows, labels = [], []
    for r in range(data.n_runs):
        n = data.normal_pool[r, :data.n_valid[r]]
        a = data.anomaly_pool[r, :data.m_valid[r]]
        rows.append(np.concatenate([n, a]))
        labels.append(np.r_[np.zeros(len(n), bool), np.ones(len(a), bool)])
    width = max(len(v) for v in rows)
    idx = np.stack([np.pad(v, (0, width - len(v))) for v in rows]).astype(np.int32)
    return idx, np.array([len(v) for v in rows]), labels


def _metrics(scores: np.ndarray, valid: np.ndarray, labels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    auc, acc = auc_per_run(scores, labels), np.full(len(labels), np.nan)
    for r, lab in enumerate(labels):
        s = scores[r, :valid[r]]
        if np.all(np.isfinite(s)):
            acc[r] = accuracy_score(lab, s > 0)  # the model's own boundary: score > 0 is anomalous
    return auc, acc


def snapshot_metrics(score_fn: Callable[[Any, Any], Any], snapshots: Mapping[int, Any], *, data: RunData,
                     x_test: np.ndarray, test_idx: np.ndarray | None, test_labels: list[np.ndarray],
                     strategy: str = "vmap", loss_fn: Callable[[int, Any, Any, Any], Any] | None = None,
                     max_loss_rows: int = 2048) -> dict[str, np.ndarray]:
    """AUC and boundary accuracy (and the objective's loss) on the training and test rows at every snapshot epoch.

    ``score_fn((params, obj_state), x) -> (n,)`` for one run (higher = more anomalous, > 0 outside
    the model's boundary). ``test_idx`` (R, T) selects each run's test rows in ``x_test`` (None: every
    run scores all of it). ``loss_fn(r, (params, obj_state), x, y) -> scalar`` (run r's objective on
    rows x with labels y, 1 = anomaly) adds ``train_loss`` / ``test_loss`` on at most ``max_loss_rows``
    rows per split (a seeded subsample: the full loss of a large test set costs more than the figure needs).
    Returns ``{"epoch": (E,), "train_auc", "train_acc", "test_auc", "test_acc"[, "*_loss"]: (E, R)}``.
    """
    if not snapshots:
        raise ValueError("no snapshots: train with snapshot_epochs=(...) to get per-epoch metrics")
    train_idx, train_valid, train_labels = training_rows(data)
    test_valid = np.array([len(lab) for lab in test_labels])
    out: dict[str, list] = {"train_auc": [], "train_acc": [], "test_auc": [], "test_acc": []}
    if loss_fn is not None:
        out.update(train_loss=[], test_loss=[])
        rng = np.random.default_rng(0)
        pick = lambda n: np.sort(rng.permutation(n)[:max_loss_rows])  # noqa: E731
        rows = {"train": [(data.x[train_idx[r, :train_valid[r]]], train_labels[r]) for r in range(data.n_runs)],
                "test": [((x_test if test_idx is None else x_test[test_idx[r, :test_valid[r]]]), test_labels[r])
                         for r in range(data.n_runs)]}
        rows = {k: [(x[i], y[i]) for x, y in v for i in [pick(len(y))]] for k, v in rows.items()}
    epochs = sorted(snapshots)
    for e in epochs:
        snap = snapshots[e]
        s_train = apply_runs(score_fn, snap, data.x, train_idx, strategy=strategy)
        s_test = apply_runs(score_fn, snap, x_test, test_idx, strategy=strategy)
        for split, s, valid, lab in (("train", s_train, train_valid, train_labels),
                                     ("test", s_test, test_valid, test_labels)):
            auc, acc = _metrics(s, valid, lab)
            out[f"{split}_auc"].append(auc)
            out[f"{split}_acc"].append(acc)
            if loss_fn is not None:
                run = lambda tree, r: jax.tree.map(lambda a: a[r], tree)  # noqa: E731
                out[f"{split}_loss"].append(np.array([float(loss_fn(r, run(snap, r), x, y))
                                                      for r, (x, y) in enumerate(rows[split])]))
    return {"epoch": np.array(epochs), **{k: np.stack(v) for k, v in out.items()}}


__all__ = ["training_rows", "snapshot_metrics"]
