"""Evaluation: scoring many runs at once, AUC, nu-property fractions."""
from imdad_jax.evaluate.metrics import auc_per_run, nu_property, summarize_runs
from imdad_jax.evaluate.scoring import apply_runs

__all__ = ["apply_runs", "auc_per_run", "nu_property", "summarize_runs"]
