"""Train many runs of one objective at once: the run-axis engine.

Two strategies, chosen per backend and model (``resolve_strategy``), same numbers up to float rounding:

* ``vmap``: ``jax.jit(jax.vmap(step))`` over the stacked state, the run axis sharded over all
  devices; an epoch is one ``lax.scan`` (``epoch_mode="scan"``) or a Python loop of jitted
  steps (``"steps"``). The fast path on GPU/TPU.
* ``loop``: one jitted single-run step, the runs taken in turn within each epoch. On XLA:CPU a
  vmapped per-run convolution lowers to a grouped convolution that runs ~11x slower than R
  separate ones (``benchmarks/bench_strategies.py``), so this is the CPU default for
  convolutional models; dense-only models (FC3 on tabular data) take ``vmap`` on CPU as well.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable, Protocol, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from imdad_jax.train import sharding as shd
from imdad_jax.train.apply import apply_runs
from imdad_jax.train.step import BatchPlan, begin_epoch, init_run, make_train_step, plan_batches

STRATEGIES = ("auto", "vmap", "loop")
EPOCH_MODES = ("auto", "scan", "steps")


def resolve_strategy(strategy: str = "auto", epoch_mode: str = "auto", backend: str | None = None,
                     has_conv: bool = True) -> tuple[str, str]:
    """Pick (strategy, epoch_mode): vmap + scan on accelerators; on CPU, loop + steps for convolutional models
    and vmap + scan for dense-only ones (``benchmarks/results_strategies*.md``, ``results_runs_*.md``)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if epoch_mode not in EPOCH_MODES:
        raise ValueError(f"epoch_mode must be one of {EPOCH_MODES}, got {epoch_mode!r}")
    backend = backend or jax.default_backend()
    on_cpu = backend == "cpu"
    if strategy == "auto":
        # XLA:CPU runs a vmapped convolution as a batch-grouped one, far slower than a loop over
        # runs; a vmapped matmul is a plain batched matmul, faster than looping tiny ones.
        strategy = "loop" if on_cpu and has_conv else "vmap"
    if epoch_mode == "auto":
        # A scanned epoch of convolutions runs 3-4x slower on XLA:CPU than a loop of jitted steps; for dense-only
        # models the scan saves the per-step dispatch and wins at every run count measured (FC3, batch 50:
        # 2.2x at 1 run, 1.1x at 100, 1.4x at 1000; benchmarks/results_runs_fc3.md).
        epoch_mode = "steps" if on_cpu and has_conv else "scan"
    return strategy, epoch_mode


def has_conv(model: nn.Module, sample_x: jnp.ndarray) -> bool:
    """Whether the model holds a convolution kernel (rank >= 3), from shapes alone (nothing is computed)."""
    method = getattr(model, "initialize", None)
    init = (lambda: model.init(jax.random.PRNGKey(0), sample_x, method=method)) if method else \
        (lambda: model.init(jax.random.PRNGKey(0), sample_x))
    return any(leaf.ndim >= 3 for leaf in jax.tree.leaves(jax.eval_shape(init)))


@dataclass
class RunData:
    """Training data shared by R runs: one array, per-run index pools into it (padded)."""

    x: np.ndarray  # (N, ...) float32
    normal_pool: np.ndarray  # (R, Pn) int32
    n_valid: np.ndarray  # (R,)
    anomaly_pool: np.ndarray  # (R, Pa) int32
    m_valid: np.ndarray  # (R,)

    @property
    def n_runs(self) -> int:
        return int(self.normal_pool.shape[0])


@dataclass
class FitResult:
    """Stacked final state (leading axis R), per-epoch diagnostics (epochs, R) and timing."""

    state: Any
    history: dict[str, np.ndarray]
    diverged: np.ndarray  # (R,) bool: non-finite loss or parameters at some epoch
    strategy: str
    epoch_mode: str
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


def _pad_runs(tree: Any, r_pad: int) -> Any:
    def pad(a):
        a = np.asarray(a)
        extra = r_pad - a.shape[0]
        return a if extra == 0 else np.concatenate([a, np.repeat(a[-1:], extra, axis=0)], axis=0)
    return jax.tree.map(pad, tree)


def _finite(tree: Any) -> jnp.ndarray:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves))


