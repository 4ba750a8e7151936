"""Fashion-MNIST from its four raw IDX files, wherever they are on this machine.

The search order (``candidate_dirs``) is: an explicit directory, a directory from the
environment (resolved by the CLI and passed in: nothing here reads the environment), the
user's copy in ``~/.cache/imdad_jax/fashion-mnist``, the Debian ``dataset-fashion-mnist``
package (``/usr/share/datasets/fashion-mnist``), then TFDS when installed and already prepared
(the same places as MNIST's and CIFAR-10's). Nothing is ever downloaded.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import numpy as np

from imdad_jax.data.idx import DataFileError, read_idx

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
ENV_VAR = "IMDAD_FMNIST_DIR"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
USER_DIR = Path.home() / ".cache" / "imdad_jax" / "fashion-mnist"


class DataNotFoundError(FileNotFoundError):
    """No copy of a dataset was found in any of the places searched."""


class ImageDataset(NamedTuple):
    x_train: np.ndarray  # (N, H, W, C) uint8
    y_train: np.ndarray  # (N,) int
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str


def _find_file(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def _has_all(directory: Path) -> bool:
    return directory.is_dir() and all(_find_file(directory, s) for s in FILES.values())


def _debian_dir() -> Path | None:
    if _has_all(DEBIAN_DIR):
        return DEBIAN_DIR
    if shutil.which("dpkg"):
        try:
            out = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True, text=True,
                                 timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        for line in out.splitlines():
            if line.endswith(FILES["x_train"] + ".gz"):
                return Path(line).parent
    return None


def candidate_dirs(data_dir: str | None = None, env_dir: str | None = None) -> list[tuple[str, Path]]:
    """(label, directory) pairs in search order; only existing ones from the system are listed."""
    out = []
    if data_dir:
        out.append(("--data_dir", Path(data_dir)))
    if env_dir:
        out.append((f"${ENV_VAR}", Path(env_dir)))
    if USER_DIR.is_dir() and USER_DIR not in {d for _, d in out}:
        out.append(("~/.cache/imdad_jax/fashion-mnist", USER_DIR))
    deb = _debian_dir()
    if deb:
        out.append(("Debian package dataset-fashion-mnist", deb))
    return out


def _load_dir(directory: Path, label: str) -> ImageDataset:
    arrays = {k: read_idx(_find_file(directory, stem)) for k, stem in FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or len(x) != len(y):
            raise DataFileError(f"{directory}: {split} images {x.shape} and labels {y.shape} do not match; a file is "
                                "damaged or from another dataset, fetch the four files again")
    return ImageDataset(arrays["x_train"][..., None], arrays["y_train"].astype(np.int64), arrays["x_test"][..., None],
                        arrays["y_test"].astype(np.int64), CLASS_NAMES, f"{label}: {directory}")


def load_tfds(name: str, class_names: tuple[str, ...]) -> ImageDataset | None:
    """TFDS's already prepared copy of image dataset ``name`` (never downloads); None when absent."""
    try:
        import tensorflow_datasets as tfds  # optional
    except ImportError:
        return None
    try:
        parts = {}
        for split in ("train", "test"):
            src = tfds.data_source(name, split=split, download=False)
            recs = [src[i] for i in range(len(src))]
            parts[split] = (np.stack([r["image"] for r in recs]), np.array([r["label"] for r in recs], np.int64))
    except Exception:  # not prepared: TFDS raises its own assertion/file errors
        return None
    return ImageDataset(parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1], class_names,
                        f"tensorflow-datasets: {name}")


def _load_tfds() -> ImageDataset | None:
    return load_tfds("fashion_mnist", CLASS_NAMES)


def load_fashion_mnist(data_dir: str | None = None, env_dir: str | None = None) -> ImageDataset:
    """Fashion-MNIST as uint8 NHWC arrays, from the first place in the search order that has it.

    An explicitly given ``data_dir`` that lacks the files is an error (not silently skipped).
    """
    searched = []
    for label, d in candidate_dirs(data_dir, env_dir):
        if _has_all(d):
            return _load_dir(d, label)
        missing = [s for s in FILES.values() if not _find_file(d, s)]
        if label == "--data_dir":
            raise DataNotFoundError(f"--data_dir {d} lacks the Fashion-MNIST files {missing} (.gz or not)")
        searched.append(f"{label} ({d}: missing {missing})")
    ds = _load_tfds()
    if ds is not None:
        return ds
    searched.append("tensorflow-datasets (not installed or fashion_mnist not prepared)")
    raise DataNotFoundError(
        "Fashion-MNIST not found. Searched: " + "; ".join(searched) + ". Get it one of these ways: "
        "(1) `apt-get install dataset-fashion-mnist` (Debian/Ubuntu); "
        f"(2) put the four IDX files ({', '.join(s + '.gz' for s in FILES.values())}) in a folder and pass "
        f"--data_dir=FOLDER or set {ENV_VAR}=FOLDER; "
        "(3) `pip install tensorflow-datasets` and prepare `fashion_mnist` once on a machine with internet access.")
