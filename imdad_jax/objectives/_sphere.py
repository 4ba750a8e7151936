"""Shared pieces of the hypersphere objectives whose center (and radius) are heuristic, not learned.

Deep SVDD, D-AD, MD-AD and Deep SAD keep the sphere in the same head as IMD-AD (``w = 2c``,
``b = R^2 - ||c||^2``) so the geometry is read off the weights the same way for every method;
here the head's ``w`` and ``b`` are set by ``prepare`` and the radius update, and the loss sees
them through ``stop_gradient``. Not an objective itself (it has no registry line).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from imdad_jax.models import HypersphereHead, SphereDetector

# Deep SVDD's fix for the trivial solution: a center coordinate near 0 lets a bias-free net map
# everything there, so |c_j| < eps is pushed to +-eps (Ruff et al. 2018, the reference code's eps).
CENTER_EPS = 0.1


class SphereOptions(NamedTuple):
    """The static options of the heuristic-sphere objectives (the head's margin parametrisation)."""

    margin_param: str = "softplus"


def validate_options(opts: Any) -> None:
    """The margin parametrisation must be one the head knows."""
    from imdad_jax.models import MARGIN_PARAMS

    if opts.margin_param not in MARGIN_PARAMS:
        raise ValueError(f"margin_param must be one of {MARGIN_PARAMS}, got {opts.margin_param!r}")


def make_sphere_model(encoder: nn.Module, input_shape: tuple[int, ...], opts: Any) -> nn.Module:
    """The same encoder + head as IMD-AD; the head's w and b are set, not trained."""
    return SphereDetector(encoder, HypersphereHead(margin_param=getattr(opts, "margin_param", "softplus")))


def prepare_features(params: Any, model: nn.Module, x: jnp.ndarray) -> jnp.ndarray:
    """The representation z of a chunk of training normals (for the initial center)."""
    return model.apply(params, x, method="embed")


def heuristic_center(feats: jnp.ndarray, mask: jnp.ndarray, eps: float = CENTER_EPS) -> jnp.ndarray:
    """Mean of the masked rows of ``feats``, coordinates within eps of 0 pushed to +-eps."""
    w = mask.astype(feats.dtype)[:, None]
    c = jnp.sum(feats * w, axis=0) / jnp.maximum(w.sum(), 1.0)
    return jnp.where(jnp.abs(c) < eps, jnp.where(c < 0, -eps, eps), c)


def masked_quantile(values: jnp.ndarray, mask: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
    """The q-quantile (lower, as ``np.quantile(method="lower")``) of the masked entries; static shapes."""
    v = jnp.sort(jnp.where(mask, values, jnp.inf))
    n = jnp.maximum(mask.sum(), 1)
    return v[jnp.clip(jnp.floor(q * (n - 1)).astype(jnp.int32), 0, values.shape[0] - 1)]


def set_sphere(params: Any, center: jnp.ndarray, radius2: jnp.ndarray) -> Any:
    """Write a center and squared radius into the head: ``w = 2c``, ``b = R^2 - ||c||^2``."""
    head = dict(params["params"]["head"])
    head["w"] = 2.0 * center
    head["b"] = radius2 - jnp.sum(center * center)
    return {**params, "params": {**params["params"], "head": head}}


def set_radius(params: Any, radius2: jnp.ndarray) -> Any:
    """Keep the head's center, change its squared radius."""
    w = params["params"]["head"]["w"]
    return set_sphere(params, w / 2.0, radius2)


def frozen_head(params: Any) -> Any:
    """The params with the head's w and b behind ``stop_gradient`` (rho stays trainable)."""
    head = dict(params["params"]["head"])
    head["w"] = jax.lax.stop_gradient(head["w"])
    head["b"] = jax.lax.stop_gradient(head["b"])
    return {**params, "params": {**params["params"], "head": head}}


def squared_distance(params: Any, model: nn.Module, x: jnp.ndarray) -> jnp.ndarray:
    """``d(x) = ||phi(x) - c||^2``: the head's output plus R^2, with the head frozen."""
    p = frozen_head(params)
    head = p["params"]["head"]
    r2 = head["b"] + jnp.sum(head["w"] ** 2) / 4.0
    return model.apply(p, x) + r2


def radius2_of(params: Any) -> jnp.ndarray:
    head = params["params"]["head"]
    return head["b"] + jnp.sum(head["w"] ** 2, axis=-1) / 4.0


def sphere_geometry_report(params: Any, margin2: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """R^2, ||c|| (and rho^2 where the method has a margin) read off the head, on a stacked run axis too."""
    w = params["params"]["head"]["w"]
    out = {"radius2": radius2_of(params), "center_norm": jnp.linalg.norm(w / 2.0, axis=-1)}
    if margin2 is not None:
        out["margin2"] = margin2
    return out


def check_unit_interval(hp: Any, names: tuple[str, ...]) -> None:
    """Raise ValueError unless every named hyperparameter lies in (0, 1]."""
    import numpy as np

    for name in names:
        v = np.asarray(hp[name], dtype=float)
        if not np.all((v > 0) & (v <= 1)):
            raise ValueError(f"{name} must lie in (0, 1], got {v.tolist()}; pass e.g. --{name}=0.1")


def check_positive(hp: Any, names: tuple[str, ...], allow_zero: bool = False) -> None:
    """Raise ValueError unless every named hyperparameter is > 0 (or >= 0)."""
    import numpy as np

    for name in names:
        v = np.asarray(hp[name], dtype=float)
        ok = (v >= 0) if allow_zero else (v > 0)
        if not np.all(ok & np.isfinite(v)):
            raise ValueError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {v.tolist()}")


def soft_boundary_loss(params: Any, radius2: jnp.ndarray, model: nn.Module, batch: Any, *, nu_normals: jnp.ndarray,
                       nu2: jnp.ndarray | None = None, nu: jnp.ndarray | None = None, margin_param: str = "softplus"
                       ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Deep SVDD soft-boundary and its ablations with labelled anomalies (D-AD) and a margin (MD-AD).

    ``R^2 + 1/nu_n mean_n max(0, d - R^2) [+ 1/nu2 mean_a max(0, R^2 [+ rho^2] - d)] [- nu rho^2]``
    with the heuristic ``R^2`` (a constant here) and, for MD-AD, the trained margin ``rho^2``.
    The aux ``radius2_target`` is the (1 - nu_n) quantile of the batch normals' d, the
    reference Deep SVDD's radius update.
    """
    from imdad_jax.models import margin2_from_param

    d = squared_distance(params, model, batch["x"])
    anom = batch["y"].astype(d.dtype)
    norm = 1.0 - anom
    n_cnt = jnp.maximum(norm.sum(), 1.0)
    primal = radius2 + jnp.sum(jax.nn.relu(d - radius2) * norm) / n_cnt / nu_normals
    aux = {}
    rho2 = jnp.zeros((), d.dtype)
    if nu is not None:
        rho2 = margin2_from_param(params["params"]["head"]["rho"], margin_param)
        primal = primal - nu * rho2
        aux["margin2"] = rho2
    if nu2 is not None:
        a_cnt = jnp.maximum(anom.sum(), 1.0)
        primal = primal + jnp.sum(jax.nn.relu(radius2 + rho2 - d) * anom) / a_cnt / nu2
        aux["frac_anomalies_in"] = jnp.sum((d < radius2 + rho2) * anom) / a_cnt
    aux.update({"loss": primal, "radius2": radius2, "frac_normals_out": jnp.sum((d > radius2) * norm) / n_cnt,
                "radius2_target": masked_quantile(jax.lax.stop_gradient(d), norm > 0, 1.0 - nu_normals)})
    return primal, aux


def prepare_soft_boundary(params: Any, feats: jnp.ndarray, mask: jnp.ndarray, nu_normals: jnp.ndarray
                          ) -> tuple[Any, dict[str, jnp.ndarray]]:
    """Center from the initial forward pass; R^2 the (1 - nu) quantile of the normals' initial d."""
    c = heuristic_center(feats, mask)
    r2 = masked_quantile(jnp.sum((feats - c) ** 2, axis=-1), mask, 1.0 - nu_normals)
    return set_sphere(params, c, r2), {"radius2": r2}


def update_radius(obj_state: Any, aux: Any, epoch: jnp.ndarray, warmup_epochs: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """After the warm-up epochs, R^2 follows the batch quantile (the reference Deep SVDD's update)."""
    return {"radius2": jnp.where(epoch >= warmup_epochs, aux["radius2_target"], obj_state["radius2"])}


# Objective hooks shared by the soft-boundary methods (Deep SVDD soft-boundary, D-AD, MD-AD), which
# keep a heuristic R^2 beside the weights: a module re-exports them under the protocol's names.

def init_radius_state(opts: Any) -> dict[str, jnp.ndarray]:
    """``init_obj_state``: R^2, set by ``prepare`` and then by the quantile update."""
    return {"radius2": jnp.zeros((), jnp.float32)}


def update_radius_state(obj_state: Any, aux: Mapping, hp: Mapping, opts: Any, epoch: jnp.ndarray) -> dict:
    """``update_obj_state``: the quantile radius after ``hp["warmup_epochs"]``."""
    return update_radius(obj_state, aux, epoch, hp["warmup_epochs"])


def project_radius(params: Any, obj_state: Any, opts: Any) -> Any:
    """``project``: write the heuristic R^2 into the head so the weights hold the whole sphere."""
    return set_radius(params, obj_state["radius2"])


def score_outside(params: Any, obj_state: Any, model: nn.Module, x: jnp.ndarray, opts: Any) -> jnp.ndarray:
    """``score``: ``d(x) - R^2``, positive outside the sphere."""
    return squared_distance(params, model, x) - obj_state["radius2"]


def geometry(params: Any, obj_state: Any, opts: Any) -> dict[str, jnp.ndarray]:
    """``geometry``: R^2 and ||c|| read off the head's weights."""
    return sphere_geometry_report(params)
