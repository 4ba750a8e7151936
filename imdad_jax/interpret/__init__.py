"""Interpretability: per-feature attributions of a row's score (integrated gradients), Grad-CAM evidence maps, actionable thresholds, the data of the geometric figures.

Every function returns arrays or dicts of arrays; ``imdad_jax.plots.figures`` draws them.
``docs/interpretability.md`` describes each and the choices behind the defaults.
"""
from imdad_jax.interpret.attribution import integrated_gradients, top_features
from imdad_jax.interpret.curves import snapshot_metrics, training_rows
from imdad_jax.interpret.geometry import (
    circles_2d,
    distance_density,
    input_score_grid,
    nu_property_grid,
    representation_2d,
    roc_curves,
    score_on,
    squared_distance,
    tsne_embedding,
)
from imdad_jax.interpret.gradcam import extreme_indices, gradcam, gradcam_examples, select_run
from imdad_jax.interpret.thresholds import (
    Decision,
    MahalanobisModel,
    all_thresholds,
    boundary_threshold,
    classification_metrics,
    fit_mahalanobis,
    gaussian_threshold,
    mahalanobis_threshold,
    metrics_table,
    zscore_threshold,
)

__all__ = [
    "integrated_gradients", "top_features", "snapshot_metrics", "training_rows",
    "circles_2d", "distance_density", "input_score_grid", "nu_property_grid", "representation_2d", "roc_curves",
    "score_on", "squared_distance", "tsne_embedding", "extreme_indices", "gradcam", "gradcam_examples",
    "select_run", "Decision", "MahalanobisModel", "all_thresholds", "boundary_threshold", "classification_metrics",
    "fit_mahalanobis", "gaussian_threshold", "mahalanobis_threshold", "metrics_table", "zscore_threshold",
]
