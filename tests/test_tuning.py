"""Validation-split tuning: grid parsing, the holdout, the run x point layout, and no test-set leakage."""
import numpy as np
import pytest

from imdad_jax.config import ConfigError, make_config
from imdad_jax.data import load_synthetic
from imdad_jax.experiment import make_split, run_experiment, tune_hyperparams
from imdad_jax.train import plan_batches
from imdad_jax.tuning import choose, grid_hyperparams, grid_points, holdout, parse_grid, tile_runs


def test_parse_grid_and_points():
    grid = parse_grid("lr=1e-3,1e-4; nu1=0.05,0.1,0.2")
    assert grid == (("lr", (1e-3, 1e-4)), ("nu1", (0.05, 0.1, 0.2)))
    pts = grid_points(grid)
    assert len(pts) == 6 and pts[0] == {"lr": 1e-3, "nu1": 0.05} and pts[-1] == {"lr": 1e-4, "nu1": 0.2}
    for bad, msg in (("lr", "NAME=V1"), ("lr=a,b", "not a number"), ("lr=1,1", "repeats"),
                     ("lr=1;lr=2", "twice")):
        with pytest.raises(ValueError, match=msg):
            parse_grid(bad)


def test_config_rejects_untunable_names():
    with pytest.raises(ConfigError, match="cannot tune"):
        make_config(dataset="moons", method="deep_sad", tune=(("nu1", (0.1,)),))
    with pytest.raises(ConfigError, match="cannot tune"):
        make_config(dataset="moons", tune=(("epochs", (1.0, 2.0)),))
    with pytest.raises(ConfigError, match="val_fraction"):
        make_config(dataset="moons", tune=(("lr", (1e-3,)),), val_fraction=1.0)
    make_config(dataset="moons", method="deep_sad", tune=(("eta", (0.5, 1.0)), ("lr", (1e-3,))))


def _split(**over):
    ds = load_synthetic("moons")
    cfg = make_config(dataset="moons", classes=(0, 1), seeds=(0,), n_folds=2, epochs=2, **over)
    return cfg, make_split(cfg, ds), ds


def test_holdout_partitions_each_runs_training_pools():
    _, split, _ = _split()
    data = split.data
    ho = holdout(data, split.keys, 0.25)
    for r in range(data.n_runs):
        norm = set(data.normal_pool[r, :data.n_valid[r]].tolist())
        anom = set(data.anomaly_pool[r, :data.m_valid[r]].tolist())
        tr_n = set(ho.train.normal_pool[r, :ho.train.n_valid[r]].tolist())
        tr_a = set(ho.train.anomaly_pool[r, :ho.train.m_valid[r]].tolist())
        val = ho.val_idx[r, :ho.val_valid[r]]
        lab = ho.val_is_anomaly[r]
        assert set(val[~lab].tolist()) | tr_n == norm and not set(val[~lab].tolist()) & tr_n
        assert set(val[lab].tolist()) | tr_a == anom and not set(val[lab].tolist()) & tr_a
        assert 1 <= lab.sum() < len(anom) and abs((~lab).sum() - 0.25 * len(norm)) <= 1
        test = set(split.test_idx[r, :split.test_valid[r]].tolist())
        assert not test & set(val.tolist())
    again = holdout(data, split.keys, 0.25)  # seeded by the runs' keys
    np.testing.assert_array_equal(again.val_idx, ho.val_idx)


def test_holdout_needs_two_anomalies():
    _, split, _ = _split()
    data = split.data
    data.m_valid[0] = 1
    with pytest.raises(ValueError, match="fewer than 2 labelled anomalies"):
        holdout(data, split.keys, 0.25)


def test_grid_layout_matches_tiled_runs():
    _, split, _ = _split()
    pts = grid_points(parse_grid("lr=1,2,3"))
    n = split.data.n_runs
    base = {"lr": np.full(n, 9.0), "nu": np.arange(n) / 10}
    hp = grid_hyperparams(base, pts)
    tiled, keys = tile_runs(split.data, split.keys, len(pts))
    assert tiled.n_runs == 3 * n
    np.testing.assert_array_equal(hp["lr"], [1, 2, 3] * n)
    np.testing.assert_allclose(hp["nu"], np.repeat(np.arange(n) / 10, 3))
    np.testing.assert_array_equal(keys[3], split.keys[1])
    np.testing.assert_array_equal(tiled.normal_pool[4], split.data.normal_pool[1])


def test_choose_skips_diverged_points_and_breaks_ties_by_grid_order():
    auc = np.array([0.8, np.nan, 0.9, 0.7, 0.7, 0.6])
    np.testing.assert_array_equal(choose(auc, 3), [2, 0])


def test_anomaly_share_balances_batches():
    plan = plan_batches(285, 17, 50, anomaly_share=0.5)
    assert (plan.n_per_batch, plan.a_per_batch) == (25, 25)
    assert plan_batches(285, 17, 50).a_per_batch == 3  # the training set's proportion
    with pytest.raises(ValueError, match="anomaly_share"):
        plan_batches(285, 17, 50, anomaly_share=1.0)


def test_tuning_never_reads_test_rows():
    # Poison every run's test rows in its own copy of the data: a tuner that trained or validated
    # on them would see NaN (and so a NaN validation AUC or a diverged run).
    cfg, split, _ = _split(tune=(("lr", (1e-3, 1e-2)),))
    hp_clean, rep_clean = tune_hyperparams(cfg, split)
    for r in range(split.data.n_runs):
        split.data.x[split.test_idx[r, :split.test_valid[r]]] = np.nan
    hp_poisoned, rep_poisoned = tune_hyperparams(cfg, split)
    assert np.isfinite(rep_poisoned["val_auc"]).all()
    np.testing.assert_allclose(rep_poisoned["val_auc"], rep_clean["val_auc"], atol=1e-6)
    np.testing.assert_array_equal(hp_poisoned["lr"], hp_clean["lr"])
    assert set(hp_clean["lr"].tolist()) <= {np.float32(1e-3), np.float32(1e-2)}


def test_tuned_experiment_records_the_choice():
    ds = load_synthetic("moons")
    cfg = make_config(dataset="moons", classes=(0,), seeds=(0,), n_folds=2, epochs=2,
                      tune=(("lr", (1e-3, 1e-2)),))
    out = run_experiment(cfg, ds)
    assert out["tuning"]["val_auc"].shape == (2, 2)
    for r, row in enumerate(out["runs"]):
        k = int(out["tuning"]["chosen"][r])
        assert row["tuned"] == out["tuning"]["points"][k]
        assert row["val_auc"] == pytest.approx(np.nanmax(out["tuning"]["val_auc"][r]))
        assert row["auc"] is not None and 0.0 <= row["auc"] <= 1.0
