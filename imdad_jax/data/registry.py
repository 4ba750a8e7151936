"""Datasets by name: one spec per dataset, the table every face (config, CLI, scripts, notebook) reads.

A spec says how to load the set (its loader; images also an environment variable naming their folder), what
kind of data it is (which protocol it follows) and the paper's settings for it (architecture, widths, batch).
Images come from their search order (an explicit folder, the dataset's environment variable, then the places its
loader knows, e.g. the Debian package); tabular and synthetic data ship with the package. Nothing is downloaded.
Importing this module imports numpy only, so the config derives its dataset lists from it without JAX.

Adding a dataset = its loader + one entry in ``DATASETS``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

from imdad_jax.data import cifar10, fashion_mnist, mnist
from imdad_jax.data.tabular import load_synthetic, load_tabular

KINDS = ("image", "tabular", "synthetic")
# Settings by kind of data, under each dataset's own. Tables: the sphere takes Adam steps of its own size
# (IMD-AD's solver="head_lr"): on small training sets the paper's single step size leaves the sphere far from
# stationary once the hinges go quiet; on images at the quick schedule it loses AUC, so images keep the paper's
# solver (docs/method.md, "The sphere's step size"). The estimator reads the same table for tables and images.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": {},
    "tabular": {"options": {"solver": "head_lr"}},
    "synthetic": {"options": {"solver": "head_lr"}},
}
# The paper's settings for tabular and synthetic data (IV-A3, Table I): FC3, batch 50.
_FC3 = {"arch": "fc3", "dense_features": (64, 32, 16), "batch_size": 50}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: ``load(data_dir)`` returns an ``ImageDataset`` or a ``TabularDataset``.

    ``kind``: ``image`` (the standard train/test split, one-vs-rest) or ``tabular`` / ``synthetic`` (stratified
    k-fold CV). ``defaults``: config fields the paper sets for this data (over the config's own defaults and
    ``KIND_DEFAULTS[kind]``; see ``config_defaults``).
    ``input_shape``: one sample's shape (H, W, C) for images; None where it depends on the file.
    ``env_var``: the environment variable naming an image set's folder.
    """

    name: str
    kind: str
    loader: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    env_var: str | None = None

    def config_defaults(self) -> dict[str, Any]:
        """The config fields this dataset sets: its kind's, then its own (``hp`` / ``options`` merged by name)."""
        return merge_settings(KIND_DEFAULTS[self.kind], self.defaults)

    def load(self, data_dir: str | None = None) -> Any:
        if self.kind == "image":
            return self.loader(data_dir, os.environ.get(self.env_var) if self.env_var else None)
        return self.loader(self.name)


def merge_settings(*layers: dict[str, Any]) -> dict[str, Any]:
    """Config overrides layered left to right; the dict-valued fields (``hp``, ``options``) merge by name."""
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            out[k] = {**out.get(k, {}), **v} if k in ("hp", "options") and isinstance(v, dict) else v
    return out


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("mnist", "image", mnist.load_mnist, {}, (28, 28, 1), mnist.ENV_VAR),
    DatasetSpec("fmnist", "image", fashion_mnist.load_fashion_mnist, {}, (28, 28, 1), fashion_mnist.ENV_VAR),
    # CIFAR-10: CNN3+FC3 (Table I); the widths are ours, as for CNN2 (docs/method.md).
    DatasetSpec("cifar10", "image", cifar10.load_cifar10, {"arch": "cnn3", "conv_features": (32, 64, 128)},
                (32, 32, 3), cifar10.ENV_VAR),
    DatasetSpec("bc", "tabular", load_tabular, _FC3),
    DatasetSpec("card", "tabular", load_tabular, _FC3),
    DatasetSpec("on", "tabular", load_tabular, _FC3),
    DatasetSpec("moons", "synthetic", load_synthetic, _FC3),
    DatasetSpec("spiral", "synthetic", load_synthetic, _FC3),
)}


def dataset_names(*kinds: str) -> tuple[str, ...]:
    """The registered names of the given kinds (all kinds when none is given), in registry order."""
    return tuple(n for n, s in DATASETS.items() if not kinds or s.kind in kinds)


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None


def load_dataset(name: str, data_dir: str | None = None) -> Any:
    """The dataset ``name``: an ``ImageDataset`` for ``mnist``, ``fmnist``, ``cifar10`` (from ``data_dir``, else the
    dataset's environment variable, else its loader's own search order), a ``TabularDataset`` for the shipped
    tabular and synthetic sets. Raises ``ValueError`` for an unknown name, ``DataNotFoundError`` (saying where it
    looked and how to get the files) when an image set is not on the machine."""
    return get_dataset(name).load(data_dir)


__all__ = ["DATASETS", "DatasetSpec", "KINDS", "KIND_DEFAULTS", "dataset_names", "get_dataset", "load_dataset",
           "merge_settings"]
