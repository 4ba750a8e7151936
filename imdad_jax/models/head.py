"""The hypersphere head: the final layer whose weights ARE the center, radius and margin.

    d(x) - R^2 = ||z||^2 - 2 c.z + ||c||^2 - R^2 = ||z||^2 - (w.z + b)

with kernel ``w = 2c`` and bias ``b = R^2 - ||c||^2``. The head's output is the signed
squared distance to the inner sphere. The margin ``rho^2`` is a parameter of the head too,
stored raw (``margin_param="raw"``, kept >= 0 by a dual variable) or through a softplus
(``margin_param="softplus"``, positive by construction).
"""
from __future__ import annotations

from typing import Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

MARGIN_PARAMS = ("softplus", "raw")


def _softplus_inv(y: float) -> float:
    import math

    return y + math.log(-math.expm1(-y))


class SphereGeometry(NamedTuple):
    """What the head's weights say, read off exactly (no estimate)."""

    center: jnp.ndarray  # c = w / 2, shape (k,)
    radius2: jnp.ndarray  # R^2 = b + ||w||^2 / 4
    margin2: jnp.ndarray  # rho^2


class HypersphereHead(nn.Module):
    """``s(z) = ||z||^2 - (w.z + b)``, with the margin ``rho^2`` held as a parameter beside w and b."""

    margin_param: str = "softplus"
    init_radius2: float = 1.0
    init_margin2: float = 0.1

    @nn.compact
    def __call__(self, z: jnp.ndarray) -> jnp.ndarray:
        k = z.shape[-1]

        def w_init(key, shape, dtype=jnp.float32):
            # ||c|| = 1 from the start: the normalisation the objective imposes.
            v = jax.random.normal(key, shape, dtype)
            return 2.0 * v / jnp.linalg.norm(v)

        w = self.param("w", w_init, (k,))
        b = self.param("b", lambda *_: jnp.asarray(self.init_radius2 - 1.0, jnp.float32))
        r0 = _softplus_inv(self.init_margin2) if self.margin_param == "softplus" else self.init_margin2
        self.param("rho", lambda *_: jnp.asarray(r0, jnp.float32))
        return jnp.sum(z * z, axis=-1) - (z @ w + b)


def margin2_from_param(rho: jnp.ndarray, margin_param: str) -> jnp.ndarray:
    """rho^2 from the head's stored margin parameter."""
    if margin_param == "softplus":
        return jax.nn.softplus(rho)
    if margin_param == "raw":
        return rho
    raise ValueError(f"margin_param must be one of {MARGIN_PARAMS}, got {margin_param!r}")


def sphere_geometry(head_params: Mapping[str, jnp.ndarray], margin_param: str = "softplus") -> SphereGeometry:
    """Center, squared radius and squared margin read off the head's weights.

    Works on one run's head params or on a stacked run axis (leading dimension R).
    """
    w, b = head_params["w"], head_params["b"]
    return SphereGeometry(
        center=w / 2.0,
        radius2=b + jnp.sum(w * w, axis=-1) / 4.0,
        margin2=margin2_from_param(head_params["rho"], margin_param),
    )
