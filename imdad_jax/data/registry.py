"""Datasets by name: the one table every face (CLI, experiment scripts, notebook) loads through.

Images come from their search order (an explicit folder, the dataset's environment variable, then the places its
loader knows, e.g. the Debian package); tabular and synthetic data ship with the package. Nothing is downloaded.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from imdad_jax.data import cifar10, fashion_mnist, mnist
from imdad_jax.data.cifar10 import load_cifar10
from imdad_jax.data.fashion_mnist import load_fashion_mnist
from imdad_jax.data.mnist import load_mnist
from imdad_jax.data.tabular import SYNTHETIC_DATASETS, TABULAR_DATASETS, load_synthetic, load_tabular

# name: (loader(data_dir, env_dir), environment variable naming its folder)
IMAGE_LOADERS: dict[str, tuple[Callable[..., Any], str]] = {
    "mnist": (load_mnist, mnist.ENV_VAR),
    "fmnist": (load_fashion_mnist, fashion_mnist.ENV_VAR),
    "cifar10": (load_cifar10, cifar10.ENV_VAR),
}


def load_dataset(name: str, data_dir: str | None = None) -> Any:
    """The dataset ``name``: an ``ImageDataset`` for ``mnist``, ``fmnist``, ``cifar10`` (from ``data_dir``, else the
    dataset's environment variable, else its loader's own search order), a ``TabularDataset`` for the shipped
    tabular and synthetic sets. Raises ``ValueError`` for an unknown name, ``DataNotFoundError`` (saying where it
    looked and how to get the files) when an image set is not on the machine."""
    if name in SYNTHETIC_DATASETS:
        return load_synthetic(name)
    if name in TABULAR_DATASETS:
        return load_tabular(name)
    if name not in IMAGE_LOADERS:
        known = sorted(IMAGE_LOADERS) + list(TABULAR_DATASETS) + list(SYNTHETIC_DATASETS)
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(known)}")
    loader, env = IMAGE_LOADERS[name]
    return loader(data_dir, os.environ.get(env))
