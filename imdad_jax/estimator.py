"""A scikit-learn / PyOD-style face for users' own arrays: ``fit``, ``decision_function``, ``predict``.

    from imdad_jax import IMDAD
    det = IMDAD(epochs=100).fit(X, y)          # y: 1 marks a labelled anomaly, 0 a normal sample
    scores = det.decision_function(X_new)      # higher = more anomalous; > 0 outside the model's boundary
    det.decision_scores_, det.threshold_, det.labels_   # PyOD's attributes; predict(X) = score > threshold_
    det.predict_proba(X_new); det.explain(X_new)        # [P(normal), P(anomaly)]; attributions per feature
    det.center_, det.radius_, det.margin_      # the sphere, read off the final layer's weights
    det.save("model_dir"); IMDAD.load("model_dir")

Every deep method of the registry has the same face (``DeepDetector(method="deep_sad")``; ``IMDAD`` is the
shorthand for the default method). One ``fit`` is one run of the same engine the experiments use
(``imdad_jax.train.fit``), assembled by the same ``imdad_jax.build``.
``features="patches"`` trains feature-patching SVDD instead (a frozen backbone's patch embeddings, a per-patch
MLP head, the same sphere objectives; ``imdad_jax.feature_patching``, ``docs/method.md`` "Feature-patching SVDD"):

    det = DeepDetector(method="deep_svdd", features="patches", backbone_params="bb.npz").fit(images)
    det.decision_function(images_new); det.patch_scores(images_new)   # (N,) and an (N, h, w) map

Conventions follow PyOD: ``predict`` returns 1 for anomalies and 0 for normals, by ``threshold_`` (chosen at fit by
``threshold`` / ``contamination``, ``docs/own_data.md``); ``score_samples`` follows scikit-learn (higher = more
normal, the negated ``decision_function``). A fit's programs are compiled once per process and shape (a second
estimator of the same shape compiles nothing), and ``fit_many``'s run k is ``fit(random_state=k)`` exactly.
"""
from __future__ import annotations

import functools
import itertools
import json
import math
import numbers
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import numpy as np
from flax import serialization, traverse_util
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from scipy import special, stats
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from imdad_jax.build import FLOAT32_MAX, encoder_option_names, label_pools, model_input_shape, single_run, user_hyperparams
from imdad_jax.data.registry import KIND_DEFAULTS
from imdad_jax.data.runs import RunData
from imdad_jax.feature_patching import (DEFAULT_BACKBONE_FEATURES, DEFAULT_LAYERS, PATCH_METHODS, check_backbone_params,
                                        embed_images, init_backbone_params, load_backbone_params, patch_detector,
                                        patch_maps)
from imdad_jax.models import ARCHITECTURES, build_encoder
from imdad_jax.models.patches import PATCH_REDUCTIONS, PatchBackbone, patch_embeddings
from imdad_jax.objectives import REGISTRY, get_objective
from imdad_jax.interpret.attribution import DEFAULT_STEPS, integrated_gradients
from imdad_jax.interpret.thresholds import gaussian_threshold
from imdad_jax.io.compile_cache import enable_compile_cache
from imdad_jax.train import fit
from imdad_jax.train.engine import STRATEGIES

# build_encoder's optional blocks, settable through DeepDetector(encoder_options=...): every keyword it takes but the
# widths and the convolution form, so a new encoder option reaches the estimator without an edit here
ENCODER_OPTIONS = encoder_option_names()
FEATURES = ("raw", "patches")


def method_options(obj: Any) -> tuple[str, ...]:
    """The static options an objective takes (``DeepDetector(options=...)``)."""
    return tuple(obj.Options._fields)
class TableDefaults(NamedTuple):
    """What a method takes on a table where the user left it out: optimizer steps (epochs follow the rows),
    encoder widths by the number of features, hyperparameters over the objective's own defaults."""

    steps: int
    lr: float
    min_epochs: int
    max_epochs: int
    widths: Callable[[int], tuple[int, ...]]
    hp: dict[str, float]
    # nu1 = max(its default, k * contamination) when the user gives a contamination and no nu1: the nu-property's
    # nu1 bounds the share of training rows left outside R^2, so unlabelled anomalies need it above their share
    nu1_per_contamination: float | None = None


