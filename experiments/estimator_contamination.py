#!/usr/bin/env python
"""Should ``IMDAD(contamination=c)`` default ``nu1`` to ``max(0.1, k * c)``? Chosen on validation AUC.

    JAX_PLATFORMS=cpu taskset -c 1 python experiments/estimator_contamination.py --levels=0,0.05,0.1,0.15 \
        --tables=bc,syn_d8_n1000,card_s150,syn_d32_n1000,on,bc_s80,syn_d100_n300,card,on_s150,syn_d100_n1000,syn_d32_n5000
    # (stopped for time after syn_d100_n1000, at 28 min; the report below is redone from the saved rows)
    # the report again from the saved rows (no training)
    python experiments/estimator_contamination.py --from_json=results/estimator_contamination/estimator_contamination.json.gz

Tables and split come from ``experiments/estimator_defaults.py`` (its ``TABLES``, ``load_table`` and its split,
adapted): a stratified 70/30 train/test split, the training part 75/25 fit/validation (stratified); a seeded 10%
(at least one) of the fit anomalies labelled (y=1). What changes is the rest of the fit anomalies: instead of
being dropped (the clean setting, c = 0 here) enough of them stay, unlabelled (y=0), to make up share ``c`` of the
fit part's y=0 rows (all of them, and the real share recorded, where there are too few). Validation and test rows
keep all true labels. Per (table, seed, c): ``IMDAD(contamination=c, random_state=seed).fit_many`` over a nu1 grid
(the estimator's defaults otherwise) and ``DeepDetector(method="deep_sad")`` on the same fit rows as the bar.

The nu1 grid per c holds the base values and the exact ``max(0.1, k * c)`` of every rule, so no rule is snapped;
at c = 0 it holds every value any rule reaches at any c, which tells what a rule costs a user who passes a small
``c`` for data that are in fact clean. Writes ``OUT/NAME.md`` and ``OUT/NAME.json.gz`` (every run's AUCs, compact
gzipped JSON), the JSON also after every table so that a cut run keeps what it trained.

Cut for time (one core, 45 min in all): c = 0.02 (every rule with k <= 4 gives nu1 = 0.1 there, today's value,
so it cannot separate the rules), the 20,000- and 50,000-row tables, and syn_d32_n5000 (not reached).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import numpy as np  # noqa: E402

from estimator_defaults import (Table, auc, load_run, load_table, pick_tables, save_run,  # noqa: E402
                                split_rows)

DEVICE = "CPU (1 core of a 2-core Intel Xeon)"
LEVELS = (0.0, 0.02, 0.05, 0.10, 0.15)
BASE_GRID = (0.1, 0.15, 0.2, 0.3, 0.45)
KS = (1.0, 1.5, 2.0, 3.0, 4.0)
TODAY_NU1 = 0.1  # imdad.py's default, what IMDAD(contamination=c) trains today
FLOOR = 0.1
# the default table order: small and fast first, so a run cut for time has covered the most tables
DEFAULT_TABLES = ("bc_s80,on_s150,card_s150,syn_d100_n300,syn_d8_n1000,syn_d32_n1000,syn_d100_n1000,"
                  "bc,on,card,syn_d32_n5000")


def rule_nu1(k: float, c: float) -> float:
    # rounded so that the grid and the lookup agree on floats such as 1.5 * 0.15
    return round(max(FLOOR, k * c), 6)


def grid_for(c: float, levels: tuple[float, ...]) -> list[float]:
    """The base nu1 grid plus every rule's exact value at c; at c = 0, every rule's value at every level."""
    cs = [v for v in levels if v > 0] if c == 0 else [c]
    vals = set(BASE_GRID) | {rule_nu1(k, v) for k in KS for v in cs}
    return sorted(v for v in vals if 0 < v <= 1)  # validate_hp: nu1 in (0, 1]


def contaminated_split(x: np.ndarray, y: np.ndarray, seed: int, c: float) -> dict:
    """estimator_defaults.split with share c of unlabelled anomalies kept among the fit part's y=0 rows."""
    # the rows and labelled anomalies of estimator_defaults.split: they do not change with c
    fit, val, te, labelled = split_rows(y, seed)
    rest = np.setdiff1d(fit[y[fit] == 1], labelled)
    # one seeded order per (table, seed): a smaller c keeps a subset of a larger c's contaminants
    rest = np.random.default_rng([seed, 0xc0]).permutation(rest)
    normals = fit[y[fit] == 0]
    want = int(round(c * len(normals) / (1.0 - c))) if c > 0 else 0
    unl = rest[:min(want, len(rest))]
    keep = np.sort(np.concatenate([normals, labelled, unl]))
    y_fit = y[keep].copy()
    y_fit[np.isin(keep, unl)] = 0  # unlabelled: y=0, as a user's contaminated data arrive
    share = len(unl) / (len(normals) + len(unl))
    return {"x_fit": x[keep], "y_fit": y_fit, "x_val": x[val], "y_val": y[val], "x_test": x[te], "y_test": y[te],
            "n_normal": len(normals), "n_labelled": len(labelled), "n_unlabelled": len(unl), "real_share": share,
            "short": bool(want > len(rest))}


