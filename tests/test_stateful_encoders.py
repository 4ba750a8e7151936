"""The stateful encoder options: BatchNorm (running averages in a ``batch_stats`` collection) and
dropout (a per-run RNG stream) inside the run-axis train step.

What must hold: each run normalises by its own batch and keeps its own averages (run 3's do not depend on
run 5's data); the train pass differs from the eval pass (and the eval pass is deterministic); dropout masks
come from the run's own key (the same on the vmapped axis as in the loop); both train on a tiny problem.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import blobs, make_class_images
from flax.traverse_util import flatten_dict
from sklearn.metrics import roc_auc_score

from imdad_jax.config import ConfigError, make_config
from imdad_jax.data import ImageDataset, one_vs_rest_runs
from imdad_jax.experiment import run_experiment
from imdad_jax.models import build_encoder
from imdad_jax.objectives import get_objective
from imdad_jax.train import fit
from imdad_jax.train.step import TrainMode, has_train_mode

OBJ = get_objective("imdad")
SVDD = get_objective("deep_svdd")


def _hp(obj, n: int, lr: float = 1e-2) -> dict[str, np.ndarray]:
    hp = {**obj.DEFAULT_HP, "lr": lr, "weight_decay": 1e-6}
    return {k: np.full(n, v, np.float32) for k, v in hp.items() if k in (*obj.HYPERPARAMS, "lr", "weight_decay")}


def _blob_runs(n_seeds: int = 1, classes=(0, 1)):
    x, y = blobs(n_normal=120, n_anom=120, dim=5, seed=0)
    ids, data, keys = one_vs_rest_runs(x, y, classes, tuple(range(n_seeds)), anomaly_fraction=0.2)
    return x, y, data, keys


def _fit(data, keys, strategy="vmap", obj=OBJ, epochs=2, **opts):
    model = obj.make_model(build_encoder("fc3", dense_features=(16, 8), **opts), (5,), obj.Options())
    res = fit(model, obj, obj.Options(), data, _hp(obj, data.n_runs), keys, epochs=epochs, batch_size=16,
              strategy=strategy, epoch_mode="steps", devices=jax.devices()[:1])
    return model, res


def _run(tree, r: int):
    return jax.tree.map(lambda a: np.asarray(a[r]), tree)


def test_batch_norm_adds_running_averages_and_dropout_adds_no_parameters():
    x = jnp.ones((4, 5))
    plain = build_encoder("fc3", dense_features=(16, 8)).init(jax.random.PRNGKey(0), x)
    bn = build_encoder("fc3", dense_features=(16, 8), batch_norm=True).init(jax.random.PRNGKey(0), x)
    drop = build_encoder("fc3", dense_features=(16, 8), dropout=0.3).init(jax.random.PRNGKey(0), x)
    # affine-free (the reference LeNets'): no trainable parameter, only the two averages per hidden feature
    assert set(bn) == {"params", "batch_stats"}
    assert jax.tree.map(np.shape, bn["params"]) == jax.tree.map(np.shape, plain["params"])
    assert {k: v.shape for k, v in flatten_dict(bn["batch_stats"], sep="/").items()} == \
        {"bn0/mean": (16,), "bn0/var": (16,)}
    assert set(drop) == {"params"}
    assert not has_train_mode(build_encoder("fc3")) and has_train_mode(build_encoder("fc3", dropout=0.1))
    with pytest.raises(ValueError, match="dropout"):
        build_encoder("fc3", dropout=1.0)
    with pytest.raises(ConfigError, match="dropout"):
        make_config("tiny", dropout=-0.1)


def test_train_pass_uses_the_batch_statistics_and_updates_the_averages_by_hand():
    enc = build_encoder("fc3", dense_features=(16, 8), batch_norm=True)
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 5)) * 3.0 + 1.0
    variables = enc.init(jax.random.PRNGKey(0), x)
    m = TrainMode(enc, jax.random.PRNGKey(2))
    z_train = m.apply(variables, x)
    h = np.asarray(x) @ np.asarray(variables["params"]["dense0"]["kernel"])  # pre-norm activations
    stats = m.updates["batch_stats"]["bn0"]
    # torch's running-average rule with momentum 0.1 from the initial (0, 1); torch keeps the unbiased variance,
    # flax the biased one (documented in docs/method.md)
    np.testing.assert_allclose(stats["mean"], 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * h.var(0), rtol=1e-5)
    # the eval pass normalises by the stored averages, not the batch: it differs, and is deterministic
    z_eval = enc.apply(variables, x)
    assert not np.allclose(z_train, z_eval, atol=1e-3)
    np.testing.assert_array_equal(z_eval, enc.apply(variables, x))


def test_batch_norm_statistics_are_per_run_on_the_vmapped_axis():
    x, y, data, keys = _blob_runs(n_seeds=3)  # 6 runs: classes 0 and 1 x seeds 0..2
    _, ref = _fit(data, keys, batch_norm=True)
    # run 5 trains on other rows (class 1's normals become class 0's); run 3 must not notice
    pools = data.normal_pool.copy()
    pools[5] = data.normal_pool[0][: pools.shape[1]]
    other = dataclasses.replace(data, normal_pool=pools, n_valid=data.n_valid.copy())
    other.n_valid[5] = data.n_valid[0]
    _, got = _fit(other, keys, batch_norm=True)
    s_ref, s_got = ref.state.params["batch_stats"], got.state.params["batch_stats"]
    for a, b in zip(jax.tree.leaves(_run(s_ref, 3)), jax.tree.leaves(_run(s_got, 3))):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(_run(s_ref, 5)["encoder"]["bn0"]["mean"], _run(s_got, 5)["encoder"]["bn0"]["mean"])
    # and run 3 alone has the same averages as run 3 among six
    alone = dataclasses.replace(data, normal_pool=data.normal_pool[3:4], n_valid=data.n_valid[3:4],
                                anomaly_pool=data.anomaly_pool[3:4], m_valid=data.m_valid[3:4])
    _, solo = _fit(alone, keys[3:4], batch_norm=True)
    for a, b in zip(jax.tree.leaves(_run(s_ref, 3)), jax.tree.leaves(_run(solo.state.params["batch_stats"], 0))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the averages moved off their initial (0, 1)
    assert np.abs(_run(s_ref, 3)["encoder"]["bn0"]["mean"]).max() > 1e-3


@pytest.mark.parametrize("opts", [dict(batch_norm=True), dict(dropout=0.3), dict(batch_norm=True, dropout=0.2)])
def test_vmapped_run_axis_matches_the_loop(opts):
    _, _, data, keys = _blob_runs()
    _, ref = _fit(data, keys, strategy="loop", **opts)
    _, got = _fit(data, keys, strategy="vmap", **opts)
    for a, b in zip(jax.tree.leaves(ref.state.params), jax.tree.leaves(got.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


def test_dropout_masks_come_from_each_runs_key():
    _, _, data, keys = _blob_runs(n_seeds=2)  # 4 runs, four keys
    _, together = _fit(data, keys, dropout=0.3)
    first = dataclasses.replace(data, normal_pool=data.normal_pool[:1], n_valid=data.n_valid[:1],
                                anomaly_pool=data.anomaly_pool[:1], m_valid=data.m_valid[:1])
    _, alone = _fit(first, keys[:1], dropout=0.3)
    _, plain = _fit(first, keys[:1])
    # run 0's masks are its own: the same alone as beside three other runs ...
    for a, b in zip(jax.tree.leaves(_run(together.state.params, 0)), jax.tree.leaves(_run(alone.state.params, 0))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # ... and they act: the same run without dropout ends elsewhere
    k = lambda r: np.asarray(r.state.params["params"]["encoder"]["dense0"]["kernel"][0])  # noqa: E731
    assert not np.allclose(k(alone), k(plain), atol=1e-4)


def test_dropout_is_on_in_training_and_off_when_scoring():
    enc = build_encoder("fc3", dense_features=(16, 8), dropout=0.5)
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
    variables = enc.init(jax.random.PRNGKey(0), x)
    plain = build_encoder("fc3", dense_features=(16, 8))
    np.testing.assert_array_equal(enc.apply(variables, x), plain.apply(variables, x))  # eval: no dropout
    a = TrainMode(enc, jax.random.PRNGKey(5)).apply(variables, x)
    b = TrainMode(enc, jax.random.PRNGKey(6)).apply(variables, x)
    assert not np.allclose(a, plain.apply(variables, x)) and not np.allclose(a, b)


@pytest.mark.parametrize("obj", [OBJ, SVDD], ids=["imdad", "deep_svdd"])
@pytest.mark.parametrize("opts", [dict(batch_norm=True), dict(dropout=0.2)], ids=["batch_norm", "dropout"])
def test_stateful_options_train_on_blobs(obj, opts):
    x, y, data, keys = _blob_runs(classes=(0,))
    model, res = _fit(data, keys, strategy="loop", obj=obj, epochs=3, **opts)
    assert np.isfinite(np.asarray(res.history["loss"])).all() and not res.diverged.any()
    scores = np.asarray(obj.score(_run(res.state.params, 0), _run(res.state.obj_state, 0), model, jnp.asarray(x),
                                  obj.Options()))
    assert roc_auc_score(y, scores) > 0.8


def test_batch_norm_and_dropout_train_the_cnn_through_run_experiment():
    xtr, ytr = make_class_images(30, n_classes=2, size=16, seed=0)
    xte, yte = make_class_images(20, n_classes=2, size=16, seed=1)
    ds = ImageDataset(xtr[..., None], ytr.astype(int), xte[..., None], yte.astype(int), ("0", "1"), "test")
    cfg = make_config("tiny", dataset="fmnist", classes=(0,), epochs=2, lr=1e-3, strategy="vmap",
                      batch_norm=True, dropout=0.1)
    (row,) = run_experiment(cfg, ds)["runs"]
    assert np.isfinite(row["auc"]) and row["auc"] > 0.6, row


def test_estimator_takes_encoder_options_and_saves_the_running_averages(tmp_path):
    from imdad_jax.estimator import IMDAD
    x, y = blobs(n_normal=150, n_anom=15, dim=5, seed=3)
    det = IMDAD(epochs=3, encoder_options={"batch_norm": True, "dropout": 0.1}, random_state=0).fit(x, y)
    assert "batch_stats" in det.params_
    s = det.decision_function(x)
    np.testing.assert_array_equal(s, det.decision_function(x))  # scoring is the deterministic eval pass
    back = IMDAD.load(det.save(tmp_path / "det"))
    np.testing.assert_array_equal(back.decision_function(x), s)
    assert back.get_params()["encoder_options"] == {"batch_norm": True, "dropout": 0.1}
    for bad in ({"dropout": 1.5}, {"batchnorm": True}, {"projection": -2}):
        with pytest.raises(ValueError, match="encoder_options"):
            IMDAD(epochs=1, encoder_options=bad).fit(x, y)