# IMDAD()'s defaults on tables, chosen on validation splits of 14 tables of 28 to 24,596 training rows and 8 to 100
# features (experiments/estimator_defaults.py, results/estimator_defaults/; docs/own_data.md "Defaults"), the best
# average rank over the tables: a fixed budget of optimizer steps rather than of epochs (a small table gets many
# epochs, a large one few), lr 3e-4, FC3 widened for wide tables, and the sphere's own step size at 0.003 (over so
# many steps 0.1 overshoots). With a contamination c given, nu1 = max(0.1, 4c), chosen the same way on tables with
# unlabelled anomalies among the training rows (experiments/estimator_contamination.py). Methods not measured there
# keep 100 epochs, lr 1e-3, FC3's widths and their own defaults.
TABLE_DEFAULTS = {"imdad": TableDefaults(steps=5_000, lr=3e-4, min_epochs=10, max_epochs=2000,
                                         widths=lambda d: (max(64, 2 * d), max(32, d), max(16, d // 2)),
                                         hp={"head_lr": 0.003}, nu1_per_contamination=4.0)}
DEFAULT_EPOCHS = 100  # epochs="auto" for images and for the methods without TableDefaults
DEFAULT_LR = 1e-3  # lr=None likewise
THRESHOLDS = ("auto", "sphere", "contamination", "gaussian")
BOUNDARY_METHODS = tuple(sorted(n for n, o in REGISTRY.items() if o.SCORE_BOUNDARY))
DEFAULT_CONTAMINATION = 0.1  # PyOD's default, for threshold="contamination" without a contamination given
PROBA_METHODS = ("linear", "unify")
# the one-run compiled program that fit and fit_many share, so fit_many's run k is fit(random_state=k) exactly
FIT_STRATEGY = "loop"
# what fit_many copies from the detector that prepared the data to every run's detector
FITTED_INPUT = ("input_shape_", "scaler_mean_", "scaler_scale_", "n_features_in_", "feature_names_in_",
                "backbone_params_")
PATCH_DENSE_FEATURES = (64, 32)  # the patch head's default widths (fit_feature_patching's)
PATCH_BATCH_SIZE = 64
PATCH_SCORE_CHUNK = 1024  # images scored per call with features="patches" (embedded 256 at a time)


class DeepDetector(BaseEstimator):
    """A deep hypersphere detector trained on ``X`` with labelled anomalies marked in ``y``.

    ``method``: a registered objective (``imdad``, ``deep_sad``, ``deep_svdd``, ...). ``arch``: ``"auto"`` picks FC3
    for 2-D ``X`` (n, features) and CNN2 for images (n, H, W[, C]); ``"fc3"``, ``"cnn2"``, ``"cnn3"`` force one.
    ``hyperparams``: the objective's per-run values (e.g. ``{"nu1": 0.05}``), its defaults otherwise.
    ``encoder_options``: the optional encoder blocks of ``build_encoder`` (e.g. ``{"batch_norm": True,
    "dropout": 0.1}``; also ``layer_norm``, ``residual``, ``se_attention``, ``projection``), off by default.
    Tabular ``X`` is standardised with a scaler fit on the training normals (as the paper's protocol does);
    images are scaled from uint8 to [0, 1] (float images are used as given).
    ``options``: the method's static choices (the fields of its ``Options``, e.g. IMD-AD's ``{"solver": "paper"}``,
    ``{"center_constraint": "multiplier"}``); what is left out follows the data's kind as in the experiments
    (``imdad_jax.data.registry.KIND_DEFAULTS``: IMD-AD on a table takes ``solver="head_lr"``, the sphere's own
    step size ``hyperparams["head_lr"]``; on images the paper's solver; ``docs/method.md``).

    ``features``: ``"raw"`` (default) trains the encoder on ``X`` itself; ``"patches"`` is feature-patching SVDD
    on images ``X`` (n, H, W[, C]): a frozen ``backbone`` (a linen module whose ``__call__`` returns a sequence
    of NHWC feature maps; None = ``PatchBackbone(backbone_features)``) embeds every image once into patches
    (the maps of stages ``patch_layers``, ``patch_size`` x ``patch_size`` local means, concatenated on the
    first chosen stage's grid), and a bias-free MLP of ``dense_features`` (default (64, 32)) scores every patch
    with the sphere head; ``patch_reduce`` (``"max"``, ``"mean"``) makes the image's score. Only the methods in
    ``imdad_jax.feature_patching.PATCH_METHODS`` (an encoder and a sphere head alone) train it; ``arch`` must be
    ``"auto"`` or ``"fc3"``, the default ``batch_size`` is 64. ``backbone_params``: the backbone's variables (a
    tree), a path to a ``.npz`` / Orbax folder of them (``load_backbone_params``), or None for a random
    initialisation from ``backbone_seed``, **for testing the mechanics only** (no pretrained weights ship).
    The patch settings are ignored with ``features="raw"``.

    ``epochs``: a number, or ``"auto"`` (default): for IMD-AD on a table a budget of about 5,000 optimizer steps
    (``TABLE_DEFAULTS``: 10 to 2000 epochs by the number of rows), 100 otherwise. ``lr=None``: 3e-4 for IMD-AD on a
    table, 1e-3 otherwise. With ``dense_features=None``, IMD-AD on a table widens FC3 for wide tables,
    ``(max(64, 2d), max(32, d), max(16, d // 2))`` for d features, and takes ``head_lr`` 0.003; given a
    ``contamination`` c and no ``nu1``, it takes ``nu1 = max(0.1, 4c)`` (the share of training rows the sphere may
    leave outside). All chosen on validation splits (``docs/own_data.md``, "Defaults").

    ``threshold`` decides ``threshold_`` at fit (``predict`` and ``labels_`` are ``score > threshold_``):
    ``"sphere"`` (0, the learned boundary; methods whose score has one), ``"contamination"`` (PyOD's rule: the
    ``1 - contamination`` percentile of the training scores), ``"gaussian"`` (mean + 3 std of the training
    normals' scores) or ``"auto"``: contamination when ``contamination`` (a share in (0, 0.5]) is given, else the
    sphere where there is one, else gaussian.

    Attributes after ``fit``: ``params_``, ``obj_state_``, ``center_``, ``radius_``, ``margin_`` (the sphere),
    ``decision_scores_`` (N,) the training rows' scores, ``threshold_``, ``threshold_rule_``, ``labels_`` (N,),
    ``explain_baseline_`` (features,) for tables, ``epochs_`` and ``lr_`` (what ``epochs`` and ``lr`` came to),
    ``history_`` (per-epoch diagnostics), ``diverged_``.
    """

    def __init__(self, method: str = "imdad", arch: str = "auto", dense_features: tuple[int, ...] | None = None,
                 conv_features: tuple[int, ...] | None = None, epochs: int | str = "auto",
                 batch_size: int | None = None,
                 lr: float | None = None, weight_decay: float = 1e-6, anomaly_share: float | None = None,
                 hyperparams: dict[str, float] | None = None, random_state: int = 0,
                 encoder_options: dict[str, Any] | None = None, features: str = "raw", backbone: Any = None,
                 backbone_features: tuple[int, ...] = DEFAULT_BACKBONE_FEATURES, backbone_params: Any = None,
                 backbone_seed: int = 0, patch_layers: tuple[int, ...] = DEFAULT_LAYERS, patch_size: int = 3,
                 patch_reduce: str = "max", options: dict[str, Any] | None = None,
                 contamination: float | None = None, threshold: str = "auto"):
        self.method = method
        self.arch = arch
        self.dense_features = dense_features
        self.conv_features = conv_features
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.anomaly_share = anomaly_share
        self.hyperparams = hyperparams
        self.random_state = random_state
        self.encoder_options = encoder_options
        self.features = features
        self.backbone = backbone
        self.backbone_features = backbone_features
        self.backbone_params = backbone_params
        self.backbone_seed = backbone_seed
        self.patch_layers = patch_layers
        self.patch_size = patch_size
        self.patch_reduce = patch_reduce
        self.options = options
        self.contamination = contamination
        self.threshold = threshold

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False  # y only marks the labelled anomalies; one-class methods fit X alone
        tags.target_tags.one_d_labels = True  # one 0/1 label per row
        return tags

    # ---- input handling -------------------------------------------------------------------------------
    def _is_image(self, x: np.ndarray) -> bool:
        return x.ndim >= 3

    def _patches(self) -> bool:
        return self.features == "patches"

    def _check_x(self, X: Any, fitting: bool) -> np.ndarray:
        if self._patches() and (sp.issparse(X) or hasattr(X, "columns") or np.ndim(X) not in (3, 4)):
            raise ValueError(f"features='patches' takes images (n, H, W) or (n, H, W, C); X has shape {np.shape(X)}"
                             " (for a table use features='raw')")
        if sp.issparse(X) or np.ndim(X) <= 2 or hasattr(X, "columns"):
            # scikit-learn's own validation: dtype, NaN/inf, sparse refused, n_features_in_ and
            # feature_names_in_ recorded at fit and checked afterwards (with its standard messages)
            if not fitting and len(self.input_shape_) > 1:
                raise ValueError(f"X has shape {np.shape(X)}, the detector was fit on images of shape "
                                 f"{self.input_shape_}; pass (n, {', '.join(map(str, self.input_shape_))})")
            x = validate_data(self, X, reset=fitting, dtype=np.float32, ensure_all_finite=True,
                              ensure_min_samples=2 if fitting else 1)
        else:
            x = np.asarray(X)
            if x.ndim > 4:
                raise ValueError(f"X has shape {x.shape}; give a table (n, features) or images (n, H, W) or "
                                 "(n, H, W, C)")
            # complex numbers would lose their imaginary part silently in the float32 cast below
            if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
                raise ValueError(f"image X must hold real numbers, got dtype {x.dtype}")
            if 0 in x.shape[1:]:
                raise ValueError(f"X has shape {x.shape}: images with an empty axis; each image needs H, W (and C) "
                                 ">= 1")
            if not fitting and len(x) == 0:
                raise ValueError(f"Found array with 0 sample(s) (shape={x.shape}) while a minimum of 1 is required "
                                 f"by {type(self).__name__}.")
            if not np.isfinite(x).all():
                raise ValueError("X holds NaN or inf; fill or drop those samples first")
            # float64 pixels past float32's range would turn into inf in the cast to float32
            if x.size and x.dtype.kind == "f" and float(np.abs(x).max()) > FLOAT32_MAX:
                raise ValueError(f"X holds values up to {np.abs(x).max():.3g}, beyond float32's range; scale the "
                                 "images (e.g. to [0, 1]) first")
        if not fitting and x.shape[1:] != tuple(self.input_shape_):
            raise ValueError(f"X has samples of shape {x.shape[1:]}, the detector was fit on {self.input_shape_}")
        return x

    def _transform(self, x: np.ndarray) -> np.ndarray:
        if self._is_image(x):
            x = x[..., None] if x.ndim == 3 else x
            return (x.astype(np.float32) / 255.0) if x.dtype == np.uint8 else x.astype(np.float32)
        return ((x - self.scaler_mean_) / self.scaler_scale_).astype(np.float32)

    def _objective(self):
        if self.method not in REGISTRY:
            raise ValueError(f"unknown method {self.method!r}; registered: {sorted(REGISTRY)}")
        obj = get_objective(self.method)
        given = self.options or {}
        if not isinstance(given, dict) or set(given) - set(obj.Options._fields):
            raise ValueError(f"options must be a dict with keys among {method_options(obj)} for {self.method}, got "
                             f"{given!r}; e.g. options={{'solver': 'paper'}}")
        # the data's kind decides what the user left out, as the experiments' registry does (KIND_DEFAULTS)
        shape = getattr(self, "input_shape_", None)
        kind = "image" if shape is not None and len(shape) >= 2 else "tabular"
        return obj, obj.options({**KIND_DEFAULTS[kind].get("options", {}), **given})

    def _model(self, input_shape: tuple[int, ...]):
        obj, opts = self._objective()
        if self._patches():  # the patch head on embeddings (N, P, D), whatever the images' shape
            mlp = build_encoder("fc3", dense_features=tuple(self.dense_features or PATCH_DENSE_FEATURES),
                                **(self.encoder_options or {}))
            return patch_detector(obj, opts, mlp, self.patch_reduce)
        arch = self.arch if self.arch != "auto" else ("cnn2" if len(input_shape) >= 2 else "fc3")
        dense = self.dense_features or getattr(self, "table_widths_", None)
        defaults = self._table_defaults()
        if dense is None and arch == "fc3" and defaults is not None and len(input_shape) == 1:
            dense = defaults.widths(int(input_shape[0]))
        enc = build_encoder(arch, conv_features=self.conv_features, dense_features=dense,
                            **(self.encoder_options or {}))
        return obj.make_model(enc, tuple(input_shape), opts)

    def _check_arch(self, x: np.ndarray) -> None:
        # A table through a conv net, or images smaller than the conv blocks' pooling allows, would fail only
        # inside Flax (a division by zero when it sizes the first dense layer).
        arch = self.arch if self.arch != "auto" else ("cnn2" if self._is_image(x) else "fc3")
        if arch not in ("cnn2", "cnn3"):
            if arch not in ARCHITECTURES:
                raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES} or 'auto'")
            return
        if not self._is_image(x):
            raise ValueError(f"arch={arch!r} takes images (n, H, W) or (n, H, W, C); X is a table {x.shape}: use "
                             "arch='fc3' or 'auto'")
        blocks = len(self.conv_features or ((16, 32) if arch == "cnn2" else (32, 64, 128)))  # build_encoder's
        side = 2 ** blocks
        if min(x.shape[1:3]) < side:
            raise ValueError(f"images of {x.shape[1]}x{x.shape[2]} are too small for {arch}'s {blocks} 2x2 pooling "
                             f"steps: H and W must be >= {side}; use arch='fc3' (pixels as features) or fewer "
                             "conv_features")

    def _check_settings(self) -> None:
        # Out of range, these would otherwise fail deep inside JAX (a zero layer width, a fractional batch size)
        # or train quietly on something else (batch_size=0 read as the default, a negative or NaN lr).
        def whole(v: Any) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def real(v: Any) -> bool:  # finite as the float32 the engine trains with, not only as a Python float
            return (isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                    and abs(v) <= FLOAT32_MAX)

        if self.epochs != "auto" and (not whole(self.epochs) or self.epochs < 1):
            raise ValueError(f"epochs must be a whole number >= 1, or 'auto' (set by the data's size), got "
                             f"{self.epochs!r}")
        if self.batch_size is not None and (not whole(self.batch_size) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a whole number >= 1, or None for the default, "
                             f"got {self.batch_size!r}")
        if self.lr is not None and (not real(self.lr) or self.lr <= 0):
            raise ValueError(f"lr must be a finite number > 0, or None for the default, got {self.lr!r}; e.g. "
                             "lr=1e-3")
        if not real(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.anomaly_share is not None and not (real(self.anomaly_share) and 0 < self.anomaly_share < 1):
            raise ValueError(f"anomaly_share must lie in (0, 1) (e.g. 0.5 for balanced batches), or None for the "
                             f"training set's proportion, got {self.anomaly_share!r}")
        for name in ("dense_features", "conv_features"):
            widths = getattr(self, name)
            if widths is not None and (isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__")
                                       or not all(whole(w) and w >= 1 for w in widths)):
                raise ValueError(f"{name} must be a sequence of layer widths >= 1 (e.g. (64, 32)), or None for "
                                 f"the default, got {widths!r}")
        opts = self.encoder_options
        if opts is not None:
            if not isinstance(opts, dict) or set(opts) - set(ENCODER_OPTIONS):
                raise ValueError(f"encoder_options must be a dict with keys among {ENCODER_OPTIONS}, got {opts!r}; "
                                 "e.g. encoder_options={'batch_norm': True, 'dropout': 0.1}")
            if "dropout" in opts and not (real(opts["dropout"]) and 0 <= opts["dropout"] < 1):
                raise ValueError(f"encoder_options['dropout'] must be a rate in [0, 1), got {opts['dropout']!r}")
            if "projection" in opts and not (whole(opts["projection"]) and opts["projection"] >= 0):
                raise ValueError(f"encoder_options['projection'] must be a whole number >= 0 (0 = none), "
                                 f"got {opts['projection']!r}")
        c = self.contamination
        if c is not None and not (real(c) and 0 < c <= 0.5):
            raise ValueError(f"contamination must lie in (0, 0.5] (the expected share of anomalies in the training "
                             f"data, PyOD's convention), or None for the model's own boundary; got {c!r}")
        if not isinstance(self.threshold, str) or self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {THRESHOLDS}, got {self.threshold!r}")
        if self.threshold == "sphere" and self.method in REGISTRY and not get_objective(self.method).SCORE_BOUNDARY:
            raise ValueError(f"threshold='sphere' needs a score with a boundary at 0 ({', '.join(BOUNDARY_METHODS)}); "
                             f"{self.method}'s score is a distance: use threshold='gaussian' or a contamination")
        if not isinstance(self.features, str) or self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if self._patches():
            self._check_patch_settings(whole)

    def _check_patch_settings(self, whole: Any) -> None:
        if self.method in REGISTRY and self.method not in PATCH_METHODS:
            raise ValueError(f"features='patches' trains the hypersphere methods {', '.join(PATCH_METHODS)}; "
                             f"{self.method}'s model has a decoder or a classifier that has no patch counterpart")
        if self.arch not in ("auto", "fc3") or self.conv_features is not None:
            raise ValueError("features='patches' trains an MLP head on every patch (set its widths with "
                             f"dense_features): arch must be 'auto' or 'fc3' and conv_features None, got "
                             f"arch={self.arch!r}, conv_features={self.conv_features!r}")
        if self.backbone is not None and not isinstance(self.backbone, nn.Module):
            raise ValueError(f"backbone must be a flax linen module returning a sequence of NHWC feature maps, or "
                             f"None for PatchBackbone(backbone_features); got {type(self.backbone).__name__}")
        bf = self.backbone_features
        if self.backbone is None and (isinstance(bf, (str, bytes)) or not hasattr(bf, "__iter__") or not bf
                                      or not all(whole(w) and w >= 1 for w in bf)):
            raise ValueError(f"backbone_features must be a non-empty sequence of stage widths >= 1 (e.g. (16, 32, "
                             f"64)), got {bf!r}")
        bp = self.backbone_params
        if bp is not None and not isinstance(bp, (str, Path, dict)) and not hasattr(bp, "keys"):
            raise ValueError(f"backbone_params must be a variables tree (a dict), a path to a .npz file or an Orbax "
                             f"folder, or None for a seeded random initialisation; got {type(bp).__name__}")
        if not whole(self.backbone_seed) or self.backbone_seed < 0:
            raise ValueError(f"backbone_seed must be a whole number >= 0, got {self.backbone_seed!r}")
        layers = self.patch_layers
        if (isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__") or not layers
                or not all(whole(i) and i >= 0 for i in layers)):
            raise ValueError(f"patch_layers must be a non-empty sequence of backbone stages >= 0 (e.g. (1, 2)), "
                             f"got {layers!r}")
        if not whole(self.patch_size) or self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be an odd whole number >= 1 (e.g. 3), got {self.patch_size!r}")
        if self.patch_reduce not in PATCH_REDUCTIONS:
            raise ValueError(f"patch_reduce must be one of {PATCH_REDUCTIONS}, got {self.patch_reduce!r}")

    # ---- feature patching --------------------------------------------------------------------------------
    def _backbone(self) -> Any:
        return self.backbone if self.backbone is not None else PatchBackbone(tuple(int(w) for w in
                                                                                   self.backbone_features))

    def _layers(self) -> tuple[int, ...]:
        return tuple(int(i) for i in self.patch_layers)

    def _backbone_variables(self, input_shape: tuple[int, ...]) -> Any:
        """The frozen backbone's variables: the user's tree or file, or the seeded random initialisation."""
        backbone, bp = self._backbone(), self.backbone_params
        if bp is None:
            return init_backbone_params(backbone, input_shape, int(self.backbone_seed))
        if isinstance(bp, (str, Path)):
            return load_backbone_params(bp, backbone, input_shape)
        return check_backbone_params(bp, backbone, input_shape)

    def _check_grid(self, input_shape: tuple[int, ...]) -> None:
        # stages that do not exist, or maps pooled down to nothing, would fail only inside JAX
        maps = patch_maps(self._backbone(), self.backbone_params_, input_shape)
        bad = [i for i in self._layers() if i >= len(maps)]
        if bad:
            raise ValueError(f"patch_layers {bad} are not stages of the backbone, which returns {len(maps)} feature "
                             f"maps (stages 0..{len(maps) - 1})")
        empty = [i for i in self._layers() if 0 in maps[i][1:3]]
        if empty:
            raise ValueError(f"images of shape {input_shape} leave no cells in backbone stages {empty} (maps "
                             f"{[maps[i][1:3] for i in empty]}); use larger images, earlier patch_layers or fewer "
                             "backbone stages")

    def _embed(self, xt: np.ndarray) -> np.ndarray:
        return embed_images(self._backbone(), self.backbone_params_, xt, self._layers(), int(self.patch_size))

    def patch_grid(self) -> tuple[int, int]:
        """The (h, w) grid of patches of the fitted detector's images (``features="patches"``)."""
        check_is_fitted(self, "params_")
        self._require_patches("patch_grid")
        maps = patch_maps(self._backbone(), self.backbone_params_, self.input_shape_)
        return tuple(maps[self._layers()[0]][1:3])

    def _require_patches(self, what: str) -> None:
        if not self._patches():
            raise ValueError(f"{what} needs a feature-patching detector (features='patches'); this one has "
                             f"features={self.features!r}")

    def patch_embeddings(self, X: Any) -> np.ndarray:
        """The frozen backbone's patch embeddings (N, P, D) of images ``X``: what the patch head sees."""
        check_is_fitted(self, "params_")
        self._require_patches("patch_embeddings")
        return self._embed(self._transform(self._check_x(X, fitting=False)))

    def patch_scores(self, X: Any) -> np.ndarray:
        """Every patch's signed squared distance ``||z_p - c||^2 - R^2`` as an (N, h, w) map: where an image is
        anomalous (``features="patches"``; its ``patch_reduce`` over the patches is ``decision_function``)."""
        check_is_fitted(self, "params_")
        self._require_patches("patch_scores")
        xt = self._transform(self._check_x(X, fitting=False))
        dist = _patch_scorer(self._model(()))
        out = [np.asarray(dist(self.params_, self._embed(xt[i:i + PATCH_SCORE_CHUNK])))
               for i in range(0, len(xt), PATCH_SCORE_CHUNK)]
        return np.concatenate(out).reshape(len(xt), *self.patch_grid())

    def _table_defaults(self) -> TableDefaults | None:
        """``TABLE_DEFAULTS`` of this method when it trains on a table's raw features (after the input is known)."""
        table = not self._patches() and len(getattr(self, "input_shape_", (0, 0))) == 1
        return TABLE_DEFAULTS.get(self.method) if table else None

    def _hp(self) -> dict[str, np.ndarray]:
        self._check_settings()
        obj, _ = self._objective()
        defaults = self._table_defaults()
        lr = self.lr if self.lr is not None else (defaults.lr if defaults else DEFAULT_LR)
        hp = dict(defaults.hp) if defaults else {}
        if defaults and defaults.nu1_per_contamination and self.contamination is not None:
            k, c = defaults.nu1_per_contamination, float(self.contamination)
            hp["nu1"] = min(1.0, max(float(obj.DEFAULT_HP["nu1"]), k * c))
        return user_hyperparams(obj, lr, self.weight_decay, {**hp, **(self.hyperparams or {})})

    def _epochs(self, n_rows: int, batch: int) -> int:
        """``epochs``, or for ``"auto"`` the method's step budget over this many rows (``TABLE_DEFAULTS``)."""
        if self.epochs != "auto":
            return int(self.epochs)
        defaults = self._table_defaults()
        if defaults is None:
            return DEFAULT_EPOCHS
        per_epoch = math.ceil(n_rows / batch)
        return int(np.clip(round(defaults.steps / per_epoch), defaults.min_epochs, defaults.max_epochs))

    # ---- the estimator API -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> "DeepDetector":
        """Train on ``X``; ``y`` (0/1, optional) marks labelled anomalies with 1.

        0 marks a normal or an unlabelled sample (PyOD's semi-supervised convention): every method treats the
        0 rows as the (mostly) normal data it describes; the methods that use labelled anomalies (imdad, deep_sad,
        dad, mdad, ...) need at least one 1, the one-class ones (deep_svdd, ...) ignore the 1 rows.
        Afterwards, as PyOD's detectors: ``decision_scores_`` (the training rows' scores), ``threshold_`` and
        ``labels_`` (``decision_scores_ > threshold_``), chosen by ``threshold`` / ``contamination``.
        """
        _fit_runs([self], X, y, FIT_STRATEGY)
        return self

    def fit_many(self, X: Any, y: Any = None, grid: dict[str, list[float]] | None = None,
                 seeds: tuple[int, ...] | None = None, strategy: str = FIT_STRATEGY) -> list["DeepDetector"]:
        """Train every (grid point x seed) in one call; one fitted detector per run, seeds outer, grid inner.

        ``grid`` varies per-run numbers only: ``lr``, ``weight_decay`` and the objective's hyperparameters
        (e.g. ``{"lr": [1e-3, 1e-2], "nu1": [0.05, 0.1]}``); ``seeds`` the ``random_state`` values (default:
        this detector's).
        ``strategy="loop"`` (default) trains every run with the compiled program of a single ``fit``, so run k
        **is** ``clone(det).set_params(...).fit(X, y)`` with its values, bit for bit. ``"vmap"`` (or ``"auto"``)
        trains them side by side in one program over the run axis, for many runs on an accelerator (on a 2-core
        CPU, five runs took 1.24x the default's time: ``benchmarks/results_estimator_compile.md``); XLA compiles a
        sweep of one run differently from a sweep of several, and training amplifies the rounding difference:
        the same model up to float rounding, not the same numbers.
        """
        from sklearn.base import clone

        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        obj, _ = self._objective()
        grid = dict(grid or {})
        bad = set(grid) - {"lr", "weight_decay", *obj.HYPERPARAMS}
        if bad:
            raise ValueError(f"fit_many varies per-run values only; {sorted(bad)} are not among lr, weight_decay, "
                             f"{', '.join(obj.HYPERPARAMS)} (architecture or epochs: fit separately)")
        names = list(grid)
        points = [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))] or [{}]
        seeds = tuple(seeds) if seeds is not None else (self.random_state,)
        runs = []
        for seed in seeds:
            for pt in points:
                det = clone(self)
                hyper = {**(self.hyperparams or {}), **{k: v for k, v in pt.items() if k in obj.HYPERPARAMS}}
                det.set_params(random_state=int(seed), hyperparams=hyper or None,
                               **{k: v for k, v in pt.items() if k in ("lr", "weight_decay")})
                runs.append(det)
        _fit_runs(runs, X, y, strategy)
        return runs

    # ---- thresholds (PyOD's conventions) ------------------------------------------------------------------
    def _threshold_rule(self) -> str:
        if self.threshold != "auto":
            return self.threshold
        if self.contamination is not None:
            return "contamination"
        return "sphere" if get_objective(self.method).SCORE_BOUNDARY else "gaussian"

    def _set_threshold(self, normals: np.ndarray) -> None:
        """``threshold_`` by this detector's rule from its training scores, and ``labels_`` from it: the one
        place that decides what ``predict`` flags."""
        scores, rule = self.decision_scores_, self._threshold_rule()
        if rule == "sphere":
            thr = 0.0
        elif rule == "contamination":  # PyOD's rule: the top share of the training scores
            thr = float(np.percentile(scores, 100.0 * (1.0 - (self.contamination or DEFAULT_CONTAMINATION))))
        else:  # mean + 3 std of the training normals' scores: adapts to the data, needs no anomaly count
            thr = gaussian_threshold(scores, scores[normals]).threshold if len(normals) > 1 else float(scores.max())
        self.threshold_, self.threshold_rule_ = float(thr), rule
        self.labels_ = (scores > self.threshold_).astype(np.int64)

    def _prepare_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, RunData, int]:
        """Validate the settings, X and y, fit the scaler on the normals, and build one run's data."""
        self._check_settings()
        obj, _ = self._objective()
        x = self._check_x(X, fitting=True)
        self.__dict__.pop("table_widths_", None)  # a refit of a loaded first-format detector takes today's widths
        if self._patches():
            return self._prepare_patches(x, y, obj)
        normals, anomalies = label_pools(y, len(x), obj)
        if not self._is_image(x):
            scaler = StandardScaler().fit(x[normals])  # the training normals only, as in the paper's protocol
            self.scaler_mean_, self.scaler_scale_ = scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)
        self._check_arch(x)
        self.input_shape_ = tuple(x.shape[1:])
        with np.errstate(over="ignore", invalid="ignore"):  # reported just below, as one error
            xt = self._transform(x)
        if not np.isfinite(xt).all():
            # finite float32 features can still overflow once centred on the normals' mean
            raise ValueError("X overflows float32 once standardised on the normal samples (a value far outside "
                             "the normals' spread, or near float32's limit 3.4e38); rescale the features first")
        return x, xt, single_run(xt, normals, anomalies), self.batch_size or (150 if self._is_image(x) else 50)

    def _prepare_patches(self, x: np.ndarray, y: Any, obj: Any) -> tuple[np.ndarray, np.ndarray, RunData, int]:
        """Feature patching: the images embedded once by the frozen backbone are the run's data (N, P, D)."""
        normals, anomalies = label_pools(y, len(x), obj, what="images")
        self.input_shape_ = tuple(x.shape[1:])
        self.backbone_params_ = self._backbone_variables(self.input_shape_)
        self._check_grid(self.input_shape_)
        emb = self._embed(self._transform(x))
        return x, emb, single_run(emb, normals, anomalies), self.batch_size or PATCH_BATCH_SIZE

    def _store(self, res: Any, r: int) -> None:
        self.params_ = jax.tree.map(lambda a: np.asarray(a[r]), res.state.params)
        self.obj_state_ = jax.tree.map(lambda a: np.asarray(a[r]), res.state.obj_state)
        self.diverged_ = bool(res.diverged[r])
        self.history_ = {k: np.asarray(v)[:, r] for k, v in res.history.items()}
        self._set_geometry()

    def _set_geometry(self) -> None:
        obj, opts = self._objective()
        geom = obj.geometry(self.params_, self.obj_state_, opts) if obj.geometry is not None else {}
        head = self.params_["params"].get("head") if "params" in self.params_ else None
        self.center_ = np.asarray(head["w"]) / 2.0 if head is not None and "w" in head else None
        r2 = geom.get("radius2")
        self.radius_ = float(np.sqrt(max(float(r2), 0.0))) if r2 is not None else None
        m2 = geom.get("margin2")
        self.margin_ = float(np.sqrt(max(float(m2), 0.0))) if m2 is not None else None

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly scores, higher = more anomalous (> 0 outside the model's own boundary for sphere methods)."""
        check_is_fitted(self, "params_")
        return self._scores(self._transform(self._check_x(X, fitting=False)))

    def _scores(self, xt: np.ndarray, embedded: bool = False) -> np.ndarray:
        """Scores of rows already transformed (``_transform``; with ``features="patches"`` and ``embedded``, of
        their patch embeddings), a block at a time with a compiled scorer."""
        obj, opts = self._objective()
        if self._patches():  # embedded and scored a block at a time, both programs compiled once (cached)
            score = _scorer(self.method, self._model(()), opts)
            embed = (lambda e: e) if embedded else self._embed
            return np.concatenate([np.asarray(score(self.params_, self.obj_state_,
                                                    embed(xt[i:i + PATCH_SCORE_CHUNK])))
                                   for i in range(0, len(xt), PATCH_SCORE_CHUNK)])
        score = _scorer(self.method, self._model(model_input_shape(self.input_shape_)), opts)
        return np.concatenate([np.asarray(score(self.params_, self.obj_state_, xt[i:i + 2048]))
                               for i in range(0, len(xt), 2048)])

    def predict(self, X: Any) -> np.ndarray:
        """1 for anomalies (score > ``threshold_``), 0 for normals (PyOD's convention); on the training rows
        this is ``labels_``."""
        return (self.decision_function(X) > self._threshold()).astype(np.int64)

    def _threshold(self) -> float:
        check_is_fitted(self, "params_")
        if hasattr(self, "threshold_"):
            return self.threshold_
        if get_objective(self.method).SCORE_BOUNDARY:  # a folder saved before thresholds were stored
            return 0.0
        raise ValueError("this detector was saved without a threshold (an older version); fit it again")

    def _require_training_scores(self) -> None:
        check_is_fitted(self, "params_")
        if not hasattr(self, "decision_scores_"):  # a folder saved before the training scores were stored
            raise ValueError("this detector was saved without its training scores (an older version), which "
                             "predict_proba and predict_confidence scale by; fit it again")

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X, y)`` and the training rows' labels (``labels_``: 1 anomaly, 0 normal)."""
        return self.fit(X, y).labels_

    def predict_proba(self, X: Any, method: str = "linear", return_confidence: bool = False) -> Any:
        """(N, 2) probabilities of [normal, anomaly] from the scores, as PyOD's ``predict_proba``: ``"linear"``
        min-max scales by the training scores (clipped to [0, 1]); ``"unify"`` is Kriegel et al.'s Gaussian
        scaling, ``erf((s - mean) / (std sqrt 2))`` over the training scores, clipped. Rows sum to 1.
        ``return_confidence`` adds ``predict_confidence(X)``."""
        self._require_training_scores()
        if method not in PROBA_METHODS:
            raise ValueError(f"method must be one of {PROBA_METHODS}, got {method!r}")
        test, train = self.decision_function(X), self.decision_scores_
        if method == "linear":
            span = float(train.max() - train.min())
            p = (test - train.min()) / span if span > 0 else (test > train.max()).astype(float)
        else:
            std = float(train.std())
            p = special.erf((test - train.mean()) / (std * np.sqrt(2))) if std > 0 else \
                (test > train.mean()).astype(float)
        p = np.clip(p, 0.0, 1.0)
        probs = np.stack([1.0 - p, p], axis=1)
        return (probs, self.predict_confidence(X)) if return_confidence else probs

    def predict_confidence(self, X: Any) -> np.ndarray:
        """How sure each ``predict`` is, in [0, 1] (PyOD's ExCeeD, Perini et al. 2020): the probability that the
        label would stay the same given the training scores, with the share flagged in training
        (``labels_.mean()``) as the contamination."""
        self._require_training_scores()
        test, train = self.decision_function(X), np.sort(self.decision_scores_)
        n = len(train)
        below = np.searchsorted(train, test, side="right")  # training scores <= each test score
        posterior = (1.0 + below) / (2.0 + n)
        flagged = int(n * float(self.labels_.mean()))
        conf = 1.0 - stats.binom.cdf(n - flagged, n, posterior)
        pred = test > self._threshold()
        return np.where(pred, conf, 1.0 - conf)

    # ---- explanations ------------------------------------------------------------------------------------
    def _set_explain_baseline(self, xt_normals: np.ndarray) -> None:
        # The training normals' mean (the origin of the standardised table) is the typical normal row; where it
        # falls outside the boundary (a ring-shaped normal class), the most normal training row stands in.
        base = np.zeros((1, xt_normals.shape[1]), np.float32)
        if self._scores(base)[0] > self.threshold_:
            base = xt_normals[np.argmin(self._scores(xt_normals))][None]
        self.explain_baseline_ = (base[0] * self.scaler_scale_ + self.scaler_mean_).astype(np.float32)

    def explain(self, X: Any, steps: int = DEFAULT_STEPS) -> np.ndarray:
        """Per-row, per-feature attributions (N, n_features) of ``decision_function``: integrated gradients
        (``imdad_jax.interpret.attribution``) from ``explain_baseline_``, a typical normal row inside the
        boundary (the training normals' mean). A row's attributions add up to how far its score rises above
        the baseline's (``steps`` trapezoids of the path integral); the largest ones name the features that
        make it anomalous. Tables only: for images, Grad-CAM (``imdad_jax.interpret.gradcam``) or, with
        ``features="patches"``, ``patch_scores``."""
        check_is_fitted(self, "params_")
        if self._patches() or len(self.input_shape_) != 1:
            raise ValueError("explain attributes a table's scores to its columns; for images use "
                             "imdad_jax.interpret.gradcam (a CNN's evidence map) or patch_scores (features='patches')")
        if not hasattr(self, "explain_baseline_"):
            raise ValueError("this detector was saved without an explanation baseline (an older version); fit it "
                             "again")
        xt = self._transform(self._check_x(X, fitting=False))
        base = self._transform(self.explain_baseline_[None].astype(np.float32))
        obj, opts = self._objective()
        score = _attribution_score(self.method, self._model(model_input_shape(self.input_shape_)), opts)
        return integrated_gradients(score, (self.params_, self.obj_state_), xt, base, steps)

    def score_samples(self, X: Any) -> np.ndarray:
        """scikit-learn's convention: higher = more normal (the negated ``decision_function``)."""
        return -self.decision_function(X)

    # ---- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to directory ``path``: ``detector.json`` (the estimator's parameters, input
        shape, scaler, threshold), ``params.msgpack`` (the weights and the objective's state,
        ``flax.serialization``) and ``train_scores.npy`` (``decision_scores_``).

        With ``features="patches"`` the frozen backbone's variables go into ``params.msgpack`` too (key
        ``"backbone"``), so ``load`` needs no backbone file and gives the same scores; a ``backbone_params`` path
        stays in ``detector.json`` as a record only. Only the default ``PatchBackbone`` (``backbone=None``) can
        be saved this way: a custom backbone module is code, not data, and is refused with a ``ValueError``
        (pickle such a detector instead)."""
        check_is_fitted(self, "params_")
        params = self.get_params()
        state = {"params": self.params_, "obj_state": self.obj_state_}
        if self._patches():
            if self.backbone is not None:
                raise ValueError(
                    f"save writes feature-patching detectors with the default PatchBackbone only (backbone=None, "
                    f"its widths in backbone_features); a custom backbone module ({type(self.backbone).__name__}) "
                    "is code that detector.json cannot hold. Keep this detector with pickle (pickle.dump(det, f); "
                    "the module's class must be importable where it is loaded), or refit with a PatchBackbone")
            state["backbone"] = self.backbone_params_
            if isinstance(params["backbone_params"], Path):
                params["backbone_params"] = str(params["backbone_params"])
            elif params["backbone_params"] is not None and not isinstance(params["backbone_params"], str):
                params["backbone_params"] = None  # the tree itself is the msgpack's "backbone"
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / PARAMS_FILE).write_bytes(serialization.to_bytes(state))
        meta = {"class": type(self).__name__, "params": params, "input_shape": list(self.input_shape_),
                "scaler_mean": getattr(self, "scaler_mean_", np.zeros(0)).tolist(),
                "scaler_scale": getattr(self, "scaler_scale_", np.zeros(0)).tolist(), "format": SAVE_FORMAT,
                "feature_names_in": getattr(self, "feature_names_in_", np.zeros(0)).tolist()}
        if hasattr(self, "explain_baseline_"):
            meta["explain_baseline"] = self.explain_baseline_.tolist()
        if hasattr(self, "threshold_"):
            meta["threshold"] = {"value": self.threshold_, "rule": self.threshold_rule_}
            np.save(path / SCORES_FILE, np.asarray(self.decision_scores_, np.float32))
        if self._patches() and params["backbone_params"] is None and self.backbone_params is not None:
            meta["backbone_params_in"] = PARAMS_FILE  # load puts the stored tree back into backbone_params
        (path / "detector.json").write_text(json.dumps(meta, indent=1, default=list) + "\n")
        (path / LEGACY_PARAMS_FILE).unlink(missing_ok=True)  # a format-1 save in the same folder is superseded
        return path

    @classmethod
    def load(cls, path: str | Path) -> "DeepDetector":
        """A detector written by ``save``: the same scores as before saving. Folders written by versions that
        stored ``params.npz`` (format 1) load too."""
        path = Path(path)
        params_file = path / PARAMS_FILE if (path / PARAMS_FILE).is_file() else path / LEGACY_PARAMS_FILE
        if not (path / "detector.json").is_file() or not params_file.is_file():
            raise FileNotFoundError(f"{path} holds no saved detector (detector.json and {PARAMS_FILE}); "
                                    "write one with det.save(path)")
        try:
            meta = json.loads((path / "detector.json").read_text())
            params, input_shape = dict(meta["params"]), tuple(meta["input_shape"])
            for k in ("dense_features", "conv_features", "backbone_features", "patch_layers"):
                if params.get(k) is not None:
                    params[k] = tuple(params[k])
            det = cls(**params)  # TypeError: a parameter this version does not know
        except (ValueError, KeyError, TypeError) as e:  # a cut file is a JSONDecodeError, a ValueError
            raise ValueError(f"{path}/detector.json is damaged or was not written by save ({type(e).__name__}: "
                             f"{e}); save the detector again") from None
        det.input_shape_ = input_shape
        if meta.get("format", 1) < 3 and det.dense_features is None:
            det.table_widths_ = LEGACY_TABLE_WIDTHS  # saved before a table's widths followed its features
        if len(det.input_shape_) == 1:
            det.n_features_in_ = int(det.input_shape_[0])
        if meta.get("feature_names_in"):
            det.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        if meta["scaler_mean"]:
            det.scaler_mean_ = np.asarray(meta["scaler_mean"], np.float32)
            det.scaler_scale_ = np.asarray(meta["scaler_scale"], np.float32)
        if det._patches():
            if params_file.name != PARAMS_FILE:
                raise ValueError(f"{path} holds a feature-patching detector without {PARAMS_FILE}; save it again")
            det._check_settings()
            backbone = det._backbone()
            sample = np.zeros((1, *model_input_shape(input_shape)), np.float32)
            bb = jax.eval_shape(lambda: backbone.init(jax.random.PRNGKey(0), sample))
            det.backbone_params_ = bb  # shapes only, for the head's template
            state = _read_state(params_file, {**det._template(), "backbone": bb})
            det.backbone_params_ = state["backbone"]
            if meta.get("backbone_params_in"):
                det.backbone_params = jax.tree.map(np.array, state["backbone"])  # a copy: params are not mutated
        else:
            reader = _read_state if params_file.name == PARAMS_FILE else _read_legacy_state
            state = reader(params_file, det._template())
        det.params_, det.obj_state_ = state["params"], state["obj_state"]
        det.diverged_ = False
        det._set_geometry()
        if meta.get("explain_baseline"):
            det.explain_baseline_ = np.asarray(meta["explain_baseline"], np.float32)
        if meta.get("threshold") and (path / SCORES_FILE).is_file():  # folders saved before thresholds: predict
            det.threshold_, det.threshold_rule_ = float(meta["threshold"]["value"]), meta["threshold"]["rule"]
            det.decision_scores_ = np.load(path / SCORES_FILE)
            det.labels_ = (det.decision_scores_ > det.threshold_).astype(np.int64)
        return det

    def _template(self) -> dict[str, Any]:
        """The {"params", "obj_state"} trees of this detector's model, from shapes alone (nothing is computed)."""
        obj, opts = self._objective()
        model = self._model(model_input_shape(self.input_shape_))
        if self._patches():  # the head sees the embeddings (1, P, D), shaped by the backbone
            images = jax.ShapeDtypeStruct((1, *model_input_shape(self.input_shape_)), np.float32)
            emb = jax.eval_shape(lambda p, x: patch_embeddings(self._backbone(), p, x, self._layers(),
                                                               int(self.patch_size)),
                                 self.backbone_params_, images)
            sample = np.zeros(emb.shape, emb.dtype)
        else:
            sample = np.zeros((1, *model_input_shape(self.input_shape_)), np.float32)
        init = getattr(model, "initialize", None)  # a model whose init runs a method of its own (flax's method=)
        params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), sample, **({"method": init} if init else {})))
        return {"params": params, "obj_state": jax.eval_shape(lambda: obj.init_obj_state(opts))}


