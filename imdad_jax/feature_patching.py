"""Feature-patching SVDD (FPSVDD; Huang et al., Sensors 25(1):67, 2024) on the library's engine and objectives.

The model pieces are in ``imdad_jax.models.patches``; this module is the glue:

* the backbone's parameters: a user's file (``load_backbone_params``: ``.npz`` with "a/b/c" keys as
  ``save_backbone_params`` writes, or an Orbax checkpoint folder), or a seeded random initialisation
  (``init_backbone_params``). **Random features are for testing the mechanics, not for results**: no pretrained
  weights ship with this library, and none can be installed from the package registries here;
* ``embed_images``: the frozen backbone's patch embeddings (N, P, D), computed once; they are the training data;
* ``build_patch_model``: the patch head + sphere head for a config (``ExperimentConfig.feature_patching``), and
  ``patch_split``: an experiment's images replaced by their embeddings, so ``imdad_jax.experiment`` trains,
  tunes and scores every run as for any other model;
* ``fit_feature_patching``: one detector from a user's images, a shorthand for the scikit-learn estimator
  ``DeepDetector(features="patches", ...)`` (``imdad_jax.estimator``), with ``decision_function``,
  ``patch_scores``, ``save`` / ``load``.

The engine and the objectives are unchanged: ``PatchSphereDetector`` answers ``apply`` with one signed squared
distance per image, as ``SphereDetector`` does (``docs/method.md``, "Feature-patching SVDD").
"""
from __future__ import annotations

import dataclasses
import functools
import zipfile
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, traverse_util

from imdad_jax.models import SphereDetector, build_encoder
from imdad_jax.models.patches import (PATCH_REDUCTIONS, PatchBackbone, PatchSphereDetector, PatchSphereEncoder,
                                      patch_embeddings)
from imdad_jax.objectives import REGISTRY
from imdad_jax.build import encoder_options

DEFAULT_BACKBONE_FEATURES = (16, 32, 64)
DEFAULT_LAYERS = (1, 2)  # the intermediate stages, as PatchCore / FPSVDD take ResNet's layer2 and layer3


def _plain_sphere(obj: ModuleType) -> bool:
    # The methods whose model is an encoder and a sphere head alone: their loss and score read the model only
    # through apply (and embed), which PatchSphereDetector answers. A decoder (hybrid Deep SVDD), a classifier
    # (DROCC) or a reconstruction (autoencoder) would need patch-shaped counterparts.
    model = obj.make_model(build_encoder("fc3", dense_features=(1,)), (1,), obj.options())
    return type(model) is SphereDetector and model.decoder is None


PATCH_METHODS: tuple[str, ...] = tuple(name for name, obj in REGISTRY.items() if _plain_sphere(obj))


# ---- the backbone's parameters ------------------------------------------------------------------------------

def _sample(input_shape: Sequence[int]) -> jnp.ndarray:
    shape = tuple(input_shape)
    return jnp.zeros((1, *shape, 1) if len(shape) == 2 else (1, *shape), jnp.float32)


def init_backbone_params(backbone: nn.Module, input_shape: Sequence[int], seed: int = 0) -> Any:
    """A seeded random initialisation of ``backbone`` for images of ``input_shape`` (H, W[, C]).

    For testing the mechanics only: random convolutional features keep some local structure, but nothing an
    ImageNet-trained backbone would bring; results with them say nothing about FPSVDD.
    Kernels (every leaf of rank >= 2) are LeCun-normal, ``N(0, 1 / fan_in)`` with fan_in the product of all
    but the last axis (flax's default distribution, untruncated); leaves named ``scale`` or ``var`` are ones,
    every other leaf (biases, means) zeros. Drawn with numpy from the tree's shapes: ``backbone.init`` would
    compile a random-number program per kernel shape, which took 16-20 s on a loaded 2-core CPU.
    """
    shapes = jax.eval_shape(lambda: backbone.init(jax.random.PRNGKey(0), _sample(input_shape)))
    rng = np.random.default_rng(seed)
    flat = {}
    for path, leaf in traverse_util.flatten_dict(shapes).items():  # a fixed (sorted-by-module) order: seeded
        shape, dtype = tuple(leaf.shape), leaf.dtype
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))
            flat[path] = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)
        else:
            flat[path] = (np.ones if path[-1] in ("scale", "var") else np.zeros)(shape, dtype)
    return traverse_util.unflatten_dict(flat)


