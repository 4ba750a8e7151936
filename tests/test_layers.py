"""imdad_jax.models.layers: the im2col convolution and the reshape max-pool equal nn.Conv and nn.max_pool."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imdad_jax.models.layers import (CONV_IMPLS, IM2COL_MAX_IN_FEATURES, AffineFreeBatchNorm, Conv, max_pool_2x2,
                                     resolve_conv_impl)

RTOL = 1e-5


def _rel_err(a: jnp.ndarray, b: jnp.ndarray) -> float:
    # Relative to the largest entry: an elementwise relative error is meaningless where an entry cancels to ~0.
    # In NumPy: each eager jnp op would compile a program per shape, which is most of these tests' time.
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _nonlinear_loss(y: jnp.ndarray) -> jnp.ndarray:
    # Not a plain sum: its gradient is y-dependent, so an error in the forward also shows in the backward.
    return jnp.sum(jnp.sin(y) * y)


CONV_CASES = [  # (input shape without channels, Cin, Cout, kernel, padding, use_bias)
    ((3, 9, 11), 1, 8, 5, "SAME", False),     # the CNN encoders' first layer; odd, non-square
    ((3, 7, 6), 8, 4, 5, "SAME", False),      # LeNet's second layer's channels
    ((2, 6, 6), 16, 32, 3, "SAME", True),     # CNN2's second layer's channels, kernel 3, with bias
    ((2, 8, 9), 3, 5, 4, "SAME", False),      # even kernel: SAME pads 1 before, 2 after
    ((2, 9, 8), 2, 3, 3, "VALID", False),
    ((2, 7, 8), 2, 3, 3, "CIRCULAR", True),
    ((2, 7, 8), 2, 3, 3, ((1, 0), (2, 1)), False),
]


@pytest.mark.parametrize("shape,cin,cout,k,padding,use_bias", CONV_CASES)
def test_im2col_conv_equals_nn_conv(shape, cin, cout, k, padding, use_bias):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape + (cin,)), jnp.float32)
    ref = nn.Conv(cout, (k, k), padding=padding, use_bias=use_bias)
    # impl="xla" is nn.Conv's own lax call; test_conv_params_batch_axes_and_strides checks it, auto and init.
    mods = [ref, Conv(cout, (k, k), padding=padding, use_bias=use_bias, impl="im2col")]
    params = {"params": {"kernel": jnp.asarray(0.3 * rng.standard_normal((k, k, cin, cout)), jnp.float32)}}
    if use_bias:
        params["params"]["bias"] = jnp.asarray(rng.standard_normal(cout), jnp.float32)
    assert jax.tree.structure(jax.eval_shape(mods[1].init, jax.random.PRNGKey(0), x)) == jax.tree.structure(params)

    @jax.jit  # one program per case: op-by-op dispatch would compile every small op on its own
    def outputs(params, x):
        return [(m.apply(params, x),
                 jax.grad(lambda p, x, m=m: _nonlinear_loss(m.apply(p, x)), argnums=(0, 1))(params, x))
                for m in mods]

    (y_ref, g_ref), (y, g) = jax.device_get(outputs(params, x))
    assert _rel_err(y, y_ref) < RTOL
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        assert _rel_err(a, b) < RTOL


def test_im2col_conv_under_vmap_over_runs():
    """Each run its own kernel and batch (the engine's vmap strategy): im2col equals nn.Conv run by run."""
    rng = np.random.default_rng(1)
    runs, cin, cout = 3, 4, 6
    x = jnp.asarray(rng.standard_normal((runs, 2, 7, 8, cin)), jnp.float32)
    ref = nn.Conv(cout, (3, 3), padding="SAME", use_bias=False)
    conv = Conv(cout, (3, 3), use_bias=False, impl="im2col")

    params = {"params": {"kernel": jnp.asarray(0.3 * rng.standard_normal((runs, 3, 3, cin, cout)), jnp.float32)}}

    @jax.jit
    def outputs(params, x):
        per_run = [ref.apply(jax.tree.map(lambda a, r=r: a[r], params), x[r]) for r in range(runs)]
        lg = [jax.vmap(jax.value_and_grad(lambda p, x, m=m: _nonlinear_loss(m.apply(p, x)), argnums=(0, 1)))(params, x)
              for m in (conv, ref)]
        return jax.vmap(conv.apply)(params, x), jnp.stack(per_run), lg

    y, y_ref, ((l_own, g_own), (l_ref, g_ref)) = jax.device_get(
        outputs(params, x))
    assert _rel_err(l_own, l_ref) < RTOL
    for a, b in zip(jax.tree.leaves(g_own), jax.tree.leaves(g_ref), strict=True):
        for r in range(runs):
            assert _rel_err(a[r], b[r]) < RTOL
    for r in range(runs):
        assert _rel_err(y[r], y_ref[r]) < RTOL


def test_conv_params_batch_axes_and_strides():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 3, 8, 8, 1)), jnp.float32)  # two batch axes, as nn.Conv allows
    ref = nn.Conv(4, (3, 3), use_bias=False)
    ref2 = nn.Conv(4, (3, 3), strides=2, use_bias=False)
    convs = [Conv(4, 3, use_bias=False, impl=impl) for impl in CONV_IMPLS]  # int kernel_size: square
    # auto with strides 2 falls back to XLA
    strided = Conv(4, (3, 3), strides=2, use_bias=False, impl="auto")

    params = {"params": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 1, 4)), jnp.float32)}}

    @jax.jit
    def outputs(params, x):
        return ([(c.apply(params, x), c.apply(params, x[0, 0])) for c in convs],  # several and no batch axes
                (ref.apply(params, x), ref.apply(params, x[0, 0])),
                strided.apply(params, x[0]), ref2.apply(params, x[0]))

    own, (y_ref, y0_ref), y_s, y_s_ref = jax.device_get(outputs(params, x))
    # Same tree, shapes and numbers from the same key as nn.Conv, bias too: checkpoints and seeds carry over.
    x3 = jnp.ones((1, 6, 6, 3), jnp.float32)
    # (impl is not read at init; a non-zero bias_init shows that it is used.)
    inits = jax.jit(lambda key: [m.init(key, x3) for m in (
        nn.Conv(5, (3, 3)), Conv(5, (3, 3), impl="im2col", bias_init=nn.initializers.normal()))])(jax.random.PRNGKey(1))
    ref_init, own_init = jax.device_get(inits)
    assert jax.tree.structure(own_init) == jax.tree.structure(ref_init)
    np.testing.assert_array_equal(own_init["params"]["kernel"], ref_init["params"]["kernel"])
    assert own_init["params"]["bias"].shape == (5,) and np.any(own_init["params"]["bias"])
    for y, y0 in own:
        assert y.shape == (2, 3, 8, 8, 4)
        assert _rel_err(y, y_ref) < RTOL
        assert _rel_err(y0, y0_ref) < RTOL
    assert _rel_err(y_s, y_s_ref) < RTOL
    with pytest.raises(ValueError, match="strides 1"):
        jax.eval_shape(lambda x: Conv(4, (3, 3), strides=2, impl="im2col").init(jax.random.PRNGKey(0), x), x[0])


