"""Autoencoder: reconstruction error of the normals as loss and as anomaly score.

The same encoder as the other methods with a dense mirror decoder. Also the pretraining step for
the Deep SVDD family (the experiment's ``pretrain_epochs``): its encoder weights warm-start theirs.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from imdad_jax.models import Autoencoder, decoder_for

HYPERPARAMS: tuple[str, ...] = ()
DEFAULT_HP: dict[str, float] = {}
USES_ANOMALIES = False


class Options(NamedTuple):
    pass


def make_model(encoder: nn.Module, input_shape: tuple[int, ...], opts: Options) -> nn.Module:
    return Autoencoder(encoder, decoder_for(encoder, input_shape))


def init_obj_state(opts: Options) -> dict:
    return {}


def reconstruction_error(x: jnp.ndarray, x_hat: jnp.ndarray) -> jnp.ndarray:
    """Per-sample mean squared error."""
    return jnp.mean((x - x_hat).reshape(x.shape[0], -1) ** 2, axis=-1)


def loss(params: Any, obj_state: Any, model: nn.Module, batch: Mapping, hp: Mapping, opts: Options):
    value = jnp.mean(reconstruction_error(batch["x"], model.apply(params, batch["x"])))
    return value, {"loss": value}


def score(params: Any, obj_state: Any, model: nn.Module, x: jnp.ndarray, opts: Options) -> jnp.ndarray:
    return reconstruction_error(x, model.apply(params, x))


def validate_hp(hp: Mapping) -> None:
    pass
