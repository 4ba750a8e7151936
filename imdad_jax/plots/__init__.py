"""Matplotlib figures from arrays the library computes (the only package that imports matplotlib)."""
from imdad_jax.plots.cd import cd_diagram
from imdad_jax.plots.figures import (
    attribution_plot,
    circles_plot,
    density_plot,
    gradcam_grid,
    nu_property_plot,
    roc_plot,
    threshold_metrics_plot,
    training_curves_plot,
    tsne_plot,
)

__all__ = ["attribution_plot", "cd_diagram", "circles_plot", "density_plot", "gradcam_grid", "nu_property_plot", "roc_plot",
           "threshold_metrics_plot", "training_curves_plot", "tsne_plot"]
