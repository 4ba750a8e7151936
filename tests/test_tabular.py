"""Tabular and synthetic loaders, the shipped data files, and the 5-fold cross-validation protocol."""
import csv
import gzip
import hashlib
import io
from importlib import resources

import jax
import numpy as np
import pytest

from imdad_jax.data import (SYNTHETIC_DATASETS, TABULAR_DATASETS, TabularDataset, cv_key, cv_runs, load_synthetic,
                            load_tabular)
from imdad_jax.data import folds as folds_mod
from imdad_jax.data import tabular as tab

SHA256 = {"ctg.csv.gz": "5b3fb80bf521e602ce1ccbd6d6f6c3c806a6b4da3c4ad0671de65ea4e34c9001",
          "obs.csv.gz": "013af0103bff8904e1b8f9d8357fe2a79f5d733de84ec8569af4fc49aef8cee4"}


@pytest.fixture(scope="module")
def datasets():
    return {name: load_tabular(name) for name in TABULAR_DATASETS}


def _raw_csv(filename):
    raw = resources.files("imdad_jax.data").joinpath("files", filename).read_bytes()
    rows = list(csv.reader(io.StringIO(gzip.decompress(raw).decode(), newline="")))
    return rows[0], rows[1:]


def _check(d: TabularDataset, n, dim, counts):
    assert d.x.shape == (n, dim) and d.x.dtype == np.float32
    assert d.y.shape == (n,) and np.issubdtype(d.y.dtype, np.integer)
    assert np.bincount(d.y).tolist() == counts
    assert len(d.class_names) == len(counts) and len(d.feature_names) == dim
    assert np.isfinite(d.x).all()
    assert d.source


def test_shipped_files_are_the_shared_bytes_and_found_by_importlib():
    folder = resources.files("imdad_jax.data").joinpath("files")
    for name, digest in SHA256.items():
        assert hashlib.sha256(folder.joinpath(name).read_bytes()).hexdigest() == digest
    assert "CC BY 4.0" in folder.joinpath("ATTRIBUTION.md").read_text()


def test_bc(datasets):
    d = datasets["bc"]
    _check(d, 569, 30, [212, 357])
    assert d.class_names == ("malignant", "benign")


def test_card(datasets):
    d = datasets["card"]
    _check(d, 2126, 21, [384, 579, 53, 81, 72, 332, 252, 107, 69, 197])
    assert d.feature_names == tab.CARD_FEATURES and d.feature_names[0] == "LB" and d.feature_names[-1] == "Tendency"
    assert d.class_names[0] == "A" and d.class_names[-1] == "SUSP"
    header, rows = _raw_csv("ctg.csv.gz")
    # Labels are CLASS - 1 in file order; NSP is not a feature.
    assert (d.y == np.array([int(r[header.index("CLASS")]) for r in rows]) - 1).all()
    assert "NSP" not in d.feature_names and "CLASS" not in d.feature_names


def test_on(datasets):
    d = datasets["on"]
    _check(d, 1075, 21, [500, 300, 155, 120])
    assert d.class_names == ("NB-No Block", "NB-Wait", "No Block", "Block")
    assert "Class" not in d.feature_names
    status = d.x[:, d.feature_names.index("Node Status")]
    assert np.bincount(status.astype(int)).tolist() == [475, 285, 315]  # B, NB, P NB
    header, rows = _raw_csv("obs.csv.gz")
    assert [d.class_names[k] for k in d.y] == [r[header.index("Class")] for r in rows]


def test_on_packet_lost_identity_and_fill(datasets):
    header, rows = _raw_csv("obs.csv.gz")
    col = lambda name: np.array([float(r[header.index(name)]) if r[header.index(name)].strip() else np.nan
                                 for r in rows])
    sent, got, lost = col("Packet_Transmitted"), col("Packet_Received"), col("Packet_lost")
    missing = np.isnan(lost)
    assert missing.sum() == 15
    holds = lost[~missing] == (sent - got)[~missing]
    # The identity holds on 1045 of 1060 given rows; the rest are 3 distinct records repeated 5 times.
    assert holds.sum() == 1045
    bad = np.flatnonzero(~missing)[~holds]
    assert len({tuple(rows[i]) for i in bad}) == 3
    d = datasets["on"]
    filled = d.x[missing, d.feature_names.index("Packet_lost")]
    np.testing.assert_array_equal(filled, (sent - got)[missing])
    # Independent check of the fill: the byte counts give the same number of lost packets.
    byte_lost = (col("Transmitted_Byte") - col("Received_Byte")) / col("Packet Size_Byte")
    np.testing.assert_array_equal(filled, byte_lost[missing])
    np.testing.assert_array_equal(d.x[~missing, d.feature_names.index("Packet_lost")], lost[~missing])


