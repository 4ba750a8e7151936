"""Matplotlib figures from arrays the library computes (the only package that imports matplotlib)."""
from imdad_jax.plots.cd import cd_diagram

__all__ = ["cd_diagram"]
