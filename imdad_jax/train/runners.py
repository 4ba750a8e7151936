"""How the run axis executes: one ``Runner``, chosen once per sweep, initialises, trains and scores every run.

Strategies (the same numbers up to float rounding; a run's numbers never depend on the runs beside it):

* ``vmap``: ``jax.vmap`` of the whole per-run step (each run takes its own gradient). A vmapped convolution whose
  kernel is per run lowers to a *feature-grouped* convolution, and its weight gradient to a forward grouped
  convolution with a batch-sized window: on CUDA the slow path of grouped convolutions.
* ``vmap_fwd``: the gradient of the run-summed loss of a vmapped forward pass, the optimizer and objective
  updates vmapped after it. The same gradients (runs share no parameter), but XLA now emits the weight gradient
  as a ``batch_group_count`` convolution, which XLA:GPU lowers to cuDNN's backward-filter kernels.
* ``map``: ``lax.map`` over runs: per-run (ungrouped) kernels, one run's activations in memory at a time.
* ``chunked``: ``lax.map`` over groups of ``chunk_runs`` runs, each group vmapped (``lax.map(batch_size=k)``).
* ``loop``: one compiled single-run step, the runs taken in turn from Python (the CPU choice for convolutional
  models: XLA:CPU runs grouped convolutions ~11x slower than separate ones).

The stacked strategies shard the run axis over every device (``map`` and ``chunked`` through ``shard_map``: each
device maps over its own runs). An epoch is one ``lax.scan`` of the step (``epoch_mode="scan"``, with ``unroll``)
or a Python loop of compiled steps (``"steps"``).

``resolve_runner`` picks once: on CPU as measured there (``loop`` + ``steps`` for convolutional models, ``vmap`` +
``scan`` for dense ones); on an accelerator, ``auto`` measures (``autotune``): a few steps of every candidate at
the sweep's real shapes, compile time apart, fastest by run-steps/s, cached per (device kind, model, batch, runs).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from imdad_jax.train import sharding as shd
from imdad_jax.train.step import TrainStep

STRATEGIES = ("auto", "vmap", "vmap_fwd", "map", "chunked", "loop")
STACKED = ("vmap", "vmap_fwd", "map", "chunked")  # every run in one program
EPOCH_MODES = ("auto", "scan", "steps")
# What ``auto`` measures on an accelerator. ``loop`` is left out: one program per run launches R times the
# kernels of ``map`` from Python.
AUTOTUNE_CANDIDATES = ("vmap", "vmap_fwd", "map", "chunked")
# Runs per vmapped group under ``chunked``: enough to fill a GPU's streaming multiprocessors with a small CNN's
# kernels while holding a few runs' activations (the AOT report lists the memory of each size).
DEFAULT_CHUNK_RUNS = 8


@dataclass(frozen=True)
class Runner:
    """A concrete strategy: how every run of a sweep is initialised, trained and scored.

    ``strategy``: one of ``STRATEGIES`` but ``auto``; ``epoch_mode``: ``scan`` or ``steps``; ``chunk_runs``: runs
    per vmapped group for ``chunked``; ``unroll``: the epoch scan's unroll; ``autotune``: what the measurement
    that chose it found (``{"chosen", "run_steps_per_s": {strategy: value or None}, "cached", ...}``), or None.
    """

    strategy: str
    epoch_mode: str = "scan"
    chunk_runs: int = DEFAULT_CHUNK_RUNS
    unroll: int = 1
    autotune: dict | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES or self.strategy == "auto":
            raise ValueError(f"a Runner's strategy must be one of {STRATEGIES[1:]}, got {self.strategy!r}")
        if self.epoch_mode not in ("scan", "steps"):
            raise ValueError(f"epoch_mode must be 'scan' or 'steps', got {self.epoch_mode!r}")
        if int(self.chunk_runs) < 1 or int(self.unroll) < 1:
            raise ValueError(f"chunk_runs and unroll must be >= 1, got {self.chunk_runs} and {self.unroll}")

    @property
    def stacked(self) -> bool:
        """Whether all runs live in one program (every strategy but ``loop``)."""
        return self.strategy in STACKED

    @property
    def vmapped(self) -> bool:
        """Whether a layer sees a vmapped run axis (which changes the fastest convolution form on CPU)."""
        return self.strategy in ("vmap", "vmap_fwd", "chunked")

    @property
    def name(self) -> str:
        return f"{self.strategy}(k={self.chunk_runs})" if self.strategy == "chunked" else self.strategy

    # ------------------------------------------------------------------------------------------------ programs
    def _over_runs(self, fn: Callable, in_axes: tuple) -> Callable:
        """``fn`` applied to every run: args with axis 0 are per run, ``None`` shared."""
        if self.strategy in ("vmap", "vmap_fwd", "loop"):
            return jax.vmap(fn, in_axes=in_axes)
        batch_size = int(self.chunk_runs) if self.strategy == "chunked" else None

        def mapped(*args):
            per_run = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

            def one(xs):
                it = iter(xs)
                return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes)))
            return jax.lax.map(one, per_run, batch_size=batch_size)
        return mapped

    def step_program(self, step: TrainStep) -> Callable:
        """``(states, accs, x_all, idx) -> (states, accs)`` for stacked states (leading run axis R, ``idx`` (R, B))."""
        if self.strategy == "vmap_fwd":
            def program(states, accs, x_all, idx):
                def total(params):
                    value, aux = jax.vmap(step.loss, in_axes=(0, 0, None, 0))(params, states, x_all, idx)
                    # d(sum of run losses)/d(run r's parameters) = d(run r's loss)/d(run r's parameters).
                    return jnp.sum(value), aux
                (_, (aux, stats)), grads = jax.value_and_grad(total, has_aux=True)(states.params)
                return jax.vmap(step.finish)(states, accs, grads, aux, stats)
            return program
        return self._over_runs(step, (0, 0, None, 0))

    def sharded(self, program: Callable, mesh: Any, specs: tuple, out_specs: Any) -> Callable:
        """``program`` over a run axis sharded on ``mesh``: ``map``/``chunked`` map over each device's own runs."""
        if self.strategy in ("map", "chunked") and mesh.devices.size > 1:
            return jax.shard_map(program, mesh=mesh, in_specs=specs, out_specs=out_specs, check_vma=False)
        return program

    # ------------------------------------------------------------------------------------------------- scoring
    def apply(self, fn: Callable[[Any, jnp.ndarray], jnp.ndarray], params: Any, x: np.ndarray,
              idx: np.ndarray | None = None, *, chunk: int = 2048) -> np.ndarray:
        """``fn(params_r, x_batch) -> (B,)`` for every run r: (R, N) over all of ``x`` (N, ...), or (R, P) over each
        run's own rows ``idx`` (R, P). ``params`` stacked over runs. Rows go in blocks of ``chunk``."""
        if any(shd.is_global(a) for a in jax.tree.leaves(params)):
            # Runs sharded over several processes: every process gathers all runs and scores them itself, so
            # each gets the full result without a second collective.
            params = shd.to_host(params)
        n_runs = jax.tree.leaves(params)[0].shape[0]
        x_dev = jnp.asarray(x)
        length = x.shape[0] if idx is None else idx.shape[1]
        f, g = _apply_programs(self, fn)
        if self.stacked:
            if idx is None:
                parts = [f(params, x_dev[i:i + chunk]) for i in range(0, length, chunk)]
            else:
                parts = [g(params, x_dev, jnp.asarray(idx[:, i:i + chunk])) for i in range(0, length, chunk)]
            return np.concatenate([np.asarray(p) for p in parts], axis=1)
        rows = []
        for r in range(n_runs):
            p_r = jax.tree.map(lambda a: a[r], params)
            if idx is None:
                parts = [f(p_r, x_dev[i:i + chunk]) for i in range(0, length, chunk)]
            else:
                parts = [g(p_r, x_dev, jnp.asarray(idx[r, i:i + chunk])) for i in range(0, length, chunk)]
            rows.append(np.concatenate([np.asarray(p) for p in parts]))
        return np.stack(rows)


