"""A user's own table file as arrays: CSV / TSV (optionally gzipped), ``.npy`` and ``.npz``.

:func:`read_table` reads a file into a :class:`Table` (columns by name, nothing parsed yet);
:func:`choose_features` and :func:`require_label_column` check the wanted columns against it;
:func:`feature_matrix` gives the ``(rows, features)`` float array and :func:`label_vector` the ``(rows,)`` 0/1
labels. Every bad input raises :class:`TableError` with a one-line message that says what to fix.

The messages name the flags of ``python -m imdad_jax train|score`` (``--features``, ``--labels``,
``--unlabelled``, ...) because that command line is who hands these functions a user's file; the wording is
pinned by ``tests/test_user_cli.py`` and listed in ``docs/reliability.md``.

The standard library's ``csv`` and numpy read the files: pandas is not a dependency of the package, and the
csv reader's line numbers are what lets a message point at the line to fix.
"""
from __future__ import annotations

import csv
import gzip
import tokenize
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TEXT_SUFFIXES = {".csv": ",", ".tsv": "\t", ".csv.gz": ",", ".tsv.gz": "\t"}
ARRAY_SUFFIXES = (".npy", ".npz")
# Cells read as missing rather than as text: empty, the usual NA spellings, and UCI's "?".
MISSING = {"", "nan", "na", "n/a", "null", "none", "?"}
LABEL_WORDS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "normal": 0, "anomaly": 1}


class TableError(ValueError):
    """A table file that cannot be used as it is; the message (one line) says what to fix."""


@dataclass
class Table:
    """One data file, columns by name, before any column is parsed.

    CSV cells stay strings until a column is asked for, so a bad cell in an unused column never stops a run.
    Arrays are named ``x0, x1, ...`` so that columns are chosen the same way for every kind of file.
    """

    path: Path
    names: list[str]
    cells: list[list[str]] | None = None        # CSV: one list of strings per column
    lines: list[int] | None = None              # CSV: the file line of each data row, for messages
    matrix: np.ndarray | None = None            # .npy / .npz: (rows, columns) numbers
    labels: np.ndarray | None = None            # .npy / .npz: (rows,) labels given apart from the features

    @property
    def n_rows(self) -> int:
        """Number of data rows."""
        return len(self.lines) if self.cells is not None else len(self.matrix)

    def where(self, i: int) -> str:
        """Row ``i`` for a message: its 0-based index (the ``row`` column of the scores) and its file line."""
        return f"row {i} (line {self.lines[i]})" if self.lines is not None else f"row {i}"


