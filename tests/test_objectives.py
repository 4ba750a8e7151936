"""Every objective: its loss on a hand-computable batch, chance clearly beaten on a separable set,
and the registry taking a new objective without touching the engine."""
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import blobs
from imdad_jax.data import one_vs_rest_runs
from imdad_jax.evaluate import apply_runs, auc_per_run
from imdad_jax.models import MLPEncoder, build_encoder
from imdad_jax.objectives import REGISTRY, Objective, ObjectiveError, get_objective
from imdad_jax.train import fit

# A batch small enough to work out by hand: z = x (identity encoder), c = (1, 0).
X = np.array([[1.0, 0.0], [2.0, 0.0], [1.0, 1.0], [4.0, 0.0]], np.float32)
Y = np.array([0, 0, 0, 1], np.int32)  # three normals, one labelled anomaly
D = np.array([0.0, 1.0, 1.0, 9.0])  # ||x - c||^2
BATCH = {"x": jnp.asarray(X), "y": jnp.asarray(Y), "key": jax.random.PRNGKey(0), "epoch": jnp.asarray(0)}


def _identity_params(method, center=(1.0, 0.0), radius2=0.0, rho=None, **decoder):
    """Params of ``method``'s model with an identity encoder and the sphere (c, R^2) written in."""
    obj = get_objective(method)
    opts = obj.Options()
    model = obj.make_model(MLPEncoder((2,)), (2,), opts)
    method_fn = getattr(model, "initialize", None)
    params = model.init(jax.random.PRNGKey(0), BATCH["x"], **({"method": method_fn} if method_fn else {}))
    inner = jax.tree.map(lambda a: a, params["params"])
    inner["encoder"]["dense0"]["kernel"] = jnp.eye(2)
    if "head" in inner:
        c = jnp.asarray(center)
        inner["head"]["w"] = 2 * c
        inner["head"]["b"] = jnp.asarray(radius2 - float(c @ c))
        if rho is not None:
            inner["head"]["rho"] = jnp.asarray(rho)
    if "decoder" in inner:
        inner["decoder"]["out"]["kernel"] = decoder.get("scale", 0.5) * jnp.eye(2)
        inner["decoder"]["out"]["bias"] = jnp.zeros(2)
    return obj, opts, model, {"params": inner}


def _hp(obj, **kw):
    return {**{k: jnp.asarray(v) for k, v in obj.DEFAULT_HP.items()}, **{k: jnp.asarray(v) for k, v in kw.items()}}


def test_imdad_lagrangian_by_hand():
    sp = math.log(math.expm1(0.5))  # softplus^-1(0.5): rho^2 = 0.5
    obj, opts, model, params = _identity_params("imdad", radius2=1.5, rho=sp)
    hp = _hp(obj, nu=0.5, nu1=0.1, nu2=0.1)
    value, aux = obj.loss(params, obj.init_obj_state(opts), model, BATCH, hp, opts)
    # s = d - R^2 = (-1.5, -0.5, -0.5, 7.5): no normal outside; the anomaly is outside R^2 + rho^2.
    assert float(value) == pytest.approx(1.5 - 0.5 * 0.5, abs=1e-5)
    obj, opts, model, params = _identity_params("imdad", radius2=0.5, rho=sp)
    value, _ = obj.loss(params, obj.init_obj_state(opts), model, BATCH, hp, opts)
    # s = (-0.5, 0.5, 0.5, 8.5): normals' hinge mean (0 + .5 + .5)/3 / nu1
    assert float(value) == pytest.approx(0.5 - 0.25 + (1.0 / 3) / 0.1, abs=1e-4)


def test_imdad_hinge_variants_by_hand():
    sp = math.log(math.expm1(0.5))
    obj, _, model, params = _identity_params("imdad", radius2=0.5, rho=sp)
    hp = _hp(obj, nu=0.5, nu1=0.1, nu2=0.1)
    s = np.array([-0.5, 0.5, 0.5])  # the normals' d - R^2; the anomaly sits beyond R^2 + rho^2 (no slack)
    for hinge, slack in (("squared", np.maximum(s, 0) ** 2), ("smooth", np.log1p(np.exp(s)))):
        opts = obj.options({"hinge": hinge})
        value, _ = obj.loss(params, obj.init_obj_state(opts), model, BATCH, hp, opts)
        anomaly = np.log1p(np.exp(0.5 - 8.5)) if hinge == "smooth" else 0.0
        assert float(value) == pytest.approx(0.5 - 0.25 + slack.mean() / 0.1 + anomaly / 0.1, abs=1e-4)
    with pytest.raises(ValueError, match="hinge must be one of"):
        obj.options({"hinge": "cubic"})