@pytest.mark.parametrize("name", SYNTHETIC_DATASETS)
def test_synthetic(name):
    d = load_synthetic(name)
    _check(d, 1000, 2, [500, 500])
    np.testing.assert_array_equal(d.x, load_synthetic(name, seed=0).x)
    assert not np.array_equal(d.x, load_synthetic(name, seed=1).x)
    assert np.bincount(load_synthetic(name, n=11).y).tolist() in ([6, 5], [5, 6])


def test_spiral_follows_its_formula_without_noise():
    d = load_synthetic("spiral", n=200, noise=0.0)
    r = np.linalg.norm(d.x, axis=1)
    angle = 2 * np.pi * tab.SPIRAL_TURNS * r + np.pi * d.y
    np.testing.assert_allclose(d.x, r[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1), atol=1e-5)


def test_bad_names_raise():
    with pytest.raises(ValueError, match="bc, card, on"):
        load_tabular("cifar")
    with pytest.raises(ValueError, match="load_synthetic"):
        load_tabular("moons")
    with pytest.raises(ValueError, match="moons, spiral"):
        load_synthetic("circles")
    with pytest.raises(ValueError, match="load_tabular"):
        load_synthetic("bc")


# ---- protocol ----

@pytest.fixture(scope="module")
def card_runs(datasets):
    d = datasets["card"]
    classes = [0, 2, 8]  # a large, a small and a mid class keep the test fast
    return d, classes, cv_runs(d.x, d.y, classes, seeds=[0, 1])


def _fold_tests(ids, test_idx, test_valid, n, seed):
    """Test rows (original indices) of each fold of one seed, from that seed's first class."""
    out = {}
    for r, run in enumerate(ids):
        if run["seed"] == seed and run["fold"] not in out:
            out[run["fold"]] = test_idx[r, :test_valid[r]] - r * n
    return [out[f] for f in sorted(out)]


def test_run_order_shapes_and_keys(card_runs):
    d, classes, (ids, data, keys, test_idx, test_valid) = card_runs
    n = len(d.x)
    assert [(i["seed"], i["fold"], i["normal_class"]) for i in ids] == [
        (s, f, k) for s in (0, 1) for f in range(5) for k in classes]
    r_runs = len(ids)
    assert data.x.shape == (r_runs * n, 21) and data.x.dtype == np.float32 and np.isfinite(data.x).all()
    assert keys.shape == (r_runs, 2) and keys.dtype == np.uint32
    assert len({tuple(k) for k in keys.tolist()}) == r_runs
    run = ids[7]
    want = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(run["seed"]), run["fold"]), run["normal_class"])
    np.testing.assert_array_equal(keys[7], np.asarray(want))
    np.testing.assert_array_equal(keys[7], cv_key(run["seed"], run["fold"], run["normal_class"]))
    for pool, valid in ((data.normal_pool, data.n_valid), (data.anomaly_pool, data.m_valid), (test_idx, test_valid)):
        assert pool.dtype == np.int32 and pool.shape[0] == r_runs
        for r in range(r_runs):
            rows = pool[r, :valid[r]]
            assert rows.min() >= r * n and rows.max() < (r + 1) * n  # each run indexes its own copy
            assert (pool[r, valid[r]:] == 0).all()


def test_folds_stratified_disjoint_covering_and_seeded(card_runs):
    d, _, (ids, _, _, test_idx, test_valid) = card_runs
    n = len(d.x)
    total = np.bincount(d.y, minlength=10)
    for seed in (0, 1):
        tests = _fold_tests(ids, test_idx, test_valid, n, seed)
        assert len(tests) == 5
        allrows = np.concatenate(tests)
        assert len(allrows) == n and len(np.unique(allrows)) == n  # disjoint and covering
        for t in tests:
            assert np.abs(np.bincount(d.y[t], minlength=10) - total / 5).max() <= 1
    again = cv_runs(d.x, d.y, [0], seeds=[0])
    for a, b in zip(_fold_tests(ids, test_idx, test_valid, n, 0), _fold_tests(again[0], again[3], again[4], n, 0)):
        np.testing.assert_array_equal(np.sort(a), np.sort(b))
    s0, s1 = (_fold_tests(ids, test_idx, test_valid, n, s) for s in (0, 1))
    assert not all(np.array_equal(np.sort(a), np.sort(b)) for a, b in zip(s0, s1))