@functools.lru_cache(maxsize=64)
def _apply_programs(runner: Runner, fn: Callable) -> tuple[Callable, Callable]:
    """``Runner.apply``'s two programs for ``fn`` (over all rows, over each run's own rows), jitted once per
    (runner, fn): an ``fn`` kept by its caller (a cached scorer) then compiles once per shape, not per call."""
    if runner.stacked:
        return (jax.jit(runner._over_runs(fn, (0, None))),
                jax.jit(runner._over_runs(lambda p, xs, ii: fn(p, xs[ii]), (0, None, 0))))
    return jax.jit(fn), jax.jit(lambda p, xs, ii: fn(p, xs[ii]))


def as_runner(strategy: str | Runner) -> Runner:
    """A ``Runner`` from a strategy name (``epoch_mode`` scan) or the runner itself."""
    return strategy if isinstance(strategy, Runner) else Runner(strategy)


def resolve_runner(strategy: str | Runner = "auto", epoch_mode: str = "auto", backend: str | None = None,
                   has_conv: bool = True, *, chunk_runs: int = DEFAULT_CHUNK_RUNS, unroll: int = 1) -> Runner:
    """The runner for a strategy name. ``auto`` on CPU: ``loop`` + ``steps`` for convolutional models, ``vmap`` +
    ``scan`` for dense-only ones (``benchmarks/results_strategies*.md``, ``results_runs_*.md``). ``auto`` on an
    accelerator gives ``vmap`` + ``scan`` here; ``fit`` replaces it with ``autotune``'s measured choice."""
    if isinstance(strategy, Runner):
        return strategy
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if epoch_mode not in EPOCH_MODES:
        raise ValueError(f"epoch_mode must be one of {EPOCH_MODES}, got {epoch_mode!r}")
    on_cpu = (backend or jax.default_backend()) == "cpu"
    if strategy == "auto":
        # XLA:CPU runs a vmapped convolution as a batch-grouped one, far slower than a loop over runs; a vmapped
        # matmul is a plain batched matmul, faster than looping tiny ones.
        strategy = "loop" if on_cpu and has_conv else "vmap"
    if epoch_mode == "auto":
        # A scanned epoch of convolutions runs 3-4x slower on XLA:CPU than a loop of jitted steps; for dense-only
        # models the scan saves the per-step dispatch and wins at every run count measured (FC3, batch 50:
        # 2.2x at 1 run, 1.1x at 100, 1.4x at 1000; benchmarks/results_runs_fc3.md).
        epoch_mode = "steps" if on_cpu and has_conv else "scan"
    return Runner(strategy, epoch_mode, chunk_runs=chunk_runs, unroll=unroll)


