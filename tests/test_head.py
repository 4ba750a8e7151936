import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imdad_jax.models import HypersphereHead, build_detector, margin2_from_param, sphere_geometry


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_head_identity_on_random_params(seed):
    """||z||^2 - (w.z + b) == ||z - c||^2 - R^2 with c, R^2 read off the weights."""
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    z = jax.random.normal(k1, (64, 7))
    head = HypersphereHead()
    params = head.init(k2, z)
    # Random weights, not the initial ones: w of any norm, any bias.
    params = {"params": {"w": 3.0 * jax.random.normal(k3, (7,)), "b": jax.random.normal(k4, ()),
                         "rho": params["params"]["rho"]}}
    out = head.apply(params, z)
    g = sphere_geometry(params["params"])
    expect = jnp.sum((z - g.center) ** 2, axis=-1) - g.radius2
    np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-5)


def test_geometry_reads_a_stacked_run_axis():
    det = build_detector("fc3", dense_features=(8, 4))
    keys = jax.random.split(jax.random.key(0), 5)
    params = jax.vmap(lambda k: det.init(k, jnp.ones((1, 3))))(keys)
    g = sphere_geometry(params["params"]["head"])
    assert g.center.shape == (5, 4) and g.radius2.shape == (5,) and g.margin2.shape == (5,)
    # initialisation puts the center on the unit sphere and the margin at its init value, per run
    np.testing.assert_allclose(np.linalg.norm(g.center, axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(g.margin2, 0.1, rtol=1e-5)


def test_margin_parametrisations():
    r = jnp.array([-3.0, 0.0, 2.0])
    assert np.all(np.asarray(margin2_from_param(r, "softplus")) > 0)
    np.testing.assert_array_equal(margin2_from_param(r, "raw"), r)
    with pytest.raises(ValueError, match="margin_param"):
        margin2_from_param(r, "exp")


def test_cnn_detector_output_shape_and_embed():
    det = build_detector("cnn2", conv_features=(2, 4), dense_features=(8, 3))
    x = jnp.ones((5, 28, 28, 1))
    p = det.init(jax.random.key(0), x)
    assert det.apply(p, x).shape == (5,)
    assert det.apply(p, x, method="embed").shape == (5, 3)
    # bias-free encoder: no bias leaves outside the head
    enc_leaves = jax.tree_util.tree_leaves_with_path({k: v for k, v in p["params"].items() if k != "head"})
    assert all("bias" not in jax.tree_util.keystr(path) for path, _ in enc_leaves)
