"""Deep SVDD, soft-boundary (Ruff et al., ICML 2018).

``R^2 + 1/nu mean_normals max(0, d - R^2)`` with ``c`` from the initial forward pass and ``R``
set, after ``warmup_epochs``, to the (1 - nu) quantile of the batch normals' distances at every
step (what the reference implementation does). Normals only; score ``d(x) - R^2``.
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
from imdad_jax.objectives._sphere import init_radius_state as init_obj_state  # noqa: F401
from imdad_jax.objectives._sphere import update_radius_state as update_obj_state  # noqa: F401
from imdad_jax.objectives._sphere import project_radius as project  # noqa: F401
from imdad_jax.objectives._sphere import score_outside as score  # noqa: F401

HYPERPARAMS = ("nu", "warmup_epochs")
DEFAULT_HP = {"nu": 0.1, "warmup_epochs": 10.0}
USES_ANOMALIES = False
SCORE_BOUNDARY = True  # score > 0 outside the sphere


def prepare(params: Any, obj_state: Any, feats: jnp.ndarray, mask: jnp.ndarray, hp: Mapping, opts: Options):
    return _sphere.prepare_soft_boundary(params, feats, mask, hp["nu"])


def loss(params: Any, obj_state: Any, model: nn.Module, batch: Mapping, hp: Mapping, opts: Options):
    return _sphere.soft_boundary_loss(params, obj_state["radius2"], model, batch, nu_normals=hp["nu"])


def validate_hp(hp: Mapping) -> None:
    _sphere.check_unit_interval(hp, ("nu",))
    _sphere.check_positive(hp, ("warmup_epochs",), allow_zero=True)