def _pool_ref(x: jnp.ndarray) -> jnp.ndarray:
    return nn.max_pool(x, (2, 2), strides=(2, 2))


@jax.jit
def _pool_both(x: jnp.ndarray, w: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
    """max_pool_2x2 and nn.max_pool forward, and the gradients of sum(pool(x) * w)."""
    grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * w))(x)  # noqa: E731
    return max_pool_2x2(x), _pool_ref(x), grad(max_pool_2x2), grad(_pool_ref)


@pytest.mark.parametrize("shape", [(3, 8, 8, 2), (2, 7, 9, 3), (2, 5, 4, 1), (6, 6, 5)])
def test_max_pool_2x2_equals_nn_max_pool(shape):
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)  # continuous: no ties
    w = jnp.asarray(rng.standard_normal(jax.eval_shape(_pool_ref, x).shape), jnp.float32)
    y, y_ref, g, g_ref = jax.device_get(_pool_both(x, w))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(g, g_ref)
    if shape[-3] % 2:  # an odd last row is cropped: no gradient reaches it
        assert not np.any(g[..., -1, :, :])


def test_max_pool_2x2_ties_vmap_and_second_order():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.integers(0, 3, (4, 6, 7, 3)), jnp.float32)  # many tied maxima, all-zero windows too
    w = jnp.asarray(rng.standard_normal(jax.eval_shape(_pool_ref, x).shape), jnp.float32)
    y, y_ref, g, g_ref = jax.device_get(_pool_both(x, w))
    np.testing.assert_array_equal(y, y_ref)
    # at ties the gradient goes to the first maximum in the window, as nn.max_pool's select-and-scatter does
    np.testing.assert_array_equal(g, g_ref)
    xs = jnp.asarray(rng.standard_normal((3, 2, 6, 6, 2)), jnp.float32)

    @jax.jit
    def vmapped_and_second_order(xs):
        gv = [jax.vmap(jax.grad(lambda x, p=p: jnp.sum(p(x) ** 2)))(xs) for p in (max_pool_2x2, _pool_ref)]
        # reverse-over-reverse (e.g. a gradient penalty)
        hv = [jax.grad(lambda x, p=p: jnp.sum(jax.grad(lambda x: jnp.sum(p(x) ** 3))(x) ** 2))(xs[0])
              for p in (max_pool_2x2, _pool_ref)]
        return gv, hv

    (gv, gv_ref), (hv, hv_ref) = jax.device_get(vmapped_and_second_order(xs))
    np.testing.assert_array_equal(gv, gv_ref)
    assert _rel_err(hv, hv_ref) < RTOL


