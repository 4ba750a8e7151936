"""One experiment from a config: protocol -> engine -> evaluation. The CLI, tests and notebook call this."""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np
from sklearn.metrics import roc_auc_score

from imdad_jax.build import (Dataset, Split, build_model, make_split, model_conv_impl,  # noqa: F401 (re-exported)
                             objective_options, resolve_hyperparams, run_hyperparams)
from imdad_jax.config import SHALLOW_METHODS, ExperimentConfig
from imdad_jax.data.fashion_mnist import ImageDataset
from imdad_jax.evaluate import apply_runs, auc_per_run, sphere_report, summarize_runs
from imdad_jax.io.checkpoints import CheckpointSettings
from imdad_jax.train.chunks import fit_in_chunks
from imdad_jax.data.runs import RunData
from imdad_jax.train.engine import FitResult
from imdad_jax.tuning import choose, grid_hyperparams, grid_points, holdout, tile_runs, validation_auc

def fit_runs(cfg: ExperimentConfig, dataset: Dataset | None, *, steps_per_epoch: int | None = None,
         epochs: int | None = None, callback: Callable | None = None, split: Split | None = None,
         hp: dict[str, np.ndarray] | None = None, snapshot_epochs: tuple[int, ...] = (),
         checkpoints: CheckpointSettings | None = None, phase: str = "train",
         should_stop: Callable[[], bool] | None = None) -> tuple[Split, FitResult, tuple]:
    """Train every run of ``split`` (or of ``cfg`` on ``dataset``) with ``hp`` (the config's values by default):
    the autoencoder warm start first where ``cfg.pretrain_epochs`` asks, in chunks of the run axis where
    ``cfg.max_runs`` does, checkpointed under ``phase``. Returns the split, the fit and (objective, options)."""
    split = split or make_split(cfg, dataset)
    data, keys = split.data, split.keys
    x_train = data.x
    obj, opts = objective_options(cfg)
    hp = run_hyperparams(cfg, data.n_runs) if hp is None else hp
    obj.validate_hp(hp)
    common = dict(batch_size=cfg.batch_size, strategy=cfg.strategy, epoch_mode=cfg.epoch_mode,
                  chunk_runs=cfg.chunk_runs, unroll=cfg.unroll,
                  steps_per_epoch=steps_per_epoch, anomaly_share=cfg.anomaly_share)
    fingerprint = {"config": cfg.to_dict(), "n_runs": data.n_runs, "n_train": len(data.x),
                   "hp": {k: np.asarray(v).tolist() for k, v in hp.items()}}

    # "auto" measures memory on accelerators only: a CPU host's memory is rarely what limits a sweep
    max_runs = None if cfg.max_runs == "auto" and jax.default_backend() == "cpu" else cfg.max_runs

    def run_fit(name: str, *args, **kw) -> FitResult:
        ck_for = None
        if checkpoints is not None:
            def ck_for(i: int, n: int):  # each chunk of the run axis checkpoints apart
                return checkpoints.phase(name if n == 1 else f"{name}_chunk{i}of{n}", fingerprint)
        return fit_in_chunks(*args, max_runs=max_runs, checkpoint_for=ck_for, should_stop=should_stop,
                             resume=bool(checkpoints and checkpoints.resume), **kw)

    warm = None
    if cfg.pretrain_epochs > 0 and cfg.method != "autoencoder":
        # Autoencoder pretraining on the same runs' normals; its encoder warm-starts the method's.
        ae, ae_opts = objective_options(cfg, "autoencoder")
        pre = run_fit(f"{phase}_pretrain", build_model(cfg, x_train.shape[1:], "autoencoder"), ae, ae_opts, data,
                      run_hyperparams(cfg, data.n_runs, "autoencoder"), keys,
                      epochs=min(cfg.pretrain_epochs, epochs or cfg.pretrain_epochs), **common)
        warm = {"encoder": pre.state.params["params"]["encoder"]}
    res = run_fit(phase, build_model(cfg, x_train.shape[1:]), obj, opts, data, hp, keys, epochs=epochs or cfg.epochs,
                  milestones=cfg.milestones, gamma=cfg.gamma, warm_start=warm, callback=callback,
                  snapshot_epochs=snapshot_epochs, **common)
    return split, res, (obj, opts)


