#!/usr/bin/env python
"""Significance across methods (paper Table IV, Fig. 2) from ``--method=all`` results files.

    python experiments/stats.py results/fmnist_methods_quick_e3.json [more *_methods_*.json] --out=results/stats

A block is one (dataset, normal class) cell, its AUC the mean over seeds and folds; methods missing a block are
compared on the blocks they share. Writes ``<out>.md`` (ranks, Friedman, Wilcoxon vs the reference, Nemenyi CD)
and ``<out>_cd.png`` (the critical-difference diagram).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from imdad_jax.evaluate.stats import auc_matrix, compare, significance_table  # noqa: E402
from imdad_jax.io import atomic_write, provenance  # noqa: E402
from imdad_jax.plots import cd_diagram  # noqa: E402


def block_aucs(paths: list[str]) -> dict[str, dict[tuple, float]]:
    """``{method: {(file stem's dataset, class): mean AUC}}`` from methods JSON files."""
    out: dict[str, dict[tuple, float]] = {}
    for path in paths:
        rec = json.loads(Path(path).read_text())
        if "methods" not in rec:
            raise ValueError(f"{path} is not a --method=all / comma-list results file (no 'methods' key)")
        dataset = Path(path).stem.split("_")[0]
        for method, runs in rec["methods"].items():
            by_class: dict[int, list[float]] = {}
            for r in runs:
                if r["auc"] is not None and not r["diverged"]:
                    by_class.setdefault(r["normal_class"], []).append(r["auc"])
            for k, v in by_class.items():
                out.setdefault(method, {})[(dataset, k)] = float(np.mean(v))
    return out


def per_dataset_table(aucs: dict[str, dict[tuple, float]]) -> str:
    """Mean AUC % over each dataset's classes, with the method's rank on that dataset in brackets (paper Table IV)."""
    datasets = sorted({ds for blocks in aucs.values() for ds, _ in blocks})
    methods = sorted(aucs)
    mean = {(m, ds): np.mean([v for (d, _), v in aucs[m].items() if d == ds]) if any(d == ds for d, _ in aucs[m])
            else np.nan for m in methods for ds in datasets}
    rank = {}
    for ds in datasets:
        vals = np.array([mean[m, ds] for m in methods])
        order = (-np.nan_to_num(vals, nan=-np.inf)).argsort(kind="stable").argsort() + 1
        rank.update({(m, ds): r for m, r in zip(methods, order)})
    methods.sort(key=lambda m: np.mean([rank[m, ds] for ds in datasets]))
    rows = ["| method | " + " | ".join(datasets) + " | mean rank |", "|---" * (len(datasets) + 2) + "|"]
    for m in methods:
        cells = [f"{100 * mean[m, ds]:.2f} ({rank[m, ds]})" if np.isfinite(mean[m, ds]) else "n/a" for ds in datasets]
        rows.append(f"| {m} | " + " | ".join(cells) + f" | {np.mean([rank[m, ds] for ds in datasets]):.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+")
    p.add_argument("--reference", default="imdad")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--out", default=str(ROOT / "results" / "stats"))
    a = p.parse_args(argv)
    try:
        aucs = block_aucs(a.files)
        matrix, methods, blocks = auc_matrix(aucs)
        c = compare(matrix, methods, a.reference, a.alpha)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    png = cd_diagram(c.average_rank, c.nemenyi_p, a.out + "_cd.png", alpha=a.alpha,
                     title=f"Nemenyi CD = {c.critical_difference:.2f} ({len(blocks)} blocks)")
    prov = provenance(["python", "experiments/stats.py", *(argv or sys.argv[1:])])
    md = [f"# Significance over {len(blocks)} blocks", "", significance_table(c), "",
          "Mean AUC % per dataset (rank among the methods on that dataset):", "", per_dataset_table(aucs), "",
          f"![critical difference diagram]({Path(png).name})", "",
          "- inputs: " + ", ".join(f"`{f}`" for f in a.files),
          f"- command: `{prov['command']}`", f"- commit: `{prov['git_commit']}`", ""]
    atomic_write(a.out + ".md", "\n".join(md))
    print(significance_table(c))
    print(f"wrote {a.out}.md and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