def run_table(t: Table, seeds: tuple[int, ...], levels: tuple[float, ...],
              log: Callable[[str], None]) -> tuple[list[dict], list[dict], list[dict]]:
    from imdad_jax.estimator import IMDAD, DeepDetector

    rows, bar, splits = [], [], []
    x, y = load_table(t)
    for seed in seeds:
        for c in levels:
            s = contaminated_split(x, y, seed, c)
            meta = {"table": t.name, "seed": seed, "c": c, "real_share": s["real_share"]}
            splits.append({**meta, **{k: s[k] for k in ("n_normal", "n_labelled", "n_unlabelled", "short")}})
            grid = grid_for(c, levels)
            t0 = time.perf_counter()
            # contamination=None at c = 0: 0 is outside the estimator's (0, 0.5]; it only sets the threshold
            dets = IMDAD(contamination=c or None, random_state=seed).fit_many(
                s["x_fit"], s["y_fit"], grid={"nu1": grid}, seeds=(seed,))
            sec = time.perf_counter() - t0
            for nu1, m in zip(grid, dets):
                rows.append({**meta, "nu1": nu1, "val_auc": auc(s["y_val"], m.decision_function(s["x_val"])),
                             "test_auc": auc(s["y_test"], m.decision_function(s["x_test"])),
                             "diverged": bool(m.diverged_), "epochs": int(m.epochs_), "seconds": sec / len(dets)})
            t0 = time.perf_counter()
            sad = DeepDetector(method="deep_sad", random_state=seed).fit(s["x_fit"], s["y_fit"])
            bar.append({**meta, "val_auc": auc(s["y_val"], sad.decision_function(s["x_val"])),
                        "test_auc": auc(s["y_test"], sad.decision_function(s["x_test"])),
                        "seconds": time.perf_counter() - t0})
            log(f"{t.name} seed {seed} c {c} (real {s['real_share']:.3f}, n_fit {len(s['y_fit'])}): "
                f"{len(dets)} runs {sec:.1f}s; val " + " ".join(
                    f"{r['nu1']:g}:{r['val_auc']:.3f}" for r in rows[-len(dets):])
                + f" | deep_sad {bar[-1]['val_auc']:.3f} ({bar[-1]['seconds']:.1f}s)")
    return rows, bar, splits


def candidates(levels: tuple[float, ...]) -> dict[str, Callable[[float], float]]:
    """Name -> nu1 at contamination c (c > 0; at c = 0 no rule applies and nu1 is the default)."""
    out: dict[str, Callable[[float], float]] = {f"today nu1 {TODAY_NU1:g}": lambda c: TODAY_NU1}
    for k in KS:
        out[f"max(0.1, {k:g}c)"] = (lambda k: lambda c: rule_nu1(k, c))(k)
    for v in BASE_GRID[1:]:
        out[f"fixed nu1 {v:g}"] = (lambda v: lambda c: v)(v)
    return out


