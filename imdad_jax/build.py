"""Assembly: from settings to the pieces the engine trains. Every face builds through here.

The experiment (a config), the estimator and feature patching (a user's arrays) and the figures script all take
their objective and options, their model (the convolution policy and the patch model included), their per-run
hyperparameters and their run data from these functions, with the same checks and the same messages.
Like Deep-SAD-PyTorch's ``build_network`` / ``load_dataset``: the registries are the library's, not a script's.
"""
from __future__ import annotations

import dataclasses
import inspect
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np

from imdad_jax.config import FLOAT32_MAX
from imdad_jax.data.fashion_mnist import ImageDataset
from imdad_jax.data.runs import RunData
from imdad_jax.data.tabular import TabularDataset
from imdad_jax.objectives import REGISTRY, get_objective, hyperparameter_names, option_defaults
from imdad_jax.objectives.protocol import Objective

if TYPE_CHECKING:
    from imdad_jax.config import ExperimentConfig

Dataset = Union[ImageDataset, TabularDataset]


# ---- the objective ---------------------------------------------------------------------------------------------

def objective_options(cfg: "ExperimentConfig", method: str | None = None) -> tuple[Objective, Any]:
    """The objective of ``cfg.method`` (or ``method``) and its static options from ``cfg.options``."""
    obj = get_objective(method or cfg.method)
    return obj, obj.options(cfg.options)


def resolve_hyperparams(cfg: "ExperimentConfig", obj: Objective) -> dict[str, float]:
    """The objective's hyperparameters: the config's value where set, the method's default otherwise."""
    return {name: float(obj.DEFAULT_HP[name] if cfg.hp.get(name) is None else cfg.hp[name])
            for name in obj.HYPERPARAMS}


def run_hyperparams(cfg: "ExperimentConfig", n_runs: int, method: str | None = None) -> dict[str, np.ndarray]:
    """Per-run hyperparameter arrays (R,): all runs of a config share the values here; a sweep varies them."""
    obj = get_objective(method or cfg.method)
    return per_run({"lr": cfg.lr, "weight_decay": cfg.weight_decay, **resolve_hyperparams(cfg, obj)}, n_runs)


def per_run(values: Mapping[str, float], n_runs: int = 1) -> dict[str, np.ndarray]:
    """Each value as a float32 array (R,): the engine's per-run hyperparameters."""
    with np.errstate(over="ignore"):  # a value past float32's range becomes inf, which validate_hp refuses
        return {k: np.full(n_runs, v, np.float32) for k, v in values.items()}


def user_hyperparams(obj: Objective, lr: float, weight_decay: float, overrides: Mapping[str, Any] | None,
                     n_runs: int = 1) -> dict[str, np.ndarray]:
    """One detector's per-run arrays from a user's ``lr``, ``weight_decay`` and ``{name: value}`` over the
    objective's defaults; ``ValueError`` naming an unknown name, a value that is not a number, or (the
    objective's own check) one out of range."""
    extra = dict(overrides or {})
    unknown = set(extra) - set(obj.HYPERPARAMS)
    if unknown:
        raise ValueError(f"{obj.name} has no hyperparameters {sorted(unknown)}; its own: {obj.HYPERPARAMS}")
    for k, v in extra.items():
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            raise ValueError(f"{k} must be a number, got {v!r}")
    hp = per_run({"lr": lr, "weight_decay": weight_decay, **dict(obj.DEFAULT_HP), **extra}, n_runs)
    obj.validate_hp(hp)
    return hp


# ---- the model ---------------------------------------------------------------------------------------------------

def encoder_option_names() -> tuple[str, ...]:
    """The optional blocks ``build_encoder`` takes (every keyword but the widths and the convolution form): the
    config and the estimator both pass whatever is here, so an encoder option is a model block, its
    ``build_encoder`` argument and a config field."""
    from imdad_jax.models import build_encoder

    return tuple(n for n in inspect.signature(build_encoder).parameters
                 if n not in ("arch", "conv_features", "dense_features", "conv_impl"))


def encoder_options(cfg: Any) -> dict[str, Any]:
    """The encoder options ``cfg`` holds (``encoder_option_names``), by name."""
    return {n: getattr(cfg, n) for n in encoder_option_names() if hasattr(cfg, n)}


def model_conv_impl(cfg: "ExperimentConfig") -> str:
    """The convolution form for the config: its own, except that ``auto`` with the run axis vmapped on CPU is
    im2col in every layer (XLA:CPU runs a vmapped convolution as a batch-grouped one, 4.2x slower than the
    batched matmul im2col becomes for CNN2; ``benchmarks/RESULTS.md``, "CPU convolution forms")."""
    import jax

    from imdad_jax.train.runners import Runner

    if cfg.conv_impl == "auto" and cfg.strategy != "auto" and Runner(cfg.strategy).vmapped \
            and jax.default_backend() == "cpu":
        return "im2col"
    return cfg.conv_impl


