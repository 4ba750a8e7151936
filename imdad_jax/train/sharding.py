"""The run axis over every device, with jit + ``jax.sharding`` (the replacement of ``pmap``).

Runs are independent, so sharding the leading axis of the state over a 1-D mesh named
``runs`` needs no communication: XLA partitions the vmapped step with each device holding
R / n_devices runs. The shared data is replicated.
"""
from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

RUN_AXIS = "runs"


def run_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all) with its axis named ``runs``."""
    devices = list(devices if devices is not None else jax.devices())
    return Mesh(devices, (RUN_AXIS,))


def run_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (run) axis split over the mesh."""
    return NamedSharding(mesh, P(RUN_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def padded_runs(n_runs: int, n_devices: int) -> int:
    """Smallest multiple of ``n_devices`` >= ``n_runs`` (extra runs are copies, dropped after)."""
    return -(-n_runs // n_devices) * n_devices