def save_backbone_params(params: Any, path: str | Path) -> Path:
    """Write backbone variables to a ``.npz`` file, one array per leaf under its "a/b/c" path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"backbone parameters are saved as .npz, got {path}")
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})
    return path


def _read_params_file(path: Path) -> dict[str, np.ndarray]:
    """The flat {"a/b/c": array} of a .npz file or an Orbax checkpoint folder."""
    if path.is_dir():
        import orbax.checkpoint as ocp

        try:
            tree = ocp.PyTreeCheckpointer().restore(path.resolve())
        # what Orbax raises for a folder that is not one of its checkpoints (no structure, a damaged metadata file)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is a folder but not a readable Orbax checkpoint ({type(e).__name__}: {e}); "
                             "give a .npz written by save_backbone_params or an Orbax PyTree checkpoint") from None
        if not isinstance(tree, dict):
            raise ValueError(f"the Orbax checkpoint {path} holds a {type(tree).__name__}, not a tree of parameters")
        return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}
    if not path.is_file():
        raise FileNotFoundError(f"no backbone parameters at {path}; give a .npz file or an Orbax checkpoint folder")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("a single array, not an archive of named arrays")
            return {k: np.asarray(z[k]) for k in z.files}
    # numpy's zip reader fails in these ways on a cut, damaged or foreign file
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path} is not a readable .npz of backbone parameters ({type(e).__name__}: {e})") from None


def _fit_tree(got: dict[str, np.ndarray], backbone: nn.Module, input_shape: Sequence[int], what: str) -> Any:
    """The flat {"a/b/c": array} ``got`` checked against ``backbone``'s variables and cast to their dtypes."""
    template = jax.eval_shape(lambda: backbone.init(jax.random.PRNGKey(0), _sample(input_shape)))
    want = traverse_util.flatten_dict(template, sep="/")
    if got and not any(k in want for k in got) and all(f"params/{k}" in want for k in got):
        got = {f"params/{k}": v for k, v in got.items()}  # a bare parameter tree, without the collection name
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    shapes = sorted(k for k in set(want) & set(got) if tuple(got[k].shape) != tuple(want[k].shape))
    if missing or unexpected or shapes:
        lines = ([f"missing: {k} {tuple(want[k].shape)}" for k in missing]
                 + [f"unexpected: {k} {tuple(got[k].shape)}" for k in unexpected]
                 + [f"shape: {k} is {tuple(got[k].shape)}, the backbone needs {tuple(want[k].shape)}" for k in shapes])
        more = f"\n  ... and {len(lines) - 12} more" if len(lines) > 12 else ""
        raise ValueError(f"{what} does not fit the backbone {type(backbone).__name__}"
                         f"{tuple(getattr(backbone, 'features', ()))} on inputs {tuple(input_shape)}:\n  "
                         + "\n  ".join(lines[:12]) + more
                         + "\nThe file must hold this backbone's variables (e.g. written by save_backbone_params); "
                           "for PatchBackbone, set its features (--backbone_features) to the widths the file has")
    bad_dtype = sorted(k for k in got if not np.issubdtype(got[k].dtype, np.floating))
    if bad_dtype:
        raise ValueError(f"{what}: arrays {bad_dtype[:4]} are not floating point; backbone weights must be")
    flat = {k: got[k].astype(want[k].dtype) for k in want}
    return traverse_util.unflatten_dict(flat, sep="/")


def load_backbone_params(path: str | Path, backbone: nn.Module, input_shape: Sequence[int]) -> Any:
    """The backbone variables stored at ``path``, checked against ``backbone``'s own parameter tree.

    ``path``: a ``.npz`` with one array per leaf under its "a/b/c" path (``save_backbone_params``; the leading
    "params/" may be left out) or an Orbax PyTree checkpoint folder of the same tree. A missing, unexpected or
    wrongly shaped array is a ``ValueError`` that names them all, with the shapes the backbone needs.
    """
    path = Path(path)
    return _fit_tree(_read_params_file(path), backbone, input_shape, str(path))


def check_backbone_params(params: Any, backbone: nn.Module, input_shape: Sequence[int]) -> Any:
    """A user's variables tree for ``backbone``, checked as ``load_backbone_params`` checks a file: the same
    leaves as numpy arrays of the backbone's dtypes (float32 values are kept bit for bit)."""
    if not isinstance(params, Mapping):
        raise ValueError(f"backbone_params must be a variables tree (a dict such as {{'params': ...}}), a path to a "
                         f".npz file or an Orbax folder, or None; got {type(params).__name__}")
    flat = traverse_util.flatten_dict(serialization.to_state_dict(params), sep="/")
    got = {k: np.asarray(v) for k, v in flat.items()}
    return _fit_tree(got, backbone, input_shape, "backbone_params")