def fit_grid(cfg: ExperimentConfig, data: RunData, keys: np.ndarray, grid: Any, *,
             checkpoints: CheckpointSettings | None = None, phase: str = "sweep",
             should_stop: Callable[[], bool] | None = None) -> tuple[dict[str, np.ndarray], FitResult, list[dict]]:
    """Every (run x grid point) of ``data`` trained as one program: run r's G copies sit at rows r*G .. r*G+G-1.
    Returns the per-run hyperparameter arrays (R*G,), the fit and the grid's points."""
    points = grid_points(grid)
    data_g, keys_g = tile_runs(data, keys, len(points))
    hp_g = grid_hyperparams(run_hyperparams(cfg, data.n_runs), points)
    objective_options(cfg)[0].validate_hp(hp_g)
    _, res, _ = fit_runs(cfg, None, split=Split.training_only(data_g, keys_g), hp=hp_g, checkpoints=checkpoints,
                         phase=phase, should_stop=should_stop)
    return hp_g, res, points


def tune_hyperparams(cfg: ExperimentConfig, split: Split, checkpoints: CheckpointSettings | None = None,
                     should_stop: Callable[[], bool] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each run's values from the grid ``cfg.tune``, chosen by validation AUC on held-out training rows.

    All (run x grid point) pairs train as one program on the rest of their training data; the test
    rows are never seen. Returns the per-run hyperparameter arrays (R,) and a report of the choice.
    """
    t0 = time.perf_counter()
    obj, opts = objective_options(cfg)
    n_runs = split.data.n_runs
    ho = holdout(split.data, split.keys, cfg.val_fraction)
    hp_g, res, points = fit_grid(cfg, ho.train, split.keys, cfg.tune, checkpoints=checkpoints, phase="tune",
                                 should_stop=should_stop)
    g, x = len(points), ho.train.x
    model = build_model(cfg, x.shape[1:])
    scores = apply_runs(lambda p, x: obj.score(p[0], p[1], model, x, opts), (res.state.params, res.state.obj_state),
                        x, np.repeat(ho.val_idx, g, axis=0), strategy=res.runner)
    val_auc = validation_auc(scores, np.repeat(ho.val_valid, g), [lab for lab in ho.val_is_anomaly for _ in range(g)])
    best = choose(val_auc, g)
    hp = {k: v.reshape(n_runs, g)[np.arange(n_runs), best] for k, v in hp_g.items()}
    report = {"grid": [[n, list(v)] for n, v in cfg.tune], "val_fraction": cfg.val_fraction, "points": points,
              "val_auc": val_auc.reshape(n_runs, g), "chosen": best, "n_val": ho.val_valid,
              "n_val_anomalies": np.array([int(lab.sum()) for lab in ho.val_is_anomaly]),
              "seconds": time.perf_counter() - t0}
    return hp, report


def estimate_seconds(cfg: ExperimentConfig, dataset: Dataset, probe_steps: int = 5) -> dict[str, float]:
    """Measured (not guessed) wall time of the full schedule: a few real steps of every run, timed after warm-up."""
    _, res, _ = fit_runs(cfg, dataset, steps_per_epoch=probe_steps, epochs=2)
    per_step = res.epoch_s[1] / res.plan.steps  # all runs, one step each
    total = per_step * res.full_steps_per_epoch * (cfg.epochs + cfg.pretrain_epochs)
    return {"seconds_per_step_all_runs": per_step, "steps_per_epoch": res.full_steps_per_epoch,
            "total_s": total, "compile_s": res.compile_s, "strategy": res.runner.name, "epoch_mode": res.epoch_mode}


def run_experiment(cfg: ExperimentConfig, dataset: Dataset,
                   callback: Callable[[int, dict[str, np.ndarray], float], None] | None = None,
                   checkpoints: CheckpointSettings | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train every (class, seed) run of ``cfg`` as one program and evaluate it.

    Shallow methods (``cfg.method`` in ``SHALLOW_METHODS``) go to ``run_shallow_experiment``.
    ``checkpoints``: save every phase's run-axis state with Orbax (and with ``resume``, continue each phase
    from its newest checkpoint: same numbers as an uninterrupted run). ``should_stop()`` asked after every
    epoch; when true a checkpoint is written and ``imdad_jax.train.TrainingInterrupted`` raised.
    Returns ``{"runs": [per-run records], "history": {name: (epochs, R)}, "timing": {...}, "hyperparams": {...}}``.
    """
    if cfg.method in SHALLOW_METHODS:
        return run_shallow_experiment(cfg, dataset)
    t0 = time.perf_counter()
    split = make_split(cfg, dataset)
    hp, tuning = tune_hyperparams(cfg, split, checkpoints, should_stop) if cfg.tune else (None, None)
    split, res, (obj, opts) = fit_runs(cfg, dataset, callback=callback, split=split, hp=hp, checkpoints=checkpoints,
                                   should_stop=should_stop)
    ids, data = split.ids, split.data
    model = build_model(cfg, data.x.shape[1:])
    params, obj_state = res.state.params, res.state.obj_state
    strategy = res.runner
    t_eval = time.perf_counter()
    scores = apply_runs(lambda p, x: obj.score(p[0], p[1], model, x, opts), (params, obj_state), split.x_test,
                        split.test_idx, strategy=strategy)
    auc = auc_per_run(scores, list(split.is_anomaly))
    geometry, nu = sphere_report(obj, opts, model, params, obj_state, res.state.hp, data, strategy)
    rows = summarize_runs(ids, auc, geometry, nu, res.diverged)
    for r, row in enumerate(rows):
        row["method"] = cfg.method
        row["n_normals"] = int(data.n_valid[r])
        row["n_labelled_anomalies"] = int(data.m_valid[r]) if obj.USES_ANOMALIES else 0
        if tuning:
            row["tuned"] = tuning["points"][int(tuning["chosen"][r])]
            row["val_auc"] = float(tuning["val_auc"][r, tuning["chosen"][r]])
    timing = {"train_s": res.train_s, "compile_s": res.compile_s, "eval_s": time.perf_counter() - t_eval,
              "total_s": time.perf_counter() - t0, "epoch_s_median": float(np.median(res.epoch_s)),
              "steps_per_epoch": res.plan.steps, "strategy": res.runner.name, "epoch_mode": res.epoch_mode,
              "autotune": res.runner.autotune,
              "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
              "resumed_from_epoch": res.start_epoch, "programs": res.n_chunks}
    if tuning:
        timing["tune_s"] = tuning["seconds"]
    history = {k: v.tolist() for k, v in res.history.items()}
    out = {"runs": rows, "history": history, "timing": timing, "batch_plan": res.plan._asdict(),
           "hyperparams": resolve_hyperparams(cfg, obj), "options": opts._asdict()}
    if tuning:
        out["tuning"] = tuning
    return out


def run_shallow_experiment(cfg: ExperimentConfig, dataset: Dataset) -> dict[str, Any]:
    """A shallow baseline on the same runs (same labelled anomalies, same folds and scaling) as the deep methods.

    Images go in as flattened [0, 1] pixels, PCA-reduced to ``cfg.shallow_pca_dims`` (fit on the
    training normals); tabular rows as scaled by the protocol, without PCA. The grid is chosen on a
    validation split of the training data (never the test set).
    """
    from imdad_jax.shallow import fit_score

    t0 = time.perf_counter()
    split = make_split(cfg, dataset)
    data = split.data
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    pca = cfg.shallow_pca_dims if isinstance(dataset, ImageDataset) else None
    rows = []
    for r, rid in enumerate(split.ids):
        normals = flat(data.x[data.normal_pool[r, :data.n_valid[r]]])
        anomalies = flat(data.x[data.anomaly_pool[r, :data.m_valid[r]]])
        res = fit_score(cfg.method, normals, anomalies, flat(split.test_rows(r)), seed=rid["seed"],
                        max_train=cfg.shallow_max_train, pca_dims=pca)
        finite = bool(np.all(np.isfinite(res.scores)))
        auc = float(roc_auc_score(split.is_anomaly[r], res.scores)) if finite else None
        rows.append({**rid, "method": cfg.method, "auc": auc, "diverged": not finite, "params": res.params,
                     "val_auc": res.val_auc, "fit_s": res.fit_s, "n_normals": int(len(normals)),
                     "n_labelled_anomalies": int(len(anomalies))})
    total = time.perf_counter() - t0
    timing = {"train_s": total, "compile_s": 0.0, "eval_s": 0.0, "total_s": total, "steps_per_epoch": 0,
              "strategy": "shallow", "epoch_mode": "n/a", "backend": "cpu (numpy/scikit-learn)", "devices": []}
    return {"runs": rows, "history": {}, "timing": timing, "hyperparams": {}}
