"""Input preprocessing for the image protocol, each fit on one run's training normals only.

Pure numpy. Every option is a frozen dataclass with ``fit(normals) -> transform`` and
``transform(x) -> x``; inputs are images already scaled to [0, 1] (``protocol.preprocess_images``)
of any shape ``(N, ...)``, outputs float32 of the same shape.

- ``unit``: nothing more than the [0, 1] scaling (the default; the paper's protocol).
- ``standardize``: per-pixel (per-feature) mean and std of the training normals, as the tabular
  protocol's ``StandardScaler`` does per feature.
- ``gcn_minmax``: the reference Deep SVDD code's image preprocessing (lukasruff/Deep-SVDD-PyTorch,
  ``src/datasets/preprocessing.py`` ``global_contrast_normalization(x, scale='l1')`` then
  ``transforms.Normalize([min], [max - min])`` in ``mnist.py`` / ``cifar10.py``), with the min and
  max computed from the run's own GCN'd training normals instead of the reference's hard-coded
  per-class constants (which are MNIST's and CIFAR-10's, and get copied to other datasets).
- ``zca``: ZCA whitening of the flattened images (the "ZCA Whitening" pre-processing of the course report
  cited in ``docs/method.md``, section III.II.I.III), regularised by ``eps``.

Which rows a transform is fit on is the caller's choice; the protocol passes a run's training
normals and nothing else (``protocol.per_run_preprocess``): no test row and no labelled anomaly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

# Floors of the fitted scales on [0, 1] pixels. A pixel that never varies among the normals (MNIST's
# border is 0 in every image) has std 0 and a zero eigenvalue: without a floor a test image that lights
# it up would be sent towards infinity.
STD_FLOOR = 1e-2
ZCA_EPS = 1e-2
_TINY = 1e-12  # a constant image has GCN scale 0; it maps to zeros instead of NaN


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


def _check_normals(normals: np.ndarray, at_least: int = 1) -> None:
    if len(normals) < at_least:
        raise ValueError(f"need at least {at_least} training normal(s) to fit the preprocessing, got {len(normals)}")
    if not np.isfinite(normals).all():
        raise ValueError("the training normals hold NaN or inf; the preprocessing cannot be fit on them")


def gcn_l1(x: np.ndarray) -> np.ndarray:
    """Global contrast normalisation per image with the l1 scale, as the reference's
    ``global_contrast_normalization(x, scale='l1')``: subtract the image's mean over all its
    features, divide by the mean absolute deviation from it. float64, same shape."""
    f = _flat(x)
    f = f - f.mean(axis=1, keepdims=True)
    scale = np.abs(f).mean(axis=1, keepdims=True)
    return (f / np.maximum(scale, _TINY)).reshape(np.shape(x))


@dataclass(frozen=True)
class Unit:
    """Pixels in [0, 1] and nothing more (the default): nothing to fit."""

    name: ClassVar[str] = "unit"

    @classmethod
    def fit(cls, normals: np.ndarray) -> Unit:
        return cls()

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32)


@dataclass(frozen=True)
class Standardize:
    """Per-feature z-scores with the training normals' mean and std (std floored at ``STD_FLOOR``)."""

    mean: np.ndarray  # (...) the shape of one image
    std: np.ndarray
    name: ClassVar[str] = "standardize"

    @classmethod
    def fit(cls, normals: np.ndarray, floor: float = STD_FLOOR) -> Standardize:
        _check_normals(normals)
        x = np.asarray(normals, np.float64)
        return cls(x.mean(axis=0), np.maximum(x.std(axis=0), floor))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) / self.std).astype(np.float32)


@dataclass(frozen=True)
class GCNMinMax:
    """The reference Deep SVDD preprocessing: ``gcn_l1`` per image, then ``(g - lo) / (hi - lo)`` with
    ``lo``, ``hi`` the smallest and largest value of any pixel of the GCN'd training normals (one
    scalar pair per run, as the reference's per-class pair). The normals land in [0, 1]; other rows may
    fall outside, as in the reference."""

    lo: float
    hi: float
    name: ClassVar[str] = "gcn_minmax"

    @classmethod
    def fit(cls, normals: np.ndarray) -> GCNMinMax:
        _check_normals(normals)
        g = gcn_l1(normals)
        return cls(float(g.min()), float(g.max()))

    def transform(self, x: np.ndarray) -> np.ndarray:
        # hi == lo only if every normal is constant (all GCN to 0): leave the values unscaled then
        span = self.hi - self.lo if self.hi > self.lo else 1.0
        return ((gcn_l1(x) - self.lo) / span).astype(np.float32)


@dataclass(frozen=True)
class ZCA:
    """ZCA whitening of the flattened images: ``(x - mean) @ W`` with ``W = U diag(1/sqrt(s + eps)) U^T``
    from the eigendecomposition ``U diag(s) U^T`` of the training normals' covariance (divided by n).
    On the normals the covariance becomes ``U diag(s / (s + eps)) U^T``: the identity along every
    direction whose variance is well above ``eps``. ``eps`` keeps the near-zero directions (constant
    pixels, fewer normals than pixels) from being blown up."""

    mean: np.ndarray  # (d,)
    w: np.ndarray  # (d, d) symmetric
    name: ClassVar[str] = "zca"

    @classmethod
    def fit(cls, normals: np.ndarray, eps: float = ZCA_EPS) -> ZCA:
        _check_normals(normals, at_least=2)
        if not eps > 0:
            raise ValueError(f"ZCA eps must be > 0, got {eps}")
        f = _flat(normals)
        mean = f.mean(axis=0)
        c = f - mean
        s, u = np.linalg.eigh(c.T @ c / len(f))
        s = np.clip(s, 0.0, None)  # round-off makes tiny eigenvalues slightly negative
        return cls(mean, (u / np.sqrt(s + eps)) @ u.T)

    def transform(self, x: np.ndarray) -> np.ndarray:
        # float32 product: fit in float64 for the eigendecomposition, but a (10000, 3072) @ (3072, 3072)
        # product per run is the cost that matters, and float32 halves it
        f = np.asarray(x, np.float32).reshape(len(x), -1)
        return ((f - self.mean.astype(np.float32)) @ self.w.astype(np.float32)).reshape(np.shape(x))


Transform = Unit | Standardize | GCNMinMax | ZCA
TRANSFORMS: dict[str, type] = {t.name: t for t in (Unit, Standardize, GCNMinMax, ZCA)}
PREPROCESSING: tuple[str, ...] = tuple(TRANSFORMS)


def fit_transform(name: str, normals: np.ndarray) -> Transform:
    """The preprocessing ``name`` (one of ``PREPROCESSING``) fit on ``normals``, with its default settings."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown preprocessing {name!r}; choose one of {', '.join(PREPROCESSING)}")
    return TRANSFORMS[name].fit(normals)
