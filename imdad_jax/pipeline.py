"""``train_and_evaluate(cfg, workdir)``: one method's experiment from config to results files, with checkpoints.

As ``flax/examples/mnist/train.py``'s function of the same name: the command line (``experiments/run.py``),
tests and the notebook call it. It owns the results-file names, the checkpoint-folder policy (a finished run's
folder is replaced, an interrupted one is continued with ``resume`` or discarded with ``restart``), the signal
handling (SIGINT / SIGTERM stop after the epoch with a checkpoint) and the results writing with provenance.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from imdad_jax.config import PRESETS, SHALLOW_METHODS, TABULAR_DATASETS, ConfigError, ExperimentConfig

# The paper's ablation chain (Sec. IV-E): D-AD extends Deep SVDD soft-boundary, so that is the base.
ABLATION = ("deep_svdd_soft", "dad", "mdad", "imdad")
# The peer figures' source, named in results tables.
PEER_SOURCE = "docs/baselines.md"


@dataclass
class RunSettings:
    """How a run is written and kept, apart from what it computes (the config).

    ``name``: the results files' stem (default from dataset, method, preset and epochs); ``name_per_method``:
    suffix the method to ``name`` (several methods in one call). ``checkpoint_every``: epochs between Orbax
    checkpoints of every run's state (0: none); ``checkpoint_dir``: their folder (default
    ``WORKDIR/checkpoints/<stem>``); ``keep_checkpoints``: the newest kept per phase; ``resume`` / ``restart``:
    continue or discard an interrupted run. ``estimate``: measure and print the expected wall time first
    (``auto``: on a CPU). ``command``: the command line written into the results' provenance.
    """

    name: str | None = None
    name_per_method: bool = False
    checkpoint_every: int = 10
    checkpoint_dir: str | None = None
    keep_checkpoints: int = 2
    resume: bool = False
    restart: bool = False
    estimate: str = "no"
    progress: bool = True
    data_dir: str | None = None
    command: list[str] = field(default_factory=lambda: ["python", "experiments/run.py"])

    def check(self) -> None:
        """``ConfigError`` for a setting out of range."""
        if self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint_every must be >= 0 (0: no checkpoints), got {self.checkpoint_every}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"--keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
        if self.resume and self.restart:
            raise ConfigError("--resume continues an interrupted run and --restart discards it: give one")
        if self.estimate not in ("auto", "yes", "no"):
            raise ConfigError(f"estimate must be auto, yes or no, got {self.estimate!r}")


def results_stem(cfg: ExperimentConfig, settings: RunSettings) -> str:
    """The results files' stem (and the checkpoint folder's name) of one method's run."""
    pre = "" if cfg.preprocess == "unit" else f"_{cfg.preprocess}"
    pre += "_fp" if cfg.feature_patching else ""
    if settings.name:
        return f"{settings.name}_{cfg.method}" if settings.name_per_method else settings.name
    return f"{cfg.dataset}_{cfg.method}{pre}_{cfg.preset}_e{cfg.epochs}"


def checkpoint_folder(cfg: ExperimentConfig, workdir: str | Path, settings: RunSettings) -> Path:
    """Where one method's checkpoints live."""
    return Path(settings.checkpoint_dir or Path(workdir) / "checkpoints") / results_stem(cfg, settings)


def prepare_checkpoints(cfg: ExperimentConfig, workdir: str | Path, settings: RunSettings) -> None:
    """Refuse to discard an interrupted run's checkpoints by accident; clear a finished run's for a fresh one.

    A folder with a ``COMPLETE`` marker belongs to a run whose results were written: a new run (without
    ``resume``) replaces it. Without the marker the run was interrupted: continue it with ``resume``
    or discard it with ``restart``.
    """
    settings.check()
    if cfg.method in SHALLOW_METHODS or settings.checkpoint_every == 0:
        return
    folder = checkpoint_folder(cfg, workdir, settings)
    if not folder.is_dir() or not any(folder.iterdir()) or settings.resume:
        return
    if (folder / "COMPLETE").exists() or settings.restart:
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


def prepare_host() -> None:
    """The process-wide settings a long run wants: the persistent compilation cache and the host allocator."""
    from imdad_jax.io.compile_cache import enable_compile_cache
    from imdad_jax.io.host import tune_host_allocator

    enable_compile_cache()
    tune_host_allocator()  # XLA:CPU steps ~1.2x faster (imdad_jax.io.host)


