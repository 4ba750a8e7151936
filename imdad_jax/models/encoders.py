"""Encoders ``phi_W: x -> z``: the network up to the hypersphere head.

Both encoders are bias-free by default. A bias lets the network translate every
representation onto the center and shrink the whole picture at no cost, which is
one of the drifts the prototype measured (``docs/method.md``, "Scale control").
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def _act(x: jnp.ndarray) -> jnp.ndarray:
    # Leaky ReLU as in the reference Deep SVDD / Deep SAD LeNets: a bias-free net
    # with plain ReLU can lose whole units to the dead zone early in training.
    return nn.leaky_relu(x, negative_slope=0.01)


class MLPEncoder(nn.Module):
    """FC3: dense layers with leaky ReLU between them; the last layer is linear and gives z."""

    features: Sequence[int] = (64, 32, 16)
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.features):
            x = nn.Dense(width, use_bias=self.use_bias, name=f"dense{i}")(x)
            if i < len(self.features) - 1:
                x = _act(x)
        return x


class CNNEncoder(nn.Module):
    """CNN2+FC3 (or CNNn+FC3): ``n`` blocks of 5x5 conv, leaky ReLU and 2x2 max-pool, then FC3.

    Input is NHWC. The widths are ours (the paper gives none); ``docs/method.md`` says why.
    """

    conv_features: Sequence[int] = (16, 32)
    dense_features: Sequence[int] = (128, 64, 32)
    kernel_size: int = 5
    use_bias: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim == 3:  # (N, H, W) grey images
            x = x[..., None]
        for i, ch in enumerate(self.conv_features):
            k = (self.kernel_size, self.kernel_size)
            x = nn.Conv(ch, k, padding="SAME", use_bias=self.use_bias, name=f"conv{i}")(x)
            # Grad-CAM hook (imdad_jax.interpret): a no-op unless a 'perturbations' collection is passed to
            # apply; skipped at init, which would otherwise store a batch-shaped collection beside the params.
            x = _act(x) if self.is_initializing() else self.perturb(f"conv{i}_out", _act(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return MLPEncoder(self.dense_features, self.use_bias, name="fc")(x)