def build_model(cfg: "ExperimentConfig", input_shape: tuple[int, ...], method: str | None = None):
    """The method's model around the config's encoder (or, with ``feature_patching``, the per-patch head)."""
    from imdad_jax.models import build_encoder

    obj, opts = objective_options(cfg, method)
    if cfg.feature_patching:
        from imdad_jax.feature_patching import build_patch_model
        return build_patch_model(cfg, obj, opts)
    enc = build_encoder(cfg.arch, conv_features=cfg.conv_features, dense_features=cfg.dense_features,
                        conv_impl=model_conv_impl(cfg), **encoder_options(cfg))
    return obj.make_model(enc, tuple(input_shape), opts)


# ---- run data ----------------------------------------------------------------------------------------------------

@dataclass
class Split:
    """Every run's training data and test set, whatever the protocol.

    Images: the standard split, every run scores the whole ``x_test`` (``test_idx`` None). With a
    preprocessing other than ``unit`` (fit on each run's training normals) every run has its own copy of
    its training rows in ``data.x`` and of the test set in ``x_test``, in the tabular layout below.
    Tabular / synthetic: k-fold CV, every run has its own scaled copy in ``data.x`` and scores its
    own test fold, ``x_test[test_idx[r, :test_valid[r]]]``.
    """

    ids: list[dict[str, Any]]
    data: RunData
    keys: np.ndarray
    x_test: np.ndarray
    test_idx: np.ndarray | None
    test_valid: np.ndarray | None
    is_anomaly: list[np.ndarray]

    def test_rows(self, r: int) -> np.ndarray:
        """Run r's test inputs."""
        return self.x_test if self.test_idx is None else self.x_test[self.test_idx[r, :self.test_valid[r]]]

    @classmethod
    def training_only(cls, data: RunData, keys: np.ndarray) -> "Split":
        """Runs without a test set (a tuning grid, a sweep read on its training data)."""
        return cls([], data, keys, data.x, None, None, [])


def make_split(cfg: "ExperimentConfig", dataset: Dataset) -> Split:
    """The runs of ``cfg`` on ``dataset`` under the paper's protocol for its kind of data."""
    from imdad_jax.data.folds import cv_runs, test_labels
    from imdad_jax.data.protocol import one_vs_rest_runs, per_run_preprocess, preprocess_images

    if cfg.feature_patching:  # FPSVDD: the frozen backbone's patch embeddings of the images are the data
        from imdad_jax.feature_patching import patch_split
        return patch_split(cfg, make_split(dataclasses.replace(cfg, feature_patching=False), dataset))
    if isinstance(dataset, TabularDataset):
        ids, data, keys, test_idx, test_valid = cv_runs(dataset.x, dataset.y, cfg.classes, cfg.seeds, cfg.n_folds,
                                                        cfg.anomaly_fraction, cfg.contamination)
        labels = test_labels(dataset.y, ids, test_idx, test_valid, len(dataset.y))
        return Split(ids, data, keys, data.x, test_idx, test_valid, labels)
    x_train = preprocess_images(dataset.x_train)
    ids, data, keys = one_vs_rest_runs(x_train, dataset.y_train, cfg.classes, cfg.seeds, cfg.anomaly_fraction)
    labels = [dataset.y_test != rid["normal_class"] for rid in ids]
    x_test = preprocess_images(dataset.x_test)
    if cfg.preprocess == "unit":  # nothing fit per run: one shared copy of each set, as always
        return Split(ids, data, keys, x_test, None, None, labels)
    data, x_test, test_idx, test_valid = per_run_preprocess(cfg.preprocess, data, x_test)
    return Split(ids, data, keys, x_test, test_idx, test_valid, labels)


def label_pools(y: Any, n: int, obj: Objective, what: str = "samples") -> tuple[np.ndarray, np.ndarray]:
    """A user's labels checked: one 0 (normal or unlabelled) or 1 (labelled anomaly) per sample; at least two
    normals; labelled anomalies where the objective trains on them. Returns the normal and anomaly indices."""
    y = np.zeros(n, np.int64) if y is None else np.asarray(y).ravel()
    if y.shape != (n,):
        raise ValueError(f"y must have one label per sample: X has {n} {what}, y has {y.shape}")
    if not np.isin(y, (0, 1)).all():
        try:
            seen = np.unique(y)[:10]
        except TypeError:  # an object array mixing e.g. None and numbers cannot be sorted
            seen = list(dict.fromkeys(y.tolist()))[:10]
        raise ValueError(f"y must hold 0 (normal) and 1 (labelled anomaly) only; got values {seen}")
    normals, anomalies = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    if len(normals) < 2:
        raise ValueError(f"fit needs at least 2 normal {what} (y == 0); got {len(normals)}")
    if obj.USES_ANOMALIES and len(anomalies) == 0:
        raise ValueError(f"{obj.name} needs labelled anomalies: mark some with y == 1, or use a method "
                         "trained on normals alone (method='deep_svdd')")
    return normals, anomalies


