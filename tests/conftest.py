"""Shared fixtures. Eight fake CPU devices so the sharded run axis is exercised on any machine."""
import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# JAX's persistent compilation cache for this process and the CLIs the tests start: most of a tiny fit is
# compiling, and many tests fit the same shapes (scikit-learn's estimator checks fit dozens of times). A cached
# program computes what a fresh compile does; the folder is a per-user temporary one, never the user's cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(),
                                                                f"imdad_jax_test_xla_cache_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# The real MNIST files, where the CI machine keeps them beside the checkout (the library itself searches only the
# places a user has: --data_dir, $IMDAD_MNIST_DIR, ~/.cache/imdad_jax/mnist, /usr/share/datasets/mnist).
_CI_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")
if os.path.isdir(_CI_MNIST):
    os.environ.setdefault("IMDAD_MNIST_DIR", os.path.abspath(_CI_MNIST))

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from imdad_jax.data.idx import write_idx  # noqa: E402


def make_class_images(n_per_class: int, n_classes: int = 10, size: int = 28, seed: int = 0):
    """Separable synthetic grey images: class k is a bright 6x6 square at its own place, plus noise."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(n_classes):
        img = rng.integers(0, 60, size=(n_per_class, size, size)).astype(np.int32)
        r, c = divmod(k, 4)
        img[:, 2 + 6 * r:8 + 6 * r, 2 + 6 * c:8 + 6 * c] += 180
        xs.append(np.clip(img, 0, 255).astype(np.uint8))
        ys.append(np.full(n_per_class, k, np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="session")
def fake_fmnist_dir(tmp_path_factory):
    """A folder with the four Fashion-MNIST IDX .gz files, holding small synthetic images."""
    d = tmp_path_factory.mktemp("fmnist")
    xtr, ytr = make_class_images(30, seed=0)
    xte, yte = make_class_images(10, seed=1)
    write_idx(d / "train-images-idx3-ubyte.gz", xtr)
    write_idx(d / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(d / "t10k-images-idx3-ubyte.gz", xte)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", yte)
    return d


def blobs(n_normal: int = 200, n_anom: int = 200, dim: int = 4, seed: int = 0, sep: float = 4.0):
    """A separable tabular problem: class 0 around the origin, class 1 shifted by ``sep`` along every axis."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n_normal, dim)), rng.normal(sep, 1, (n_anom, dim))]).astype(np.float32)
    y = np.concatenate([np.zeros(n_normal, int), np.ones(n_anom, int)])
    return x, y
