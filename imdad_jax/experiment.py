"""One experiment from a config: protocol -> engine -> evaluation. The CLI, tests and notebook call this."""
from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Union

import jax
import numpy as np
from sklearn.metrics import roc_auc_score

from imdad_jax.config import OBJECTIVE_HP, SHALLOW_METHODS, ExperimentConfig
from imdad_jax.data.fashion_mnist import ImageDataset
from imdad_jax.data.folds import cv_runs, test_labels
from imdad_jax.data.protocol import one_vs_rest_runs, per_run_preprocess, preprocess_images
from imdad_jax.data.tabular import TabularDataset
from imdad_jax.evaluate import apply_runs, auc_per_run, nu_property, summarize_runs
from imdad_jax.io.checkpoints import CheckpointSettings
from imdad_jax.models import build_encoder
from imdad_jax.objectives import get_objective
from imdad_jax.train.chunks import fit_in_chunks
from imdad_jax.train.engine import FitResult, RunData
from imdad_jax.train.runners import Runner
from imdad_jax.tuning import choose, grid_hyperparams, grid_points, holdout, tile_runs, validation_auc

Dataset = Union[ImageDataset, TabularDataset]


@dataclass
class Split:
    """Every run's training data and test set, whatever the protocol.

    Images: the standard split, every run scores the whole ``x_test`` (``test_idx`` None). With a
    preprocessing other than ``unit`` (fit on each run's training normals) every run has its own copy of
    its training rows in ``data.x`` and of the test set in ``x_test``, in the tabular layout below.
    Tabular / synthetic: k-fold CV, every run has its own scaled copy in ``data.x`` and scores its
    own test fold, ``x_test[test_idx[r, :test_valid[r]]]``.
    """

    ids: list[dict[str, Any]]
    data: RunData
    keys: np.ndarray
    x_test: np.ndarray
    test_idx: np.ndarray | None
    test_valid: np.ndarray | None
    is_anomaly: list[np.ndarray]

    def test_rows(self, r: int) -> np.ndarray:
        """Run r's test inputs."""
        return self.x_test if self.test_idx is None else self.x_test[self.test_idx[r, :self.test_valid[r]]]


def make_split(cfg: ExperimentConfig, dataset: Dataset) -> Split:
    """The runs of ``cfg`` on ``dataset`` under the paper's protocol for its kind of data."""
    if cfg.feature_patching:  # FPSVDD: the frozen backbone's patch embeddings of the images are the data
        import dataclasses

        from imdad_jax.feature_patching import patch_split
        return patch_split(cfg, make_split(dataclasses.replace(cfg, feature_patching=False), dataset))
    if isinstance(dataset, TabularDataset):
        ids, data, keys, test_idx, test_valid = cv_runs(dataset.x, dataset.y, cfg.classes, cfg.seeds, cfg.n_folds,
                                                        cfg.anomaly_fraction)
        labels = test_labels(dataset.y, ids, test_idx, test_valid, len(dataset.y))
        return Split(ids, data, keys, data.x, test_idx, test_valid, labels)
    x_train = preprocess_images(dataset.x_train)
    ids, data, keys = one_vs_rest_runs(x_train, dataset.y_train, cfg.classes, cfg.seeds, cfg.anomaly_fraction)
    labels = [dataset.y_test != rid["normal_class"] for rid in ids]
    x_test = preprocess_images(dataset.x_test)
    if cfg.preprocess == "unit":  # nothing fit per run: one shared copy of each set, as always
        return Split(ids, data, keys, x_test, None, None, labels)
    data, x_test, test_idx, test_valid = per_run_preprocess(cfg.preprocess, data, x_test)
    return Split(ids, data, keys, x_test, test_idx, test_valid, labels)


def _auc(scores: np.ndarray, split: Split) -> np.ndarray:
    """ROC AUC per run over its valid test rows; NaN where a score is not finite."""
    return auc_per_run(scores, list(split.is_anomaly))


def objective_options(cfg: ExperimentConfig, method: str | None = None) -> tuple[ModuleType, Any]:
    """The objective module of ``cfg.method`` (or ``method``) and its static options from the config."""
    obj = get_objective(method or cfg.method)
    return obj, obj.Options(**{f: getattr(cfg, f) for f in obj.Options._fields})


def build_model(cfg: ExperimentConfig, input_shape: tuple[int, ...], method: str | None = None):
    """The method's model around the config's encoder."""
    obj, opts = objective_options(cfg, method)
    if cfg.feature_patching:  # a per-patch head on frozen backbone features (imdad_jax.feature_patching)
        from imdad_jax.feature_patching import build_patch_model
        return build_patch_model(cfg, obj, opts)
    enc = build_encoder(cfg.arch, conv_features=cfg.conv_features, dense_features=cfg.dense_features,
                        use_bias=cfg.use_bias, layer_norm=cfg.layer_norm, residual=cfg.residual,
                        se_attention=cfg.se_attention, projection=cfg.projection, batch_norm=cfg.batch_norm,
                        dropout=cfg.dropout, conv_impl=model_conv_impl(cfg))
    return obj.make_model(enc, tuple(input_shape), opts)


