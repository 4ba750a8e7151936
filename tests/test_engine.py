"""The run-axis engine: strategies agree, sharding agrees, duals stay feasible, seeds fix everything."""
import jax
import numpy as np
import pytest

from imdad_jax.data import labelled_anomalies, one_vs_rest_runs
from imdad_jax.models import build_detector, sphere_geometry
from imdad_jax.objectives import get_objective
from imdad_jax.train import fit

OBJ = get_objective("imdad")


def _hp(n, lr=1e-2, **kw):
    base = dict(lr=lr, weight_decay=1e-6, nu=0.5, nu1=0.1, nu2=0.1, dual_lr=0.1, head_lr=0.1)
    base.update(kw)
    return {k: np.full(n, v, np.float32) for k, v in base.items()}


def _multiclass(n_classes=4, n=60, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (n_classes, dim))
    x = np.concatenate([rng.normal(m, 1, (n, dim)) for m in means]).astype(np.float32)
    y = np.repeat(np.arange(n_classes), n)
    return x, y


def _fit(classes, seeds=(0,), strategy="loop", epoch_mode="steps", devices=None, epochs=2, opts=None, hp=None,
         x=None, y=None):
    if x is None:
        x, y = _multiclass()
    ids, data, keys = one_vs_rest_runs(x, y, classes, seeds, anomaly_fraction=0.5)
    model = build_detector("fc3", dense_features=(16, 8))
    opts = opts or OBJ.Options()
    return fit(model, OBJ, opts, data, hp or _hp(data.n_runs), keys, epochs=epochs, batch_size=16,
               milestones=(1,), strategy=strategy, epoch_mode=epoch_mode, devices=devices)


def _close(a, b, atol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-4)


@pytest.mark.parametrize("strategy,epoch_mode", [("vmap", "steps"), ("vmap", "scan"), ("loop", "scan")])
def test_strategies_match_single_run_loop(strategy, epoch_mode):
    ref = _fit((0, 1, 2), strategy="loop", epoch_mode="steps", devices=jax.devices()[:1])
    got = _fit((0, 1, 2), strategy=strategy, epoch_mode=epoch_mode, devices=jax.devices()[:1])
    _close(ref.state.params, got.state.params)
    _close(ref.state.obj_state, got.state.obj_state)


def test_sharded_over_8_devices_equals_unsharded():
    assert len(jax.devices()) == 8, "conftest asks for 8 fake CPU devices"
    classes = (0, 1, 2, 3)
    sharded = _fit(classes, seeds=(0, 1), strategy="vmap", devices=jax.devices())
    single = _fit(classes, seeds=(0, 1), strategy="vmap", devices=jax.devices()[:1])
    leaf = jax.tree.leaves(sharded.state.params)[0]
    _close(sharded.state.params, single.state.params)
    # 5 runs over 8 devices: padded to 8 and trimmed back
    odd = _fit((0, 1, 2, 3), seeds=(0,), strategy="vmap", devices=jax.devices())
    assert jax.tree.leaves(odd.state.params)[0].shape[0] == 4
    assert leaf.shape[0] == 8


def test_run_alone_equals_run_among_others():
    alone = _fit((2,), strategy="vmap", devices=jax.devices()[:1])
    among = _fit((0, 1, 2, 3), strategy="vmap", devices=jax.devices()[:1])
    _close(alone.state.params, jax.tree.map(lambda a: a[2:3], among.state.params))


def test_run_3_alone_equals_run_3_among_16_and_seeds_change_the_training():
    x, y = _multiclass()
    ids, data, keys = one_vs_rest_runs(x, y, (0, 1, 2, 3), (0, 1, 2, 3), anomaly_fraction=0.5)
    assert len(ids) == 16
    rid = ids[3]
    kw = dict(epochs=2, batch_size=16, milestones=(1,), strategy="vmap", epoch_mode="steps", devices=jax.devices()[:1])
    model = build_detector("fc3", dense_features=(16, 8))
    among = fit(model, OBJ, OBJ.Options(), data, _hp(16), keys, **kw)
    ids1, data1, keys1 = one_vs_rest_runs(x, y, (rid["normal_class"],), (rid["seed"],), anomaly_fraction=0.5)
    alone = fit(model, OBJ, OBJ.Options(), data1, _hp(1), keys1, **kw)
    # vmapped over 16 or over 1, XLA may order a reduction differently: equal up to float rounding
    _close(alone.state.params, jax.tree.map(lambda a: a[3:4], among.state.params), atol=1e-6)
    _close(alone.state.obj_state, jax.tree.map(lambda a: a[3:4], among.state.obj_state), atol=1e-6)
    # the same class with another seed trains to other weights (another anomaly draw, init and batch order)
    other = next(r for r, i in enumerate(ids) if i["normal_class"] == rid["normal_class"] and i["seed"] != rid["seed"])
    w = np.asarray(among.state.params["params"]["head"]["w"])
    assert not np.allclose(w[3], w[other], atol=1e-3)


