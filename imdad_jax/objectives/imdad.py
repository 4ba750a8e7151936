"""IMD-AD: the maximum-margin hypersphere objective, its Lagrangian, dual ascent and score.

Primal (per run, minibatch form; ``s = d - R^2`` is the head's output)::

    J = R^2 - nu rho^2 + 1/nu1 mean_{normals} max(0, s) + 1/nu2 mean_{anomalies} max(0, rho^2 - s)

The encoder's L2 term ``lambda/2 ||W||^2`` is applied by the optimizer (coupled weight decay,
as PyTorch's ``Adam(weight_decay=...)`` does), so it is not repeated here.

Lagrangian::

    L = J + mu_h h(w) [+ kappa/2 h(w)^2] - mu_R R^2 - mu_rho rho^2,   h(w) = ||w||^2/4 - 1

``center_constraint`` picks how ``||c|| = 1`` is held:
  * ``"projection"`` (default): ``w <- 2 w / ||w||`` after every step; exact, so mu_h stays 0.
  * ``"multiplier"``: the paper's plain Lagrangian, ``mu_h <- mu_h + eta h``.
  * ``"augmented"``: multiplier plus the quadratic penalty ``kappa/2 h^2``.
``docs/method.md`` gives the measurement behind the default.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from imdad_jax.models import HypersphereHead, SphereDetector
from imdad_jax.models.head import sphere_geometry

CENTER_CONSTRAINTS = ("projection", "multiplier", "augmented")
# How the primal is solved: "paper" (Adam with one step size lr for every weight, the paper's Algorithm 1) or
# "head_lr" (the sphere's parameters w, b, rho take Adam steps of their own size head_lr; docs/method.md,
# "The sphere's step size").
SOLVERS = ("paper", "head_lr")
HINGES = {"linear": jax.nn.relu, "squared": lambda v: jax.nn.relu(v) ** 2, "smooth": jax.nn.softplus}
HYPERPARAMS = ("nu", "nu1", "nu2", "dual_lr", "head_lr")
DEFAULT_HP = {"nu": 0.5, "nu1": 0.1, "nu2": 0.1, "dual_lr": 0.1, "head_lr": 0.1}
USES_ANOMALIES = True
SCORE_BOUNDARY = True  # score > 0 outside the sphere


class Options(NamedTuple):
    """Static choices (they change the compiled program); per-run numbers live in ``hp``."""

    margin_param: str = "softplus"
    center_constraint: str = "projection"
    kappa: float = 10.0
    solver: str = "paper"  # tables get "head_lr" from the data registry's KIND_DEFAULTS
    # the slack penalty: "linear" (the paper's hinge, the nu-property holds), "squared" or "smooth" (softplus):
    # candidates measured in docs/method.md, not defaults
    hinge: str = "linear"


def make_model(encoder: nn.Module, input_shape: tuple[int, ...], opts: Options) -> nn.Module:
    """Encoder plus the hypersphere head: the sphere is the final layer's weights."""
    return SphereDetector(encoder, HypersphereHead(margin_param=opts.margin_param))


def init_obj_state(opts: Options) -> dict[str, jnp.ndarray]:
    """Dual variables of one run: mu_h is free in sign, mu_R and mu_rho are >= 0."""
    z = jnp.zeros((), jnp.float32)
    return {"mu_h": z, "mu_R": z, "mu_rho": z}


def loss(params: Any, duals: Mapping[str, jnp.ndarray], model: nn.Module, batch: Mapping[str, jnp.ndarray],
         hp: Mapping[str, jnp.ndarray], opts: Options) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The Lagrangian on one minibatch (``batch["y"]``: 0 normal, 1 labelled anomaly) and its diagnostics."""
    s = model.apply(params, batch["x"])
    head = params["params"]["head"]
    geom = sphere_geometry(head, opts.margin_param)
    r2, rho2 = geom.radius2, geom.margin2
    anom = batch["y"].astype(s.dtype)
    norm = 1.0 - anom
    n_cnt = jnp.maximum(norm.sum(), 1.0)
    a_cnt = jnp.maximum(anom.sum(), 1.0)
    slack = HINGES[opts.hinge]
    hinge_n = jnp.sum(slack(s) * norm) / n_cnt
    hinge_a = jnp.sum(slack(rho2 - s) * anom) / a_cnt
    primal = r2 - hp["nu"] * rho2 + hinge_n / hp["nu1"] + hinge_a / hp["nu2"]
    h = jnp.sum(head["w"] ** 2) / 4.0 - 1.0
    lag = primal - duals["mu_R"] * r2 - duals["mu_rho"] * rho2
    if opts.center_constraint in ("multiplier", "augmented"):
        lag = lag + duals["mu_h"] * h
    if opts.center_constraint == "augmented":
        lag = lag + 0.5 * opts.kappa * h * h
    aux = {
        "loss": primal,
        "radius2": r2,
        "margin2": rho2,
        "h": h,
        # Batch estimates of the nu-property fractions (the exact ones are computed on the
        # whole training set after training, in imdad_jax.evaluate).
        "frac_normals_out": jnp.sum((s > 0) * norm) / n_cnt,
        "frac_anomalies_in": jnp.sum((s < rho2) * anom) / a_cnt,
    }
    return lag, aux


def update_obj_state(duals: Mapping[str, jnp.ndarray], aux: Mapping[str, jnp.ndarray],
                     hp: Mapping[str, jnp.ndarray], opts: Options, epoch: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Projected gradient ascent on the duals (dL/dmu is the constraint value)."""
    eta = hp["dual_lr"]
    mu_h = duals["mu_h"]
    if opts.center_constraint in ("multiplier", "augmented"):
        mu_h = mu_h + eta * aux["h"]
    mu_rho = duals["mu_rho"]
    if opts.margin_param == "raw":
        mu_rho = jnp.maximum(0.0, mu_rho - eta * aux["margin2"])
    return {"mu_h": mu_h, "mu_R": jnp.maximum(0.0, duals["mu_R"] - eta * aux["radius2"]), "mu_rho": mu_rho}


