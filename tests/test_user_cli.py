"""The command line for a user's own file (``python -m imdad_jax train|score``): end to end and every bad input.

Everything but the ``--help`` check runs ``main`` in-process: one 5-epoch training is shared by the module.
"""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from imdad_jax.cli import main

HEADER = ["a", "b", "c", "d", "target"]


def _rows(seed: int, n: int = 120, m: int = 12) -> list[list[str]]:
    """``n`` Gaussian normals and ``m`` labelled anomalies shifted by 3 along every feature."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n, 4)), rng.normal(3, 1, (m, 4))])
    y = np.r_[np.zeros(n, int), np.ones(m, int)]
    return [[*(f"{v:.5f}" for v in xi), str(yi)] for xi, yi in zip(x, y)]


def _write(path, rows, header=HEADER):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


def _read(path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return r.fieldnames, list(r)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained by the CLI on 120 normals + 12 anomalies (4 features, label column "target")."""
    d = tmp_path_factory.mktemp("cli")
    train = _write(d / "train.csv", _rows(0))
    rc = main(["train", "--data", str(train), "--label_column", "target", "--out", str(d / "model"),
               "--epochs", "5", "--hyperparam", "nu1=0.05"])
    assert rc == 0
    return d


def test_train_writes_model_scores_and_summary(trained, capsys):
    model = trained / "model"
    assert {p.name for p in model.iterdir()} >= {"detector.json", "params.msgpack", "cli.json", "train_scores.csv"}
    meta = json.loads((model / "cli.json").read_text())
    assert meta["features"] == ["a", "b", "c", "d"] and meta["label_column"] == "target" and meta["rows"] == 132
    cols, rows = _read(model / "train_scores.csv")
    assert cols == ["row", "target", "score", "is_anomaly", "threshold"] and len(rows) == 132
    assert [r["row"] for r in rows[:3]] == ["0", "1", "2"] and sum(r["target"] == "1" for r in rows) == 12
    assert {r["is_anomaly"] for r in rows} <= {"0", "1"}
    assert all((float(r["score"]) > 0) == (r["is_anomaly"] == "1") for r in rows)


def test_score_new_file_by_column_name_and_same_scores_as_training(trained, capsys):
    # A second file with the columns shuffled and an extra id column: features are picked by name.
    rows = _rows(1)
    order = [4, 2, 0, 3, 1]
    new = _write(trained / "new.csv", [[f"id{i}", *(r[j] for j in order)] for i, r in enumerate(rows)],
                 header=["id", *(HEADER[j] for j in order)])
    capsys.readouterr()
    assert main(["score", "--model", str(trained / "model"), "--data", str(new)]) == 0
    out = capsys.readouterr().out
    assert "AUC" in out and str(trained / "new_scores.csv") in out
    cols, scored = _read(trained / "new_scores.csv")
    assert cols == ["row", "target", "score", "is_anomaly", "threshold"] and len(scored) == len(rows)
    y, s = [int(r["target"]) for r in scored], [float(r["score"]) for r in scored]
    assert roc_auc_score(y, s) > 0.9

    out_path = trained / "again.csv"
    assert main(["score", "--model", str(trained / "model"), "--data", str(trained / "train.csv"),
                 "--out", str(out_path)]) == 0
    assert _read(out_path) == _read(trained / "model" / "train_scores.csv")  # identical, to the last digit


def test_arrays_npz_train_and_npy_score(tmp_path, capsys):
    rows = np.array(_rows(2, n=60, m=6), dtype=float)
    np.savez(tmp_path / "d.npz", X=rows[:, :4], y=rows[:, 4])
    assert main(["train", "--data", str(tmp_path / "d.npz"), "--method", "deep_svdd", "--epochs", "2",
                 "--out", str(tmp_path / "m")]) == 0
    np.save(tmp_path / "new.npy", rows)  # the label as the last column
    assert main(["score", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "new.npy")]) == 0
    assert "AUC" in capsys.readouterr().out
    cols, scored = _read(tmp_path / "new_scores.csv")
    assert cols == ["row", "label", "score", "is_anomaly", "threshold"] and len(scored) == 66