def test_same_seed_same_numbers_different_seed_different():
    a = _fit((0, 1))
    b = _fit((0, 1))
    for x, y in zip(jax.tree.leaves(a.state.params), jax.tree.leaves(b.state.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    x, y = _multiclass()
    assert not np.array_equal(labelled_anomalies(y, 0, 0, 0.1), labelled_anomalies(y, 0, 1, 0.1))
    np.testing.assert_array_equal(labelled_anomalies(y, 0, 3, 0.1), labelled_anomalies(y, 0, 3, 0.1))


def test_projection_keeps_unit_center_and_duals_feasible_each_step():
    """Default mode: ||c|| = 1 after every step; raw margin: mu_R, mu_rho >= 0 after every step."""
    opts = OBJ.Options(margin_param="raw", center_constraint="projection")
    res = _fit((0, 1, 2), epochs=1, opts=opts, hp=_hp(3, lr=5e-2))
    state = res.state
    # Re-run step by step on run 0 to look at every intermediate state.
    from imdad_jax.train.step import make_train_step, begin_epoch
    x, y = _multiclass()
    ids, data, keys = one_vs_rest_runs(x, y, (0,), (0,), anomaly_fraction=0.5)
    model = build_detector("fc3", dense_features=(16, 8), margin_param="raw")
    from imdad_jax.train.step import init_run, plan_batches
    plan = plan_batches(int(data.n_valid[0]), int(data.m_valid[0]), 16)
    hp = {k: v[0] for k, v in _hp(1, lr=5e-2).items()}
    st = init_run(keys[0], hp, x[:1], model=model, objective=OBJ, opts=opts, milestones=(), gamma=0.1)
    step = jax.jit(make_train_step(model, OBJ, opts, (), 0.1, plan.labels, plan.steps))
    acc = {k: np.zeros((), np.float32) for k in ("loss", "radius2", "margin2", "h", "frac_normals_out",
                                                 "frac_anomalies_in")}
    for _ in range(5):
        st, idx = begin_epoch(st, data.normal_pool[0], data.n_valid[0], data.anomaly_pool[0], data.m_valid[0], plan)
        for t in range(plan.steps):
            st, acc = step(st, acc, x, idx[t])
            g = sphere_geometry(st.params["params"]["head"], "raw")
            assert abs(float(np.linalg.norm(g.center)) - 1.0) < 1e-5
            assert float(st.obj_state["mu_R"]) >= 0 and float(st.obj_state["mu_rho"]) >= 0
    assert np.all(np.isfinite(jax.tree.leaves(state.params)[0]))


def test_multiplier_mode_moves_mu_h():
    opts = OBJ.Options(center_constraint="multiplier")
    res = _fit((0,), epochs=2, opts=opts, hp=_hp(1, lr=5e-2))
    assert float(np.abs(res.state.obj_state["mu_h"][0])) > 0


def test_nan_in_one_run_is_reported_and_does_not_touch_the_others():
    x, y = _multiclass()
    x_bad = x.copy()
    x_bad[y == 1] = np.nan  # class-1 rows are normals of run 1 only... and anomalies of the others
    # run 0 gets anomalies only from class 2 and 3 rows: build its data by hand-picking classes
    keep = y != 1
    ref = _fit((0,), strategy="vmap", x=x[keep], y=y[keep], devices=jax.devices()[:1])
    # Same rows for run 0 (class 1 rows appended at the end never enter its pools), run 1 is poisoned.
    xs = np.concatenate([x[keep], x_bad[~keep]])
    ys = np.concatenate([y[keep], y[~keep]])
    ids, data, keys = one_vs_rest_runs(x[keep], y[keep], (0,), (0,), anomaly_fraction=0.5)
    n0 = keep.sum()
    poisoned = np.arange(n0, len(ys), dtype=np.int32)
    from imdad_jax.train.engine import RunData
    pad = lambda a, w: np.pad(a, (0, w - len(a)))  # noqa: E731
    wn = max(data.n_valid[0], len(poisoned))
    wa = max(data.m_valid[0], len(poisoned))
    run_data = RunData(xs, np.stack([pad(data.normal_pool[0][:data.n_valid[0]], wn), pad(poisoned, wn)]),
                       np.array([data.n_valid[0], len(poisoned)]),
                       np.stack([pad(data.anomaly_pool[0][:data.m_valid[0]], wa), pad(poisoned, wa)]),
                       np.array([data.m_valid[0], len(poisoned)]))
    model = build_detector("fc3", dense_features=(16, 8))
    res = fit(model, OBJ, OBJ.Options(), run_data, _hp(2), np.stack([keys[0], keys[0]]), epochs=2, batch_size=16,
              milestones=(1,), strategy="vmap", devices=jax.devices()[:1])
    assert res.diverged.tolist() == [False, True]
    _close(ref.state.params, jax.tree.map(lambda a: a[:1], res.state.params))


def test_auto_strategy_loops_convolutions_on_cpu_and_vmaps_dense_models():
    import jax.numpy as jnp

    from imdad_jax.train import resolve_strategy
    from imdad_jax.train.engine import has_conv

    cnn = build_detector("cnn2", conv_features=(2, 4), dense_features=(8, 4))
    mlp = build_detector("fc3", dense_features=(8, 4))
    assert has_conv(cnn, jnp.zeros((1, 8, 8, 1))) and not has_conv(mlp, jnp.zeros((1, 5)))
    assert resolve_strategy("auto", "auto", "cpu", has_conv=True) == ("loop", "steps")
    assert resolve_strategy("auto", "auto", "cpu", has_conv=False) == ("vmap", "scan")
    assert resolve_strategy("auto", "auto", "gpu", has_conv=True) == ("vmap", "scan")
    assert resolve_strategy("loop", "scan", "gpu", has_conv=False) == ("loop", "scan")
