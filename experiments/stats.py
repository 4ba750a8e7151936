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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+")
    p.add_argument("--reference", default="imdad")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--out", default=str(ROOT / "results" / "stats"))
    a = p.parse_args(argv)
    try:
        matrix, methods, blocks = auc_matrix(block_aucs(a.files))
        c = compare(matrix, methods, a.reference, a.alpha)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    png = cd_diagram(c.average_rank, c.nemenyi_p, a.out + "_cd.png", alpha=a.alpha,
                     title=f"Nemenyi CD = {c.critical_difference:.2f} ({len(blocks)} blocks)")
    prov = provenance(["python", "experiments/stats.py", *(argv or sys.argv[1:])])
    md = [f"# Significance over {len(blocks)} blocks", "", significance_table(c), "",
          f"![critical difference diagram]({Path(png).name})", "",
          "- inputs: " + ", ".join(f"`{f}`" for f in a.files),
          f"- command: `{prov['command']}`", f"- commit: `{prov['git_commit']}`", ""]
    atomic_write(a.out + ".md", "\n".join(md))
    print(significance_table(c))
    print(f"wrote {a.out}.md and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
