"""Hybrid Deep SVDD: ``mu1 * (Deep SVDD one-class loss) + mu2 * (reconstruction loss)``.

The reconstruction term keeps the encoder from collapsing onto the center (the remedy of
DASVDD-style methods). ``c`` from the initial forward pass; normals only; the score is the same
combination per sample, ``mu1 d(x) + mu2 ||x - x_hat||^2 / dim``.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from imdad_jax.models import HypersphereHead, SphereDetector, decoder_for
from imdad_jax.objectives import _sphere
from imdad_jax.objectives._sphere import prepare_features  # noqa: F401
from imdad_jax.objectives._sphere import SphereOptions as Options  # noqa: F401
from imdad_jax.objectives._sphere import validate_options  # noqa: F401
from imdad_jax.objectives._sphere import geometry  # noqa: F401
from imdad_jax.objectives.autoencoder import reconstruction_error

HYPERPARAMS = ("mu1", "mu2")
DEFAULT_HP = {"mu1": 1.0, "mu2": 1.0}
USES_ANOMALIES = False


def make_model(encoder: nn.Module, input_shape: tuple[int, ...], opts: Options) -> nn.Module:
    return SphereDetector(encoder, HypersphereHead(margin_param=opts.margin_param), decoder_for(encoder, input_shape))


def init_obj_state(opts: Options) -> dict:
    # The weights are kept beside the params so the score (which sees no hyperparameters) uses them.
    return {"mu1": jnp.ones((), jnp.float32), "mu2": jnp.ones((), jnp.float32)}


def prepare(params: Any, obj_state: Any, feats: jnp.ndarray, mask: jnp.ndarray, hp: Mapping, opts: Options):
    params = _sphere.set_sphere(params, _sphere.heuristic_center(feats, mask), jnp.zeros(()))
    return params, {"mu1": jnp.asarray(hp["mu1"], jnp.float32), "mu2": jnp.asarray(hp["mu2"], jnp.float32)}


def _terms(params: Any, model: nn.Module, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    p = _sphere.frozen_head(params)
    s, x_hat = model.apply(p, x, method="reconstruct")
    # R^2 = 0 here, so the head's output is d itself.
    return s + _sphere.radius2_of(p), reconstruction_error(x, x_hat)


def loss(params: Any, obj_state: Any, model: nn.Module, batch: Mapping, hp: Mapping, opts: Options):
    d, rec = _terms(params, model, batch["x"])
    svdd, recon = jnp.mean(d), jnp.mean(rec)
    value = hp["mu1"] * svdd + hp["mu2"] * recon
    return value, {"loss": value, "svdd": svdd, "reconstruction": recon}


def score(params: Any, obj_state: Any, model: nn.Module, x: jnp.ndarray, opts: Options) -> jnp.ndarray:
    d, rec = _terms(params, model, x)
    return obj_state["mu1"] * d + obj_state["mu2"] * rec


def validate_hp(hp: Mapping) -> None:
    _sphere.check_positive(hp, ("mu1", "mu2"), allow_zero=True)
