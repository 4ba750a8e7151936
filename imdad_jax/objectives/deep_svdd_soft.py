"""Deep SVDD, soft-boundary (Ruff et al., ICML 2018).

``R^2 + 1/nu mean_normals max(0, d - R^2)`` with ``c`` from the initial forward pass and ``R``
set, after ``warmup_epochs``, to the (1 - nu) quantile of the batch normals' distances at every
step (what the reference implementation does). Normals only; score ``d(x) - R^2``.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from imdad_jax.objectives import _sphere
from imdad_jax.objectives._sphere import make_sphere_model as make_model  # noqa: F401
from imdad_jax.objectives._sphere import prepare_features  # noqa: F401

HYPERPARAMS = ("nu", "warmup_epochs")
DEFAULT_HP = {"nu": 0.1, "warmup_epochs": 10.0}
USES_ANOMALIES = False


class Options(NamedTuple):
    margin_param: str = "softplus"


def init_obj_state(opts: Options) -> dict:
    return {"radius2": jnp.zeros((), jnp.float32)}


def prepare(params: Any, obj_state: Any, feats: jnp.ndarray, mask: jnp.ndarray, hp: Mapping, opts: Options):
    return _sphere.prepare_soft_boundary(params, feats, mask, hp["nu"])


def loss(params: Any, obj_state: Any, model: nn.Module, batch: Mapping, hp: Mapping, opts: Options):
    return _sphere.soft_boundary_loss(params, obj_state["radius2"], model, batch, nu_normals=hp["nu"])


def update_obj_state(obj_state: Any, aux: Mapping, hp: Mapping, opts: Options, epoch: jnp.ndarray) -> dict:
    return _sphere.update_radius(obj_state, aux, epoch, hp["warmup_epochs"])


def project(params: Any, obj_state: Any, opts: Options) -> Any:
    return _sphere.set_radius(params, obj_state["radius2"])


def score(params: Any, obj_state: Any, model: nn.Module, x: jnp.ndarray, opts: Options) -> jnp.ndarray:
    return _sphere.squared_distance(params, model, x) - obj_state["radius2"]


def geometry(params: Any, obj_state: Any, opts: Options) -> dict:
    return _sphere.sphere_geometry_report(params)


def validate_hp(hp: Mapping) -> None:
    _sphere.check_unit_interval(hp, ("nu",))
    _sphere.check_positive(hp, ("warmup_epochs",), allow_zero=True)
