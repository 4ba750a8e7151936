"""The estimator face: fit / decision_function / predict, the sphere, save / load."""
import json

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.base import clone

from imdad_jax.estimator import IMDAD, DeepDetector, sklearn_expected_failed_checks


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


def test_fit_many_run_k_is_fit_with_its_values():
    x, y = _blobs()
    dets = IMDAD(epochs=3).fit_many(x, y, grid={"lr": [1e-3, 1e-2], "nu1": [0.05, 0.2]}, seeds=(0, 1))
    assert len(dets) == 8
    assert [(d.random_state, d.lr, d.hyperparams["nu1"]) for d in dets[:4]] == [
        (0, 1e-3, 0.05), (0, 1e-3, 0.2), (0, 1e-2, 0.05), (0, 1e-2, 0.2)]
    alone = clone(dets[6]).fit(x, y)  # seed 1, lr 1e-2, nu1 0.05, trained by itself
    # the same compiled program trains both: the same detector, not merely close
    np.testing.assert_array_equal(dets[6].decision_function(x), alone.decision_function(x))
    assert dets[6].threshold_ == alone.threshold_ and (dets[6].labels_ == alone.labels_).all()
    assert not np.allclose(dets[0].decision_function(x), dets[6].decision_function(x))
    fast = IMDAD(epochs=3).fit_many(x, y, grid={"lr": [1e-3, 1e-2], "nu1": [0.05, 0.2]}, seeds=(0, 1),
                                    strategy="vmap")  # side by side in one program: equal up to rounding
    np.testing.assert_allclose(fast[6].decision_function(x), alone.decision_function(x), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="per-run values only"):
        IMDAD(epochs=1).fit_many(x, y, grid={"epochs": [1, 2]})


def _compiles(fn):
    """The XLA compilations ``fn()`` triggers (JAX's own log of them)."""
    import logging

    import jax

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            fn()
    finally:
        logger.removeHandler(handler)
    return [r.getMessage() for r in records if "Compiling" in r.getMessage()]


def test_a_second_fit_of_the_same_shape_compiles_nothing():
    x, y = _blobs(n=200, d=7)  # a width no other test uses: the first fit must compile
    assert _compiles(lambda: IMDAD(epochs=2, random_state=0).fit(x, y).decision_function(x))
    # other seed, learning rate and hyperparameters: arguments of the same programs
    again = _compiles(lambda: IMDAD(epochs=2, random_state=1, lr=3e-3, hyperparams={"nu1": 0.2}).fit(x, y)
                      .decision_function(x))
    assert again == [], again[:3]


# ---- PyOD's conventions (the assertions of PyOD's own detector tests, on this estimator) -------------------
@pytest.fixture(scope="module")
def pyod_case():
    x, y = _blobs(n=300, m=30)
    xt, yt = _blobs(seed=1, n=200, m=20)
    return x, y, xt, yt, IMDAD(epochs=20).fit(x, y)


def test_pyod_parameters_and_attributes_after_fit(pyod_case):
    x, y, xt, yt, det = pyod_case
    for attr in ("decision_scores_", "threshold_", "labels_", "center_", "radius_"):
        assert getattr(det, attr) is not None
    assert det.decision_scores_.shape == y.shape and det.labels_.shape == y.shape
    np.testing.assert_allclose(det.decision_scores_, det.decision_function(x), rtol=1e-6)
    assert set(np.unique(det.labels_)) <= {0, 1}
    assert (det.labels_ == (det.decision_scores_ > det.threshold_)).all()
    assert (det.predict(x) == det.labels_).all()  # one place decides both
    assert det.threshold_rule_ == "sphere" and det.threshold_ == 0.0
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(yt, det.decision_function(xt)) > 0.9
    assert (IMDAD(epochs=20).fit_predict(x, y) == det.labels_).all()


