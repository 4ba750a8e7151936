"""Evaluation, one path for every face: per-run AUC, the nu-property and the sphere's geometry, and the run-axis
scoring they read (``apply_runs``, from the engine)."""
from imdad_jax.evaluate.metrics import auc_per_run, nu_property, summarize_runs
from imdad_jax.evaluate.sphere import sphere_report
from imdad_jax.train.apply import apply_runs

__all__ = ["apply_runs", "auc_per_run", "nu_property", "sphere_report", "summarize_runs"]
