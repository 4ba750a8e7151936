"""One sweep trained by two processes with jax.distributed equals the same sweep trained by one process.

Two fresh interpreters, 2 CPU devices each, join through a coordinator on localhost and shard 6 runs
over their 4 devices (``fit(strategy="vmap")``); each writes every run's final parameters, diagnostics,
a per-epoch snapshot and test scores. Then the same sweep again, checkpointed by both into one folder,
stopped after epoch 2 and resumed. This file is also the worker: ``python test_distributed.py PORT
PROCESS_ID INPUTS OUT CHECKPOINT_DIR``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

N_PROCESSES = 2
LOCAL_DEVICES = 2
TIMEOUT_S = 120


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(0).normal(0, 3, (3, 5))
    x = np.concatenate([rng.normal(m, 1, (n, 5)) for m in means]).astype(np.float32)
    return x, np.repeat(np.arange(3), n)


def make_inputs(path: str) -> None:
    """6 runs (3 normal classes x 2 seeds) of a 5-D blob set, written for the processes to read.

    Made once here: ``imdad_jax.data`` imports scikit-learn, seconds of start-up a worker need not pay.
    """
    from imdad_jax.data import one_vs_rest_runs

    x, y = _data(0, 40)
    x_test, _ = _data(1, 20)
    _, data, keys = one_vs_rest_runs(x, y, (0, 1, 2), (0, 1), anomaly_fraction=0.5)
    np.savez(path, x=data.x, normal_pool=data.normal_pool, n_valid=data.n_valid, anomaly_pool=data.anomaly_pool,
             m_valid=data.m_valid, keys=keys, x_test=x_test)


def sweep(inputs: str, devices: list | None = None, checkpoint_dir: str | None = None, stop_after: int | None = None,
          resume: bool = False) -> dict[str, np.ndarray]:
    """IMD-AD on FC3 for the runs in ``inputs``, 3 epochs: every run's numbers as flat named numpy arrays.

    ``checkpoint_dir``: checkpoint every epoch there; ``stop_after``: stop (``TrainingInterrupted``) after that
    many epochs; ``resume``: continue from the newest checkpoint."""
    import jax

    from imdad_jax.io.checkpoints import RunCheckpointer
    from imdad_jax.models import build_detector
    from imdad_jax.objectives import get_objective
    from imdad_jax.train import RunData, fit
    from imdad_jax.train.apply import apply_runs

    with np.load(inputs) as z:
        a = {k: z[k] for k in z.files}
    data = RunData(a["x"], a["normal_pool"], a["n_valid"], a["anomaly_pool"], a["m_valid"])
    obj = get_objective("imdad")
    opts = obj.Options()
    values = {"lr": 1e-2, "weight_decay": 1e-6, "nu": 0.5, "nu1": 0.1, "nu2": 0.1, "dual_lr": 0.1, "head_lr": 0.1}
    hp = {k: np.full(data.n_runs, v, np.float32) for k, v in values.items()}
    model = build_detector("fc3", dense_features=(16, 8))
    ckpt = RunCheckpointer(checkpoint_dir, every=1, fingerprint={"test": "distributed"}) if checkpoint_dir else None
    asked = []  # fit asks should_stop once after each epoch
    stop = (lambda: asked.append(1) or len(asked) >= stop_after) if stop_after else None
    try:
        res = fit(model, obj, opts, data, hp, a["keys"], epochs=3, batch_size=16, milestones=(2,), strategy="vmap",
                  epoch_mode="steps", devices=devices, snapshot_epochs=() if resume else (1,), checkpoint=ckpt,
                  resume=resume, should_stop=stop)
    finally:
        if ckpt is not None:
            ckpt.close()
    scores = apply_runs(lambda p, xb: obj.score(p[0], p[1], model, xb, opts),
                        (res.state.params, res.state.obj_state), a["x_test"])
    out = {"scores": scores, "diverged": res.diverged, **{f"history/{k}": v for k, v in res.history.items()}}
    named = {"state": (res.state.params, res.state.obj_state)}
    if resume:  # where it resumed (a fit that started afresh would end with the same numbers)
        out["start_epoch"] = np.asarray(res.start_epoch)
    else:  # a resumed fit has snapshots of the epochs it trained only
        named["snapshot1"] = res.snapshots[1]
    for prefix, tree in named.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def _worker(port: int, process_id: int, inputs: str, out: str, checkpoint_dir: str) -> None:
    import jax

    jax.config.update("jax_num_cpu_devices", LOCAL_DEVICES)
    from imdad_jax.train.distributed import initialize

    pid, count = initialize(f"localhost:{port}", N_PROCESSES, process_id, initialization_timeout=60)
    assert (pid, count) == (process_id, N_PROCESSES)
    assert len(jax.devices()) == N_PROCESSES * LOCAL_DEVICES and len(jax.local_devices()) == LOCAL_DEVICES
    result = sweep(inputs)
    np.savez(out, **result)

    # Preempted and resumed: both processes checkpoint into one folder (Orbax: process 0 writes, all wait),
    # stop after epoch 2, and a fresh fit of each resumes from the folder.
    from imdad_jax.train import TrainingInterrupted

    try:
        sweep(inputs, checkpoint_dir=checkpoint_dir, stop_after=2)
    except TrainingInterrupted as e:
        assert e.epoch == 2, e
    else:
        raise AssertionError("fit did not stop after epoch 2")
    np.savez(out + ".resumed.npz", **sweep(inputs, checkpoint_dir=checkpoint_dir, resume=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_in_two_processes(inputs: str, tmp_path) -> list[dict[str, np.ndarray]]:
    port = _free_port()
    # JAX_COMPILATION_CACHE_DIR and the rest pass through; the package is this checkout's
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.pop("XLA_FLAGS", None)  # the worker sets its own device count
    outs = [str(tmp_path / f"process{i}.npz") for i in range(N_PROCESSES)]
    checkpoint_dir = str(tmp_path / "checkpoints")  # one folder for both, as a shared file system would be
    procs = [subprocess.Popen([sys.executable, __file__, str(port), str(i), inputs, outs[i], checkpoint_dir], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(N_PROCESSES)]
    deadline = time.monotonic() + TIMEOUT_S
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        logs = [p.communicate() for p in procs]
        raise AssertionError(f"the processes took over {TIMEOUT_S} s:\n" + _stderr(logs)) from None
    assert all(p.returncode == 0 for p in procs), "a process failed:\n" + _stderr(logs)
    loaded = []
    for o in outs:
        for path in (o, o + ".resumed.npz"):
            with np.load(path) as z:
                loaded.append({k: z[k] for k in z.files})
    return loaded


def _stderr(logs: list[tuple[str, str]]) -> str:
    return "\n".join(f"--- process {i} stderr ---\n{err[-4000:]}" for i, (_, err) in enumerate(logs))


def _assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], atol: float, rtol: float = 0) -> None:
    assert sorted(got) == sorted(want)
    for k, w in want.items():
        assert got[k].shape == w.shape, k
        np.testing.assert_allclose(got[k], w, atol=atol, rtol=rtol, err_msg=k)


def test_two_processes_train_one_sharded_sweep(tmp_path):
    import jax

    from imdad_jax.evaluate.metrics import auc_per_run

    inputs = str(tmp_path / "inputs.npz")
    make_inputs(inputs)
    p0, p0_resumed, p1, p1_resumed = _train_in_two_processes(inputs, tmp_path)
    assert p0["scores"].shape == (6, 60) and p0["history/loss"].shape == (3, 6)
    assert p0["state[0]['params']['head']['w']"].shape == (6, 8)
    # both processes hold every run's numbers, bit for bit: one computation, gathered
    _assert_close(p1, p0, atol=0)
    # stopped after epoch 2 and resumed from the checkpoint both processes wrote: the uninterrupted numbers
    uninterrupted = {k: v for k, v in p0.items() if not k.startswith("snapshot1")}
    for resumed in (p0_resumed, p1_resumed):
        assert int(resumed.pop("start_epoch")) == 2
        _assert_close(resumed, uninterrupted, atol=0)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]  # the newest two kept
    # one process over the same 4 devices runs the same per-device programs
    _assert_close(p0, sweep(inputs, jax.devices()[:4]), atol=1e-5)
    # one device batches all 6 runs in one program: equal up to float rounding
    _assert_close(p0, sweep(inputs, jax.devices()[:1]), atol=1e-5, rtol=1e-6)
    # the runs learnt something of their normal class (class k: runs k and k + 3, one per seed) in 3 short epochs
    is_anomaly = np.stack([np.repeat(np.arange(3), 20) != r % 3 for r in range(6)])
    assert np.all(auc_per_run(p0["scores"], is_anomaly) > 0.75) and not p0["diverged"].any()


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
