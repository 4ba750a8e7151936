"""Objectives, looked up by name. Each is one module exposing the same pure per-run functions.

Required::

    Options                      NamedTuple of static choices (fields named like config fields)
    HYPERPARAMS, DEFAULT_HP      per-run numbers it reads from ``hp`` and their defaults
    USES_ANOMALIES               False: trained on normals alone (batches hold no anomalies)
    make_model(encoder, input_shape, opts) -> flax module
    init_obj_state(opts) -> pytree          non-gradient variables (duals, fixed center, radius)
    loss(params, obj_state, model, batch, hp, opts) -> (scalar, aux dict of scalars)
        batch: {"x", "y" (0 normal, 1 labelled anomaly), "key" (per step), "epoch"}
    score(params, obj_state, model, x, opts) -> (n,)                    higher = more anomalous
    validate_hp(hp)                                                     ValueError naming the fix

Optional: ``update_obj_state(obj_state, aux, hp, opts, epoch) -> obj_state`` and
``project(params, obj_state, opts) -> params``, run after each step (identity when absent: the dual
ascent and sphere projection of IMD-AD, the heuristic radius of the soft-boundary methods);
``prepare_features(params, model, x)`` + ``prepare(params, obj_state, feats, mask, hp,
opts)`` (an initial forward pass over the training normals, e.g. Deep SVDD's center),
``geometry(params, obj_state, opts)`` (the sphere read off the weights),
``signed_distance(...)`` (d - R^2, for the nu-property).

Adding a method = one module + one line below; the engine does not change.
"""
from __future__ import annotations

from types import ModuleType

from imdad_jax.objectives import (autoencoder, dad, deep_sad, deep_svdd, deep_svdd_soft, drocc, hybrid_svdd, imdad,
                                  mdad)

REGISTRY: dict[str, ModuleType] = {
    "imdad": imdad,
    "deep_svdd": deep_svdd,
    "deep_svdd_soft": deep_svdd_soft,
    "dad": dad,
    "mdad": mdad,
    "deep_sad": deep_sad,
    "drocc": drocc,
    "autoencoder": autoencoder,
    "hybrid_svdd": hybrid_svdd,
}


def get_objective(name: str) -> ModuleType:
    """The objective module registered under ``name``."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(REGISTRY)}") from None


__all__ = ["REGISTRY", "get_objective"]
