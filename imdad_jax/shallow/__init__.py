"""Shallow anomaly-detection baselines of the paper: Isolation Forest, KDE, OC-SVM, kernel SVDD and SSLM.

numpy/scipy/scikit-learn plus the Clarabel QP solver; no JAX. ``fit_score`` is the one entry point the experiments
need; ``fit_svdd`` / ``fit_sslm`` expose the fitted spheres (dual coefficients, radii) themselves. See docs/shallow.md.
"""
from .baselines import SHALLOW_METHODS, ShallowMethod, ShallowResult, fit_score
from .qp import SphereModel, fit_sslm, fit_svdd, kernel_matrix, scale_gamma

__all__ = [
    "SHALLOW_METHODS",
    "ShallowMethod",
    "ShallowResult",
    "SphereModel",
    "fit_score",
    "fit_sslm",
    "fit_svdd",
    "kernel_matrix",
    "scale_gamma",
]
