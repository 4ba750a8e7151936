"""The run-axis engine: state, step, strategies, sharding."""
from imdad_jax.train.engine import (EPOCH_MODES, STRATEGIES, Checkpointer, FitResult, RunData, TrainingInterrupted, fit,
                                    resolve_strategy)
from imdad_jax.train.runners import Runner, resolve_runner
from imdad_jax.train.state import RunState, make_optimizer
from imdad_jax.train.step import BatchPlan, plan_batches

__all__ = ["EPOCH_MODES", "STRATEGIES", "Checkpointer", "FitResult", "RunData", "TrainingInterrupted", "fit",
           "resolve_strategy", "Runner", "resolve_runner", "RunState",
           "make_optimizer", "BatchPlan", "plan_batches"]
