"""Command line for a user's own data file: ``python -m imdad_jax train|score`` (``imdad-jax`` once installed).

A thin shell over :class:`imdad_jax.estimator.DeepDetector`: read a CSV / ``.npy`` / ``.npz`` table, train and
save a detector, and score new files by the same feature columns (chosen by name, so column order and extra
columns in a later file do not matter). Every bad input ends with exit code 2 and one ``error: ...`` line on
stderr that says what to fix (``docs/own_data.md``).

The standard library's ``csv`` and numpy read the files, so no new dependency is needed; jax, the estimator
and scikit-learn are imported only once a command runs, so ``--help`` and input errors answer at once.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
import time
import tokenize
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CLI_META = "cli.json"
TRAIN_SCORES = "train_scores.csv"
MIN_TRAIN_ROWS = 10
TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".csv.gz": ",", ".tsv.gz": "\t"}
ARRAY_SUFFIXES = (".npy", ".npz")
# Cells read as missing rather than as text: empty, the usual NA spellings, and UCI's "?".
MISSING = {"", "nan", "na", "n/a", "null", "none", "?"}
LABEL_WORDS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "normal": 0, "anomaly": 1}


class CliError(Exception):
    """A bad input: ``main`` prints ``error: <message>`` (one line) and returns 2."""


@dataclass
class Table:
    """One data file, columns by name, before any column is parsed.

    CSV cells stay strings until a column is asked for, so a bad cell in an unused column never stops a run.
    """

    path: Path
    names: list[str]
    cells: list[list[str]] | None = None        # CSV: one list of strings per column
    lines: list[int] | None = None              # CSV: the file line of each data row, for messages
    matrix: np.ndarray | None = None            # .npy / .npz: (rows, columns) numbers
    labels: np.ndarray | None = None            # .npy / .npz: labels given apart from the features

    @property
    def n_rows(self) -> int:
        """Number of data rows."""
        return len(self.lines) if self.cells is not None else len(self.matrix)

    def where(self, i: int) -> str:
        """Row ``i`` for a message: its 0-based index (the ``row`` column of the scores) and its file line."""
        return f"row {i} (line {self.lines[i]})" if self.lines is not None else f"row {i}"


# ---- reading files ------------------------------------------------------------------------------------
def file_kind(path: Path) -> str:
    """The suffix that decides how ``path`` is read (``.csv``, ``.csv.gz``, ``.npy``, ...)."""
    name = path.name.lower()
    for suffix in (*TEXT_SUFFIXES, *ARRAY_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    raise CliError(f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; give a .csv (or .tsv, "
                   ".csv.gz) table with a header line, a .npy array or a .npz file with arrays X and y")


def read_table(path: str | Path, labels_path: str | None = None, n_features: int | None = None,
               unlabelled: bool = False) -> Table:
    """Read a CSV / TSV (header line first), ``.npy`` or ``.npz`` file into a :class:`Table`.

    For arrays the labels travel apart from the features: ``.npz`` array ``y``, ``labels_path`` (a ``.npy``),
    or else the last column of a ``.npy`` (unless ``unlabelled``; when scoring, ``n_features`` tells whether
    that last column is a label or a feature).
    """
    path = Path(path)
    if not path.exists():
        raise CliError(f"{path}: file not found (check the path; it is read relative to {Path.cwd()})")
    if path.is_dir():
        raise CliError(f"{path} is a folder; give a data file (.csv, .npy or .npz)")
    kind = file_kind(path)
    if kind in TEXT_SUFFIXES:
        if labels_path:
            raise CliError("--labels is for .npy files; in a CSV the labels are a column named by --label_column")
        return _read_csv(path, TEXT_SUFFIXES[kind], gzipped=kind.endswith(".gz"))
    return _read_array(path, kind, labels_path, n_features, unlabelled)


def _read_csv(path: Path, delimiter: str, gzipped: bool) -> Table:
    opener = gzip.open if gzipped else open
    try:
        # utf-8-sig drops the byte-order mark spreadsheet programs put before the first column name.
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                raise CliError(f"{path} is empty; it needs a header line of column names and data rows below it")
            header = [h.strip() for h in header]
            _check_header(path, header)
            columns: list[list[str]] = [[] for _ in header]
            lines: list[int] = []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank lines (often one at the end) are not rows
                if len(row) != len(header):
                    raise CliError(f"{path}, line {reader.line_num}: {len(row)} fields, but the header has "
                                   f"{len(header)}; the file may be truncated, or a value holds an unquoted "
                                   f"{'comma' if delimiter == ',' else 'tab'}: fix or drop that line")
                for col, cell in zip(columns, row):
                    col.append(cell)
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise CliError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); export it as UTF-8 CSV") from None
    # zlib.error: damage inside a .csv.gz's compressed data (a cut one raises EOFError)
    except (csv.Error, OSError, EOFError, zlib.error) as e:
        raise CliError(f"{path}: cannot read it as {'TSV' if delimiter == chr(9) else 'CSV'}: {e}") from None
    return Table(path, header, cells=columns, lines=lines)


def _check_header(path: Path, header: list[str]) -> None:
    if all(_is_number(h) for h in header):
        raise CliError(f"{path}: the first line ({','.join(header[:4])}...) looks like data, not column names; "
                       "add a header line naming the columns")
    if "" in header:
        raise CliError(f"{path}: column {header.index('') + 1} of the header has no name; name every column")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise CliError(f"{path}: the header names {', '.join(map(repr, dup))} more than once; columns are "
                       "chosen by name, so make the names unique")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# What a cut or damaged .npy / .npz raises from numpy's reader: the zip layer's errors (RuntimeError: a flipped
# "encrypted" flag, NotImplementedError: an unknown compression method), zlib's for damaged compressed members, and
# the header parser's (tokenize, SyntaxError) for a damaged .npy header.
_DAMAGED = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, tokenize.TokenError,
            SyntaxError, KeyError)


def _load_npy(path: Path, what: str) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        # allow_pickle=False: object arrays (and pickles) are refused rather than executed.
        raise CliError(f"{path}: cannot read {what} ({e}); save a plain numeric array with np.save") from None
    except _DAMAGED as e:
        raise CliError(f"{path}: cannot read {what} ({type(e).__name__}: {e}); the file is corrupt or truncated, "
                       "save it again") from None


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    z = _load_npy(path, "the .npz file")
    if not isinstance(z, np.lib.npyio.NpzFile):  # numpy reads by content, not by name
        raise CliError(f"{path} holds a single array, not a .npz archive; rename it to .npy")
    with z:
        if "X" not in z.files:
            raise CliError(f"{path} has no array named 'X' (it holds {', '.join(z.files) or 'none'}); save it "
                           "with np.savez(path, X=features, y=labels)")
        try:  # the members are read only now, so a damaged one fails here
            return z["X"], (z["y"] if "y" in z.files else None)
        except (ValueError, *_DAMAGED) as e:
            raise CliError(f"{path}: cannot read its arrays ({type(e).__name__}: {e}); the file is corrupt or "
                           "truncated, save it again") from None


def _single_array(path: Path, what: str) -> np.ndarray:
    a = _load_npy(path, what)
    if not isinstance(a, np.ndarray):
        a.close()
        raise CliError(f"{path} is a .npz archive, not a single array; rename it to .npz (arrays X and y)")
    return a


def _read_array(path: Path, kind: str, labels_path: str | None, n_features: int | None,
                unlabelled: bool) -> Table:
    labels = None
    if kind == ".npz":
        x, labels = _npz_arrays(path)
    else:
        x = _single_array(path, "the array")
    if x.ndim != 2:
        raise CliError(f"{path}: the array has shape {x.shape}; the command line takes a table (rows, columns). "
                       "For images use the Python API (imdad_jax.estimator.DeepDetector)")
    # complex numbers would lose their imaginary part silently in the cast to float
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise CliError(f"{path}: the array holds {x.dtype}, not real numbers; save it as floats")
    if labels_path:
        if labels is not None:
            raise CliError(f"{path} already holds labels (array 'y'); drop --labels")
        if not Path(labels_path).is_file():
            raise CliError(f"--labels {labels_path}: file not found")
        labels = _single_array(Path(labels_path), "the labels")
    elif kind == ".npy" and not unlabelled and (n_features is None or x.shape[1] == n_features + 1):
        if x.shape[1] < 2:
            raise CliError(f"{path} has one column; the last column is read as the label, so give at least one "
                           "feature column before it (or pass --unlabelled / --labels FILE.npy)")
        x, labels = x[:, :-1], x[:, -1]
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if len(labels) != len(x):
            raise CliError(f"{path}: {len(x)} rows but {len(labels)} labels; give one label per row")
    return Table(path, [f"x{j}" for j in range(x.shape[1])], matrix=x, labels=labels)


# ---- columns to numbers -------------------------------------------------------------------------------
def feature_matrix(table: Table, names: Sequence[str]) -> np.ndarray:
    """The named columns as a (rows, features) float array; a non-numeric or missing cell is a CliError."""
    idx = [table.names.index(n) for n in names]
    if table.matrix is not None:
        x = table.matrix[:, idx].astype(np.float64)
    else:
        x = np.stack([_numeric_column(table, j) for j in idx], axis=1) if idx else np.zeros((table.n_rows, 0))
    bad = ~np.isfinite(x)
    if bad.any():
        counts = bad.sum(axis=0)
        cols = ", ".join(f"{names[j]!r} ({counts[j]})" for j in np.flatnonzero(counts))
        raise CliError(f"{table.path}: empty, NaN or infinite cells in feature column(s) {cols}, "
                       f"{int(bad.any(axis=1).sum())} row(s) in all (first: {table.where(int(np.argmax(bad.any(axis=1))))}); "
                       "drop those rows or impute the cells (e.g. with the column median) and run again")
    return x


def _numeric_column(table: Table, j: int) -> np.ndarray:
    cells = table.cells[j]
    try:
        return np.asarray(cells, dtype=np.float64)  # fast path: numpy parses the strings itself
    except ValueError:
        pass
    out = np.empty(len(cells))
    for i, cell in enumerate(cells):
        if cell.strip().lower() in MISSING:
            out[i] = np.nan  # counted with the other missing cells by feature_matrix
            continue
        try:
            out[i] = float(cell)
        except ValueError:
            raise CliError(f"{table.path}: column {table.names[j]!r} is not numeric: {table.where(i)} holds "
                           f"{cell!r}; convert it to numbers, or leave it out by listing the feature columns "
                           "with --features a,b,c") from None
    return out


def label_vector(table: Table, label_column: str | None) -> np.ndarray | None:
    """0/1 labels from ``table.labels`` (arrays) or the CSV column ``label_column``; None when there are none."""
    if table.matrix is not None:
        if table.labels is None:
            return None
        raw = table.labels
        # -1 marks a bad label; built in int64 because np.where(..., raw, -1) wraps -1 to 255 in uint8 labels
        y = np.full(len(raw), -1, np.int64)
        if np.issubdtype(raw.dtype, np.number):
            ok = np.isin(raw, (0, 1))
            y[ok] = np.real(raw[ok]).astype(np.int64)
        what = "the labels"
    else:
        if label_column is None or label_column not in table.names:
            return None
        raw = table.cells[table.names.index(label_column)]
        y = np.array([_label_value(c) for c in raw], np.int64)
        what = f"label column {label_column!r}"
    bad = np.flatnonzero(y < 0)
    if len(bad):
        i = int(bad[0])
        raise CliError(f"{table.path}: {what} must hold 0 (normal or unlabelled) or 1 (labelled anomaly), or the "
                       f"words normal / anomaly; {table.where(i)} holds {raw[i]!r} ({len(bad)} row(s) in all)")
    return y


def _label_value(cell: str) -> int:
    text = cell.strip().lower()
    if text in LABEL_WORDS:
        return LABEL_WORDS[text]
    try:
        v = float(text)  # "1.00", "0e0"
    except ValueError:
        return -1
    return int(v) if v in (0.0, 1.0) else -1


# ---- choosing columns ---------------------------------------------------------------------------------
def _columns_list(table: Table) -> str:
    names = table.names if len(table.names) <= 30 else [*table.names[:30], f"... ({len(table.names)} in all)"]
    return ", ".join(names)


def choose_features(table: Table, features: str | None, label_column: str | None) -> list[str]:
    """``--features a,b,c`` checked against the file, or every column but the label column."""
    if features is None:
        names = [n for n in table.names if n != label_column]
    else:
        names = [n.strip() for n in features.split(",") if n.strip()]
        missing = [n for n in names if n not in table.names]
        if missing:
            raise CliError(f"--features: {table.path} has no column(s) {', '.join(map(repr, missing))}; its "
                           f"columns: {_columns_list(table)}")
        if label_column in names:
            raise CliError(f"--features lists the label column {label_column!r}; a detector must not see the label")
        if len(set(names)) != len(names):
            raise CliError("--features names a column more than once")
    if not names:
        raise CliError(f"{table.path} has no feature columns" + (f" besides the label column {label_column!r}"
                                                                  if label_column in table.names else ""))
    return names


def _require_label_column(table: Table, label_column: str) -> None:
    if table.matrix is None and label_column not in table.names:
        raise CliError(f"{table.path} has no label column {label_column!r}; its columns: {_columns_list(table)}. "
                       "Name yours with --label_column NAME (or pass --unlabelled to treat every row as normal)")


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
        if not sep or not name.strip() or not _is_number(value):
            raise CliError(f"--hyperparam {item!r}: write NAME=VALUE with a number, e.g. --hyperparam nu1=0.05")
        out[name.strip()] = float(value)
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
        _require_label_column(table, label_column)
    names = choose_features(table, a.features, label_column)
    x = feature_matrix(table, names)
    y = None if a.unlabelled else label_vector(table, label_column)
    if y is None and not a.unlabelled:
        raise CliError(f"{table.path} holds no labels; give --labels FILE.npy, put them in the .npz as 'y', "
                       "or pass --unlabelled to treat every row as normal")
    label_name = f"label column {label_column!r}" if label_column and y is not None else "the labels"
    check_training_labels(table, y, a.method, label_name)

    from imdad_jax.estimator import DeepDetector

    det = DeepDetector(method=a.method, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size, random_state=a.seed,
                       anomaly_share=a.anomaly_share, hyperparams=hyper or None)
    t0 = time.perf_counter()
    try:
        det.fit(x, y)
    except ValueError as e:  # the estimator's own input checks (hyperparameter names and ranges, ...)
        raise CliError(str(e)) from None
    wall = time.perf_counter() - t0
    if det.diverged_:
        print(f"error: training diverged (the loss became NaN or infinite) after {wall:.1f} s; nothing was "
              f"written. Try a smaller --lr (now {a.lr:g})", file=sys.stderr)
        return 1
    scores, flags = det.decision_function(x), det.predict(x)
    auc = _auc(y, scores)
    det.save(out)
    meta = {"format": 1, "features": names, "label_column": label_column or "label", "source": str(table.path),
            "method": a.method, "rows": table.n_rows, "labelled_anomalies": int(y.sum()) if y is not None else 0,
            "epochs": a.epochs, "train_auc": auc, "fit_seconds": round(wall, 2)}
    from imdad_jax.io import atomic_write

    atomic_write(out / CLI_META, json.dumps(meta, indent=1) + "\n")
    scores_path = Path(a.scores) if a.scores else out / TRAIN_SCORES
    write_scores(scores_path, scores, flags, y, label_column or "label")
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
    print(f"trained  {a.method}, {a.epochs} epochs, lr {a.lr:g}{batch}, seed {a.seed}: {wall:.1f} s")
    geometry = [f"{k} {v:.4g}" for k, v in (("radius", det.radius_), ("margin", det.margin_)) if v is not None]
    print(f"result   training AUC {'n/a (one class)' if auc is None else f'{auc:.4f}'}; "
          f"{int(flags.sum())} of {len(flags)} rows flagged (score > 0)"
          + (f"; sphere {', '.join(geometry)}" if geometry else ""))
    print(f"wrote    {out}/ (detector.json, params.npz, {CLI_META}) and {scores_path}")
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
                           f"was trained on; its columns: {_columns_list(table)}")
    else:  # a detector saved from Python: no names, so every non-label column in file order
        names = [n for n in table.names if n != label_column]
    if len(names) != n_features:
        raise CliError(f"{table.path} gives {len(names)} feature columns, the model was trained on {n_features}")
    if table.n_rows == 0:
        raise CliError(f"{table.path} has no data rows, only a header")
    x = feature_matrix(table, names)
    try:
        y = label_vector(table, label_column)
    except CliError as e:  # labels are optional when scoring: say why there is no AUC, score anyway
        print(f"note: no AUC: {e}", file=sys.stderr)
        y = None
    scores, flags = det.decision_function(x), det.predict(x)
    out = Path(a.out) if a.out else default_scores_path(table.path)
    write_scores(out, scores, flags, y, label_column)
    auc = _auc(y, scores)
    print(f"scored   {table.n_rows} rows of {table.path} with {a.model} ({det.method}): "
          f"{int(flags.sum())} flagged (score > 0)")
    if y is not None:
        print(f"AUC      {'n/a (one class)' if auc is None else f'{auc:.4f}'} against {label_column!r} "
              f"({int(y.sum())} labelled anomalies)")
    print(f"wrote    {out}")
    return 0


def load_model(model_dir: Path) -> tuple[Any, dict[str, Any] | None]:
    """The saved detector and its ``cli.json`` (None for a detector saved from Python)."""
    if not model_dir.is_dir():
        raise CliError(f"--model {model_dir}: no such folder; give the --out folder of a train run")
    if not (model_dir / "detector.json").is_file() or not (model_dir / "params.npz").is_file():
        raise CliError(f"{model_dir} holds no saved detector (detector.json and params.npz); give the --out "
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


def write_scores(path: Path, scores: np.ndarray, flags: np.ndarray, y: np.ndarray | None, label_name: str) -> None:
    """CSV of ``row, [label,] score, is_anomaly``; scores as %.9g, which gives back the float32 exactly."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", *([label_name] if y is not None else []), "score", "is_anomaly"])
    for i, (s, f) in enumerate(zip(scores.tolist(), flags.tolist())):
        w.writerow([i, *([int(y[i])] if y is not None else []), f"{s:.9g}", int(f)])
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