def test_contamination_threshold_and_explain_columns(tmp_path, capsys):
    train = _write(tmp_path / "train.csv", _rows(0))
    assert main(["train", "--data", str(train), "--label_column", "target", "--out", str(tmp_path / "m"),
                 "--epochs", "3", "--contamination", "0.1"]) == 0
    assert "threshold contamination" in capsys.readouterr().out
    _, rows = _read(tmp_path / "m" / "train_scores.csv")
    thr = {r["threshold"] for r in rows}
    # PyOD's rule: the (1 - contamination) percentile, interpolated, so the top share up to one row
    assert len(thr) == 1 and abs(sum(r["is_anomaly"] == "1" for r in rows) - 0.1 * len(rows)) <= 1
    assert all((float(r["score"]) > float(r["threshold"])) == (r["is_anomaly"] == "1") for r in rows)
    assert main(["score", "--model", str(tmp_path / "m"), "--data", str(train), "--explain",
                 "--out", str(tmp_path / "x.csv")]) == 0
    cols, scored = _read(tmp_path / "x.csv")
    assert cols[-4:] == ["attr_a", "attr_b", "attr_c", "attr_d"]
    from imdad_jax.estimator import DeepDetector
    det = DeepDetector.load(tmp_path / "m")
    base = float(det.decision_function(det.explain_baseline_[None])[0])
    total = np.array([sum(float(r[c]) for c in cols[-4:]) for r in scored])
    score = np.array([float(r["score"]) for r in scored])
    np.testing.assert_allclose(total, score - base, atol=0.05 * np.abs(score - base).max())  # completeness
    assert main(["train", "--data", str(train), "--label_column", "target", "--out", str(tmp_path / "m2"),
                 "--contamination", "0.9"]) == 2
    assert "contamination must lie in (0, 0.5]" in capsys.readouterr().err


