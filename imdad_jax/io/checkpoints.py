"""Checkpoints of the whole run-axis training state with Orbax: save every N epochs, resume from the last one.

One ``RunCheckpointer`` per training phase (autoencoder pretraining, tuning, the method itself) holds an Orbax
``CheckpointManager`` over a folder of numbered epochs. A checkpoint is

* ``state``: the stacked ``RunState`` of every run (parameters, optimizer, dual variables, PRNG keys, step), on
  the host and without the padding runs, so a run can resume on a different number of devices;
* ``progress``: the per-epoch diagnostics so far (``history``), the ``diverged`` flags, the epoch;
* ``meta``: a fingerprint of what produced it (the config, the phase, the number of runs), checked on resume so a
  checkpoint is never continued under different settings.

Orbax writes each checkpoint into a temporary folder and renames it when complete, so a process killed mid-save
leaves the previous checkpoint intact and ``latest_epoch`` never sees a half-written one.
A run whose state went non-finite keeps the state of its last good checkpoint (``save`` merges per run), so one
diverged run of a sweep cannot overwrite its own last good parameters.

Across processes (``jax.distributed``, ``docs/scaling.md``) every process calls ``save`` and ``restore`` with the
same host arrays (``fit`` gathers every run's state into each process) on the same folder: Orbax writes the
replicated numpy arrays from process 0 and makes the others wait for it, and every process reads the checkpoint
back. The folder must therefore be one that every process sees (one machine's disk, or a shared file system such
as NFS or a mounted bucket). The whole state passes through each host, which suits sweeps of small detectors
(CNN2+FC3 with Adam: about 2.7 MB a run); ``tests/test_distributed.py`` stops a two-process sweep after epoch 2
and resumes it to the uninterrupted numbers, bit for bit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np


@dataclass(frozen=True)
class CheckpointSettings:
    """Where and how often an experiment checkpoints: one subfolder per training phase under ``directory``."""

    directory: Path
    every: int = 10  # epochs between checkpoints (and always after the last)
    keep: int = 2  # newest checkpoints kept per phase
    resume: bool = False  # continue from the newest checkpoint of each phase

    def phase(self, name: str, fingerprint: dict[str, Any]) -> "RunCheckpointer":
        """The checkpointer of one phase (``pretrain``, ``tune``, ``train``)."""
        return RunCheckpointer(Path(self.directory) / name, self.every, self.keep, {"phase": name, **fingerprint})


class CheckpointMismatchError(ValueError):
    """The checkpoint folder belongs to a run with different settings; the message says which differ."""


def _host(tree: Any) -> Any:
    return jax.tree.map(lambda a: np.asarray(a), jax.device_get(tree))


def _canonical(obj: Any) -> Any:
    """JSON-comparable form of a fingerprint (tuples -> lists, numpy -> python)."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys, so a mismatch names the setting rather than the whole config."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


class RunCheckpointer:
    """Save and restore one training phase of R stacked runs.

    ``directory``: the phase's folder (created). ``every``: save after every this many completed epochs
    (and after the last). ``keep``: how many checkpoints to keep (the newest). ``fingerprint``: a JSON-able
    description of the settings; ``restore`` refuses a checkpoint whose fingerprint differs.
    """

    def __init__(self, directory: str | Path, every: int = 10, keep: int = 2,
                 fingerprint: dict[str, Any] | None = None):
        import orbax.checkpoint as ocp

        if every < 1:
            raise ValueError(f"checkpoint every must be >= 1 epoch, got {every}")
        if keep < 1:
            raise ValueError(f"checkpoints kept must be >= 1, got {keep}")
        self.directory = Path(directory).resolve()
        self.every = int(every)
        self.fingerprint = _canonical(fingerprint or {})
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                                 cleanup_tmp_directories=True),
            item_names=("state", "progress", "meta"))
        self._last_good: Any = None  # host copy of the last saved state, per run, for the divergence merge

    # ---- queries -----------------------------------------------------------------------------------------
    def latest_epoch(self) -> int | None:
        """The epoch of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def stored_fingerprint(self) -> dict[str, Any] | None:
        """The fingerprint saved with the newest checkpoint (None if there is none)."""
        step = self.latest_epoch()
        if step is None:
            return None
        meta = self._manager.restore(step, args=self._ocp.args.Composite(meta=self._ocp.args.JsonRestore()))
        return meta["meta"]

    def should_save(self, epoch: int, epochs: int) -> bool:
        """Whether a checkpoint is due after ``epoch`` completed epochs of ``epochs``."""
        return epoch % self.every == 0 or epoch == epochs

    # ---- save / restore ------------------------------------------------------------------------------------
    def save(self, epoch: int, state: Any, history: dict[str, np.ndarray], diverged: np.ndarray,
             force: bool = False) -> None:
        """Write the checkpoint of ``epoch`` completed epochs (asynchronously; ``wait`` or ``close`` to finish).

        ``state``: stacked over the R runs (leading axis R, no padding). Runs flagged in ``diverged`` keep the
        state they had in the last checkpoint this object wrote or restored (their first state if none).
        """
        state = _host(state)
        diverged = np.asarray(diverged, bool)
        if self._last_good is not None and diverged.any():
            keep = lambda new, old: np.where(diverged.reshape((-1,) + (1,) * (new.ndim - 1)), old, new)  # noqa: E731
            state = jax.tree.map(keep, state, self._last_good)
        self._last_good = state
        progress = {"epoch": np.asarray(epoch, np.int64), "diverged": diverged,
                    "history": {k: np.asarray(v, np.float32) for k, v in history.items()}}
        a = self._ocp.args
        self._manager.save(epoch, args=a.Composite(state=a.StandardSave(state), progress=a.StandardSave(progress),
                                                    meta=a.JsonSave(self.fingerprint)), force=force)

    def remember(self, state: Any) -> None:
        """The state a diverged run falls back to before the first checkpoint (the initial state)."""
        self._last_good = _host(state)

    def restore(self, template: Any) -> tuple[int, Any, dict[str, np.ndarray], np.ndarray] | None:
        """The newest checkpoint as (epoch, state, history, diverged), or None when there is none.

        ``template``: a stacked state of the same structure and shapes (the freshly initialised one).
        Raises ``CheckpointMismatchError`` when the checkpoint was made with a different fingerprint.
        """
        step = self.latest_epoch()
        if step is None:
            return None
        stored = self.stored_fingerprint()
        if stored != self.fingerprint:
            was, now = _flat(stored), _flat(self.fingerprint)
            diff = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
            raise CheckpointMismatchError(
                f"the checkpoints in {self.directory} were made with different settings ("
                + "; ".join(f"{k}: saved {was.get(k)!r}, now {now.get(k)!r}" for k in diff[:4])
                + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
                + "); resume with the original settings, or start afresh (--restart)")
        a = self._ocp.args
        abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), _host(template))
        got = self._manager.restore(step, args=a.Composite(state=a.StandardRestore(abstract),
                                                           progress=a.StandardRestore()))
        state = jax.tree.map(np.asarray, got["state"])
        prog = got["progress"]
        self._last_good = state
        history = {k: np.asarray(v) for k, v in prog["history"].items()}
        return int(prog["epoch"]), state, history, np.asarray(prog["diverged"], bool)

    def wait(self) -> None:
        """Block until the pending save is on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "RunCheckpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
