#!/usr/bin/env python
"""Steps/s and run-steps/s of each run-axis strategy, side by side in one process.

    python benchmarks/bench_strategies.py --runs=1,10 --arch=cnn2 --steps=10
    python benchmarks/bench_strategies.py --runs=1,10,100,1000 --strategies=auto/scan,vmap/scan,vmap_fwd/scan,map/scan,chunked/scan

``auto/<epoch_mode>`` runs the on-device measurement that ``--strategy=auto`` makes on an accelerator (forced here
on any backend, never read from or written to the cache) and reports its choice beside the rates it measured.
A strategy that fails (out of device memory at 1000 runs, say) gets a row saying why; the others go on.

Synthetic 28x28 data of Fashion-MNIST's size per run (6000 normals + 600 anomalies per run is
not needed for timing: the pools are random indices into one shared array). Compilation is timed
apart (the first epoch), the steady-state from the later epochs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import resource  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from imdad_jax.io import atomic_write, provenance  # noqa: E402
from imdad_jax.models import build_detector  # noqa: E402
from imdad_jax.objectives import get_objective  # noqa: E402
from imdad_jax.train import RunData, fit  # noqa: E402
from imdad_jax.train.chunks import estimate_memory  # noqa: E402


def _rss_mib() -> float:
    # peak resident set of this process so far (Linux reports KiB): monotone, so read it after each row
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", default="1,10")
    p.add_argument("--arch", default="cnn2", choices=("cnn2", "fc3"))
    p.add_argument("--steps", type=int, default=10, help="steps per timed epoch")
    p.add_argument("--epochs", type=int, default=3, help="first one compiles")
    p.add_argument("--batch_size", type=int, default=150)
    p.add_argument("--strategies", default="loop/steps,loop/scan,vmap/steps,vmap/scan")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_strategies"))
    a = p.parse_args()
    obj = get_objective("imdad")
    shape = (28, 28, 1) if a.arch == "cnn2" else (21,)
    model = build_detector(a.arch)
    rng = np.random.default_rng(0)
    x = rng.random((4000, *shape), dtype=np.float32)
    rows = []
    for n_runs in (int(r) for r in a.runs.split(",")):
        pools_n = np.stack([rng.permutation(2000) for _ in range(n_runs)]).astype(np.int32)
        pools_a = np.stack([2000 + rng.permutation(2000) for _ in range(n_runs)]).astype(np.int32)
        data = RunData(x, pools_n, np.full(n_runs, 2000), pools_a, np.full(n_runs, 2000))
        hp = {k: np.full(n_runs, v, np.float32) for k, v in
              dict(lr=1e-4, weight_decay=1e-6, nu=0.5, nu1=0.1, nu2=0.1, dual_lr=0.1).items()}
        keys = np.stack([np.asarray(jax.random.PRNGKey(i)) for i in range(n_runs)])
        # XLA's own account of the vmapped step's buffers (arguments + outputs + temporaries), measured by
        # compiling it for 1 and 16 runs: the device memory a sweep of this many runs needs in one program
        mem = estimate_memory(model, obj, obj.Options(), data, hp, batch_size=a.batch_size)
        for strat in a.strategies.split(","):
            s, e = strat.split("/")
            try:
                res = fit(model, obj, obj.Options(), data, hp, keys, epochs=a.epochs, batch_size=a.batch_size,
                          strategy=s, epoch_mode=e, steps_per_epoch=a.steps, autotune_runs=s == "auto",
                          autotune_cache=False)
            except Exception as err:  # noqa: BLE001 - one strategy out of memory must not lose the others' rows
                rows.append({"runs": n_runs, "strategy": strat, "arch": a.arch, "batch": a.batch_size,
                             "error": f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"})
                print(f"{n_runs:5d} runs  {strat:11s}  failed: {rows[-1]['error']}", flush=True)
                continue
            t = float(np.median(res.epoch_s[1:]))
            row = {"runs": n_runs, "strategy": strat, "arch": a.arch, "batch": a.batch_size,
                   "steps_per_s": a.steps / t, "run_steps_per_s": a.steps * n_runs / t,
                   "samples_per_s": a.steps * n_runs * a.batch_size / t, "compile_s": res.compile_s,
                   "step_memory_mib": (mem.fixed + mem.per_run * n_runs) / 2**20, "peak_rss_mib": _rss_mib(),
                   "epoch_s": t, "ran": res.runner.name, "autotune": res.runner.autotune}
            rows.append(row)
            chose = f"  (auto chose {res.runner.name})" if s == "auto" else ""
            print(f"{n_runs:5d} runs  {strat:11s}  {row['steps_per_s']:8.2f} steps/s  "
                  f"{row['run_steps_per_s']:8.2f} run-steps/s  compile {row['compile_s']:.1f} s{chose}", flush=True)
    prov = provenance()
    atomic_write(a.out + ".json", json.dumps({"provenance": prov, "rows": rows}, indent=1) + "\n")
    md = [f"# Run-axis strategies ({a.arch}, batch {a.batch_size}, {a.steps} steps/epoch)", "",
          "| runs | strategy | steps/s | run-steps/s | samples/s | compile s | step memory MiB (XLA, vmap) "
          "| peak RSS MiB so far |", "|---|---|---|---|---|---|---|---|"]
    md += [f"| {r['runs']} | {r['strategy']} | failed: {r['error']} | | | | | |" if "error" in r else
           f"| {r['runs']} | {r['strategy']}{' -> ' + r['ran'] if r['strategy'].startswith('auto') else ''} "
           f"| {r['steps_per_s']:.2f} | {r['run_steps_per_s']:.2f} "
           f"| {r['samples_per_s']:.0f} | {r['compile_s']:.1f} | {r['step_memory_mib']:.1f} "
           f"| {r['peak_rss_mib']:.0f} |" for r in rows]
    md += ["", f"- command: `{prov['command']}`", f"- commit: `{prov['git_commit']}`",
           f"- device: {prov['devices']} ({prov['cpu_count']} cores); jax {prov['versions']['jax']}", ""]
    atomic_write(a.out + ".md", "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
