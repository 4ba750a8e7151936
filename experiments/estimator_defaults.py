#!/usr/bin/env python
"""Defaults for ``IMDAD()`` on users' own tables (50 to 50,000 rows, 5 to 100 features), chosen on validation AUC.

    JAX_PLATFORMS=cpu taskset -c 1 python experiments/estimator_defaults.py
    # the first sweep's best sat at head_lr 0.01, its grid's edge: the follow-up below it
    JAX_PLATFORMS=cpu taskset -c 1 python experiments/estimator_defaults.py --name=estimator_defaults_headlr \
        --schedules=e100,steps5k,steps10k --widths=fc3,scaled_up --lr=0.0003,0.001 --head_lr=0.001,0.003,0.01,0.03,0.1
    # its report with more candidates per table (no training)
    python experiments/estimator_defaults.py --from_json=results/estimator_defaults/estimator_defaults_headlr.json.gz \
        --show='steps10k/fc3/0.001/0.003;steps5k/scaled_up/0.001/0.003;steps10k/scaled_up/0.001/0.1'

A candidate is a schedule (epochs and batch size, fixed or a rule of the rows passed to ``fit``), encoder widths
(fixed FC3 or a rule of the feature count), ``lr`` and ``head_lr``. Every candidate trains on every table x seed
through the estimator's public API (``IMDAD(...).fit_many`` over the lr x head_lr grid, one program per
schedule and widths), so what is measured is what a user would get.

Tables: the paper's real sets with one normal-vs-anomaly definition each (the largest class is normal, every other
class anomalous, as in the paper's one-vs-rest protocol for that class), the same sets subsampled to 80-150 rows,
and seeded synthetic tables (``synthetic_table``) of 300 to 50,000 rows and 8, 32 or 100 features.

Protocol per table and seed (the paper's semi-supervised, clean setting): a stratified 70/30 train/test split;
the training part split again 75/25 into fit/validation (stratified on the true labels); of the fit part's
anomalies a seeded 10% (at least one) are labelled (y=1) and the rest dropped; the validation and test rows keep
all of their true labels. Candidates are ranked on the validation AUC averaged over tables; the test AUC only
confirms. ``DeepDetector(method="deep_sad")`` with its defaults runs on the same splits as the bar.

Cut for time (one CPU core): 400 epochs (about 200k steps per seed on the 50,000-row table alone); the step
rules stand in for long schedules. Writes ``OUT/NAME.md`` and ``OUT/NAME.json.gz`` (every run's AUCs, compact
gzipped JSON: the per-run rows are too many for plain JSON in git) (default ``estimator_defaults``).
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DEVICE = "CPU (1 core of a 2-core Intel Xeon)"
BATCH = 50  # the estimator's batch for tables
TODAY = ("e100", "fc3", 1e-3, 0.1)  # what IMDAD() trains today: 100 epochs, batch 50, FC3 (64, 32, 16)


@dataclass(frozen=True)
class Table:
    """A table: a real set (``source`` in bc/card/on, optionally subsampled to ``rows``) or a synthetic one."""

    name: str
    source: str  # "bc", "card", "on" or "synthetic"
    rows: int | None = None  # subsample (real) or size (synthetic)
    features: int | None = None  # synthetic only
    rate: float = 0.07  # synthetic only: the share of anomalies


TABLES: tuple[Table, ...] = (
    Table("bc", "bc"), Table("on", "on"), Table("card", "card"),
    Table("bc_s80", "bc", 80), Table("on_s150", "on", 150), Table("card_s150", "card", 150),
    # more features than rows passed to fit; 10% anomalies so the validation split holds a few
    Table("syn_d100_n300", "synthetic", 300, 100, 0.1),
    Table("syn_d8_n1000", "synthetic", 1000, 8), Table("syn_d32_n1000", "synthetic", 1000, 32),
    Table("syn_d100_n1000", "synthetic", 1000, 100),
    Table("syn_d32_n5000", "synthetic", 5000, 32), Table("syn_d100_n5000", "synthetic", 5000, 100),
    Table("syn_d8_n20000", "synthetic", 20000, 8), Table("syn_d32_n50000", "synthetic", 50000, 32),
)


def _steps_rule(target: int, lo: int = 10, hi: int = 2000) -> Callable[[int, int], tuple[int, int]]:
    # A fixed epoch count gives a 50-row table a few hundred steps and a 50,000-row one tens of thousands; a
    # target in optimizer steps keeps the training length comparable across sizes (at least lo passes).
    def rule(n: int, d: int) -> tuple[int, int]:
        return int(np.clip(round(target / math.ceil(n / BATCH)), lo, hi)), BATCH
    return rule


def _big_batch(n: int, d: int) -> tuple[int, int]:
    # 100 epochs, but batches of ~1% of the rows once that exceeds 50: the step count stops growing with n
    return 100, max(BATCH, n // 100)


# Schedules: (rows passed to fit, features) -> (epochs, batch_size)
SCHEDULES: dict[str, Callable[[int, int], tuple[int, int]]] = {
    "e50": lambda n, d: (50, BATCH), "e100": lambda n, d: (100, BATCH), "e200": lambda n, d: (200, BATCH),
    "steps2k": _steps_rule(2000), "steps5k": _steps_rule(5000), "steps10k": _steps_rule(10000),
    "e100_bigbatch": _big_batch,
}
# Encoder widths: features -> dense widths. "scaled_up" only ever widens FC3 (for d > 32 it is "scaled", below
# it is "fc3"), so it costs no training of its own.
WIDTHS: dict[str, Callable[[int], tuple[int, ...]]] = {
    "fc3": lambda d: (64, 32, 16),
    "scaled": lambda d: (max(32, 2 * d), max(16, d), max(8, d // 2)),
    "scaled_up": lambda d: (max(64, 2 * d), max(32, d), max(16, d // 2)),
}
# 1e-4 and 0.01 extend the grid below its first corner, where a two-seed trial on two tables put the best
GRID = {"lr": [1e-4, 3e-4, 1e-3, 3e-3], "head_lr": [0.01, 0.03, 0.1, 0.3]}


def synthetic_table(n: int, d: int, seed: int = 0, rate: float = 0.07) -> tuple[np.ndarray, np.ndarray]:
    """A seeded table of ``n`` rows, ``d`` raw features, ``rate`` anomalies (y=1).

    Normals: a 3-component Gaussian mixture, each component on its own low-rank (d/4 factors) correlated subspace
    plus small per-feature noise. Anomalies, three kinds: a shifted, tighter copy of one component (40%), points
    uniform in the normals' bounding box (20%), and normal rows with d/8 features nudged by 1.5-3 units (40%),
    which keep every marginal plausible and break only the joint structure. Features then get scales spanning three
    decades and offsets, as raw user columns do.
    """
    rng = np.random.default_rng([seed, n, d])
    k, r = 3, max(2, d // 4)
    means = rng.normal(0, 1.5, size=(k, d))
    facs = np.stack([rng.normal(size=(d, r)) / np.sqrt(r) for _ in range(k)])
    noise = rng.uniform(0.1, 0.4, size=(k, d))
    weights = rng.dirichlet(np.full(k, 5.0))

    def normals(m: int) -> np.ndarray:
        c = rng.choice(k, size=m, p=weights)
        return (means[c] + np.einsum("mdr,mr->md", facs[c], rng.normal(size=(m, r)))
                + rng.normal(size=(m, d)) * noise[c])

    n_a = int(round(rate * n))
    xn = normals(n - n_a)
    kinds = rng.multinomial(n_a, [0.4, 0.2, 0.4])
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    base = normals(kinds[0])
    shifted = means[rng.integers(k)] + 0.5 * (base - base.mean(0)) + 0.3 * np.sqrt(d) * u
    scattered = rng.uniform(xn.min(0), xn.max(0), size=(kinds[1], d))
    nudged = normals(kinds[2])
    for row in nudged:
        j = rng.choice(d, size=max(1, d // 8), replace=False)
        row[j] += rng.choice([-1.0, 1.0], size=len(j)) * rng.uniform(1.5, 3.0, size=len(j))
    x = np.vstack([xn, shifted, scattered, nudged]) * 10 ** rng.uniform(-1, 2, size=d) + rng.normal(0, 5, size=d)
    y = np.r_[np.zeros(n - n_a, np.int64), np.ones(n_a, np.int64)]
    order = rng.permutation(n)
    return x[order].astype(np.float32), y[order]


def load_table(t: Table) -> tuple[np.ndarray, np.ndarray]:
    """Raw features and true labels (1 = anomaly) of a table; subsamples are fixed (seed 0), not per seed."""
    from sklearn.model_selection import train_test_split

    from imdad_jax.data import load_dataset

    if t.source == "synthetic":
        return synthetic_table(int(t.rows), int(t.features), rate=t.rate)
    data = load_dataset(t.source)
    normal = int(np.bincount(data.y).argmax())  # bc: benign, card: B (REM sleep), on: NB-No Block
    x, y = data.x, (data.y != normal).astype(np.int64)
    if t.rows is not None:
        x, _, y, _ = train_test_split(x, y, train_size=t.rows, stratify=y, random_state=0)
    return x, y


def split_rows(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row indices (fit, validation, test, labelled anomalies among fit): 70/30, then 75/25, then a seeded 10%
    (at least one) of the fit anomalies labelled."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.3, stratify=y, random_state=seed)
    fit, val = train_test_split(tr, test_size=0.25, stratify=y[tr], random_state=seed)
    rng = np.random.default_rng([seed, 0x1ab])
    anom = fit[y[fit] == 1]
    labelled = rng.choice(anom, size=max(1, int(round(0.1 * len(anom)))), replace=False)
    return fit, val, te, labelled


def split(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Fit rows with their training labels, validation and test rows with their true labels."""
    fit, val, te, labelled = split_rows(y, seed)
    keep = np.sort(np.concatenate([fit[y[fit] == 0], labelled]))  # the clean setting: unlabelled anomalies dropped
    return {"x_fit": x[keep], "y_fit": y[keep], "x_val": x[val], "y_val": y[val], "x_test": x[te], "y_test": y[te]}


