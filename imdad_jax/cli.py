"""Command line for a user's own data file: ``python -m imdad_jax train|score`` (``imdad-jax`` once installed).

A thin shell over :class:`imdad_jax.estimator.DeepDetector`: read a CSV / ``.npy`` / ``.npz`` table, train and
save a detector, and score new files by the same feature columns (chosen by name, so column order and extra
columns in a later file do not matter). Every bad input ends with exit code 2 and one ``error: ...`` line on
stderr that says what to fix (``docs/own_data.md``).

:mod:`imdad_jax.io.tables` reads and checks the files (its :class:`~imdad_jax.io.tables.TableError` is reported
like a :class:`CliError`); jax, the estimator and scikit-learn are imported only once a command runs, so
``--help`` and input errors answer at once.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Table, choose_features, feature_matrix, label_vector and read_table lived here before imdad_jax.io.tables;
# they stay importable from here for code written against the old place.
from imdad_jax.io.tables import (Table, TableError, choose_features, describe_columns, feature_matrix, file_kind,
                                 label_vector, read_table, require_label_column)

CLI_META = "cli.json"
TRAIN_SCORES = "train_scores.csv"
MIN_TRAIN_ROWS = 10


class CliError(Exception):
    """A bad input: ``main`` prints ``error: <message>`` (one line) and returns 2, as for a ``TableError``."""


# ---- checks -------------------------------------------------------------------------------------------
def check_training_labels(table: Table, y: np.ndarray | None, method: str, label_name: str) -> None:
    """Enough rows, some normals, and labelled anomalies when ``method`` learns from them."""
    from imdad_jax.objectives import get_objective

    n = table.n_rows
    if n == 0:
        raise CliError(f"{table.path} has no data rows, only a header")
    if n < MIN_TRAIN_ROWS:
        raise CliError(f"{table.path} has {n} data row(s); training needs at least {MIN_TRAIN_ROWS} "
                       "(and many more to learn anything useful)")
    unlabelled = y is None
    if unlabelled:
        y = np.zeros(n, np.int64)
    n_anom = int(y.sum())
    if n - n_anom < 2:
        raise CliError(f"{table.path}: {label_name} marks {n_anom} of {n} rows as anomalies (1), leaving "
                       f"{n - n_anom} normal rows (0); the detector learns the normal class, so give it normal rows")
    if getattr(get_objective(method), "USES_ANOMALIES", True) and n_anom == 0:
        if unlabelled:
            raise CliError(f"method {method} needs labelled anomalies, and --unlabelled makes every row normal; "
                           "give labels (1 = anomaly), or use a method trained on normals alone (--method deep_svdd)")
        raise CliError(f"method {method} needs labelled anomalies, but {label_name} holds no 1s; mark some "
                       "known anomalies with 1, or use a method trained on normals alone (--method deep_svdd)")


# ---- commands -----------------------------------------------------------------------------------------
def parse_hyperparams(items: Sequence[str] | None) -> dict[str, float]:
    """``["nu1=0.05", "nu2=0.1"]`` -> ``{"nu1": 0.05, "nu2": 0.1}``."""
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None:
            raise CliError(f"--hyperparam {item!r}: write NAME=VALUE with a number, e.g. --hyperparam nu1=0.05")
        out[name.strip()] = number
    return out


def _check_method(method: str) -> None:
    from imdad_jax.objectives import REGISTRY

    if method not in REGISTRY:
        raise CliError(f"unknown --method {method!r}; choose one of: {', '.join(sorted(REGISTRY))}")


def cmd_train(a: argparse.Namespace) -> int:
    """Train a detector on ``a.data`` and write the model, ``cli.json`` and the training scores."""
    _check_method(a.method)
    hyper = parse_hyperparams(a.hyperparam)
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file; give a folder for the model")
    table = read_table(a.data, a.labels, unlabelled=a.unlabelled)
    # The label column never becomes a feature, even with --unlabelled (then its values are just not used).
    label_column = a.label_column if table.matrix is None else None
    if label_column is not None and not a.unlabelled:
        require_label_column(table, label_column)
    names = choose_features(table, a.features, label_column)
    x = feature_matrix(table, names)
    y = None if a.unlabelled else label_vector(table, label_column)
    if y is None and not a.unlabelled:
        raise CliError(f"{table.path} holds no labels; give --labels FILE.npy, put them in the .npz as 'y', "
                       "or pass --unlabelled to treat every row as normal")
    label_name = f"label column {label_column!r}" if label_column and y is not None else "the labels"
    check_training_labels(table, y, a.method, label_name)

    from imdad_jax.estimator import DeepDetector

    det = DeepDetector(method=a.method, epochs=a.epochs or "auto", lr=a.lr, batch_size=a.batch_size,
                       random_state=a.seed, anomaly_share=a.anomaly_share, hyperparams=hyper or None,
                       contamination=a.contamination, threshold=a.threshold)
    t0 = time.perf_counter()
    try:
        det.fit(x, y)
    except ValueError as e:  # the estimator's own input checks (hyperparameter names and ranges, ...)
        raise CliError(str(e)) from None
    wall = time.perf_counter() - t0
    if det.diverged_:
        print(f"error: training diverged (the loss became NaN or infinite) after {wall:.1f} s; nothing was "
              f"written. Try a smaller --lr (now {det.lr_:g})", file=sys.stderr)
        return 1
    scores, flags = det.decision_scores_, det.labels_
    auc = _auc(y, scores)
    det.save(out)
    meta = {"format": 1, "features": names, "label_column": label_column or "label", "source": str(table.path),
            "method": a.method, "rows": table.n_rows, "labelled_anomalies": int(y.sum()) if y is not None else 0,
            "epochs": det.epochs_, "train_auc": auc, "fit_seconds": round(wall, 2)}
    from imdad_jax.io import atomic_write

    atomic_write(out / CLI_META, json.dumps(meta, indent=1) + "\n")
    scores_path = Path(a.scores) if a.scores else out / TRAIN_SCORES
    write_scores(scores_path, scores, flags, y, label_column or "label", det.threshold_)
    _print_train_summary(a, table, names, y, label_name, det, wall, auc, flags, out, scores_path)
    return 0


def _print_train_summary(a: argparse.Namespace, table: Table, names: list[str], y: np.ndarray | None,
                         label_name: str, det: Any, wall: float, auc: float | None, flags: np.ndarray,
                         out: Path, scores_path: Path) -> None:
    shown = ", ".join(names) if len(names) <= 8 else f"{', '.join(names[:8])}, ..."
    n_anom = int(y.sum()) if y is not None else 0
    print(f"data     {table.path}: {table.n_rows} rows, {len(names)} features ({shown}), "
          f"{n_anom} labelled anomalies ({label_name if y is not None else 'unlabelled'})")
    batch = f", batch {a.batch_size}" if a.batch_size else ""
    print(f"trained  {a.method}, {det.epochs_} epochs, lr {det.lr_:g}{batch}, seed {a.seed}: {wall:.1f} s")
    geometry = [f"{k} {v:.4g}" for k, v in (("radius", det.radius_), ("margin", det.margin_)) if v is not None]
    print(f"result   training AUC {'n/a (one class)' if auc is None else f'{auc:.4f}'}; "
          f"{int(flags.sum())} of {len(flags)} rows flagged ({_rule(det)})"
          + (f"; sphere {', '.join(geometry)}" if geometry else ""))
    print(f"wrote    {out}/ (detector.json, params.msgpack, {CLI_META}) and {scores_path}")
    print(f"next     {_prog()} score --model {out} --data NEW_FILE")


def cmd_score(a: argparse.Namespace) -> int:
    """Score ``a.data`` with the detector saved in ``a.model``; write the scores and print the AUC if labelled."""
    det, meta = load_model(Path(a.model))
    n_features = det.input_shape_[0]
    table = read_table(a.data, a.labels, n_features=n_features)
    label_column = a.label_column or (meta or {}).get("label_column", "label")
    if meta:
        names = meta["features"]
        missing = [n for n in names if n not in table.names]
        if missing:
            raise CliError(f"{table.path} lacks feature column(s) {', '.join(map(repr, missing))} that the model "
                           f"was trained on; its columns: {describe_columns(table)}")
    else:  # a detector saved from Python: no names, so every non-label column in file order
        names = [n for n in table.names if n != label_column]
    if len(names) != n_features:
        raise CliError(f"{table.path} gives {len(names)} feature columns, the model was trained on {n_features}")
    if table.n_rows == 0:
        raise CliError(f"{table.path} has no data rows, only a header")
    x = feature_matrix(table, names)
    try:
        y = label_vector(table, label_column)
    except TableError as e:  # labels are optional when scoring: say why there is no AUC, score anyway
        print(f"note: no AUC: {e}", file=sys.stderr)
        y = None
    scores, flags = det.decision_function(x), det.predict(x)
    attributions = None
    if a.explain:
        try:
            attributions = det.explain(x)
        except ValueError as e:  # a detector saved before explanations existed
            raise CliError(f"--explain: {e}") from None
    out = Path(a.out) if a.out else default_scores_path(table.path)
    write_scores(out, scores, flags, y, label_column, det._threshold(), attributions, names)
    auc = _auc(y, scores)
    print(f"scored   {table.n_rows} rows of {table.path} with {a.model} ({det.method}): "
          f"{int(flags.sum())} flagged ({_rule(det)})" + ("; attributions per feature in attr_<name> columns"
                                                          if a.explain else ""))
    if y is not None:
        print(f"AUC      {'n/a (one class)' if auc is None else f'{auc:.4f}'} against {label_column!r} "
              f"({int(y.sum())} labelled anomalies)")
    print(f"wrote    {out}")
    return 0


def load_model(model_dir: Path) -> tuple[Any, dict[str, Any] | None]:
    """The saved detector and its ``cli.json`` (None for a detector saved from Python)."""
    if not model_dir.is_dir():
        raise CliError(f"--model {model_dir}: no such folder; give the --out folder of a train run")
    from imdad_jax.estimator import LEGACY_PARAMS_FILE, PARAMS_FILE

    if not (model_dir / "detector.json").is_file() or not any(
            (model_dir / f).is_file() for f in (PARAMS_FILE, LEGACY_PARAMS_FILE)):
        raise CliError(f"{model_dir} holds no saved detector (detector.json and {PARAMS_FILE}); give the --out "
                       f"folder of a train run, or make one: {_prog()} train --data FILE --out {model_dir}")
    from imdad_jax.estimator import DeepDetector

    try:
        det = DeepDetector.load(model_dir)
        meta = json.loads((model_dir / CLI_META).read_text()) if (model_dir / CLI_META).is_file() else None
    # json errors are ValueErrors; the estimator reports a damaged params.npz as one too
    except (ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile, zlib.error) as e:
        raise CliError(f"{model_dir}: cannot load the detector ({e}); train it again") from None
    if len(det.input_shape_) != 1:
        raise CliError(f"{model_dir} holds an image detector (input {det.input_shape_}); score images from Python")
    return det, meta


def default_scores_path(data: Path) -> Path:
    """``data/foo.csv`` -> ``data/foo_scores.csv``."""
    kind = file_kind(data)
    return data.with_name(data.name[:-len(kind)] + "_scores.csv")


def _rule(det: Any) -> str:
    rule = getattr(det, "threshold_rule_", "sphere")
    return f"score > {det._threshold():.6g}, threshold {rule}"


def write_scores(path: Path, scores: np.ndarray, flags: np.ndarray, y: np.ndarray | None, label_name: str,
                 threshold: float, attributions: np.ndarray | None = None, names: Sequence[str] = ()) -> None:
    """CSV of ``row, [label,] score, is_anomaly, threshold[, attr_<feature>...]``; numbers as %.9g, which gives
    back a float32 exactly. ``is_anomaly`` is ``score > threshold``; the attributions (``--explain``) are each
    feature's share of the score (``DeepDetector.explain``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", *([label_name] if y is not None else []), "score", "is_anomaly", "threshold",
                *(f"attr_{n}" for n in (names if attributions is not None else ()))])
    thr = f"{threshold:.9g}"
    for i, (s, f) in enumerate(zip(scores.tolist(), flags.tolist())):
        attr = [f"{v:.6g}" for v in attributions[i].tolist()] if attributions is not None else []
        w.writerow([i, *([int(y[i])] if y is not None else []), f"{s:.9g}", int(f), thr, *attr])
    from imdad_jax.io import atomic_write

    try:
        atomic_write(path, buf.getvalue())
    except OSError as e:
        raise CliError(f"cannot write the scores to {path}: {e}") from None


