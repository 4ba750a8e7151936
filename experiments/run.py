#!/usr/bin/env python
"""Train one detector per normal class (x seed), all as one program, and write the AUC table.

    python experiments/run.py --dataset=fmnist --all_classes            # IMD-AD, the paper's schedule
    python experiments/run.py --dataset=fmnist --all_classes --preset=quick
    python experiments/run.py --dataset=fmnist --all_classes --method=all --preset=quick   # every method
    python experiments/run.py --dataset=fmnist --all_classes --method=ablation             # Deep SVDD -> IMD-AD

A thin shell: flags -> ExperimentConfig -> imdad_jax.experiment.run_experiment -> results files.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from imdad_jax.config import (DATASETS, DEEP_METHODS, IMAGE_DATASETS, METHODS, OBJECTIVE_HP, PRESETS,  # noqa: E402
                              ConfigError, make_config)
from imdad_jax.data.fashion_mnist import DataNotFoundError  # noqa: E402
from imdad_jax.data.registry import load_dataset  # noqa: E402
from imdad_jax.data.idx import DataFileError  # noqa: E402


# The paper's ablation chain (Sec. IV-E): D-AD extends Deep SVDD soft-boundary, so that is the base.
ABLATION = ("deep_svdd_soft", "dad", "mdad", "imdad")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fmnist",
                   help="mnist, fmnist, cifar10; tabular/synthetic: bc, card, on, moons, spiral; a comma list; or "
                        "'all' (every dataset whose files are on this machine, images at --preset=quick on a CPU "
                        "unless --preset is given)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--all_classes", action="store_true", help="every class in turn as the normal class")
    g.add_argument("--class", dest="classes", type=_ints, help="normal class(es), e.g. 0 or 0,2,6")
    p.add_argument("--seeds", type=_ints, default=(0,), help="seeds, e.g. 0,1,2 (each adds a run per class)")
    p.add_argument("--preset", help=f"named schedule: {', '.join(PRESETS)} (default: paper)")
    p.add_argument("--method", default="imdad",
                   help=f"one of {', '.join(METHODS)}; a comma list; 'all' (every method); or 'ablation' "
                        f"({' -> '.join(ABLATION)})")
    for name, typ in (("epochs", int), ("batch_size", int), ("lr", float), ("weight_decay", float), ("kappa", float),
                      ("anomaly_fraction", float), ("anomaly_share", float), ("drocc_ascent_steps", int),
                      ("pretrain_epochs", int),
                      ("shallow_max_train", int), ("shallow_pca_dims", int), ("n_folds", int), *((h, float) for h in OBJECTIVE_HP)):
        p.add_argument(f"--{name}", type=typ, help="overrides the preset / the method's default")
    p.add_argument("--tune", help="choose per-run values on a validation split of each run's training data, e.g. "
                                  "'lr=1e-3,1e-4;nu1=0.05,0.1' (every combination trains as one program)")
    p.add_argument("--val_fraction", type=float, help="share of each run's training normals and labelled anomalies "
                                                      "held out for --tune (default 0.25)")
    p.add_argument("--preprocess", help="images: unit (default: pixels in [0, 1]), standardize, gcn_minmax or zca, "
                                        "fit on each run's training normals only (docs/data.md)")
    p.add_argument("--conv_features", type=_ints)
    p.add_argument("--dense_features", type=_ints)
    p.add_argument("--batch_norm", action="store_true", default=None,
                   help="affine-free BatchNorm in every conv block and hidden dense layer; statistics per run")
    p.add_argument("--dropout", type=float, help="dropout rate after every conv block and hidden dense layer "
                                                 "(default 0: off); each run draws its own masks")
    p.add_argument("--conv_impl", help="how convolutions are computed: auto (default: fastest measured per backend), "
                                       "xla or im2col; the same numbers up to float rounding")
    p.add_argument("--layer_norm", action="store_true", default=None,
                   help="bias-free LayerNorm in every conv block and hidden dense layer (docs/method.md)")
    p.add_argument("--residual", action="store_true", default=None,
                   help="residual connections around every conv block and hidden dense layer")
    p.add_argument("--se_attention", action="store_true", default=None,
                   help="squeeze-and-excitation channel attention after every conv block and hidden dense layer")
    p.add_argument("--projection", type=int, help="a bias-free dense projection to this many features before the "
                                                  "head (default 0: none)")
    p.add_argument("--margin_param", help="softplus (default) or raw")
    p.add_argument("--center_constraint", help="projection (default), multiplier or augmented")
    p.add_argument("--max_runs", help="runs per program: 'auto' (default: as many as fit in the accelerator's memory, "
                                      "measured; all at once on a CPU), 'all', or a number (larger sweeps train in "
                                      "chunks of that many, with the same numbers per run)")
    p.add_argument("--strategy", help="how the run axis executes: auto (default: on an accelerator, a few measured "
                                      "steps of vmap, vmap_fwd, map and chunked, the fastest kept and cached; on a "
                                      "CPU loop for CNNs, vmap for MLPs), vmap, vmap_fwd, map, chunked or loop "
                                      "(docs/scaling.md)")
    p.add_argument("--epoch_mode", help="auto (default), scan or steps")
    p.add_argument("--chunk_runs", type=int, help="runs per vmapped group of --strategy=chunked (default 8)")
    p.add_argument("--unroll", type=int, help="steps per iteration of a scanned epoch (default 1)")
    p.add_argument("--data_dir", help="folder with the image dataset's files (else $IMDAD_MNIST_DIR, $IMDAD_FMNIST_DIR, "
                                      "$IMDAD_CIFAR10_DIR, then the places docs/data.md lists, then TFDS)")
    p.add_argument("--out_dir", default=str(ROOT / "results"))
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
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run (same flags) from its newest checkpoint; the final numbers "
                        "equal an uninterrupted run's")
    r.add_argument("--restart", action="store_true", help="discard an interrupted run's checkpoints and start afresh")
    f = p.add_argument_group("feature patching (FPSVDD; docs/method.md): a per-patch head on frozen backbone "
                             "features, hypersphere methods on images")
    f.add_argument("--feature_patching", action="store_true", default=None,
                   help="train --dense_features as an MLP on every patch embedding of a frozen backbone")
    f.add_argument("--backbone_params", metavar="FILE",
                   help="the backbone's weights (.npz, or an Orbax checkpoint folder); default: random, which tests "
                        "the mechanics only")
    f.add_argument("--backbone_features", type=_ints, help="the backbone's stage widths (default 16,32,64)")
    f.add_argument("--patch_layers", type=_ints, help="stages whose maps are patched (default 1,2)")
    f.add_argument("--patch_size", type=int, help="neighbourhood averaged around every patch (default 3)")
    f.add_argument("--patch_reduce", help="an image's score from its patches': max (default) or mean")
    return p.parse_args(argv)


def _parse_names(text: str, known: tuple[str, ...], kind: str, groups: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """A named group (``all``, ...) or a comma list of names from ``known``; one error naming the bad ones."""
    if text in groups:
        return groups[text]
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ConfigError(f"unknown {kind} {bad or text!r}; choose from {', '.join(known)} or "
                          + " or ".join(f"'{g}'" for g in groups))
    return names


def parse_datasets(text: str) -> tuple[str, ...]:
    """``all`` or a comma list of dataset names."""
    return _parse_names(text, DATASETS, "dataset", {"all": DATASETS})


def parse_methods(text: str) -> tuple[str, ...]:
    """``all``, ``ablation`` or a comma list of method names."""
    return _parse_names(text, METHODS, "method", {"all": METHODS, "ablation": ABLATION})


def config_from_args(a: argparse.Namespace, method: str = "imdad"):
    over = {k: getattr(a, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "kappa", "anomaly_fraction",
                                       "anomaly_share", "conv_features", "dense_features", "margin_param",
                                       "center_constraint", "batch_norm", "dropout", "conv_impl", "layer_norm", "residual",
                                       "se_attention",
                                       "projection",
                                       "strategy", "epoch_mode", "chunk_runs", "unroll", "drocc_ascent_steps", "pretrain_epochs",
                                       "shallow_max_train", "shallow_pca_dims", "n_folds", "preprocess", *OBJECTIVE_HP)
            if getattr(a, k) is not None}
    if a.tune:
        from imdad_jax.tuning import parse_grid
        try:
            over["tune"] = parse_grid(a.tune)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if a.val_fraction is not None:
        over["val_fraction"] = a.val_fraction
    if a.max_runs is not None:
        if a.max_runs in ("auto", "all"):
            over["max_runs"] = None if a.max_runs == "all" else "auto"
        else:
            try:
                over["max_runs"] = int(a.max_runs)
            except ValueError:
                raise ConfigError(f"--max_runs must be 'auto', 'all' or a number of runs, got {a.max_runs!r}") from None
    for k in ("feature_patching", "backbone_params", "backbone_features", "patch_layers", "patch_size", "patch_reduce"):
        if getattr(a, k, None) is not None:
            over[k] = getattr(a, k)
    over["method"] = method
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
        datasets = parse_datasets(a.dataset)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if len(datasets) == 1:
        a.dataset = datasets[0]
        a.preset = a.preset or "paper"
        return run_dataset(a, argv)
    if a.name:
        print("error: --name names one dataset's files; drop it with several datasets", file=sys.stderr)
        return 2
    import jax

    # Images at the paper's length only where an accelerator makes it affordable (hours on a CPU).
    image_preset = a.preset or ("quick" if jax.default_backend() == "cpu" else "paper")
    codes = {}
    for name in datasets:
        sub = argparse.Namespace(**{**vars(a), "dataset": name,
                                    "preset": image_preset if name in IMAGE_DATASETS else (a.preset or "paper")})
        print(f"=== {name} (preset {sub.preset}) ===", flush=True)
        codes[name] = run_dataset(sub, argv, missing_ok=True)
    print("datasets: " + ", ".join(f"{n} {'done' if c == 0 else 'skipped (no data)' if c == 3 else 'failed'}"
                                   for n, c in codes.items()))
    return max(c for c in codes.values() if c != 3) if any(c != 3 for c in codes.values()) else 3


def run_dataset(a: argparse.Namespace, argv: list[str] | None, missing_ok: bool = False) -> int:
    """Every method of ``a`` on the one dataset ``a.dataset``; 2 on a bad setting, 3 when the data is absent."""
    try:
        methods = parse_methods(a.method)
        cfgs = [config_from_args(a, m) for m in methods]
        try:
            data = load_dataset(cfgs[0].dataset, a.data_dir)
        except DataNotFoundError as e:
            if missing_ok:
                print(f"skipping {a.dataset}: {e}", file=sys.stderr)
                return 3
            raise
        n_classes = len(data.class_names)
        for cfg in cfgs:
            if a.all_classes:
                cfg.classes = tuple(range(n_classes))
            bad = [k for k in cfg.classes if not 0 <= k < n_classes]
            if bad:
                raise ConfigError(f"unknown class {bad} for {cfg.dataset}: classes are 0..{n_classes - 1} "
                                  f"({', '.join(data.class_names)})")
        for cfg in cfgs:
            prepare_checkpoints(a, cfg)
        import jax  # noqa: F401  (after the cheap checks: importing JAX takes seconds)

        from imdad_jax.io.compile_cache import enable_compile_cache
        from imdad_jax.io.host import tune_host_allocator

        enable_compile_cache()
        tune_host_allocator()  # XLA:CPU steps ~1.2x faster (imdad_jax.io.host)

        from imdad_jax.experiment import objective_options, run_hyperparams
        for cfg in cfgs:  # every method's hyperparameters checked before anything trains
            if cfg.method in DEEP_METHODS:
                objective_options(cfg)[0].validate_hp(run_hyperparams(cfg, 1))
    except (ConfigError, DataNotFoundError, DataFileError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from imdad_jax.train import TrainingInterrupted

    results = {}
    with StopOnSignal() as stop:
        for cfg in cfgs:
            try:
                results[cfg.method] = run_one(a, cfg, data, argv, should_stop=stop)
            except (ConfigError, ValueError) as e:
                # a setting that only shows once the runs are built (folds larger than a class, a tuning
                # split without anomalies, a checkpoint made under other settings): one line, and the
                # methods already finished keep their results files
                print(f"error: [{cfg.method}] {e}", file=sys.stderr, flush=True)
                return 2
            except TrainingInterrupted as e:
                cmd = " ".join(["python", "experiments/run.py", *(argv if argv is not None else sys.argv[1:])])
                cmd = cmd.replace(" --restart", "")
                print(f"\ninterrupted ({stop.signal_name}): [{cfg.method}] {e}.\nresume with: {cmd}"
                      f"{'' if a.resume else ' --resume'}", file=sys.stderr, flush=True)
                return 130
    if len(cfgs) > 1:
        write_method_table(a, cfgs, data, results, argv)
    if tuple(results) != ABLATION and all(m in results for m in ABLATION):
        # --method=all holds the ablation chain: write its table from the same runs.
        write_method_table(a, cfgs, data, {m: results[m] for m in ABLATION}, argv)
    return 0


def results_stem(a: argparse.Namespace, cfg) -> str:
    """The results files' stem (and the checkpoint folder's name) of one method's run."""
    pre = "" if cfg.preprocess == "unit" else f"_{cfg.preprocess}"
    pre += "_fp" if cfg.feature_patching else ""
    stem = a.name or f"{cfg.dataset}_{cfg.method}{pre}_{cfg.preset}_e{cfg.epochs}"
    if a.name and a.method != cfg.method:
        stem = f"{a.name}_{cfg.method}"
    return stem


