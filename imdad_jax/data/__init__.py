"""Loaders and the one-class protocol. Loaders take directories as arguments; the CLI resolves flags and env."""
from imdad_jax.data.cifar10 import load_cifar10, write_cifar10_fixture
from imdad_jax.data.fashion_mnist import DataNotFoundError, ImageDataset, load_fashion_mnist
from imdad_jax.data.folds import cv_key, cv_runs, test_labels
from imdad_jax.data.idx import DataFileError, read_idx, write_idx
from imdad_jax.data.mnist import load_mnist, write_mnist_fixture
from imdad_jax.data.preprocess import PREPROCESSING, fit_transform
from imdad_jax.data.runs import RunData
from imdad_jax.data.protocol import labelled_anomalies, one_vs_rest_runs, per_run_preprocess, preprocess_images, run_key
from imdad_jax.data.tabular import (SYNTHETIC_DATASETS, TABULAR_DATASETS, TabularDataset, load_synthetic,
                                    load_tabular)
from imdad_jax.data.registry import load_dataset  # after the loaders it names

__all__ = ["DataNotFoundError", "ImageDataset", "load_fashion_mnist", "DataFileError", "read_idx", "write_idx",
           "load_mnist", "write_mnist_fixture", "load_cifar10", "write_cifar10_fixture",
           "labelled_anomalies", "one_vs_rest_runs", "preprocess_images", "run_key",
           "TabularDataset", "load_tabular", "load_synthetic", "TABULAR_DATASETS", "SYNTHETIC_DATASETS",
           "cv_runs", "cv_key", "test_labels", "PREPROCESSING", "fit_transform", "per_run_preprocess", "RunData",
           "load_dataset"]
