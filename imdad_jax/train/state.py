"""The training state of one run (and, stacked, of many): a plain pytree.

Every leaf carries a leading run axis R once stacked. Per-run numbers that a sweep varies
(nu, nu1, nu2, dual step, learning rate, weight decay) live in the state as arrays, so one
compiled program serves the whole sweep.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class RunState:
    """One run's training state. ``obj_state`` holds the objective's variables that are not
    trained by gradient: IMD-AD's dual variables, Deep SVDD's fixed center and radius."""

    params: Any
    opt_state: Any
    obj_state: Any
    hp: Any
    key: jnp.ndarray
    step: jnp.ndarray


def _decay_mask(params: Any) -> Any:
    # Weight decay on the encoder only: the head's w, b and rho are the sphere, and shrinking
    # them would bias the geometry the objective is meant to learn.
    # Other collections (BatchNorm's running averages) are not weights: no decay.
    inner = params["params"]
    return {**jax.tree.map(lambda _: False, params),
            "params": {k: jax.tree.map(lambda _: k != "head", v) for k, v in inner.items()}}


def _head_mask(params: Any) -> Any:
    # The sphere's own parameters (w = 2c, b = R^2 - ||c||^2, rho): the head's step size applies to them.
    return {**jax.tree.map(lambda _: False, params),
            "params": {k: jax.tree.map(lambda _: k == "head", v) for k, v in params["params"].items()}}


def _not_head(params: Any) -> Any:
    return jax.tree.map(lambda m: not m, _head_mask(params))


def make_optimizer(lr: Any, weight_decay: Any, milestones: tuple[int, ...] = (), gamma: float = 0.1,
                   head_lr: Any = None) -> optax.GradientTransformation:
    """Adam with coupled L2 weight decay (as torch ``Adam(weight_decay=...)``) and MultiStepLR.

    ``lr`` and ``weight_decay`` are injected hyperparameters: they live in the optimizer state,
    so they may differ per run under ``vmap``. ``milestones`` are in steps; at each the rate is
    multiplied by ``gamma`` (``optax.piecewise_constant_schedule``). ``head_lr`` (None: ``lr`` for every
    weight) gives the head's parameters a step size of their own, injected per run as well, under the same
    schedule: the sphere's radius and margin live on the scale of the data's squared distances, not of the
    encoder's weights (``docs/method.md``, "The sphere's step size").
    """
    factor = optax.piecewise_constant_schedule(1.0, {int(m): gamma for m in milestones})
    decay = optax.masked(optax.inject_hyperparams(optax.add_decayed_weights)(weight_decay=weight_decay),
                         _decay_mask)
    if head_lr is None:
        return optax.chain(decay, optax.scale_by_adam(), optax.scale_by_schedule(factor),
                           optax.inject_hyperparams(optax.scale)(step_size=-jnp.asarray(lr, jnp.float32)))
    return optax.chain(
        decay, optax.scale_by_adam(), optax.scale_by_schedule(factor),
        optax.masked(optax.inject_hyperparams(optax.scale)(step_size=-jnp.asarray(lr, jnp.float32)), _not_head),
        optax.masked(optax.inject_hyperparams(optax.scale)(step_size=-jnp.asarray(head_lr, jnp.float32)), _head_mask),
    )
