#!/usr/bin/env python
"""Train one detector per normal class (x seed), all as one program, and write the AUC table.

    python experiments/run.py --dataset=fmnist --all_classes            # IMD-AD, the paper's schedule
    python experiments/run.py --dataset=fmnist --all_classes --preset=quick
    python experiments/run.py --dataset=fmnist --all_classes --method=all --preset=quick   # every method
    python experiments/run.py --dataset=fmnist --all_classes --method=ablation             # Deep SVDD -> IMD-AD

A thin shell: flags (one per config field, imdad_jax.config_flags) -> ExperimentConfig ->
imdad_jax.pipeline.train_and_evaluate -> results files. Every setting is also ``--section.name``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from imdad_jax.config import DATASETS, IMAGE_DATASETS, METHODS, PRESETS, ConfigError, make_config  # noqa: E402
from imdad_jax.config_flags import add_config_flags, config_overrides, parse_ints  # noqa: E402
from imdad_jax.data import DataFileError, DataNotFoundError, load_dataset  # noqa: E402,F401
from imdad_jax.pipeline import ABLATION, RunSettings, train_and_evaluate_methods  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fmnist", help=f"{', '.join(DATASETS)}; a comma list; or 'all' (every "
                   "dataset whose files are on this machine, images at --preset=quick on a CPU unless --preset is "
                   "given)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--all_classes", action="store_true", help="every class in turn as the normal class")
    g.add_argument("--class", dest="classes", type=parse_ints, help="normal class(es), e.g. 0 or 0,2,6")
    p.add_argument("--seeds", type=parse_ints, default=(0,), help="seeds, e.g. 0,1,2 (each adds a run per class)")
    p.add_argument("--preset", help=f"named schedule: {', '.join(PRESETS)} (default: paper)")
    p.add_argument("--method", default="imdad", help=f"one of {', '.join(METHODS)}; a comma list; 'all' (every "
                   f"method); or 'ablation' ({' -> '.join(ABLATION)})")
    p.add_argument("--data_dir", help="folder with the image dataset's files (else $IMDAD_MNIST_DIR, "
                   "$IMDAD_FMNIST_DIR, $IMDAD_CIFAR10_DIR, then the places docs/data.md lists, then TFDS)")
    p.add_argument("--out_dir", default=str(ROOT / "results"), help="the work directory: results files, checkpoints")
    p.add_argument("--name", help="results file stem (default from dataset, preset and epochs)")
    p.add_argument("--estimate", choices=("auto", "yes", "no"), default="auto",
                   help="measure and print the expected wall time first (auto: on CPU only)")
    p.add_argument("--no_progress", action="store_true")
    c = p.add_argument_group("checkpoints (Orbax; deep methods)")
    c.add_argument("--checkpoint_every", type=int, default=10,
                   help="save every run's state every N epochs and after the last (default 10; 0: no checkpoints)")
    c.add_argument("--checkpoint_dir", help="folder for the checkpoints (default OUT_DIR/checkpoints/<results stem>)")
    c.add_argument("--keep_checkpoints", type=int, default=2, help="newest checkpoints kept per phase (default 2)")
    r = c.add_mutually_exclusive_group()
    r.add_argument("--resume", action="store_true", help="continue an interrupted run (same flags) from its newest "
                   "checkpoint; the final numbers equal an uninterrupted run's")
    r.add_argument("--restart", action="store_true", help="discard an interrupted run's checkpoints and start afresh")
    add_config_flags(p)
    return p.parse_args(argv)


def _names(text: str, known: tuple[str, ...], kind: str, groups: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """A named group (``all``, ...) or a comma list of names from ``known``; one error naming the bad ones."""
    if text in groups:
        return groups[text]
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"unknown {kind} {bad or text!r}; choose from {', '.join(known)} or "
                          + " or ".join(f"'{g}'" for g in groups))
    return names


def parse_methods(text: str) -> tuple[str, ...]:
    return _names(text, METHODS, "method", {"all": METHODS, "ablation": ABLATION})


def config_from_args(a: argparse.Namespace, method: str = "imdad", n_classes: int | None = None):
    if a.classes is None and not a.all_classes:
        raise ConfigError("no normal class given; pass --class=K (e.g. --class=0 or --class=0,2) or --all_classes")
    classes = tuple(range(n_classes)) if a.all_classes and n_classes else a.classes
    return make_config(a.preset or "paper", **config_overrides(a), method=method, dataset=a.dataset, seeds=a.seeds,
                       **({"classes": classes} if classes is not None else {}))


def settings_from_args(a: argparse.Namespace, argv: list[str] | None) -> RunSettings:
    return RunSettings(a.name, a.method not in METHODS, a.checkpoint_every, a.checkpoint_dir, a.keep_checkpoints,
                       a.resume, a.restart, a.estimate, not a.no_progress, a.data_dir,
                       ["python", "experiments/run.py", *(argv if argv is not None else sys.argv[1:])])


def run_dataset(a: argparse.Namespace, argv: list[str] | None, missing_ok: bool = False) -> int:
    """Every method of ``a`` on the one dataset ``a.dataset``; 2 on a bad setting, 3 when the data is absent."""
    from imdad_jax.train import TrainingInterrupted

    settings = settings_from_args(a, argv)
    try:
        cfgs = [config_from_args(a, m) for m in parse_methods(a.method)]
        data = load_dataset(a.dataset, a.data_dir)
        n = len(data.class_names)
        cfgs = [config_from_args(a, c.method, n) for c in cfgs]
        bad = [k for k in cfgs[0].classes if not 0 <= k < n]
        if bad:
            raise ConfigError(f"unknown class {bad} for {a.dataset}: classes are 0..{n - 1} "
                              f"({', '.join(data.class_names)})")
        train_and_evaluate_methods(cfgs, a.out_dir, data, settings)
    except DataNotFoundError as e:
        print(f"{'skipping ' + a.dataset if missing_ok else 'error'}: {e}", file=sys.stderr)
        return 3 if missing_ok else 2
    except (ConfigError, DataFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except TrainingInterrupted as e:
        cmd = " ".join(settings.command).replace(" --restart", "")
        print(f"\ninterrupted ({e.signal_name}): [{e.method}] {e}.\nresume with: {cmd}"
              f"{'' if a.resume else ' --resume'}", file=sys.stderr, flush=True)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        datasets = _names(a.dataset, DATASETS, "dataset", {"all": DATASETS})
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(datasets) == 1:
        return run_dataset(argparse.Namespace(**{**vars(a), "dataset": datasets[0]}), argv)
    if a.name:
        print("error: --name names one dataset's files; drop it with several datasets", file=sys.stderr)
        return 2
    import jax

    # Images at the paper's length only where an accelerator makes it affordable (hours on a CPU).
    image_preset = a.preset or ("quick" if jax.default_backend() == "cpu" else "paper")
    codes = {}
    for name in datasets:
        preset = image_preset if name in IMAGE_DATASETS else (a.preset or "paper")
        print(f"=== {name} (preset {preset}) ===", flush=True)
        codes[name] = run_dataset(argparse.Namespace(**{**vars(a), "dataset": name, "preset": preset}), argv,
                                  missing_ok=True)
    print("datasets: " + ", ".join(f"{n} {'done' if c == 0 else 'skipped (no data)' if c == 3 else 'failed'}"
                                   for n, c in codes.items()))
    failed = [c for c in codes.values() if c != 3]
    return max(failed) if failed else 3


if __name__ == "__main__":
    sys.exit(main())
