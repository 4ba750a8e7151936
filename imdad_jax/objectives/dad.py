"""D-AD, the paper's first ablation: Deep SVDD soft-boundary plus the labelled anomalies.

``R^2 + 1/nu1 mean_normals max(0, d - R^2) + 1/nu2 mean_anomalies max(0, R^2 - d)`` with ``c``
and ``R`` heuristic as in Deep SVDD soft-boundary (R^2 the (1 - nu1) quantile of the normals'
distances). Score ``d(x) - R^2``.
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

HYPERPARAMS = ("nu1", "nu2", "warmup_epochs")
DEFAULT_HP = {"nu1": 0.1, "nu2": 0.1, "warmup_epochs": 10.0}
USES_ANOMALIES = True
SCORE_BOUNDARY = True  # score > 0 outside the sphere


def prepare(params: Any, obj_state: Any, feats: jnp.ndarray, mask: jnp.ndarray, hp: Mapping, opts: Options):
    return _sphere.prepare_soft_boundary(params, feats, mask, hp["nu1"])


def loss(params: Any, obj_state: Any, model: nn.Module, batch: Mapping, hp: Mapping, opts: Options):
    return _sphere.soft_boundary_loss(params, obj_state["radius2"], model, batch, nu_normals=hp["nu1"],
                                      nu2=hp["nu2"])


def validate_hp(hp: Mapping) -> None:
    _sphere.check_unit_interval(hp, ("nu1", "nu2"))
    _sphere.check_positive(hp, ("warmup_epochs",), allow_zero=True)
