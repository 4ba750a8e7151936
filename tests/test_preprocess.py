"""Preprocessing options (imdad_jax.data.preprocess): what each computes, that each is fit on a run's training
normals only, and the per-run copies of the image protocol."""
import os

import numpy as np
import pytest
from conftest import make_class_images

from imdad_jax.config import ConfigError, make_config
from imdad_jax.data import (DataNotFoundError, ImageDataset, labelled_anomalies, load_mnist, one_vs_rest_runs,
                            preprocess_images)
from imdad_jax.data import mnist
from imdad_jax.data.preprocess import PREPROCESSING, ZCA, GCNMinMax, Standardize, fit_transform, gcn_l1
from imdad_jax.data.protocol import per_run_preprocess
from imdad_jax.experiment import make_split, run_experiment

FITTED = tuple(p for p in PREPROCESSING if p != "unit")


def _images(n_train: int = 30, n_test: int = 10, n_classes: int = 2, size: int = 28) -> ImageDataset:
    xtr, ytr = make_class_images(n_train, n_classes=n_classes, size=size, seed=0)
    xte, yte = make_class_images(n_test, n_classes=n_classes, size=size, seed=1)
    return ImageDataset(xtr[..., None], ytr.astype(int), xte[..., None], yte.astype(int),
                        tuple(str(k) for k in range(n_classes)), "test")


def _cov(a: np.ndarray) -> np.ndarray:
    f = np.asarray(a, np.float64).reshape(len(a), -1)
    return np.cov(f, rowvar=False, bias=True)


def test_zca_gives_identity_covariance_on_the_training_normals():
    rng = np.random.default_rng(0)
    tab = rng.normal(size=(4000, 6)) @ rng.normal(size=(6, 6)) + 3.0  # correlated, off-centre
    z = ZCA.fit(tab, eps=1e-8)
    np.testing.assert_allclose(_cov(z.transform(tab)), np.eye(6), atol=1e-4)
    np.testing.assert_allclose(z.w, z.w.T)  # zero-phase: symmetric, so the output stays image-shaped

    imgs = preprocess_images(make_class_images(800, n_classes=1, size=8)[0])  # (800, 8, 8, 1): 64 dims
    out = ZCA.fit(imgs, eps=1e-6).transform(imgs)
    assert out.shape == imgs.shape and out.dtype == np.float32
    np.testing.assert_allclose(_cov(out), np.eye(64), atol=1e-3)
    np.testing.assert_allclose(out.reshape(len(out), -1).mean(axis=0), 0, atol=1e-4)


def test_gcn_minmax_matches_a_hand_computation():
    normal = np.array([[[0., 1.], [2., 5.]]])  # mean 2, centred -2 -1 0 3, l1 scale 6/4
    np.testing.assert_allclose(gcn_l1(normal), [[[-4 / 3, -2 / 3], [0., 2.]]])
    t = GCNMinMax.fit(normal)
    assert (t.lo, t.hi) == pytest.approx((-4 / 3, 2.0))
    np.testing.assert_allclose(t.transform(normal), [[[0., .2], [.4, 1.]]], atol=1e-6)
    # another image: its own GCN (mean 2, centred -1 -1 -1 3, scale 1.5), the normals' min and max
    other = np.array([[[1., 1.], [1., 5.]]])
    np.testing.assert_allclose(t.transform(other), [[[.2, .2], [.2, 1.]]], atol=1e-6)
    # GCN ignores the pixel scale, so uint8 / 255 inputs give the same numbers
    np.testing.assert_allclose(GCNMinMax.fit(normal / 255).transform(other / 255), t.transform(other), atol=1e-6)
    assert np.all(gcn_l1(np.full((1, 2, 2), 0.3)) == 0)  # a constant image: zeros, not NaN


def test_gcn_minmax_recomputes_the_reference_mnist_constants():
    """The reference hard-codes (min, max) per MNIST class; computing them from the training normals agrees."""
    try:  # wherever the library's search order finds it, $IMDAD_MNIST_DIR included
        ds = load_mnist(None, os.environ.get(mnist.ENV_VAR))
    except DataNotFoundError:
        pytest.skip(f"MNIST is not on this machine (set ${mnist.ENV_VAR} or put it in ~/.cache/imdad_jax/mnist)")
    ref = {0: (-0.8826567065619495, 9.001545489292527), 1: (-0.6661464580883915, 20.108062262467364)}
    for k, (lo, hi) in ref.items():
        t = GCNMinMax.fit(preprocess_images(ds.x_train[ds.y_train == k]))
        assert (t.lo, t.hi) == pytest.approx((lo, hi), rel=1e-6)


def test_standardize_gives_zero_mean_unit_std_on_the_normals():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(500, 4, 4, 1))
    x[:, 0, 0] = 0.25  # a pixel that never varies among the normals: the floor keeps it finite
    t = Standardize.fit(x)
    out = t.transform(x)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-5)
    std = out.std(axis=0)
    np.testing.assert_allclose(np.delete(std.ravel(), 0), 1, atol=1e-5)
    assert std[0, 0] == 0 and np.isfinite(t.transform(np.ones((1, 4, 4, 1)))).all()


