"""Ablations of the encoder and preprocessing options: real AUC deltas instead of assumed ones.

Every option is trained on and off for every (normal class, seed) run, by IMD-AD and Deep SVDD alike. An
option that changes the architecture (or the data each run sees) is its own compiled group: all of its
class x seed runs train as one run-axis program, as the baseline's do. The delta of a run is its AUC with the
option minus the same run's (same class, seed, labelled anomalies, batches) without it; a seed's delta is the
mean over classes, and the table gives the mean and the standard deviation of that over seeds.

The course report (V. Shah, A. Murphy, J. Kong, "Deep One-Class Classification", COSI 126A final project report,
2025, section III) only *simulated* these options with fixed bonuses; ``SIMULATED_BONUS`` holds its numbers so the table can set them side by side.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from imdad_jax.config import ExperimentConfig
from imdad_jax.data import ImageDataset
from imdad_jax.experiment import run_experiment

# name -> config fields the option sets (the baseline is the config as given: every option off).
OPTIONS: dict[str, dict[str, Any]] = {
    "batch_norm": {"batch_norm": True},
    "dropout": {"dropout": 0.1},
    "layer_norm": {"layer_norm": True},
    "residual": {"residual": True},
    "se_attention": {"se_attention": True},
    "projection": {"projection": 32},
    "standardize": {"preprocess": "standardize"},
    "gcn_minmax": {"preprocess": "gcn_minmax"},
    "zca": {"preprocess": "zca"},
}
# The course report's simulated AUC bonuses (section III.I-III.II); None where it names the option without one.
SIMULATED_BONUS: dict[str, float | None] = {
    "batch_norm": 0.005, "dropout": None, "layer_norm": 0.004, "residual": 0.007, "se_attention": 0.008,
    "projection": 0.003, "standardize": None, "gcn_minmax": None, "zca": None,
}
BASELINE = "baseline"


def subsample(ds: ImageDataset, train_per_class: int | None = None, test_per_class: int | None = None,
              seed: int = 0) -> ImageDataset:
    """A class-stratified random subset (the same for every option, so deltas compare like with like)."""
    rng = np.random.default_rng(seed)

    def pick(y: np.ndarray, per: int | None) -> np.ndarray:
        if per is None:
            return np.arange(len(y))
        if per < 1:
            raise ValueError(f"a per-class subsample needs at least 1 image per class, got {per}")
        return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == k))[:per] for k in np.unique(y)]))

    tr, te = pick(ds.y_train, train_per_class), pick(ds.y_test, test_per_class)
    return ds._replace(x_train=ds.x_train[tr], y_train=ds.y_train[tr], x_test=ds.x_test[te], y_test=ds.y_test[te],
                       source=f"{ds.source} (subsample: {train_per_class or 'all'} train / "
                              f"{test_per_class or 'all'} test per class, seed {seed})")


def option_config(base: ExperimentConfig, method: str, option: str) -> ExperimentConfig:
    """``base`` for ``method`` with ``option`` on (``BASELINE``: as given)."""
    if option != BASELINE and option not in OPTIONS:
        raise ValueError(f"unknown ablation option {option!r}; choose from {sorted(OPTIONS)}")
    return dataclasses.replace(base, method=method, **({} if option == BASELINE else OPTIONS[option])).validate()


def run_ablation(base: ExperimentConfig, dataset: ImageDataset, options: Sequence[str], methods: Sequence[str],
                 done: dict[str, dict[str, Any]] | None = None,
                 on_group: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Train every (method, option) group (and each method's baseline); returns ``{"method/option": group}``.

    A group is ``{"config": cfg.to_dict(), "runs": per-run records, "timing": {...}}``. ``done`` holds groups
    from an earlier, interrupted call: one whose config is the same is kept, not retrained. ``on_group(key,
    group)`` is called after each group (to save progress: an interruption loses only the group in flight).
    """
    groups = dict(done or {})
    for method in methods:
        for option in (BASELINE, *options):
            cfg = option_config(base, method, option)
            key = f"{method}/{option}"
            if key in groups and same_config(groups[key]["config"], cfg.to_dict()):
                continue
            t0 = time.perf_counter()
            out = run_experiment(cfg, dataset)
            groups[key] = {"config": cfg.to_dict(), "runs": out["runs"],
                           "timing": {**out["timing"], "group_s": time.perf_counter() - t0}}
            if on_group:
                on_group(key, groups[key])
    return groups


