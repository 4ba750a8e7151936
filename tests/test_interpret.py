"""Interpretability: Grad-CAM follows the evidence and signs it, thresholds on hand-computed
examples, the figure data against values set by hand, and every figure writes a PNG."""
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from imdad_jax import interpret as ip
from imdad_jax import plots
from imdad_jax.models import HypersphereHead, MLPEncoder, build_detector
from imdad_jax.objectives import imdad

CONV, DENSE = (4, 8), (8, 4)


@pytest.fixture(scope="module")
def cnn():
    det = build_detector("cnn2", conv_features=CONV, dense_features=DENSE, margin_param="raw")
    x = jax.random.uniform(jax.random.key(1), (6, 16, 16))
    return det, det.init(jax.random.key(0), x), x


def _hand_params(params, center, radius2=1.0):
    """Non-negative encoder weights (so a bright patch on a black image gives z >= 0 growing with the
    patch) and the sphere (c, R^2) written into the head."""
    enc = jax.tree.map(lambda a: 4.0 * jnp.abs(a) / np.sqrt(a.size), params["params"]["encoder"])
    c = jnp.asarray(center, jnp.float32)
    head = {"w": 2.0 * c, "b": jnp.asarray(radius2 - c @ c), "rho": jnp.asarray(0.1)}
    return {"params": {"encoder": enc, "head": head}}


def _patch(row, col, size=16):
    img = np.zeros((size, size), np.float32)
    img[row:row + 3, col:col + 3] = 1.0
    return img


# --- Grad-CAM ---------------------------------------------------------------------------------------

def test_perturb_hook_changes_neither_params_nor_outputs(cnn):
    det, params, x = cnn
    assert set(params) == {"params"}  # init stores no batch-shaped 'perturbations' collection
    _, mut = det.apply(params, x, mutable=["perturbations"])
    assert set(mut["perturbations"]["encoder"]) == {"conv0_out", "conv1_out"}
    np.testing.assert_array_equal(det.apply({**params, **mut}, x), det.apply(params, x))


def test_gradcam_shape_and_sign(cnn):
    det, params, x = cnn
    for xx in (x, x[..., None]):  # (N, H, W) and (N, H, W, C)
        out = ip.gradcam(det, params, xx)
        for key in ("normal", "abnormal"):
            assert out[key].shape == (6, 16, 16)
            assert np.all(out[key] >= 0)
    assert ip.gradcam(det, params, x, layer=0, upsample=False)["abnormal"].shape == (6, 16, 16)
    assert ip.gradcam(det, params, x, upsample=False)["abnormal"].shape == (6, 8, 8)


