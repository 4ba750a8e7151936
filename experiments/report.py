#!/usr/bin/env python
"""Write docs/reproduction.md from the results files: our AUC beside the paper's, per dataset and class.

    python experiments/report.py                      # every results/**/<dataset>_imdad_*.json
    python experiments/report.py --method=deep_sad    # another method (the paper column where the paper has one)

Every row names the results file, hence the command, commit, device and schedule that made it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from imdad_jax.io import atomic_write  # noqa: E402
from imdad_jax.paper import PAPER_TABLE2, PEER_DEEP_SAD_MEAN  # noqa: E402


def collect(results_dir: Path, method: str) -> list[tuple[Path, dict]]:
    """Single-method results records of ``method`` under ``results_dir`` (multi-method summaries skipped)."""
    out = []
    for path in sorted(results_dir.rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if "config" in rec and rec["config"].get("method") == method and "runs" in rec:
            out.append((path, rec))
    return out


def _grid_text(grid: list) -> str:
    return ";".join(f"{n}=" + ",".join(f"{v:g}" for v in vals) for n, vals in grid)


def setting(rec: dict) -> str:
    """What sets the run apart from the protocol's defaults: the solver (IMD-AD), contamination, balanced batches."""
    cfg = rec["config"]
    opts = rec.get("options") or cfg.get("options") or {}
    parts = []
    if cfg.get("method") == "imdad":
        solver = opts.get("solver", "paper")
        parts.append(f"solver {solver}" + (f" (head_lr {rec.get('hyperparams', {}).get('head_lr', 0.1):g})"
                                           if solver == "head_lr" else ""))
    if cfg.get("contamination"):
        parts.append(f"contamination {cfg['contamination']:g}")
    from imdad_jax.objectives import REGISTRY

    defaults = REGISTRY[cfg["method"]].DEFAULT_HP if cfg.get("method") in REGISTRY else {}
    given = {k: v for k, v in (rec.get("hyperparams") or {}).items()
             if k in defaults and k != "head_lr" and v != defaults[k]}
    parts += [f"{k} {v:g}" for k, v in given.items()]
    return ", ".join(parts) or "-"


def class_means(rec: dict) -> list[float]:
    """Per normal class, the mean test AUC % over its valid runs (seeds x folds)."""
    out = []
    for k in sorted({r["normal_class"] for r in rec["runs"]}):
        a = [r["auc"] * 100 for r in rec["runs"] if r["normal_class"] == k and r["auc"] is not None
             and not r["diverged"]]
        out.append(float(np.mean(a)) if a else float("nan"))
    return out


def summary(recs: list[tuple[Path, dict]], method: str) -> list[str]:
    """One row per results file: mean over classes beside the paper's mean and the bar."""
    lines = ["| dataset | results file | epochs | setting | tuned | ours (mean over classes) | paper | Deep SAD bar |",
             "|---|---|---|---|---|---|---|---|"]
    for path, rec in recs:
        ds = rec["config"]["dataset"]
        paper = PAPER_TABLE2.get(ds, {}).get(method)
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        lines.append(f"| {ds} | `{shown}` | {rec['config']['epochs']} | {setting(rec)} | "
                     f"{'yes' if rec.get('tuning') else 'no'} | "
                     f"{np.nanmean(class_means(rec)):.2f} | {f'{np.mean(paper):.2f}' if paper else 'n/a'} | "
                     f"{PEER_DEEP_SAD_MEAN.get(ds, 'n/a')} |")
    return lines + [""]


def section(path: Path, rec: dict, method: str) -> list[str]:
    cfg, prov = rec["config"], rec["provenance"]
    ds = cfg["dataset"]
    paper = PAPER_TABLE2.get(ds, {}).get(method)
    classes = sorted({r["normal_class"] for r in rec["runs"]})
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    lines = [f"### {ds}: `{shown}`", "",
             f"`{prov['command']}` — commit `{(prov['git_commit'] or '?')[:10]}`, {prov['devices']}, "
             f"{cfg['epochs']} epochs, lr {cfg['lr']}, batch {cfg['batch_size']}, seeds {cfg['seeds']}"
             + (f", {cfg.get('n_folds')}-fold CV" if any("fold" in r for r in rec["runs"]) else "")
             + (f"; batches {cfg['anomaly_share']:g} anomalies" if cfg.get("anomaly_share") else "")
             + (f"; {setting(rec)}" if setting(rec) != "-" else "")
             + (f"; tuned per run on a validation split over `{_grid_text(rec['tuning']['grid'])}`"
                if rec.get("tuning") else "")
             + f"; wall {rec['timing']['total_s']:.0f} s", "",
             "| class | ours AUC % (mean ± std) | paper | gap |", "|---|---|---|---|"]
    means = []
    for k in classes:
        a = [r["auc"] * 100 for r in rec["runs"] if r["normal_class"] == k and r["auc"] is not None
             and not r["diverged"]]
        m = float(np.mean(a)) if a else float("nan")
        means.append(m)
        p = paper[k] if paper and k < len(paper) else None
        sd = f" ± {np.std(a):.2f}" if len(a) > 1 else ""
        lines.append(f"| {k} | {m:.2f}{sd} | {p if p is not None else 'n/a'} | "
                     f"{f'{m - p:+.2f}' if p is not None else 'n/a'} |")
    mean = float(np.nanmean(means))
    p_mean = float(np.mean(paper)) if paper and len(paper) == len(classes) else None
    lines.append(f"| **mean** | **{mean:.2f}** | {f'{p_mean:.2f}' if p_mean else 'n/a'} | "
                 f"{f'{mean - p_mean:+.2f}' if p_mean else 'n/a'} |")
    if ds in PEER_DEEP_SAD_MEAN:
        lines.append(f"\nDeep SAD from a standard library under this protocol: {PEER_DEEP_SAD_MEAN[ds]:.2f} "
                     "(`docs/baselines.md`), the bar beside the paper's number.")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="imdad")
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--out", default=str(ROOT / "docs" / "reproduction.md"))
    p.add_argument("--notes", default=str(ROOT / "docs" / "reproduction_notes.md"),
                   help="hand-written analysis placed after the summary (where and why we differ)")
    a = p.parse_args(argv)
    recs = collect(Path(a.results), a.method)
    if not recs:
        print(f"error: no results of method {a.method!r} under {a.results}; run experiments/run.py first",
              file=sys.stderr)
        return 2
    md = [f"# Reproduction report: `{a.method}`", "",
          "Generated by `python experiments/report.py"
          + (f" --method={a.method}" if a.method != "imdad" else "") + "` from the results files; do not edit by hand.",
          "The paper's column is its Tables II (images) and III (tabular); its schedule is 200 epochs. Where ours is",
          "shorter the section says so. The paper's baseline columns are weaker than the same methods in standard",
          "libraries (`docs/baselines.md`), so Deep SAD's score is given as the bar as well.", ""]
    recs = sorted(recs, key=lambda pr: (pr[1]["config"]["dataset"], str(pr[0])))
    md += ["## Summary", ""] + summary(recs, a.method)
    if a.notes and Path(a.notes).is_file():
        md += [Path(a.notes).read_text().strip(), ""]
    md += ["## Per class", ""]
    for path, rec in recs:
        md += section(path, rec, a.method)
    atomic_write(a.out, "\n".join(md))
    print(f"wrote {a.out} ({len(recs)} results files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
