"""Apply a per-run function (features, score, signed distance) to data for every run at once."""
from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from imdad_jax.train.runners import Runner, as_runner


def apply_runs(fn: Callable[[Any, jnp.ndarray], jnp.ndarray], params: Any, x: np.ndarray,
               idx: np.ndarray | None = None, *, strategy: str | Runner = "vmap", chunk: int = 2048) -> np.ndarray:
    """``fn(params_r, x_batch) -> (B,)`` for every run r.

    ``params``: stacked over runs (leading R). ``x``: shared data (N, ...). ``idx``: optional
    (R, P) per-run indices into ``x`` (each run scores its own rows); without it every run scores
    all of ``x``. Returns (R, N) or (R, P). ``strategy``: the ``Runner`` that trained the runs
    (``FitResult.runner``) or a strategy name; ``Runner.apply`` does the work.
    Parameters sharded over several processes are gathered first; every process then scores every run
    on its own devices (the scoring is not sharded across processes).
    """
    return as_runner(strategy).apply(fn, params, x, idx, chunk=chunk)
