"""The estimator face: fit / decision_function / predict, the sphere, save / load."""
import json

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.base import clone

from imdad_jax.estimator import IMDAD, DeepDetector


def _blobs(seed=0, n=300, m=20, d=5):
    rng = np.random.default_rng(seed)
    normals = rng.normal(0.0, 1.0, (n, d))
    anomalies = rng.normal(4.0, 1.0, (m, d))
    x = np.concatenate([normals, anomalies]).astype(np.float32)
    y = np.r_[np.zeros(n, int), np.ones(m, int)]
    return x, y


@pytest.fixture(scope="module")
def fitted():
    x, y = _blobs()
    return IMDAD(epochs=20, random_state=0).fit(x, y)


def test_fit_scores_and_sphere(fitted):
    xt, yt = _blobs(seed=1)
    s = fitted.decision_function(xt)
    assert s.shape == (len(xt),) and np.isfinite(s).all()
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(yt, s) > 0.95
    np.testing.assert_allclose(fitted.score_samples(xt), -s)
    pred = fitted.predict(xt)
    assert set(np.unique(pred)) <= {0, 1} and pred[yt == 1].mean() > pred[yt == 0].mean()
    assert fitted.center_.shape == (16,) and np.linalg.norm(fitted.center_) == pytest.approx(1.0, abs=1e-4)
    assert fitted.radius_ > 0 and fitted.margin_ > 0 and not fitted.diverged_
    assert fitted.history_["loss"].shape == (20,)


def test_same_seed_same_scores_and_clone():
    x, y = _blobs()
    a = IMDAD(epochs=3, random_state=5).fit(x, y).decision_function(x)
    b = clone(IMDAD(epochs=3, random_state=5)).fit(x, y).decision_function(x)
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip(fitted, tmp_path):
    xt, _ = _blobs(seed=2)
    fitted.save(tmp_path / "det")
    back = IMDAD.load(tmp_path / "det")
    np.testing.assert_array_equal(back.decision_function(xt), fitted.decision_function(xt))
    assert back.radius_ == pytest.approx(fitted.radius_) and back.get_params() == fitted.get_params()
    with pytest.raises(FileNotFoundError, match="no saved detector"):
        IMDAD.load(tmp_path / "nothing")


def test_a_folder_saved_in_the_first_format_still_loads(fitted, tmp_path):
    # Format 1 wrote the leaves of (params, obj_state) in tree order to params.npz; such folders must keep working.
    import jax

    xt, _ = _blobs(seed=2)
    folder = fitted.save(tmp_path / "old")
    (folder / "params.msgpack").unlink()
    np.savez(folder / "params.npz", *jax.tree.leaves((fitted.params_, fitted.obj_state_)))
    meta = json.loads((folder / "detector.json").read_text())
    (folder / "detector.json").write_text(json.dumps({**meta, "format": 1}))
    back = IMDAD.load(folder)
    np.testing.assert_array_equal(back.decision_function(xt), fitted.decision_function(xt))
    back.save(folder)  # saving again writes the current format and drops the old file
    assert (folder / "params.msgpack").is_file() and not (folder / "params.npz").exists()


def test_dataframe_images_and_other_methods(tmp_path):
    pd = pytest.importorskip("pandas")
    x, y = _blobs()
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    det = DeepDetector(method="deep_svdd", epochs=2).fit(df)  # normals only: y may be omitted
    assert det.decision_function(df).shape == (len(df),)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8)
    lab = np.r_[np.zeros(36, int), np.ones(4, int)]
    sad = DeepDetector(method="deep_sad", epochs=1, conv_features=(2, 4), dense_features=(8, 4), batch_size=8)
    sad.fit(imgs, lab)
    assert sad.decision_function(imgs).shape == (40,)
    sad.save(tmp_path / "sad")
    np.testing.assert_array_equal(DeepDetector.load(tmp_path / "sad").decision_function(imgs),
                                  sad.decision_function(imgs))


@pytest.mark.parametrize("X, y, match", [
    (np.zeros(10), None, "Reshape your data"),
    (np.full((10, 3), np.nan), np.zeros(10), "NaN"),
    (np.zeros((10, 3)), np.zeros(9), "one label per sample"),
    (np.zeros((10, 3)), np.full(10, 2), "0 \\(normal\\) and 1"),
    (np.zeros((10, 3)), np.zeros(10), "needs labelled anomalies"),
    (np.zeros((10, 3)), np.r_[np.ones(9), 0], "at least 2 normal"),
])
def test_bad_input_is_one_clear_error(X, y, match):
    with pytest.raises(ValueError, match=match):
        IMDAD(epochs=1).fit(X, y)


def test_unknown_hyperparameter_and_wrong_width(fitted):
    x, y = _blobs()
    with pytest.raises(ValueError, match="no hyperparameters"):
        IMDAD(epochs=1, hyperparams={"eta": 1.0}).fit(x, y)
    with pytest.raises(ValueError, match="X has 7 features, but IMDAD is expecting 5"):
        fitted.decision_function(np.zeros((3, 7)))


def test_fit_many_trains_every_point_as_one_program_and_matches_single_fits():
    x, y = _blobs()
    dets = IMDAD(epochs=3).fit_many(x, y, grid={"lr": [1e-3, 1e-2], "nu1": [0.05, 0.2]}, seeds=(0, 1))
    assert len(dets) == 8
    assert [(d.random_state, d.lr, d.hyperparams["nu1"]) for d in dets[:4]] == [
        (0, 1e-3, 0.05), (0, 1e-3, 0.2), (0, 1e-2, 0.05), (0, 1e-2, 0.2)]
    alone = clone(dets[6]).fit(x, y)  # seed 1, lr 1e-2, nu1 0.05, trained by itself
    np.testing.assert_allclose(dets[6].decision_function(x), alone.decision_function(x), rtol=1e-4, atol=1e-5)
    assert not np.allclose(dets[0].decision_function(x), dets[6].decision_function(x))
    with pytest.raises(ValueError, match="per-run values only"):
        IMDAD(epochs=1).fit_many(x, y, grid={"epochs": [1, 2]})


class _BinaryTarget(IMDAD):
    """IMDAD for scikit-learn's generic checks: they pass multiclass targets (0, 1, 2, ...), which IMD-AD rightly
    refuses (y marks labelled anomalies); this maps the first label to 0 (normal) and every other to 1, so every
    other property the checks test (validation, n_features_in_, sample-order and subset invariance, no
    parameter mutation, read-only memmaps, sparse refused, pickling, ...) is tested on the real estimator."""

    def fit(self, X, y=None):
        if y is not None and np.size(y):
            y = (np.asarray(y) != np.asarray(y).ravel()[0]).astype(int)
        return super().fit(X, y)


@parametrize_with_checks([_BinaryTarget(epochs=1, dense_features=(8, 4))])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
