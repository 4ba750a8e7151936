"""CIFAR-10, "python version": the pickled batches, extracted or still inside ``cifar-10-python.tar.gz``.

The search order (``candidate_dirs``) is: an explicit directory, a directory from the environment (resolved by the
CLI and passed in: nothing here reads the environment), the user's copy in ``~/.cache/imdad_jax/cifar10``, a
system-wide copy in ``/usr/share/datasets/cifar10``, then TFDS when installed and already prepared (the same places
as MNIST's). Nothing is ever downloaded, and no package registry ships the data: it has to be copied here from
https://www.cs.toronto.edu/~kriz/cifar.html.

A batch is a pickled dict: ``b"data"`` (N, 3072) uint8, each row the 32x32 red plane, then green, then blue, each
plane row-major; ``b"labels"`` a list of N ints 0-9. ``batches.meta`` holds ``b"label_names"``.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from imdad_jax.data.fashion_mnist import DataNotFoundError, ImageDataset, load_tfds
from imdad_jax.data.idx import DataFileError

BATCH_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
FILES = (*TRAIN_BATCHES, TEST_BATCH, META)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
ENV_VAR = "IMDAD_CIFAR10_DIR"
URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
# Searched after the explicit and the environment's folder, when they exist (the same places for every image set).
USER_DIR = Path.home() / ".cache" / "imdad_jax" / "cifar10"
DEFAULT_DIRS: tuple[tuple[str, Path], ...] = (
    ("~/.cache/imdad_jax/cifar10", USER_DIR),
    ("/usr/share/datasets/cifar10", Path("/usr/share/datasets/cifar10")),
)

# Unpickling runs whatever the file names, and these files come from wherever the user downloaded them: allow only
# what the real batches (written by Python 2 with numpy) and write_cifar10_fixture (Python 3) refer to.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR-10 batch never does")
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        obj = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    # A cut pickle fails with whichever error the opcode it stops in raises, not only UnpicklingError.
    except Exception as e:
        raise DataFileError(f"{where}: cannot unpickle ({type(e).__name__}: {e}); the file is corrupt or "
                            f"truncated or not a CIFAR-10 batch, fetch {ARCHIVE} again") from None
    if not isinstance(obj, dict):
        raise DataFileError(f"{where}: holds a {type(obj).__name__}, expected a dict as in a CIFAR-10 batch")
    return obj


def _batch_dir(directory: Path) -> Path | None:
    for d in (directory / BATCH_DIR, directory):
        if d.is_dir() and all((d / f).is_file() for f in FILES):
            return d
    return None


def _archive(directory: Path) -> Path | None:
    # Passing the archive itself is accepted too.
    if directory.is_file() and directory.name.endswith((".tar.gz", ".tgz")):
        return directory
    return directory / ARCHIVE if (directory / ARCHIVE).is_file() else None


def _missing(directory: Path) -> list[str]:
    d = directory / BATCH_DIR if (directory / BATCH_DIR).is_dir() else directory
    return [f for f in FILES if not (d / f).is_file()]


def candidate_dirs(data_dir: str | os.PathLike | None = None,
                   env_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(label, directory) pairs in search order; of the default folders only existing ones are listed."""
    out = []
    if data_dir:
        out.append(("--data_dir", Path(data_dir)))
    if env_dir:
        out.append((f"${ENV_VAR}", Path(env_dir)))
    seen = {d for _, d in out}
    out += [(label, d) for label, d in DEFAULT_DIRS if d.is_dir() and d not in seen]
    return out


def _read_archive(path: Path) -> dict[str, bytes]:
    raw = {}
    try:
        with tarfile.open(path, "r:gz") as tf:
            for m in tf:
                name = m.name.rsplit("/", 1)[-1]
                if m.isfile() and name in FILES and name not in raw:
                    raw[name] = tf.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataFileError(f"{path}: cannot read ({type(e).__name__}: {e}); the archive is corrupt or truncated, "
                            "download it again") from None
    missing = [f for f in FILES if f not in raw]
    if missing:
        raise DataFileError(f"{path}: the archive lacks {missing}; expected the CIFAR-10 python version "
                            f"({ARCHIVE}, folder {BATCH_DIR}/)")
    return raw