def _fit_runs(runs: list[DeepDetector], X: Any, y: Any, strategy: str) -> None:
    """Train ``runs`` (clones of one detector that differ in per-run numbers only) on ``X``, ``y`` in one call of
    the engine; store each run's weights, sphere, training scores and threshold on its own detector."""
    enable_compile_cache()  # the next process's first fit of the same shapes skips XLA (IMDAD_NO_COMPILE_CACHE)
    first = runs[0]  # prepares the data (validation, scaler, embedding) for all: fit_many leaves self as it was
    _, xt, data, batch = first._prepare_fit(X, y)
    for det in runs[1:]:
        for attr in FITTED_INPUT:
            if hasattr(first, attr):
                setattr(det, attr, getattr(first, attr))
    hps = [det._hp() for det in runs]  # after the input is known: a table's defaults differ from images'
    hp = {k: np.concatenate([h[k] for h in hps]) for k in hps[0]}
    normals = data.normal_pool[0, :data.n_valid[0]]
    if len(runs) > 1:
        data = single_run(data.x, normals, data.anomaly_pool[0, :data.m_valid[0]], n_runs=len(runs))
    keys = np.stack([np.asarray(jax.random.PRNGKey(det.random_state)) for det in runs])
    obj, opts = first._objective()  # after _prepare_fit: the options' defaults follow the data's kind
    epochs = first._epochs(len(xt), batch)
    res = fit(first._model(xt.shape[1:]), obj, opts, data, hp, keys, epochs=epochs, batch_size=batch,
              anomaly_share=first.anomaly_share, strategy=strategy, autotune_log=None)
    for r, det in enumerate(runs):
        det.epochs_, det.lr_ = epochs, float(hp["lr"][r])
        det._store(res, r)
        det.decision_scores_ = det._scores(xt, embedded=True)  # xt: the transformed rows (or the embeddings)
        det._set_threshold(normals)
        if not det._patches() and len(det.input_shape_) == 1:
            det._set_explain_baseline(xt[normals])


