"""Per-op CPU timings of the LeNet-size step's pieces (batch 150): max-pool and its gradient by reduce_window vs
reshape, and the two convolutions forward and backward. Findings: benchmarks/RESULTS.md."""
import time, jax, jax.numpy as jnp, numpy as np, flax.linen as nn
x = jnp.asarray(np.random.rand(150, 28, 28, 8).astype(np.float32))
def pool_rw(x): return nn.max_pool(x, (2, 2), strides=(2, 2))
def pool_rs(x):
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
np.testing.assert_allclose(pool_rw(x), pool_rs(x))
def bench(name, f, *a):
    f = jax.jit(f); jax.block_until_ready(f(*a)); t = time.perf_counter(); n = 0
    while time.perf_counter() - t < 2: jax.block_until_ready(f(*a)); n += 1
    print(name, round((time.perf_counter() - t) / n * 1e3, 2), "ms")
for nm, pf in (("reduce_window", pool_rw), ("reshape", pool_rs)):
    bench(nm + " fwd", pf, x)
    bench(nm + " grad", jax.grad(lambda x: jnp.sum(pf(x) ** 2)), x)
conv = nn.Conv(8, (5, 5), padding="SAME", use_bias=False)
xi = jnp.asarray(np.random.rand(150, 28, 28, 1).astype(np.float32))
p = conv.init(jax.random.PRNGKey(0), xi)
bench("conv1 fwd", lambda p, x: conv.apply(p, x), p, xi)
bench("conv1 grad p", jax.grad(lambda p, x: jnp.sum(conv.apply(p, x) ** 2)), p, xi)
conv2 = nn.Conv(4, (5, 5), padding="SAME", use_bias=False)
x2 = jnp.asarray(np.random.rand(150, 14, 14, 8).astype(np.float32))
p2 = conv2.init(jax.random.PRNGKey(0), x2)
bench("conv2 fwd", lambda p, x: conv2.apply(p, x), p2, x2)
bench("conv2 grad p,x", jax.grad(lambda p, x: jnp.sum(conv2.apply(p, x) ** 2), argnums=(0, 1)), p2, x2)
