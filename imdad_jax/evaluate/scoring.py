"""Scoring many runs at once: the engine's per-run apply, re-exported for evaluation code."""
from imdad_jax.train.apply import apply_runs

__all__ = ["apply_runs"]
