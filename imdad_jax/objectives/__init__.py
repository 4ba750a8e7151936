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

Optional (``protocol.Objective`` fills the defaults once, at registration):
``update_obj_state(obj_state, aux, hp, opts, epoch) -> obj_state`` and
``project(params, obj_state, opts) -> params``, run after each step (identity when absent: the dual
ascent and sphere projection of IMD-AD, the heuristic radius of the soft-boundary methods);
``validate_options(opts)`` (ValueError naming a bad static option);
``prepare_features(params, model, x)`` + ``prepare(params, obj_state, feats, mask, hp,
opts)`` (an initial forward pass over the training normals, e.g. Deep SVDD's center),
``geometry(params, obj_state, opts)`` (the sphere read off the weights),
``signed_distance(...)`` (d - R^2, for the nu-property), ``SCORE_BOUNDARY = True`` (the score is > 0 exactly
outside the model's boundary; the estimator's default threshold).

Adding a method = one module + one line below; the engine, the config and the command-line flags do not change
(a new hyperparameter becomes ``--name`` and ``hp[name]`` from ``HYPERPARAMS``, a new option from ``Options``).
"""
from __future__ import annotations

from imdad_jax.objectives import (autoencoder, dad, deep_sad, deep_svdd, deep_svdd_soft, drocc, hybrid_svdd, imdad,
                                  mdad)
from imdad_jax.objectives.protocol import Objective, ObjectiveError

REGISTRY: dict[str, Objective] = {name: Objective.from_module(name, module) for name, module in {
    "imdad": imdad,
    "deep_svdd": deep_svdd,
    "deep_svdd_soft": deep_svdd_soft,
    "dad": dad,
    "mdad": mdad,
    "deep_sad": deep_sad,
    "drocc": drocc,
    "autoencoder": autoencoder,
    "hybrid_svdd": hybrid_svdd,
}.items()}


def hyperparameter_names() -> tuple[str, ...]:
    """Every registered objective's per-run hyperparameters, in registry order (the command line's flags)."""
    return tuple(dict.fromkeys(h for obj in REGISTRY.values() for h in obj.HYPERPARAMS))


def option_defaults() -> dict[str, object]:
    """Every registered objective's static options with their defaults (the command line's flags and types)."""
    out: dict[str, object] = {}
    for obj in REGISTRY.values():
        for f in obj.Options._fields:
            out.setdefault(f, obj.Options._field_defaults[f])
    return out


def get_objective(name: str) -> Objective:
    """The objective module registered under ``name``."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(REGISTRY)}") from None


__all__ = ["REGISTRY", "Objective", "ObjectiveError", "get_objective", "hyperparameter_names", "option_defaults"]