def auc(y: np.ndarray, s: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    # a diverged run's NaN scores rank nothing: chance, not an exception
    return float(roc_auc_score(y, s)) if np.isfinite(s).all() else 0.5


def run(tables: list[Table], schedules: list[str], widths: list[str], seeds: tuple[int, ...],
        grid: dict[str, list[float]], log: Callable[[str], None]) -> tuple[list[dict], list[dict], list[dict]]:
    """Per (table, seed, candidate) AUCs, the Deep SAD bar's, and one timing row per estimator call."""
    from imdad_jax.estimator import IMDAD, DeepDetector

    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    rows, bar, timing = [], [], []
    for t in tables:
        x, y = load_table(t)
        for seed in seeds:
            s = split(x, y, seed)
            n, d = s["x_fit"].shape
            # one fit_many per distinct (epochs, batch, widths): rules that land on the same values share it
            jobs: dict[tuple, list[tuple[str, str]]] = {}
            for sch, w in itertools.product(schedules, widths):
                epochs, batch = SCHEDULES[sch](n, d)
                jobs.setdefault((epochs, batch, WIDTHS[w](d)), []).append((sch, w))
            for (epochs, batch, dense), cands in jobs.items():
                t0 = time.perf_counter()
                dets = IMDAD(epochs=epochs, batch_size=batch, dense_features=dense, random_state=seed).fit_many(
                    s["x_fit"], s["y_fit"], grid=grid, seeds=(seed,))
                scored = [(auc(s["y_val"], m.decision_function(s["x_val"])),
                           auc(s["y_test"], m.decision_function(s["x_test"])), m.diverged_) for m in dets]
                sec = time.perf_counter() - t0
                steps = epochs * math.ceil(n / batch)
                timing.append({"table": t.name, "seed": seed, "epochs": epochs, "batch": batch,
                               "widths": list(dense), "steps": steps, "runs": len(dets), "seconds": sec})
                for sch, w in cands:
                    for pt, (va, te, div) in zip(points, scored):
                        rows.append({"table": t.name, "seed": seed, "schedule": sch, "widths": w, **pt,
                                     "epochs": epochs, "batch": batch, "steps": steps, "val_auc": va,
                                     "test_auc": te, "diverged": bool(div)})
                log(f"{t.name} seed {seed} n_fit {n} d {d}: epochs {epochs} batch {batch} widths {dense} "
                    f"({steps} steps x {len(dets)} runs) {sec:.1f}s; best val "
                    f"{max(v for v, _, _ in scored):.3f}")
            t0 = time.perf_counter()
            sad = DeepDetector(method="deep_sad", random_state=seed).fit(s["x_fit"], s["y_fit"])
            bar.append({"table": t.name, "seed": seed, "val_auc": auc(s["y_val"], sad.decision_function(s["x_val"])),
                        "test_auc": auc(s["y_test"], sad.decision_function(s["x_test"])),
                        "seconds": time.perf_counter() - t0})
            timing.append({"table": t.name, "seed": seed, "method": "deep_sad", "seconds": bar[-1]["seconds"]})
    return rows, bar, timing


def candidate_key(r: dict) -> tuple:
    return r["schedule"], r["widths"], r["lr"], r["head_lr"]


def summarise(rows: list[dict], bar: list[dict], tables: list[str]) -> dict:
    """Per candidate: per table mean and sd over seeds, the mean over tables, the average rank across tables."""
    from scipy.stats import rankdata

    per: dict[tuple, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        cell = per.setdefault(candidate_key(r), {}).setdefault(r["table"], {"val": [], "test": [], "div": []})
        cell["val"].append(r["val_auc"])
        cell["test"].append(r["test_auc"])
        cell["div"].append(r["diverged"])
    cands = [c for c in per if all(t in per[c] for t in tables)]
    val = np.array([[np.mean(per[c][t]["val"]) for t in tables] for c in cands])
    test = np.array([[np.mean(per[c][t]["test"]) for t in tables] for c in cands])
    ranks = np.stack([rankdata(-val[:, j]) for j in range(len(tables))], axis=1)  # 1 = best on that table
    out = []
    for i, c in enumerate(cands):
        out.append({"schedule": c[0], "widths": c[1], "lr": c[2], "head_lr": c[3],
                    "val_mean": float(val[i].mean()), "test_mean": float(test[i].mean()),
                    "avg_rank": float(ranks[i].mean()),
                    "diverged_runs": int(sum(sum(per[c][t]["div"]) for t in tables)),
                    "per_table": {t: {"val": float(np.mean(per[c][t]["val"])),
                                      "val_sd": float(np.std(per[c][t]["val"])),
                                      "test": float(np.mean(per[c][t]["test"])),
                                      "test_sd": float(np.std(per[c][t]["test"]))} for t in tables}})
    out.sort(key=lambda o: -o["val_mean"])
    sad = {t: {"val": float(np.mean([b["val_auc"] for b in bar if b["table"] == t])),
               "val_sd": float(np.std([b["val_auc"] for b in bar if b["table"] == t])),
               "test": float(np.mean([b["test_auc"] for b in bar if b["table"] == t])),
               "test_sd": float(np.std([b["test_auc"] for b in bar if b["table"] == t]))} for t in tables}
    return {"candidates": out,
            "deep_sad": {"per_table": sad, "val_mean": float(np.mean([v["val"] for v in sad.values()])),
                         "test_mean": float(np.mean([v["test"] for v in sad.values()]))}}


def name_of(c: dict) -> str:
    return f"{c['schedule']} / {c['widths']} / lr {c['lr']:g} / head_lr {c['head_lr']:g}"


def markdown(summary: dict, tables: list[str], timing: list[dict], prov: dict, wall: float, args: dict,
             schedule_desc: dict[str, dict[str, str]], extra: list[tuple] | None = None) -> str:
    cands = summary["candidates"]
    by_key = {(c["schedule"], c["widths"], c["lr"], c["head_lr"]): c for c in cands}
    today = by_key.get(TODAY)
    sad = summary["deep_sad"]
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    md = ["# IMDAD() defaults for users' tables", "",
          f"Validation / test ROC-AUC %, mean over seeds {args['seeds']} then over {len(tables)} tables; average rank "
          "over tables by validation AUC (1 = best of all candidates). Chosen by validation; test only confirms. "
          "Protocol: stratified 70/30 train/test, training split 75/25 fit/validation, 10% of the fit anomalies "
          "labelled and the rest dropped (clean setting); validation and test rows keep their true labels.", "",
          "## Top 15 candidates by mean validation AUC", "",
          "Rules that train the same runs on every table (e.g. scaled_up = fc3 when no table has d > 32) share a "
          "row.", "",
          "| candidate | mean val | mean test | avg rank | diverged runs |", "|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for c in cands:  # identical per-table numbers = the same runs under two names
        groups.setdefault(tuple((c["per_table"][t]["val"], c["per_table"][t]["test"]) for t in tables), []).append(c)
    for same in list(groups.values())[:15]:
        c = same[0]
        md.append(f"| {' = '.join(name_of(o) for o in same)} | {pct(c['val_mean'])} | {pct(c['test_mean'])} | "
                  f"{c['avg_rank']:.1f} | {c['diverged_runs']} |")
    if today:
        md.append(f"| **today: {name_of(today)}** | {pct(today['val_mean'])} | {pct(today['test_mean'])} | "
                  f"{today['avg_rank']:.1f} | {today['diverged_runs']} |")
    md.append(f"| deep_sad (its defaults) | {pct(sad['val_mean'])} | {pct(sad['test_mean'])} | | |")

    def marginal(title: str, group: Callable[[dict], str], fix: Callable[[dict], bool]) -> None:
        md.extend(["", f"## {title}", "", "| | mean val | mean test | avg rank |", "|---|---|---|---|"])
        for c in cands:
            if fix(c):
                md.append(f"| {group(c)} | {pct(c['val_mean'])} | {pct(c['test_mean'])} | {c['avg_rank']:.1f} |")

    best = cands[0]
    marginal("Schedules at FC3, lr 1e-3, head_lr 0.1 (today's other settings)", lambda c: c["schedule"],
             lambda c: c["widths"] == "fc3" and c["lr"] == 1e-3 and c["head_lr"] == 0.1)
    marginal(f"Widths at {best['schedule']}, lr {best['lr']:g}, head_lr {best['head_lr']:g} (the best's others)",
             lambda c: c["widths"], lambda c: (c["schedule"], c["lr"], c["head_lr"]) ==
             (best["schedule"], best["lr"], best["head_lr"]))
    marginal(f"lr x head_lr at {best['schedule']} / {best['widths']}",
             lambda c: f"lr {c['lr']:g}, head_lr {c['head_lr']:g}",
             lambda c: (c["schedule"], c["widths"]) == (best["schedule"], best["widths"]))
    marginal("lr x head_lr at today's schedule and widths (e100 / fc3)",
             lambda c: f"lr {c['lr']:g}, head_lr {c['head_lr']:g}",
             lambda c: (c["schedule"], c["widths"]) == ("e100", "fc3"))

    # the smallest change to today's defaults: its schedule and widths, the best lr and head_lr there
    same_arch = next((c for c in cands if (c["schedule"], c["widths"]) == TODAY[:2]), None)
    shown = [("best", best)] + [(k, c) for k, c in (("today's schedule, best lr/head_lr", same_arch),
                                                    ("today", today)) if c is not None and c is not best]
    shown += [(f"--show {i + 1}", by_key[k]) for i, k in enumerate(extra or []) if k in by_key]
    md.extend(["", "## Per table (validation mean ± sd over seeds / test mean)", "",
               "| table | " + " | ".join(f"{label}: {name_of(c)}" for label, c in shown)
               + " | deep_sad |", "|---|" + "---|" * (len(shown) + 1)])
    for t in tables:
        cells = [f"{pct(c['per_table'][t]['val'])} ± {pct(c['per_table'][t]['val_sd'])} / "
                 f"{pct(c['per_table'][t]['test'])}" for _, c in shown]
        s = sad["per_table"][t]
        md.append(f"| {t} | " + " | ".join(cells) + f" | {pct(s['val'])} ± {pct(s['val_sd'])} / {pct(s['test'])} |")
    md.append("")
    for label, c in shown:
        if today is None or c is today:
            continue
        dv = [c["per_table"][t]["val"] - today["per_table"][t]["val"] for t in tables]
        dt = [c["per_table"][t]["test"] - today["per_table"][t]["test"] for t in tables]
        md.append(f"- {label} vs today: validation wins {sum(v > 0 for v in dv)}, losses {sum(v < 0 for v in dv)}, "
                  f"ties {sum(v == 0 for v in dv)} of {len(tables)} tables; test wins {sum(v > 0 for v in dt)}, "
                  f"losses {sum(v < 0 for v in dt)}")

    heads = [k for k in schedule_desc[tables[0]] if not k.startswith("_")]
    md.extend(["", "## Schedules, widths and wall time per table (seed 0's fit split)", "",
               "| table | rows passed to fit | features | " + " | ".join(heads) + " | seconds (all seeds) |",
               "|---|---|---|" + "---|" * len(heads) + "---|"])
    for t in tables:
        desc = schedule_desc[t]
        sec = sum(r["seconds"] for r in timing if r["table"] == t)
        md.append(f"| {t} | {desc['_n']} | {desc['_d']} | " + " | ".join(v for k, v in desc.items()
                                                                        if not k.startswith("_")) + f" | {sec:.0f} |")
    md.extend(["", "Schedules: e50/e100/e200 = that many epochs at batch 50; stepsS = epochs "
               "clip(round(S / ceil(n / 50)), 10, 2000) at batch 50 (n = rows passed to fit); e100_bigbatch = 100 "
               "epochs at batch max(50, n // 100). Widths: fc3 = (64, 32, 16); scaled = (max(32, 2d), max(16, d), "
               "max(8, d // 2)); scaled_up = (max(64, 2d), max(32, d), max(16, d // 2)).", "",
               f"- command: `{prov['command']}`",
               f"- commit: `{prov['git_commit']}`{' (uncommitted changes)' if prov['git_dirty'] else ''}",
               f"- device: {DEVICE}; JAX backend {prov['backend']}, {prov['platform']}",
               "- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v),
               f"- wall time: {wall:.0f} s", ""])
    return "\n".join(md)



def pick_tables(names: str) -> list[Table]:
    """``TABLES`` by comma-separated name (``--tables``), in the order given."""
    known = {t.name: t for t in TABLES}
    unknown = [n for n in names.split(",") if n and n not in known]
    if unknown:
        raise SystemExit(f"unknown tables {unknown}; known: {', '.join(known)}")
    return [known[n] for n in names.split(",") if n]


def save_run(path: Path, payload: dict) -> None:
    """A run's rows as compact gzipped JSON (``--from_json`` reads it back with ``load_run``)."""
    from imdad_jax.io import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, gzip.compress(json.dumps(payload, separators=(",", ":")).encode(), compresslevel=9, mtime=0))


def load_run(path: str | Path) -> dict:
    return json.loads(gzip.decompress(Path(path).read_bytes()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default=",".join(t.name for t in TABLES))
    p.add_argument("--schedules", default=",".join(SCHEDULES))
    p.add_argument("--widths", default=",".join(WIDTHS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lr", default=",".join(map(str, GRID["lr"])), help="the lr grid (one fit_many program)")
    p.add_argument("--head_lr", default=",".join(map(str, GRID["head_lr"])), help="the head_lr grid")
    p.add_argument("--out_dir", default=str(ROOT / "results" / "estimator_defaults"))
    p.add_argument("--name", default="estimator_defaults")
    p.add_argument("--dry_run", action="store_true", help="print each table's schedules and steps, train nothing")
    p.add_argument("--show", default="", help="more candidates for the per-table table, ';'-separated "
                   "schedule/widths/lr/head_lr, e.g. 'steps5k/fc3/0.0003/0.03'")
    p.add_argument("--from_json", help="rewrite the .md from this run's JSON instead of training")
    a = p.parse_args(argv)

    from imdad_jax.io import atomic_write, provenance

    extra = [(sch, w, float(lr), float(h)) for sch, w, lr, h in
             (c.split("/") for c in a.show.split(";") if c)]
    if a.from_json:  # the same run's numbers and provenance, only the report's choice of columns changes
        res = load_run(a.from_json)
        md = markdown(res["summary"], [t["name"] for t in res["tables"]], res["timing"], res["provenance"],
                      res["wall_s"], res["args"], res["schedules"], extra)
        atomic_write(Path(a.from_json.removesuffix(".json.gz") + ".md"), md)
        print(md)
        return 0

    from imdad_jax.pipeline import prepare_host

    prepare_host()
    tables = pick_tables(a.tables)
    schedules, widths = [s for s in a.schedules.split(",") if s], [w for w in a.widths.split(",") if w]
    seeds = tuple(int(s) for s in a.seeds.split(","))
    desc: dict[str, dict[str, str]] = {}
    for t in tables:
        x, y = load_table(t)
        s = split(x, y, seeds[0])
        n, d = s["x_fit"].shape
        desc[t.name] = {"_n": str(n), "_d": str(d), **{sch: "{} ep, b{}".format(*SCHEDULES[sch](n, d))
                                                        for sch in schedules},
                        "widths": "; ".join(f"{w} {WIDTHS[w](d)}" for w in widths)}
        print(t.name, f"rows {len(y)} anomalies {int(y.sum())} fit {n} (labelled {int(s['y_fit'].sum())}) "
              f"val {len(s['y_val'])} test {len(s['y_test'])} d {d}", desc[t.name], flush=True)
    if a.dry_run:
        return 0
    t_all = time.perf_counter()
    grid = {"lr": [float(v) for v in a.lr.split(",")], "head_lr": [float(v) for v in a.head_lr.split(",")]}
    rows, bar, timing = run(tables, schedules, widths, seeds, grid, lambda m: print(m, flush=True))
    wall = time.perf_counter() - t_all
    names = [t.name for t in tables]
    summary = summarise(rows, bar, names)
    prov = provenance(["python", "experiments/estimator_defaults.py", *(argv if argv is not None else sys.argv[1:])])
    prov["device"] = DEVICE
    out = Path(a.out_dir)
    save_run(out / f"{a.name}.json.gz",
             {"summary": summary, "rows": rows, "deep_sad_rows": bar, "timing": timing,
              "tables": [t.__dict__ for t in tables], "schedules": desc, "grid": grid, "today": list(TODAY),
              "args": vars(a), "provenance": prov, "wall_s": wall})
    md = markdown(summary, names, timing, prov, wall, vars(a), desc, extra)
    atomic_write(out / f"{a.name}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