def test_pyod_predict_proba_and_confidence(pyod_case):
    x, y, xt, yt, det = pyod_case
    for method in ("linear", "unify"):
        p = det.predict_proba(xt, method=method)
        assert p.shape == (len(xt), 2) and p.min() >= 0 and p.max() <= 1
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
        assert np.corrcoef(p[:, 1], det.decision_function(xt))[0, 1] > 0.5  # follows the score
    p, conf = det.predict_proba(xt, return_confidence=True)
    assert conf.shape == (len(xt),) and conf.min() >= 0 and conf.max() <= 1
    np.testing.assert_array_equal(conf, det.predict_confidence(xt))
    with pytest.raises(ValueError, match="method must be one of"):
        det.predict_proba(xt, method="softmax")


@pytest.mark.parametrize("kw, rule", [({"contamination": 0.1}, "contamination"),
                                      ({"threshold": "gaussian"}, "gaussian")])
def test_thresholds_by_contamination_and_gaussian(pyod_case, kw, rule):
    x, y, xt, yt, base = pyod_case
    det = IMDAD(epochs=20, **kw).fit(x, y)
    if rule == "contamination":  # a contamination acts through the threshold and nu1 = max(0.1, 4c) only
        base = IMDAD(epochs=20, hyperparams={"nu1": 0.4}).fit(x, y)
    np.testing.assert_array_equal(det.decision_scores_, base.decision_scores_)  # the threshold changes no weight
    assert det.threshold_rule_ == rule and (det.predict(x) == det.labels_).all()
    if rule == "contamination":
        assert abs(det.labels_.mean() - 0.1) <= 1 / len(x)
    else:
        normals = det.decision_scores_[y == 0]
        assert det.threshold_ == pytest.approx(normals.mean() + 3 * normals.std(ddof=1), rel=1e-5)


def test_threshold_defaults_follow_the_method_and_bad_values_are_refused():
    x, y = _blobs()
    sad = DeepDetector(method="deep_sad", epochs=2).fit(x, y)
    assert sad.threshold_rule_ == "gaussian"  # a distance has no boundary at 0
    with pytest.raises(ValueError, match="threshold='sphere' needs a score with a boundary"):
        DeepDetector(method="deep_sad", epochs=1, threshold="sphere").fit(x, y)
    with pytest.raises(ValueError, match=r"contamination must lie in \(0, 0.5\]"):
        IMDAD(epochs=1, contamination=0.7).fit(x, y)
    with pytest.raises(ValueError, match="threshold must be one of"):
        IMDAD(epochs=1, threshold="otsu").fit(x, y)


def test_threshold_and_explanation_survive_save_and_load(pyod_case, tmp_path):
    x, y, xt, yt, _ = pyod_case
    det = IMDAD(epochs=5, contamination=0.05).fit(x, y)
    back = IMDAD.load(det.save(tmp_path / "m"))
    assert back.threshold_ == det.threshold_ and back.threshold_rule_ == "contamination"
    np.testing.assert_array_equal(back.predict(xt), det.predict(xt))
    np.testing.assert_array_equal(back.predict_proba(xt), det.predict_proba(xt))
    np.testing.assert_allclose(back.explain(xt[:5]), det.explain(xt[:5]), rtol=1e-6)


def test_explain_finds_the_feature_that_makes_each_anomaly():
    # normals N(0, I) in 8 dims; each anomaly is a normal row with one known feature pushed to +-5..7
    def make(n, m, seed):
        r = np.random.default_rng(seed)
        xn, xa, j = r.normal(0, 1, (n, 8)), r.normal(0, 1, (m, 8)), r.integers(0, 8, m)
        xa[np.arange(m), j] = r.choice([-1, 1], m) * r.uniform(5, 7, m)
        return np.concatenate([xn, xa]).astype(np.float32), np.r_[np.zeros(n, int), np.ones(m, int)], j

    x, y, _ = make(1000, 30, 0)
    xt, yt, jt = make(0, 200, 1)
    # the default schedule, three seeds (fit_many's runs are single fits): the top feature is the pushed one in
    # >= 90% of the anomalies over the seeds, and in >= 90% of those each seed flags (the misses are anomalies the
    # detector scores inside its boundary: a detection miss, not an explanation's)
    hits, flagged_hits = [], []
    for d in IMDAD().fit_many(x, y, seeds=(0, 1, 2)):
        hit = d.explain(xt).argmax(axis=1) == jt
        hits.append(hit)
        flagged_hits.append(float(hit[d.predict(xt) == 1].mean()))
    assert np.mean(hits) >= 0.9 and min(flagged_hits) >= 0.9, ([h.mean() for h in hits], flagged_hits)
    det = IMDAD().fit(x, y)
    a = det.explain(xt)
    assert a.shape == xt.shape
    s, s0 = det.decision_function(xt), det.decision_function(det.explain_baseline_[None])[0]
    np.testing.assert_allclose(a.sum(axis=1), s - s0, atol=0.05 * np.abs(s - s0).max())  # completeness
    with pytest.raises(ValueError, match="attributes a table.s scores"):
        IMDAD(epochs=1).fit(np.random.default_rng(0).random((20, 8, 8)).astype(np.float32),
                            np.r_[np.zeros(18, int), np.ones(2, int)]).explain(np.zeros((1, 8, 8), np.float32))