# scikit-learn's generic checks give these a multiclass target (0, 1, 2, ...); y here marks labelled anomalies
# with 1 and normals with 0, so fit refuses any other value with a ValueError naming them. Each of these checks'
# own property (validation, sample-order invariance, no parameter mutation, ...) is tested on the same estimator
# with a 0/1 target in tests/test_estimator.py.
_MULTICLASS_Y = ("check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
                 "check_estimators_fit_returns_self", "check_readonly_memmap_input",
                 "check_n_features_in_after_fitting", "check_positive_only_tag_during_fit",
                 "check_estimators_dtypes", "check_dtype_object", "check_f_contiguous_array_estimator",
                 "check_methods_sample_order_invariance", "check_methods_subset_invariance", "check_fit2d_1feature",
                 "check_dict_unchanged", "check_fit2d_predict1d")


def sklearn_expected_failed_checks(estimator: Any = None) -> dict[str, str]:
    """The scikit-learn estimator checks a detector cannot meet, with the reason (for ``check_estimator(det,
    expected_failed_checks=...)`` and ``parametrize_with_checks``)."""
    return {name: "passes a multiclass y; y must be 0 (normal) / 1 (labelled anomaly)" for name in _MULTICLASS_Y}


SAVE_FORMAT = 3  # 3: dense_features=None on a table means TABLE_DEFAULTS' widths (before: FC3's (64, 32, 16))
LEGACY_TABLE_WIDTHS = (64, 32, 16)
PARAMS_FILE = "params.msgpack"
SCORES_FILE = "train_scores.npy"  # decision_scores_: predict_proba and predict_confidence scale by them
LEGACY_PARAMS_FILE = "params.npz"  # format 1: the leaves in tree order, positional