def summarise(rows: list[dict], bar: list[dict], levels: tuple[float, ...], splits: list[dict] | None = None) -> dict:
    """Per candidate and c: mean val/test over tables x seeds, average rank over (table, c) blocks, wins vs today."""
    from scipy.stats import rankdata

    cell: dict[tuple, list[dict]] = {}
    for r in rows:
        cell.setdefault((r["table"], r["c"], r["nu1"]), []).append(r)
    tables = sorted({r["table"] for r in rows}, key=[r["table"] for r in rows].index)
    # only tables with every level are compared, so that a cut run does not mix table sets across c
    tables = [t for t in tables if all((t, c, TODAY_NU1) in cell for c in levels)]
    cands = candidates(levels)
    pos = [c for c in levels if c > 0]

    def mean(t: str, c: float, nu1: float, key: str) -> float:
        return float(np.mean([r[key] for r in cell[(t, c, nu1)]]))

    out: dict = {"tables": tables, "levels": list(levels), "per_c": {}, "rank": {}, "wins": {}}
    for c in pos:
        res = {}
        for name, f in cands.items():
            nu1 = f(c)
            res[name] = {"nu1": nu1, "val": float(np.mean([mean(t, c, nu1, "val_auc") for t in tables])),
                         "test": float(np.mean([mean(t, c, nu1, "test_auc") for t in tables]))}
        sad = [b for b in bar if b["c"] == c and b["table"] in tables]
        res["deep_sad"] = {"val": float(np.mean([b["val_auc"] for b in sad])),
                           "test": float(np.mean([b["test_auc"] for b in sad]))}
        out["per_c"][str(c)] = res
    # ranks among the candidates (not distinct nu1 values) per (table, c) block; ties share the mean rank
    names = list(cands)
    blocks = [(t, c) for t in tables for c in pos]
    vals = np.array([[mean(t, c, cands[n](c), "val_auc") for n in names] for t, c in blocks])
    ranks = np.stack([rankdata(-v) for v in vals])
    for i, n in enumerate(names):
        out["rank"][n] = {"all": float(ranks[:, i].mean()),
                          **{str(c): float(ranks[[j for j, b in enumerate(blocks) if b[1] == c], i].mean())
                             for c in pos}}
        d = vals[:, i] - vals[:, 0]
        out["wins"][n] = {"wins": int((d > 1e-9).sum()), "losses": int((d < -1e-9).sum()),
                          "ties": int((np.abs(d) <= 1e-9).sum()), "mean_diff": float(d.mean()),
                          "per_table": {t: float(np.mean([d[j] for j, b in enumerate(blocks) if b[0] == t]))
                                        for t in tables}}
    # every nu1 on the data as given, per c (c = 0 is the clean setting), val / test
    grid_vals = sorted({r["nu1"] for r in rows})
    out["by_nu1"] = {str(c): {str(v): [float(np.mean([mean(t, c, v, "val_auc") for t in tables])),
                                       float(np.mean([mean(t, c, v, "test_auc") for t in tables]))]
                              for v in grid_vals if all((t, c, v) in cell for t in tables)} for c in levels}
    sad0 = [b for b in bar if b["c"] == 0 and b["table"] in tables]
    out["deep_sad_clean"] = [float(np.mean([b["val_auc"] for b in sad0])),
                             float(np.mean([b["test_auc"] for b in sad0]))] if sad0 else None
    # clean data, a user passing a small c anyway: the rule's nu1 at that nominal c on the c = 0 fits
    out["clean_cost"] = {n: {str(c): [float(np.mean([mean(t, 0.0, f(c), "val_auc") for t in tables])),
                                      float(np.mean([mean(t, 0.0, f(c), "test_auc") for t in tables]))]
                             for c in pos if all((t, 0.0, f(c)) in cell for t in tables)}
                         for n, f in cands.items()} if 0.0 in levels else {}
    # per table at each c: today vs the best rule by overall validation rank, val means over seeds
    # the synthetic tables hold 7% anomalies: at c = 0.10 and 0.15 their fit parts run short of contaminants, so
    # the rules are also compared on the tables that reached (90% of) the nominal share in every seed
    out["reached"] = {}
    for c in pos if splits else ():
        ok = [t for t in tables if all(s["real_share"] >= 0.9 * c for s in splits if s["table"] == t and s["c"] == c)]
        if ok:
            out["reached"][str(c)] = {"tables": ok, **{n: [float(np.mean([mean(t, c, f(c), "val_auc") for t in ok])),
                                                           float(np.mean([mean(t, c, f(c), "test_auc") for t in ok]))]
                                                       for n, f in cands.items()},
                                      "deep_sad": [float(np.mean([b["val_auc"] for b in bar
                                                                  if b["c"] == c and b["table"] in ok])),
                                                   float(np.mean([b["test_auc"] for b in bar
                                                                  if b["c"] == c and b["table"] in ok]))]}
    out["per_table"] = {t: {str(c): {n: mean(t, c, cands[n](c), "val_auc") for n in names} for c in pos}
                        for t in tables}
    return out