def test_help_runs_as_module():
    r = subprocess.run([sys.executable, "-m", "imdad_jax", "--help"], check=False, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "train" in r.stdout and "score" in r.stdout and "examples" in r.stdout
    for cmd in ("train", "score"):
        assert main([cmd, "--help"]) == 0


# ---- bad inputs: exit code 2 and one line on stderr -----------------------------------------------------
def _good(d):
    return _write(d / "good.csv", _rows(3, n=30, m=4))


def _edit(d, name, fn, header=HEADER):
    """A copy of a small good file with its rows changed by ``fn``."""
    rows = _rows(3, n=30, m=4)
    fn(rows)
    return _write(d / name, rows, header)


def _set(i, j, value):
    def fn(rows):
        rows[i][j] = value
    return fn


CASES = {
    "file not found": (lambda d: ["train", "--data", str(d / "nope.csv"), "--out", str(d / "m")], "file not found"),
    "unsupported extension": (lambda d: ["train", "--data", str(_write(d / "x.xlsx", [])), "--out", str(d / "m")],
                              "unsupported file type '.xlsx'"),
    "wrong label column": (lambda d: ["train", "--data", str(_good(d)), "--out", str(d / "m")],
                           "no label column 'label'; its columns: a, b, c, d, target"),
    "non-numeric feature": (lambda d: ["train", "--data", str(_edit(d, "t.csv", _set(5, 1, "red"))),
                                       "--label_column", "target", "--out", str(d / "m")],
                            "column 'b' is not numeric: row 5 (line 7) holds 'red'"),
    "missing cells": (lambda d: ["train", "--data", str(_edit(d, "t.csv", lambda r: (_set(2, 1, "")(r),
                                                                                     _set(9, 1, "NA")(r),
                                                                                     _set(4, 3, "nan")(r)))),
                                 "--label_column", "target", "--out", str(d / "m")],
                      "feature column(s) 'b' (2), 'd' (1), 3 row(s) in all"),
    "labels not 0/1": (lambda d: ["train", "--data", str(_edit(d, "t.csv", _set(7, 4, "2"))),
                                  "--label_column", "target", "--out", str(d / "m")],
                       "must hold 0 (normal or unlabelled) or 1 (labelled anomaly)"),
    "no normal rows": (lambda d: ["train", "--data", str(_edit(d, "t.csv", lambda r: [x.__setitem__(4, "1")
                                                                                      for x in r])),
                                  "--label_column", "target", "--out", str(d / "m")],
                       "leaving 0 normal rows"),
    "no labelled anomalies": (lambda d: ["train", "--data", str(_edit(d, "t.csv", lambda r: [x.__setitem__(4, "0")
                                                                                             for x in r])),
                                         "--label_column", "target", "--out", str(d / "m")],
                              "method imdad needs labelled anomalies"),
    "unlabelled with imdad": (lambda d: ["train", "--data", str(_good(d)), "--unlabelled", "--out", str(d / "m")],
                              "--unlabelled makes every row normal"),
    "too few rows": (lambda d: ["train", "--data", str(_edit(d, "t.csv", lambda r: r.__delitem__(slice(5, None)))),
                                "--label_column", "target", "--out", str(d / "m")],
                     "has 5 data row(s); training needs at least 10"),
    "ragged row": (lambda d: ["train", "--data", str(_edit(d, "t.csv", lambda r: r[3].pop())),
                              "--label_column", "target", "--out", str(d / "m")],
                   "line 5: 4 fields, but the header has 5"),
    "header only": (lambda d: ["train", "--data", str(_write(d / "h.csv", [])), "--label_column", "target",
                               "--out", str(d / "m")], "has no data rows, only a header"),
    "no header": (lambda d: ["train", "--data", str(_edit(d, "t.csv", lambda r: None, header=None)),
                             "--out", str(d / "m")], "looks like data, not column names"),
    "estimator ValueError": (lambda d: ["train", "--data", str(_good(d)), "--label_column", "target",
                                        "--epochs", "1", "--hyperparam", "eta=1", "--out", str(d / "m")],
                             "imdad has no hyperparameters ['eta']"),
    "bad hyperparam syntax": (lambda d: ["train", "--data", str(_good(d)), "--hyperparam", "nu1:0.1",
                                         "--out", str(d / "m")], "write NAME=VALUE"),
    "unknown method": (lambda d: ["train", "--data", str(_good(d)), "--method", "svm", "--out", str(d / "m")],
                       "unknown --method 'svm'; choose one of: autoencoder"),
    "unknown feature": (lambda d: ["train", "--data", str(_good(d)), "--label_column", "target",
                                   "--features", "a,zz", "--out", str(d / "m")], "has no column(s) 'zz'"),
    "npz without X": (lambda d: [np.savez(d / "a.npz", data=np.zeros((20, 3))), "train", "--data",
                                 str(d / "a.npz"), "--out", str(d / "m")][1:], "has no array named 'X'"),
    "NaN in a .npy": (lambda d: [np.save(d / "a.npy", np.r_[np.full((1, 3), np.nan), np.zeros((19, 3))]), "train",
                                 "--data", str(d / "a.npy"), "--out", str(d / "m")][1:],
                      "feature column(s) 'x0' (1), 'x1' (1), 1 row(s) in all (first: row 0)"),
    "missing required option": (lambda d: ["train", "--data", str(_good(d))],
                                "the following arguments are required: --out"),
    "empty model dir": (lambda d: [(d / "empty").mkdir(), "score", "--model", str(d / "empty"), "--data",
                                   str(_good(d))][1:], "holds no saved detector"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_code_2(case, tmp_path, capsys):
    make_argv, fragment = CASES[case]
    rc = main(make_argv(tmp_path))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert fragment in err, err


def test_score_file_missing_feature_columns(trained, tmp_path, capsys):
    rows = [r[:2] + r[3:] for r in _rows(4, n=10, m=2)]  # column c dropped
    data = _write(tmp_path / "s.csv", rows, header=["a", "b", "d", "target"])
    assert main(["score", "--model", str(trained / "model"), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks feature column(s) 'c' that the model was trained on" in err


def test_score_with_unreadable_labels_still_scores(trained, tmp_path, capsys):
    rows = _rows(5, n=10, m=2)
    rows[3][4] = ""  # an unlabelled row in a file to score: no AUC, but the scores are written
    data = _write(tmp_path / "u.csv", rows)
    assert main(["score", "--model", str(trained / "model"), "--data", str(data)]) == 0
    captured = capsys.readouterr()
    assert "note: no AUC" in captured.err and "AUC" not in captured.out
    assert _read(tmp_path / "u_scores.csv")[0] == ["row", "score", "is_anomaly", "threshold"]
