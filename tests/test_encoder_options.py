"""The stateless encoder options (LayerNorm, residual, squeeze-and-excitation, projection): off by
default with the paper's parameter trees unchanged; each one changes the forward pass, adds the parameters
it should, trains on a tiny separable problem, and gives the loop's numbers on the vmapped run axis."""
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import blobs, make_class_images
from flax.traverse_util import flatten_dict, unflatten_dict
from sklearn.metrics import roc_auc_score

from imdad_jax.config import ConfigError, make_config
from imdad_jax.data import ImageDataset, one_vs_rest_runs
from imdad_jax.experiment import run_experiment
from imdad_jax.models import build_encoder
from imdad_jax.objectives import get_objective
from imdad_jax.train import fit

OBJ = get_objective("imdad")
CNN = dict(conv_features=(4, 8), dense_features=(16, 8))
FC = dict(dense_features=(16, 8))
IMG, TAB = (2, 16, 16, 1), (2, 5)
OPTIONS = {"layer_norm": True, "residual": True, "se_attention": True, "projection": 6}

# The parameter trees of the default encoders, taken from the code before the encoder options existed.
DEFAULT_CNN = {"conv0": {"kernel": (5, 5, 1, 4)}, "conv1": {"kernel": (5, 5, 4, 8)},
               "fc": {"dense0": {"kernel": (128, 16)}, "dense1": {"kernel": (16, 8)}}}
DEFAULT_FC = {"dense0": {"kernel": (5, 16)}, "dense1": {"kernel": (16, 8)}}
# What each option adds (16x16 input: two 2x2 pools leave 4x4x8 = 128 features for the FC part).
ADDED_CNN = {
    "layer_norm": {"ln0/scale": (4,), "ln1/scale": (8,), "fc/ln0/scale": (16,)},
    "residual": {"skip0/kernel": (1, 1, 1, 4), "skip1/kernel": (1, 1, 4, 8), "fc/skip0/kernel": (128, 16)},
    "se_attention": {"se0/reduce/kernel": (4, 1), "se0/expand/kernel": (1, 4), "se1/reduce/kernel": (8, 2),
                     "se1/expand/kernel": (2, 8), "fc/se0/reduce/kernel": (16, 4), "fc/se0/expand/kernel": (4, 16)},
    "projection": {"fc/projection/kernel": (8, 6)},
}
ADDED_FC = {
    "layer_norm": {"ln0/scale": (16,)},
    "residual": {"skip0/kernel": (5, 16)},
    "se_attention": {"se0/reduce/kernel": (16, 4), "se0/expand/kernel": (4, 16)},
    "projection": {"projection/kernel": (8, 6)},
}


def _shapes(tree) -> dict:
    return unflatten_dict({k: tuple(a.shape) for k, a in flatten_dict(tree).items()})


def _flat(tree) -> dict:
    return flatten_dict(tree, sep="/")


def _init(arch: str, **opts):
    kw, shape = (CNN, IMG) if arch == "cnn2" else (FC, TAB)
    enc = build_encoder(arch, **kw, **opts)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    params = enc.init(jax.random.PRNGKey(0), x)["params"]
    return enc, params, x


@pytest.mark.parametrize("arch,expected", [("cnn2", DEFAULT_CNN), ("fc3", DEFAULT_FC)])
def test_default_encoders_keep_their_parameter_tree(arch, expected):
    _, params, _ = _init(arch)
    assert _shapes(params) == expected
    # the options switched off explicitly are the default, not something near it
    _, off, _ = _init(arch, layer_norm=False, residual=False, se_attention=False, projection=0)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, off))


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("arch", ["cnn2", "fc3"])
def test_each_option_adds_its_parameters_and_changes_the_output(arch, option):
    enc0, p0, x = _init(arch)
    enc, p, _ = _init(arch, **{option: OPTIONS[option]})
    base, added = _flat(_shapes(p0)), (ADDED_CNN if arch == "cnn2" else ADDED_FC)[option]
    assert _flat(_shapes(p)) == {**base, **added}
    # flax seeds each parameter by its path, so the shared layers start equal: the output changes by the option
    flat0, flat = _flat(p0), _flat(p)
    for k in base:
        np.testing.assert_array_equal(flat0[k], flat[k])
    z0, z = np.asarray(enc0.apply({"params": p0}, x)), np.asarray(enc.apply({"params": p}, x))
    assert np.isfinite(z).all()
    if option == "projection":
        assert z.shape == (x.shape[0], OPTIONS["projection"])
    else:
        assert z.shape == z0.shape and not np.allclose(z, z0, atol=1e-4)


def _hp(n: int) -> dict[str, np.ndarray]:
    hp = dict(lr=1e-2, weight_decay=1e-6, nu=0.5, nu1=0.1, nu2=0.1, dual_lr=0.1, head_lr=0.1)
    return {k: np.full(n, v, np.float32) for k, v in hp.items()}


