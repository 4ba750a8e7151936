#!/usr/bin/env python
"""Candidates for how IMD-AD is solved, side by side: validation AUC (to choose by) and test AUC (to confirm).

    python experiments/compare_solvers.py --datasets=bc,card,on,moons,spiral --epochs=200 --lr=1e-3

Every candidate trains every run of each dataset (the paper's protocol: all classes, CV folds on tabular data) on
its training data minus a validation split (the same ``holdout`` as ``--tune``; the test fold is never used to
choose), then scores the validation rows and the test fold. A candidate is a name and config overrides
(``CANDIDATES``; ``--candidates`` picks some). The library's Deep SAD runs on the same splits as the bar.
Writes ``OUT/compare_solvers.{json,md}`` with the per-dataset means, the fractions against their bounds and the
sphere at the end, the config, provenance and wall time.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

import numpy as np  # noqa: E402

CANDIDATES: dict[str, dict] = {
    "paper": {"method": "imdad", "options": {"solver": "paper"}},
    "head_lr=0.01": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.01}},
    "head_lr=0.03": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.03}},
    "head_lr=0.1": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.1}},
    "head_lr=0.3": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.3}},
    "head_lr=0.001": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.001}},
    "head_lr=0.003": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.003}},
    "head_lr=0.1+nu1=0.2": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.1, "nu1": 0.2}},
    "head_lr=0.1+nu1=0.3": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.1, "nu1": 0.3}},
    "head_lr=0.1+share=0.5": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.1},
                              "anomaly_share": 0.5},
    "head_lr=0.1+pretrain=50": {"method": "imdad", "options": {"solver": "head_lr"}, "hp": {"head_lr": 0.1},
                                "pretrain_epochs": 50},
    "head_lr=0.1+squared_hinge": {"method": "imdad", "options": {"solver": "head_lr", "hinge": "squared"},
                                  "hp": {"head_lr": 0.1}},
    "head_lr=0.1+smooth_hinge": {"method": "imdad", "options": {"solver": "head_lr", "hinge": "smooth"},
                                 "hp": {"head_lr": 0.1}},
    "deep_sad": {"method": "deep_sad"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="bc,card,on,moons,spiral")
    p.add_argument("--candidates", default=",".join(CANDIDATES))
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0")
    p.add_argument("--preset", default="paper")
    p.add_argument("--classes", help="normal classes (default: all)")
    p.add_argument("--val_share", type=float, default=0.25)
    p.add_argument("--out_dir", default=str(ROOT / "results" / "solvers"))
    p.add_argument("--name", default="compare_solvers")
    a = p.parse_args(argv)

    from trace_learning import trace

    from imdad_jax.config import make_config
    from imdad_jax.data import load_dataset
    from imdad_jax.io import atomic_write, provenance
    from imdad_jax.pipeline import prepare_host

    prepare_host()
    names = [c for c in a.candidates.split(",") if c]
    seeds = tuple(int(s) for s in a.seeds.split(","))
    rows, t_all = [], time.perf_counter()
    for ds in a.datasets.split(","):
        data = load_dataset(ds)
        classes = (tuple(int(c) for c in a.classes.split(",")) if a.classes
                   else tuple(range(len(data.class_names))))
        for name in names:
            spec = dict(CANDIDATES[name])
            cfg = make_config(a.preset, dataset=ds, classes=classes, seeds=seeds, epochs=a.epochs, lr=a.lr, **spec)
            t0 = time.perf_counter()
            tr = trace(cfg, data, a.epochs, a.val_share)
            pe = tr["per_epoch"]
            last = {k: np.asarray(pe[k][-1], float) for k in pe if k != "epoch"}
            row = {"dataset": ds, "candidate": name, "runs": len(tr["runs"]),
                   "val_auc": float(np.nanmean(last["val_auc"])), "test_auc": float(np.nanmean(last["test_auc"])),
                   "seconds": time.perf_counter() - t0}
            for k in ("frac_normals_out", "frac_anomalies_in", "radius2", "margin2", "grad_norm_encoder"):
                if k in last:
                    row[k] = float(np.nanmedian(last[k]))
            for k in ("bound_normals_out", "bound_anomalies_in"):
                if k in tr:
                    row[k] = float(np.median(tr[k]))
            rows.append(row)
            print(json.dumps(row), flush=True)
    prov = provenance(["python", "experiments/compare_solvers.py", *(argv if argv is not None else sys.argv[1:])])
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / f"{a.name}.json", json.dumps({"rows": rows, "provenance": prov, "args": vars(a),
                                                     "candidates": {n: CANDIDATES[n] for n in names},
                                                     "wall_s": time.perf_counter() - t_all}, indent=1) + "\n")
    dsets = list(dict.fromkeys(r["dataset"] for r in rows))
    md = [f"# {a.name}", "", f"Validation / test AUC %, mean over runs (every class as the normal class, CV folds; "
          f"seeds {a.seeds}; {a.epochs} epochs, lr {a.lr}; trained on each run's training data minus a "
          f"{a.val_share:.0%} validation split). Choose by the validation column.", "",
          "| candidate | " + " | ".join(f"{d} val | {d} test" for d in dsets) + " | mean val | mean test |",
          "|---|" + "---|---|" * len(dsets) + "---|---|"]
    for name in names:
        cells, vals, tests = [], [], []
        for d in dsets:
            r = next((r for r in rows if r["dataset"] == d and r["candidate"] == name), None)
            cells += [f"{100 * r['val_auc']:.2f}", f"{100 * r['test_auc']:.2f}"] if r else ["", ""]
            if r:
                vals.append(r["val_auc"])
                tests.append(r["test_auc"])
        md.append(f"| {name} | " + " | ".join(cells) + f" | {100 * np.mean(vals):.2f} | {100 * np.mean(tests):.2f} |")
    md += ["", "End of training, median over runs (fractions against their bounds nu1 (1 + nu) and nu nu2):", "",
           "| dataset | candidate | normals out | bound | anomalies in | bound | R² | ρ² | encoder grad norm |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "frac_normals_out" in r and "bound_normals_out" in r:
            md.append(f"| {r['dataset']} | {r['candidate']} | {r['frac_normals_out']:.3f} | {r['bound_normals_out']:.3f}"
                      f" | {r['frac_anomalies_in']:.3f} | {r['bound_anomalies_in']:.3f} | {r['radius2']:.3f} | "
                      f"{r['margin2']:.3f} | {r['grad_norm_encoder']:.3g} |")
    md += ["", f"- command: `{prov['command']}`", f"- commit: `{prov['git_commit']}`"
           f"{' (uncommitted changes)' if prov['git_dirty'] else ''}",
           f"- device: {prov['devices']} ({prov['backend']}, {prov['cpu_count']} CPU cores), {prov['platform']}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v),
           f"- wall time: {time.perf_counter() - t_all:.0f} s", ""]
    atomic_write(out / f"{a.name}.md", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
