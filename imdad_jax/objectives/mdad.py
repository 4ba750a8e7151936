"""MD-AD, the paper's second ablation: D-AD plus the margin rho.

``R^2 - nu rho^2 + 1/nu1 mean_normals max(0, d - R^2) + 1/nu2 mean_anomalies max(0, R^2 + rho^2 - d)``:
the margin ``rho^2`` is trained (the head's softplus parameter, as in IMD-AD) while ``c`` and
``R`` stay heuristic (Deep SVDD's center and quantile radius). Score
``d(x) - (R^2 + rho^2/2)``, halfway between the spheres as for IMD-AD.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from imdad_jax.models import margin2_from_param
from imdad_jax.objectives import _sphere
from imdad_jax.objectives._sphere import make_sphere_model as make_model  # noqa: F401
from imdad_jax.objectives._sphere import prepare_features  # noqa: F401
from imdad_jax.objectives._sphere import SphereOptions as Options  # noqa: F401
from imdad_jax.objectives._sphere import validate_options  # noqa: F401
from imdad_jax.objectives._sphere import init_radius_state as init_obj_state  # noqa: F401
from imdad_jax.objectives._sphere import update_radius_state as update_obj_state  # noqa: F401
from imdad_jax.objectives._sphere import project_radius as project  # noqa: F401

HYPERPARAMS = ("nu", "nu1", "nu2", "warmup_epochs")
DEFAULT_HP = {"nu": 0.5, "nu1": 0.1, "nu2": 0.1, "warmup_epochs": 10.0}
USES_ANOMALIES = True
SCORE_BOUNDARY = True  # score > 0 outside the sphere


def prepare(params: Any, obj_state: Any, feats: jnp.ndarray, mask: jnp.ndarray, hp: Mapping, opts: Options):
    return _sphere.prepare_soft_boundary(params, feats, mask, hp["nu1"])


def loss(params: Any, obj_state: Any, model: nn.Module, batch: Mapping, hp: Mapping, opts: Options):
    return _sphere.soft_boundary_loss(params, obj_state["radius2"], model, batch, nu_normals=hp["nu1"],
                                      nu2=hp["nu2"], nu=hp["nu"], margin_param=opts.margin_param)


def _margin2(params: Any, opts: Options) -> jnp.ndarray:
    return margin2_from_param(params["params"]["head"]["rho"], opts.margin_param)


def score(params: Any, obj_state: Any, model: nn.Module, x: jnp.ndarray, opts: Options) -> jnp.ndarray:
    return _sphere.squared_distance(params, model, x) - obj_state["radius2"] - _margin2(params, opts) / 2.0


def geometry(params: Any, obj_state: Any, opts: Options) -> dict:
    return _sphere.sphere_geometry_report(params, _margin2(params, opts))


def validate_hp(hp: Mapping) -> None:
    _sphere.check_unit_interval(hp, ("nu", "nu1", "nu2"))
    _sphere.check_positive(hp, ("warmup_epochs",), allow_zero=True)
