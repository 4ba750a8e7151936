"""Encoder + hypersphere head as one linen module, and a factory by architecture name."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from imdad_jax.models.decoder import DenseDecoder
from imdad_jax.models.encoders import CNNEncoder, MLPEncoder
from imdad_jax.models.head import HypersphereHead
from imdad_jax.models.layers import CONV_IMPLS


class SphereDetector(nn.Module):
    """``apply(params, x)`` gives the signed squared distance s(x) = d(x) - R^2;
    ``apply(params, x, method="embed")`` gives the representation z.

    With a ``decoder`` (hybrid Deep SVDD), ``method="reconstruct"`` gives (s, x_hat).
    """

    encoder: nn.Module
    head: HypersphereHead
    decoder: nn.Module | None = None

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.head(self.encoder(x))

    def embed(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.encoder(x)

    def reconstruct(self, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        z = self.encoder(x)
        return self.head(z), self.decoder(z)

    def initialize(self, x: jnp.ndarray) -> jnp.ndarray:
        """Touch every submodule so ``init`` builds them all (the decoder is off the forward path)."""
        return self.reconstruct(x) if self.decoder is not None else self(x)


ARCHITECTURES = ("cnn2", "cnn3", "fc3")


def build_encoder(arch: str, *, conv_features: Sequence[int] | None = None,
                  dense_features: Sequence[int] | None = None, use_bias: bool = False, layer_norm: bool = False,
                  residual: bool = False, se_attention: bool = False, projection: int = 0,
                  batch_norm: bool = False, dropout: float = 0.0, conv_impl: str = "auto") -> nn.Module:
    """The encoder of a paper architecture (Table I): ``cnn2`` (28x28), ``cnn3`` (32x32x3), ``fc3`` (tabular).

    ``batch_norm``, ``dropout``, ``layer_norm``, ``residual``, ``se_attention`` and ``projection`` are the
    optional blocks (``CNNEncoder``, ``MLPEncoder``); off by default, which is the paper's network.
    ``conv_impl`` (conv encoders): ``"auto"``, ``"xla"`` or ``"im2col"`` (``imdad_jax.models.layers``).
    """
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a rate in [0, 1), got {dropout}; e.g. dropout=0.1 (0 = off)")
    opts = dict(use_bias=use_bias, layer_norm=layer_norm, residual=residual, se_attention=se_attention,
                projection=projection, batch_norm=batch_norm, dropout=dropout)
    if arch == "cnn2":
        return CNNEncoder(tuple(conv_features or (16, 32)), tuple(dense_features or (128, 64, 32)), **opts,
                          conv_impl=conv_impl)
    if arch == "cnn3":
        return CNNEncoder(tuple(conv_features or (32, 64, 128)), tuple(dense_features or (128, 64, 32)), **opts,
                          conv_impl=conv_impl)
    if arch == "fc3":
        return MLPEncoder(tuple(dense_features or (64, 32, 16)), **opts)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")


def decoder_for(encoder: nn.Module, input_shape: tuple[int, ...]) -> DenseDecoder:
    """A decoder mirroring ``encoder``'s dense widths (without the last, which is z) back to ``input_shape``."""
    dense = encoder.dense_features if isinstance(encoder, CNNEncoder) else encoder.features
    return DenseDecoder(tuple(reversed(tuple(dense)[:-1])), tuple(input_shape))


def build_detector(
    arch: str,
    *,
    conv_features: Sequence[int] | None = None,
    dense_features: Sequence[int] | None = None,
    use_bias: bool = False,
    margin_param: str = "softplus",
    **head_kwargs: Any,
) -> SphereDetector:
    """Build an IMD-AD detector (encoder + hypersphere head) by architecture name."""
    enc = build_encoder(arch, conv_features=conv_features, dense_features=dense_features, use_bias=use_bias)
    return SphereDetector(enc, HypersphereHead(margin_param=margin_param, **head_kwargs))