def fit(model: nn.Module, objective: ModuleType, opts: Any, data: RunData, hp: dict[str, np.ndarray],
        keys: np.ndarray, *, epochs: int, batch_size: int, milestones: tuple[int, ...] = (), gamma: float = 0.1,
        strategy: str = "auto", epoch_mode: str = "auto", devices: list | None = None,
        steps_per_epoch: int | None = None, anomaly_share: float | None = None,
        warm_start: dict[str, Any] | None = None, snapshot_epochs: Sequence[int] = (),
        callback: Callable[[int, dict[str, np.ndarray], float], None] | None = None,
        checkpoint: Checkpointer | None = None, resume: bool = False,
        should_stop: Callable[[], bool] | None = None, plan_sizes: tuple[int, int] | None = None) -> FitResult:
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
    strategy, epoch_mode = resolve_strategy(strategy, epoch_mode, has_conv=has_conv(model, sample_x))
    n_runs = data.n_runs
    uses_anomalies = getattr(objective, "USES_ANOMALIES", True)
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
    labels = plan.labels
    step = make_train_step(model, objective, opts, milestone_steps, gamma, labels, plan.steps)
    init = functools.partial(init_run, model=model, objective=objective, opts=opts, milestones=milestone_steps,
                             gamma=gamma)
    begin = functools.partial(begin_epoch, plan=plan)
    hp = {k: np.asarray(v, np.float32) for k, v in hp.items()}
    pools = (data.normal_pool.astype(np.int32), data.n_valid.astype(np.int32),
             data.anomaly_pool.astype(np.int32), data.m_valid.astype(np.int32))

    wanted = {int(e) for e in snapshot_epochs}
    if any(not 0 <= e <= epochs for e in wanted):
        raise ValueError(f"snapshot_epochs must lie in 0..{epochs} (completed epochs), got {sorted(wanted)}")
    snapshots: dict[int, Any] = {}
    t0 = time.perf_counter()

    # Each strategy supplies four closures over its own state layout; the epoch loop below is shared.
    if strategy == "vmap":
        mesh = shd.run_mesh(devices)
        r_pad = shd.padded_runs(n_runs, mesh.devices.size)
        rs, rep = shd.run_sharding(mesh), shd.replicated(mesh)
        # to_global/to_host are device_put/device_get in one process; across processes every process
        # holds the same full host arrays and gets every run's numbers back.
        put = lambda t: shd.to_global(_pad_runs(t, r_pad), rs)  # noqa: E731
        x_dev = shd.to_global(jnp.asarray(data.x), rep)
        pools_d = put(pools)
        state = jax.jit(jax.vmap(init, in_axes=(0, 0, None, 0)), out_shardings=rs)(
            put(keys), put(hp), sample_x, put(warm_start) if warm_start else None)
        state = _prepare(objective, model, opts, state, data, "vmap", n_runs, r_pad)
        box = {"state": shd.to_global(state, rs)}
        one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), box["state"])
        acc0 = shd.to_global(jax.tree.map(lambda z: np.zeros((r_pad,) + z.shape, z.dtype),
                                          _zeros_acc(objective, model, opts, one, x_dev, labels)), rs)
        begin_v = jax.jit(jax.vmap(begin), out_shardings=rs)
        vstep = jax.vmap(step, in_axes=(0, 0, None, 0))
        if epoch_mode == "scan":
            def epoch_fn(state, acc, x_all, idx):
                def body(carry, idx_t):
                    return vstep(*carry, x_all, idx_t), None
                (state, acc), _ = jax.lax.scan(body, (state, acc), jnp.swapaxes(idx, 0, 1))
                return state, acc
            run_epoch_c = jax.jit(epoch_fn, donate_argnums=(0, 1), out_shardings=(rs, rs))
            run_epoch = lambda st, ac, idx: run_epoch_c(st, ac, x_dev, idx)  # noqa: E731
        else:
            vstep_c = jax.jit(vstep, donate_argnums=(0, 1), out_shardings=(rs, rs))

            def run_epoch(st, ac, idx):
                for t in range(plan.steps):
                    st, ac = vstep_c(st, ac, x_dev, idx[:, t])
                return st, ac
        finite_v = jax.jit(jax.vmap(lambda s, a: _finite((s.params, a))))

        def train_epoch() -> tuple[dict[str, np.ndarray], np.ndarray]:
            st, idx = begin_v(box["state"], *pools_d)
            st, acc = run_epoch(st, jax.tree.map(jnp.zeros_like, acc0), idx)
            box["state"] = st
            acc_h, finite_h = shd.to_host((acc, finite_v(st, acc)))
            return {k: v[:n_runs] / plan.steps for k, v in acc_h.items()}, ~finite_h[:n_runs]

        def stacked() -> Any:  # every run's state without the padding runs: on the device, or
            if jax.process_count() > 1:  # on the host when no process holds every run's shards
                return jax.tree.map(lambda a: a[:n_runs], shd.to_host(box["state"]))
            return jax.tree.map(lambda a: a[:n_runs], box["state"])

        def set_stacked(host: Any) -> None:
            box["state"] = put(host)
    else:
        init_c = jax.jit(init)
        begin_c = jax.jit(begin)
        if epoch_mode == "scan":
            def epoch_fn(state, acc, x_all, idx):
                (state, acc), _ = jax.lax.scan(lambda c, i: (step(*c, x_all, i), None), (state, acc), idx)
                return state, acc
            run_epoch_c = jax.jit(epoch_fn, donate_argnums=(0, 1))
            run_one = lambda st, ac, idx: run_epoch_c(st, ac, x_dev, idx)  # noqa: E731
        else:
            step_c = jax.jit(step, donate_argnums=(0, 1))

            def run_one(st, ac, idx):
                for t in range(plan.steps):
                    st, ac = step_c(st, ac, x_dev, idx[t])
                return st, ac
        finite_c = jax.jit(lambda s, a: _finite((s.params, a)))
        x_dev = jnp.asarray(data.x)
        ws = (lambda r: jax.tree.map(lambda a: jnp.asarray(a[r]), warm_start)) if warm_start else (lambda r: None)
        states = [init_c(jnp.asarray(keys[r]), {k: v[r] for k, v in hp.items()}, sample_x, ws(r)) for r in range(n_runs)]
        if hasattr(objective, "prepare"):
            stacked0 = _prepare(objective, model, opts, jax.tree.map(lambda *xs: jnp.stack(xs), *states), data,
                                "loop", n_runs, n_runs)
            states = [jax.tree.map(lambda a: a[r], stacked0) for r in range(n_runs)]
        pools_r = [tuple(jnp.asarray(p[r]) for p in pools) for r in range(n_runs)]
        acc0 = _zeros_acc(objective, model, opts, states[0], x_dev, labels)

        def train_epoch() -> tuple[dict[str, np.ndarray], np.ndarray]:
            accs, bad = [], np.zeros(n_runs, bool)
            for r in range(n_runs):
                st, idx = begin_c(states[r], *pools_r[r])
                st, ac = run_one(st, jax.tree.map(jnp.zeros_like, acc0), idx)
                bad[r] = not bool(finite_c(st, ac))
                states[r] = st
                accs.append(ac)
            return {k: np.stack([np.asarray(a[k]) for a in accs]) / plan.steps for k in acc0}, bad

        def stacked() -> Any:
            return jax.tree.map(lambda *xs: jnp.stack(xs), *states)

        def set_stacked(host: Any) -> None:
            states[:] = [jax.tree.map(lambda a: jnp.asarray(a[r]), host) for r in range(n_runs)]

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
        means, bad = train_epoch()
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
    return FitResult(state=final, history=hist, diverged=diverged, strategy=strategy, epoch_mode=epoch_mode,
                     plan=plan, compile_s=max(epoch_times[0] - steady, 0.0) if epoch_times else 0.0, train_s=total,
                     epoch_s=epoch_times, full_steps_per_epoch=full_steps, snapshots=snapshots, start_epoch=start)