def _auc(y: np.ndarray | None, scores: np.ndarray) -> float | None:
    if y is None or len(np.unique(y)) < 2 or not np.isfinite(scores).all():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


# ---- argument parsing ---------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    # argparse would print the usage block and exit; one line naming --help keeps every error alike.
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{message} (see {self.prog} --help)")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    # ArgumentDefaultsHelpFormatter would also print "(default: None)" for options that have no default.
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _prog() -> str:
    return "python -m imdad_jax" if Path(sys.argv[0]).name == "__main__.py" else "imdad-jax"


TRAIN_EPILOG = """examples:
  {p} train --data transactions.csv --label_column fraud --out fraud_model
  {p} train --data readings.csv --label_column target --features t1,t2,pressure --epochs 50 \\
      --out model --hyperparam nu1=0.05 nu2=0.1
  {p} train --data X.npy --unlabelled --method deep_svdd --out model   # normals only, no labels
  {p} train --data data.npz --method deep_sad --anomaly_share 0.5 --out model  # arrays X and y
  {p} train --data data.csv --contamination 0.05 --out model     # flag the top 5% of the training scores

labels: 1 = a known (labelled) anomaly, 0 = normal or unlabelled (the words anomaly / normal also work).
The detector learns the normal rows; imdad, deep_sad, dad and mdad also learn from the labelled anomalies,
deep_svdd and the others from the normal rows alone. Feature columns are standardised on the normal rows.
For a .npy file the last column is the label unless --labels FILE.npy or --unlabelled is given; a .npz holds
arrays X and y. MODEL_DIR gets detector.json, params.msgpack, cli.json (feature names) and train_scores.csv
(row, label, score, is_anomaly, threshold; score: higher = more anomalous, is_anomaly = score > threshold).
"""