def _fit_blobs(strategy: str, epoch_mode: str = "steps", **opts):
    x, y = blobs(n_normal=120, n_anom=120, dim=5, seed=0)
    ids, data, keys = one_vs_rest_runs(x, y, (0, 1), (0,), anomaly_fraction=0.2)
    model = OBJ.make_model(build_encoder("fc3", dense_features=(16, 8), **opts), (5,), OBJ.Options())
    res = fit(model, OBJ, OBJ.Options(), data, _hp(data.n_runs), keys, epochs=2, batch_size=16, milestones=(1,),
              strategy=strategy, epoch_mode=epoch_mode, devices=jax.devices()[:1])
    return model, res, x, y


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_trains_the_mlp_on_blobs(option):
    model, res, x, y = _fit_blobs("loop", **{option: OPTIONS[option]})
    assert np.isfinite(np.asarray(res.history["loss"])).all()
    params = jax.tree.map(lambda a: a[0], res.state.params)  # run 0: class 0 normal, class 1 anomalous
    obj_state = jax.tree.map(lambda a: a[0], res.state.obj_state)
    scores = np.asarray(OBJ.score(params, obj_state, model, jnp.asarray(x), OBJ.Options()))
    # well above chance, not near 1: after two epochs LayerNorm reaches about 0.78 here (default 0.98), as
    # its scale invariance hides part of the anomalies' shift, which lies along a single direction
    assert roc_auc_score(y, scores) > 0.7


def test_options_on_the_vmapped_run_axis_match_the_loop():
    opts = dict(OPTIONS)
    _, ref, _, _ = _fit_blobs("loop", **opts)
    _, got, _, _ = _fit_blobs("vmap", **opts)
    for a, b in zip(jax.tree.leaves((ref.state.params, ref.state.obj_state)),
                    jax.tree.leaves((got.state.params, got.state.obj_state))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)


def test_all_options_train_the_cnn_through_run_experiment():
    xtr, ytr = make_class_images(30, n_classes=2, size=16, seed=0)
    xte, yte = make_class_images(20, n_classes=2, size=16, seed=1)
    ds = ImageDataset(xtr[..., None], ytr.astype(int), xte[..., None], yte.astype(int), ("0", "1"), "test")
    cfg = make_config("tiny", dataset="fmnist", classes=(0,), epochs=2, lr=1e-3, strategy="loop", **OPTIONS)
    out = run_experiment(cfg, ds)
    (row,) = out["runs"]
    assert np.isfinite(row["auc"]) and row["auc"] > 0.6, row


def test_config_and_cli_carry_the_options():
    with pytest.raises(ConfigError, match="projection"):
        make_config("tiny", projection=-1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import run as cli
    base = ["--dataset=mnist", "--class=0", "--preset=tiny"]
    cfg = cli.config_from_args(cli.parse_args(base + ["--layer_norm", "--residual", "--se_attention",
                                                      "--projection=12"]))
    assert (cfg.layer_norm, cfg.residual, cfg.se_attention, cfg.projection) == (True, True, True, 12)
    cfg = cli.config_from_args(cli.parse_args(base))
    assert (cfg.layer_norm, cfg.residual, cfg.se_attention, cfg.projection) == (False, False, False, 0)


def test_conv_forms_train_to_the_same_auc():
    # "auto" (im2col for the one-channel first layer on CPU) is the default: it must train what XLA's
    # convolution trains, up to float rounding, through the whole experiment
    xtr, ytr = make_class_images(30, n_classes=2, size=16, seed=0)
    xte, yte = make_class_images(20, n_classes=2, size=16, seed=1)
    ds = ImageDataset(xtr[..., None], ytr.astype(int), xte[..., None], yte.astype(int), ("0", "1"), "test")
    aucs = {}
    for impl in ("xla", "auto", "im2col"):
        cfg = make_config("tiny", dataset="fmnist", classes=(0, 1), epochs=2, lr=1e-3, conv_impl=impl)
        aucs[impl] = [row["auc"] for row in run_experiment(cfg, ds)["runs"]]
    np.testing.assert_allclose(aucs["auto"], aucs["xla"], atol=2e-3)
    np.testing.assert_allclose(aucs["im2col"], aucs["xla"], atol=2e-3)
    with pytest.raises(ConfigError, match="conv_impl"):
        make_config("tiny", conv_impl="fft")


def test_vmapped_conv_runs_on_cpu_use_im2col_everywhere():
    from imdad_jax.experiment import build_model, model_conv_impl
    assert model_conv_impl(make_config("tiny", strategy="vmap")) == "im2col"  # the tests run on CPU
    assert model_conv_impl(make_config("tiny", strategy="loop")) == "auto"
    assert model_conv_impl(make_config("tiny", strategy="vmap", conv_impl="xla")) == "xla"  # an explicit choice
    assert build_model(make_config("tiny", strategy="vmap"), (16, 16, 1)).encoder.conv_impl == "im2col"
