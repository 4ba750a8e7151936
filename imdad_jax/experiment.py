"""One experiment from a config: protocol -> engine -> evaluation. The CLI, tests and notebook call this."""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np

from imdad_jax.config import ExperimentConfig
from imdad_jax.data.fashion_mnist import ImageDataset
from imdad_jax.data.protocol import one_vs_rest_runs, preprocess_images
from imdad_jax.evaluate import apply_runs, auc_per_run, nu_property, summarize_runs
from imdad_jax.models import build_detector, sphere_geometry
from imdad_jax.objectives import get_objective
from imdad_jax.train import fit, resolve_strategy
from imdad_jax.train.engine import FitResult


def build_model(cfg: ExperimentConfig):
    return build_detector(cfg.arch, conv_features=cfg.conv_features, dense_features=cfg.dense_features,
                          use_bias=cfg.use_bias, margin_param=cfg.margin_param)


def objective_options(cfg: ExperimentConfig):
    obj = get_objective(cfg.method)
    return obj, obj.Options(margin_param=cfg.margin_param, center_constraint=cfg.center_constraint, kappa=cfg.kappa)


def run_hyperparams(cfg: ExperimentConfig, n_runs: int) -> dict[str, np.ndarray]:
    """Per-run hyperparameter arrays (R,): all runs of a config share the values here; a sweep varies them."""
    names = ("lr", "weight_decay", "nu", "nu1", "nu2", "dual_lr")
    return {k: np.full(n_runs, getattr(cfg, k), np.float32) for k in names}


def _fit(cfg: ExperimentConfig, dataset: ImageDataset, *, steps_per_epoch: int | None = None, epochs: int | None = None,
         callback: Callable | None = None) -> tuple[list[dict], Any, FitResult, tuple]:
    x_train = preprocess_images(dataset.x_train)
    ids, data, keys = one_vs_rest_runs(x_train, dataset.y_train, cfg.classes, cfg.seeds, cfg.anomaly_fraction)
    obj, opts = objective_options(cfg)
    hp = run_hyperparams(cfg, data.n_runs)
    obj.validate_hp(hp)
    res = fit(build_model(cfg), obj, opts, data, hp, keys, epochs=epochs or cfg.epochs, batch_size=cfg.batch_size,
              milestones=cfg.milestones, gamma=cfg.gamma, strategy=cfg.strategy, epoch_mode=cfg.epoch_mode,
              steps_per_epoch=steps_per_epoch, callback=callback)
    return ids, data, res, (obj, opts)


def estimate_seconds(cfg: ExperimentConfig, dataset: ImageDataset, probe_steps: int = 5) -> dict[str, float]:
    """Measured (not guessed) wall time of the full schedule: a few real steps of every run, timed after warm-up."""
    _, _, res, _ = _fit(cfg, dataset, steps_per_epoch=probe_steps, epochs=2)
    per_step = res.epoch_s[1] / res.plan.steps  # all runs, one step each
    from imdad_jax.train.step import plan_batches
    x_n = np.bincount(dataset.y_train)
    full_plan = plan_batches(int(x_n.max()), int(round(cfg.anomaly_fraction * (len(dataset.y_train) - x_n.min()))),
                             cfg.batch_size)
    return {"seconds_per_step_all_runs": per_step, "steps_per_epoch": full_plan.steps,
            "total_s": per_step * full_plan.steps * cfg.epochs, "compile_s": res.compile_s,
            "strategy": res.strategy, "epoch_mode": res.epoch_mode}


def run_experiment(cfg: ExperimentConfig, dataset: ImageDataset,
                   callback: Callable[[int, dict[str, np.ndarray], float], None] | None = None) -> dict[str, Any]:
    """Train every (class, seed) run of ``cfg`` as one program and evaluate it.

    Returns ``{"runs": [per-run records], "history": {name: (epochs, R)}, "timing": {...}}``.
    """
    t0 = time.perf_counter()
    ids, data, res, (obj, opts) = _fit(cfg, dataset, callback=callback)
    model = build_model(cfg)
    params = res.state.params
    strategy = res.strategy
    x_test = preprocess_images(dataset.x_test)
    t_eval = time.perf_counter()
    scores = apply_runs(lambda p, x: obj.score(p, model, x, opts), params, x_test, strategy=strategy)
    is_anom = np.stack([dataset.y_test != rid["normal_class"] for rid in ids])
    auc = auc_per_run(scores, is_anom)
    s_fn = lambda p, x: obj.signed_distance(p, model, x, opts)  # noqa: E731
    s_n = apply_runs(s_fn, params, data.x, data.normal_pool, strategy=strategy)
    s_a = apply_runs(s_fn, params, data.x, data.anomaly_pool, strategy=strategy)
    geom = sphere_geometry(params["params"]["head"], cfg.margin_param)
    geometry = {"radius2": np.asarray(geom.radius2), "margin2": np.asarray(geom.margin2),
                "center_norm": np.linalg.norm(np.asarray(geom.center), axis=-1)}
    nu = nu_property([s_n[r, :data.n_valid[r]] for r in range(data.n_runs)],
                     [s_a[r, :data.m_valid[r]] for r in range(data.n_runs)], geometry["margin2"],
                     res.state.hp)
    rows = summarize_runs(ids, auc, geometry, nu, res.diverged)
    for r, row in enumerate(rows):
        row["n_normals"], row["n_labelled_anomalies"] = int(data.n_valid[r]), int(data.m_valid[r])
    timing = {"train_s": res.train_s, "compile_s": res.compile_s, "eval_s": time.perf_counter() - t_eval,
              "total_s": time.perf_counter() - t0, "epoch_s_median": float(np.median(res.epoch_s)),
              "steps_per_epoch": res.plan.steps, "strategy": strategy, "epoch_mode": res.epoch_mode,
              "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}
    history = {k: v.tolist() for k, v in res.history.items()}
    return {"runs": rows, "history": history, "timing": timing, "batch_plan": res.plan._asdict()}
