"""Grad-CAM on the convolutional encoder of a ``SphereDetector``.

For an image x and a scalar score S(x), with ``A_k`` the k-th channel of a convolutional layer's output
(after the leaky ReLU, before the 2x2 max-pool) and ``h x w`` its spatial size::

    alpha_k = 1/(h w) sum_ij dS/dA_k[i, j]          map = relu(sum_k alpha_k A_k)

upsampled bilinearly to the input's H x W (Selvaraju et al., ICCV 2017). The abnormal-evidence map uses
S = +score (what pushes the image out of the sphere), the normal-evidence map S = -score (what pulls it in);
both come from one gradient, so at the layer's resolution one map is zero wherever the other is positive.

The activation gradient comes from Flax's ``perturb`` hook ``conv{i}_out`` in ``CNNEncoder``: a zero
'perturbations' collection is added to the layer's output, and the gradient with respect to it is dS/dA.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from imdad_jax.models.encoders import CNNEncoder

ScoreFn = Callable[[Any, jnp.ndarray], jnp.ndarray]


def select_run(tree: Any, r: int) -> Any:
    """Run ``r``'s slice of a stacked pytree (``FitResult.state.params`` has a leading run axis R)."""
    return jax.tree.map(lambda a: a[r], tree)


def _check_model(model: Any) -> CNNEncoder:
    enc = getattr(model, "encoder", None)
    if not isinstance(enc, CNNEncoder):
        raise ValueError("Grad-CAM needs a SphereDetector whose encoder is a CNNEncoder (cnn2/cnn3), got "
                         f"{type(enc).__name__ if enc is not None else type(model).__name__}")
    return enc


def _layer_index(enc: CNNEncoder, layer: int | None) -> int:
    n = len(enc.conv_features)
    i = n - 1 if layer is None else int(layer)
    if not -n <= i < n:
        raise ValueError(f"layer must index one of the encoder's {n} conv blocks, got {layer}")
    return i % n


def _as_images(x: Any) -> jnp.ndarray:
    x = jnp.asarray(x, jnp.float32)
    if x.ndim == 3:  # (N, H, W) grey images, as CNNEncoder accepts them
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"x must be (N, H, W) or (N, H, W, C) images, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x holds no images")
    return x


def _signed_cam(model: Any, params: Any, x: jnp.ndarray, score_fn: ScoreFn, name: str) -> jnp.ndarray:
    """``sum_k alpha_k A_k`` for S = +score at the layer's resolution, shape (N, h, w)."""
    variables = {k: v for k, v in params.items() if k != "perturbations"}
    # apply with a mutable 'perturbations' collection creates the zero perturbations, shaped for this x.
    _, state = model.apply(variables, x, mutable=["perturbations"])
    zeros = state["perturbations"]
    # Each image's score depends on that image only, so the gradient of the sum is the per-image gradient.
    grads = jax.grad(lambda pert: jnp.sum(score_fn({**variables, "perturbations": pert}, x)))(zeros)
    g = grads["encoder"][name]  # (N, h, w, K)
    # A is the value at the hook itself (sown there): after the block's norm, activation, squeeze-excitation and
    # residual, whichever the encoder has on.
    _, inter = model.apply(variables, x, mutable=["intermediates"])
    act = inter["intermediates"]["encoder"][name][0]
    alpha = jnp.mean(g, axis=(1, 2))  # (N, K)
    return jnp.einsum("nhwk,nk->nhw", act, alpha)


def gradcam(
    model: Any,
    params: Any,
    x: Any,
    score_fn: ScoreFn | None = None,
    *,
    layer: int | None = None,
    upsample: bool = True,
) -> dict[str, np.ndarray]:
    """Normal- and abnormal-evidence Grad-CAM maps of one run's detector.

    Args:
        model: a ``SphereDetector`` whose encoder is a ``CNNEncoder``.
        params: that run's variables (``{"params": ...}``; use ``select_run`` on a stacked state).
        x: images (N, H, W) or (N, H, W, C).
        score_fn: ``score_fn(variables, x) -> (N,)``, larger = more anomalous. Default: the head's output
            ``s = d - R^2``. IMD-AD's score ``s - rho^2/2`` gives the same maps (rho^2 does not depend on x).
        layer: which conv block's output (after its activation, before its pooling); default the last.
        upsample: resize the maps to H x W (bilinear); ``False`` keeps the layer's resolution.

    Returns:
        ``{"normal": (N, H, W), "abnormal": (N, H, W), "score": (N,)}``, maps non-negative
        (``(N, h, w)`` maps when ``upsample`` is False).
    """
    enc = _check_model(model)
    if np.ndim(params["params"]["head"]["w"]) != 1:
        raise ValueError("params hold a stacked run axis; pass one run's, imdad_jax.interpret.select_run(params, r)")
    name = f"conv{_layer_index(enc, layer)}_out"
    xi = _as_images(x)
    fn = score_fn if score_fn is not None else (lambda v, xx: model.apply(v, xx))
    signed = _signed_cam(model, params, xi, fn, name)
    score = fn({k: v for k, v in params.items() if k != "perturbations"}, xi)
    maps = {"abnormal": jax.nn.relu(signed), "normal": jax.nn.relu(-signed)}
    if upsample:
        n, h, w = xi.shape[:3]
        # Bilinear interpolation of non-negative values stays non-negative; the clip only removes float noise.
        maps = {k: jnp.maximum(jax.image.resize(v, (n, h, w), method="bilinear"), 0.0) for k, v in maps.items()}
    return {k: np.asarray(v) for k, v in {**maps, "score": score}.items()}


def extreme_indices(scores: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` lowest-scoring (most normal first) and ``k`` highest-scoring (most anomalous first)."""
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D (one run's scores), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf; the run may have diverged")
    if not 1 <= k <= s.size:
        raise ValueError(f"k must lie in [1, {s.size}] (the number of scores), got {k}")
    order = np.argsort(s, kind="stable")
    return order[:k], order[::-1][:k]


def gradcam_examples(
    model: Any,
    params: Any,
    x: Any,
    scores: Any | None = None,
    k: int = 4,
    score_fn: ScoreFn | None = None,
    *,
    layer: int | None = None,
) -> dict[str, np.ndarray]:
    """Grad-CAM of the ``k`` most normal and ``k`` most anomalous images of ``x`` (the data of a Grad-CAM grid).

    ``scores`` ranks the images (default: ``score_fn`` or the head's output on ``x``). Returns
    ``images`` (2k, H, W, C), ``normal``/``abnormal`` maps (2k, H, W), ``score`` (2k,), ``index`` into ``x``
    (2k,) and ``group`` (2k,): ``"lowest"`` for the first k, ``"highest"`` for the rest.
    """
    xi = _as_images(x)
    if scores is None:
        fn = score_fn if score_fn is not None else (lambda v, xx: model.apply(v, xx))
        scores = fn({kk: v for kk, v in params.items() if kk != "perturbations"}, xi)
    scores = np.asarray(scores)
    if scores.shape != (xi.shape[0],):
        raise ValueError(f"scores must have shape ({xi.shape[0]},) to match x, got {scores.shape}")
    lo, hi = extreme_indices(scores, k)
    idx = np.concatenate([lo, hi])
    cam = gradcam(model, params, xi[idx], score_fn, layer=layer)
    return {"images": np.asarray(xi[idx]), "normal": cam["normal"], "abnormal": cam["abnormal"],
            "score": scores[idx], "index": idx, "group": np.array(["lowest"] * k + ["highest"] * k)}