@pytest.mark.parametrize("name", PREPROCESSING)
def test_fit_sees_only_the_training_normals(name):
    """Poison everything but run r's normals (test rows NaN, other classes huge): the fitted transform,
    seen through its output on the normals, does not change."""
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(60, 6, 6, 1)).astype(np.float32)
    y = np.repeat([0, 1, 2], 20)
    x_test = rng.uniform(size=(15, 6, 6, 1)).astype(np.float32)
    _, data, _ = one_vs_rest_runs(x, y, (0, 1), (0,), anomaly_fraction=0.5)
    clean, clean_test, test_idx, test_valid = per_run_preprocess(name, data, x_test)

    for r, k in enumerate((0, 1)):
        x_bad = x.copy()
        x_bad[y != k] = 1e6
        bad_data = one_vs_rest_runs(x_bad, y, (0, 1), (0,), anomaly_fraction=0.5)[1]
        got, _, _, _ = per_run_preprocess(name, bad_data, np.full_like(x_test, np.nan))
        rows = clean.normal_pool[r, :clean.n_valid[r]]
        np.testing.assert_array_equal(got.x[rows], clean.x[rows])
        assert np.isfinite(got.x[rows]).all()
        # and it is the transform fit on exactly those normals
        np.testing.assert_allclose(clean.x[rows], fit_transform(name, x[y == k]).transform(x[y == k]), atol=1e-6)
        np.testing.assert_allclose(clean_test[test_idx[r, :test_valid[r]]],
                                   fit_transform(name, x[y == k]).transform(x_test), atol=1e-6)
    assert list(test_valid) == [15, 15] and clean_test.shape == (30, 6, 6, 1)


@pytest.mark.parametrize("name", FITTED)
def test_each_run_gets_its_own_transform(name):
    ds = _images(n_train=20, n_test=8, n_classes=3, size=12)
    cfg = make_config("tiny", dataset="fmnist", classes=(0, 1), seeds=(0, 1), preprocess=name)
    split = make_split(cfg, ds)
    d = split.data
    assert [(r["normal_class"], r["seed"]) for r in split.ids] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert split.test_rows(0).shape == (24, 12, 12, 1)
    assert not np.allclose(split.test_rows(0), split.test_rows(1))  # classes 0 and 1: different normals
    for r, rid in enumerate(split.ids):
        k, s = rid["normal_class"], rid["seed"]
        normals = preprocess_images(ds.x_train[ds.y_train == k])
        tf = fit_transform(name, normals)
        np.testing.assert_allclose(d.x[d.normal_pool[r, :d.n_valid[r]]], tf.transform(normals), atol=1e-5)
        anom = preprocess_images(ds.x_train[labelled_anomalies(ds.y_train, k, s, 0.1)])
        np.testing.assert_allclose(d.x[d.anomaly_pool[r, :d.m_valid[r]]], tf.transform(anom), atol=1e-5)
        np.testing.assert_allclose(split.test_rows(r), tf.transform(preprocess_images(ds.x_test)), atol=1e-5)
        np.testing.assert_array_equal(split.is_anomaly[r], ds.y_test != k)
    # The seeds of one class share its transform: one test copy and one block of training rows per class,
    # holding only the rows its runs train on (not the whole training set).
    assert len(split.x_test) == 2 * 24
    np.testing.assert_array_equal(split.test_idx[0], split.test_idx[2])
    used = sum(len(np.union1d(d.normal_pool[r, :d.n_valid[r]], np.union1d(d.anomaly_pool[r, :d.m_valid[r]],
                                                                           d.anomaly_pool[r + 2, :d.m_valid[r + 2]])))
               for r in (0, 1))
    assert len(d.x) == used < 2 * len(ds.x_train)


def test_unit_split_is_unchanged():
    """The default keeps today's layout: one shared [0, 1] copy of each set, every run scoring all of x_test."""
    ds = _images(n_train=20, n_test=8, n_classes=3, size=12)
    cfg = make_config("tiny", dataset="fmnist", classes=(0, 2), seeds=(0, 1))
    split = make_split(cfg, ds)
    ids, data, keys = one_vs_rest_runs(preprocess_images(ds.x_train), ds.y_train, (0, 2), (0, 1), 0.1)
    assert split.ids == ids and split.test_idx is None and split.test_valid is None
    for name in ("x", "normal_pool", "n_valid", "anomaly_pool", "m_valid"):
        np.testing.assert_array_equal(getattr(split.data, name), getattr(data, name))
    np.testing.assert_array_equal(split.keys, keys)
    np.testing.assert_array_equal(split.x_test, preprocess_images(ds.x_test))
    assert split.data.x.dtype == np.float32 and len(split.data.x) == len(ds.x_train)


def test_config_and_flag():
    with pytest.raises(ConfigError, match="unit, standardize, gcn_minmax, zca"):
        make_config(dataset="fmnist", preprocess="whiten")
    with pytest.raises(ConfigError, match="image datasets"):
        make_config(dataset="bc", preprocess="zca")
    assert make_config(dataset="fmnist").preprocess == "unit"
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import run as cli
    a = cli.parse_args(["--dataset=mnist", "--class=0", "--preset=tiny", "--preprocess=gcn_minmax"])
    assert cli.config_from_args(a).preprocess == "gcn_minmax"
    assert cli.config_from_args(cli.parse_args(["--dataset=mnist", "--class=0", "--preset=tiny"])).preprocess == "unit"


@pytest.mark.parametrize("name", PREPROCESSING)
def test_tiny_experiment_runs_with_each_option(name):
    ds = _images(n_train=30, n_test=10, n_classes=2, size=16)  # 256 pixels: ZCA's eigh stays well under a second
    cfg = make_config("tiny", dataset="fmnist", classes=(0, 1), epochs=1, preprocess=name, strategy="loop")
    out = run_experiment(cfg, ds)
    aucs = [r["auc"] for r in out["runs"]]
    assert len(aucs) == 2 and np.isfinite(aucs).all(), aucs