def test_deep_svdd_loss_by_hand():
    obj, opts, model, params = _identity_params("deep_svdd")
    value, _ = obj.loss(params, obj.init_obj_state(opts), model, BATCH, _hp(obj), opts)
    assert float(value) == pytest.approx(D.mean(), abs=1e-5)  # normals only: every row counts
    np.testing.assert_allclose(obj.score(params, {}, model, BATCH["x"], opts), D, atol=1e-5)


@pytest.mark.parametrize("method", ["deep_svdd_soft", "dad", "mdad"])
def test_soft_boundary_family_by_hand(method):
    sp = math.log(math.expm1(2.0))  # rho^2 = 2
    obj, opts, model, params = _identity_params(method, radius2=0.5, rho=sp)
    state = {"radius2": jnp.asarray(0.5)}
    hp = _hp(obj, nu=0.5, nu1=0.2, nu2=0.25) if method == "mdad" else _hp(obj, nu=0.2, nu1=0.2, nu2=0.25)
    value, aux = obj.loss(params, state, model, BATCH, hp, opts)
    normals = D[:3]
    hinge_n = np.mean(np.maximum(0, normals - 0.5)) / 0.2  # (0 + .5 + .5)/3 / nu
    if method == "deep_svdd_soft":
        # the batch's labels say who is a normal (the engine gives this method normals only)
        expected = 0.5 + hinge_n
    elif method == "dad":
        expected = 0.5 + hinge_n + max(0, 0.5 - 9.0) / 0.25
    else:
        expected = 0.5 - 0.5 * 2.0 + hinge_n + max(0, 0.5 + 2.0 - 9.0) / 0.25
    assert float(value) == pytest.approx(expected, abs=1e-4)
    # The radius target is the (1 - nu) quantile (lower) of the batch normals' distances.
    nu_n = 0.2
    assert float(aux["radius2_target"]) == pytest.approx(np.quantile(normals, 1 - nu_n, method="lower"))


def test_deep_sad_loss_by_hand():
    obj, opts, model, params = _identity_params("deep_sad")
    value, _ = obj.loss(params, {}, model, BATCH, _hp(obj, eta=2.0), opts)
    expected = (0.0 + 1.0 + 1.0 + 2.0 / (9.0 + 1e-6)) / 4
    assert float(value) == pytest.approx(expected, abs=1e-5)


def test_autoencoder_and_hybrid_losses_by_hand():
    obj, opts, model, params = _identity_params("autoencoder", scale=0.5)
    value, _ = obj.loss(params, {}, model, BATCH, _hp(obj), opts)
    rec = np.mean((X - 0.5 * X) ** 2, axis=1)  # decoder halves z = x
    assert float(value) == pytest.approx(rec.mean(), abs=1e-5)
    obj, opts, model, params = _identity_params("hybrid_svdd", scale=0.5)
    value, aux = obj.loss(params, {"mu1": 1.0, "mu2": 1.0}, model, BATCH, _hp(obj, mu1=2.0, mu2=3.0), opts)
    assert float(value) == pytest.approx(2.0 * D.mean() + 3.0 * rec.mean(), abs=1e-4)


def test_drocc_loss_by_hand_and_negatives_in_the_shell():
    obj, opts, model, params = _identity_params("drocc")
    params["params"]["logit"] = {"kernel": jnp.array([[1.0], [0.0]]), "bias": jnp.array([0.0])}
    # Before warm-up ends only the classification term counts: mean softplus(-logit), logit = x_0.
    value, _ = obj.loss(params, {}, model, BATCH, _hp(obj, warmup_epochs=5.0), opts)
    assert float(value) == pytest.approx(np.mean(np.log1p(np.exp(-X[:, 0]))), abs=1e-5)
    radius, gamma = 0.5, 2.0
    x_adv = obj.module.adversarial_negatives(params, model, BATCH["x"], jax.random.PRNGKey(1), radius, gamma, 0.1, 3)
    dist = np.linalg.norm(np.asarray(x_adv) - X, axis=1)
    assert np.all(dist >= radius - 1e-5) and np.all(dist <= gamma * radius + 1e-5)


