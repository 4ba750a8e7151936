"""Pure per-run functions: init, epoch batch indices, the train step. The engine vmaps or loops them."""
from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from imdad_jax.train.state import RunState, make_optimizer

if TYPE_CHECKING:  # annotations only: the engine takes any record of the protocol
    from imdad_jax.objectives.protocol import Objective


DROPOUT_STREAM = 0x0D7  # fold_in constant: dropout masks draw from their own stream of the step key


class BatchPlan(NamedTuple):
    """Static shape of a stratified epoch: ``steps`` batches of ``n_per_batch`` normals then ``a_per_batch`` anomalies."""

    steps: int
    n_per_batch: int
    a_per_batch: int

    @property
    def labels(self) -> jnp.ndarray:
        return jnp.concatenate([jnp.zeros(self.n_per_batch, jnp.int32), jnp.ones(self.a_per_batch, jnp.int32)])


def plan_batches(n_normals: int, n_anomalies: int, batch_size: int, anomaly_share: float | None = None
                 ) -> BatchPlan:
    """Stratified batches: each holds normals and anomalies in the training set's proportion.

    One epoch = ceil((n + m) / batch) steps. Each batch gets round(batch * n / (n + m)) normals
    (at least 1, at most batch - 1) and the rest anomalies; a pool smaller than an epoch needs is
    cycled (its permutation repeats), which is how the rarer group is oversampled.
    ``n_anomalies == 0`` (methods trained on normals only) gives batches of normals alone.
    ``anomaly_share`` in (0, 1) fixes the anomalies' share of each batch instead (0.5 = balanced
    batches, what DeepOD's class-weighted sampler draws for Deep SAD); the epoch length is the same.
    """
    if anomaly_share is not None and not 0.0 < anomaly_share < 1.0:
        raise ValueError(f"anomaly_share must be in (0, 1) (e.g. 0.5 for balanced batches) or None for the "
                         f"training set's proportion, got {anomaly_share}")
    if n_normals < 1:
        raise ValueError(f"each run needs training normals, got {n_normals}")
    if n_anomalies == 0:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return BatchPlan(steps=math.ceil(n_normals / batch_size), n_per_batch=batch_size, a_per_batch=0)
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 so every batch holds a normal and an anomaly, got {batch_size}")
    if n_anomalies < 0:
        raise ValueError(f"n_anomalies must be >= 0, got {n_anomalies}")
    total = n_normals + n_anomalies
    normal_share = n_normals / total if anomaly_share is None else 1.0 - anomaly_share
    bn = min(max(round(batch_size * normal_share), 1), batch_size - 1)
    return BatchPlan(steps=math.ceil(total / batch_size), n_per_batch=bn, a_per_batch=batch_size - bn)


def _permuted_take(key: jax.Array, pool: jnp.ndarray, n_valid: jnp.ndarray, count: int) -> jnp.ndarray:
    # A random permutation of the first n_valid entries of a padded pool, cycled to `count`:
    # sorting uniform keys (padding sorts last) keeps shapes static, so runs with different
    # pool sizes share one program.
    u = jax.random.uniform(key, pool.shape)
    u = jnp.where(jnp.arange(pool.shape[0]) < n_valid, u, 2.0)
    order = jnp.argsort(u)
    return pool[order[jnp.arange(count) % n_valid]]


def begin_epoch(state: RunState, normal_pool: jnp.ndarray, n_valid: jnp.ndarray, anomaly_pool: jnp.ndarray,
                m_valid: jnp.ndarray, plan: BatchPlan) -> tuple[RunState, jnp.ndarray]:
    """Advance the run's key and draw its epoch: indices (steps, batch) into the shared data array."""
    key, kn, ka = jax.random.split(state.key, 3)
    idx_n = _permuted_take(kn, normal_pool, n_valid, plan.steps * plan.n_per_batch)
    # max(., 1): a normals-only plan draws no anomalies, and the pool may be empty.
    idx_a = _permuted_take(ka, anomaly_pool, jnp.maximum(m_valid, 1), plan.steps * plan.a_per_batch)
    idx = jnp.concatenate([idx_n.reshape(plan.steps, -1), idx_a.reshape(plan.steps, -1)], axis=1)
    return state.replace(key=key), idx


