"""Loaders, the dataset registry and the one-class protocol. Loaders take directories as arguments; the CLI
resolves flags and environment variables.

Names are imported on first use (PEP 562): the protocol's modules need JAX for their keys, the loaders and the
registry do not, and the config reads the registry without importing JAX.

The writers of synthetic files in the real layouts (``idx.write_idx``, ``mnist.write_mnist_fixture``,
``cifar10.write_cifar10_fixture``) are test support, not exported here: import them from their modules.
"""
from __future__ import annotations

import importlib
from typing import Any

# name -> the module that defines it
_HOME = {
    "load_cifar10": "cifar10",
    "DataNotFoundError": "fashion_mnist", "ImageDataset": "fashion_mnist", "load_fashion_mnist": "fashion_mnist",
    "cv_key": "folds", "cv_runs": "folds", "test_labels": "folds",
    "DataFileError": "idx", "read_idx": "idx",
    "load_mnist": "mnist",
    "PREPROCESSING": "preprocess", "fit_transform": "preprocess",
    "RunData": "runs",
    "labelled_anomalies": "protocol", "one_vs_rest_runs": "protocol", "per_run_preprocess": "protocol",
    "preprocess_images": "protocol", "run_key": "protocol",
    "SYNTHETIC_DATASETS": "tabular", "TABULAR_DATASETS": "tabular", "TabularDataset": "tabular",
    "load_synthetic": "tabular", "load_tabular": "tabular",
    "DatasetSpec": "registry", "dataset_names": "registry", "get_dataset": "registry", "load_dataset": "registry",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'imdad_jax.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"imdad_jax.data.{_HOME[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
