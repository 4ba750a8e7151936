"""One sweep over the devices of several processes or hosts, with JAX's own multi-process runtime.

Every process runs the same program (multi-controller JAX). ``initialize`` joins this process to
the others through ``jax.distributed.initialize``; afterwards ``jax.devices()`` lists the devices of
all of them, so ``fit(strategy="vmap")`` shards the run axis over every device of every process and
hands each process the full results (``imdad_jax.train.sharding.to_host``). See ``docs/scaling.md``.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None,
               initialization_timeout: int = 300) -> tuple[int, int]:
    """Join the processes of one job; returns ``(process_id, process_count)``.

    Call it once per process, before anything else touches JAX (computing anything, or even asking
    for ``jax.devices()``, fixes this process's view of the devices).
    On a Cloud TPU slice, under SLURM or Open MPI, all arguments may stay ``None``: JAX finds them
    from the environment. Elsewhere (several GPU hosts, processes on one machine) pass them all:
    ``coordinator_address`` is ``host:port`` of process 0, reachable from every process;
    ``process_id`` is 0 .. ``num_processes`` - 1. ``local_device_ids`` restricts this process to
    some of its machine's accelerators (one GPU per process, say). ``initialization_timeout``:
    seconds to wait for the other processes before failing.
    A second call in a process already joined returns its ids without joining again.
    """
    if not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, local_device_ids=local_device_ids,
                                   initialization_timeout=initialization_timeout)
    return jax.process_index(), jax.process_count()