def test_resolve_conv_impl():
    for impl in ("xla", "im2col"):
        for backend in ("cpu", "gpu", "tpu", None):
            assert resolve_conv_impl(impl, backend) == impl
    for backend in ("gpu", "tpu"):
        assert resolve_conv_impl("auto", backend) == "xla"
        assert resolve_conv_impl("auto", backend, in_features=1, vmapped=True) == "xla"
    assert resolve_conv_impl("auto", "cpu", in_features=1) == "im2col"
    assert resolve_conv_impl("auto", "cpu", in_features=IM2COL_MAX_IN_FEATURES) == "im2col"
    assert resolve_conv_impl("auto", "cpu", in_features=IM2COL_MAX_IN_FEATURES + 1) == "xla"
    assert resolve_conv_impl("auto", "cpu", in_features=16) == "xla"
    assert resolve_conv_impl("auto", "cpu") == "xla"
    assert resolve_conv_impl("auto", "cpu", in_features=16, vmapped=True) == "im2col"
    assert resolve_conv_impl("auto", "cpu", in_features=1, strides=2) == "xla"
    assert resolve_conv_impl("auto") in ("xla", "im2col")  # the default backend's answer
    with pytest.raises(ValueError, match=r"conv impl must be one of \('auto', 'xla', 'im2col'\), got 'cudnn'"):
        resolve_conv_impl("cudnn")
    with pytest.raises(ValueError, match="conv impl must be one of"):
        jax.eval_shape(lambda x: Conv(4, (3, 3), impl="fast").init(jax.random.PRNGKey(0), x), jnp.ones((1, 4, 4, 1)))


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (10, 7), (2, 3, 4, 5, 2)])
def test_affine_free_batch_norm_equals_flax_batch_norm(shape):
    """Same variables, forward, running averages (train and eval) as nn.BatchNorm; the hand-written gradient
    equals autodiff's, also under vmap over runs and with cotangents on the batch statistics."""
    kw = dict(momentum=0.9, epsilon=1e-4)
    ours = AffineFreeBatchNorm(**kw)
    ref = nn.BatchNorm(use_bias=False, use_scale=False, **kw)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal(shape) * 3 + 2, jnp.float32)
    g = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    v = ours.init(jax.random.PRNGKey(0), x, use_running_average=False)
    v_ref = ref.init(jax.random.PRNGKey(0), x, use_running_average=False)
    assert jax.tree.structure(v) == jax.tree.structure(v_ref)
    np.testing.assert_array_equal(jax.tree.leaves(v), jax.tree.leaves(v_ref))

    def train(module, variables, x):
        return module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])

    (y, new), (y_ref, new_ref) = train(ours, v, x), train(ref, v_ref, x)
    np.testing.assert_array_equal(y, y_ref)  # bit for bit
    np.testing.assert_array_equal(jax.tree.leaves(new), jax.tree.leaves(new_ref))
    ev, ev_ref = ours.apply(new, x, use_running_average=True), ref.apply(new_ref, x, use_running_average=True)
    np.testing.assert_allclose(ev, ev_ref, rtol=1e-6, atol=1e-6)
    assert not np.allclose(ev, y)  # eval uses the averages, not the batch's statistics

    def grad(module, variables):
        return jax.grad(lambda x: jnp.sum(train(module, variables, x)[0] * g))(x)

    assert _rel_err(grad(ours, v), grad(ref, v_ref)) < RTOL
    # through the batch statistics too (a loss that reads the new running averages)
    stats = lambda m, vv: lambda x: jnp.sum(jnp.stack(jax.tree.leaves(train(m, vv, x)[1])) ** 2)  # noqa: E731
    assert _rel_err(jax.grad(stats(ours, v))(x), jax.grad(stats(ref, v_ref))(x)) < RTOL
    # one run per leading slice under vmap: each run's own statistics
    xs = jnp.stack([x, 2 * x + 1])
    vg = jax.vmap(lambda x: jax.grad(lambda x: jnp.sum(train(ours, v, x)[0] * g))(x))(xs)
    vg_ref = jax.vmap(lambda x: jax.grad(lambda x: jnp.sum(train(ref, v_ref, x)[0] * g))(x))(xs)
    assert _rel_err(vg, vg_ref) < RTOL
