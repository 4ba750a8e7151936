#!/usr/bin/env python
"""Same AUC with the hand-written BatchNorm gradient: Deep SVDD, LeNet-size encoder with BatchNorm, every
Fashion-MNIST class x two seeds, trained twice in one process: once with flax's ``nn.BatchNorm`` (autodiff's
gradient), once with ``imdad_jax.models.layers.AffineFreeBatchNorm`` (the library's). The two gradients agree to
float rounding, so the runs may drift apart by rounding over training; this measures whether that moves the AUC
more than changing the seed does.

    python benchmarks/check_bn_gradient_auc.py             # writes benchmarks/results_bn_gradient_auc.{json,md}
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flax.linen as nn  # noqa: E402
import numpy as np  # noqa: E402

from imdad_jax.ablation import subsample  # noqa: E402
from imdad_jax.config import make_config  # noqa: E402
from imdad_jax.data import load_fashion_mnist  # noqa: E402
from imdad_jax.experiment import run_experiment  # noqa: E402
from imdad_jax.io import atomic_write, provenance  # noqa: E402
from imdad_jax.io.host import tune_host_allocator  # noqa: E402
from imdad_jax.io.results import cpu_model  # noqa: E402
from imdad_jax.models import encoders  # noqa: E402


def flax_batch_norm(name: str) -> nn.BatchNorm:
    # What encoders._batch_norm returned before AffineFreeBatchNorm: same variables and forward.
    return nn.BatchNorm(use_running_average=None, momentum=0.9, epsilon=1e-4, use_bias=False, use_scale=False,
                        name=name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--train_per_class", type=int, default=2000)
    p.add_argument("--test_per_class", type=int, default=500)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_bn_gradient_auc"))
    a = p.parse_args(argv)
    tune_host_allocator()
    ds = subsample(load_fashion_mnist(None), a.train_per_class, a.test_per_class)
    seeds = tuple(int(s) for s in a.seeds.split(","))
    cfg = make_config("paper", dataset="fmnist", method="deep_svdd", conv_features=(8, 4), dense_features=(32,),
                      batch_norm=True, classes=tuple(range(10)), seeds=seeds, epochs=a.epochs, batch_size=150,
                      lr=1e-4, milestone_fractions=())
    aucs, walls = {}, {}
    library = encoders._batch_norm
    for variant, bn in (("flax nn.BatchNorm (autodiff gradient)", flax_batch_norm),
                        ("AffineFreeBatchNorm (hand-written gradient)", library)):
        encoders._batch_norm = bn
        try:
            t = time.perf_counter()
            out = run_experiment(cfg, ds)
            walls[variant] = time.perf_counter() - t
        finally:
            encoders._batch_norm = library
        aucs[variant] = {(r["normal_class"], r["seed"]): float(r["auc"]) for r in out["runs"]}
        print(f"{variant}: mean AUC {np.mean(list(aucs[variant].values())):.4f} ({walls[variant]:.0f} s)", flush=True)
    (va, a_auc), (vb, b_auc) = aucs.items()
    keys = sorted(a_auc)
    diff = np.array([b_auc[k] - a_auc[k] for k in keys])
    # the seed's effect on the same class and implementation: the noise floor the difference is compared with
    by_class = {}
    for (c, s), v in a_auc.items():
        by_class.setdefault(c, []).append(v)
    seed_spread = np.array([np.std(v, ddof=1) for v in by_class.values() if len(v) > 1])
    summary = {"mean_auc": {va: float(np.mean(list(a_auc.values()))), vb: float(np.mean(list(b_auc.values())))},
               "per_run_abs_diff_mean": float(np.mean(np.abs(diff))), "per_run_abs_diff_max": float(np.max(np.abs(diff))),
               "seed_std_mean": float(np.mean(seed_spread)) if len(seed_spread) else None}
    meta = {**provenance(argv), "cpu_model": cpu_model(), "config": {k: str(v) for k, v in vars(cfg).items()},
            "subsample": ds.source, "wall_s": walls}
    rows = [{"class": c, "seed": s, va: a_auc[(c, s)], vb: b_auc[(c, s)]} for c, s in keys]
    atomic_write(a.out + ".json", json.dumps({"meta": meta, "summary": summary, "runs": rows}, indent=1) + "\n")
    lines = ["# Same AUC with the hand-written BatchNorm gradient (`benchmarks/check_bn_gradient_auc.py`)", "",
             f"Deep SVDD, LeNet-size encoder (conv 8, 4; dense 32) with affine-free BatchNorm, {a.epochs} epochs, "
             f"batch 150, lr 1e-4, every class x seeds {seeds}; data: {ds.source}.", "",
             f"| class | seed | {va} | {vb} | difference |", "|---|---|---|---|---|"]
    lines += [f"| {c} | {s} | {a_auc[(c, s)]:.4f} | {b_auc[(c, s)]:.4f} | {b_auc[(c, s)] - a_auc[(c, s)]:+.4f} |"
              for c, s in keys]
    lines += ["", f"Mean AUC: {summary['mean_auc'][va]:.4f} vs {summary['mean_auc'][vb]:.4f}; per-run |difference| "
              f"mean {summary['per_run_abs_diff_mean']:.1e}, max {summary['per_run_abs_diff_max']:.1e}; "
              f"the seed's own effect (std of a class's AUC over seeds, mean over classes, flax variant): "
              f"{summary['seed_std_mean']:.4f}.", "",
              f"- command: `{meta['command']}`; commit `{meta['git_commit']}`{' (tree dirty)' if meta['git_dirty'] else ''}",
              f"- {meta['cpu_model']}, {meta['devices']}; jax {meta['versions'].get('jax')}, flax "
              f"{meta['versions'].get('flax')}; wall {', '.join(f'{k}: {v:.0f} s' for k, v in walls.items())}", ""]
    atomic_write(a.out + ".md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