def checkpoint_folder(a: argparse.Namespace, cfg) -> Path:
    return Path(a.checkpoint_dir or Path(a.out_dir) / "checkpoints") / results_stem(a, cfg)


def prepare_checkpoints(a: argparse.Namespace, cfg) -> None:
    """Refuse to discard an interrupted run's checkpoints by accident; clear a finished run's for a fresh one.

    A folder with a ``COMPLETE`` marker belongs to a run whose results were written: a new run (without
    ``--resume``) replaces it. Without the marker the run was interrupted: continue it with ``--resume``
    or discard it with ``--restart``.
    """
    import shutil

    from imdad_jax.config import SHALLOW_METHODS

    if a.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint_every must be >= 0 (0: no checkpoints), got {a.checkpoint_every}")
    if a.keep_checkpoints < 1:
        raise ConfigError(f"--keep_checkpoints must be >= 1, got {a.keep_checkpoints}")
    if cfg.method in SHALLOW_METHODS or a.checkpoint_every == 0:
        return
    folder = checkpoint_folder(a, cfg)
    if not folder.is_dir() or not any(folder.iterdir()) or a.resume:
        return
    if (folder / "COMPLETE").exists() or a.restart:
        shutil.rmtree(folder)
        return
    raise ConfigError(f"{folder} holds the checkpoints of an interrupted run of {cfg.method}; continue it with "
                      "--resume (same flags), or discard it with --restart")