def backbone_params_for(backbone: nn.Module, input_shape: Sequence[int], path: str | Path | None = None,
                        seed: int = 0) -> Any:
    """The user's parameters at ``path``, or (``path`` None) the seeded random ones, for the mechanics only."""
    if path is None:
        return init_backbone_params(backbone, input_shape, seed)
    return load_backbone_params(path, backbone, input_shape)


# ---- embeddings ----------------------------------------------------------------------------------------------

def as_images(x: Any) -> np.ndarray:
    """Images as float32 NHWC: uint8 scaled to [0, 1], float kept as given, grey (N, H, W) given a channel."""
    x = np.asarray(x)
    if x.ndim not in (3, 4):
        raise ValueError(f"feature patching takes images (N, H, W) or (N, H, W, C), got shape {x.shape}")
    x = x[..., None] if x.ndim == 3 else x
    return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)


@functools.lru_cache(maxsize=32)
def _cached_embedder(backbone: nn.Module, layers: tuple[int, ...], patch: int):
    return jax.jit(lambda p, xb: patch_embeddings(backbone, p, xb, layers, patch))


def embedder(backbone: nn.Module, layers: Sequence[int] = DEFAULT_LAYERS, patch: int = 3):
    """The jitted ``patch_embeddings`` of ``backbone``, ``layers``, ``patch``: ``f(backbone_params, images)``.

    One compiled function per (backbone, layers, patch), cached here at module level (flax modules hash by
    their fields), so repeated embeddings and scorings of a detector trace nothing anew; a backbone module that
    cannot be hashed (a list among its fields) gets a fresh one.
    """
    layers, patch = tuple(int(i) for i in layers), int(patch)
    try:
        return _cached_embedder(backbone, layers, patch)
    except TypeError:  # an unhashable module: nothing to key the cache on
        return jax.jit(lambda p, xb: patch_embeddings(backbone, p, xb, layers, patch))


def embed_images(backbone: nn.Module, backbone_params: Any, x: np.ndarray, layers: Sequence[int] = DEFAULT_LAYERS,
                 patch: int = 3, chunk: int = 256) -> np.ndarray:
    """``patch_embeddings`` of images ``x`` (N, H, W[, C]) in chunks, on the host as float32 (N, P, D).

    The result is N * P * D * 4 bytes (Fashion-MNIST with the default backbone: 49 patches x 96 features, 19 kB
    an image, 1.1 GB for the 60000 training images). The compiled function is ``embedder``'s, reused.
    """
    x = as_images(x)
    f = embedder(backbone, layers, patch)
    params = jax.device_put(backbone_params)
    parts = [np.asarray(f(params, jnp.asarray(x[i:i + chunk]))) for i in range(0, len(x), chunk)]
    if not parts:
        raise ValueError("no images to embed")
    return np.concatenate(parts).astype(np.float32, copy=False)