def test_training_normals_anomalies_and_labels(card_runs):
    d, _, (ids, data, _, test_idx, test_valid) = card_runs
    n = len(d.x)
    labels = folds_mod.test_labels(d.y, ids, test_idx, test_valid, n)
    for r, run in enumerate(ids):
        k, off = run["normal_class"], r * n
        test = test_idx[r, :test_valid[r]] - off
        train = np.setdiff1d(np.arange(n), test)
        normals = data.normal_pool[r, :data.n_valid[r]] - off
        anomalies = data.anomaly_pool[r, :data.m_valid[r]] - off
        np.testing.assert_array_equal(np.sort(normals), train[d.y[train] == k])
        others = train[d.y[train] != k]
        assert np.isin(anomalies, others).all() and not np.isin(anomalies, test).any()
        assert len(np.unique(anomalies)) == len(anomalies) == max(round(0.1 * len(others)), 1)
        np.testing.assert_array_equal(labels[r], d.y[test] != k)
    # Same draw for the same (seed, fold, class) whatever other classes run beside it.
    solo = cv_runs(d.x, d.y, [2], seeds=[1])
    r_both = next(r for r, i in enumerate(ids) if (i["seed"], i["fold"], i["normal_class"]) == (1, 3, 2))
    np.testing.assert_array_equal(solo[1].anomaly_pool[3, :solo[1].m_valid[3]] - 3 * n,
                                  data.anomaly_pool[r_both, :data.m_valid[r_both]] - r_both * n)


def test_contamination_mixes_unlabelled_anomalies_into_the_training_normals(datasets, card_runs):
    d, classes, (ids, clean, _, test_idx, test_valid) = card_runs
    n = len(d.x)
    _, dirty, _, test_idx2, _ = cv_runs(d.x, d.y, classes, seeds=[0, 1], contamination=0.1)
    np.testing.assert_array_equal(test_idx2, test_idx)  # the folds and the test rows are the clean protocol's
    np.testing.assert_array_equal(dirty.anomaly_pool, clean.anomaly_pool)  # so are the labelled anomalies
    for r, run in enumerate(ids):
        off, k = r * n, run["normal_class"]
        pool = dirty.normal_pool[r, :dirty.n_valid[r]] - off
        labelled = clean.anomaly_pool[r, :clean.m_valid[r]] - off
        dirt = pool[d.y[pool] != k]
        assert set(pool[d.y[pool] == k]) == set(clean.normal_pool[r, :clean.n_valid[r]] - off)
        assert not np.isin(dirt, labelled).any() and not np.isin(dirt, test_idx[r, :test_valid[r]] - off).any()
        assert len(dirt) / len(pool) == pytest.approx(0.1, abs=0.01) or len(dirt) == (
            np.sum(d.y[np.setdiff1d(np.arange(n), test_idx[r, :test_valid[r]] - off)] != k) - len(labelled))
    with pytest.raises(ValueError, match="contamination must lie in"):
        cv_runs(d.x, d.y, classes, seeds=[0], contamination=1.0)


def test_scaler_is_fit_on_training_normals_only(datasets):
    d = datasets["bc"]
    x, y, n = d.x.copy(), d.y, len(d.x)
    ids, data, *_, test_idx, test_valid = cv_runs(x, y, [0, 1], seeds=[0])
    r = 3
    off = r * n
    normals = data.normal_pool[r, :data.n_valid[r]]
    scaled = data.x[normals]
    np.testing.assert_allclose(scaled.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(scaled.std(0), 1, atol=1e-3)
    # Move the run's test rows and labelled anomalies far away: its training normals must not change.
    moved = x.copy()
    moved[test_idx[r, :test_valid[r]] - off] += 1000.0
    moved[data.anomaly_pool[r, :data.m_valid[r]] - off] -= 500.0
    data2 = cv_runs(moved, y, [0, 1], seeds=[0])[1]
    np.testing.assert_allclose(data2.x[normals], scaled, rtol=1e-5, atol=1e-5)
    # Move one training normal: the scaling (and so every training normal) changes.
    moved = x.copy()
    moved[normals[0] - off] += 5 * x[normals - off].std(0)
    data3 = cv_runs(moved, y, [0, 1], seeds=[0])[1]
    assert (np.abs(data3.x[normals[1:]] - scaled[1:]) > 1e-3).any(axis=0).all()


def test_zero_variance_features_stay_finite():
    x, y = load_synthetic("moons", n=200).x, load_synthetic("moons", n=200).y
    on_normals_only = np.where(y == 0, 3.0, np.arange(len(y), dtype=np.float32))  # constant on class 0 only
    x = np.column_stack([x, np.full(len(y), 7.0), on_normals_only]).astype(np.float32)
    ids, data, *_ = cv_runs(x, y, [0, 1], seeds=[0])
    assert np.isfinite(data.x).all()
    assert (data.x[:, 2] == 0).all()  # constant everywhere: centred, not divided by zero


def test_protocol_errors():
    x, y = load_synthetic("moons", n=40).x, load_synthetic("moons", n=40).y
    with pytest.raises(ValueError, match="does not occur"):
        cv_runs(x, y, [2], seeds=[0])
    with pytest.raises(ValueError, match="anomaly fraction"):
        cv_runs(x, y, [0], seeds=[0], anomaly_fraction=0.0)
    with pytest.raises(ValueError, match="n_folds"):
        cv_runs(x[:6], np.array([0, 0, 0, 1, 1, 1]), [0], seeds=[0])
    with pytest.raises(ValueError, match="NaN"):
        cv_runs(np.where(np.arange(40)[:, None] == 3, np.nan, x), y, [0], seeds=[0])
