"""Deep SAD (Ruff et al., ICLR 2020), the standard semi-supervised competitor.

Per sample ``d`` for normals and ``eta / (d + eps)`` for labelled anomalies, averaged over the
batch (as the reference Deep-SAD-PyTorch does), with ``c`` fixed from the initial forward pass
over the training normals. Score ``d(x)``.
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

HYPERPARAMS = ("eta",)
DEFAULT_HP = {"eta": 1.0}
USES_ANOMALIES = True
EPS = 1e-6  # the reference implementation's


def init_obj_state(opts: Options) -> dict:
    return {}


def prepare(params: Any, obj_state: Any, feats: jnp.ndarray, mask: jnp.ndarray, hp: Mapping, opts: Options):
    return _sphere.set_sphere(params, _sphere.heuristic_center(feats, mask), jnp.zeros(())), obj_state


def loss(params: Any, obj_state: Any, model: nn.Module, batch: Mapping, hp: Mapping, opts: Options):
    d = _sphere.squared_distance(params, model, batch["x"])
    anom = batch["y"] > 0
    per_sample = jnp.where(anom, hp["eta"] / (d + EPS), d)
    value = jnp.mean(per_sample)
    norm_d = jnp.sum(jnp.where(anom, 0.0, d)) / jnp.maximum(jnp.sum(~anom), 1)
    anom_d = jnp.sum(jnp.where(anom, d, 0.0)) / jnp.maximum(jnp.sum(anom), 1)
    return value, {"loss": value, "mean_d_normals": norm_d, "mean_d_anomalies": anom_d}


def score(params: Any, obj_state: Any, model: nn.Module, x: jnp.ndarray, opts: Options) -> jnp.ndarray:
    return _sphere.squared_distance(params, model, x)


def validate_hp(hp: Mapping) -> None:
    _sphere.check_positive(hp, ("eta",))