class StopOnSignal:
    """SIGINT / SIGTERM ask training to stop after the current epoch (with a checkpoint); a second SIGINT
    interrupts at once. Used as ``should_stop`` (a callable) inside a ``with`` block."""

    def __init__(self):
        self.signal_name: str | None = None
        self._old: dict = {}

    def __call__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame):
        import signal

        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name}: stopping after this epoch and writing a checkpoint "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnSignal":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def run_one(a: argparse.Namespace, cfg, data, argv: list[str] | None, should_stop=None) -> dict:
    """Train and evaluate one method over all its runs; write its results files; return its record."""
    import jax

    from imdad_jax.config import SHALLOW_METHODS
    from imdad_jax.experiment import estimate_seconds, run_experiment
    from imdad_jax.io import per_class_table, provenance, write_results
    from imdad_jax.paper import PAPER_TABLE2, PEER_DEEP_SAD_MEAN

    from imdad_jax.config import TABULAR_DATASETS

    folds = cfg.n_folds if cfg.dataset in TABULAR_DATASETS else 1
    n_runs = len(cfg.classes) * len(cfg.seeds) * folds
    deep = cfg.method not in SHALLOW_METHODS
    print(f"[{cfg.method}] data: {data.source}; {n_runs} runs ({len(cfg.classes)} classes x {len(cfg.seeds)} seeds"
          f"{f' x {folds} folds' if folds > 1 else ''}) "
          f"on {jax.default_backend() if deep else 'cpu (scikit-learn)'} ({len(jax.devices())} device(s)); "
          f"preset {cfg.preset}, {cfg.epochs if deep else '-'} epochs", flush=True)
    if deep and (a.estimate == "yes" or (a.estimate == "auto" and jax.default_backend() == "cpu")):
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

    bar = tqdm(total=cfg.epochs if deep else 0, unit="epoch", disable=a.no_progress or not deep, file=sys.stdout)

    def on_epoch(ep, means, elapsed):
        shown = {k: f"{float(means[k].mean()):.4f}" for k in ("loss", "radius2", "margin2") if k in means}
        bar.set_postfix(shown)
        bar.update(1)

    from imdad_jax.io.checkpoints import CheckpointSettings

    ck = (CheckpointSettings(checkpoint_folder(a, cfg), a.checkpoint_every, a.keep_checkpoints, a.resume)
          if deep and a.checkpoint_every > 0 else None)
    if ck and a.resume:
        print(f"[{cfg.method}] resuming from the checkpoints in {ck.directory}"
              if ck.directory.is_dir() else f"[{cfg.method}] nothing to resume in {ck.directory}: starting afresh",
              flush=True)
    t0 = time.perf_counter()
    try:
        out = run_experiment(cfg, data, callback=on_epoch, checkpoints=ck, should_stop=should_stop)
    finally:
        bar.close()
    out["timing"]["wall_s_cli"] = time.perf_counter() - t0
    record = {"config": cfg.to_dict(), "provenance": provenance(["python", "experiments/run.py", *(argv or sys.argv[1:])]),
              "data_source": data.source, **out,
              "checkpoints": {"directory": str(ck.directory), "every": ck.every, "keep": ck.keep, "resume": ck.resume}
              if ck else None}
    paper = PAPER_TABLE2.get(cfg.dataset, {}).get(cfg.method)
    table = per_class_table(out["runs"], data.class_names, paper)
    if cfg.dataset in PEER_DEEP_SAD_MEAN:
        table += ("\n\nBar: a standard Deep SAD (DeepOD defaults on tabular data, the reference Deep-SAD-PyTorch on "
                  f"Fashion-MNIST) under this protocol averages {PEER_DEEP_SAD_MEAN[cfg.dataset]:.2f} "
                  "(../shared/spec/peer_results.md).")
    jp, mp = write_results(a.out_dir, results_stem(a, cfg), record, table)
    if ck:
        ck.directory.mkdir(parents=True, exist_ok=True)
        (ck.directory / "COMPLETE").write_text(f"{jp}\n")  # results written: a new run may replace these
    print(table)
    diverged = [r for r in out["runs"] if r["diverged"]]
    if diverged:
        print(f"warning: {len(diverged)} run(s) diverged: "
              + ", ".join(f"class {r['normal_class']} seed {r['seed']}" for r in diverged), file=sys.stderr)
    print(f"[{cfg.method}] wall time {out['timing']['total_s']:.1f} s; wrote {jp} and {mp}", flush=True)
    return record