def _split(batches: list[tuple[str, dict]]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for where, b in batches:
        if b"data" not in b or b"labels" not in b:
            raise DataFileError(f"{where}: lacks b'data' or b'labels' (has {sorted(b)}); not a CIFAR-10 batch")
        x, y = np.asarray(b[b"data"]), np.asarray(b[b"labels"])
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.dtype != np.uint8:
            raise DataFileError(f"{where}: data is {x.dtype} {x.shape}, expected uint8 (N, 3072)")
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise DataFileError(f"{where}: {len(x)} images but labels {y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataFileError(f"{where}: labels {int(y.min())}..{int(y.max())}, expected 0-9")
        xs.append(x)
        ys.append(y.astype(np.int64))
    x = np.concatenate(xs)
    # Rows are channel-first planes; the rest of the package wants NHWC.
    return np.ascontiguousarray(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)), np.concatenate(ys)


def _class_names(meta: dict, where: str) -> tuple[str, ...]:
    names = meta.get(b"label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataFileError(f"{where}: b'label_names' is {names!r:.80}, expected a list of 10 names")
    return tuple(n.decode("ascii", "replace") if isinstance(n, bytes) else str(n) for n in names)


def _load(raw: dict[str, bytes], where: Path, label: str) -> ImageDataset:
    def batch(f: str) -> tuple[str, dict]:
        name = f"{where}/{f}" if where.is_dir() else f"{where}:{f}"
        return name, _unpickle(raw[f], name)

    x_train, y_train = _split([batch(f) for f in TRAIN_BATCHES])
    x_test, y_test = _split([batch(TEST_BATCH)])
    meta_where, meta = batch(META)
    names = _class_names(meta, meta_where)
    return ImageDataset(x_train, y_train, x_test, y_test, names, f"{label}: {where}")


def _load_tfds() -> ImageDataset | None:
    return load_tfds("cifar10", CLASS_NAMES)


def load_cifar10(data_dir: str | os.PathLike | None = None, env_dir: str | os.PathLike | None = None) -> ImageDataset:
    """CIFAR-10 as uint8 NHWC arrays (N, 32, 32, 3), from the first place in the search order that has it.

    A directory may hold the extracted ``cifar-10-batches-py`` folder, be that folder, or hold
    ``cifar-10-python.tar.gz`` (read in memory, never extracted). An explicitly given ``data_dir`` that has none of
    these is an error. A file that is present but unreadable or of the wrong shape raises ``DataFileError``.
    """
    searched = []
    for label, d in candidate_dirs(data_dir, env_dir):
        bd = _batch_dir(d)
        if bd is not None:
            return _load({f: (bd / f).read_bytes() for f in FILES}, bd, label)
        arc = _archive(d)
        if arc is not None:
            return _load(_read_archive(arc), arc, label)
        what = f"no {BATCH_DIR}/ with all of {list(FILES)} (missing {_missing(d)}) and no {ARCHIVE}"
        if label == "--data_dir":
            raise DataNotFoundError(f"--data_dir {d} holds {what}")
        searched.append(f"{label} ({d}: {what})")
    ds = _load_tfds()
    if ds is not None:
        return ds
    searched.append("tensorflow-datasets (not installed or cifar10 not prepared)")
    raise DataNotFoundError(
        "CIFAR-10 not found. Searched: " + "; ".join(searched) + ". CIFAR-10 is not in any package registry "
        f"(PyPI or Debian): on a machine with internet access download {ARCHIVE} (the python version, 163 MB) from "
        f"{URL}, copy it (or its extracted {BATCH_DIR}/ folder) into a folder here, and pass --data_dir=FOLDER or set "
        f"{ENV_VAR}=FOLDER (or put it in {USER_DIR}). Or `pip install tensorflow-datasets` and prepare `cifar10` once where there is internet.")


def _pickle_batch(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the protocol the real (Python 2) batches use


def write_cifar10_fixture(directory: str | os.PathLike, n_train_per_class: int = 5, n_test_per_class: int = 2,
                          seed: int = 0, archive: bool = False) -> Path:
    """Write a tiny synthetic CIFAR-10 in the real python-version format, to test the loader or check a setup.

    Writes ``directory/cifar-10-batches-py/`` with ``data_batch_1..5`` (the training images dealt round-robin),
    ``test_batch`` and ``batches.meta``; with ``archive=True`` writes only ``directory/cifar-10-python.tar.gz``
    holding that folder. Class k's images have a bright square at its own place in channel ``k % 3``. Returns the
    path written; ``load_cifar10(data_dir=directory)`` reads either form.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def split(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(10), n_per_class)[rng.permutation(10 * n_per_class)]
        x = rng.integers(0, 60, size=(len(y), 3, 32, 32)).astype(np.int32)
        for k in range(10):
            r, c = divmod(k, 4)
            x[y == k, k % 3, 2 + 8 * r:8 + 8 * r, 2 + 8 * c:8 + 8 * c] += 180
        return np.clip(x, 0, 255).astype(np.uint8).reshape(len(y), -1), y

    def batch(label: str, x: np.ndarray, y: np.ndarray, start: int) -> dict:
        return {b"batch_label": label.encode(), b"labels": [int(v) for v in y], b"data": x,
                b"filenames": [f"fixture_{start + i:05d}.png".encode() for i in range(len(y))]}

    x_train, y_train = split(n_train_per_class)
    x_test, y_test = split(n_test_per_class)
    objs = {f: batch(f"training batch {i + 1} of 5", x_train[i::5], y_train[i::5], i * len(y_train))
            for i, f in enumerate(TRAIN_BATCHES)}
    objs[TEST_BATCH] = batch("testing batch 1 of 1", x_test, y_test, len(y_train))
    objs[META] = {b"label_names": [n.encode() for n in CLASS_NAMES], b"num_cases_per_batch": len(y_train) // 5,
                  b"num_vis": 3072}
    if not archive:
        bd = d / BATCH_DIR
        bd.mkdir(exist_ok=True)
        for f, obj in objs.items():
            _pickle_batch(bd / f, obj)
        return bd
    path = d / ARCHIVE
    with tarfile.open(path, "w:gz") as tf:
        for f, obj in objs.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{BATCH_DIR}/{f}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path