def _check_shapes(path: Path, template: Any, leaves: list[np.ndarray]) -> None:
    # arrays of the right count but other shapes (the weights of another detector) would fail only inside JAX later
    want = jax.tree.leaves(template)
    bad = [i for i, (t, a) in enumerate(zip(want, leaves)) if tuple(t.shape) != np.shape(a)]
    if bad:
        raise ValueError(f"{path}: array {bad[0]} has shape {np.shape(leaves[bad[0]])}, the model in detector.json "
                         f"needs {tuple(want[bad[0]].shape)}; {path.name} and detector.json come from different "
                         "detectors, save it again")


def _read_state(path: Path, template: dict[str, Any]) -> dict[str, Any]:
    """{"params", "obj_state"[, "backbone"]} from a ``flax.serialization`` file, checked against the trees."""
    try:
        raw = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises its own types (ExtraData, FormatError, ValueError...) for a cut file
        raise ValueError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); save the detector again") \
            from None
    want = serialization.to_state_dict(template)
    flat_want = traverse_util.flatten_dict(want, sep="/")
    flat_got = traverse_util.flatten_dict(raw, sep="/") if isinstance(raw, dict) else {}
    if set(flat_want) != set(flat_got):
        missing, extra = sorted(set(flat_want) - set(flat_got)), sorted(set(flat_got) - set(flat_want))
        raise ValueError(f"{path} holds other arrays than the model in detector.json needs (missing {missing[:4]}, "
                         f"unexpected {extra[:4]}): it was saved by a different version or method")
    keys = sorted(flat_want)
    _check_shapes(path, [flat_want[k] for k in keys], [flat_got[k] for k in keys])
    state = serialization.from_state_dict(template, raw)
    return {k: jax.tree.map(np.asarray, state[k]) for k in template}