def _print_estimate(cfg: ExperimentConfig, data: Any, n_runs: int) -> None:
    import jax

    from imdad_jax.experiment import estimate_seconds

    est = estimate_seconds(cfg, data)
    msg = (f"measured {est['seconds_per_step_all_runs'] * 1e3:.0f} ms per step for all {n_runs} runs "
           f"({est['strategy']}/{est['epoch_mode']}), {est['steps_per_epoch']} steps/epoch: this schedule takes "
           f"about {est['total_s'] / 60:.1f} min")
    if cfg.preset == "paper" and jax.default_backend() == "cpu":
        quick = PRESETS["quick"]["epochs"]
        msg += (f". No accelerator here: for a shorter run use --preset=quick ({quick} epochs, about "
                f"{est['total_s'] / cfg.epochs * quick / 60:.1f} min)")
    print(msg, flush=True)


def train_and_evaluate(cfg: ExperimentConfig, workdir: str | Path, dataset: Any = None,
                       settings: RunSettings | None = None,
                       should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train and evaluate every run of ``cfg`` (one method); write ``WORKDIR/<stem>.{json,md}``; return the record.

    ``dataset``: the loaded data (default: ``load_dataset(cfg.dataset, settings.data_dir)``). Checkpoints go to
    ``checkpoint_folder`` unless ``settings.checkpoint_every`` is 0. ``should_stop()`` is asked after every epoch;
    when true a checkpoint is written and ``imdad_jax.train.TrainingInterrupted`` raised.
    The record holds the config, the provenance, the per-run results, histories, timing and the checkpoint place.
    """
    import jax
    from tqdm import tqdm

    from imdad_jax.data.registry import load_dataset
    from imdad_jax.experiment import run_experiment
    from imdad_jax.io import per_class_table, provenance, write_results
    from imdad_jax.io.checkpoints import CheckpointSettings
    from imdad_jax.paper import PAPER_TABLE2, PEER_DEEP_SAD_MEAN

    settings = settings or RunSettings()
    data = dataset if dataset is not None else load_dataset(cfg.dataset, settings.data_dir)
    folds = cfg.n_folds if cfg.dataset in TABULAR_DATASETS else 1
    n_runs = len(cfg.classes) * len(cfg.seeds) * folds
    deep = cfg.method not in SHALLOW_METHODS
    print(f"[{cfg.method}] data: {data.source}; {n_runs} runs ({len(cfg.classes)} classes x {len(cfg.seeds)} seeds"
          f"{f' x {folds} folds' if folds > 1 else ''}) "
          f"on {jax.default_backend() if deep else 'cpu (scikit-learn)'} ({len(jax.devices())} device(s)); "
          f"preset {cfg.preset}, {cfg.epochs if deep else '-'} epochs", flush=True)
    if deep and (settings.estimate == "yes" or (settings.estimate == "auto" and jax.default_backend() == "cpu")):
        _print_estimate(cfg, data, n_runs)

    bar = tqdm(total=cfg.epochs if deep else 0, unit="epoch", disable=not settings.progress or not deep,
               file=sys.stdout)

    def on_epoch(ep, means, elapsed):
        bar.set_postfix({k: f"{float(means[k].mean()):.4f}" for k in ("loss", "radius2", "margin2") if k in means})
        bar.update(1)

    ck = (CheckpointSettings(checkpoint_folder(cfg, workdir, settings), settings.checkpoint_every,
                             settings.keep_checkpoints, settings.resume)
          if deep and settings.checkpoint_every > 0 else None)
    if ck and settings.resume:
        print(f"[{cfg.method}] resuming from the checkpoints in {ck.directory}"
              if ck.directory.is_dir() else f"[{cfg.method}] nothing to resume in {ck.directory}: starting afresh",
              flush=True)
    t0 = time.perf_counter()
    try:
        out = run_experiment(cfg, data, callback=on_epoch, checkpoints=ck, should_stop=should_stop)
    finally:
        bar.close()
    out["timing"]["wall_s_cli"] = time.perf_counter() - t0
    record = {"config": cfg.to_dict(), "provenance": provenance(settings.command), "data_source": data.source, **out,
              "checkpoints": {"directory": str(ck.directory), "every": ck.every, "keep": ck.keep, "resume": ck.resume}
              if ck else None}
    paper = PAPER_TABLE2.get(cfg.dataset, {}).get(cfg.method)
    table = per_class_table(out["runs"], data.class_names, paper)
    if cfg.dataset in PEER_DEEP_SAD_MEAN:
        table += ("\n\nBar: a standard Deep SAD (DeepOD defaults on tabular data, the reference Deep-SAD-PyTorch on "
                  f"Fashion-MNIST) under this protocol averages {PEER_DEEP_SAD_MEAN[cfg.dataset]:.2f} "
                  f"({PEER_SOURCE}).")
    jp, mp = write_results(workdir, results_stem(cfg, settings), record, table)
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


def write_method_table(cfgs: list[ExperimentConfig], dataset: Any, results: dict[str, dict], workdir: str | Path,
                       settings: RunSettings) -> Path:
    """One table for all methods (classes as rows), the paper's Table II column beside each method."""
    from imdad_jax.io import method_table, provenance
    from imdad_jax.io.results import atomic_write
    from imdad_jax.paper import PAPER_TABLE2, PEER_DEEP_SAD

    cfg = cfgs[0]
    paper = dict(PAPER_TABLE2.get(cfg.dataset, {}))
    if cfg.dataset in PEER_DEEP_SAD:
        paper["deep_sad"] = PEER_DEEP_SAD[cfg.dataset]
    table = method_table({m: r["runs"] for m, r in results.items()}, dataset.class_names, paper)
    prov = provenance(settings.command)
    kind = "ablation" if tuple(results) == ABLATION else "methods"
    stem = f"{settings.name}_{kind}" if settings.name else f"{cfg.dataset}_{kind}_{cfg.preset}_e{cfg.epochs}"
    wall = {m: r["timing"]["total_s"] for m, r in results.items()}
    by_method = {c.method: c for c in cfgs}
    md = [f"# {stem}", "", "AUC % on the test set, mean over seeds; '(paper)' columns are the paper's (Table II images, "
          f"Table III tabular) (deep_sad: reference Deep-SAD-PyTorch under the same protocol, {PEER_SOURCE}).", "",
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
           + ", ".join(f"`{results_stem(by_method[m], settings)}.md`" for m in results),
           f"- finished: {prov['utc']}", ""]
    path = Path(workdir) / f"{stem}.md"
    atomic_write(path, "\n".join(md))
    atomic_write(path.with_suffix(".json"), json.dumps(
        {"provenance": prov, "methods": {m: r["runs"] for m, r in results.items()}, "wall_s": wall}, indent=1,
        default=str) + "\n")
    print(table)
    print(f"wrote {path}")
    return path


def train_and_evaluate_methods(cfgs: list[ExperimentConfig], workdir: str | Path, dataset: Any,
                               settings: RunSettings) -> dict[str, dict[str, Any]]:
    """Every config (one per method, same dataset) in turn under one signal handler; the methods' table when
    there are several, and the ablation table when they hold the ablation chain. Checkpoint folders and every
    method's hyperparameters are checked before anything trains. A ``ConfigError`` / ``ValueError`` names the
    method; the methods already finished keep their results files."""
    from imdad_jax.train import TrainingInterrupted

    for cfg in cfgs:
        prepare_checkpoints(cfg, workdir, settings)
    prepare_host()
    results: dict[str, dict[str, Any]] = {}
    with StopOnSignal() as stop:
        for cfg in cfgs:
            try:
                results[cfg.method] = train_and_evaluate(cfg, workdir, dataset, settings, should_stop=stop)
            except TrainingInterrupted as e:
                e.method, e.signal_name = cfg.method, stop.signal_name  # for the caller's resume message
                raise
            except ValueError as e:  # ConfigError included: a setting that only shows once the runs are built
                raise ConfigError(f"[{cfg.method}] {e}") from None
    if len(cfgs) > 1:
        write_method_table(cfgs, dataset, results, workdir, settings)
    if tuple(results) != ABLATION and all(m in results for m in ABLATION):
        # all methods hold the ablation chain: its table from the same runs
        write_method_table(cfgs, dataset, {m: results[m] for m in ABLATION}, workdir, settings)
    return results


__all__ = ["ABLATION", "RunSettings", "StopOnSignal", "checkpoint_folder", "prepare_checkpoints", "prepare_host",
           "results_stem", "train_and_evaluate", "train_and_evaluate_methods", "write_method_table"]