def single_run(x: np.ndarray, normals: np.ndarray, anomalies: np.ndarray, n_runs: int = 1) -> RunData:
    """``n_runs`` runs over the same rows of ``x``: the normal pool and the labelled-anomaly pool."""
    def pool(idx: np.ndarray) -> np.ndarray:
        row = idx[None, :].astype(np.int32) if len(idx) else np.zeros((1, 1), np.int32)
        return np.repeat(row, n_runs, axis=0)

    return RunData(x, pool(normals), np.full(n_runs, len(normals)), pool(anomalies),
                   np.full(n_runs, len(anomalies)))


# ---- the config's checks that need the registries ----------------------------------------------------------------

def check_config(cfg: "ExperimentConfig") -> None:
    """``ValueError`` for a setting the registries refuse: the method, the encoder, the engine's strategy, the
    preprocessing, and (by the objective that owns them, once) the method's hyperparameters and options."""
    from imdad_jax.config import SHALLOW_METHODS
    from imdad_jax.data.preprocess import PREPROCESSING
    from imdad_jax.models import ARCHITECTURES
    from imdad_jax.models.layers import CONV_IMPLS
    from imdad_jax.train.engine import EPOCH_MODES, STRATEGIES

    methods = (*REGISTRY, *SHALLOW_METHODS)
    if cfg.method not in methods:
        raise ValueError(f"unknown method {cfg.method!r}; choose one of {', '.join(methods)} or --method=all")
    for name, value, allowed in (("preprocess", cfg.preprocess, PREPROCESSING), ("arch", cfg.arch, ARCHITECTURES),
                                 ("strategy", cfg.strategy, STRATEGIES), ("epoch_mode", cfg.epoch_mode, EPOCH_MODES),
                                 ("conv_impl", cfg.conv_impl, CONV_IMPLS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}; e.g. --{name}={allowed[0]}")
    unknown = sorted(set(cfg.hp) - set(hyperparameter_names()))
    unknown_opts = sorted(set(cfg.options) - set(option_defaults()))
    if unknown or unknown_opts:
        raise ValueError(f"no registered method has the hyperparameters or options {unknown + unknown_opts}")
    for k, v in cfg.hp.items():
        if v is None:
            continue
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            raise ValueError(f"{k} must be a number, got {v!r}")
        if abs(v) > FLOAT32_MAX:
            raise ValueError(f"{k} must be finite as the float32 training runs in, got {v} (beyond 3.4e38)")
        # checked by every objective that owns it, whichever method this config trains: one value given for
        # several methods (--method=all) is in range for each of them (in float64, as written)
        for owner in REGISTRY.values():
            if k in owner.HYPERPARAMS:
                owner.validate_hp({**{h: np.full(1, d) for h, d in owner.DEFAULT_HP.items()}, k: np.full(1, v)})
    for owner in REGISTRY.values():  # the static options likewise, by every objective that has them
        mine = {o: v for o, v in cfg.options.items() if o in owner.Options._fields}
        if mine:
            owner.options(mine)
    if cfg.method in SHALLOW_METHODS:
        if cfg.tune:
            raise ValueError(f"--tune is for the deep methods; {cfg.method} chooses its own grid on a validation "
                             "split")
        return
    obj, _ = objective_options(cfg)  # the objective's validate_options
    obj.validate_hp(run_hyperparams(cfg, 1))
    if cfg.tune:
        from imdad_jax.tuning import check_grid
        check_grid(cfg.tune, ("lr", "weight_decay", *obj.HYPERPARAMS))
    if cfg.feature_patching:
        from imdad_jax.feature_patching import PATCH_METHODS
        from imdad_jax.models.patches import PATCH_REDUCTIONS

        if cfg.method not in PATCH_METHODS:
            raise ValueError(f"--feature_patching trains the hypersphere methods {', '.join(PATCH_METHODS)}, "
                             f"not {cfg.method}")
        if cfg.patch_reduce not in PATCH_REDUCTIONS:
            raise ValueError(f"patch_reduce must be one of {PATCH_REDUCTIONS}, got {cfg.patch_reduce!r}")


def model_input_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    """The model's per-sample input shape: grey images (H, W) gain a channel axis."""
    return (*input_shape, 1) if len(input_shape) == 2 else tuple(input_shape)


__all__ = ["Dataset", "Split", "build_model", "check_config", "encoder_option_names", "encoder_options",
           "label_pools", "make_split", "model_conv_impl", "model_input_shape", "objective_options", "per_run",
           "resolve_hyperparams", "run_hyperparams", "single_run", "user_hyperparams"]