# Fields that change how a group is computed but not what (float rounding only; each is tested to give the same
# numbers): a group trained under another value of these is kept on resume, not retrained.
NUMERICS_ONLY = ("conv_impl", "strategy", "epoch_mode", "chunk_runs", "unroll", "max_runs")


def same_config(stored: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a group saved with config ``stored`` is the group ``current`` asks for.

    Fields in ``NUMERICS_ONLY`` are ignored; so are fields ``stored`` lacks (a later version's additions, whose
    defaults keep the earlier behaviour), so a sweep resumes across versions; every field it has must match.
    """
    a, b = _plain(stored), _plain(current)
    return all(k in b and a[k] == b[k] for k in a)


def _plain(tree: Any, top: bool = True) -> Any:
    # a config read back from JSON has lists where the dataclass has tuples
    if isinstance(tree, dict):
        return {k: _plain(v, False) for k, v in tree.items() if not (top and k in NUMERICS_ONLY)}
    if isinstance(tree, (list, tuple)):
        return [_plain(v, False) for v in tree]
    return tree


def _auc_by_run(runs: list[dict[str, Any]]) -> dict[tuple[int, int], float]:
    return {(r["normal_class"], r["seed"]): float(r["auc"]) for r in runs}


def deltas(groups: dict[str, dict[str, Any]], method: str, option: str) -> dict[str, Any]:
    """The option's AUC deltas against the method's baseline: per run, per seed (mean over classes), summary."""
    base, opt = _auc_by_run(groups[f"{method}/{BASELINE}"]["runs"]), _auc_by_run(groups[f"{method}/{option}"]["runs"])
    if set(base) != set(opt):
        raise ValueError(f"{method}/{option} and its baseline trained different runs: {sorted(set(base) ^ set(opt))}")
    keys = sorted(base)
    d = {k: opt[k] - base[k] for k in keys}
    seeds = sorted({s for _, s in keys})
    per_seed = np.array([np.mean([d[k] for k in keys if k[1] == s]) for s in seeds])
    classes = sorted({c for c, _ in keys})
    per_class = {c: float(np.mean([d[k] for k in keys if k[0] == c])) for c in classes}
    finite = np.isfinite(per_seed)
    return {"mean": float(per_seed.mean()), "std": float(per_seed.std(ddof=1)) if len(seeds) > 1 else float("nan"),
            "per_seed": per_seed.tolist(), "per_class": per_class, "seeds": seeds, "all_finite": bool(finite.all()),
            "base_auc": float(np.mean(list(base.values()))), "option_auc": float(np.mean(list(opt.values()))),
            "classes_better": int(sum(v > 0 for v in per_class.values())), "n_classes": len(classes)}


def delta_rows(groups: dict[str, dict[str, Any]], options: Sequence[str], methods: Sequence[str]
               ) -> list[dict[str, Any]]:
    """One row per option: its delta summary for each method that has both groups."""
    rows = []
    for option in options:
        row = {"option": option, "simulated_bonus": SIMULATED_BONUS.get(option)}
        for method in methods:
            if f"{method}/{option}" in groups and f"{method}/{BASELINE}" in groups:
                row[method] = deltas(groups, method, option)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], methods: Sequence[str], dataset: str) -> str:
    """Option | per method: AUC delta x100 (mean +- std over seeds, classes improved) | simulated bonus x100."""
    head = ["option", *(f"{m} ΔAUC ×100 (± std over seeds; classes up)" for m in methods),
            "course report's simulated bonus ×100"]
    lines = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"`{row['option']}`"]
        for m in methods:
            d = row.get(m)
            cells.append("not run" if d is None else
                         f"{100 * d['mean']:+.2f} ± {100 * d['std']:.2f} ({d['classes_better']}/{d['n_classes']})")
        sim = row["simulated_bonus"]
        cells.append("none given" if sim is None else f"{100 * sim:+.1f}")
        lines.append(f"| {' | '.join(cells)} |")
    base = [f"{m} {100 * next(r[m]['base_auc'] for r in rows if m in r):.2f}" for m in methods
            if any(m in r for r in rows)]
    lines.append("")
    lines.append(f"{dataset}: baseline mean AUC ×100 (every option off): " + ", ".join(base))
    return "\n".join(lines)
