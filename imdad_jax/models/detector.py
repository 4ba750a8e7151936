"""Encoder + hypersphere head as one linen module, and a factory by architecture name."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from imdad_jax.models.encoders import CNNEncoder, MLPEncoder
from imdad_jax.models.head import HypersphereHead


class SphereDetector(nn.Module):
    """``apply(params, x)`` gives the signed squared distance s(x) = d(x) - R^2;
    ``apply(params, x, method="embed")`` gives the representation z."""

    encoder: nn.Module
    head: HypersphereHead

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.head(self.encoder(x))

    def embed(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.encoder(x)


ARCHITECTURES = ("cnn2", "cnn3", "fc3")


def build_detector(
    arch: str,
    *,
    conv_features: Sequence[int] | None = None,
    dense_features: Sequence[int] | None = None,
    use_bias: bool = False,
    margin_param: str = "softplus",
    **head_kwargs: Any,
) -> SphereDetector:
    """Build a detector by architecture name (paper Table I): ``cnn2`` (28x28), ``cnn3`` (32x32x3), ``fc3`` (tabular)."""
    if arch == "cnn2":
        enc = CNNEncoder(tuple(conv_features or (16, 32)), tuple(dense_features or (128, 64, 32)), use_bias=use_bias)
    elif arch == "cnn3":
        enc = CNNEncoder(tuple(conv_features or (32, 64, 128)), tuple(dense_features or (128, 64, 32)), use_bias=use_bias)
    elif arch == "fc3":
        enc = MLPEncoder(tuple(dense_features or (64, 32, 16)), use_bias=use_bias)
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    return SphereDetector(enc, HypersphereHead(margin_param=margin_param, **head_kwargs))
