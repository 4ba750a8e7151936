#!/usr/bin/env python
"""Train one IMD-AD detector per normal class (x seed), all as one program, and write the AUC table.

    python experiments/run.py --dataset=fmnist --all_classes            # the paper's schedule
    python experiments/run.py --dataset=fmnist --all_classes --preset=quick

A thin shell: flags -> ExperimentConfig -> imdad_jax.experiment.run_experiment -> results files.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from imdad_jax.config import ConfigError, PRESETS, make_config  # noqa: E402
from imdad_jax.data.fashion_mnist import ENV_VAR, DataNotFoundError, load_fashion_mnist  # noqa: E402
from imdad_jax.data.idx import DataFileError  # noqa: E402


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fmnist")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--all_classes", action="store_true", help="every class in turn as the normal class")
    g.add_argument("--class", dest="classes", type=_ints, help="normal class(es), e.g. 0 or 0,2,6")
    p.add_argument("--seeds", type=_ints, default=(0,), help="seeds, e.g. 0,1,2 (each adds a run per class)")
    p.add_argument("--preset", default="paper", help=f"named schedule: {', '.join(PRESETS)} (default: paper)")
    for name, typ in (("epochs", int), ("batch_size", int), ("lr", float), ("weight_decay", float), ("nu", float),
                      ("nu1", float), ("nu2", float), ("dual_lr", float), ("kappa", float),
                      ("anomaly_fraction", float)):
        p.add_argument(f"--{name}", type=typ, help="overrides the preset")
    p.add_argument("--conv_features", type=_ints)
    p.add_argument("--dense_features", type=_ints)
    p.add_argument("--margin_param", help="softplus (default) or raw")
    p.add_argument("--center_constraint", help="projection (default), multiplier or augmented")
    p.add_argument("--strategy", help="auto (default), vmap or loop")
    p.add_argument("--epoch_mode", help="auto (default), scan or steps")
    p.add_argument("--data_dir", help=f"folder with the IDX files (else ${ENV_VAR}, the Debian package, TFDS)")
    p.add_argument("--out_dir", default=str(ROOT / "results"))
    p.add_argument("--name", help="results file stem (default from dataset, preset and epochs)")
    p.add_argument("--estimate", choices=("auto", "yes", "no"), default="auto",
                   help="measure and print the expected wall time first (auto: on CPU only)")
    p.add_argument("--no_progress", action="store_true")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace):
    over = {k: getattr(a, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "nu", "nu1", "nu2", "dual_lr",
                                       "kappa", "anomaly_fraction", "conv_features", "dense_features",
                                       "margin_param", "center_constraint", "strategy", "epoch_mode")
            if getattr(a, k) is not None}
    over["dataset"] = a.dataset
    over["seeds"] = a.seeds
    if a.classes is not None:
        over["classes"] = a.classes
    elif not a.all_classes:
        raise ConfigError("no normal class given; pass --class=K (e.g. --class=0 or --class=0,2) or --all_classes")
    return make_config(a.preset, **over)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        cfg = config_from_args(a)
        data = load_fashion_mnist(a.data_dir, os.environ.get(ENV_VAR))
        n_classes = len(data.class_names)
        if a.all_classes:
            cfg.classes = tuple(range(n_classes))
        bad = [k for k in cfg.classes if not 0 <= k < n_classes]
        if bad:
            raise ConfigError(f"unknown class {bad} for {cfg.dataset}: classes are 0..{n_classes - 1} "
                              f"({', '.join(data.class_names)})")
    except (ConfigError, DataNotFoundError, DataFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    import jax

    from imdad_jax.experiment import estimate_seconds, run_experiment
    from imdad_jax.io import per_class_table, provenance, write_results
    from imdad_jax.paper import PAPER_AUC

    n_runs = len(cfg.classes) * len(cfg.seeds)
    print(f"data: {data.source}; {n_runs} runs ({len(cfg.classes)} classes x {len(cfg.seeds)} seeds) "
          f"on {jax.default_backend()} ({len(jax.devices())} device(s)); preset {cfg.preset}, {cfg.epochs} epochs")
    if a.estimate == "yes" or (a.estimate == "auto" and jax.default_backend() == "cpu"):
        est = estimate_seconds(cfg, data)
        msg = (f"measured {est['seconds_per_step_all_runs'] * 1e3:.0f} ms per step for all {n_runs} runs "
               f"({est['strategy']}/{est['epoch_mode']}), {est['steps_per_epoch']} steps/epoch: this schedule takes "
               f"about {est['total_s'] / 60:.1f} min")
        if cfg.preset == "paper" and jax.default_backend() == "cpu":
            quick = PRESETS["quick"]["epochs"]
            msg += (f". No accelerator here: for a shorter run use --preset=quick ({quick} epochs, about "
                    f"{est['total_s'] / cfg.epochs * quick / 60:.1f} min)")
        print(msg, flush=True)

    from tqdm import tqdm

    bar = tqdm(total=cfg.epochs, unit="epoch", disable=a.no_progress, file=sys.stdout)

    def on_epoch(ep, means, elapsed):
        bar.set_postfix(loss=f"{float(means['loss'].mean()):.4f}", R2=f"{float(means['radius2'].mean()):.3f}",
                        rho2=f"{float(means['margin2'].mean()):.3f}")
        bar.update(1)

    t0 = time.perf_counter()
    out = run_experiment(cfg, data, callback=on_epoch)
    bar.close()
    out["timing"]["wall_s_cli"] = time.perf_counter() - t0
    record = {"config": cfg.to_dict(), "provenance": provenance(["python", "experiments/run.py", *(argv or sys.argv[1:])]),
              "data_source": data.source, **out}
    table = per_class_table(out["runs"], data.class_names, PAPER_AUC.get(cfg.dataset))
    stem = a.name or f"{cfg.dataset}_{cfg.method}_{cfg.preset}_e{cfg.epochs}"
    jp, mp = write_results(a.out_dir, stem, record, table)
    print(table)
    diverged = [r for r in out["runs"] if r["diverged"]]
    if diverged:
        print(f"warning: {len(diverged)} run(s) diverged: "
              + ", ".join(f"class {r['normal_class']} seed {r['seed']}" for r in diverged), file=sys.stderr)
    print(f"wall time {out['timing']['total_s']:.1f} s; wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