def _train_and_auc(method, epochs, lr, **hp_over):
    x, y = blobs(n_normal=300, n_anom=300, dim=4, seed=0)
    x_test, y_test = blobs(n_normal=200, n_anom=200, dim=4, seed=1)
    ids, data, keys = one_vs_rest_runs(x, y, (0,), (0,), anomaly_fraction=0.5)
    obj = get_objective(method)
    opts = obj.Options()
    model = obj.make_model(build_encoder("fc3", dense_features=(16, 8)), (4,), opts)
    hp = {"lr": lr, "weight_decay": 1e-6, **obj.DEFAULT_HP, **hp_over}
    hp = {k: np.full(1, v, np.float32) for k, v in hp.items()}
    res = fit(model, obj, opts, data, hp, keys, epochs=epochs, batch_size=50, strategy="loop")
    scores = apply_runs(lambda p, xx: obj.score(p[0], p[1], model, xx, opts),
                        (res.state.params, res.state.obj_state), x_test, strategy="loop")
    return float(auc_per_run(scores, y_test != 0)[0]), res


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_beats_chance_clearly(method):
    auc, res = _train_and_auc(method, epochs=20, lr=1e-2, **({"warmup_epochs": 2.0} if method != "drocc" else {}))
    assert not res.diverged.any()
    assert auc > 0.9, (method, auc)


def test_soft_boundary_radius_is_the_quantile_after_warmup():
    _, res = _train_and_auc("deep_svdd_soft", epochs=4, lr=1e-2, warmup_epochs=1.0, nu=0.1)
    r2 = float(res.state.obj_state["radius2"][0])
    head = res.state.params["params"]["head"]
    assert r2 > 0
    # the head's weights carry the same radius (the sphere is read off the weights for every method)
    assert float(head["b"][0] + np.sum(np.asarray(head["w"][0]) ** 2) / 4) == pytest.approx(r2, rel=1e-5)