def patch_maps(backbone: nn.Module, backbone_params: Any, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The shapes (1, h, w, C) of the backbone's feature maps for images of ``input_shape`` (shapes only)."""
    maps = jax.eval_shape(lambda p: backbone.apply(p, _sample(input_shape)), backbone_params)
    return [tuple(m.shape) for m in maps]


def patch_grid(backbone: nn.Module, backbone_params: Any, input_shape: Sequence[int],
               layers: Sequence[int] = DEFAULT_LAYERS) -> tuple[int, int]:
    """The (h, w) patch grid for images of ``input_shape``: the first chosen stage's map size (shapes only)."""
    maps = jax.eval_shape(lambda p: backbone.apply(p, _sample(input_shape)), backbone_params)
    return tuple(maps[int(layers[0])].shape[1:3])


# ---- the model ------------------------------------------------------------------------------------------------

def patch_detector(obj: ModuleType, opts: Any, mlp: nn.Module, reduce: str = "max") -> PatchSphereDetector:
    """The objective's sphere head behind a per-patch ``mlp`` (``PatchSphereDetector``).

    The head is the one the objective's own ``make_model`` builds (its margin parametrisation included); a
    method whose model is more than an encoder and a sphere head is refused (``PATCH_METHODS``).
    """
    if reduce not in PATCH_REDUCTIONS:
        raise ValueError(f"reduce must be one of {PATCH_REDUCTIONS}, got {reduce!r}")
    model = obj.make_model(mlp, (1,), opts)
    if type(model) is not SphereDetector or model.decoder is not None:
        name = obj.__name__.split(".")[-1]
        raise ValueError(f"feature patching trains the hypersphere methods {', '.join(PATCH_METHODS)}; {name}'s "
                         "model has a decoder or a classifier that has no patch counterpart")
    return PatchSphereDetector(PatchSphereEncoder(mlp), model.head.clone(), reduce)


def build_patch_model(cfg: Any, obj: ModuleType, opts: Any) -> PatchSphereDetector:
    """The model of a feature-patching config: an FC3-style MLP of ``cfg.dense_features`` on every patch."""
    # the options every encoder of the library takes (imdad_jax.build.encoder_options), so the head has them too
    mlp = build_encoder("fc3", dense_features=cfg.dense_features, conv_impl=cfg.conv_impl, **encoder_options(cfg))
    return patch_detector(obj, opts, mlp, cfg.patch_reduce)


def config_backbone(cfg: Any, input_shape: Sequence[int]) -> tuple[PatchBackbone, Any]:
    """The config's backbone and its parameters (``cfg.backbone_params`` or the seeded random ones)."""
    backbone = PatchBackbone(tuple(cfg.backbone_features))
    return backbone, backbone_params_for(backbone, input_shape, cfg.backbone_params, cfg.backbone_seed)


def patch_split(cfg: Any, split: Any) -> Any:
    """An experiment's ``Split`` with every image (training rows and test set) replaced by its patch embedding.

    Indices, labels and keys are unchanged; the embeddings are computed once with the frozen backbone.
    """
    x = split.data.x
    if x.ndim not in (3, 4):
        raise ValueError(f"feature patching takes image datasets; the training data has shape {x.shape}")
    backbone, params = config_backbone(cfg, x.shape[1:])
    emb = lambda a: embed_images(backbone, params, a, cfg.patch_layers, cfg.patch_size)  # noqa: E731
    data = dataclasses.replace(split.data, x=emb(x))
    return dataclasses.replace(split, data=data, x_test=emb(split.x_test))


# ---- one detector from a user's images ----------------------------------------------------------------------

def fit_feature_patching(x: Any, y: Any = None, *, method: str = "deep_svdd", backbone: nn.Module | None = None,
                         backbone_params: Any = None, backbone_seed: int = 0,
                         layers: Sequence[int] = DEFAULT_LAYERS, patch: int = 3, reduce: str = "max",
                         dense_features: Sequence[int] = (64, 32), epochs: int = 20, batch_size: int = 64,
                         lr: float = 1e-3, weight_decay: float = 1e-6, hyperparams: dict[str, float] | None = None,
                         seed: int = 0) -> Any:
    """Train a feature-patching detector on images ``x`` (N, H, W[, C]); ``y`` (0/1) marks labelled anomalies.

    A shorthand for ``DeepDetector(features="patches", ...).fit(x, y)`` (``imdad_jax.estimator``), which it
    returns: ``decision_function``, ``patch_scores``, ``patch_embeddings``, ``save`` / ``load`` and the fitted
    ``params_``, ``obj_state_``, ``history_``, ``diverged_``, ``backbone_params_``. ``backbone``: a linen module
    returning a sequence of NHWC feature maps (default ``PatchBackbone()``); ``backbone_params``: its variables,
    or a path to a file of them (``load_backbone_params``), or None for a random initialisation from
    ``backbone_seed``, **for testing the mechanics only**. ``layers``: the stages whose maps are patched
    (``patch_layers``); ``patch``: the neighbourhood size (``patch_size``); ``reduce``: how patch distances make
    the image's (``"max"``, ``"mean"``; ``patch_reduce``). The head is a bias-free MLP of ``dense_features`` (the
    last is k), trained by the engine with ``method``'s unchanged objective on the precomputed embeddings; the
    backbone is never updated. ``seed`` is the estimator's ``random_state``.
    """
    from imdad_jax.estimator import DeepDetector  # the estimator imports this module

    det = DeepDetector(method=method, features="patches", backbone=backbone, backbone_params=backbone_params,
                       backbone_seed=backbone_seed, patch_layers=tuple(int(i) for i in layers), patch_size=patch,
                       patch_reduce=reduce, dense_features=tuple(dense_features), epochs=epochs,
                       batch_size=batch_size, lr=lr, weight_decay=weight_decay, hyperparams=hyperparams,
                       random_state=seed)
    return det.fit(x, y)


__all__ = ["DEFAULT_BACKBONE_FEATURES", "DEFAULT_LAYERS", "PATCH_METHODS", "as_images", "backbone_params_for",
           "build_patch_model", "check_backbone_params", "config_backbone", "embed_images", "embedder",
           "fit_feature_patching", "init_backbone_params", "load_backbone_params", "patch_detector", "patch_grid",
           "patch_maps", "patch_split", "save_backbone_params"]
