"""Feature patching (FPSVDD): patch embeddings by hand, the backbone's parameter files, a frozen backbone, and the
unchanged Deep SVDD / IMD-AD objectives training the patch head on a tiny texture-defect problem.

The backbone is randomly initialised throughout (no pretrained weights can be installed here): these tests check
the mechanics, and the AUCs below say only that random features plus a trained head see a local defect.
"""
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from imdad_jax.config import ConfigError, make_config
from imdad_jax.data import ImageDataset
from imdad_jax.experiment import build_model, run_experiment
from imdad_jax.feature_patching import (PATCH_METHODS, embed_images, fit_feature_patching,
                                        init_backbone_params, load_backbone_params, patch_detector,
                                        save_backbone_params)
from imdad_jax.models import build_encoder
from imdad_jax.models.patches import PatchBackbone, PatchSphereDetector, local_average, patch_embeddings
from imdad_jax.objectives import REGISTRY, get_objective

# The training tests: the default backbone (16, 32, 64) on 16x16 images gives 8x8, 4x4 and 2x2 maps; stages 1 and 2
# make a 4x4 grid of 96-feature patches.
BACKBONE = (16, 32, 64)


class Pyramid(nn.Module):
    """A parameter-free 'backbone': the image itself and its 2x2 average, so every number can be checked by hand."""

    def __call__(self, x):
        return x, nn.avg_pool(x, (2, 2), strides=(2, 2))


