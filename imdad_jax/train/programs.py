"""The training step of R runs as a program of shapes: lowered, without data, for a device of this machine or for
a GPU/TPU target compiled ahead of time (``imdad_jax.aot``). Chunk sizing (``train.chunks.estimate_memory``) and
the accelerator report read XLA's analyses of the same program the sweep runs.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from imdad_jax.train.runners import Runner
from imdad_jax.train.step import BatchPlan, begin_epoch, init_run, make_train_step, zeros_diagnostics

if TYPE_CHECKING:  # annotations only: the engine takes any record of the protocol
    from imdad_jax.objectives.protocol import Objective


def step_shapes(model: nn.Module, objective: Objective, opts: Any, plan: BatchPlan, x_shape: tuple[int, ...],
                hp_names: tuple[str, ...], pool_sizes: tuple[int, int] = (8, 8)) -> tuple[Any, Any, Any]:
    """One run's (state, step diagnostics, batch indices) as ``ShapeDtypeStruct`` trees; nothing is computed."""
    init = functools.partial(init_run, model=model, objective=objective, opts=opts, milestones=(), gamma=0.1)
    sample_x = jax.ShapeDtypeStruct((1,) + tuple(x_shape[1:]), jnp.float32)
    hp1 = {k: jax.ShapeDtypeStruct((), jnp.float32) for k in hp_names}
    one = jax.eval_shape(lambda k, h, s: init(k, h, s, None), jax.ShapeDtypeStruct((2,), jnp.uint32), hp1, sample_x)
    pools = (jax.ShapeDtypeStruct((pool_sizes[0],), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32),
             jax.ShapeDtypeStruct((pool_sizes[1],), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32))
    _, idx = jax.eval_shape(lambda st, *p: begin_epoch(st, *p, plan=plan), one, *pools)
    x_all = jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32)
    acc = jax.eval_shape(lambda: zeros_diagnostics(objective, model, opts, one, x_all, plan.labels))
    return one, acc, jax.ShapeDtypeStruct(idx.shape[1:], idx.dtype)


def lower_train_step(model: nn.Module, objective: Objective, opts: Any, runner: Runner, n_runs: int, plan: BatchPlan,
                     x_shape: tuple[int, ...], hp_names: tuple[str, ...], devices: list | None = None) -> Any:
    """The runner's step over ``n_runs`` stacked runs, lowered (``jax.stages.Lowered``) for ``devices``.

    ``devices``: where the run axis is sharded (default: this process's first device); compile-only devices of
    ``jax.experimental.topologies`` compile for a GPU or TPU that is not here. ``x_shape``: the shared training
    data (N, ...), replicated. A ``loop`` runner is lowered as its single-run step (``n_runs`` is ignored).
    """
    devices = list(devices) if devices else [jax.devices()[0]]
    step = make_train_step(model, objective, opts, (), 0.1, plan.labels, plan.steps)
    one, acc, idx = step_shapes(model, objective, opts, plan, x_shape, hp_names)
    if len(devices) == 1:
        rs = rep = SingleDeviceSharding(devices[0])
    else:
        mesh = jax.sharding.Mesh(devices, ("runs",))
        rs, rep = NamedSharding(mesh, P("runs")), NamedSharding(mesh, P())
    if runner.strategy == "loop":
        fn, r = step, None
    else:
        fn, r = runner.step_program(step), n_runs
        if len(devices) > 1:
            fn = runner.sharded(fn, rs.mesh, (P("runs"), P("runs"), P(), P("runs")), (P("runs"), P("runs")))

    def spec(a, sharding):
        shape = a.shape if r is None else (r,) + a.shape
        return jax.ShapeDtypeStruct(shape, a.dtype, sharding=sharding)
    stack = lambda t: jax.tree.map(lambda a: spec(a, rs), t)  # noqa: E731
    x_all = jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32, sharding=rep)
    return jax.jit(fn, donate_argnums=(0, 1)).lower(stack(one), stack(acc), x_all, spec(idx, rs))


def program_bytes(memory: Any) -> int:
    """Device bytes a compiled program needs while it runs, from its ``memory_analysis()``: its arguments, the
    outputs that do not reuse a donated argument's buffer, and its temporaries."""
    return int(memory.argument_size_in_bytes + memory.output_size_in_bytes
               - getattr(memory, "alias_size_in_bytes", 0) + memory.temp_size_in_bytes)


def compile_lowered(lowered: Any) -> Any:
    """``lowered.compile()``, never written to JAX's persistent compilation cache. For analysis only: an executable
    compiled for a compile-only device (a GPU or TPU that is not here) cannot be loaded back from the cache (XLA
    refuses without a device client), so caching it would only warn on the next read. (Switching the cache off
    does not work once it is in use: JAX decides that once per process; the write thresholds are read each time.)"""
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float("inf"))
    try:
        return lowered.compile()
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before)