def project(params: Any, duals: Any, opts: Options) -> Any:
    """Primal projection applied after the optimizer step (``||c|| = 1`` in projection mode)."""
    if opts.center_constraint != "projection":
        return params
    head = dict(params["params"]["head"])
    w = head["w"]
    head["w"] = 2.0 * w / jnp.linalg.norm(w)
    return {**params, "params": {**params["params"], "head": head}}


def score(params: Any, duals: Any, model: nn.Module, x: jnp.ndarray, opts: Options) -> jnp.ndarray:
    """Anomaly score ``d(x) - (R^2 + rho^2/2)``: positive means anomaly.

    The decision boundary sits halfway (in squared distance) between the inner and the outer
    sphere, so it stays meaningful even if R^2 binds at 0.
    """
    s = model.apply(params, x)
    rho2 = sphere_geometry(params["params"]["head"], opts.margin_param).margin2
    return s - rho2 / 2.0


def signed_distance(params: Any, duals: Any, model: nn.Module, x: jnp.ndarray, opts: Options) -> jnp.ndarray:
    """``d(x) - R^2``, the head's raw output (used for the nu-property fractions)."""
    return model.apply(params, x)


def geometry(params: Any, duals: Any, opts: Options) -> dict[str, jnp.ndarray]:
    """R^2, rho^2 and ||c|| read off the head's weights (works on a stacked run axis)."""
    g = sphere_geometry(params["params"]["head"], opts.margin_param)
    return {"radius2": g.radius2, "margin2": g.margin2, "center_norm": jnp.linalg.norm(g.center, axis=-1)}


def head_step_size(hp: Mapping[str, Any], opts: Options) -> Any:
    """The head's own step size (``solver="head_lr"``), or None: the paper's one step size for every weight."""
    return hp["head_lr"] if opts.solver == "head_lr" else None


def validate_options(opts: Options) -> None:
    """The constraint form, margin parametrisation and solver must be known; kappa > 0 and finite."""
    import math

    import numpy as np

    from imdad_jax.models import MARGIN_PARAMS

    if opts.center_constraint not in CENTER_CONSTRAINTS:
        raise ValueError(f"center_constraint must be one of {CENTER_CONSTRAINTS}, got {opts.center_constraint!r}")
    if opts.margin_param not in MARGIN_PARAMS:
        raise ValueError(f"margin_param must be one of {MARGIN_PARAMS}, got {opts.margin_param!r}")
    if opts.solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {opts.solver!r}")
    if opts.hinge not in HINGES:
        raise ValueError(f"hinge must be one of {tuple(HINGES)}, got {opts.hinge!r}")
    if not (isinstance(opts.kappa, (int, float)) and opts.kappa > 0 and math.isfinite(opts.kappa)
            and opts.kappa <= float(np.finfo(np.float32).max)):  # the float32 the penalty is computed in
        raise ValueError(f"kappa must be > 0 and finite, got {opts.kappa}; pass e.g. --kappa=10")


def validate_hp(hp: Mapping[str, Any]) -> None:
    """nu, nu1, nu2 in (0, 1]; dual_lr and head_lr > 0. Raises ValueError naming the bad value and the fix."""
    import numpy as np

    for name in ("nu", "nu1", "nu2"):
        v = np.asarray(hp[name], dtype=float)
        if not np.all((v > 0) & (v <= 1)):
            raise ValueError(f"{name} must lie in (0, 1], got {v.tolist()}; pass e.g. --{name}=0.1")
    v = np.asarray(hp["dual_lr"], dtype=float)
    if not np.all((v > 0) & np.isfinite(v)):  # an infinite step passes "> 0" and only shows as divergence
        raise ValueError(f"dual_lr must be > 0 and finite, got {v.tolist()}; pass e.g. --dual_lr=0.1")
    v = np.asarray(hp["head_lr"], dtype=float)
    if not np.all((v > 0) & np.isfinite(v)):
        raise ValueError(f"head_lr must be > 0 and finite, got {v.tolist()}; pass e.g. --head_lr=0.1")
