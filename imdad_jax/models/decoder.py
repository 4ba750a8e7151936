"""Decoders and the non-sphere model wrappers (autoencoder, classifier) that share the encoders."""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from imdad_jax.models.encoders import _act


class DenseDecoder(nn.Module):
    """Mirror of the encoder's dense layers, back to the input's shape.

    A dense decoder rather than transposed convolutions: for 28x28 or tabular inputs it
    reconstructs as well for anomaly scoring and keeps one decoder for every encoder. It has
    biases (unlike the encoder): the decoder is never part of the hypersphere, so a bias cannot
    let the representation collapse.
    """

    features: Sequence[int]
    out_shape: tuple[int, ...]

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        x = z
        for i, width in enumerate(self.features):
            x = _act(nn.Dense(width, name=f"dense{i}")(x))
        x = nn.Dense(math.prod(self.out_shape), name="out")(x)
        return x.reshape((z.shape[0],) + tuple(self.out_shape))


class Autoencoder(nn.Module):
    """``apply(params, x)`` reconstructs x; ``method="embed"`` gives z."""

    encoder: nn.Module
    decoder: DenseDecoder

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.decoder(self.encoder(x))

    def embed(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.encoder(x)

    def reconstruct(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        z = self.encoder(x)
        return z, self.decoder(z)


class Classifier(nn.Module):
    """Encoder plus one linear logit (DROCC): ``apply(params, x)`` gives logits, positive = normal."""

    encoder: nn.Module

    def setup(self) -> None:
        self.logit = nn.Dense(1)

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.logit(self.encoder(x))[..., 0]

    def embed(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.encoder(x)
