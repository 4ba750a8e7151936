#!/usr/bin/env python
"""What a user who loops over seeds pays: five sequential ``IMDAD().fit`` against one ``fit_many`` of the same five.

    python benchmarks/bench_estimator_compile.py                      # writes benchmarks/results_estimator_compile.*
    PYTHONPATH=/old/checkout python benchmarks/bench_estimator_compile.py --name=results_estimator_compile_before

Each scenario runs in a fresh Python process (nothing compiled yet, JAX's persistent compilation cache off), on
one table a user might have: 5,000 normal rows and 250 anomalies of 20 correlated features, a stratified 70/30
split, 10% of the training anomalies labelled, the unlabelled ones dropped (the paper's protocol); 100 epochs:

* ``fits``: ``IMDAD(random_state=s).fit(X, y)`` for s = 0..4 in a row: each fit's wall time and the seconds XLA
  spent compiling in it (JAX's ``backend_compile`` events);
* ``fit_many``: ``IMDAD().fit_many(X, y, seeds=(0..4))`` (the default: every run with a single fit's program);
* ``fit_many_vmap``: the same with ``strategy="vmap"`` (the five side by side in one program).

The test AUC of every seed is reported for each scenario, side by side, with the largest score difference between
run k of ``fit_many`` and the k-th single fit. Ratios are of wall times in the same invocation, on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2, 3, 4)


def make_table(seed: int = 0, n: int = 5000, m: int = 250, d: int = 20):
    """Normals from a two-component Gaussian mixture with random correlations, anomalies of three kinds."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mix = rng.integers(0, 2, n)
    means = rng.normal(0, 2, (2, d))
    chol = [np.linalg.cholesky(np.cov(rng.normal(size=(d, 3 * d)))) for _ in range(2)]
    normals = np.stack([means[k] + chol[k] @ rng.normal(size=d) for k in mix])
    kind = rng.integers(0, 3, m)
    anomalies = np.empty((m, d))
    for i, k in enumerate(kind):
        base = means[rng.integers(0, 2)] + chol[0] @ rng.normal(size=d)
        if k == 0:  # a shifted cluster
            base = base + 2.5
        elif k == 1:  # scattered
            base = rng.uniform(-8, 8, d)
        else:  # a few features pushed out
            j = rng.choice(d, 3, replace=False)
            base[j] += rng.choice([-1, 1], 3) * 6
        anomalies[i] = base
    x = np.concatenate([normals, anomalies]).astype(np.float32)
    y = np.r_[np.zeros(n, int), np.ones(m, int)]
    return x, y