# ------------------------------------------------------------------------------------------------------ autotune
def autotune_candidates(n_runs: int, epoch_mode: str = "scan", chunk_runs: int = DEFAULT_CHUNK_RUNS,
                        unroll: int = 1) -> list[Runner]:
    """The runners ``auto`` measures for ``n_runs`` runs (``chunked`` only when it groups fewer than all runs)."""
    out = []
    for s in AUTOTUNE_CANDIDATES:
        if s == "chunked" and chunk_runs >= n_runs:
            continue  # one group of every run is vmap
        if s == "map" and n_runs == 1:
            continue  # a map over one run is vmap's program
        out.append(Runner(s, epoch_mode, chunk_runs=chunk_runs, unroll=unroll))
    return out


def autotune(candidates: Sequence[Runner], run_steps: Callable[[Runner, int], None], n_runs: int, *,
             steps: int = 5, clock: Callable[[], float] = time.perf_counter,
             log: Callable[[str], None] | None = print) -> Runner:
    """The fastest of ``candidates`` by run-steps/s, with what was measured in its ``autotune`` field.

    ``run_steps(runner, k)`` runs ``k`` training steps of every run with that runner (``k = 0``: build, compile and
    run one step) and blocks until they are done; it is called once with 0 (compilation: reported, not counted)
    and once with ``steps`` (timed by ``clock``). A candidate that fails (out of device memory, a compiler error) is skipped
    with its reason; if all fail the first candidate's error is raised.
    """
    rates: dict[str, float | None] = {}
    errors: dict[str, str] = {}
    compile_s: dict[str, float] = {}
    best: Runner | None = None
    first_error: Exception | None = None
    for cand in candidates:
        try:
            t0 = clock()
            run_steps(cand, 0)
            t1 = clock()
            run_steps(cand, steps)
            t2 = clock()
        except Exception as e:  # noqa: BLE001 - an out-of-memory candidate must not end the sweep
            first_error = first_error or e
            rates[cand.name], errors[cand.name] = None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            if log:
                log(f"[autotune] {cand.name}: failed ({errors[cand.name]})")
            continue
        rate = n_runs * steps / max(t2 - t1, 1e-9)
        rates[cand.name], compile_s[cand.name] = rate, t1 - t0
        if log:
            log(f"[autotune] {cand.name}: {rate:,.1f} run-steps/s (compile {t1 - t0:.1f} s)")
        if best is None or rate > rates[best.name]:
            best = cand
    if best is None:
        raise RuntimeError(f"every strategy failed to run: {errors}") from first_error
    info = {"chosen": best.name, "run_steps_per_s": rates, "compile_s": compile_s, "errors": errors,
            "steps": steps, "runs": n_runs, "cached": False}
    if log:
        log(f"[autotune] chose {best.name}")
    return replace(best, autotune=info)


