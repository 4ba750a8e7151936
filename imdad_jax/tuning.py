"""Hyperparameters chosen on a validation split of each run's training data, never on its test set.

Every run (class x fold x seed) holds out a stratified part of its own training normals and of its
labelled anomalies. The grid's points become extra runs on the run axis (run x point), trained as
one program on the rest; each run keeps the point with the best validation AUC; the caller then
retrains each run on all of its training data with its chosen values. Only per-run numbers can
be tuned this way (the optimizer's ``lr`` and ``weight_decay`` and the objective's
``HYPERPARAMS``): anything that changes the compiled program (architecture, batch size, epochs)
is a separate experiment.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from imdad_jax.data.runs import RunData
from imdad_jax.evaluate.metrics import auc_per_run

Grid = tuple[tuple[str, tuple[float, ...]], ...]


def parse_grid(text: str) -> Grid:
    """``"lr=1e-3,1e-4;nu1=0.05,0.1"`` -> ``(("lr", (0.001, 0.0001)), ("nu1", (0.05, 0.1)))``."""
    grid = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, sep, values = part.partition("=")
        name = name.strip()
        if not sep or not name or not values.strip():
            raise ValueError(f"grid entry {part!r} is not NAME=V1,V2,...; e.g. --tune='lr=1e-3,1e-4;nu1=0.05,0.1'")
        try:
            vals = tuple(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"grid entry {part!r} holds a value that is not a number") from None
        if len(set(vals)) != len(vals):
            raise ValueError(f"grid entry {part!r} repeats a value")
        grid.append((name, vals))
    names = [n for n, _ in grid]
    if len(set(names)) != len(names):
        raise ValueError(f"grid names a hyperparameter twice: {names}")
    return tuple(grid)


def grid_points(grid: Grid) -> list[dict[str, float]]:
    """Every combination, in row-major order of the grid as written (the first point wins ties)."""
    if not grid:
        return [{}]
    names = [n for n, _ in grid]
    return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in grid))]


def check_grid(grid: Grid, tunable: Sequence[str]) -> None:
    """ValueError naming the hyperparameters the grid may not vary."""
    bad = [n for n, _ in grid if n not in tunable]
    if bad:
        raise ValueError(f"cannot tune {bad} per run; tunable for this method: {sorted(tunable)} "
                         "(architecture, batch size and epochs change the program: run them as separate experiments)")


@dataclass
class Holdout:
    """Each run's training pools minus its validation rows, and the validation rows with their labels."""

    train: RunData
    val_idx: np.ndarray  # (R, V) int32 rows of data.x, padded with 0
    val_valid: np.ndarray  # (R,)
    val_is_anomaly: list[np.ndarray]  # per run, (val_valid[r],) bool


def holdout(data: RunData, keys: np.ndarray, fraction: float) -> Holdout:
    """Hold out ``fraction`` of each run's training normals and labelled anomalies (at least one of each).

    The draw is seeded by the run's own key, so it does not depend on which runs share the program.
    Each run needs at least two labelled anomalies (one to validate on, one to train with).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must lie in (0, 1), got {fraction}; e.g. --val_fraction=0.25")
    if int(data.m_valid.min()) < 2 or int(data.n_valid.min()) < 2:
        bad = np.flatnonzero((data.m_valid < 2) | (data.n_valid < 2)).tolist()
        raise ValueError(f"runs {bad} have fewer than 2 labelled anomalies or normals, too few to hold out a "
                         "validation split; raise --anomaly_fraction or tune without a validation split")
    n_pool, a_pool, vals, labels = [], [], [], []
    for r in range(data.n_runs):
        rng = np.random.default_rng(np.asarray(keys[r], np.uint32).tolist() + [0x7a1])
        norm = data.normal_pool[r, :data.n_valid[r]]
        anom = data.anomaly_pool[r, :data.m_valid[r]]
        vn = min(max(int(round(fraction * len(norm))), 1), len(norm) - 1)
        va = min(max(int(round(fraction * len(anom))), 1), len(anom) - 1)
        pn, pa = rng.permutation(len(norm)), rng.permutation(len(anom))
        n_pool.append(np.sort(norm[pn[vn:]]))
        a_pool.append(np.sort(anom[pa[va:]]))
        vals.append(np.concatenate([norm[pn[:vn]], anom[pa[:va]]]))
        labels.append(np.r_[np.zeros(vn, bool), np.ones(va, bool)])
    pad = lambda rows: (np.stack([np.pad(a, (0, max(map(len, rows)) - len(a))) for a in rows]).astype(np.int32),  # noqa: E731
                        np.array([len(a) for a in rows]))
    (np_, nv), (ap, mv), (vi, vv) = pad(n_pool), pad(a_pool), pad(vals)
    return Holdout(RunData(data.x, np_, nv, ap, mv), vi, vv, labels)


def tile_runs(data: RunData, keys: np.ndarray, n_points: int) -> tuple[RunData, np.ndarray]:
    """R runs -> R * G runs, point-major within each run (run r, point g at r * G + g), same key per run."""
    rep = lambda a: np.repeat(a, n_points, axis=0)  # noqa: E731
    return RunData(data.x, rep(data.normal_pool), rep(data.n_valid), rep(data.anomaly_pool), rep(data.m_valid)), \
        rep(keys)


def grid_hyperparams(base: dict[str, np.ndarray], points: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """Per-run arrays (R * G,) from the base (R,) arrays with each point's values written in."""
    g = len(points)
    out = {k: np.repeat(np.asarray(v, np.float32), g) for k, v in base.items()}
    for j, pt in enumerate(points):
        for name, value in pt.items():
            out[name][j::g] = value
    return out


def validation_auc(scores: np.ndarray, val_valid: np.ndarray, labels: list[np.ndarray]) -> np.ndarray:
    """ROC AUC per row of ``scores`` (R, V) over its first ``val_valid[r]`` entries; NaN where a score is not
    finite."""
    return auc_per_run(scores, [np.asarray(lab)[:int(v)] for lab, v in zip(labels, val_valid)])


def choose(val_auc: np.ndarray, n_points: int) -> np.ndarray:
    """Index of the best point per run from (R * G,) validation AUCs; a diverged point (NaN) never wins."""
    table = np.where(np.isfinite(val_auc), val_auc, -np.inf).reshape(-1, n_points)
    return np.argmax(table, axis=1)  # first maximum: the grid order breaks ties


__all__ = ["Grid", "parse_grid", "grid_points", "check_grid", "Holdout", "holdout", "tile_runs", "grid_hyperparams",
           "validation_auc", "choose"]
