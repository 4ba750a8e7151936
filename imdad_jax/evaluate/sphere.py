"""What a trained sphere says about its own training data: the geometry read off the weights and the nu-property.

One function for the experiment's results, the figures script's nu sweep and anything else that reads a fit.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from imdad_jax.data.runs import RunData
from imdad_jax.evaluate.metrics import nu_property
from imdad_jax.train.apply import apply_runs


def sphere_report(obj: Any, opts: Any, model: Any, params: Any, obj_state: Any, hp: dict[str, np.ndarray],
                  data: RunData, strategy: Any = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``(geometry, nu)`` of every run of a fit: ``geometry`` the objective's sphere per run (``radius2``,
    ``margin2``, ... each (R,); empty without a sphere), ``nu`` the nu-property's fractions and bounds per run
    (``nu_property``; empty unless the objective gives ``signed_distance``), on each run's own training pools."""
    geometry = ({k: np.asarray(v) for k, v in obj.geometry(params, obj_state, opts).items()}
                if obj.geometry is not None else {})
    if obj.signed_distance is None:
        return geometry, {}
    s_fn = lambda p, x: obj.signed_distance(p[0], p[1], model, x, opts)  # noqa: E731
    s_n = apply_runs(s_fn, (params, obj_state), data.x, data.normal_pool, strategy=strategy)
    s_a = apply_runs(s_fn, (params, obj_state), data.x, data.anomaly_pool, strategy=strategy)
    nu = nu_property([s_n[r, :data.n_valid[r]] for r in range(data.n_runs)],
                     [s_a[r, :data.m_valid[r]] for r in range(data.n_runs)], geometry["margin2"], hp)
    return geometry, nu


__all__ = ["sphere_report"]