def _read_legacy_state(path: Path, template: dict[str, Any]) -> dict[str, Any]:
    """{"params", "obj_state"} from a format-1 ``params.npz`` (the leaves in tree order)."""
    template = (template["params"], template["obj_state"])
    try:
        with np.load(path) as z:
            leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
    # what numpy's zip reader raises for a cut or damaged archive, or a lone array in its place (TypeError)
    except (OSError, EOFError, ValueError, KeyError, TypeError, NotImplementedError, RuntimeError,
            zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); save the detector again") \
            from None
    treedef = jax.tree.structure(template)
    if treedef.num_leaves != len(leaves):
        raise ValueError(f"{path} holds {len(leaves)} arrays, the model needs {treedef.num_leaves}: it was saved "
                         "by a different version or method")
    _check_shapes(path, template, leaves)
    params, obj_state = jax.tree.unflatten(treedef, leaves)
    return {"params": params, "obj_state": obj_state}


@functools.lru_cache(maxsize=64)
def _scorer(method: str, model: Any, opts: Any):
    # One compiled scorer per (method, model, options): flax modules hash by their fields, so repeated
    # decision_function calls (and detectors of the same shape) reuse it instead of tracing anew.
    obj = get_objective(method)
    return jax.jit(lambda p, s, x: obj.score(p, s, model, x, opts))