def autotune_key(device: Any, model: Any, objective_name: str, opts: Any, x_shape: tuple, batch_size: int,
                 n_runs: int, n_devices: int) -> str:
    """What the measured choice depends on: device kind and count, model, objective, data shape, batch, runs."""
    what = repr((repr(model), objective_name, repr(opts), tuple(x_shape)))
    digest = hashlib.sha1(what.encode()).hexdigest()[:16]
    return f"{device.device_kind}|devices={n_devices}|model={digest}|batch={batch_size}|runs={n_runs}"


def cache_dir() -> Path:
    """``$IMDAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/imdad_jax``, else ``~/.cache/imdad_jax``."""
    if os.environ.get("IMDAD_CACHE_DIR"):
        return Path(os.environ["IMDAD_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "imdad_jax"


class AutotuneCache:
    """Measured choices on disk (``autotune.json`` in ``directory``), keyed by ``autotune_key``."""

    def __init__(self, directory: str | Path | None = None):
        self.path = Path(directory or cache_dir()) / "autotune.json"

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def get(self, key: str) -> Runner | None:
        hit = self._read().get(key)
        if not hit:
            return None
        r = hit["runner"]
        return Runner(r["strategy"], r["epoch_mode"], chunk_runs=r["chunk_runs"], unroll=r["unroll"],
                      autotune={**hit["autotune"], "cached": True})

    def put(self, key: str, runner: Runner) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            table = self._read()
            table[key] = {"runner": {"strategy": runner.strategy, "epoch_mode": runner.epoch_mode,
                                     "chunk_runs": runner.chunk_runs, "unroll": runner.unroll},
                          "autotune": runner.autotune}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(table, indent=1))
            tmp.replace(self.path)
        except OSError:  # a read-only home must not stop a sweep: the choice is measured again next time
            pass



# ------------------------------------------------------------------------------------------------------ sessions
def pad_runs(tree: Any, r_pad: int) -> Any:
    """Every leaf's leading (run) axis padded to ``r_pad`` with copies of the last run (dropped after)."""
    def pad(a):
        a = np.asarray(a)
        extra = r_pad - a.shape[0]
        return a if extra == 0 else np.concatenate([a, np.repeat(a[-1:], extra, axis=0)], axis=0)
    return jax.tree.map(pad, tree)


def all_finite(tree: Any) -> jnp.ndarray:
    """Whether every floating leaf of ``tree`` is finite (a scalar bool)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves))


@jax.jit
@jax.vmap
def _finite_runs(state: Any, acc: Any) -> jnp.ndarray:
    return all_finite((state.params, acc))


@jax.jit
def _finite_one(state: Any, acc: Any) -> jnp.ndarray:
    return all_finite((state.params, acc))


@dataclass
class Programs:
    """The per-run pure functions a session runs: the step, init, the epoch draw, the objective's prepare hook
    (``prepare(stacked_state, runner, r_pad) -> stacked_state``, None without one) and the diagnostics' zeros
    (``acc_zero(one_state, x_dev) -> dict``), for ``steps`` steps an epoch."""

    step: TrainStep
    init: Callable
    begin: Callable
    prepare: Callable
    acc_zero: Callable
    steps: int
    # the jitted programs of these functions, by what else shapes them (runner, sharding): sessions take them
    # from here, so a second sweep of the same structure reuses what the first compiled (a copy made with
    # dataclasses.replace shares the dict)
    compiled: dict = field(default_factory=dict, compare=False, repr=False)

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        """``compiled[key]``, made by ``make()`` the first time."""
        if key not in self.compiled:
            self.compiled[key] = make()
        return self.compiled[key]

    def zeros(self, one: Any, x_dev: Any) -> dict:
        """``acc_zero(one, x_dev)``, traced once per state structure and data shape."""
        leaves, tree = jax.tree.flatten(one)
        key = ("acc_zero", tree, tuple((a.shape, str(a.dtype)) for a in leaves), x_dev.shape[1:], str(x_dev.dtype))
        return self.cached(key, lambda: self.acc_zero(one, x_dev))


class StackedSession:
    """Every run's state in one stacked pytree, the run axis sharded over ``devices``."""

    def __init__(self, runner: Runner, prog: Programs, keys: np.ndarray, hp: dict, sample_x: jnp.ndarray,
                 warm_start: Any, pools: tuple, x: np.ndarray, devices: list | None):
        self.runner, self.prog, self.n_runs = runner, prog, int(keys.shape[0])
        mesh = shd.run_mesh(devices)
        self.r_pad = shd.padded_runs(self.n_runs, mesh.devices.size)
        rs = self.rs = shd.run_sharding(mesh)
        # to_global/to_host are device_put/device_get in one process; across processes every process holds the
        # same full host arrays and gets every run's numbers back.
        self.put = lambda t: shd.to_global(pad_runs(t, self.r_pad), rs)  # noqa: E731
        self.x_dev = x_dev = shd.to_global(jnp.asarray(x), shd.replicated(mesh))
        self.pools = self.put(pools)
        init_c = prog.cached(("init", rs), lambda: jax.jit(jax.vmap(prog.init, in_axes=(0, 0, None, 0)),
                                                           out_shardings=rs))
        state = init_c(self.put(keys), self.put(hp), sample_x, self.put(warm_start) if warm_start else None)
        if prog.prepare is not None:
            state = prog.prepare(state, runner, self.r_pad)
        self.state = shd.to_global(state, rs)
        one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), self.state)
        self.acc0 = shd.to_global(jax.tree.map(lambda z: np.zeros((self.r_pad,) + z.shape, z.dtype),
                                               prog.zeros(one, x_dev)), rs)
        self.begin = prog.cached(("begin", rs), lambda: jax.jit(jax.vmap(prog.begin), out_shardings=rs))
        specs = (P(shd.RUN_AXIS), P(shd.RUN_AXIS), P(), P(shd.RUN_AXIS))
        step_p = runner.sharded(runner.step_program(prog.step), mesh, specs, (P(shd.RUN_AXIS), P(shd.RUN_AXIS)))
        self.step_c = prog.cached(("step", runner, rs), lambda: jax.jit(step_p, donate_argnums=(0, 1),
                                                                        out_shardings=(rs, rs)))
        if runner.epoch_mode == "scan":
            def epoch_fn(state, acc, x_all, idx):
                def body(carry, idx_t):
                    return step_p(*carry, x_all, idx_t), None
                (state, acc), _ = jax.lax.scan(body, (state, acc), jnp.swapaxes(idx, 0, 1), unroll=runner.unroll)
                return state, acc
            self.epoch_c = prog.cached(("epoch", runner, rs), lambda: jax.jit(epoch_fn, donate_argnums=(0, 1),
                                                                              out_shardings=(rs, rs)))
        self.finite = _finite_runs

    def run_steps(self, k: int) -> None:
        """``k`` steps of every run from the current state, as compiled steps (autotune's measurement); ``k = 0``
        compiles and runs one step, so that the next call times steps alone. Blocks until done."""
        st, idx = self.begin(self.state, *self.pools)
        acc = jax.tree.map(jnp.zeros_like, self.acc0)
        for t in range(max(k, 1)):
            st, acc = self.step_c(st, acc, self.x_dev, idx[:, t % idx.shape[1]])
        self.state = st
        jax.block_until_ready(st)

    def train_epoch(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One epoch of every run: (per-run means of the step diagnostics, per-run non-finite flags)."""
        st, idx = self.begin(self.state, *self.pools)
        acc = jax.tree.map(jnp.zeros_like, self.acc0)
        if self.runner.epoch_mode == "scan":
            st, acc = self.epoch_c(st, acc, self.x_dev, idx)
        else:
            for t in range(self.prog.steps):
                st, acc = self.step_c(st, acc, self.x_dev, idx[:, t])
        self.state = st
        acc_h, finite_h = shd.to_host((acc, self.finite(st, acc)))
        return {k: v[:self.n_runs] / self.prog.steps for k, v in acc_h.items()}, ~finite_h[:self.n_runs]

    def stacked(self) -> Any:
        """Every run's state without the padding runs: on the device, or on the host when no process holds
        every run's shards."""
        if jax.process_count() > 1:
            return jax.tree.map(lambda a: a[:self.n_runs], shd.to_host(self.state))
        return jax.tree.map(lambda a: a[:self.n_runs], self.state)

    def set_stacked(self, host: Any) -> None:
        self.state = self.put(host)


class LoopSession:
    """One state per run, one compiled single-run step, the runs taken in turn."""

    def __init__(self, runner: Runner, prog: Programs, keys: np.ndarray, hp: dict, sample_x: jnp.ndarray,
                 warm_start: Any, pools: tuple, x: np.ndarray, devices: list | None):
        n = int(keys.shape[0])
        self.runner, self.prog, self.n_runs = runner, prog, n
        init_c = prog.cached("loop_init", lambda: jax.jit(prog.init))
        self.begin = prog.cached("loop_begin", lambda: jax.jit(prog.begin))
        step = prog.step
        if runner.epoch_mode == "scan":
            def epoch_fn(state, acc, x_all, idx):
                (state, acc), _ = jax.lax.scan(lambda c, i: (step(*c, x_all, i), None), (state, acc), idx,
                                               unroll=runner.unroll)
                return state, acc
            self.epoch_c = prog.cached(("loop_epoch", runner.unroll),
                                       lambda: jax.jit(epoch_fn, donate_argnums=(0, 1)))
        self.step_c = prog.cached("loop_step", lambda: jax.jit(step, donate_argnums=(0, 1)))
        self.finite = _finite_one
        self.x_dev = x_dev = jnp.asarray(x)
        ws = (lambda r: jax.tree.map(lambda a: jnp.asarray(a[r]), warm_start)) if warm_start else (lambda r: None)
        self.states = [init_c(jnp.asarray(keys[r]), {k: v[r] for k, v in hp.items()}, sample_x, ws(r))
                       for r in range(n)]
        if prog.prepare is not None:
            stacked0 = prog.prepare(jax.tree.map(lambda *xs: jnp.stack(xs), *self.states), runner, n)
            self.states = [jax.tree.map(lambda a: a[r], stacked0) for r in range(n)]
        self.pools = [tuple(jnp.asarray(p[r]) for p in pools) for r in range(n)]
        self.acc0 = prog.zeros(self.states[0], x_dev)

    def _run_one(self, st: Any, acc: Any, idx: jnp.ndarray, k: int | None = None) -> tuple[Any, Any]:
        if k is None and self.runner.epoch_mode == "scan":
            return self.epoch_c(st, acc, self.x_dev, idx)
        for t in range(self.prog.steps if k is None else k):
            st, acc = self.step_c(st, acc, self.x_dev, idx[t % idx.shape[0]])
        return st, acc

    def run_steps(self, k: int) -> None:
        """``k`` steps of every run in turn (``k = 0``: compile and run one step of the first run); blocks."""
        for r in range(self.n_runs if k else 1):
            st, idx = self.begin(self.states[r], *self.pools[r])
            acc = jax.tree.map(jnp.zeros_like, self.acc0)
            self.states[r], _ = self._run_one(st, acc, idx, max(k, 1))
        jax.block_until_ready(self.states)

    def train_epoch(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        accs, bad = [], np.zeros(self.n_runs, bool)
        for r in range(self.n_runs):
            st, idx = self.begin(self.states[r], *self.pools[r])
            st, ac = self._run_one(st, jax.tree.map(jnp.zeros_like, self.acc0), idx)
            bad[r] = not bool(self.finite(st, ac))
            self.states[r] = st
            accs.append(ac)
        return {k: np.stack([np.asarray(a[k]) for a in accs]) / self.prog.steps for k in self.acc0}, bad

    def stacked(self) -> Any:
        return jax.tree.map(lambda *xs: jnp.stack(xs), *self.states)

    def set_stacked(self, host: Any) -> None:
        self.states[:] = [jax.tree.map(lambda a: jnp.asarray(a[r]), host) for r in range(self.n_runs)]


def start_session(runner: Runner, prog: Programs, keys: np.ndarray, hp: dict, sample_x: jnp.ndarray, warm_start: Any,
                  pools: tuple, x: np.ndarray, devices: list | None = None) -> StackedSession | LoopSession:
    """Initialise every run for ``runner`` (states, prepare hook, compiled programs) and return its session:
    ``train_epoch()``, ``run_steps(k)``, ``stacked()``, ``set_stacked(host)``."""
    cls = StackedSession if runner.stacked else LoopSession
    return cls(runner, prog, keys, hp, sample_x, warm_start, pools, x, devices)
