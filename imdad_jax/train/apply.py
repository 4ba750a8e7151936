"""Apply a per-run function (features, score, signed distance) to data for every run at once."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from imdad_jax.train.sharding import is_global, to_host


def apply_runs(fn: Callable[[Any, jnp.ndarray], jnp.ndarray], params: Any, x: np.ndarray,
               idx: np.ndarray | None = None, *, strategy: str = "vmap", chunk: int = 2048) -> np.ndarray:
    """``fn(params_r, x_batch) -> (B,)`` for every run r.

    ``params``: stacked over runs (leading R). ``x``: shared data (N, ...). ``idx``: optional
    (R, P) per-run indices into ``x`` (each run scores its own rows); without it every run scores
    all of ``x``. Returns (R, N) or (R, P). ``strategy`` as in training: ``vmap`` batches the
    runs in one program, ``loop`` takes them in turn (faster for convolutions on CPU).
    Parameters sharded over several processes are gathered first; every process then scores every run
    on its own devices (the scoring is not sharded across processes).
    """
    if any(is_global(a) for a in jax.tree.leaves(params)):
        # Runs sharded over several processes (a multi-process fit): every process gathers all runs and
        # scores them itself, so each gets the full (R, N) result without a second collective.
        params = to_host(params)
    n_runs = jax.tree.leaves(params)[0].shape[0]
    x_dev = jnp.asarray(x)
    length = x.shape[0] if idx is None else idx.shape[1]
    out = []
    if strategy == "vmap":
        if idx is None:
            f = jax.jit(jax.vmap(fn, in_axes=(0, None)))
            for i in range(0, length, chunk):
                out.append(np.asarray(f(params, x_dev[i:i + chunk])))
        else:
            f = jax.jit(jax.vmap(lambda p, xs, ii: fn(p, xs[ii]), in_axes=(0, None, 0)))
            for i in range(0, length, chunk):
                out.append(np.asarray(f(params, x_dev, jnp.asarray(idx[:, i:i + chunk]))))
        return np.concatenate(out, axis=1)
    f1 = jax.jit(fn)
    g1 = jax.jit(lambda p, xs, ii: fn(p, xs[ii]))
    rows = []
    for r in range(n_runs):
        p_r = jax.tree.map(lambda a: a[r], params)
        parts = []
        for i in range(0, length, chunk):
            if idx is None:
                parts.append(np.asarray(f1(p_r, x_dev[i:i + chunk])))
            else:
                parts.append(np.asarray(g1(p_r, x_dev, jnp.asarray(idx[r, i:i + chunk]))))
        rows.append(np.concatenate(parts))
    return np.stack(rows)
