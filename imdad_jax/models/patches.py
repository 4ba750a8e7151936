"""Feature patching (FPSVDD, Huang et al., Sensors 25(1):67, 2024): patch embeddings of a frozen CNN backbone
and a small trainable head whose per-patch outputs feed the unchanged hypersphere head and objectives.

Pipeline::

    images -> frozen backbone -> feature maps of the chosen stages
           -> 3x3 local average of each map (PatchCore-style neighbourhood aggregation)
           -> resized to the grid of the first chosen stage, channels concatenated: (N, P, D), P = grid cells
           -> PatchSphereEncoder: one bias-free MLP applied to every patch: (N, P, k)
           -> HypersphereHead per patch: s_p = ||z_p - c||^2 - R^2, (N, P)
           -> reduced over the patches (max by default): s(x), (N,)

The backbone is frozen, so its embeddings are computed once (``patch_embeddings``) and ARE the training data the
engine sees: ``x`` of shape (N, P, D). ``PatchSphereDetector`` then has the interface of ``SphereDetector``
(``apply`` gives the signed squared distance s(x), ``method="embed"`` a representation for the initial center),
so every objective whose model is a plain encoder + sphere head trains it without a change.

No pretrained weights ship with this library (none can be installed from the package registries here):
``PatchBackbone`` is a small CNN that a user fills with their own parameters
(``imdad_jax.feature_patching.load_backbone_params``); left randomly initialised it is for testing the mechanics
only, not for results. Pure flax.linen and jax; imports nothing of the project but the encoders.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from imdad_jax.models.encoders import _act
from imdad_jax.models.head import HypersphereHead

PATCH_REDUCTIONS = ("max", "mean")


class PatchBackbone(nn.Module):
    """A small CNN whose ``__call__`` returns the feature map of every stage (NHWC), finest first.

    Stage i: ``kernel_size`` conv to ``features[i]`` channels, leaky ReLU, 2x2 max-pool; a 28x28 input gives
    14x14, 7x7 and 3x3 maps with the default three stages. Any linen module returning a sequence of NHWC maps
    can stand in for it in ``patch_embeddings`` (e.g. a user's own pretrained network). The convolutions have
    biases: the backbone is never trained here, so the bias argument of the sphere head (a bias lets Deep SVDD
    collapse) does not apply to it, and pretrained CNNs usually carry them.
    """

    features: Sequence[int] = (16, 32, 64)
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
        if x.ndim == 3:  # (N, H, W) grey images
            x = x[..., None]
        maps = []
        for i, ch in enumerate(self.features):
            x = nn.Conv(ch, (self.kernel_size, self.kernel_size), padding="SAME", name=f"conv{i}")(x)
            x = nn.max_pool(_act(x), (2, 2), strides=(2, 2))
            maps.append(x)
        return tuple(maps)


def local_average(fmap: jnp.ndarray, patch: int = 3) -> jnp.ndarray:
    """Mean of every ``patch`` x ``patch`` neighbourhood of an (N, h, w, C) map, stride 1, same size out.

    At the border the mean is over the cells inside the map (padding is not counted), so an edge patch is not
    darkened by zeros that are not in the image. ``patch=1`` returns the map unchanged.
    """
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be an odd size >= 1 (e.g. 3), got {patch}")
    if patch == 1:
        return fmap
    return nn.avg_pool(fmap, (patch, patch), strides=(1, 1), padding="SAME", count_include_pad=False)


def patch_embeddings(backbone: nn.Module, backbone_params: Any, x: jnp.ndarray, layers: Sequence[int] = (1, 2),
                     patch: int = 3) -> jnp.ndarray:
    """Patch embeddings (N, P, D) of images ``x`` (N, H, W[, C]) from the backbone's stages ``layers``.

    Each chosen map is averaged over ``patch`` x ``patch`` neighbourhoods (``local_average``), resized
    bilinearly to the (h, w) grid of the first chosen stage, and the maps' channels are concatenated:
    P = h * w patches (row-major), D = the chosen stages' channels summed. The backbone's outputs sit behind
    ``stop_gradient``: it stays frozen even if this is called inside a loss.
    """
    if not layers:
        raise ValueError("layers must name at least one backbone stage, e.g. (1, 2)")
    maps = backbone.apply(backbone_params, x)
    n_maps = len(maps)
    bad = [i for i in layers if not 0 <= i < n_maps]
    if bad:
        raise ValueError(f"layers {bad} are not stages of the backbone, which returns {n_maps} feature maps "
                         f"(stages 0..{n_maps - 1})")
    chosen = [jax.lax.stop_gradient(maps[i]) for i in layers]
    n, h, w = chosen[0].shape[:3]
    parts = []
    for f in chosen:
        f = local_average(f, patch)
        if f.shape[1:3] != (h, w):
            f = jax.image.resize(f, (n, h, w, f.shape[-1]), method="bilinear")
        parts.append(f)
    return jnp.concatenate(parts, axis=-1).reshape(n, h * w, -1)


class PatchSphereEncoder(nn.Module):
    """The trainable head of feature patching: ``mlp`` applied to every patch, (N, P, D) -> (N, P, k).

    ``mlp`` is an encoder on (rows, D) inputs, normally ``build_encoder("fc3", ...)`` (bias-free, like the rest
    of the library, so Deep SVDD cannot map every patch onto the center); the patches of all images of a batch
    go through it as one (N * P, D) batch, so every patch is a training example for it.
    """

    mlp: nn.Module

    def __call__(self, e: jnp.ndarray) -> jnp.ndarray:
        if e.ndim != 3:
            raise ValueError(f"PatchSphereEncoder takes patch embeddings (N, P, D), got shape {e.shape}; compute "
                             "them with imdad_jax.models.patches.patch_embeddings")
        n, p = e.shape[:2]
        return self.mlp(e.reshape(n * p, e.shape[-1])).reshape(n, p, -1)


class PatchSphereDetector(nn.Module):
    """Patch head + hypersphere head with ``SphereDetector``'s interface on patch embeddings (N, P, D).

    ``apply(params, e)``: the image's signed squared distance s(x), the ``reduce`` of its patches'
    ``s_p = ||z_p - c||^2 - R^2`` over P: ``"max"`` (default: the image is inside the sphere only when every
    patch is, so one anomalous patch is enough to flag it) or ``"mean"``. ``method="patch_distances"`` gives
    the (N, P) map of s_p (anomaly localisation); ``method="embed"`` the mean patch representation (N, k), which
    is what the objectives' initial center averages: the mean of all training normals' patch representations.

    Not the objectives' ``make_model`` (that builds ``SphereDetector``); ``imdad_jax.feature_patching`` builds
    this one for the methods whose model is an encoder and a sphere head alone (``PATCH_METHODS`` there).
    """

    encoder: nn.Module
    head: HypersphereHead
    reduce: str = "max"

    def patch_distances(self, e: jnp.ndarray) -> jnp.ndarray:
        # The head is a function of the last axis (||z||^2 - (w.z + b)), so it scores every patch at once.
        return self.head(self.encoder(e))

    def __call__(self, e: jnp.ndarray) -> jnp.ndarray:
        s = self.patch_distances(e)
        if self.reduce == "max":
            return s.max(axis=1)
        if self.reduce == "mean":
            return s.mean(axis=1)
        raise ValueError(f"reduce must be one of {PATCH_REDUCTIONS}, got {self.reduce!r}")

    def embed(self, e: jnp.ndarray) -> jnp.ndarray:
        return self.encoder(e).mean(axis=1)

    def initialize(self, e: jnp.ndarray) -> jnp.ndarray:
        """What ``init`` runs: the forward pass touches every parameter."""
        return self(e)


__all__ = ["PATCH_REDUCTIONS", "PatchBackbone", "PatchSphereDetector", "PatchSphereEncoder", "local_average",
           "patch_embeddings"]
