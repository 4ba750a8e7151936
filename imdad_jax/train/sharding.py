"""The run axis over every device, with jit + ``jax.sharding`` (the replacement of ``pmap``).

Runs are independent, so sharding the leading axis of the state over a 1-D mesh named
``runs`` needs no communication: XLA partitions the vmapped step with each device holding
R / n_devices runs. The shared data is replicated.

With several processes (``imdad_jax.train.distributed.initialize``) the mesh spans the devices
of all of them and a sharded array is no longer held whole by any one process. ``to_global`` and
``to_host`` are the two crossings between host and devices that stay correct there: every
process passes the same full host array in, and every process gets the same full array back.
With one process they are ``jax.device_put`` and ``jax.device_get``.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

RUN_AXIS = "runs"


def run_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all, of every process) with its axis named ``runs``."""
    devices = list(devices if devices is not None else jax.devices())
    return Mesh(devices, (RUN_AXIS,))


def run_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (run) axis split over the mesh."""
    return NamedSharding(mesh, P(RUN_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device of the mesh holds the whole array (the shared data)."""
    return NamedSharding(mesh, P())


def padded_runs(n_runs: int, n_devices: int) -> int:
    """Smallest multiple of ``n_devices`` >= ``n_runs`` (extra runs are copies, dropped after)."""
    return -(-n_runs // n_devices) * n_devices


def is_global(a: Any) -> bool:
    """Whether ``a`` is an array with shards on devices of other processes (not readable here alone)."""
    return isinstance(a, jax.Array) and not a.is_fully_addressable


def to_global(tree: Any, sharding: NamedSharding) -> Any:
    """Place ``tree`` on ``sharding``; every process must pass the same full values.

    One process (or a sharding over this process's devices only): ``jax.device_put``. Across
    processes each one builds its own shards from its full host copy with
    ``jax.make_array_from_callback``; nothing travels between processes. (``multihost_utils.
    host_local_array_to_global_array`` would instead read each process's array as its slice of
    a larger one, which is not what a shared host array is.) Leaves already spread over several
    processes are resharded on the devices.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(a: Any) -> jax.Array:
        if is_global(a):
            return a if a.sharding.is_equivalent_to(sharding, a.ndim) else \
                jax.jit(lambda v: v, out_shardings=sharding)(a)
        host = np.asarray(a)
        # the dtype device_put would give (float64 -> float32 unless x64 is on), so both paths agree
        host = host.astype(jax.dtypes.canonicalize_dtype(host.dtype), copy=False)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(one, tree)


def to_host(tree: Any) -> Any:
    """Every leaf of ``tree`` as a full numpy array, in every process.

    Leaves sharded over several processes are gathered (a collective: every process must call this,
    in the same order); the others are read locally.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    leaves, treedef = jax.tree.flatten(tree)
    spread = [i for i, a in enumerate(leaves) if is_global(a)]
    for i, whole in zip(spread, _allgather([leaves[i] for i in spread])):
        leaves[i] = whole
    return jax.tree.unflatten(treedef, [np.asarray(a) for a in leaves])


def _identity(x: Any) -> Any:
    return x


def _allgather(arrays: list[jax.Array]) -> list[np.ndarray]:
    """``multihost_utils.process_allgather(a, tiled=True)`` of every array, as one program.

    process_allgather compiles and runs one replicating program per array; a training state has
    dozens of leaves, and on CPU (gloo) each round of collectives costs a noticeable wait, so all
    arrays on named shardings are replicated by one jit (what process_allgather does per array).
    """
    if not all(isinstance(a.sharding, NamedSharding) for a in arrays):
        return [multihost_utils.process_allgather(a, tiled=True) for a in arrays]
    # _identity at module level: jit's cache then serves every later gather of the same shapes
    whole = jax.jit(_identity, out_shardings=[a.sharding.update(spec=P()) for a in arrays])(arrays)
    return [np.asarray(w.addressable_data(0)) for w in whole]