def _stack_history(history: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([h[k] for h in history]) for k in history[0]} if history else {}


def _prepare(objective: ModuleType, model: nn.Module, opts: Any, state: Any, data: RunData, strategy: str,
             n_runs: int, r_pad: int) -> Any:
    """Run the objective's ``prepare`` hook on the stacked state (runs padded to ``r_pad``)."""
    if not hasattr(objective, "prepare"):
        return state
    feats = apply_runs(lambda p, x: objective.prepare_features(p, model, x), state.params, data.x,
                       _pad_runs(data.normal_pool, r_pad), strategy=strategy)
    mask = np.arange(data.normal_pool.shape[1])[None, :] < _pad_runs(data.n_valid, r_pad)[:, None]
    params, obj_state = jax.jit(jax.vmap(lambda p, o, f, m, h: objective.prepare(p, o, f, m, h, opts)))(
        state.params, state.obj_state, jnp.asarray(feats), jnp.asarray(mask), state.hp)
    return state.replace(params=params, obj_state=obj_state)


def _zeros_acc(objective: ModuleType, model: nn.Module, opts: Any, state: Any, x_dev: jnp.ndarray,
               labels: jnp.ndarray) -> dict:
    """Zeros shaped like one run's step diagnostics (the Lagrangian's aux), found by ``eval_shape``."""
    x_b = jax.ShapeDtypeStruct((labels.shape[0],) + x_dev.shape[1:], x_dev.dtype)
    batch = lambda x: {"x": x, "y": labels, "key": jax.random.PRNGKey(0), "epoch": jnp.zeros((), jnp.int32)}  # noqa: E731
    shapes = jax.eval_shape(lambda p, o, h, x: objective.loss(p, o, model, batch(x), h, opts)[1],
                            state.params, state.obj_state, state.hp, x_b)
    return {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
