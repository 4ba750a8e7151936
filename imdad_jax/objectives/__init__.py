"""Objectives, looked up by name. Each is one module exposing the same pure functions:
``init_duals, lagrangian, dual_update, project, score, signed_distance, validate_hp, Options, HYPERPARAMS``.
Adding a method = one module + one line below; the engine does not change."""
from __future__ import annotations

from types import ModuleType

from imdad_jax.objectives import imdad

REGISTRY: dict[str, ModuleType] = {
    "imdad": imdad,
}


def get_objective(name: str) -> ModuleType:
    """The objective module registered under ``name``."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(REGISTRY)}") from None


__all__ = ["REGISTRY", "get_objective"]
