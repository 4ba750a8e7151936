"""imdad_jax: deep hypersphere anomaly detection (IMD-AD and the Deep SVDD family) in JAX.

    from imdad_jax import IMDAD, DeepDetector
    det = IMDAD().fit(X, y)                 # y: 1 marks a labelled anomaly, 0 a normal (or unlabelled) row
    det.decision_function(X_new), det.predict(X_new), det.explain(X_new)

The names below load on first use, so ``import imdad_jax`` (and ``imdad_jax.config``) stays free of JAX until an
estimator or the experiment is touched.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that holds it
_EXPORTS = {
    "IMDAD": "imdad_jax.estimator",
    "DeepDetector": "imdad_jax.estimator",
    "make_config": "imdad_jax.config",
    "run_experiment": "imdad_jax.experiment",
    "train_and_evaluate": "imdad_jax.pipeline",
    "load_dataset": "imdad_jax.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'imdad_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