labels: 1 = a known (labelled) anomaly, 0 = normal or unlabelled (the words anomaly / normal also work).
The detector learns the normal rows; imdad, deep_sad, dad and mdad also learn from the labelled anomalies,
deep_svdd and the others from the normal rows alone. Feature columns are standardised on the normal rows.
For a .npy file the last column is the label unless --labels FILE.npy or --unlabelled is given; a .npz holds
arrays X and y. MODEL_DIR gets detector.json, params.npz, cli.json (feature names) and train_scores.csv
(row, label, score, is_anomaly; score: higher = more anomalous, is_anomaly = score > 0).
"""

SCORE_EPILOG = """examples:
  {p} score --model fraud_model --data new_transactions.csv          # -> new_transactions_scores.csv
  {p} score --model model --data week2.csv --out week2_scored.csv

The feature columns are picked from the file by the names the model was trained on, so their order may differ
and extra columns (ids, the label) are ignored. If the file has the label column, the AUC is printed.
Output columns: row (0-based data row), the label if present, score (higher = more anomalous),
is_anomaly (1 when score > 0, outside the detector's boundary).
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
    t.add_argument("--epochs", type=int, default=100, help="passes over the training rows")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    t.add_argument("--batch_size", type=int, default=None, help="rows per step (default: 50)")
    t.add_argument("--seed", type=int, default=0, help="random seed (initial weights, batch order)")
    t.add_argument("--anomaly_share", type=float, default=None,
                   help="share of labelled anomalies in each batch (e.g. 0.5); default: as in the data")
    t.add_argument("--hyperparam", nargs="+", action="extend", metavar="NAME=VALUE",
                   help="the method's own hyperparameters, e.g. nu1=0.05 nu2=0.1 (imdad's: nu, nu1, nu2, dual_lr; "
                        "each method's: docs/methods.md)")
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
    except CliError as e:
        print(f"error: {str(e).replace(chr(10), ' ')}", file=sys.stderr)  # one line, whatever the message held
        return 2
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


__all__ = ["CliError", "Table", "build_parser", "main", "read_table"]
