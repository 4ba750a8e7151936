"""Train many runs of one objective at once: the run-axis engine.

``fit`` resolves a ``imdad_jax.train.runners.Runner`` once (the strategy: ``vmap``, ``vmap_fwd``, ``map``,
``chunked`` or ``loop``; on an accelerator ``auto`` measures them at the sweep's shapes) and trains every run
with it; ``FitResult.runner`` then scores them (``apply_runs(..., strategy=res.runner)``). The strategies give the
same numbers up to float rounding; ``runners`` says what each compiles to.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imdad_jax.data.runs import RunData
from imdad_jax.train.runners import (EPOCH_MODES, STRATEGIES, AutotuneCache, Programs, Runner, autotune,
                                     autotune_candidates, autotune_key, pad_runs, resolve_runner, start_session)
from imdad_jax.train.step import (BatchPlan, begin_epoch, init_run, make_train_step, plan_batches,
                                  zeros_diagnostics)

if TYPE_CHECKING:  # annotations only: the engine takes any record of the protocol
    from imdad_jax.objectives.protocol import Objective

__all__ = ["EPOCH_MODES", "STRATEGIES", "Checkpointer", "FitResult", "RunData", "TrainingInterrupted", "fit",
           "has_conv", "resolve_strategy"]


def resolve_strategy(strategy: str = "auto", epoch_mode: str = "auto", backend: str | None = None,
                     has_conv: bool = True) -> tuple[str, str]:
    """(strategy, epoch_mode) names of ``runners.resolve_runner``'s choice (``auto`` on an accelerator: ``vmap``
    before ``fit``'s measurement)."""
    r = resolve_runner(strategy, epoch_mode, backend, has_conv)
    return r.strategy, r.epoch_mode


def has_conv(model: nn.Module, sample_x: jnp.ndarray) -> bool:
    """Whether the model holds a convolution kernel (rank >= 3), from shapes alone (nothing is computed)."""
    method = getattr(model, "initialize", None)
    init = (lambda: model.init(jax.random.PRNGKey(0), sample_x, method=method)) if method else \
        (lambda: model.init(jax.random.PRNGKey(0), sample_x))
    return any(leaf.ndim >= 3 for leaf in jax.tree.leaves(jax.eval_shape(init)))


@dataclass
class FitResult:
    """Stacked final state (leading axis R), per-epoch diagnostics (epochs, R) and timing."""

    state: Any
    history: dict[str, np.ndarray]
    diverged: np.ndarray  # (R,) bool: non-finite loss or parameters at some epoch
    runner: Runner  # trained the runs; scores them too (apply_runs(..., strategy=runner))
    plan: BatchPlan
    compile_s: float = 0.0
    train_s: float = 0.0
    epoch_s: list[float] = field(default_factory=list)
    full_steps_per_epoch: int = 0  # steps an uncapped epoch would take
    # {completed epochs: (params, obj_state) stacked over runs, on the host}; 0 = before the first step
    snapshots: dict[int, Any] = field(default_factory=dict)
    start_epoch: int = 0  # > 0 when the run resumed from a checkpoint of that many completed epochs
    n_chunks: int = 1  # programs the run axis was split into (train.chunks.fit_in_chunks)
    memory: Any = None  # train.chunks.MemoryEstimate when the chunking was decided by memory

    @property
    def strategy(self) -> str:
        return self.runner.strategy

    @property
    def epoch_mode(self) -> str:
        return self.runner.epoch_mode


class TrainingInterrupted(Exception):
    """Training stopped on request (``should_stop``) after ``epoch`` of ``epochs``; a checkpoint holds it."""

    def __init__(self, epoch: int, epochs: int, directory: Any = None):
        self.epoch, self.epochs, self.directory = epoch, epochs, directory
        where = f"; the checkpoint in {directory} resumes it" if directory else ""
        super().__init__(f"training stopped after epoch {epoch} of {epochs}{where}")


class Checkpointer(Protocol):
    """What ``fit`` needs of a checkpointer (``imdad_jax.io.checkpoints.RunCheckpointer`` is one)."""

    directory: Any

    def latest_epoch(self) -> int | None: ...
    def should_save(self, epoch: int, epochs: int) -> bool: ...
    def save(self, epoch: int, state: Any, history: dict, diverged: np.ndarray, force: bool = False) -> None: ...
    def remember(self, state: Any) -> None: ...
    def restore(self, template: Any) -> tuple[int, Any, dict, np.ndarray] | None: ...
    def wait(self) -> None: ...