def markdown(summary: dict, splits: list[dict], prov: dict, wall: float, args: dict) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    pos = [c for c in summary["levels"] if c > 0]
    names = list(summary["rank"])
    tables = summary["tables"]
    md = ["# nu1 from contamination: IMDAD(contamination=c)", "",
          f"Tables ({len(tables)}): {', '.join(tables)}; seeds {args['seeds']}. Validation / test ROC-AUC %, mean "
          "over seeds then tables. Fit part: 10% of its anomalies labelled, unlabelled anomalies kept at share c "
          "of its y=0 rows (c = 0: dropped, the clean setting). Chosen on validation; test only confirms.", "",
          "## Mean val / test AUC per c (nu1 used in brackets)", "",
          "| candidate | " + " | ".join(f"c={c:g}" for c in pos) + " | avg rank (val) | wins/ties/losses vs today |",
          "|---|" + "---|" * (len(pos) + 2)]
    for n in names:
        w = summary["wins"][n]
        md.append(f"| {n} | " + " | ".join(
            f"{pct(summary['per_c'][str(c)][n]['val'])} / {pct(summary['per_c'][str(c)][n]['test'])} "
            f"[{summary['per_c'][str(c)][n]['nu1']:g}]" for c in pos)
            + f" | {summary['rank'][n]['all']:.2f} | {w['wins']}/{w['ties']}/{w['losses']} "
              f"({100 * w['mean_diff']:+.2f}) |")
    md.append("| deep_sad (its defaults) | " + " | ".join(
        f"{pct(summary['per_c'][str(c)]['deep_sad']['val'])} / {pct(summary['per_c'][str(c)]['deep_sad']['test'])}"
        for c in pos) + " | | |")
    md.extend(["", f"Average rank is over {len(tables) * len(pos)} (table, c) blocks among the {len(names)} "
               "candidates (1 = best; ties share ranks); wins vs today count blocks with a higher mean validation "
               "AUC, the bracket is the mean validation difference in AUC points."])
    if summary.get("reached"):
        rc = list(summary["reached"])
        md.extend(["", "## Only the tables whose fit parts reached the nominal c (val / test)", "",
                   "| candidate | " + " | ".join(f"c={float(c):g} ({len(summary['reached'][c]['tables'])} tables)"
                                                for c in rc) + " |", "|---|" + "---|" * len(rc)])
        for n in names + ["deep_sad"]:
            md.append(f"| {n} | " + " | ".join(f"{pct(summary['reached'][c][n][0])} / "
                                                f"{pct(summary['reached'][c][n][1])}" for c in rc) + " |")
        md.append("\nTables: " + "; ".join(f"c={float(c):g}: {', '.join(summary['reached'][c]['tables'])}"
                                          for c in rc) + ".")
    md.extend(["", "## Average validation rank per c", "",
               "| candidate | " + " | ".join(f"c={c:g}" for c in pos) + " |", "|---|" + "---|" * len(pos)])
    for n in names:
        md.append(f"| {n} | " + " | ".join(f"{summary['rank'][n][str(c)]:.2f}" for c in pos) + " |")
    md.extend(["", "## Every nu1 per c (val / test)", "",
               "| c | " + " | ".join(f"nu1 {v}" for v in sorted({float(v) for d in summary['by_nu1'].values()
                                                                    for v in d})) + " |"])
    allv = sorted({float(v) for d in summary["by_nu1"].values() for v in d})
    md.append("|---|" + "---|" * len(allv))
    for c in summary["levels"]:
        d = summary["by_nu1"][str(c)]
        md.append(f"| {c:g} | " + " | ".join(
            f"{pct(d[str(v)][0])} / {pct(d[str(v)][1])}" if str(v) in d else "" for v in allv) + " |")
    if summary["deep_sad_clean"]:
        md.append(f"\nDeep SAD at c = 0: {pct(summary['deep_sad_clean'][0])} / {pct(summary['deep_sad_clean'][1])}.")
    if summary["clean_cost"]:
        md.extend(["", "## Clean data (c = 0 fits), a user passing contamination c anyway (val / test)", "",
                   "| candidate | " + " | ".join(f"c={c:g}" for c in pos) + " |", "|---|" + "---|" * len(pos)])
        for n, d in summary["clean_cost"].items():
            md.append(f"| {n} | " + " | ".join(f"{pct(d[str(c)][0])} / {pct(d[str(c)][1])}" if str(c) in d else ""
                                                for c in pos) + " |")
    md.extend(["", "## Per table: mean validation difference vs today (AUC points, mean over c > 0)", "",
               "| table | " + " | ".join(n for n in names[1:]) + " |", "|---|" + "---|" * (len(names) - 1)])
    for t in tables:
        md.append(f"| {t} | " + " | ".join(f"{100 * summary['wins'][n]['per_table'][t]:+.2f}" for n in names[1:])
                  + " |")
    md.extend(["", "## Contaminated fit parts (real share of unlabelled anomalies among y=0 rows, mean over seeds)",
               "", "| table | " + " | ".join(f"c={c:g}" for c in pos) + " |", "|---|" + "---|" * len(pos)])
    for t in tables:
        cells = []
        for c in pos:
            ss = [s for s in splits if s["table"] == t and s["c"] == c]
            cells.append(f"{np.mean([s['real_share'] for s in ss]):.3f}" + (" (short)" if any(s["short"] for s in ss)
                                                                            else ""))
        md.append(f"| {t} | " + " | ".join(cells) + " |")
    md.extend(["", f"Wall time {wall / 60:.1f} min on {prov.get('device', DEVICE)}. Provenance: "
               + ", ".join(f"{k} {v}" for k, v in prov.items() if k != "device"), ""])
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default=DEFAULT_TABLES, help="comma-separated names from estimator_defaults.TABLES")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--levels", default=",".join(f"{c:g}" for c in LEVELS), help="contamination shares; 0 = clean")
    p.add_argument("--out_dir", default=str(ROOT / "results" / "estimator_contamination"))
    p.add_argument("--name", default="estimator_contamination")
    p.add_argument("--from_json", help="rewrite the .md from this run's JSON instead of training")
    a = p.parse_args(argv)

    from imdad_jax.io import atomic_write, provenance

    if a.from_json:  # the same rows and provenance; only the report is redone
        res = load_run(a.from_json)
        levels = tuple(res["levels"])
        md = markdown(summarise(res["rows"], res["deep_sad_rows"], levels, res["splits"]), res["splits"],
                      res["provenance"], res["wall_s"], res["args"])
        if not res.get("complete"):  # a run cut for time: its JSON holds the tables that finished
            done = list(dict.fromkeys(r["table"] for r in res["rows"]))
            md += (f"\nCut for time: the run was stopped after {len(done)} of {len(res['tables'])} tables; "
                   f"not run: {', '.join(t['name'] for t in res['tables'] if t['name'] not in done)}.\n")
        atomic_write(Path(a.from_json.removesuffix(".json.gz") + ".md"), md)
        print(md)
        return 0

    from imdad_jax.pipeline import prepare_host

    prepare_host()
    tables = pick_tables(a.tables)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    levels = tuple(float(c) for c in a.levels.split(","))
    prov = provenance(["python", "experiments/estimator_contamination.py", *(argv if argv is not None
                                                                             else sys.argv[1:])])
    prov["device"] = DEVICE
    out = Path(a.out_dir)
    path = out / f"{a.name}.json.gz"
    t_all = time.perf_counter()
    rows, bar, splits = [], [], []
    for t in tables:
        r, b, s = run_table(t, seeds, levels, lambda m: print(m, flush=True))
        rows += r
        bar += b
        splits += s
        save_run(path, {"rows": rows, "deep_sad_rows": bar, "splits": splits, "levels": list(levels),
                        "tables": [t.__dict__ for t in tables], "args": vars(a), "provenance": prov,
                        "wall_s": time.perf_counter() - t_all, "complete": False})
    wall = time.perf_counter() - t_all
    summary = summarise(rows, bar, levels, splits)
    save_run(path, {"rows": rows, "deep_sad_rows": bar, "splits": splits, "levels": list(levels),
                    "tables": [t.__dict__ for t in tables], "args": vars(a), "provenance": prov, "wall_s": wall,
                    "summary": summary, "complete": True})
    md = markdown(summary, splits, prov, wall, vars(a))
    atomic_write(out / f"{a.name}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