def init_run(key: jax.Array, hp: dict[str, jnp.ndarray], sample_x: jnp.ndarray, warm_start: dict[str, Any] | None = None,
             *, model: nn.Module, objective: Objective, opts: Any, milestones: tuple[int, ...],
             gamma: float) -> RunState:
    """One run's initial state from its key and hyperparameters."""
    k_init, k_run = jax.random.split(key)
    # Models with parts the forward pass does not touch (a decoder beside a head) name a method
    # that builds them all.
    method = getattr(model, "initialize", None)
    params = model.init(k_init, sample_x, method=method) if method else model.init(k_init, sample_x)
    params = merge_warm_start(params, warm_start)
    tx = make_optimizer(hp["lr"], hp["weight_decay"], milestones, gamma, objective.head_step_size(hp, opts))
    return RunState(params=params, opt_state=tx.init(params), obj_state=objective.init_obj_state(opts),
                    hp=hp, key=k_run, step=jnp.zeros((), jnp.int32))


def merge_warm_start(params: Any, warm_start: dict[str, Any] | None) -> Any:
    """Replace top-level submodules' parameters (e.g. ``{"encoder": ...}`` from a pretrained autoencoder)."""
    if not warm_start:
        return params
    inner = dict(params["params"])
    for name, sub in warm_start.items():
        if name not in inner:
            raise ValueError(f"warm start names submodule {name!r}, the model has {sorted(inner)}")
        if jax.tree.structure(inner[name]) != jax.tree.structure(sub):
            raise ValueError(f"warm start for {name!r} does not match the model's parameter tree; "
                             "pretrain with the same architecture")
        inner[name] = sub
    return {**params, "params": inner}


