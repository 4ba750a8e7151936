"""One typed config for an experiment; defaults are the paper's (IV-A3) where it gives them.

Where the paper is silent the default is ours, and ``docs/method.md`` says why. Importing this module does not
import JAX: the dataset lists come from the data registry (numpy only); the checks that need a registry of JAX
code (methods, encoders, engine strategies, each objective's own hyperparameters and options) run in
``imdad_jax.build.check_config``, which ``validate`` calls.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from imdad_jax.data.registry import DATASETS as _DATASET_SPECS
from imdad_jax.data.registry import dataset_names, merge_settings

IMAGE_DATASETS = dataset_names("image")
TABULAR_DATASETS = dataset_names("tabular", "synthetic")  # k-fold CV, FC3 (paper Table I)
DATASETS = dataset_names()
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {n: s.config_defaults() for n, s in _DATASET_SPECS.items()}
# The shallow baselines (imdad_jax.shallow), named here so the config validates without importing them.
SHALLOW_METHODS = ("iforest", "kde", "ocsvm", "svdd", "sslm")


def __getattr__(name: str) -> Any:
    # The deep methods are the objectives' registry (JAX code): read on first use, not at import.
    if name in ("DEEP_METHODS", "METHODS"):
        from imdad_jax.objectives import REGISTRY

        return tuple(REGISTRY) + (SHALLOW_METHODS if name == "METHODS" else ())
    raise AttributeError(f"module 'imdad_jax.config' has no attribute {name!r}")


FLOAT32_MAX = 3.4028234663852886e38  # per-run values train as float32: anything larger becomes inf


def _finite32(v: float) -> bool:
    return math.isfinite(v) and abs(v) <= FLOAT32_MAX


def _past32(v: float) -> str:
    return " (beyond float32's range, 3.4e38, in which training runs)" if math.isfinite(v) and not _finite32(v) else ""


class ConfigError(ValueError):
    """A setting is out of range; the message names it and says what to change."""


def _f(default: Any, section: str, help: str = "", parse: str | None = None, flag: bool = True) -> Any:
    """A config field with its section, its flag's help and how the flag's text is parsed (``config_flags``)."""
    meta = {"section": section, "help": help, "parse": parse, "flag": flag}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


SECTIONS = ("data", "model", "optim", "method", "engine", "shallow", "patching")


@dataclass
class ExperimentConfig:
    """Every setting of one experiment, grouped in sections (``field.metadata["section"]``; ``cfg.section(name)``).

    Each field is also a command-line flag (``imdad_jax.config_flags``): ``--lr=1e-3`` or ``--optim.lr=1e-3``.
    The method's own per-run numbers are ``hp`` (``{"nu1": 0.05}``; absent: the objective's ``DEFAULT_HP``) and its
    static choices ``options`` (the fields of its ``Options``); the objective that owns them checks them
    (``imdad_jax.build.check_config``). ``cfg.nu1`` reads ``hp`` / ``options`` too.
    """

    # data
    dataset: str = _f("fmnist", "data", flag=False)
    classes: tuple[int, ...] = _f(tuple(range(10)), "data", flag=False)
    seeds: tuple[int, ...] = _f((0,), "data", flag=False)
    anomaly_fraction: float = _f(0.1, "data", "share of the anomalies labelled for training (default 0.1)", "float")
    # None = their share of the training set (the paper's stratified batches); 0.5 = balanced batches (DeepOD's
    # weighted sampler for Deep SAD)
    anomaly_share: float | None = _f(None, "data", "the labelled anomalies' share of each batch (default: their "
                                     "share of the training set; 0.5: balanced batches)", "float")
    contamination: float = _f(0.0, "data", "tabular data: share of each run's training normals that are unlabelled "
                              "anomalies (default 0: the paper's clean protocol)", "float")
    n_folds: int = _f(5, "data", "folds of the stratified k-fold CV on tabular and synthetic data (default 5)", "int")
    # images only; tabular data is always standardised on each run's training normals
    preprocess: str = _f("unit", "data", "images: unit (default: pixels in [0, 1]), standardize, gcn_minmax or zca, "
                         "fit on each run's training normals only (docs/data.md)", "str")
    # model (paper Table I names only "CNN2+FC3"; the widths are ours)
    arch: str = _f("cnn2", "model", "encoder: cnn2, cnn3 or fc3 (default: the dataset's)", "str")
    conv_features: tuple[int, ...] = _f((16, 32), "model", "conv stage widths, e.g. 16,32", "ints")
    dense_features: tuple[int, ...] = _f((128, 64, 32), "model", "dense layer widths, the last is z's", "ints")
    use_bias: bool = _f(False, "model", "biases in the encoder (the paper's is bias-free)", "bool")
    layer_norm: bool = _f(False, "model", "bias-free LayerNorm in every conv block and hidden dense layer "
                          "(docs/method.md)", "bool")
    residual: bool = _f(False, "model", "residual connections around every conv block and hidden dense layer", "bool")
    se_attention: bool = _f(False, "model", "squeeze-and-excitation channel attention after every conv block and "
                            "hidden dense layer", "bool")
    projection: int = _f(0, "model", "a bias-free dense projection to this many features before the head "
                         "(default 0: none)", "int")
    batch_norm: bool = _f(False, "model", "affine-free BatchNorm in every conv block and hidden dense layer; "
                          "statistics per run", "bool")
    dropout: float = _f(0.0, "model", "dropout rate after every conv block and hidden dense layer (default 0: off); "
                        "each run draws its own masks", "float")
    conv_impl: str = _f("auto", "model", "how convolutions are computed: auto (default: fastest measured per "
                        "backend), xla or im2col; the same numbers up to float rounding", "str")
    # optimisation (paper: Adam, lr 1e-4, MultiStepLR, 200 epochs, batch 150 for images)
    epochs: int = _f(200, "optim", "training epochs (overrides the preset)", "int")
    batch_size: int = _f(150, "optim", "batch size (default: the dataset's)", "int")
    lr: float = _f(1e-4, "optim", "Adam's learning rate", "float")
    weight_decay: float = _f(1e-6, "optim", "coupled L2 weight decay", "float")
    milestone_fractions: tuple[float, ...] = _f((0.5, 0.75), "optim", "MultiStepLR milestones as shares of the "
                                                "schedule", "floats")
    gamma: float = _f(0.1, "optim", "MultiStepLR factor at each milestone", "float")
    pretrain_epochs: int = _f(0, "optim", "autoencoder pretraining epochs of the encoder (default 0)", "int")
    # method
    method: str = _f("imdad", "method", flag=False)
    hp: dict[str, float] = _f({}, "method", flag=False)
    options: dict[str, Any] = _f({}, "method", flag=False)
    # ((name, (values...)), ...) over lr, weight_decay and the method's HYPERPARAMS; () = no tuning
    tune: tuple[tuple[str, tuple[float, ...]], ...] = _f(
        (), "method", "choose per-run values on a validation split of each run's training data, e.g. "
        "'lr=1e-3,1e-4;nu1=0.05,0.1' (every combination trains as one program)", "grid")
    val_fraction: float = _f(0.25, "method", "share of each run's training normals and labelled anomalies held out "
                             "for --tune (default 0.25)", "float")
    # shallow baselines
    shallow_max_train: int = _f(1000, "shallow", "training rows the shallow baselines see at most", "int")
    shallow_pca_dims: int | None = _f(32, "shallow", "PCA components for the shallow baselines on images", "int")
    # engine
    # "auto" = as many as fit in the accelerator's memory (XLA's memory analysis; one program on a CPU), an int =
    # at most that many, None = all in one program
    max_runs: int | str | None = _f("auto", "engine", "runs per program: 'auto' (default: as many as fit in the "
                                    "accelerator's memory, measured; all at once on a CPU), 'all', or a number "
                                    "(larger sweeps train in chunks of that many, with the same numbers per run)",
                                    "max_runs")
    strategy: str = _f("auto", "engine", "how the run axis executes: auto (default: on an accelerator, a few "
                       "measured steps of vmap, vmap_fwd, map and chunked, the fastest kept and cached; on a CPU "
                       "loop for CNNs, vmap for MLPs), vmap, vmap_fwd, map, chunked or loop (docs/scaling.md)", "str")
    epoch_mode: str = _f("auto", "engine", "auto (default), scan or steps", "str")
    chunk_runs: int = _f(8, "engine", "runs per vmapped group of --strategy=chunked (default 8)", "int")
    unroll: int = _f(1, "engine", "steps per iteration of a scanned epoch (default 1)", "int")
    # feature patching (FPSVDD, Huang et al. 2024; imdad_jax.feature_patching, docs/method.md)
    feature_patching: bool = _f(False, "patching", "train --dense_features as an MLP on every patch embedding of a "
                                "frozen backbone (images, hypersphere methods)", "bool")
    backbone_params: str | None = _f(None, "patching", "the backbone's weights (.npz, or an Orbax checkpoint "
                                     "folder); default: random, which tests the mechanics only", "str")
    backbone_features: tuple[int, ...] = _f((16, 32, 64), "patching", "the backbone's stage widths", "ints")
    backbone_seed: int = _f(0, "patching", "the random backbone's seed (without --backbone_params)", "int")
    patch_layers: tuple[int, ...] = _f((1, 2), "patching", "stages whose maps are patched (0 = the first)", "ints")
    patch_size: int = _f(3, "patching", "neighbourhood averaged around every patch (odd; default 3)", "int")
    patch_reduce: str = _f("max", "patching", "an image's score from its patches': max (default) or mean", "str")
    preset: str = _f("paper", "run", flag=False)

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not fields: the method's hyperparameters and options read as attributes
        d = self.__dict__
        if name in d.get("hp", {}):
            return d["hp"][name]
        if name in d.get("options", {}):
            return d["options"][name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def section(self, name: str) -> dict[str, Any]:
        """The fields of one section, e.g. ``cfg.section("optim")`` -> ``{"epochs": 200, "lr": 1e-4, ...}``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["section"] == name}

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

        if self.dataset not in DATASETS:
            bad(f"unknown dataset {self.dataset!r}; choose one of {DATASETS} (--dataset=fmnist)")
        if not self.classes:
            bad("no normal class given; pass --class=K or --all_classes")
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
        if not 0 < self.anomaly_fraction <= 1:
            bad(f"anomaly_fraction must lie in (0, 1], got {self.anomaly_fraction}; pass e.g. --anomaly_fraction=0.1")
        if not 0 <= self.contamination < 1:
            bad(f"contamination must lie in [0, 1), got {self.contamination}; e.g. --contamination=0.05")
        if self.contamination and self.dataset not in TABULAR_DATASETS:
            bad(f"--contamination is for tabular and synthetic data; {self.dataset} follows the image protocol")
        if self.anomaly_share is not None and not 0 < self.anomaly_share < 1:
            bad(f"anomaly_share must lie in (0, 1), got {self.anomaly_share}; pass e.g. --anomaly_share=0.5 "
                "for balanced batches, or leave it unset for the training set's proportion")
        # an infinite learning rate passes "> 0" and only shows as a diverged run
        if not (self.lr > 0 and _finite32(self.lr)):
            bad(f"lr must be > 0 and finite, got {self.lr}{_past32(self.lr)}")
        if not (self.weight_decay >= 0 and _finite32(self.weight_decay)):  # NaN passes "< 0"
            bad(f"weight_decay must be >= 0 and finite, got {self.weight_decay}{_past32(self.weight_decay)}")
        if not 0 < self.gamma <= 1:
            bad(f"gamma must lie in (0, 1], got {self.gamma}")
        if self.tune and not 0 < self.val_fraction < 1:
            bad(f"val_fraction must lie in (0, 1), got {self.val_fraction}; e.g. --val_fraction=0.25")
        if self.pretrain_epochs < 0:
            bad(f"pretrain_epochs must be >= 0, got {self.pretrain_epochs}")
        if self.shallow_max_train < 10:
            bad(f"shallow_max_train must be >= 10, got {self.shallow_max_train}")
        if self.shallow_pca_dims is not None and self.shallow_pca_dims < 1:
            bad(f"shallow_pca_dims must be >= 1 (PCA components for the shallow baselines on images), got "
                f"{self.shallow_pca_dims}")
        if not (self.max_runs is None or self.max_runs == "auto" or (isinstance(self.max_runs, int)
                                                                   and self.max_runs >= 1)):
            bad(f"max_runs must be 'auto', None or an integer >= 1, got {self.max_runs!r}; e.g. --max_runs=64")
        if self.chunk_runs < 1 or self.unroll < 1:
            bad(f"chunk_runs and unroll must be >= 1, got {self.chunk_runs} and {self.unroll}")
        if any(c < 1 for c in (*self.conv_features, *self.dense_features)):
            bad("layer widths must be >= 1")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            bad(f"dropout must be a rate in [0, 1) (0 = off), got {self.dropout!r}; e.g. --dropout=0.1")
        if self.projection < 0:
            bad(f"projection must be >= 0 (0 = no projection layer), got {self.projection}; e.g. --projection=32")
        if self.feature_patching:
            self._validate_patching(bad)
        from imdad_jax.build import check_config  # the registries' checks (they import JAX)

        try:
            check_config(self)
        except ValueError as e:
            bad(str(e))
        return self

    def _validate_patching(self, bad) -> None:
        if self.dataset not in IMAGE_DATASETS:
            bad(f"--feature_patching takes images ({', '.join(IMAGE_DATASETS)}), not {self.dataset}")
        if self.pretrain_epochs:
            bad("--feature_patching trains a head on frozen backbone features; drop --pretrain_epochs")
        if not self.backbone_features or any(c < 1 for c in self.backbone_features):
            bad(f"backbone_features must be stage widths >= 1, got {self.backbone_features}")
        n_stages = len(self.backbone_features)
        if (not self.patch_layers or list(self.patch_layers) != sorted(set(self.patch_layers))
                or not all(0 <= i < n_stages for i in self.patch_layers)):
            bad(f"patch_layers must be increasing stage numbers in 0..{n_stages - 1}, got {self.patch_layers}; "
                "e.g. --patch_layers=1,2")
        side = _DATASET_SPECS[self.dataset].input_shape[0]
        if side < 2 ** (max(self.patch_layers) + 1):  # every stage halves the map
            bad(f"stage {max(self.patch_layers)} of the backbone has no cells left on {side}x{side} images; "
                "choose earlier --patch_layers")
        if self.patch_size < 1 or self.patch_size % 2 == 0:
            bad(f"patch_size must be odd and >= 1, got {self.patch_size}; e.g. --patch_size=3")
        if not 0 <= self.backbone_seed < 2 ** 32:
            bad(f"backbone_seed must lie in 0..2**32-1, got {self.backbone_seed}")
        if self.backbone_params is not None:
            import os

            if not os.path.exists(self.backbone_params):
                bad(f"no backbone parameters at {self.backbone_params}; give a .npz or an Orbax checkpoint folder")