SCORE_EPILOG = """examples:
  {p} score --model fraud_model --data new_transactions.csv          # -> new_transactions_scores.csv
  {p} score --model model --data week2.csv --out week2_scored.csv
  {p} score --model model --data week2.csv --explain                 # + attr_<feature> columns

The feature columns are picked from the file by the names the model was trained on, so their order may differ
and extra columns (ids, the label) are ignored. If the file has the label column, the AUC is printed.
Output columns: row (0-based data row), the label if present, score (higher = more anomalous),
is_anomaly (1 when score > threshold), threshold (the one chosen at training: train --threshold); with --explain,
attr_<feature>: that feature's part of the row's score above a typical normal row (they add up to it).
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` / ``score`` argument parser."""
    p = _prog()
    parser = _Parser(prog=p, formatter_class=_Formatter,
                     description="Deep hypersphere anomaly detection (IMD-AD, Deep SVDD, Deep SAD, ...) on your own "
                                 "table: train a detector on a CSV / .npy / .npz file, then score new files with it.",
                     epilog=f"examples:\n  {p} train --data data.csv --label_column target --out model\n"
                            f"  {p} score --model model --data new.csv\n\n"
                            f"{p} train --help and {p} score --help say more; docs/own_data.md walks through a run.")
    sub = parser.add_subparsers(dest="command", metavar="{train,score}")
    t = sub.add_parser("train", help="train a detector on a data file and save it", formatter_class=_Formatter,
                       description="Train a detector on a CSV / .npy / .npz file, save it, and score the training "
                                   "rows.", epilog=TRAIN_EPILOG.format(p=p))
    t.add_argument("--data", required=True, metavar="FILE", help="training data: .csv/.tsv (header line), .npy, .npz")
    t.add_argument("--out", required=True, metavar="MODEL_DIR", help="folder to write the model into")
    t.add_argument("--label_column", default="label", metavar="NAME", help="CSV column with the 0/1 labels")
    t.add_argument("--features", metavar="A,B,C", help="feature columns (default: every column but the label)")
    t.add_argument("--unlabelled", action="store_true", help="no labels: every row is normal (for deep_svdd etc.)")
    t.add_argument("--labels", metavar="FILE.npy", help="labels for a .npy FILE (else its last column)")
    t.add_argument("--method", default="imdad",
                   help="imdad, deep_sad, deep_svdd, deep_svdd_soft, dad, mdad, drocc, autoencoder, hybrid_svdd")
    t.add_argument("--epochs", type=int, default=None,
                   help="passes over the training rows (default: set by the table's size; imdad: about 5,000 "
                        "optimizer steps, 10 to 2000 epochs; the other methods: 100)")
    t.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate (default: 3e-4 for imdad on a table, 1e-3 for the other methods)")
    t.add_argument("--batch_size", type=int, default=None, help="rows per step (default: 50)")
    t.add_argument("--seed", type=int, default=0, help="random seed (initial weights, batch order)")
    t.add_argument("--anomaly_share", type=float, default=None,
                   help="share of labelled anomalies in each batch (e.g. 0.5); default: as in the data")
    t.add_argument("--hyperparam", nargs="+", action="extend", metavar="NAME=VALUE",
                   help="the method's own hyperparameters, e.g. nu1=0.05 nu2=0.1 (imdad's: nu, nu1, nu2, dual_lr; "
                        "each method's: docs/methods.md)")
    t.add_argument("--contamination", type=float, default=None, metavar="SHARE",
                   help="expected share of anomalies among the training rows, in (0, 0.5]: the top SHARE of the "
                        "training scores is flagged (PyOD's rule); default: the detector's own boundary")
    t.add_argument("--threshold", default="auto", choices=("auto", "sphere", "contamination", "gaussian"),
                   help="how is_anomaly is decided: sphere (score > 0, the learned boundary), contamination (see "
                        "--contamination), gaussian (above the mean + 3 std of the normal rows' scores); auto: "
                        "contamination if given, else sphere for the sphere methods, gaussian for the others")
    t.add_argument("--scores", metavar="OUT.csv", help="where to write the training scores "
                                                        f"(default: MODEL_DIR/{TRAIN_SCORES})")
    t.set_defaults(func=cmd_train)
    s = sub.add_parser("score", help="score a data file with a saved detector", formatter_class=_Formatter,
                       description="Score a CSV / .npy / .npz file with a detector written by train.",
                       epilog=SCORE_EPILOG.format(p=p))
    s.add_argument("--model", required=True, metavar="MODEL_DIR", help="the --out folder of a train run")
    s.add_argument("--data", required=True, metavar="FILE", help="data to score: .csv/.tsv, .npy, .npz")
    s.add_argument("--out", metavar="OUT.csv", help="where to write the scores (default: beside FILE as "
                                                     "<name>_scores.csv)")
    s.add_argument("--label_column", metavar="NAME", help="label column, if present (default: the one of training)")
    s.add_argument("--labels", metavar="FILE.npy", help="labels for a .npy FILE, to print the AUC")
    s.add_argument("--explain", action="store_true",
                   help="add each feature's attribution to the row's score (integrated gradients from a typical "
                        "normal row) as columns attr_<feature>")
    s.set_defaults(func=cmd_score)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 bad input, 1 training diverged)."""
    parser = build_parser()
    try:
        a = parser.parse_args(argv)
        if a.command is None:
            raise CliError(f"name a command: train (fit a detector on a file) or score (score a file with it); "
                           f"see {parser.prog} --help")
        for name in ("epochs", "batch_size"):
            if getattr(a, name, None) is not None and getattr(a, name) < 1:
                raise CliError(f"--{name} must be at least 1")
        from imdad_jax.io.compile_cache import enable_compile_cache
        from imdad_jax.io.host import tune_host_allocator

        enable_compile_cache()  # the second train/score of the same shapes skips XLA compilation
        tune_host_allocator()  # XLA:CPU steps ~1.2x faster (imdad_jax.io.host)
        return a.func(a)
    except (CliError, TableError) as e:
        print(f"error: {str(e).replace(chr(10), ' ')}", file=sys.stderr)  # one line, whatever the message held
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = ["CliError", "Table", "TableError", "build_parser", "main", "read_table"]
