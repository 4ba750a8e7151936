"""DROCC (Goyal et al., ICML 2020): a classifier of normals against adversarially searched negatives.

Each normal x gets a negative x' = x + h with ``r <= ||h|| <= gamma r``: h starts as Gaussian
noise, takes ``ascent_steps`` normalised gradient-ascent steps on the loss of calling x' a
negative (so x' moves to where the classifier still says "normal"), then is projected onto the
shell. Loss ``BCE(normals, 1) + lambda * BCE(x', 0)``, the adversarial term from
``warmup_epochs`` on (the reference's ``only_ce_epochs``). The radius is given per sqrt(input
dimension) (``drocc_radius``; the paper picks r proportional to sqrt(d)). Normals only; score
``-logit``. As in the reference trainer, the search follows the official code, except that the
projection is applied after the last ascent step rather than every ten (the CPU default is five
steps, the reference 50).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from imdad_jax.models import Classifier
from imdad_jax.objectives import _sphere

HYPERPARAMS = ("drocc_radius", "drocc_gamma", "drocc_lambda", "drocc_step_size", "warmup_epochs")
DEFAULT_HP = {"drocc_radius": 0.2, "drocc_gamma": 2.0, "drocc_lambda": 1.0, "drocc_step_size": 0.001,
              "warmup_epochs": 0.0}
USES_ANOMALIES = False


class Options(NamedTuple):
    drocc_ascent_steps: int = 5


def make_model(encoder: nn.Module, input_shape: tuple[int, ...], opts: Options) -> nn.Module:
    return Classifier(encoder)


def init_obj_state(opts: Options) -> dict:
    return {}


def _bce(logits: jnp.ndarray, target: float) -> jnp.ndarray:
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def _norms(h: jnp.ndarray) -> jnp.ndarray:
    return jnp.sqrt(jnp.sum(h.reshape(h.shape[0], -1) ** 2, axis=-1)).reshape((-1,) + (1,) * (h.ndim - 1))


def adversarial_negatives(params: Any, model: nn.Module, x: jnp.ndarray, key: jax.Array, radius: jnp.ndarray,
                          gamma: jnp.ndarray, step_size: jnp.ndarray, steps: int) -> jnp.ndarray:
    """The DROCC search: ascent on BCE(x', 0) from x + noise, then projection onto the shell."""
    loss_neg = lambda xa: _bce(model.apply(params, xa), 0.0)  # noqa: E731
    grad_fn = jax.grad(loss_neg)

    def ascend(xa, _):
        g = grad_fn(xa)
        return xa + step_size * g / (_norms(g) + 1e-12), None

    x_adv, _ = jax.lax.scan(ascend, x + jax.random.normal(key, x.shape, x.dtype), None, length=steps)
    h = x_adv - x
    n = _norms(h)
    h = h * jnp.clip(n, radius, gamma * radius) / (n + 1e-12)
    return jax.lax.stop_gradient(x + h)


def loss(params: Any, obj_state: Any, model: nn.Module, batch: Mapping, hp: Mapping, opts: Options):
    x = batch["x"]
    radius = hp["drocc_radius"] * math.sqrt(math.prod(x.shape[1:]))
    ce = _bce(model.apply(params, x), 1.0)
    x_adv = adversarial_negatives(params, model, x, batch["key"], radius, hp["drocc_gamma"],
                                  hp["drocc_step_size"], opts.drocc_ascent_steps)
    adv = _bce(model.apply(params, x_adv), 0.0)
    on = (batch["epoch"] >= hp["warmup_epochs"]).astype(ce.dtype)
    value = ce + on * hp["drocc_lambda"] * adv
    return value, {"loss": value, "ce": ce, "adversarial": adv}


def score(params: Any, obj_state: Any, model: nn.Module, x: jnp.ndarray, opts: Options) -> jnp.ndarray:
    return -model.apply(params, x)


def validate_options(opts: Options) -> None:
    if not (isinstance(opts.drocc_ascent_steps, int) and opts.drocc_ascent_steps >= 1):
        raise ValueError(f"drocc_ascent_steps must be >= 1, got {opts.drocc_ascent_steps}")


def validate_hp(hp: Mapping) -> None:
    _sphere.check_positive(hp, ("drocc_radius", "drocc_lambda", "drocc_step_size"))
    _sphere.check_positive(hp, ("warmup_epochs",), allow_zero=True)
    import numpy as np

    g = np.asarray(hp["drocc_gamma"], float)
    if not np.all((g >= 1) & np.isfinite(g)):
        raise ValueError(f"drocc_gamma must be >= 1 and finite (the shell is r <= ||h|| <= gamma r), got {g.tolist()}")
