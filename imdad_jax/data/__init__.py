"""Loaders and the one-class protocol. Loaders take directories as arguments; the CLI resolves flags and env."""
from imdad_jax.data.fashion_mnist import DataNotFoundError, ImageDataset, load_fashion_mnist
from imdad_jax.data.idx import DataFileError, read_idx, write_idx
from imdad_jax.data.protocol import labelled_anomalies, one_vs_rest_runs, preprocess_images, run_key

__all__ = ["DataNotFoundError", "ImageDataset", "load_fashion_mnist", "DataFileError", "read_idx", "write_idx",
           "labelled_anomalies", "one_vs_rest_runs", "preprocess_images", "run_key"]
