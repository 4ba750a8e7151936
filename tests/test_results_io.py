"""Results files: the per-epoch history goes to a gzipped sidecar, the JSON names it, load_history reads both layouts."""
import copy
import json

import numpy as np
import pytest

from imdad_jax.io import load_history, write_results
from imdad_jax.io.results import history_path, move_history_out


def record(history):
    return {
        "config": {"preset": "tiny", "epochs": 2, "batch_size": 8, "lr": 1e-3, "milestones_epochs": [1], "gamma": 0.1,
                   "weight_decay": 1e-6, "method": "deep_sad", "pretrain_epochs": 0, "arch": "fc3",
                   "conv_features": [], "dense_features": [4, 2]},
        "provenance": {"command": "test", "git_commit": None, "git_dirty": False, "devices": "1 x cpu",
                       "backend": "cpu", "cpu_count": 2, "platform": "linux", "versions": {"jax": "0"},
                       "utc": "2026-01-01T00:00:00+00:00"},
        "runs": [{"normal_class": 0, "seed": 0, "auc": 0.9, "diverged": False}],
        "history": history,
        "timing": {"total_s": 1.0, "train_s": 0.5, "eval_s": 0.1, "strategy": "vmap", "epoch_mode": "scan",
                   "steps_per_epoch": 3},
    }


def test_history_goes_beside_the_json_and_comes_back(tmp_path):
    hist = {"loss": np.arange(6, dtype=np.float32).reshape(2, 3), "radius2": [[1.0, 1.0, 1.0], [0.9, 0.8, 0.7]]}
    rec = record(hist)
    before = copy.deepcopy(rec)
    jp, mp = write_results(tmp_path, "run", rec, "| table |")
    assert rec.keys() == before.keys() and rec["history"] is hist  # the caller's record is left alone
    saved = json.loads(jp.read_text())
    assert "history" not in saved and saved["history_file"] == "run.history.json.gz"
    assert list(saved) == [("history_file" if k == "history" else k) for k in rec]  # the pointer takes its place
    assert history_path(jp) == tmp_path / "run.history.json.gz" and history_path(jp).is_file()
    got = load_history(jp)
    assert got == {"loss": hist["loss"].tolist(), "radius2": hist["radius2"]}
    assert "| table |" in mp.read_text()
    # the same history gives the same bytes (no time stamp in the gzip header)
    side = history_path(jp).read_bytes()
    write_results(tmp_path, "run", record(hist), "| table |")
    assert history_path(jp).read_bytes() == side
    history_path(jp).unlink()
    with pytest.raises(FileNotFoundError, match=r"run\.history\.json\.gz.*not in git"):
        load_history(jp)


def test_an_empty_history_stays_inline(tmp_path):
    jp, _ = write_results(tmp_path, "shallow", record({}), "t")
    assert json.loads(jp.read_text())["history"] == {} and not history_path(jp).exists()
    assert load_history(jp) == {}


def test_older_files_are_read_and_can_be_split(tmp_path):
    old = record({"loss": [[1.0], [0.5]]})
    jp = tmp_path / "old.json"
    text = json.dumps(old, indent=1) + "\n"
    jp.write_text(text)
    assert load_history(jp) == {"loss": [[1.0], [0.5]]}  # the history inside the JSON
    assert move_history_out(jp) == tmp_path / "old.history.json.gz"
    saved = json.loads(jp.read_text())
    assert saved["history_file"] == "old.history.json.gz" and saved["runs"] == old["runs"]
    assert load_history(jp) == {"loss": [[1.0], [0.5]]}
    assert move_history_out(jp) is None  # nothing left to move
    note = tmp_path / "note.json"
    note.write_text(json.dumps({"runs": [], "history": {"note": "dropped"}}))
    assert move_history_out(note) is None and "history" in json.loads(note.read_text())
