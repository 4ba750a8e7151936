"""One typed config for an experiment; defaults are the paper's (IV-A3) where it gives them.

Where the paper is silent the default is ours, and ``docs/method.md`` says why.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from imdad_jax.data.preprocess import PREPROCESSING
from imdad_jax.models import ARCHITECTURES, MARGIN_PARAMS
from imdad_jax.models.layers import CONV_IMPLS
from imdad_jax.objectives import REGISTRY
from imdad_jax.objectives.imdad import CENTER_CONSTRAINTS
from imdad_jax.train.engine import EPOCH_MODES, STRATEGIES

IMAGE_DATASETS = ("mnist", "fmnist", "cifar10")
TABULAR_DATASETS = ("bc", "card", "on", "moons", "spiral")  # k-fold CV, FC3 (paper Table I)
DATASETS = IMAGE_DATASETS + TABULAR_DATASETS
# The paper's settings per kind of data (IV-A3): FC3 and batch 50 for tabular and synthetic data.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    name: {"arch": "fc3", "dense_features": (64, 32, 16), "batch_size": 50} for name in TABULAR_DATASETS}
# CIFAR-10: CNN3+FC3 (Table I); the widths are ours, as for CNN2 (docs/method.md).
DATASET_DEFAULTS["cifar10"] = {"arch": "cnn3", "conv_features": (32, 64, 128)}
DEEP_METHODS = tuple(REGISTRY)
# The shallow baselines (imdad_jax.shallow), named here so the config validates without importing them.
SHALLOW_METHODS = ("iforest", "kde", "ocsvm", "svdd", "sslm")
METHODS = DEEP_METHODS + SHALLOW_METHODS
# Per-run hyperparameters of the objectives; None in a config means "the method's own default"
# (objective.DEFAULT_HP), since e.g. nu means a margin weight in IMD-AD and an outlier fraction in
# Deep SVDD soft-boundary.
OBJECTIVE_HP = ("nu", "nu1", "nu2", "dual_lr", "eta", "mu1", "mu2", "warmup_epochs", "drocc_radius", "drocc_gamma",
                "drocc_lambda", "drocc_step_size")


FLOAT32_MAX = 3.4028234663852886e38  # per-run values train as float32: anything larger becomes inf


def _finite32(v: float) -> bool:
    return math.isfinite(v) and abs(v) <= FLOAT32_MAX


def _past32(v: float) -> str:
    return " (beyond float32's range, 3.4e38, in which training runs)" if math.isfinite(v) and not _finite32(v) else ""


class ConfigError(ValueError):
    """A setting is out of range; the message names it and says what to change."""


@dataclass
class ExperimentConfig:
    dataset: str = "fmnist"
    classes: tuple[int, ...] = tuple(range(10))
    seeds: tuple[int, ...] = (0,)
    method: str = "imdad"
    anomaly_fraction: float = 0.1
    # the labelled anomalies' share of each batch: None = their share of the training set (the
    # paper's stratified batches); 0.5 = balanced batches (DeepOD's weighted sampler for Deep SAD)
    anomaly_share: float | None = None
    n_folds: int = 5  # tabular and synthetic data (stratified k-fold CV)
    # images: input preprocessing on top of [0, 1] pixels, fit on each run's training normals
    # (imdad_jax.data.preprocess: unit, standardize, gcn_minmax, zca); tabular data is always standardised
    preprocess: str = "unit"
    # model (paper Table I names only "CNN2+FC3"; the widths are ours)
    arch: str = "cnn2"
    conv_features: tuple[int, ...] = (16, 32)
    dense_features: tuple[int, ...] = (128, 64, 32)
    use_bias: bool = False
    # optional encoder blocks (models.encoders), all bias-free and off by default (the paper's net)
    layer_norm: bool = False
    residual: bool = False
    se_attention: bool = False
    projection: int = 0  # features of a final bias-free dense projection; 0 = none
    batch_norm: bool = False  # affine-free BatchNorm, per-run batch statistics (the reference LeNets')
    dropout: float = 0.0  # dropout rate after every hidden activation / pooling; per-run RNG; 0 = off
    # how convolutions are computed (models.layers): auto = im2col for 1-2 input channels on CPU, XLA's otherwise
    conv_impl: str = "auto"
    # optimisation (paper: Adam, lr 1e-4, MultiStepLR, 200 epochs, batch 150 for images)
    epochs: int = 200
    batch_size: int = 150
    lr: float = 1e-4
    weight_decay: float = 1e-6
    milestone_fractions: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    # objective hyperparameters (None: the method's default, objective.DEFAULT_HP; IMD-AD's are
    # nu 0.5, nu1 0.1, nu2 0.1, dual_lr 0.1)
    nu: float | None = None
    nu1: float | None = None
    nu2: float | None = None
    dual_lr: float | None = None
    eta: float | None = None  # Deep SAD
    mu1: float | None = None  # hybrid Deep SVDD
    mu2: float | None = None
    warmup_epochs: float | None = None  # soft-boundary radius / DROCC adversarial term start
    drocc_radius: float | None = None  # per sqrt(input dimension)
    drocc_gamma: float | None = None
    drocc_lambda: float | None = None
    drocc_step_size: float | None = None
    # static objective options
    margin_param: str = "softplus"
    center_constraint: str = "projection"
    kappa: float = 10.0
    drocc_ascent_steps: int = 5
    pretrain_epochs: int = 0  # autoencoder pretraining of the encoder (any deep method but the autoencoder)
    # hyperparameters chosen per run on a validation split of its training data (imdad_jax.tuning):
    # ((name, (values...)), ...) over lr, weight_decay and the method's HYPERPARAMS; () = no tuning
    tune: tuple[tuple[str, tuple[float, ...]], ...] = ()
    val_fraction: float = 0.25
    # shallow baselines
    shallow_max_train: int = 1000
    shallow_pca_dims: int | None = 32
    # engine
    # runs per program: "auto" = as many as fit in the accelerator's memory (measured by XLA's memory
    # analysis; one program on a CPU), an int = at most that many, None = all in one program
    max_runs: int | str | None = "auto"
    strategy: str = "auto"  # train.runners: auto, vmap, vmap_fwd, map, chunked, loop
    epoch_mode: str = "auto"
    chunk_runs: int = 8  # runs per vmapped group of the "chunked" strategy
    unroll: int = 1  # steps per iteration of the scanned epoch
    # feature patching (FPSVDD, Huang et al. 2024; imdad_jax.feature_patching, docs/method.md): a bias-free MLP of
    # dense_features on every patch embedding of a frozen backbone; image datasets and hypersphere methods only
    feature_patching: bool = False
    backbone_params: str | None = None  # .npz / Orbax folder of the backbone's weights; None: random (mechanics only)
    backbone_features: tuple[int, ...] = (16, 32, 64)  # the backbone's stage widths (PatchBackbone)
    backbone_seed: int = 0  # the random backbone's seed (no backbone_params)
    patch_layers: tuple[int, ...] = (1, 2)  # the stages whose feature maps are patched (0 = the first)
    patch_size: int = 3  # neighbourhood averaged around every patch (odd)
    patch_reduce: str = "max"  # an image's signed distance from its patches': max or mean
    preset: str = "paper"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def milestones(self) -> tuple[int, ...]:
        """MultiStepLR milestones in epochs, from the fractions of the schedule."""
        return tuple(sorted({max(1, int(round(f * self.epochs))) for f in self.milestone_fractions
                             if round(f * self.epochs) < self.epochs}))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones_epochs"] = list(self.milestones)
        return d

    def validate(self) -> "ExperimentConfig":
        """Raise ``ConfigError`` with the fix for the first bad setting; return self."""
        def bad(msg: str) -> None:
            raise ConfigError(msg)

        if self.method not in METHODS:
            bad(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)} or --method=all")
        if self.dataset not in DATASETS:
            bad(f"unknown dataset {self.dataset!r}; choose one of {DATASETS} (--dataset=fmnist)")
        if not self.classes:
            bad("no normal class given; pass --class=K or --all_classes")
        if self.preprocess not in PREPROCESSING:
            bad(f"unknown preprocess {self.preprocess!r}; choose one of {', '.join(PREPROCESSING)} (--preprocess=unit)")
        if self.preprocess != "unit" and self.dataset in TABULAR_DATASETS:
            bad(f"--preprocess={self.preprocess} is for image datasets; {self.dataset} is standardised on each run's "
                "training normals by its protocol: leave --preprocess at unit")
        if len(set(self.classes)) != len(self.classes):
            bad(f"classes must be distinct, got {self.classes}; name each normal class once")
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds:
            bad(f"seeds must be distinct and non-empty, got {self.seeds}")
        # numpy's and scikit-learn's seeding refuse anything else, deep inside a run
        if any(not 0 <= s < 2 ** 32 for s in self.seeds):
            bad(f"seeds must lie in 0..2**32-1, got {self.seeds}; pass e.g. --seeds=0,1,2")
        if self.n_folds < 2:
            bad(f"n_folds must be >= 2, got {self.n_folds}")
        if self.epochs < 1:
            bad(f"epochs must be >= 1, got {self.epochs}; pass e.g. --epochs=10")
        if self.batch_size < 2:
            bad(f"batch_size must be >= 2 (each batch needs a normal and an anomaly), got {self.batch_size}; "
                "pass e.g. --batch_size=150")
        for name in ("nu", "nu1", "nu2", "anomaly_fraction"):
            v = getattr(self, name)
            if v is not None and not 0 < v <= 1:
                bad(f"{name} must lie in (0, 1], got {v}; pass e.g. --{name}=0.1")
        if self.anomaly_share is not None and not 0 < self.anomaly_share < 1:
            bad(f"anomaly_share must lie in (0, 1), got {self.anomaly_share}; pass e.g. --anomaly_share=0.5 "
                "for balanced batches, or leave it unset for the training set's proportion")
        # an infinite learning rate or weight passes "> 0" and only shows as a diverged run
        for name in ("lr", "dual_lr", "kappa", "eta", "drocc_radius", "drocc_lambda", "drocc_step_size"):
            v = getattr(self, name)
            if v is not None and not (v > 0 and _finite32(v)):
                bad(f"{name} must be > 0 and finite, got {v}{_past32(v)}")
        for name in ("mu1", "mu2", "warmup_epochs"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and _finite32(v)):
                bad(f"{name} must be >= 0 and finite, got {v}{_past32(v)}")
        if self.tune:
            if self.method in SHALLOW_METHODS:
                bad(f"--tune is for the deep methods; {self.method} chooses its own grid on a validation split")
            from imdad_jax.tuning import check_grid
            try:
                check_grid(self.tune, ("lr", "weight_decay", *REGISTRY[self.method].HYPERPARAMS))
            except ValueError as e:
                bad(str(e))
            if not 0 < self.val_fraction < 1:
                bad(f"val_fraction must lie in (0, 1), got {self.val_fraction}; e.g. --val_fraction=0.25")
        if self.drocc_gamma is not None and not (self.drocc_gamma >= 1 and _finite32(self.drocc_gamma)):
            bad(f"drocc_gamma must be >= 1 and finite, got {self.drocc_gamma}{_past32(self.drocc_gamma)}")
        if self.drocc_ascent_steps < 1:
            bad(f"drocc_ascent_steps must be >= 1, got {self.drocc_ascent_steps}")
        if self.pretrain_epochs < 0:
            bad(f"pretrain_epochs must be >= 0, got {self.pretrain_epochs}")
        if self.shallow_max_train < 10:
            bad(f"shallow_max_train must be >= 10, got {self.shallow_max_train}")
        if self.shallow_pca_dims is not None and self.shallow_pca_dims < 1:
            bad(f"shallow_pca_dims must be >= 1 (PCA components for the shallow baselines on images), got "
                f"{self.shallow_pca_dims}")
        if not (self.weight_decay >= 0 and _finite32(self.weight_decay)):  # NaN passes "< 0"
            bad(f"weight_decay must be >= 0 and finite, got {self.weight_decay}{_past32(self.weight_decay)}")
        if not 0 < self.gamma <= 1:
            bad(f"gamma must lie in (0, 1], got {self.gamma}")
        if self.arch not in ARCHITECTURES:
            bad(f"unknown arch {self.arch!r}; choose one of {ARCHITECTURES}")
        if self.margin_param not in MARGIN_PARAMS:
            bad(f"margin_param must be one of {MARGIN_PARAMS}, got {self.margin_param!r}")
        if self.center_constraint not in CENTER_CONSTRAINTS:
            bad(f"center_constraint must be one of {CENTER_CONSTRAINTS}, got {self.center_constraint!r}")
        if not (self.max_runs is None or self.max_runs == "auto" or (isinstance(self.max_runs, int)
                                                                   and self.max_runs >= 1)):
            bad(f"max_runs must be 'auto', None or an integer >= 1, got {self.max_runs!r}; e.g. --max_runs=64")
        if self.strategy not in STRATEGIES:
            bad(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.epoch_mode not in EPOCH_MODES:
            bad(f"epoch_mode must be one of {EPOCH_MODES}, got {self.epoch_mode!r}")
        if self.chunk_runs < 1 or self.unroll < 1:
            bad(f"chunk_runs and unroll must be >= 1, got {self.chunk_runs} and {self.unroll}")
        if any(c < 1 for c in (*self.conv_features, *self.dense_features)):
            bad("layer widths must be >= 1")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            bad(f"dropout must be a rate in [0, 1) (0 = off), got {self.dropout!r}; e.g. --dropout=0.1")
        if self.conv_impl not in CONV_IMPLS:
            bad(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}; e.g. --conv_impl=xla")
        if self.projection < 0:
            bad(f"projection must be >= 0 (0 = no projection layer), got {self.projection}; e.g. --projection=32")
        if self.feature_patching:
            from imdad_jax.feature_patching import PATCH_METHODS
            from imdad_jax.models.patches import PATCH_REDUCTIONS

            if self.dataset not in IMAGE_DATASETS:
                bad(f"--feature_patching takes images ({', '.join(IMAGE_DATASETS)}), not {self.dataset}")
            if self.method not in PATCH_METHODS:
                bad(f"--feature_patching trains the hypersphere methods {', '.join(PATCH_METHODS)}, not {self.method}")
            if self.pretrain_epochs:
                bad("--feature_patching trains a head on frozen backbone features; drop --pretrain_epochs")
            if not self.backbone_features or any(c < 1 for c in self.backbone_features):
                bad(f"backbone_features must be stage widths >= 1, got {self.backbone_features}")
            n_stages = len(self.backbone_features)
            if (not self.patch_layers or list(self.patch_layers) != sorted(set(self.patch_layers))
                    or not all(0 <= i < n_stages for i in self.patch_layers)):
                bad(f"patch_layers must be increasing stage numbers in 0..{n_stages - 1}, got {self.patch_layers}; "
                    "e.g. --patch_layers=1,2")
            side = 32 if self.dataset == "cifar10" else 28
            if side < 2 ** (max(self.patch_layers) + 1):  # every stage halves the map
                bad(f"stage {max(self.patch_layers)} of the backbone has no cells left on {side}x{side} images; "
                    "choose earlier --patch_layers")
            if self.patch_size < 1 or self.patch_size % 2 == 0:
                bad(f"patch_size must be odd and >= 1, got {self.patch_size}; e.g. --patch_size=3")
            if self.patch_reduce not in PATCH_REDUCTIONS:
                bad(f"patch_reduce must be one of {PATCH_REDUCTIONS}, got {self.patch_reduce!r}")
            if not 0 <= self.backbone_seed < 2 ** 32:
                bad(f"backbone_seed must lie in 0..2**32-1, got {self.backbone_seed}")
            if self.backbone_params is not None:
                import os

                if not os.path.exists(self.backbone_params):
                    bad(f"no backbone parameters at {self.backbone_params}; give a .npz or an Orbax checkpoint folder")
        return self


# Named schedules. "paper" is the default; "quick" is what a 2-core CPU finishes in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {"epochs": 10},
    # For tests and smoke runs: a tiny network, two epochs.
    "tiny": {"epochs": 2, "conv_features": (4, 8), "dense_features": (16, 8), "batch_size": 32},
}


def make_config(preset: str = "paper", **overrides: Any) -> ExperimentConfig:
    """The config of a named preset with explicit overrides on top, validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ConfigError(f"unknown config fields {sorted(unknown)}")
    base = DATASET_DEFAULTS.get(overrides.get("dataset", "fmnist"), {})
    return ExperimentConfig(**{**base, **PRESETS[preset], **overrides, "preset": preset}).validate()
