"""Sweeps larger than device memory: measure what one run costs, split the run axis into chunks that fit.

A run's numbers do not depend on the runs beside it (its key, data, hyperparameters and the sweep's batch plan
fix them), so training R runs as chunks of C gives every run the numbers it has in one program of R. The cost
of a run comes from XLA's own memory analysis of the compiled training step at R = 1 and R = 16 (the
step holds the state, its gradients and the batch's activations), nothing is guessed; the budget is the
device's memory limit (``memory_stats()["bytes_limit"]`` on a GPU/TPU, half the physical memory on a CPU).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, ContextManager

import flax.linen as nn
import jax
import numpy as np

from imdad_jax.train.engine import FitResult, RunData, fit
from imdad_jax.train.programs import compile_lowered, lower_train_step, program_bytes
from imdad_jax.train.runners import Runner, as_runner
from imdad_jax.train.step import plan_batches

if TYPE_CHECKING:  # annotations only: the engine takes any record of the protocol
    from imdad_jax.objectives.protocol import Objective

# Share of the device's memory a sweep may plan for: XLA needs room for its own buffers and fragmentation.
MEMORY_FRACTION = 0.8


class ResourceError(RuntimeError):
    """Not even one run fits in the device's memory; the message gives both sizes and what to change."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step: ``fixed`` (the shared data, compiled buffers) + ``per_run`` x runs."""

    fixed: int
    per_run: int

    def runs_that_fit(self, budget: int) -> int:
        """How many runs one program of this step can hold within ``budget`` bytes."""
        return max(0, (budget - self.fixed) // max(self.per_run, 1))


def device_memory_budget(device: Any = None) -> int:
    """Bytes a sweep may plan for on ``device`` (default: the first): its limit times ``MEMORY_FRACTION``."""
    device = device or jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        total = int(stats["bytes_limit"])
    else:  # XLA:CPU reports no limit: the host's physical memory, of which the process may take half
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    return int(total * MEMORY_FRACTION)


def estimate_memory(model: nn.Module, objective: Objective, opts: Any, data: RunData, hp: dict[str, np.ndarray],
                    *, batch_size: int, anomaly_share: float | None = None, runner: Runner | str = "vmap",
                    devices: list | None = None, at: tuple[int, int] = (1, 16), budget: int | None = None,
                    refine: int = 3) -> MemoryEstimate:
    """XLA's memory analysis of the runner's training step compiled for ``at`` runs (nothing is run): the line
    through the two gives the fixed bytes and the bytes per run. Two points apart, not 1 and 2: accelerator
    compilers pad and reuse buffers differently at tiny run counts (on a TPU v5e target the CNN2 step grew by
    a fraction of its per-run cost from 1 to 2 runs), and a chunk is planned for hundreds.

    ``runner``: the strategy the sweep trains with (``loop`` is estimated as ``vmap``: it keeps every run's state
    on the device too, and ``vmap`` holds the most activations, so a sweep sized by it fits every strategy).
    ``devices``: where it compiles (default this process's first device; compile-only devices of a GPU/TPU
    target give that target's numbers, which is how ``imdad_jax.aot`` sizes a sweep for a device not here).
    ``budget``: the bytes a chunk may take. A compiler's memory need is not a straight line in the run count
    (a TPU's grows more slowly at hundreds of runs than at 16: a line through 1 and 16 runs planned 412 runs on a
    v4 chip where 940 fit), so with a budget the step is compiled again at the count the line predicts, up to
    ``refine`` times (regula falsi on the measured points), and the estimate is the line through the largest
    count found to fit and the one below it.
    """
    runner = as_runner(runner)
    devices = list(devices)[:1] if devices else None  # one device's share: the budget is one device's
    if runner.strategy == "loop":
        runner = Runner("vmap")
    uses_anomalies = objective.USES_ANOMALIES
    plan = plan_batches(int(data.n_valid.max()), int(data.m_valid.max()) if uses_anomalies else 0, batch_size,
                        anomaly_share)

    def total(r: int) -> int:
        compiled = compile_lowered(lower_train_step(model, objective, opts, runner, r, plan, data.x.shape, tuple(hp),
                                                    devices))
        m = compiled.memory_analysis()
        if m is None:  # a backend without the analysis: count the arguments (state + data) alone
            return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves(compiled.args_info))
        return program_bytes(m)

    pts = {r: total(r) for r in at}

    def line(lo: int, hi: int) -> MemoryEstimate:
        per_run = max(-(-(pts[hi] - pts[lo]) // (hi - lo)), 1)
        return MemoryEstimate(fixed=max(pts[lo] - per_run * lo, 0), per_run=per_run)

    est = line(*sorted(at))
    if budget is None:
        return est
    too_big = budget + 1  # a count whose compilation itself runs out of device memory (a TPU compiler refuses it)
    for _ in range(refine):
        fits = [r for r in pts if pts[r] <= budget]
        over = [r for r in pts if pts[r] > budget]
        lo = max(fits) if fits else min(pts)
        # the bracket's two ends, or the two largest fitting points when nothing measured is over budget
        hi = min(over) if over else lo
        pair = (lo, hi) if hi != lo else tuple(sorted(fits)[-2:])
        if len(pair) < 2 or pair[0] == pair[1]:
            break
        if pts[max(pair)] == too_big:  # no size for the refused count: halve the bracket instead
            guess = (pair[0] + pair[1]) // 2
        else:
            guess = line(*sorted(pair)).runs_that_fit(budget)
        if guess in pts or guess < 1 or (fits and not over and guess <= 1.1 * lo):
            break
        try:
            pts[guess] = total(guess)
        except Exception as e:  # noqa: BLE001 - only the compiler's out-of-memory refusal is an answer here
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            pts[guess] = too_big
    fits = sorted(r for r in pts if pts[r] <= budget)
    if len(fits) >= 2:
        return line(fits[-2], fits[-1])
    return est


def plan_chunks(n_runs: int, max_runs: int | None, estimate: MemoryEstimate | None = None,
                budget: int | None = None) -> list[range]:
    """Consecutive run ranges of at most ``max_runs`` runs and at most what fits in ``budget`` bytes."""
    cap = n_runs if max_runs is None else int(max_runs)
    if cap < 1:
        raise ValueError(f"max_runs must be >= 1, got {max_runs}")
    if estimate is not None and budget is not None:
        fits = estimate.runs_that_fit(budget)
        if fits < 1:
            raise ResourceError(
                f"one run needs about {(estimate.fixed + estimate.per_run) / 2**20:.0f} MiB of device memory but "
                f"{budget / 2**20:.0f} MiB are available: use a smaller batch_size or model")
        cap = min(cap, fits)
    return [range(i, min(i + cap, n_runs)) for i in range(0, n_runs, cap)]


def _take(tree: Any, rows: range) -> Any:
    return jax.tree.map(lambda a: np.asarray(a)[rows.start:rows.stop], tree)


def _concat(results: list[FitResult]) -> FitResult:
    if len(results) == 1:
        return results[0]
    cat = lambda axis: (lambda *xs: np.concatenate([np.asarray(x) for x in xs], axis=axis))  # noqa: E731
    first = results[0]
    state = jax.tree.map(cat(0), *[r.state for r in results])
    history = {k: np.concatenate([r.history[k] for r in results], axis=1) for k in first.history}
    snapshots = {e: jax.tree.map(cat(0), *[r.snapshots[e] for r in results]) for e in first.snapshots}
    n_ep = min(len(r.epoch_s) for r in results)
    return replace(first, state=state, history=history, diverged=np.concatenate([r.diverged for r in results]),
                   compile_s=sum(r.compile_s for r in results), train_s=sum(r.train_s for r in results),
                   epoch_s=[sum(r.epoch_s[e] for r in results) for e in range(n_ep)], snapshots=snapshots,
                   start_epoch=min(r.start_epoch for r in results), n_chunks=len(results))


def fit_in_chunks(model: nn.Module, objective: Objective, opts: Any, data: RunData, hp: dict[str, np.ndarray],
                  keys: np.ndarray, *, max_runs: int | str | None = "auto", budget: int | None = None,
                  checkpoint_for: Callable[[int, int], ContextManager | None] | None = None,
                  **fit_kw: Any) -> FitResult:
    """``fit`` over the run axis in chunks; the same numbers per run as one ``fit`` of all runs.

    ``max_runs``: an int caps the runs per program; ``"auto"`` lets the device's memory decide
    (``estimate_memory`` against ``budget``, default ``device_memory_budget()``); None: one program.
    ``checkpoint_for(i, n)``: a context manager giving chunk i's checkpointer (or None), so each chunk of
    an interrupted sweep resumes from its own checkpoints. Other keywords go to ``fit``.
    """
    n = data.n_runs
    estimate = None
    if max_runs == "auto":
        # A forced strategy is sized by its own program; "auto" by vmap's, the largest of the candidates it
        # measures, so whichever it picks fits.
        strategy = fit_kw.get("strategy", "auto")
        budget = device_memory_budget() if budget is None else budget
        estimate = estimate_memory(model, objective, opts, data, hp, batch_size=fit_kw["batch_size"],
                                   anomaly_share=fit_kw.get("anomaly_share"),
                                   runner="vmap" if strategy == "auto" else strategy, devices=fit_kw.get("devices"),
                                   budget=budget)
        max_runs = None
    chunks = plan_chunks(n, max_runs, estimate, budget)
    uses_anomalies = objective.USES_ANOMALIES
    sizes = (int(data.n_valid.max()), int(data.m_valid.max()) if uses_anomalies else 0)
    warm = fit_kw.pop("warm_start", None)
    results = []
    for i, rows in enumerate(chunks):
        part = RunData(data.x, *(_take(a, rows) for a in (data.normal_pool, data.n_valid, data.anomaly_pool,
                                                            data.m_valid)))
        kw = dict(fit_kw, warm_start=_take(warm, rows) if warm is not None else None, plan_sizes=sizes)
        ctx = checkpoint_for(i, len(chunks)) if checkpoint_for else None
        if ctx is None:
            results.append(fit(model, objective, opts, part, _take(hp, rows), _take(keys, rows), **kw))
        else:
            with ctx as ck:
                results.append(fit(model, objective, opts, part, _take(hp, rows), _take(keys, rows), checkpoint=ck,
                                   **kw))
    out = _concat(results)
    if estimate is not None:
        out = replace(out, memory=estimate)
    return out
