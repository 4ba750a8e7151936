"""The training data of R runs as the engine takes it: one shared array and per-run index pools into it.

It lives with the data (the protocols build it, the engine reads it), so nothing in ``imdad_jax.data`` imports
the training engine.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
