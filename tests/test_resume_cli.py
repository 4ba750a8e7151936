"""experiments/run.py killed mid-training (SIGKILL: no chance to clean up) or stopped (SIGTERM: a checkpoint, then
exit 130) and resumed with --resume ends with the same AUCs and parameters as an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 12
STEM = f"moons_imdad_tiny_e{EPOCHS}"
ARGS = ["--dataset=moons", "--class=0", "--preset=tiny", f"--epochs={EPOCHS}", "--n_folds=2", "--no_progress",
        "--estimate=no"]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "experiments" / "run.py"), *ARGS, f"--out_dir={out}", *extra]


def _env() -> dict:
    # one CPU device, as in a user's shell (the test session's 8 fake devices are set in-process only)
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


def _final_state(out: Path):
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(out / "checkpoints" / STEM / "train" / str(EPOCHS) / "state")


def _aucs(out: Path) -> list[float]:
    return [r["auc"] for r in json.loads((out / f"{STEM}.json").read_text())["runs"]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    subprocess.run(_cmd(out, f"--checkpoint_every={EPOCHS}"), check=True, env=_env(), capture_output=True)
    return out


def _interrupt_after(out: Path, sig: int, epoch: int) -> subprocess.CompletedProcess:
    """Start a run that checkpoints every epoch; send ``sig`` once the checkpoint of ``epoch`` is complete."""
    proc = subprocess.Popen(_cmd(out, "--checkpoint_every=1", "--keep_checkpoints=3"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = out / "checkpoints" / STEM / "train" / str(epoch)  # Orbax renames a complete checkpoint to this
    deadline = time.time() + 240
    while not target.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _assert_same_as(uninterrupted: Path, out: Path):
    assert _aucs(out) == _aucs(uninterrupted)
    ref, got = _final_state(uninterrupted), _final_state(out)
    assert jax.tree.structure(ref) == jax.tree.structure(got)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, uninterrupted):
    killed = _interrupt_after(tmp_path, signal.SIGKILL, epoch=3)
    assert killed.returncode == -signal.SIGKILL, f"the run ended before the kill:\n{killed.stdout}\n{killed.stderr}"
    assert not (tmp_path / f"{STEM}.json").exists()  # killed before its results: nothing half-written either
    # the same command without --resume refuses to discard the interrupted run
    again = subprocess.run(_cmd(tmp_path, "--checkpoint_every=1"), env=_env(), capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr and "interrupted run" in again.stderr
    resumed = subprocess.run(_cmd(tmp_path, "--checkpoint_every=1", "--keep_checkpoints=3", "--resume"), env=_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoints" in resumed.stdout
    record = json.loads((tmp_path / f"{STEM}.json").read_text())
    assert record["timing"]["resumed_from_epoch"] >= 3
    _assert_same_as(uninterrupted, tmp_path)


def test_sigterm_writes_a_checkpoint_and_resume_finishes(tmp_path, uninterrupted):
    stopped = _interrupt_after(tmp_path, signal.SIGTERM, epoch=2)
    assert stopped.returncode == 130, f"rc {stopped.returncode}:\n{stopped.stdout}\n{stopped.stderr}"
    assert "SIGTERM" in stopped.stderr and "--resume" in stopped.stderr
    assert not (tmp_path / f"{STEM}.json").exists()
    resumed = subprocess.run(_cmd(tmp_path, "--checkpoint_every=1", "--keep_checkpoints=3", "--resume"), env=_env(),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_as(uninterrupted, tmp_path)
    # a finished run's checkpoints make way for a fresh run without --resume
    fresh = subprocess.run(_cmd(tmp_path, f"--checkpoint_every={EPOCHS}"), env=_env(), capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    _assert_same_as(uninterrupted, tmp_path)