def split(x, y, seed: int = 0):
    """70/30 stratified; 10% of the training anomalies labelled, the other training anomalies dropped."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    rng = np.random.default_rng(seed)
    anom = np.flatnonzero(ytr == 1)
    labelled = rng.choice(anom, max(1, round(0.1 * len(anom))), replace=False)
    keep = np.r_[np.flatnonzero(ytr == 0), labelled]
    return xtr[keep], ytr[keep], xte, yte


def scenario(name: str, epochs: int) -> dict:
    """One scenario in this (fresh) process."""
    import jax
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from imdad_jax.estimator import IMDAD

    compile_s: list[float] = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: compile_s.append(secs) if event.endswith("backend_compile_duration") else None)
    x, y = make_table()
    xtr, ytr, xte, yte = split(x, y)
    out: dict = {"scenario": name, "rows": int(len(xtr)), "features": int(x.shape[1]), "epochs": epochs}
    t0 = time.perf_counter()
    if name == "fits":
        dets, per_fit = [], []
        for s in SEEDS:
            c0, t = len(compile_s), time.perf_counter()
            dets.append(IMDAD(epochs=epochs, random_state=s).fit(xtr, ytr))
            per_fit.append({"seed": s, "wall_s": time.perf_counter() - t, "compile_s": sum(compile_s[c0:]),
                            "programs_compiled": len(compile_s) - c0})
        out["per_fit"] = per_fit
    else:
        kw = {"strategy": "vmap"} if name == "fit_many_vmap" else {}
        dets = IMDAD(epochs=epochs).fit_many(xtr, ytr, seeds=SEEDS, **kw)
    out["wall_s"] = time.perf_counter() - t0
    out["compile_s"] = sum(compile_s)
    scores = np.stack([d.decision_function(xte) for d in dets])
    out["test_auc"] = [float(roc_auc_score(yte, s)) for s in scores]
    np.save(os.environ["BENCH_SCORES"], scores)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--scenarios", default="fits,fit_many,fit_many_vmap")
    p.add_argument("--name", default="results_estimator_compile")
    p.add_argument("--out_dir", default=str(ROOT / "benchmarks"))
    p.add_argument("--_one", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._one:
        print(json.dumps(scenario(a._one, a.epochs)))
        return 0

    import numpy as np

    from imdad_jax.io import atomic_write, provenance

    env = {**os.environ, "IMDAD_NO_COMPILE_CACHE": "1", "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    rows, scores = {}, {}
    t0 = time.perf_counter()
    for name in a.scenarios.split(","):
        path = Path(a.out_dir) / f".{a.name}_{name}.npy"
        r = subprocess.run([sys.executable, __file__, f"--_one={name}", f"--epochs={a.epochs}"], env={
            **env, "BENCH_SCORES": str(path)}, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            rows[name] = {"scenario": name, "error": r.stderr.strip().splitlines()[-1]}
            continue
        rows[name] = json.loads(r.stdout.strip().splitlines()[-1])
        scores[name] = np.load(path)
        path.unlink()
        print(f"{name}: {rows[name]['wall_s']:.2f} s (compiling {rows[name]['compile_s']:.2f} s)", flush=True)
    result = {"rows": rows, "provenance": provenance(), "wall_s": time.perf_counter() - t0,
              "config": {"epochs": a.epochs, "seeds": list(SEEDS), "table": "make_table(): 5000 + 250 rows, 20 "
                         "features; split(): 70/30, 10% of the training anomalies labelled"}}
    if "fits" in scores:
        for name in scores:
            if name != "fits":
                rows[name]["max_score_diff_vs_fits"] = float(np.abs(scores[name] - scores["fits"]).max())
    out = Path(a.out_dir)
    atomic_write(out / f"{a.name}.json", json.dumps(result, indent=1) + "\n")
    atomic_write(out / f"{a.name}.md", _markdown(result))
    print((out / f"{a.name}.md").read_text())
    return 0


def _markdown(result: dict) -> str:
    rows, prov = result["rows"], result["provenance"]
    device = f"{prov.get('backend', '?')}: {prov.get('devices', '?')}, {prov.get('cpu_count', '?')} CPU cores"
    lines = [f"# Five sequential fits against one fit_many ({device})", "",
             f"`{prov.get('command', '')}` at `{prov.get('git_commit', '?')}`"
             f"{' (uncommitted changes)' if prov.get('git_dirty') else ''}, total {result['wall_s']:.0f} s; "
             f"{result['config']['table']}; "
             f"{result['config']['epochs']} epochs; each scenario in a fresh process, persistent compilation cache "
             "off. Wall times in seconds, on this machine, in one invocation.", "",
             "| scenario | wall s | of it compiling s | ratio to fit_many | test AUC per seed 0-4 | max score diff vs fits |",
             "|---|---|---|---|---|---|"]
    base = rows.get("fit_many", {}).get("wall_s")
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | |")
            continue
        ratio = f"{r['wall_s'] / base:.2f}x" if base else ""
        aucs = " / ".join(f"{v:.4f}" for v in r["test_auc"])
        diff = r.get("max_score_diff_vs_fits", "")
        lines.append(f"| {name} | {r['wall_s']:.2f} | {r['compile_s']:.2f} | {ratio} | {aucs} | "
                     f"{diff if diff == '' else f'{diff:.3g}'} |")
    if "per_fit" in rows.get("fits", {}):
        lines += ["", "Each of the five fits (seconds):", "", "| seed | wall | compiling | programs compiled |",
                  "|---|---|---|---|"]
        lines += [f"| {f['seed']} | {f['wall_s']:.2f} | {f['compile_s']:.3f} | {f['programs_compiled']} |"
                  for f in rows["fits"]["per_fit"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