@functools.lru_cache(maxsize=64)
def _attribution_score(method: str, model: Any, opts: Any):
    # the score as a function of (params, obj_state) and rows, one object per (method, model, options): the
    # attribution program compiles once for every detector of that shape
    obj = get_objective(method)
    return lambda p, x: obj.score(p[0], p[1], model, x, opts)


@functools.lru_cache(maxsize=16)
def _patch_scorer(model: Any):
    # the (N, P) map of a feature-patching model's patch distances, compiled once per model
    return jax.jit(lambda p, e: model.apply(p, e, method="patch_distances"))


class IMDAD(DeepDetector):
    """IMD-AD (the default method) with the estimator API of ``DeepDetector``."""

    def __init__(self, arch: str = "auto", dense_features: tuple[int, ...] | None = None,
                 conv_features: tuple[int, ...] | None = None, epochs: int | str = "auto",
                 batch_size: int | None = None,
                 lr: float | None = None, weight_decay: float = 1e-6, anomaly_share: float | None = None,
                 hyperparams: dict[str, float] | None = None, random_state: int = 0,
                 encoder_options: dict[str, Any] | None = None, features: str = "raw", backbone: Any = None,
                 backbone_features: tuple[int, ...] = DEFAULT_BACKBONE_FEATURES, backbone_params: Any = None,
                 backbone_seed: int = 0, patch_layers: tuple[int, ...] = DEFAULT_LAYERS, patch_size: int = 3,
                 patch_reduce: str = "max", options: dict[str, Any] | None = None,
                 contamination: float | None = None, threshold: str = "auto"):
        super().__init__("imdad", arch, dense_features, conv_features, epochs, batch_size, lr, weight_decay,
                         anomaly_share, hyperparams, random_state, encoder_options, features=features,
                         backbone=backbone, backbone_features=backbone_features, backbone_params=backbone_params,
                         backbone_seed=backbone_seed, patch_layers=patch_layers, patch_size=patch_size,
                         patch_reduce=patch_reduce, options=options, contamination=contamination,
                         threshold=threshold)


__all__ = ["DeepDetector", "IMDAD", "model_input_shape", "sklearn_expected_failed_checks"]