def test_table_defaults_follow_the_data_and_older_folders_keep_their_widths(tmp_path):
    from imdad_jax.estimator import TABLE_DEFAULTS
    x, y = _blobs(n=400, m=20, d=40)
    det = IMDAD().fit(x, y)
    d = TABLE_DEFAULTS["imdad"]
    assert det.epochs_ == round(d.steps / np.ceil(len(x) / 50)) and det.lr_ == pytest.approx(d.lr)
    kernels = [v["kernel"].shape for v in det.params_["params"]["encoder"].values()]
    assert [k[1] for k in kernels] == [80, 40, 20]  # (max(64, 2d), max(32, d), max(16, d // 2)) for d = 40
    assert IMDAD(epochs=7).fit(x, y).epochs_ == 7
    # a stated contamination moves nu1 above it (nu-property), unless the user set nu1
    nu1 = lambda det: float(det._hp()["nu1"][0])  # noqa: E731
    fitted = IMDAD(epochs=1, contamination=0.1).fit(x, y)
    assert nu1(fitted) == pytest.approx(0.4) and nu1(det) == pytest.approx(0.1)
    assert nu1(IMDAD(epochs=1, contamination=0.02).fit(x, y)) == pytest.approx(0.1)
    assert nu1(IMDAD(epochs=1, contamination=0.1, hyperparams={"nu1": 0.15}).fit(x, y)) == pytest.approx(0.15)
    assert DeepDetector(method="deep_sad").fit(x, y).epochs_ == 100  # measured for IMD-AD only
    # a folder from before widths followed the features: dense_features None meant FC3's (64, 32, 16)
    old = IMDAD(epochs=2, dense_features=(64, 32, 16)).fit(x, y)
    path = old.save(tmp_path / "old")
    meta = json.loads((path / "detector.json").read_text())
    meta["format"], meta["params"]["dense_features"] = 2, None
    (path / "detector.json").write_text(json.dumps(meta))
    back = IMDAD.load(path)
    np.testing.assert_array_equal(back.decision_function(x), old.decision_function(x))


def test_top_level_imports():
    import imdad_jax
    from imdad_jax import IMDAD as top, DeepDetector as top_dd
    assert top is IMDAD and top_dd is DeepDetector and "IMDAD" in imdad_jax.__all__


class _BinaryTarget(IMDAD):
    """IMDAD with scikit-learn's multiclass targets mapped to 0/1 (the first label 0, every other 1), so that the
    checks declared in ``sklearn_expected_failed_checks`` (they pass y = 0, 1, 2, ...) still test their own
    property (validation, n_features_in_, sample-order and subset invariance, no parameter mutation, read-only
    memmaps, ...) on the real estimator."""

    def fit(self, X, y=None):
        if y is not None and np.size(y):
            y = (np.asarray(y) != np.asarray(y).ravel()[0]).astype(int)
        return super().fit(X, y)


@parametrize_with_checks([IMDAD(epochs=1, dense_features=(8, 4)),
                          DeepDetector(method="deep_svdd", epochs=1, dense_features=(8, 4))],
                         expected_failed_checks=sklearn_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@parametrize_with_checks([_BinaryTarget(epochs=1, dense_features=(8, 4))])
def test_sklearn_estimator_checks_with_a_binary_target(estimator, check):
    check(estimator)