def test_gradcam_equals_the_layer_gradient_computed_by_hand(cnn):
    """alpha_k = spatial mean of dS/dA_k, A the last conv block's activation before its pool."""
    det, params, x = cnn
    enc, head = params["params"]["encoder"], params["params"]["head"]

    def conv(i, h):
        return nn.Conv(CONV[i], (5, 5), padding="SAME", use_bias=False).apply({"params": enc[f"conv{i}"]}, h)

    def act(h):
        return nn.leaky_relu(h, negative_slope=0.01)

    def pool(h):
        return nn.max_pool(h, (2, 2), strides=(2, 2))

    def tail(a):
        return HypersphereHead(margin_param="raw").apply({"params": head},
                                                         MLPEncoder(DENSE).apply({"params": enc["fc"]}, pool(a)))

    a = act(conv(1, pool(act(conv(0, x[..., None])))))
    np.testing.assert_allclose(tail(a), det.apply(params, x), rtol=1e-5, atol=1e-6)
    g = jax.grad(lambda aa: jnp.sum(tail(aa)))(a)
    signed = np.einsum("nhwk,nk->nhw", a, np.mean(g, axis=(1, 2)))
    out = ip.gradcam(det, params, x, upsample=False)
    np.testing.assert_allclose(out["abnormal"], np.maximum(signed, 0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out["normal"], np.maximum(-signed, 0), rtol=1e-4, atol=1e-7)


def test_gradcam_uses_the_hooks_activation_with_encoder_options_on():
    """With BatchNorm, squeeze-excitation and a residual on, A is what the block hands to its pooling:
    SE(act(BN(conv(x)))) + skip(x), read here from the submodules' own outputs, not act(conv(x))."""
    from imdad_jax.models import SphereDetector, build_encoder
    enc = build_encoder("cnn2", conv_features=CONV, dense_features=DENSE, batch_norm=True, se_attention=True,
                        residual=True)
    det = SphereDetector(enc, HypersphereHead(margin_param="raw"))
    x = jax.random.uniform(jax.random.key(1), (6, 16, 16))
    params = det.init(jax.random.key(0), x)
    _, inter = det.apply(params, x, capture_intermediates=True)
    mods = inter["intermediates"]["encoder"]
    a = mods["se1"]["__call__"][0] + mods["skip1"]["__call__"][0]  # conv1 maps 4 -> 8 channels: a 1x1 skip
    _, mut = det.apply(params, x, mutable=["perturbations"])
    g = jax.grad(lambda p: jnp.sum(det.apply({**params, "perturbations": p}, x)))(mut["perturbations"])
    signed = np.einsum("nhwk,nk->nhw", a, np.mean(g["encoder"]["conv1_out"], axis=(1, 2)))
    out = ip.gradcam(det, params, x, upsample=False)
    np.testing.assert_allclose(out["abnormal"], np.maximum(signed, 0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["normal"], np.maximum(-signed, 0), rtol=1e-4, atol=1e-6)
    # the activation alone (what the maps used before) gives other maps
    old = np.einsum("nhwk,nk->nhw", nn.leaky_relu(mods["conv1"]["__call__"][0], 0.01),
                    np.mean(g["encoder"]["conv1_out"], axis=(1, 2)))
    assert not np.allclose(np.maximum(old, 0), out["abnormal"], rtol=1e-2, atol=1e-4)


def test_normal_and_abnormal_maps_come_from_opposite_gradients(cnn):
    det, params, x = cnn
    out = ip.gradcam(det, params, x, upsample=False)
    # one signed map split in two: never both positive at a cell, and both occur on this batch
    assert np.all(out["normal"] * out["abnormal"] == 0)
    assert (out["normal"] > 0).any() and (out["abnormal"] > 0).any()
    # negating the score swaps the maps
    neg = ip.gradcam(det, params, x, lambda v, xx: -det.apply(v, xx), upsample=False)
    np.testing.assert_allclose(neg["normal"], out["abnormal"], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(neg["abnormal"], out["normal"], rtol=1e-5, atol=1e-8)
    # IMD-AD's score differs from the head's output by a constant (rho^2/2): same maps
    opts = imdad.Options(margin_param="raw")
    sc = ip.gradcam(det, params, x, lambda v, xx: imdad.score(v, None, det, xx, opts), upsample=False)
    np.testing.assert_allclose(sc["abnormal"], out["abnormal"], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("center, evidence, silent", [(np.zeros(4), "abnormal", "normal"),
                                                      (10.0 * np.ones(4), "normal", "abnormal")])
def test_gradcam_follows_a_planted_patch(cnn, center, evidence, silent):
    """A bright 3x3 patch on black: with c = 0 it pushes z away from c (abnormal evidence), with c far out
    along z's direction it pulls z towards c (normal evidence). Either way the map sits on the patch and
    moves with it; the other map is zero everywhere."""
    det, params, _ = cnn
    q = _hand_params(params, center)
    places = [(2, 2), (11, 11), (2, 11)]  # top-left corner of each patch
    x = jnp.stack([_patch(r, c) for r, c in places])
    blank = jnp.zeros((1, 16, 16))
    z = np.asarray(det.apply(q, x, method="embed"))
    # the construction holds: z > 0 grows with the patch, and with c != 0 it stays short of c
    assert np.all(z > 0) and (not center.any() or np.all(z < center))
    s, s0 = np.asarray(det.apply(q, x)), float(det.apply(q, blank)[0])
    assert np.all(s > s0) if evidence == "abnormal" else np.all(s < s0)
    out = ip.gradcam(det, q, x)
    assert np.all(out[silent] == 0)
    ii, jj = np.mgrid[:16, :16]
    for m, (r, c) in zip(out[evidence], places):
        peak = np.array(np.unravel_index(np.argmax(m), m.shape))
        assert np.max(np.abs(peak - (r + 1, c + 1))) <= 1  # the patch's centre pixel, within one
        centroid = np.array([(m * ii).sum(), (m * jj).sum()]) / m.sum()
        assert np.max(np.abs(centroid - (r + 1, c + 1))) <= 1.5
        quadrant = m[((ii < 8) == (r < 8)) & ((jj < 8) == (c < 8))]
        assert quadrant.sum() > 0.6 * m.sum()  # 0.76 here: the receptive field spreads past the quadrant


def test_gradcam_examples_and_validation(cnn):
    det, params, x = cnn
    lo, hi = ip.extreme_indices(np.array([3.0, -1.0, 2.0, 5.0, 0.0]), 2)
    np.testing.assert_array_equal(lo, [1, 4])
    np.testing.assert_array_equal(hi, [3, 0])
    ex = ip.gradcam_examples(det, params, x, k=2)
    s = np.asarray(det.apply(params, x))
    assert ex["images"].shape == (4, 16, 16, 1) and ex["normal"].shape == (4, 16, 16)
    np.testing.assert_array_equal(ex["index"], np.concatenate(ip.extreme_indices(s, 2)))
    assert list(ex["group"]) == ["lowest", "lowest", "highest", "highest"]
    with pytest.raises(ValueError, match="k must lie"):
        ip.extreme_indices(s, 7)
    with pytest.raises(ValueError, match="NaN"):
        ip.extreme_indices(np.array([0.0, np.nan]), 1)
    with pytest.raises(ValueError, match="layer"):
        ip.gradcam(det, params, x, layer=2)
    fc = build_detector("fc3", dense_features=(4, 2))
    with pytest.raises(ValueError, match="CNNEncoder"):
        ip.gradcam(fc, fc.init(jax.random.key(0), jnp.ones((1, 3))), jnp.ones((2, 3)))
    stacked = jax.tree.map(lambda a: jnp.stack([a, a + 1]), params)
    np.testing.assert_array_equal(ip.select_run(stacked, 1)["params"]["head"]["b"], params["params"]["head"]["b"] + 1)
    with pytest.raises(ValueError, match="select_run"):
        ip.gradcam(det, stacked, x)


# --- thresholds -------------------------------------------------------------------------------------

def test_boundary_threshold():
    d = ip.boundary_threshold([-1.0, 0.0, 0.5, 2.0], [0, 1, 0, 1])
    np.testing.assert_array_equal(d.predictions, [0, 0, 1, 1])  # score 0 is on the boundary: normal
    assert d.threshold == 0.0
    assert d.metrics == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.5, "flagged_fraction": 0.5}
    assert ip.boundary_threshold([1.0, -1.0]).metrics == {"flagged_fraction": 0.5}  # no labels, no metrics


def test_gaussian_and_zscore_thresholds():
    train = [1.0, 2.0, 3.0, 4.0, 5.0]  # mean 3, sample std sqrt(2.5), median 3, MAD 1
    scores, labels = [4.5, 4.6, 10.0, 0.0], [0, 1, 1, 0]
    g = ip.gaussian_threshold(scores, train, labels, k=1.0)
    assert g.threshold == pytest.approx(3.0 + np.sqrt(2.5))
    np.testing.assert_array_equal(g.predictions, [0, 1, 1, 0])
    assert g.metrics["f1"] == 1.0 and g.metrics["accuracy"] == 1.0
    z = ip.zscore_threshold(scores, train, labels, k=1.0)
    np.testing.assert_allclose(z.statistic, (np.array(scores) - 3.0) / np.sqrt(2.5))
    np.testing.assert_array_equal(z.predictions, g.predictions)  # the same rule on a unit-free scale
    r = ip.zscore_threshold(scores, train + [100.0], labels, k=1.0, robust=True)
    # median 3.5, MAD 1.5 scaled by 1.4826: the outlying normal moves neither much
    np.testing.assert_allclose(r.statistic, (np.array(scores) - 3.5) / (1.5 * 1.482602218505602), rtol=1e-6)
    np.testing.assert_array_equal(r.predictions, [0, 0, 1, 0])
    assert ip.gaussian_threshold(scores, train).threshold == pytest.approx(3.0 + 3.0 * np.sqrt(2.5))  # k = 3


def test_mahalanobis_on_a_gaussian_sample():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(20000, 2)) * np.array([1.0, 2.0])  # covariance diag(1, 4)
    test = np.array([[2.0, 0.0], [0.0, 4.0], [2.5, 0.0], [0.0, 7.0], [4.0, 0.0]])
    d = ip.mahalanobis_threshold(test, train, [0, 0, 0, 1, 1], estimator="empirical")
    np.testing.assert_allclose(d.statistic, [4.0, 4.0, 6.25, 12.25, 16.0], rtol=0.05)
    assert d.threshold == pytest.approx(-2.0 * np.log(0.01))  # chi2(2) quantile in closed form
    np.testing.assert_array_equal(d.predictions, [0, 0, 0, 1, 1])
    assert d.metrics["f1"] == 1.0
    # mean + 3 std of chi2(2) distances: 2 + 3 * 2
    fit = ip.fit_mahalanobis(train, estimator="empirical", rule="std")
    assert fit.threshold == pytest.approx(8.0, rel=0.05)
    lw = ip.mahalanobis_threshold(test, train)  # Ledoit-Wolf barely shrinks with this many points
    np.testing.assert_allclose(lw.statistic, d.statistic, rtol=0.02)


def test_all_thresholds_and_table():
    rng = np.random.default_rng(1)
    train_s, s = rng.normal(-1, 0.2, 50), np.r_[rng.normal(-1, 0.2, 20), rng.normal(1, 0.2, 20)]
    y = np.r_[np.zeros(20, int), np.ones(20, int)]
    z_train, z = rng.normal(size=(50, 3)), np.r_[rng.normal(size=(20, 3)), rng.normal(5, 1, (20, 3))]
    res = ip.all_thresholds(s, train_s, y, z=z, z_train_normals=z_train)
    assert set(res) == {"boundary", "gaussian", "zscore", "zscore_robust", "mahalanobis"}
    table = ip.metrics_table(res)
    assert set(table["mahalanobis"]) == {"precision", "recall", "f1", "accuracy", "flagged_fraction", "threshold"}
    assert table["boundary"]["f1"] == 1.0 and table["mahalanobis"]["recall"] == 1.0
    assert "mahalanobis" not in ip.all_thresholds(s, train_s, y)


@pytest.mark.parametrize("call, match", [
    (lambda: ip.boundary_threshold([0.0, 1.0], [0, 1, 1]), "shape"),
    (lambda: ip.boundary_threshold([[0.0, 1.0]]), "1-D"),
    (lambda: ip.boundary_threshold([0.0, np.nan]), "NaN"),
    (lambda: ip.boundary_threshold([0.0, 1.0], [0, 2]), "0 \\(normal\\) or 1"),
    (lambda: ip.gaussian_threshold([0.0], []), "empty"),
    (lambda: ip.zscore_threshold([0.0], [1.0]), "at least 2"),
    (lambda: ip.zscore_threshold([0.0], [1.0, 1.0]), "zero spread"),
    (lambda: ip.gaussian_threshold([0.0], [1.0, 2.0], k=np.inf), "finite"),
    (lambda: ip.mahalanobis_threshold(np.ones((2, 3)), np.zeros((0, 3))), "empty"),
    (lambda: ip.mahalanobis_threshold(np.ones((2, 3)), np.random.default_rng(0).normal(size=(9, 2))), "dims"),
    (lambda: ip.mahalanobis_threshold(np.ones(3), np.ones((4, 3))), "2-D"),
    (lambda: ip.fit_mahalanobis(np.eye(3), estimator="mcd"), "estimator"),
    (lambda: ip.fit_mahalanobis(np.eye(3), rule="max"), "rule"),
    (lambda: ip.fit_mahalanobis(np.eye(3), alpha=1.0), "alpha"),
    (lambda: ip.all_thresholds([0.0], [1.0, 2.0], z=np.ones((1, 2))), "both"),
])
def test_threshold_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- geometry ---------------------------------------------------------------------------------------

def _fc2(margin_param="raw", rho=0.64):
    """A rep_dim = 2 detector with the sphere set by hand: c = (0.6, 0.8), R^2 = 2.25, rho^2 = 0.64."""
    det = build_detector("fc3", dense_features=(8, 2), margin_param=margin_param)
    p = det.init(jax.random.key(3), jnp.ones((1, 2)))
    c = jnp.array([0.6, 0.8])
    head = {"w": 2 * c, "b": jnp.asarray(2.25 - 1.0), "rho": jnp.asarray(rho)}
    return det, {"params": {**p["params"], "head": head}}


def test_circles_radii_are_the_head_values():
    for margin_param, rho in (("raw", 0.64), ("softplus", float(np.log(np.expm1(0.64))))):
        _, p = _fc2(margin_param, rho)
        circ = ip.circles_2d(p, margin_param)
        np.testing.assert_allclose(circ["center"], [0.6, 0.8], rtol=1e-6)
        assert circ["radius"] == pytest.approx(1.5)
        assert circ["outer_radius"] == pytest.approx(1.7)
        assert circ["decision_radius"] == pytest.approx(np.sqrt(2.25 + 0.32))
    with pytest.raises(ValueError, match="rep_dim = 2"):
        ip.circles_2d(_rep3_params())


def _rep3_params():
    det = build_detector("fc3", dense_features=(4, 3))
    return det.init(jax.random.key(0), jnp.ones((1, 2)))


def test_representation_and_decision_radius_agree_with_the_score():
    det, p = _fc2()
    x = np.random.default_rng(0).normal(size=(200, 2)) * 3
    z = ip.representation_2d(p, det, x)
    circ = ip.circles_2d(p, "raw")
    r = np.linalg.norm(z - circ["center"], axis=1)
    np.testing.assert_allclose(ip.squared_distance(p, det, x), r ** 2, rtol=1e-4, atol=1e-5)
    s = np.asarray(imdad.score(p, None, det, jnp.asarray(x, jnp.float32), imdad.Options(margin_param="raw")))
    away = np.abs(r - circ["decision_radius"]) > 1e-4
    np.testing.assert_array_equal((s > 0)[away], (r > circ["decision_radius"])[away])
    assert ip.input_score_grid(lambda xx: det.apply(p, xx), x, resolution=7)["score"].shape == (7, 7)


def test_distance_density():
    rng = np.random.default_rng(0)
    dn, da = rng.gamma(4.0, 0.25, 300), rng.normal(4.0, 0.5, 100)
    out = ip.distance_density(dn, da, radius2=1.5, margin2=0.5)
    for key in ("normals", "anomalies"):
        assert np.all(out[key] >= 0)
        assert np.trapezoid(out[key], out["grid"]) == pytest.approx(1.0, abs=0.01)
    assert (out["radius2"], out["decision2"], out["outer2"]) == (1.5, 1.75, 2.0)
    g = np.linspace(0, 5, 11)
    fixed = ip.distance_density(dn, [], 1.5, 0.5, grid=g)
    assert fixed["anomalies"] is None
    np.testing.assert_allclose(fixed["normals"], stats.gaussian_kde(dn)(g))
    with pytest.raises(ValueError, match="spread"):
        ip.distance_density(np.ones(5), da, 1.0, 0.1)


def test_roc_tsne_nu_table():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(15, int), np.ones(15, int)]
    s = rng.normal(size=(3, 30)) + y
    s[2, 0] = np.nan
    curves = ip.roc_curves(s, y)
    assert len(curves) == 3 and curves[0]["fpr"].shape == curves[0]["tpr"].shape
    assert curves[1]["auc"] == pytest.approx(roc_auc_score(y, s[1]))
    assert np.isnan(curves[2]["auc"]) and curves[2]["fpr"].size == 0
    with pytest.raises(ValueError, match="one class"):
        ip.roc_curves(s[:1], np.zeros(30, int))
    emb = ip.tsne_embedding(rng.normal(size=(12, 5)), seed=0)
    assert emb.shape == (12, 2) and np.all(np.isfinite(emb))
    with pytest.raises(ValueError, match="N >= 4"):
        ip.tsne_embedding(np.ones((3, 2)))
    t = ip.nu_property_grid([0.2, 0.1], [0.1, 0.1], [0.25, 0.05], [0.01, 0.08], nu=0.5)
    np.testing.assert_allclose(t["nu1"], [0.1, 0.2])  # sorted by nu1
    np.testing.assert_allclose(t["bound_normals_out"], [0.15, 0.3])
    np.testing.assert_allclose(t["bound_anomalies_in"], [0.05, 0.05])
    np.testing.assert_array_equal(t["holds_normals_out"], [True, True])
    np.testing.assert_array_equal(t["holds_anomalies_in"], [False, True])
    with pytest.raises(ValueError, match="one value per run"):
        ip.nu_property_grid([0.1], [0.1, 0.2], [0.1], [0.1])


# --- figures ----------------------------------------------------------------------------------------

def _is_png(path):
    data = Path(path).read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_figure_writes_a_png(cnn, tmp_path):
    det, params, x = cnn
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    s = rng.normal(size=20) + 2 * y
    fdet, fp = _fc2()
    x2 = rng.normal(size=(20, 2))
    decisions = ip.all_thresholds(s, rng.normal(size=30), y)
    written = [
        plots.gradcam_grid(ip.gradcam_examples(det, params, x, k=2), tmp_path / "gradcam.png", title="t"),
        plots.density_plot(ip.distance_density(rng.gamma(4, 0.25, 50), rng.normal(4, 0.5, 20), 1.5, 0.5),
                           tmp_path / "density.png"),
        plots.circles_plot(ip.circles_2d(fp, "raw"), ip.representation_2d(fp, fdet, x2), tmp_path / "circles.png",
                           labels=y, x=x2, score_grid=ip.input_score_grid(lambda xx: fdet.apply(fp, xx), x2, 20)),
        plots.roc_plot(ip.roc_curves(np.stack([s, -s]), y), tmp_path / "roc.png"),
        plots.tsne_plot(ip.tsne_embedding(rng.normal(size=(20, 4))), tmp_path / "tsne.png", labels=y),
        plots.nu_property_plot(ip.nu_property_grid([0.1, 0.2], [0.1, 0.1], [0.1, 0.4], [0.02, 0.01]),
                               tmp_path / "nu.png"),
        plots.threshold_metrics_plot(ip.metrics_table(decisions), tmp_path / "thresholds.png"),
        plots.attribution_plot(rng.normal(size=(5, 12)), tmp_path / "attr.png", [f"f{j}" for j in range(12)],
                               rows=[0, 3], top=5, scores=s),
    ]
    for path in written:
        assert _is_png(path), path


def test_integrated_gradients_is_exact_for_a_linear_score_and_complete_for_a_curved_one():
    w = np.array([1.0, -2.0, 0.5], np.float32)
    linear = lambda p, x: x @ p  # noqa: E731
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    a = ip.integrated_gradients(linear, w, x, np.zeros(3, np.float32), steps=4)
    np.testing.assert_allclose(a, x * w, rtol=1e-6)  # (x - b) * w: IG of a linear function, whatever the steps
    square = lambda p, x: (x ** 2) @ p  # noqa: E731
    b = np.ones(3, np.float32)
    a = ip.integrated_gradients(square, w, x, b, steps=64)
    np.testing.assert_allclose(a.sum(1), square(w, x) - square(w, b[None]), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(ip.top_features(np.array([[0.1, 3.0, -5.0, 1.0]]), k=2), [[1, 3]])
    with pytest.raises(ValueError, match="steps must be"):
        ip.integrated_gradients(linear, w, x, b, steps=0)
