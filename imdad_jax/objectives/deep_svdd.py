"""Deep SVDD, one-class (Ruff et al., ICML 2018): minimise the mean squared distance of the
training normals' representations to a fixed center ``c``.

``c`` is the mean representation of the training normals after an initial forward pass (with
coordinates near 0 pushed to +-eps); the encoder is bias-free (the default encoders are) so the
trivial map to ``c`` is not available. Normals only; score ``d(x) = ||phi(x) - c||^2``.
Optional autoencoder pretraining is the experiment's ``pretrain_epochs`` (any objective whose
model has an encoder takes it).
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from imdad_jax.objectives import _sphere
from imdad_jax.objectives._sphere import make_sphere_model as make_model  # noqa: F401
from imdad_jax.objectives._sphere import prepare_features  # noqa: F401
from imdad_jax.objectives._sphere import SphereOptions as Options  # noqa: F401
from imdad_jax.objectives._sphere import validate_options  # noqa: F401
from imdad_jax.objectives._sphere import geometry  # noqa: F401

HYPERPARAMS: tuple[str, ...] = ()
DEFAULT_HP: dict[str, float] = {}
USES_ANOMALIES = False


def init_obj_state(opts: Options) -> dict:
    return {}


def prepare(params: Any, obj_state: Any, feats: jnp.ndarray, mask: jnp.ndarray, hp: Mapping, opts: Options):
    """The center from the initial forward pass; R^2 = 0 (one-class Deep SVDD has no radius)."""
    return _sphere.set_sphere(params, _sphere.heuristic_center(feats, mask), jnp.zeros(())), obj_state


def loss(params: Any, obj_state: Any, model: nn.Module, batch: Mapping, hp: Mapping, opts: Options):
    d = _sphere.squared_distance(params, model, batch["x"])
    value = jnp.mean(d)
    return value, {"loss": value}


def score(params: Any, obj_state: Any, model: nn.Module, x: jnp.ndarray, opts: Options) -> jnp.ndarray:
    return _sphere.squared_distance(params, model, x)


def validate_hp(hp: Mapping) -> None:
    pass