# ---- reading files ------------------------------------------------------------------------------------
def file_kind(path: Path) -> str:
    """The suffix that decides how ``path`` is read (``.csv``, ``.csv.gz``, ``.npy``, ...).

    Raises :class:`TableError` for any other file type.
    """
    name = path.name.lower()
    for suffix in (*TEXT_SUFFIXES, *ARRAY_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    raise TableError(f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; give a .csv (or .tsv, "
                     ".csv.gz) table with a header line, a .npy array or a .npz file with arrays X and y")


def read_table(path: str | Path, labels_path: str | None = None, n_features: int | None = None,
               unlabelled: bool = False) -> Table:
    """Read a CSV / TSV (header line first), ``.npy`` or ``.npz`` file into a :class:`Table`.

    Args:
        path: the data file. A text table has a header line of unique column names; an ``.npy`` holds a
            ``(rows, columns)`` array; an ``.npz`` holds arrays ``X`` ``(rows, features)`` and optionally ``y``
            ``(rows,)``.
        labels_path: an ``.npy`` of ``(rows,)`` labels for an array file (refused for a text table, whose
            labels are a column).
        n_features: when scoring, the number of features the model takes: an ``.npy`` with exactly one more
            column than that has its last column read as the label, otherwise every column is a feature.
        unlabelled: the ``.npy``'s last column is a feature, not a label.

    For arrays the labels travel apart from the features: ``.npz`` array ``y``, ``labels_path``, or else the
    last column of a ``.npy`` (unless ``unlabelled``, or ``n_features`` says it is a feature).

    Raises:
        TableError: a missing, unsupported, unreadable or ill-shaped file.
    """
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: file not found (check the path; it is read relative to {Path.cwd()})")
    if path.is_dir():
        raise TableError(f"{path} is a folder; give a data file (.csv, .npy or .npz)")
    kind = file_kind(path)
    if kind in TEXT_SUFFIXES:
        if labels_path:
            raise TableError("--labels is for .npy files; in a CSV the labels are a column named by --label_column")
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
                raise TableError(f"{path} is empty; it needs a header line of column names and data rows below it")
            header = [h.strip() for h in header]
            _check_header(path, header)
            columns: list[list[str]] = [[] for _ in header]
            lines: list[int] = []
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank lines (often one at the end) are not rows
                if len(row) != len(header):
                    raise TableError(f"{path}, line {reader.line_num}: {len(row)} fields, but the header has "
                                     f"{len(header)}; the file may be truncated, or a value holds an unquoted "
                                     f"{'comma' if delimiter == ',' else 'tab'}: fix or drop that line")
                for col, cell in zip(columns, row):
                    col.append(cell)
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise TableError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); export it as UTF-8 CSV") from None
    # zlib.error: damage inside a .csv.gz's compressed data (a cut one raises EOFError)
    except (csv.Error, OSError, EOFError, zlib.error) as e:
        raise TableError(f"{path}: cannot read it as {'TSV' if delimiter == chr(9) else 'CSV'}: {e}") from None
    return Table(path, header, cells=columns, lines=lines)


def _check_header(path: Path, header: list[str]) -> None:
    # A file saved without its header would otherwise lose its first row to column names like "2.04".
    if all(_is_number(h) for h in header):
        raise TableError(f"{path}: the first line ({','.join(header[:4])}...) looks like data, not column names; "
                         "add a header line naming the columns")
    if "" in header:
        raise TableError(f"{path}: column {header.index('') + 1} of the header has no name; name every column")
    dup = sorted(h for h, n in Counter(header).items() if n > 1)
    if dup:
        raise TableError(f"{path}: the header names {', '.join(map(repr, dup))} more than once; columns are "
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
        raise TableError(f"{path}: cannot read {what} ({e}); save a plain numeric array with np.save") from None
    except _DAMAGED as e:
        raise TableError(f"{path}: cannot read {what} ({type(e).__name__}: {e}); the file is corrupt or truncated, "
                         "save it again") from None


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    z = _load_npy(path, "the .npz file")
    if not isinstance(z, np.lib.npyio.NpzFile):  # numpy reads by content, not by name
        raise TableError(f"{path} holds a single array, not a .npz archive; rename it to .npy")
    with z:
        if "X" not in z.files:
            raise TableError(f"{path} has no array named 'X' (it holds {', '.join(z.files) or 'none'}); save it "
                             "with np.savez(path, X=features, y=labels)")
        try:  # the members are read only now, so a damaged one fails here
            return z["X"], (z["y"] if "y" in z.files else None)
        except (ValueError, *_DAMAGED) as e:
            raise TableError(f"{path}: cannot read its arrays ({type(e).__name__}: {e}); the file is corrupt or "
                             "truncated, save it again") from None


def _single_array(path: Path, what: str) -> np.ndarray:
    a = _load_npy(path, what)
    if not isinstance(a, np.ndarray):
        a.close()  # an NpzFile keeps its file open until closed
        raise TableError(f"{path} is a .npz archive, not a single array; rename it to .npz (arrays X and y)")
    return a


def _read_array(path: Path, kind: str, labels_path: str | None, n_features: int | None,
                unlabelled: bool) -> Table:
    labels = None
    if kind == ".npz":
        x, labels = _npz_arrays(path)
    else:
        x = _single_array(path, "the array")
    if x.ndim != 2:
        raise TableError(f"{path}: the array has shape {x.shape}; the command line takes a table (rows, columns). "
                         "For images use the Python API (imdad_jax.estimator.DeepDetector)")
    # complex numbers would lose their imaginary part silently in the cast to float
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool) or np.iscomplexobj(x):
        raise TableError(f"{path}: the array holds {x.dtype}, not real numbers; save it as floats")
    if labels_path:
        if labels is not None:
            raise TableError(f"{path} already holds labels (array 'y'); drop --labels")
        if not Path(labels_path).is_file():
            raise TableError(f"--labels {labels_path}: file not found")
        labels = _single_array(Path(labels_path), "the labels")
    elif kind == ".npy" and not unlabelled and (n_features is None or x.shape[1] == n_features + 1):
        if x.shape[1] < 2:
            raise TableError(f"{path} has one column; the last column is read as the label, so give at least one "
                             "feature column before it (or pass --unlabelled / --labels FILE.npy)")
        x, labels = x[:, :-1], x[:, -1]
    if labels is not None:
        labels = np.asarray(labels).ravel()
        if len(labels) != len(x):
            raise TableError(f"{path}: {len(x)} rows but {len(labels)} labels; give one label per row")
    return Table(path, [f"x{j}" for j in range(x.shape[1])], matrix=x, labels=labels)


# ---- columns to numbers -------------------------------------------------------------------------------
def feature_matrix(table: Table, names: Sequence[str]) -> np.ndarray:
    """The named columns as a ``(rows, len(names))`` float64 array, columns in the order of ``names``.

    Raises:
        TableError: a non-numeric cell (the first one, with its row and line), or empty / NA / NaN / infinite
            cells (counted per column, so one message lists them all).
    """
    idx = [table.names.index(n) for n in names]
    if table.matrix is not None:
        x = table.matrix[:, idx].astype(np.float64)
    else:
        x = np.stack([_numeric_column(table, j) for j in idx], axis=1) if idx else np.zeros((table.n_rows, 0))
    bad = ~np.isfinite(x)
    if bad.any():
        counts = bad.sum(axis=0)
        cols = ", ".join(f"{names[j]!r} ({counts[j]})" for j in np.flatnonzero(counts))
        raise TableError(f"{table.path}: empty, NaN or infinite cells in feature column(s) {cols}, "
                         f"{int(bad.any(axis=1).sum())} row(s) in all "
                         f"(first: {table.where(int(np.argmax(bad.any(axis=1))))}); "
                         "drop those rows or impute the cells (e.g. with the column median) and run again")
    return x


def _numeric_column(table: Table, j: int) -> np.ndarray:
    cells = table.cells[j]
    try:
        return np.asarray(cells, dtype=np.float64)  # fast path: numpy parses the strings itself
    except ValueError:
        pass
    # Slow path, only for a column numpy refused: find the first cell that is neither a number nor missing.
    out = np.empty(len(cells))
    for i, cell in enumerate(cells):
        if cell.strip().lower() in MISSING:
            out[i] = np.nan  # counted with the other missing cells by feature_matrix
            continue
        try:
            out[i] = float(cell)
        except ValueError:
            raise TableError(f"{table.path}: column {table.names[j]!r} is not numeric: {table.where(i)} holds "
                             f"{cell!r}; convert it to numbers, or leave it out by listing the feature columns "
                             "with --features a,b,c") from None
    return out


def label_vector(table: Table, label_column: str | None) -> np.ndarray | None:
    """The ``(rows,)`` int64 0/1 labels, or None when the table has none.

    From ``table.labels`` for an array file, else from the text column ``label_column`` (None, or a name the
    table lacks, gives None). A cell may be 0 / 1 in any float spelling (``1.0``, ``1e0``) or the word
    ``normal`` / ``anomaly``, in any case and with spaces around it.

    Raises:
        TableError: any other label, naming the first one and how many there are.
    """
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
        raise TableError(f"{table.path}: {what} must hold 0 (normal or unlabelled) or 1 (labelled anomaly), or the "
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
def describe_columns(table: Table) -> str:
    """The table's column names for a message, comma-separated; cut after 30 so a wide file stays one line."""
    names = table.names if len(table.names) <= 30 else [*table.names[:30], f"... ({len(table.names)} in all)"]
    return ", ".join(names)


def choose_features(table: Table, features: str | None, label_column: str | None) -> list[str]:
    """The feature column names: ``features`` (``"a,b,c"``) checked against the table, or else every column
    but ``label_column``, in file order.

    Raises:
        TableError: a named column the table lacks, the label column among the features, a name given twice,
            or no feature column at all.
    """
    if features is None:
        names = [n for n in table.names if n != label_column]
    else:
        names = [n.strip() for n in features.split(",") if n.strip()]
        missing = [n for n in names if n not in table.names]
        if missing:
            raise TableError(f"--features: {table.path} has no column(s) {', '.join(map(repr, missing))}; its "
                             f"columns: {describe_columns(table)}")
        if label_column in names:
            raise TableError(f"--features lists the label column {label_column!r}; a detector must not see the label")
        if len(set(names)) != len(names):
            raise TableError("--features names a column more than once")
    if not names:
        raise TableError(f"{table.path} has no feature columns" + (f" besides the label column {label_column!r}"
                                                                    if label_column in table.names else ""))
    return names


def require_label_column(table: Table, label_column: str) -> None:
    """Refuse a text table without the column ``label_column`` (array files carry their labels apart).

    Raises:
        TableError: the column is absent; the message lists the table's columns.
    """
    if table.matrix is None and label_column not in table.names:
        raise TableError(f"{table.path} has no label column {label_column!r}; its columns: "
                         f"{describe_columns(table)}. Name yours with --label_column NAME (or pass --unlabelled to "
                         "treat every row as normal)")


__all__ = ["ARRAY_SUFFIXES", "LABEL_WORDS", "MISSING", "TEXT_SUFFIXES", "Table", "TableError", "choose_features",
           "describe_columns", "feature_matrix", "file_kind", "label_vector", "read_table", "require_label_column"]
