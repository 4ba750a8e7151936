"""Encoders ``phi_W: x -> z``: the network up to the hypersphere head.

Both encoders are bias-free by default. A bias lets the network translate every
representation onto the center and shrink the whole picture at no cost, which is
one of the drifts the prototype measured (``docs/method.md``, "Scale control").

The optional blocks (BatchNorm, dropout, LayerNorm, residual connections, squeeze-and-excitation,
a final projection) are off by default, so the default encoders and their parameter trees are the paper's;
every block they add is bias-free for the same reason (``docs/method.md``, "Encoder options").

Train or eval mode is not an argument: a module trains (BatchNorm on batch statistics, updating its running
averages; dropout on) exactly when the caller makes ``batch_stats`` mutable and passes a ``dropout`` RNG,
which only the train step does, and only for a model that has one of these blocks (``imdad_jax.train.step.TrainMode``
wraps the model the objectives see; ``has_train_mode`` tells). Every other ``model.apply(params, x)`` (scoring,
centers, interpretation) is the deterministic eval pass, so none of that code needs a flag.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from imdad_jax.models.layers import AffineFreeBatchNorm, Conv, max_pool_2x2


def _act(x: jnp.ndarray) -> jnp.ndarray:
    # Leaky ReLU as in the reference Deep SVDD / Deep SAD LeNets: a bias-free net
    # with plain ReLU can lose whole units to the dead zone early in training.
    return nn.leaky_relu(x, negative_slope=0.01)


SE_RATIO = 4  # squeeze-and-excitation bottleneck: C -> max(1, C // 4) -> C, as in Hu et al. (2018)


def _batch_norm(name: str) -> AffineFreeBatchNorm:
    # Affine-free, as the reference Deep SVDD LeNets (BatchNorm2d(eps=1e-4, affine=False)): a learnable offset
    # would be a bias. torch's momentum 0.1 is flax's 0.9. Training mode = batch_stats mutable (module doc).
    # nn.BatchNorm's numbers and variables, with a cheaper hand-written gradient (layers.AffineFreeBatchNorm).
    return AffineFreeBatchNorm(momentum=0.9, epsilon=1e-4, name=name)


def _norm(h: jnp.ndarray, module: nn.Module, i: int, batch_norm: bool, layer_norm: bool,
          ln_axes: tuple[int, ...]) -> jnp.ndarray:
    if batch_norm:
        h = _batch_norm(f"bn{i}")(h, use_running_average=not module.is_mutable_collection("batch_stats"))
    if layer_norm:
        h = _layer_norm(f"ln{i}", ln_axes)(h)
    return h


def _dropout(h: jnp.ndarray, module: nn.Module, rate: float) -> jnp.ndarray:
    if not rate:
        return h
    # Deterministic unless the caller passed a dropout RNG (only the train step does).
    return nn.Dropout(rate)(h, deterministic=not module.has_rng("dropout"))


def _layer_norm(name: str, axes: tuple[int, ...] = (-1,)) -> nn.LayerNorm:
    # No offset (beta): a learnable bias lets Deep SVDD map every input onto the center (Ruff et al. 2018,
    # Prop. 2). The per-feature scale stays: it is multiplicative, like the bias-free layers around it.
    return nn.LayerNorm(reduction_axes=axes, feature_axes=-1, use_bias=False, use_scale=True, name=name)


class SqueezeExcite(nn.Module):
    """Channel attention (squeeze-and-excitation): gate each channel of ``x`` (N, ..., C) by a sigmoid of
    a bias-free bottleneck MLP on the channel means over the spatial axes (none for a dense layer's (N, C))."""

    ratio: int = SE_RATIO

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        ch = x.shape[-1]
        s = x.mean(axis=tuple(range(1, x.ndim - 1))) if x.ndim > 2 else x
        s = nn.relu(nn.Dense(max(1, ch // self.ratio), use_bias=False, name="reduce")(s))
        s = nn.sigmoid(nn.Dense(ch, use_bias=False, name="expand")(s))
        return x * s.reshape((x.shape[0],) + (1,) * (x.ndim - 2) + (ch,))


class MLPEncoder(nn.Module):
    """FC3: dense layers with leaky ReLU between them; the last layer is linear and gives z.

    Options (all off by default), applied to every hidden layer (not the last, linear one):
    ``batch_norm`` (affine-free BatchNorm before the activation, per-run batch statistics under the run-axis
    vmap), ``dropout`` (that rate after the activation), ``layer_norm`` (bias-free LayerNorm before the
    activation), ``se_attention`` (a squeeze-and-excitation
    gate on its features), ``residual`` (its input added back, through a bias-free linear projection where
    the widths differ); ``projection`` > 0 adds a bias-free dense layer to that many features after the last.
    """

    features: Sequence[int] = (64, 32, 16)
    use_bias: bool = False
    layer_norm: bool = False
    residual: bool = False
    se_attention: bool = False
    projection: int = 0
    batch_norm: bool = False
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.features):
            h = nn.Dense(width, use_bias=self.use_bias, name=f"dense{i}")(x)
            if i < len(self.features) - 1:
                h = _act(_norm(h, self, i, self.batch_norm, self.layer_norm, (-1,)))
                h = _dropout(h, self, self.dropout)
                if self.se_attention:
                    h = SqueezeExcite(name=f"se{i}")(h)
                if self.residual:
                    skip = x if x.shape[-1] == width else nn.Dense(width, use_bias=False, name=f"skip{i}")(x)
                    h = h + skip
            x = h
        if self.projection:
            x = nn.Dense(self.projection, use_bias=False, name="projection")(x)
        return x


class CNNEncoder(nn.Module):
    """CNN2+FC3 (or CNNn+FC3): ``n`` blocks of 5x5 conv, leaky ReLU and 2x2 max-pool, then FC3.

    Input is NHWC. The widths are ours (the paper gives none); ``docs/method.md`` says why.
    Options (all off by default): in each conv block, ``batch_norm`` (affine-free, per channel,
    before the activation, as the reference LeNets), ``dropout`` (after the pooling), ``layer_norm``
    (bias-free, before the activation), ``se_attention`` (after it) and ``residual`` (the block's input added back before the
    pooling, through a bias-free 1x1 conv where the channel count changes); the same options and
    ``projection`` go to the FC3 part (``MLPEncoder``).
    ``conv_impl``: how the convolutions are computed (``imdad_jax.models.layers.Conv``): ``"auto"`` (default; on
    CPU im2col for layers with one or two input channels, XLA's convolution elsewhere and on accelerators),
    ``"xla"`` or ``"im2col"``; the same parameters and, up to float rounding, the same numbers. The 2x2 pooling is
    ``layers.max_pool_2x2``: ``nn.max_pool``'s values and gradient with a faster gradient on CPU.
    """

    conv_features: Sequence[int] = (16, 32)
    dense_features: Sequence[int] = (128, 64, 32)
    kernel_size: int = 5
    use_bias: bool = False
    layer_norm: bool = False
    residual: bool = False
    se_attention: bool = False
    projection: int = 0
    batch_norm: bool = False
    dropout: float = 0.0
    conv_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim == 3:  # (N, H, W) grey images
            x = x[..., None]
        for i, ch in enumerate(self.conv_features):
            k = (self.kernel_size, self.kernel_size)
            h = Conv(ch, k, padding="SAME", use_bias=self.use_bias, impl=self.conv_impl, name=f"conv{i}")(x)
            # LayerNorm over the whole feature map (H, W, C), not per position over C: per-position statistics
            # would lift a dim background patch to the loudness of a bright object, erasing the contrast
            # an anomaly shows as; the scale is per channel, so its size does not depend on the image's.
            h = _act(_norm(h, self, i, self.batch_norm, self.layer_norm, (-3, -2, -1)))
            if self.se_attention:
                h = SqueezeExcite(name=f"se{i}")(h)
            if self.residual:
                h = h + (x if x.shape[-1] == ch else
                         Conv(ch, (1, 1), use_bias=False, impl=self.conv_impl, name=f"skip{i}")(x))
            # Grad-CAM hooks (imdad_jax.interpret): no-ops unless a 'perturbations' collection is passed to apply
            # (dS/dA) or 'intermediates' is mutable (A itself, after every option above); skipped at init, which
            # would otherwise store a batch-shaped collection beside the params.
            if not self.is_initializing():
                self.sow("intermediates", f"conv{i}_out", h)
            x = h if self.is_initializing() else self.perturb(f"conv{i}_out", h)
            x = _dropout(max_pool_2x2(x), self, self.dropout)
        return MLPEncoder(self.dense_features, self.use_bias, layer_norm=self.layer_norm, residual=self.residual,
                          se_attention=self.se_attention, projection=self.projection, batch_norm=self.batch_norm,
                          dropout=self.dropout, name="fc")(x)