def test_a_new_objective_through_the_registry_runs_on_the_engine_untouched(monkeypatch):
    """A toy objective defined here (mean squared norm of z, normals only) trains through ``fit``."""
    from imdad_jax.objectives import deep_svdd

    toy = types.ModuleType("toy_norm")
    toy.HYPERPARAMS, toy.DEFAULT_HP, toy.USES_ANOMALIES = (), {}, False
    toy.Options = deep_svdd.Options
    toy.make_model = lambda enc, shape, opts: enc
    toy.init_obj_state = lambda opts: {"steps": jnp.zeros((), jnp.int32)}

    def toy_loss(params, obj_state, model, batch, hp, opts):
        value = jnp.mean(jnp.sum(model.apply(params, batch["x"]) ** 2, -1))
        return value, {"loss": value}

    toy.loss = toy_loss
    toy.update_obj_state = lambda o, aux, hp, opts, epoch: {"steps": o["steps"] + 1}
    toy.project = lambda p, o, opts: p
    toy.score = lambda p, o, m, x, opts: jnp.sum(m.apply(p, x) ** 2, -1)
    toy.validate_hp = lambda hp: None
    monkeypatch.setitem(REGISTRY, "toy_norm", Objective.from_module("toy_norm", toy))
    obj = get_objective("toy_norm")
    x, y = blobs(n_normal=100, n_anom=100, dim=4)
    ids, data, keys = one_vs_rest_runs(x, y, (0,), (0, 1), anomaly_fraction=0.5)
    model = obj.make_model(build_encoder("fc3", dense_features=(8, 4)), (4,), obj.Options())
    hp = {"lr": np.full(2, 1e-2, np.float32), "weight_decay": np.zeros(2, np.float32)}
    res = fit(model, obj, obj.Options(), data, hp, keys, epochs=3, batch_size=20, strategy="vmap",
              devices=jax.devices()[:2])
    assert res.history["loss"][-1].mean() < res.history["loss"][0].mean()
    assert res.plan.a_per_batch == 0  # normals only
    np.testing.assert_array_equal(np.asarray(res.state.obj_state["steps"]), [3 * res.plan.steps] * 2)


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_every_method_gives_the_same_numbers_looped_and_vmapped_over_2_devices(method):
    """The run axis is method-agnostic: R runs vmapped and sharded == the same runs one after another."""
    x, y = blobs(n_normal=60, n_anom=60, dim=4, seed=0)
    ids, data, keys = one_vs_rest_runs(x, y, (0, 1), (0,), anomaly_fraction=0.5)
    obj = get_objective(method)
    opts = obj.Options()._replace(**({"drocc_ascent_steps": 2} if method == "drocc" else {}))
    model = obj.make_model(build_encoder("fc3", dense_features=(8, 4)), (4,), opts)
    hp = {k: np.full(2, v, np.float32) for k, v in {"lr": 1e-2, "weight_decay": 1e-6, **obj.DEFAULT_HP}.items()}
    runs = [fit(model, obj, opts, data, hp, keys, epochs=2, batch_size=20, strategy=s, epoch_mode="steps",
                devices=jax.devices()[:2]) for s in ("loop", "vmap")]
    for a, b in zip(jax.tree.leaves((runs[0].state.params, runs[0].state.obj_state)),
                    jax.tree.leaves((runs[1].state.params, runs[1].state.obj_state))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


def test_the_protocol_is_checked_at_registration_and_fills_the_optional_hooks():
    from imdad_jax.objectives import deep_sad

    broken = types.ModuleType("no_score")
    for name in ("Options", "HYPERPARAMS", "DEFAULT_HP", "USES_ANOMALIES", "make_model", "init_obj_state", "loss",
                 "validate_hp"):
        setattr(broken, name, getattr(deep_sad, name))
    with pytest.raises(ObjectiveError, match="lacks score"):
        Objective.from_module("no_score", broken)
    broken.score = deep_sad.score
    broken.DEFAULT_HP = {}
    with pytest.raises(ObjectiveError, match="DEFAULT_HP"):
        Objective.from_module("no_score", broken)
    broken.DEFAULT_HP = deep_sad.DEFAULT_HP
    broken.prepare = deep_sad.prepare  # without prepare_features
    with pytest.raises(ObjectiveError, match="prepare and prepare_features"):
        Objective.from_module("no_score", broken)
    del broken.prepare
    obj = Objective.from_module("no_score", broken)
    assert obj.prepare is None and obj.geometry is None and obj.signed_distance is None
    assert obj.project("p", "s", None) == "p" and obj.update_obj_state("s", {}, {}, None, 0) == "s"
    # every registered objective is such a record, its hooks where the module has them
    assert all(isinstance(o, Objective) for o in REGISTRY.values())
    assert REGISTRY["imdad"].signed_distance is not None and REGISTRY["deep_sad"].signed_distance is None
    with pytest.raises(ValueError, match="center_constraint must be one of"):
        REGISTRY["imdad"].options({"center_constraint": "lagrange"})


def test_the_head_takes_steps_of_its_own_size_with_solver_head_lr():
    from imdad_jax.train import make_optimizer

    params = {"params": {"encoder": {"kernel": jnp.ones(3)}, "head": {"b": jnp.ones(()), "rho": jnp.ones(())}}}
    grads = jax.tree.map(jnp.ones_like, params)
    for head_lr, want_head in ((None, 1e-3), (0.1, 0.1)):
        tx = make_optimizer(1e-3, 0.0, (), 0.1, head_lr)
        updates, _ = tx.update(grads, tx.init(params), params)
        # Adam's first step is the step size times the gradient's sign, for every coordinate
        np.testing.assert_allclose(updates["params"]["encoder"]["kernel"], -1e-3, rtol=1e-4)
        np.testing.assert_allclose(updates["params"]["head"]["b"], -want_head, rtol=1e-4)
    imdad = REGISTRY["imdad"]
    hp = {**imdad.DEFAULT_HP, "lr": 1e-3, "weight_decay": 0.0}
    assert imdad.head_step_size(hp, imdad.options({"solver": "paper"})) is None
    assert imdad.head_step_size(hp, imdad.options({"solver": "head_lr"})) == hp["head_lr"]
    assert REGISTRY["deep_sad"].head_step_size(hp, REGISTRY["deep_sad"].options()) is None