def make_batch(x_all: jnp.ndarray, idx: jnp.ndarray, labels: jnp.ndarray, state: RunState,
               steps_per_epoch: int) -> dict[str, jnp.ndarray]:
    """What an objective's loss sees: inputs, labels (0 normal, 1 labelled anomaly), a step key, the epoch."""
    # fold_in leaves the run's key stream (which draws the epochs) untouched, so objectives
    # that need no randomness give the same numbers whatever the others draw.
    return {"x": x_all[idx], "y": labels, "key": jax.random.fold_in(state.key, state.step),
            "epoch": state.step // steps_per_epoch}


class TrainMode:
    """``model`` as the objectives see it inside the train step: its ``apply`` is the training pass.

    BatchNorm normalises by the batch's statistics and dropout is on when ``batch_stats`` is mutable and a
    ``dropout`` RNG is given (``imdad_jax.models.encoders``); objectives call ``model.apply(params, x)`` and
    stay unaware of either. The running averages a BatchNorm pass computes are kept in ``updates``: the first
    pass's (the batch itself; later passes, e.g. DROCC's adversarial points, must not move the averages),
    which the step returns beside the loss, so they stay inside the traced function (no tracer leaks). Under
    the run-axis ``vmap`` every run normalises by its own batch and keeps its own averages.
    """

    def __init__(self, model: nn.Module, rng: jax.Array):
        self.model, self.rng, self.updates = model, rng, None

    def apply(self, variables: Any, *args: Any, method: Any = None, **kwargs: Any) -> Any:
        out, updates = self.model.apply(variables, *args, method=method, mutable=["batch_stats"],
                                        rngs={"dropout": self.rng}, **kwargs)
        if self.updates is None:
            self.updates = updates
        return out

    def __getattr__(self, name: str) -> Any:  # anything else (submodules, fields) is the model's
        return getattr(self.model, name)


def has_train_mode(model: nn.Module) -> bool:
    """Whether the model's training pass differs from its eval pass (BatchNorm or dropout in it)."""
    def walk(m: Any) -> bool:
        if not isinstance(m, nn.Module):
            return False
        if getattr(m, "batch_norm", False) or getattr(m, "dropout", 0.0):
            return True
        return any(walk(getattr(m, f.name, None)) for f in dataclasses.fields(m) if f.name not in ("parent", "name"))
    return walk(model)


class TrainStep:
    """One run's training step, ``step(state, acc, x_all, idx) -> (state, acc)``, and its two halves.

    ``loss(params, state, x_all, idx) -> (value, (aux, stats))`` is the objective's loss on the run's batch
    (``stats``: the training pass's new BatchNorm averages); ``finish(state, acc, grads, aux, stats)`` applies
    the optax update, the objective's non-gradient update and its projection. The runners compose them:
    ``vmap`` vmaps the whole step; ``vmap_fwd`` differentiates the run-summed loss of a vmapped forward pass
    and vmaps ``finish`` after it (the same gradients: runs share no parameter). ``idx``: (B,) int32 rows of
    ``x_all`` (N, ...).
    """

    def __init__(self, loss: Callable, finish: Callable):
        self.loss, self.finish = loss, finish
        self._grad = jax.value_and_grad(loss, has_aux=True)

    def __call__(self, state: RunState, acc: dict, x_all: jnp.ndarray, idx: jnp.ndarray) -> tuple[RunState, dict]:
        (_, (aux, stats)), grads = self._grad(state.params, state, x_all, idx)
        return self.finish(state, acc, grads, aux, stats)


def make_train_step(model: nn.Module, objective: Objective, opts: Any, milestones: tuple[int, ...], gamma: float,
                    labels: jnp.ndarray, steps_per_epoch: int) -> TrainStep:
    """``step(state, acc, x_all, idx) -> (state, acc)`` for one run (a ``TrainStep``).

    Gathers the batch from the on-device data by index, takes the gradient of the objective's
    loss (the Lagrangian for IMD-AD), applies the optax update, updates the objective's
    non-gradient state (projected dual ascent for IMD-AD, the heuristic radius for Deep SVDD),
    then the objective's projection of the parameters. ``acc`` sums the step diagnostics on
    device so they are fetched once per epoch.
    """
    # lr and weight decay (and the head's step size) are read from the optimizer state, so the values given here
    # are unused; only the optimizer's structure must match init_run's.
    zeros = {h: 0.0 for h in ("lr", "weight_decay", *objective.HYPERPARAMS)}
    head = None if objective.head_step_size(zeros, opts) is None else 0.0
    tx = make_optimizer(0.0, 0.0, milestones, gamma, head)
    train_mode = has_train_mode(model)

    def loss(params: Any, state: RunState, x_all: jnp.ndarray, idx: jnp.ndarray) -> tuple[jnp.ndarray, tuple]:
        batch = make_batch(x_all, idx, labels, state, steps_per_epoch)
        if not train_mode:
            value, aux = objective.loss(params, state.obj_state, model, batch, state.hp, opts)
            return value, (aux, {})
        # A stream apart from the objective's own use of the step key (e.g. DROCC's noise).
        m = TrainMode(model, jax.random.fold_in(batch["key"], DROPOUT_STREAM))
        value, aux = objective.loss(params, state.obj_state, m, batch, state.hp, opts)
        return value, (aux, m.updates or {})

    # Both hooks are optional: most objectives keep no non-gradient state and need no projection.
    update_obj_state, project = objective.update_obj_state, objective.project

    def finish(state: RunState, acc: dict, grads: Any, aux: dict, stats: dict) -> tuple[RunState, dict]:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        obj_state = update_obj_state(state.obj_state, aux, state.hp, opts, state.step // steps_per_epoch)
        # Collections other than "params" (BatchNorm's running averages) are not trained: they take the
        # values the training pass computed (their gradient is zero, so Adam leaves them as they were).
        params = {**optax.apply_updates(state.params, updates), **stats}
        params = project(params, obj_state, opts)
        acc = jax.tree.map(jnp.add, acc, aux)
        return state.replace(params=params, opt_state=opt_state, obj_state=obj_state, step=state.step + 1), acc

    return TrainStep(loss, finish)


def zeros_diagnostics(objective: Objective, model: nn.Module, opts: Any, state: Any, x_dev: jnp.ndarray,
                      labels: jnp.ndarray) -> dict:
    """Zeros shaped like one run's step diagnostics (the Lagrangian's aux), found by ``eval_shape``."""
    x_b = jax.ShapeDtypeStruct((labels.shape[0],) + x_dev.shape[1:], x_dev.dtype)
    batch = lambda x: {"x": x, "y": labels, "key": jax.random.PRNGKey(0), "epoch": jnp.zeros((), jnp.int32)}  # noqa: E731
    shapes = jax.eval_shape(lambda p, o, h, x: objective.loss(p, o, model, batch(x), h, opts)[1],
                            state.params, state.obj_state, state.hp, x_b)
    return {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