def write_method_table(a: argparse.Namespace, cfgs: list, data, results: dict, argv: list[str] | None) -> None:
    """One table for all methods (classes as rows), the paper's Table II column beside each method."""
    from imdad_jax.io import method_table, provenance
    from imdad_jax.io.results import atomic_write
    from imdad_jax.paper import PAPER_TABLE2, PEER_DEEP_SAD

    cfg = cfgs[0]
    paper = dict(PAPER_TABLE2.get(cfg.dataset, {}))
    if cfg.dataset in PEER_DEEP_SAD:
        paper["deep_sad"] = PEER_DEEP_SAD[cfg.dataset]
    table = method_table({m: r["runs"] for m, r in results.items()}, data.class_names, paper)
    prov = provenance(["python", "experiments/run.py", *(argv or sys.argv[1:])])
    kind = "ablation" if tuple(results) == ABLATION else "methods"
    stem = f"{a.name}_{kind}" if a.name else f"{cfg.dataset}_{kind}_{cfg.preset}_e{cfg.epochs}"
    wall = {m: r["timing"]["total_s"] for m, r in results.items()}
    md = [f"# {stem}", "", "AUC % on the test set, mean over seeds; '(paper)' columns are the paper's (Table II images, Table III tabular) "
          "(deep_sad: reference Deep-SAD-PyTorch under the same protocol, ../shared/spec/peer_results.md).", "",
          table, ""]
    if kind == "ablation":
        md += ["Paper (Sec. IV-E, Fig. 8, CIFAR-10): Deep SVDD < D-AD < MD-AD < IMD-AD (ranks 4, 3, 2, 1).", ""]
    md += [f"- command: `{prov['command']}`",
           f"- commit: `{prov['git_commit']}`{' (uncommitted changes)' if prov['git_dirty'] else ''}",
           f"- device: {prov['devices']} ({prov['backend']}, {prov['cpu_count']} CPU cores), {prov['platform']}",
           "- versions: " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items() if v),
           f"- schedule (deep methods): preset `{cfg.preset}`, {cfg.epochs} epochs, batch {cfg.batch_size}, "
           f"lr {cfg.lr}; shallow: PCA {cfg.shallow_pca_dims}, max_train {cfg.shallow_max_train}",
           "- wall time per method: " + ", ".join(f"{m} {s:.0f} s" for m, s in wall.items())
           + f"; total {sum(wall.values()):.0f} s",
           "- per-method results files (config, hyperparameters, per-run records): "
           + ", ".join(f"`{a.name + '_' + m if a.name else f'{cfg.dataset}_{m}_{cfg.preset}_e{cfg.epochs}'}.md`"
                       for m in results),
           f"- finished: {prov['utc']}", ""]
    path = Path(a.out_dir) / f"{stem}.md"
    atomic_write(path, "\n".join(md))
    atomic_write(path.with_suffix(".json"), __import__("json").dumps(
        {"provenance": prov, "methods": {m: r["runs"] for m, r in results.items()}, "wall_s": wall}, indent=1,
        default=str) + "\n")
    print(table)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