def fit(model: nn.Module, objective: Objective, opts: Any, data: RunData, hp: dict[str, np.ndarray],
        keys: np.ndarray, *, epochs: int, batch_size: int, milestones: tuple[int, ...] = (), gamma: float = 0.1,
        strategy: str | Runner = "auto", epoch_mode: str = "auto", devices: list | None = None,
        steps_per_epoch: int | None = None, anomaly_share: float | None = None,
        warm_start: dict[str, Any] | None = None, snapshot_epochs: Sequence[int] = (),
        callback: Callable[[int, dict[str, np.ndarray], float], None] | None = None,
        checkpoint: Checkpointer | None = None, resume: bool = False,
        should_stop: Callable[[], bool] | None = None, plan_sizes: tuple[int, int] | None = None,
        chunk_runs: int = 8, unroll: int = 1, autotune_runs: bool | None = None,
        autotune_cache: AutotuneCache | None | bool = None,
        autotune_log: Callable[[str], None] | None = print) -> FitResult:
    """Train ``data.n_runs`` runs of ``objective`` for ``epochs`` epochs.

    ``hp``: per-run arrays (R,) for the optimizer (lr, weight_decay) and the objective.
    ``keys``: (R, 2) uint32 PRNG keys, one per run; a run's numbers depend only on its own key,
    data and hyperparameters, not on which runs share the program.
    ``milestones``: learning-rate milestones in epochs (MultiStepLR), rate times ``gamma`` at each.
    ``steps_per_epoch`` caps the steps of an epoch (for timing probes and tiny tests).
    ``anomaly_share``: the labelled anomalies' share of each batch (None: their share of the
    training set; 0.5: balanced batches), see ``plan_batches``.
    ``warm_start``: stacked (R, ...) parameters of named top-level submodules that replace the
    fresh ones (``{"encoder": ...}`` from autoencoder pretraining).
    Objectives trained on normals alone (``objective.USES_ANOMALIES`` false) get batches of
    normals only. An objective with a ``prepare`` hook (Deep SVDD's center from an initial forward
    pass) sees the representations of every run's training normals before the first step.
    ``callback(epoch, epoch_means, elapsed_s)`` is called after every epoch with per-run means.
    ``snapshot_epochs``: after these many completed epochs (0 = before the first step) a host copy
    of every run's ``(params, obj_state)`` goes to ``FitResult.snapshots`` (for per-epoch figures;
    a copy costs one transfer, so pick a few epochs for large models).
    ``checkpoint``: saves the stacked state, history and divergence flags when ``checkpoint.should_save``
    says so (and after the last epoch); with ``resume`` training continues from its newest checkpoint and
    ends with the same numbers as an uninterrupted run (the PRNG keys and step counters are in the state).
    Snapshots and callbacks cover the epochs trained in this call only.
    ``should_stop()`` is asked after every epoch (a signal handler's flag): when true, a checkpoint is
    written and ``TrainingInterrupted`` raised.
    ``plan_sizes``: (normals, labelled anomalies) the batch plan is made for (default: this data's largest
    run); a chunk of a larger sweep passes the whole sweep's, so each run draws the batches it would draw there.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    sample_x = jnp.asarray(data.x[:1])
    runner = resolve_runner(strategy, epoch_mode, has_conv=has_conv(model, sample_x), chunk_runs=chunk_runs,
                            unroll=unroll)
    measure = strategy == "auto" and (jax.default_backend() != "cpu" if autotune_runs is None else autotune_runs)
    n_runs = data.n_runs
    uses_anomalies = objective.USES_ANOMALIES
    if uses_anomalies and int(data.m_valid.min()) < 1:
        bad = np.flatnonzero(data.m_valid < 1).tolist()
        raise ValueError(f"runs {bad} have no labelled anomalies, which {objective.__name__.split('.')[-1]} needs; "
                         "raise the anomaly fraction or pick a method trained on normals only (e.g. deep_svdd)")
    n_max, m_max = plan_sizes or (int(data.n_valid.max()), int(data.m_valid.max()))
    plan = plan_batches(n_max, m_max if uses_anomalies else 0, batch_size, anomaly_share)
    full_steps = plan.steps
    if steps_per_epoch is not None:
        plan = plan._replace(steps=max(1, min(plan.steps, int(steps_per_epoch))))
    milestone_steps = tuple(int(m) * plan.steps for m in milestones)
    hp = {k: np.asarray(v, np.float32) for k, v in hp.items()}
    pools = (data.normal_pool.astype(np.int32), data.n_valid.astype(np.int32),
             data.anomaly_pool.astype(np.int32), data.m_valid.astype(np.int32))
    prog = programs(model, objective, opts, milestone_steps, float(gamma), plan)
    if objective.prepare is not None:
        prog = replace(prog, prepare=lambda state, runner_, r_pad: _prepare(objective, model, opts, state, data,
                                                                            runner_, n_runs, r_pad))

    wanted = {int(e) for e in snapshot_epochs}
    if any(not 0 <= e <= epochs for e in wanted):
        raise ValueError(f"snapshot_epochs must lie in 0..{epochs} (completed epochs), got {sorted(wanted)}")
    snapshots: dict[int, Any] = {}
    t0 = time.perf_counter()
    if measure:
        runner = _measured_runner(runner, prog, keys, hp, sample_x, warm_start, pools, data, devices, model,
                                  objective, opts, batch_size, autotune_cache, autotune_log)
    session = start_session(runner, prog, keys, hp, sample_x, warm_start, pools, data.x, devices)
    stacked, set_stacked = session.stacked, session.set_stacked

    snap = lambda: jax.device_get((lambda s: (s.params, s.obj_state))(stacked()))  # noqa: E731
    history: list[dict[str, np.ndarray]] = []
    diverged = np.zeros(n_runs, bool)
    epoch_times: list[float] = []
    start = 0
    if checkpoint is not None:
        if resume:
            restored = checkpoint.restore(stacked())
            if restored is not None:
                start, host, hist, diverged = restored
                set_stacked(host)
                history = [{k: v[e] for k, v in hist.items()} for e in range(start)]
        elif checkpoint.latest_epoch() is not None:
            raise ValueError(f"{checkpoint.directory} already holds a checkpoint (epoch {checkpoint.latest_epoch()}); "
                             "resume from it (resume=True, --resume) or empty the folder to start afresh")
        if start == 0:
            checkpoint.remember(stacked())
        if start > epochs:
            raise ValueError(f"the checkpoint in {checkpoint.directory} is at epoch {start}, past the {epochs} asked for")
    if 0 in wanted and start == 0:
        snapshots[0] = snap()
    for ep in range(start, epochs):
        te = time.perf_counter()
        means, bad = session.train_epoch()
        diverged |= bad
        history.append(means)
        epoch_times.append(time.perf_counter() - te)
        done = ep + 1
        if done in wanted:
            snapshots[done] = snap()
        stop = should_stop is not None and should_stop()
        if checkpoint is not None and (checkpoint.should_save(done, epochs) or stop):
            checkpoint.save(done, stacked(), _stack_history(history), diverged, force=stop)
        if callback:
            callback(ep, means, time.perf_counter() - t0)
        if stop and done < epochs:
            if checkpoint is not None:
                checkpoint.wait()
            raise TrainingInterrupted(done, epochs, getattr(checkpoint, "directory", None))
    if checkpoint is not None:
        checkpoint.wait()
    final = stacked()
    jax.block_until_ready(final)
    total = time.perf_counter() - t0
    hist = _stack_history(history)
    # The first epoch holds the compilation; report it apart from the steady-state epochs.
    steady = float(np.median(epoch_times[1:])) if len(epoch_times) > 1 else (epoch_times[0] if epoch_times else 0.0)
    return FitResult(state=final, history=hist, diverged=diverged, runner=runner, plan=plan,
                     compile_s=max(epoch_times[0] - steady, 0.0) if epoch_times else 0.0, train_s=total,
                     epoch_s=epoch_times, full_steps_per_epoch=full_steps, snapshots=snapshots, start_epoch=start)


@functools.lru_cache(maxsize=64)
def programs(model: nn.Module, objective: "Objective", opts: Any, milestone_steps: tuple[int, ...], gamma: float,
             plan: BatchPlan) -> Programs:
    """The pure per-run functions of a sweep, one object per (model, objective, options, schedule, batch plan).

    Every per-run number (learning rate, weight decay, the objective's hyperparameters, the PRNG key) is an
    argument of these functions, never a constant in them, so a later ``fit`` with the same structure gets the
    same object back, and with it the programs its sessions compiled (``Programs.compiled``): a second estimator
    of the same shape trains without compiling again.
    """
    step = make_train_step(model, objective, opts, milestone_steps, gamma, plan.labels, plan.steps)
    init = functools.partial(init_run, model=model, objective=objective, opts=opts, milestones=milestone_steps,
                             gamma=gamma)
    return Programs(step=step, init=init, begin=functools.partial(begin_epoch, plan=plan), prepare=None,
                    acc_zero=lambda one, x_dev: zeros_diagnostics(objective, model, opts, one, x_dev, plan.labels),
                    steps=plan.steps)


def _stack_history(history: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([h[k] for h in history]) for k in history[0]} if history else {}


def _prepare(objective: Objective, model: nn.Module, opts: Any, state: Any, data: RunData, runner: Runner,
             n_runs: int, r_pad: int) -> Any:
    """Run the objective's ``prepare`` hook on the stacked state (runs padded to ``r_pad``)."""
    if objective.prepare is None:
        return state
    features, prepare = _prepare_programs(objective, model, opts)
    feats = runner.apply(features, state.params, data.x, pad_runs(data.normal_pool, r_pad))
    mask = np.arange(data.normal_pool.shape[1])[None, :] < pad_runs(data.n_valid, r_pad)[:, None]
    params, obj_state = prepare(state.params, state.obj_state, jnp.asarray(feats), jnp.asarray(mask), state.hp)
    return state.replace(params=params, obj_state=obj_state)


@functools.lru_cache(maxsize=64)
def _prepare_programs(objective: "Objective", model: nn.Module, opts: Any) -> tuple[Callable, Callable]:
    """The prepare hook's two functions, made once per structure so their compiled programs are reused."""
    def features(p, x):
        return objective.prepare_features(p, model, x)
    prepare = jax.jit(jax.vmap(lambda p, o, f, m, h: objective.prepare(p, o, f, m, h, opts)))
    return features, prepare


def _measured_runner(default: Runner, prog: Programs, keys: np.ndarray, hp: dict, sample_x: jnp.ndarray,
                     warm_start: Any, pools: tuple, data: RunData, devices: list | None, model: nn.Module,
                     objective: Objective, opts: Any, batch_size: int, cache: AutotuneCache | None | bool,
                     log: Callable[[str], None] | None) -> Runner:
    """``runners.autotune`` at this sweep's shapes (each candidate initialised afresh, its states discarded), or
    the cached choice for the same device kind, model, batch and runs."""
    n_runs = data.n_runs
    n_dev = len(devices) if devices is not None else jax.device_count()
    store = None if cache is False else (cache if cache is not None else AutotuneCache())
    key = autotune_key(jax.devices()[0], model, objective.__name__, opts, data.x.shape,
                       batch_size, n_runs, n_dev)
    candidates = autotune_candidates(n_runs, default.epoch_mode, default.chunk_runs, default.unroll)
    hit = store.get(key) if store is not None else None
    # Across processes every process must run the same programs: process 0's cache and choice decide for all.
    hit_at = _agree(candidates.index(hit) if hit is not None and hit in candidates else -1)
    if hit_at >= 0:
        hit = hit if hit is not None and candidates.index(hit) == hit_at else replace(
            candidates[hit_at], autotune={"chosen": candidates[hit_at].name, "cached": True, "from": "process 0"})
        if log:
            log(f"[autotune] {hit.name} (measured before, cached in {store.path if store else 'process 0'})")
        return hit
    sessions: dict[Runner, Any] = {}

    def run_steps(cand: Runner, k: int) -> None:
        if k == 0:
            sessions.clear()  # the previous candidate's states leave the device first
            sessions[cand] = start_session(cand, prog, keys, hp, sample_x, warm_start, pools, data.x, devices)
        sessions[cand].run_steps(k)

    chosen = autotune(candidates, run_steps, n_runs, log=log)
    sessions.clear()
    at = _agree(candidates.index(chosen))
    if candidates[at] != chosen:  # another process measured a different winner: process 0's stands
        chosen = replace(candidates[at], autotune={**chosen.autotune, "chosen": candidates[at].name,
                                                   "from": "process 0"})
    if store is not None:
        store.put(key, chosen)
    return chosen


def _agree(value: int) -> int:
    """Process 0's ``value`` in every process (the value itself with one process)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils
    return int(multihost_utils.broadcast_one_to_all(np.asarray(value, np.int32)))