def textures(n, defect, size=16, seed=0, hole=4):
    """Horizontal stripes (random phase) plus noise; with ``defect``, a dark hole x hole square somewhere.

    A local appearance defect, the kind patch scores are built for. (The one-vs-rest squares of
    conftest.make_class_images differ by position only, which patch scores do not see: see
    test_the_image_score_ignores_where_a_patch_is.)
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(size)[:, None] + rng.integers(0, 4, (n, 1, 1))
    x = 0.5 + 0.3 * np.sin(2 * np.pi * rows / 4) + rng.normal(0, 0.05, (n, size, size))
    if defect:
        for i in range(n):
            r, c = rng.integers(0, size - hole + 1, 2)
            x[i, r:r + hole, c:c + hole] = 0.0
    return np.clip(x, 0, 1).astype(np.float32)


# ---- embeddings -----------------------------------------------------------------------------------------------

def test_local_average_is_the_3x3_mean_over_the_cells_inside_the_map():
    x = np.random.default_rng(0).normal(size=(2, 5, 6, 3)).astype(np.float32)
    got = np.asarray(local_average(jnp.asarray(x), 3))
    want = np.zeros_like(x)
    for i in range(5):
        for j in range(6):
            want[:, i, j] = x[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2].mean(axis=(1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(local_average(jnp.asarray(x), 1)), x)
    with pytest.raises(ValueError, match="odd"):
        local_average(jnp.asarray(x), 2)


def test_patch_embeddings_concatenate_the_stages_on_the_first_stages_grid():
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1)
    e = np.asarray(patch_embeddings(Pyramid(), {}, jnp.asarray(x), layers=(0, 1), patch=1))
    assert e.shape == (2, 16, 2)  # the 4x4 grid of stage 0; one channel from each stage
    np.testing.assert_array_equal(e[..., 0], x.reshape(2, 16))  # stage 0 as it is, row-major
    # stage 1 (2x2 averages) upsampled bilinearly with half-pixel centers: along an axis, values a, b become
    # a, a + (b - a) / 4, a + 3 (b - a) / 4, b
    coarse = x.reshape(2, 2, 2, 2, 2).mean(axis=(2, 4))
    w = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]], np.float32)
    want = np.einsum("ia,nab,jb->nij", w, coarse, w)
    np.testing.assert_allclose(e[..., 1].reshape(2, 4, 4), want, rtol=1e-5)
    # with patch=3 each stage is averaged first, then resized
    e3 = np.asarray(patch_embeddings(Pyramid(), {}, jnp.asarray(x), layers=(0, 1), patch=3))
    np.testing.assert_allclose(e3[..., 0], np.asarray(local_average(jnp.asarray(x), 3)).reshape(2, 16), rtol=1e-6)
    with pytest.raises(ValueError, match="not stages"):
        patch_embeddings(Pyramid(), {}, jnp.asarray(x), layers=(0, 2))


def test_backbone_shapes_and_a_frozen_backbone_gets_no_gradient():
    bb = PatchBackbone((4, 6, 8))
    params = init_backbone_params(bb, (28, 28), seed=0)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 28, 28)), jnp.float32)
    assert [m.shape for m in bb.apply(params, x)] == [(3, 14, 14, 4), (3, 7, 7, 6), (3, 3, 3, 8)]
    e = patch_embeddings(bb, params, x, layers=(1, 2))
    assert e.shape == (3, 49, 14)
    grads = jax.grad(lambda p: jnp.sum(patch_embeddings(bb, p, x, (1, 2)) ** 2))(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))
    # the seed fixes the random backbone
    same = init_backbone_params(bb, (28, 28), seed=0)
    other = init_backbone_params(bb, (28, 28), seed=1)
    k = lambda p: np.asarray(p["params"]["conv0"]["kernel"])  # noqa: E731
    np.testing.assert_array_equal(k(params), k(same))
    assert not np.array_equal(k(params), k(other))


def test_the_image_score_ignores_where_a_patch_is():
    # Patch scores are position-agnostic (as in PatchCore and FPSVDD): permuting an image's patches leaves its
    # score unchanged, so an anomaly that is only "the right thing in the wrong place" is invisible to them.
    obj = get_objective("deep_svdd")
    model = patch_detector(obj, obj.Options(), build_encoder("fc3", dense_features=(8, 4)))
    e = jnp.asarray(np.random.default_rng(0).normal(size=(3, 9, 5)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), e)
    perm = np.random.default_rng(1).permutation(9)
    np.testing.assert_allclose(np.asarray(model.apply(params, e)), np.asarray(model.apply(params, e[:, perm])),
                               rtol=1e-6)
    s = np.asarray(model.apply(params, e, method="patch_distances"))
    assert s.shape == (3, 9)
    np.testing.assert_allclose(np.asarray(model.apply(params, e)), s.max(axis=1), rtol=1e-6)
    mean = PatchSphereDetector(model.encoder, model.head, "mean")
    np.testing.assert_allclose(np.asarray(mean.apply(params, e)), s.mean(axis=1), rtol=1e-6)


def test_every_plain_sphere_method_gets_a_patch_model_and_the_others_are_refused():
    assert {"imdad", "deep_svdd", "deep_sad"} <= set(PATCH_METHODS)
    mlp = build_encoder("fc3", dense_features=(4,))
    for name, obj in REGISTRY.items():
        if name in PATCH_METHODS:
            assert isinstance(patch_detector(obj, obj.Options(), mlp), PatchSphereDetector)
        else:
            with pytest.raises(ValueError, match="feature patching trains"):
                patch_detector(obj, obj.Options(), mlp)


# ---- the backbone's parameter files ---------------------------------------------------------------------------

def test_params_file_round_trip_and_clear_errors(tmp_path):
    bb = PatchBackbone((4, 6, 8))
    params = init_backbone_params(bb, (16, 16), seed=3)
    path = save_backbone_params(params, tmp_path / "bb.npz")
    with np.load(path) as z:
        assert "params/conv0/kernel" in z.files
    got = load_backbone_params(path, bb, (16, 16))
    assert jax.tree.structure(got) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # a bare parameter tree (no "params/" prefix) is accepted too
    with np.load(path) as z:
        np.savez(tmp_path / "bare.npz", **{k.removeprefix("params/"): z[k] for k in z.files})
    load_backbone_params(tmp_path / "bare.npz", bb, (16, 16))
    # an Orbax checkpoint folder of the same tree
    import orbax.checkpoint as ocp
    ocp.PyTreeCheckpointer().save((tmp_path / "orbax").resolve(), params)
    got = load_backbone_params(tmp_path / "orbax", bb, (16, 16))
    np.testing.assert_array_equal(np.asarray(got["params"]["conv2"]["kernel"]),
                                  np.asarray(params["params"]["conv2"]["kernel"]))

    # another backbone's file: every mismatching key named, with the shape this backbone needs
    with pytest.raises(ValueError) as err:
        load_backbone_params(path, PatchBackbone((4, 6, 8, 8)), (16, 16))
    assert "missing: params/conv3/kernel (3, 3, 8, 8)" in str(err.value)
    with pytest.raises(ValueError) as err:
        load_backbone_params(path, PatchBackbone((4, 5, 8)), (16, 16))
    assert "shape: params/conv1/kernel is (3, 3, 4, 6), the backbone needs (3, 3, 4, 5)" in str(err.value)
    np.savez(tmp_path / "extra.npz", **{"params/conv0/kernel": np.zeros((3, 3, 1, 4)), "params/head/w": np.zeros(3)})
    with pytest.raises(ValueError, match="unexpected: params/head/w"):
        load_backbone_params(tmp_path / "extra.npz", PatchBackbone((4,)), (16, 16))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_backbone_params(tmp_path / "junk.npz", bb, (16, 16))
    with pytest.raises(FileNotFoundError, match="no backbone parameters"):
        load_backbone_params(tmp_path / "absent.npz", bb, (16, 16))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="Orbax"):
        load_backbone_params(tmp_path / "empty_dir", bb, (16, 16))


# ---- training the head with the unchanged objectives ------------------------------------------------------------

def test_deep_svdd_trains_the_patch_head_and_leaves_the_backbone_frozen():
    xn = textures(96, False, seed=0)
    xt = np.concatenate([textures(48, False, seed=2), textures(48, True, seed=3)])
    yt = np.r_[np.zeros(48), np.ones(48)]
    bb = PatchBackbone(BACKBONE)
    params = init_backbone_params(bb, (16, 16), seed=0)
    before = jax.tree.map(np.array, params)
    det = fit_feature_patching(xn, method="deep_svdd", backbone=bb, backbone_params=params, epochs=60, lr=1e-2,
                               batch_size=32, dense_features=(32, 16))
    # the backbone is untouched and not among the trained parameters: only the patch MLP and the sphere head
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(det.backbone_params_), strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert set(det.params_["params"]) == {"encoder", "head"}
    assert set(det.params_["params"]["encoder"]["mlp"]) == {"dense0", "dense1"}
    np.testing.assert_array_equal(det.patch_embeddings(xn[:4]), embed_images(bb, before, xn[:4]))
    assert not det.diverged_ and det.history_["loss"][-1] < det.history_["loss"][0]
    scores = det.decision_function(xt)
    assert scores.shape == (96,) and np.all(np.isfinite(scores))
    # seeds 0-2 (run and backbone) of this setting gave 0.986-0.991; a smaller backbone (8, 16, 16) trained 5
    # epochs at lr 1e-3 gave 0.6-0.76: the head's training is what carries the random features' signal
    assert roc_auc_score(yt, scores) > 0.85
    maps = det.patch_scores(xt)
    assert maps.shape == (96, 4, 4)
    np.testing.assert_allclose(maps.reshape(96, -1).max(axis=1), scores, rtol=1e-4, atol=1e-6)


def test_imdad_through_the_experiment_with_feature_patching():
    xn = textures(60, False, seed=0)
    xa = textures(60, True, seed=1)
    tn = textures(30, False, seed=2)
    ta = textures(30, True, seed=3)
    u8 = lambda a: (a[..., None] * 255).astype(np.uint8)  # noqa: E731
    ds = ImageDataset(u8(np.concatenate([xn, xa])), np.r_[np.zeros(60, int), np.ones(60, int)],
                      u8(np.concatenate([tn, ta])), np.r_[np.zeros(30, int), np.ones(30, int)], ("clean", "hole"),
                      "test")
    cfg = make_config("tiny", dataset="fmnist", classes=(0,), method="imdad", feature_patching=True,
                      backbone_features=BACKBONE, dense_features=(32, 16), epochs=60, lr=1e-2, batch_size=32,
                      anomaly_fraction=0.2)
    assert isinstance(build_model(cfg, (16, 96)), PatchSphereDetector)
    out = run_experiment(cfg, ds)
    (row,) = out["runs"]
    assert not row["diverged"] and np.isfinite(row["auc"])
    # backbone seeds 0-2 x run seeds 0-2 of this setting gave 0.939-1.0 (0.98 for these seeds)
    assert row["auc"] > 0.85, row


def test_config_validates_feature_patching_and_the_cli_carries_it(tmp_path):
    ok = make_config("tiny", dataset="fmnist", feature_patching=True)
    assert (ok.patch_layers, ok.patch_size, ok.patch_reduce, ok.backbone_params) == ((1, 2), 3, "max", None)
    for bad, match in (({"dataset": "bc"}, "takes images"), ({"method": "drocc"}, "hypersphere methods"),
                       ({"pretrain_epochs": 2}, "pretrain_epochs"), ({"patch_layers": (2, 1)}, "increasing"),
                       ({"patch_layers": (3,)}, "increasing"), ({"patch_size": 2}, "odd"),
                       ({"patch_reduce": "sum"}, "patch_reduce"), ({"backbone_features": ()}, "stage widths"),
                       ({"backbone_params": str(tmp_path / "none.npz")}, "no backbone parameters"),
                       ({"backbone_features": (4, 4, 4, 4, 4), "patch_layers": (4,)}, "no cells left")):
        with pytest.raises(ConfigError, match=match):
            make_config("tiny", **{"dataset": "fmnist", "feature_patching": True, **bad})
    make_config("tiny", dataset="bc", patch_size=2)  # the patch settings only count with feature_patching

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
    import run as cli
    a = cli.parse_args(["--dataset=mnist", "--class=0", "--preset=tiny", "--feature_patching", "--patch_layers=0,1",
                        "--backbone_features=4,8", "--patch_size=1", "--patch_reduce=mean"])
    cfg = cli.config_from_args(a)
    assert (cfg.feature_patching, cfg.patch_layers, cfg.backbone_features, cfg.patch_size, cfg.patch_reduce) == (
        True, (0, 1), (4, 8), 1, "mean")
    from imdad_jax.pipeline import RunSettings, results_stem
    assert results_stem(cfg, RunSettings()).startswith("mnist_imdad_fp_")
    assert not cli.config_from_args(cli.parse_args(["--dataset=mnist", "--class=0", "--preset=tiny"])).feature_patching
    assert isinstance(build_model(cfg, (196, 12)), PatchSphereDetector)


# ---- feature patching as an option of the scikit-learn estimator ----------------------------------------------

def test_deep_detector_with_feature_patching_fits_scores_saves_and_compiles_once(tmp_path):
    import pickle

    from sklearn.base import clone

    from imdad_jax import estimator, feature_patching
    from imdad_jax.estimator import IMDAD, DeepDetector

    x = textures(40, False, seed=0)
    xt = np.concatenate([textures(6, False, seed=2), textures(6, True, seed=3)])
    kw = dict(method="deep_svdd", features="patches", backbone_features=(4, 8, 8), dense_features=(8, 4),
              epochs=2, batch_size=16)
    det = DeepDetector(**kw).fit(x)
    # the same numbers as the function the estimator replaces, and as its own embeddings scored by the model
    np.testing.assert_array_equal(det.decision_function(xt), fit_feature_patching(
        x, method="deep_svdd", backbone=PatchBackbone((4, 8, 8)), dense_features=(8, 4), epochs=2,
        batch_size=16).decision_function(xt))
    s = det.decision_function(xt)
    assert s.shape == (12,) and np.isfinite(s).all() and not det.diverged_
    maps = det.patch_scores(xt)
    assert maps.shape == (12, 4, 4) and det.patch_grid() == (4, 4)  # stage 1 of 16x16 images: a 4x4 grid
    np.testing.assert_allclose(maps.reshape(12, -1).max(axis=1), s, rtol=1e-5, atol=1e-6)
    assert det.patch_embeddings(xt).shape == (12, 16, 16)  # stages 1 and 2: 8 + 8 features a patch
    assert det.center_.shape == (4,)

    # a second decision_function compiles nothing: both programs come from the module-level caches
    emb_before, score_before = feature_patching._cached_embedder.cache_info(), estimator._scorer.cache_info()
    jitted = feature_patching.embedder(PatchBackbone((4, 8, 8)), (1, 2), 3)
    compiled = jitted._cache_size()
    np.testing.assert_array_equal(det.decision_function(xt), s)
    emb_after, score_after = feature_patching._cached_embedder.cache_info(), estimator._scorer.cache_info()
    assert emb_after.hits > emb_before.hits and emb_after.misses == emb_before.misses
    assert score_after.hits > score_before.hits and score_after.misses == score_before.misses
    assert jitted._cache_size() == compiled

    # save / load: the backbone's variables travel in params.msgpack, so no backbone file is needed
    det.save(tmp_path / "fp")
    back = DeepDetector.load(tmp_path / "fp")
    np.testing.assert_array_equal(back.decision_function(xt), s)
    np.testing.assert_array_equal(back.patch_scores(xt), maps)
    assert back.get_params() == det.get_params()
    # a backbone given as a variables tree is stored there too; a custom backbone module is refused
    tree = init_backbone_params(PatchBackbone((4, 8, 8)), (16, 16), seed=0)
    det_tree = DeepDetector(**kw, backbone_params=tree).fit(x)
    np.testing.assert_array_equal(det_tree.decision_function(xt), s)  # the same variables as backbone_seed=0
    det_tree.save(tmp_path / "tree")
    back = DeepDetector.load(tmp_path / "tree")
    np.testing.assert_array_equal(back.decision_function(xt), s)
    np.testing.assert_array_equal(back.backbone_params["params"]["conv0"]["kernel"], tree["params"]["conv0"]["kernel"])
    # a backbone_params file is read at fit only: the saved detector loads without it
    det_file = DeepDetector(**kw, backbone_params=str(save_backbone_params(tree, tmp_path / "bb.npz"))).fit(x)
    det_file.save(tmp_path / "file")
    (tmp_path / "bb.npz").unlink()
    np.testing.assert_array_equal(DeepDetector.load(tmp_path / "file").decision_function(xt), s)
    custom = DeepDetector(**{**kw, "backbone_features": None}, backbone=PatchBackbone((4, 8, 8)),
                          backbone_params=tree).fit(x)
    np.testing.assert_array_equal(custom.decision_function(xt), s)
    with pytest.raises(ValueError, match="default PatchBackbone only"):
        custom.save(tmp_path / "custom")
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(custom)).decision_function(xt), s)

    # sklearn's parameter protocol carries the new settings
    c = clone(custom)
    assert c.get_params()["backbone"] == PatchBackbone((4, 8, 8)) and c.get_params()["features"] == "patches"
    assert IMDAD(features="patches", patch_size=1).get_params()["patch_size"] == 1
    assert set(DeepDetector().get_params()) >= {"features", "backbone", "backbone_features", "backbone_params",
                                                "backbone_seed", "patch_layers", "patch_size", "patch_reduce"}

    # clear errors: a table, a method without a patch form, a raw detector's patch map, bad settings
    with pytest.raises(ValueError, match="features='patches' takes images"):
        DeepDetector(**kw).fit(x.reshape(40, -1))
    with pytest.raises(ValueError, match="features='patches' takes images"):
        det.decision_function(xt.reshape(12, -1))
    with pytest.raises(ValueError, match="hypersphere methods"):
        DeepDetector(**{**kw, "method": "drocc"}).fit(x)
    with pytest.raises(ValueError, match="needs a feature-patching detector"):
        DeepDetector(method="deep_svdd", epochs=1, dense_features=(4,)).fit(x.reshape(40, -1)).patch_scores(x)
    for bad, match in (({"features": "pixels"}, "features must be"), ({"patch_size": 2}, "odd"),
                       ({"patch_layers": (3,)}, "not stages"), ({"patch_reduce": "sum"}, "patch_reduce"),
                       ({"arch": "cnn2"}, "arch must be"), ({"backbone_features": (4, 4, 4, 4, 4),
                                                            "patch_layers": (4,)}, "no cells")):
        with pytest.raises(ValueError, match=match):
            DeepDetector(**{**kw, **bad}).fit(x)


def test_feature_patching_fit_many_and_imdad_with_labels():
    from sklearn.base import clone

    from imdad_jax.estimator import IMDAD, DeepDetector

    x = np.concatenate([textures(30, False, seed=0), textures(6, True, seed=1)])
    y = np.r_[np.zeros(30), np.ones(6)]
    kw = dict(features="patches", backbone_features=(4, 8, 8), dense_features=(8, 4), epochs=2, batch_size=16)
    dets = DeepDetector(method="deep_sad", **kw).fit_many(x, y, grid={"lr": [1e-3, 1e-2]})
    assert [d.lr for d in dets] == [1e-3, 1e-2]
    alone = clone(dets[1]).fit(x, y)
    np.testing.assert_allclose(dets[1].decision_function(x), alone.decision_function(x), rtol=1e-4, atol=1e-5)
    assert dets[1].patch_scores(x[:3]).shape == (3, 4, 4)
    imdad = IMDAD(**kw, patch_reduce="mean").fit((x * 255).astype(np.uint8), y)
    assert imdad.decision_function(x[:5]).shape == (5,) and imdad.margin_ > 0