def model_conv_impl(cfg: ExperimentConfig) -> str:
    """The convolution form for the config: its own, except that ``auto`` with the run axis vmapped on CPU is
    im2col in every layer (XLA:CPU runs a vmapped convolution as a batch-grouped one, 4.2x slower than the
    batched matmul im2col becomes for CNN2; ``benchmarks/RESULTS.md``, "CPU convolution forms")."""
    if cfg.conv_impl == "auto" and cfg.strategy != "auto" and Runner(cfg.strategy).vmapped \
            and jax.default_backend() == "cpu":
        return "im2col"
    return cfg.conv_impl


def resolve_hyperparams(cfg: ExperimentConfig, obj: ModuleType) -> dict[str, float]:
    """The objective's hyperparameters: the config's value where set, the method's default otherwise."""
    out = {}
    for name in obj.HYPERPARAMS:
        v = getattr(cfg, name) if name in OBJECTIVE_HP else None
        out[name] = float(obj.DEFAULT_HP[name] if v is None else v)
    return out


def run_hyperparams(cfg: ExperimentConfig, n_runs: int, method: str | None = None) -> dict[str, np.ndarray]:
    """Per-run hyperparameter arrays (R,): all runs of a config share the values here; a sweep varies them."""
    obj = get_objective(method or cfg.method)
    hp = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, **resolve_hyperparams(cfg, obj)}
    return {k: np.full(n_runs, v, np.float32) for k, v in hp.items()}


def _fit(cfg: ExperimentConfig, dataset: Dataset | None, *, steps_per_epoch: int | None = None,
         epochs: int | None = None, callback: Callable | None = None, split: Split | None = None,
         hp: dict[str, np.ndarray] | None = None, snapshot_epochs: tuple[int, ...] = (),
         checkpoints: CheckpointSettings | None = None, phase: str = "train",
         should_stop: Callable[[], bool] | None = None) -> tuple[Split, FitResult, tuple]:
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


def tune_hyperparams(cfg: ExperimentConfig, split: Split, checkpoints: CheckpointSettings | None = None,
                     should_stop: Callable[[], bool] | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each run's values from the grid ``cfg.tune``, chosen by validation AUC on held-out training rows.

    All (run x grid point) pairs train as one program on the rest of their training data; the test
    rows are never seen. Returns the per-run hyperparameter arrays (R,) and a report of the choice.
    """
    t0 = time.perf_counter()
    obj, opts = objective_options(cfg)
    points = grid_points(cfg.tune)
    g, n_runs = len(points), split.data.n_runs
    ho = holdout(split.data, split.keys, cfg.val_fraction)
    data_g, keys_g = tile_runs(ho.train, split.keys, g)
    hp_g = grid_hyperparams(run_hyperparams(cfg, n_runs), points)
    obj.validate_hp(hp_g)
    sub = Split([], data_g, keys_g, data_g.x, None, None, [])
    _, res, _ = _fit(cfg, None, split=sub, hp=hp_g, checkpoints=checkpoints, phase="tune", should_stop=should_stop)
    model = build_model(cfg, data_g.x.shape[1:])
    scores = apply_runs(lambda p, x: obj.score(p[0], p[1], model, x, opts), (res.state.params, res.state.obj_state),
                        data_g.x, np.repeat(ho.val_idx, g, axis=0), strategy=res.runner)
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
    _, res, _ = _fit(cfg, dataset, steps_per_epoch=probe_steps, epochs=2)
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
    split, res, (obj, opts) = _fit(cfg, dataset, callback=callback, split=split, hp=hp, checkpoints=checkpoints,
                                   should_stop=should_stop)
    ids, data = split.ids, split.data
    model = build_model(cfg, data.x.shape[1:])
    params, obj_state = res.state.params, res.state.obj_state
    strategy = res.runner
    t_eval = time.perf_counter()
    scores = apply_runs(lambda p, x: obj.score(p[0], p[1], model, x, opts), (params, obj_state), split.x_test,
                        split.test_idx, strategy=strategy)
    auc = _auc(scores, split)
    geometry = ({k: np.asarray(v) for k, v in obj.geometry(params, obj_state, opts).items()}
                if hasattr(obj, "geometry") else {})
    nu = {}
    if hasattr(obj, "signed_distance"):
        s_fn = lambda p, x: obj.signed_distance(p[0], p[1], model, x, opts)  # noqa: E731
        s_n = apply_runs(s_fn, (params, obj_state), data.x, data.normal_pool, strategy=strategy)
        s_a = apply_runs(s_fn, (params, obj_state), data.x, data.anomaly_pool, strategy=strategy)
        nu = nu_property([s_n[r, :data.n_valid[r]] for r in range(data.n_runs)],
                         [s_a[r, :data.m_valid[r]] for r in range(data.n_runs)], geometry["margin2"],
                         res.state.hp)
    rows = summarize_runs(ids, auc, geometry, nu, res.diverged)
    for r, row in enumerate(rows):
        row["method"] = cfg.method
        row["n_normals"] = int(data.n_valid[r])
        row["n_labelled_anomalies"] = int(data.m_valid[r]) if getattr(obj, "USES_ANOMALIES", True) else 0
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
           "hyperparams": resolve_hyperparams(cfg, obj)}
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
