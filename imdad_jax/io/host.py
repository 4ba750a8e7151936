"""The host allocator setting that makes XLA:CPU training steps faster, switched on at the edges (CLIs), never
on import.

XLA:CPU allocates a step's temporary buffers afresh on every call. glibc hands blocks above its mmap threshold
(at most 32 MiB) straight back to the kernel when they are freed, so every step page-faults through them again
(about 8,000 faults, 32 MiB, per LeNet-size step). With no mmap'd blocks and a 1 GiB trim threshold the freed
memory stays mapped for the next step: the CNN training step runs about 1.2x faster on a 2-core CPU
(``benchmarks/results_cpu_conv_malloc.md``: LeNet-size 58 -> 47 ms, CNN2 137 -> 116 ms). The cost: up to 1 GiB
of freed memory may stay with the process instead of going back to the system.
"""
from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers
_LIBC: ctypes.CDLL | None = None


def set_malloc(mode: str) -> bool:
    """``"no_mmap"``: no mmap'd blocks and a 1 GiB trim threshold; ``"default"``: glibc's defaults back.

    Returns False where glibc's ``mallopt`` is not there (not Linux/glibc): nothing changes then.
    """
    if mode not in ("no_mmap", "default"):
        raise ValueError(f"malloc mode must be 'no_mmap' or 'default', got {mode!r}")
    global _LIBC
    try:
        _LIBC = _LIBC or ctypes.CDLL("libc.so.6")
        if mode == "no_mmap":
            return bool(_LIBC.mallopt(M_MMAP_MAX, 0)) and bool(_LIBC.mallopt(M_TRIM_THRESHOLD, 1 << 30))
        return bool(_LIBC.mallopt(M_MMAP_MAX, 65536)) and bool(_LIBC.mallopt(M_TRIM_THRESHOLD, 128 * 1024))
    except (OSError, AttributeError):
        return False


def tune_host_allocator() -> bool:
    """``set_malloc("no_mmap")`` when JAX computes on the CPU, unless ``IMDAD_NO_MALLOC_TUNING`` is set.

    On an accelerator the step's buffers live in device memory, so the host allocator is left alone.
    Returns whether the setting was applied.
    """
    if os.environ.get("IMDAD_NO_MALLOC_TUNING"):
        return False
    import jax

    return jax.default_backend() == "cpu" and set_malloc("no_mmap")