# Named schedules. "paper" is the default; "quick" is what a 2-core CPU finishes in minutes.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {"epochs": 10},
    # For tests and smoke runs: a tiny network, two epochs.
    "tiny": {"epochs": 2, "conv_features": (4, 8), "dense_features": (16, 8), "batch_size": 32},
}


def make_config(preset: str = "paper", **overrides: Any) -> ExperimentConfig:
    """The config of a named preset with explicit overrides on top, validated.

    A method's hyperparameter or option may be given by name (``make_config(nu1=0.05, kappa=5)``): it goes into
    ``hp`` / ``options``, where the objective that owns it checks it.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    loose = {k: overrides.pop(k) for k in list(overrides) if k not in fields}
    if loose:
        from imdad_jax.objectives import hyperparameter_names, option_defaults

        hp_names, opt_names = set(hyperparameter_names()), set(option_defaults())
        unknown = sorted(set(loose) - hp_names - opt_names)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}")
        overrides["hp"] = {**overrides.get("hp", {}), **{k: v for k, v in loose.items() if k in hp_names}}
        overrides["options"] = {**overrides.get("options", {}), **{k: v for k, v in loose.items() if k in opt_names}}
    base = DATASET_DEFAULTS.get(overrides.get("dataset", "fmnist"), {})
    return ExperimentConfig(**merge_settings(base, PRESETS[preset], overrides, {"preset": preset})).validate()
