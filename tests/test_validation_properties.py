"""Input validation: whatever a user passes, each entry point answers with a result or one clear error of the kind it
promises (ValueError from the estimator, TableError from the table reader, CliError from ``python -m imdad_jax``,
DataFileError from the loaders, ConfigError from the config), never an exception from deep inside numpy, zipfile,
gzip or JAX.

Property-based (hypothesis) for the array, table, file and config validators; a few worked examples after them
for the bad inputs the older test files do not reach. Nothing here trains: ``fit`` runs ``_prepare_fit`` and
``_hp`` (the checks) before anything is traced, so those are called directly, and every example error below is
raised before training. ``docs/reliability.md`` lists every bad input with the test that checks it.
"""
import csv
import gzip
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from imdad_jax.cli import main as user_main
from imdad_jax.config import METHODS, ConfigError, make_config
from imdad_jax.data import DataFileError, cv_runs, load_fashion_mnist, load_tabular, read_idx, tabular
from imdad_jax.data.idx import write_idx
from imdad_jax.estimator import DeepDetector, model_input_shape
from imdad_jax.io.tables import TableError, choose_features, feature_matrix, label_vector, read_table
from imdad_jax.objectives import REGISTRY, get_objective

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import run as experiment_cli  # noqa: E402

# database=None: failing examples are not stored between runs; a failure prints its reproduction blob instead.
# The suite's default is a fixed (derandomized) set of 60 examples per property, so a test run is reproducible and
# CI passes or fails on the code alone; IMDAD_HYPOTHESIS_EXAMPLES=2000 searches afresh and longer, which is how
# new cases are found (each one found gets its own explicit test below, like the empty-axis IDX header).
EXAMPLES = int(os.environ.get("IMDAD_HYPOTHESIS_EXAMPLES", "60"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                    derandomize="IMDAD_HYPOTHESIS_EXAMPLES" not in os.environ,
                    suppress_health_check=[HealthCheck.too_slow])


def _scratch() -> Path:
    # A fresh folder per example, removed by the test: pytest's tmp_path is one folder for all of a test's examples.
    return Path(tempfile.mkdtemp(prefix="imdad_validation_"))


# ---- the estimator: X, y and settings ------------------------------------------------------------------
# Every message fit may answer a bad X / y with: scikit-learn's own for tables, ours for images and labels.
ESTIMATOR_MESSAGES = (
    r"Expected 2D array, got (scalar|1D) array instead",
    r"Found array with \d+ sample\(s\) \(shape=.*\) while a minimum of \d+ is required",
    r"Found array with 0 feature\(s\)",
    r"Input X contains NaN",
    r"Input X contains infinity or a value too large for dtype\('float32'\)",
    r"Complex data not supported",
    r"X has shape .*; give a table \(n, features\) or images \(n, H, W\) or \(n, H, W, C\)",
    r"image X must hold real numbers, got dtype",
    r"images with an empty axis",
    r"X holds NaN or inf; fill or drop those samples first",
    r"beyond float32's range; scale the images",
    r"X overflows float32 once standardised on the normal samples",
    r"y must have one label per sample: X has \d+ samples",
    r"y must hold 0 \(normal\) and 1 \(labelled anomaly\) only; got values",
    r"fit needs at least 2 normal samples \(y == 0\); got \d+",
    r"needs labelled anomalies: mark some with y == 1, or use a method trained on normals alone",
    r"X has shape .*, the detector was fit on images of shape",
    r"X has samples of shape .*, the detector was fit on",
    r"X has \d+ features, but \w+ is expecting \d+ features as input",
    r"images of \d+x\d+ are too small for cnn2's 2 2x2 pooling steps: H and W must be >= 4",
)

DTYPES = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.boolean_dtypes(),
                   hnp.complex_number_dtypes())
ANY_X = hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=5))


def _assert_clear(e: Exception) -> None:
    assert any(re.search(p, str(e)) for p in ESTIMATOR_MESSAGES), f"unexpected message: {type(e).__name__}: {e}"


# Tables and images of plain finite numbers, so that the accepting path is drawn often too.
GOOD_X = hnp.arrays(st.sampled_from([np.float32, np.float64, np.uint8, np.int64]),
                    st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=2, max_side=6),
                              hnp.array_shapes(min_dims=3, max_dims=4, min_side=2, max_side=6)),
                    elements=st.integers(0, 200))


@st.composite
def x_and_y(draw):
    x = draw(st.one_of(ANY_X, GOOD_X))
    n = x.shape[0] if x.ndim else 1
    y = draw(st.one_of(
        st.none(),
        hnp.arrays(np.int64, (n,), elements=st.sampled_from([0, 1])),  # valid labels: the accepting path
        hnp.arrays(st.sampled_from([np.int8, np.int64, np.float32, np.float64, np.bool_]), (n,)),  # any values
        hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=7),
                   elements=st.sampled_from([0, 1])),  # any length or rank
        st.lists(st.sampled_from([0, 1, 2, -1, 0.5, math.nan, None, "1", "anomaly"]), min_size=n, max_size=n)
        .map(lambda v: np.array(v, dtype=object)),
    ))
    return x, y


@PROPERTY
@given(xy=x_and_y(), method=st.sampled_from(["imdad", "deep_svdd", "deep_sad", "autoencoder"]))
def test_fit_validation_accepts_good_arrays_and_refuses_the_rest_with_a_clear_message(xy, method):
    X, y = xy
    det = DeepDetector(method=method)
    try:
        _, xt, data, batch = det._prepare_fit(X, y)
    except (ValueError, TypeError) as e:  # anything else (IndexError, a JAX error, ...) fails the test
        _assert_clear(e)
        event("refused")
        return
    event("accepted")
    labels = np.zeros(len(X)) if y is None else np.asarray(y).ravel().astype(float)
    assert X.ndim in (2, 3, 4) and not np.iscomplexobj(X)
    assert X.ndim == 2 or min(X.shape[1:3]) >= 4  # CNN2 pools twice
    assert set(np.unique(labels)) <= {0.0, 1.0} and (labels == 0).sum() >= 2
    if getattr(get_objective(method), "USES_ANOMALIES", True):
        assert (labels == 1).sum() >= 1
    assert xt.dtype == np.float32 and np.isfinite(xt).all()
    assert xt.shape == (len(X), *model_input_shape(det.input_shape_)) and 0 not in xt.shape[1:]
    assert int(data.n_valid[0]) == (labels == 0).sum() and int(data.m_valid[0]) == (labels == 1).sum()
    assert batch >= 1


@pytest.fixture(scope="module")
def prepared():
    """Detectors that went through fit's validation (no training): one on a table, one on grey images."""
    rng = np.random.default_rng(0)
    table = DeepDetector(method="deep_svdd")
    table._prepare_fit(rng.normal(size=(10, 3)), None)
    images = DeepDetector(method="deep_svdd")
    images._prepare_fit(rng.integers(0, 255, (10, 4, 4), dtype=np.uint8), None)
    return {"table": table, "images": images}


@st.composite
def scoring_x(draw):
    kind = draw(st.sampled_from(["table", "images"]))
    shape = {"table": (3,), "images": (4, 4)}[kind]
    x = draw(st.one_of(ANY_X, hnp.arrays(DTYPES, st.integers(0, 4).map(lambda n: (n, *shape)))))
    return kind, x


# Values past float32's range are among the drawn inputs on purpose: scikit-learn's cast of them to float32 warns
# (numpy's "overflow encountered in cast") before its finiteness check refuses them with its clear message.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@PROPERTY
@given(case=scoring_x())
def test_scoring_validation_gives_samples_of_the_fitted_shape_or_a_clear_message(prepared, case):
    kind, X = case
    det = prepared[kind]
    try:
        x = det._check_x(X, fitting=False)
    except (ValueError, TypeError) as e:
        _assert_clear(e)
        event("refused")
        return
    event("accepted")
    assert x.shape[1:] == det.input_shape_ and len(x) >= 1 and np.isfinite(x).all()
    if kind == "images":  # tables may score far-out rows as inf, but pixels must reach the model finite
        assert np.isfinite(det._transform(x)).all()


# Each setting's rule, as docs/reliability.md states it.
def _whole(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


F32_MAX = float(np.finfo(np.float32).max)


def _real(v) -> bool:  # finite as the float32 the engine trains with
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and math.isfinite(v) and abs(v) <= F32_MAX


def _real_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _f32(v) -> float:
    with np.errstate(over="ignore"):
        return float(np.float32(v))


SETTING_RULES = {
    "epochs": lambda v: v == "auto" or (_whole(v) and v >= 1),
    "batch_size": lambda v: v is None or (_whole(v) and v >= 1),
    "lr": lambda v: v is None or (_real(v) and v > 0),
    "weight_decay": lambda v: _real(v) and v >= 0,
    "anomaly_share": lambda v: v is None or (_real(v) and 0 < v < 1),
    "dense_features": lambda v: v is None or (isinstance(v, tuple) and all(_whole(w) and w >= 1 for w in v)),
}
# The objectives' own hyperparameters (objectives/*.validate_hp), judged as the float32 they travel as.
HP_RULES = {
    **{k: (lambda v: 0 < v <= 1) for k in ("nu", "nu1", "nu2")},
    **{k: (lambda v: v > 0 and math.isfinite(v)) for k in ("dual_lr", "head_lr", "eta", "drocc_radius",
                                                           "drocc_lambda", "drocc_step_size")},
    **{k: (lambda v: v >= 0 and math.isfinite(v)) for k in ("warmup_epochs", "mu1", "mu2")},
    "drocc_gamma": lambda v: v >= 1 and math.isfinite(v),
}
ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-3, 200), st.floats(), st.text(max_size=2))
# Mostly valid draws, so that accepting is tested as well as refusing.
GOOD_SETTINGS = {"epochs": st.one_of(st.just("auto"), st.integers(1, 300)),
                 "batch_size": st.one_of(st.none(), st.integers(1, 500)),
                 "lr": st.one_of(st.none(), st.floats(1e-6, 1.0)), "weight_decay": st.floats(0.0, 1.0),
                 "anomaly_share": st.one_of(st.none(), st.floats(0.01, 0.99)),
                 "dense_features": st.one_of(st.none(), st.lists(st.integers(1, 8), max_size=3).map(tuple))}
ANY_HP = st.one_of(st.floats(0.01, 1.0), st.floats(), st.integers(-2, 3), st.none(), st.booleans(), st.text(max_size=2))


@st.composite
def estimator_settings(draw):
    method = draw(st.sampled_from(sorted(REGISTRY)))
    names = [*get_objective(method).HYPERPARAMS, "not_a_hyperparameter"]
    bad_dense = st.one_of(st.lists(st.one_of(st.integers(-1, 4), st.floats(0, 4)), max_size=3).map(tuple),
                          st.text(max_size=2))
    kw = {k: draw(good if draw(st.sampled_from([True, True, True, False])) else
                  (bad_dense if k == "dense_features" else ANY_VALUE))
          for k, good in GOOD_SETTINGS.items()}
    hyper = draw(st.dictionaries(st.sampled_from(names), ANY_HP, max_size=2))
    return method, kw, hyper


@PROPERTY
@given(case=estimator_settings())
def test_settings_and_hyperparameters_out_of_range_are_refused_before_training(case):
    method, kw, hyper = case
    det = DeepDetector(method=method, hyperparams=hyper, **kw)
    broken = [k for k, v in kw.items() if not SETTING_RULES[k](v)]
    broken += [k for k, v in hyper.items() if k not in HP_RULES or not _real_number(v) or not HP_RULES[k](_f32(v))]
    try:
        det._hp()
    except ValueError as e:
        assert broken, f"refused valid settings: {e}"
        assert re.search(r"(\w+) must |has no hyperparameters", str(e)), str(e)
        named = re.findall(r"\w+", str(e).split(" must ")[0].split(" has no ")[0])[-1]
        assert named in broken or named == method, f"{e} names none of {broken}"
        event("refused")
        return
    event("accepted")
    assert not broken, f"accepted {broken}"


# ---- the user CLI: tables and array files --------------------------------------------------------------
NUMBER_CELLS = st.one_of(st.floats(allow_nan=False, allow_infinity=False).map(repr),
                         st.integers(-10**20, 10**20).map(str),
                         st.sampled_from([" 3 ", "1e3", "-0", "1_000", ".5", "+2"]))
MESSY_CELLS = st.one_of(NUMBER_CELLS, st.floats().map(repr),
                        st.sampled_from(["", " ", "nan", "NaN", "NA", "n/a", "null", "None", "?", "inf", "-Infinity",
                                         "1e999", "0x10", "1,5", "two", "normal", "anomaly", "0", "1", "2"]),
                        st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\ufeff"), max_size=4))
LABEL_CELLS = st.sampled_from(["0", "1", "0.0", "1.0", "1e0", " 1 ", "normal", "anomaly", "Anomaly"])
LABEL_WORDS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "normal": 0, "anomaly": 1}
NAMES = st.one_of(st.sampled_from(["a", "b", "c", "label", " d ", "1", "2.5", "", "nan", "a"]),
                  st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\ufeff"), max_size=3))


@st.composite
def csv_files(draw):
    """(header, rows, features, gzipped): a clean numeric table half the time, anything the other half."""
    clean = draw(st.booleans())
    if clean:
        header = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=4, unique=True))
        if draw(st.booleans()):
            header.insert(draw(st.integers(0, len(header))), "label")
        rows = draw(st.lists(st.tuples(*(LABEL_CELLS if h == "label" else NUMBER_CELLS for h in header))
                             .map(list), max_size=8))
    else:
        header = draw(st.lists(NAMES, min_size=1, max_size=4))
        width = st.integers(max(len(header) - 1, 0), len(header) + 1) if draw(st.booleans()) else st.just(len(header))
        rows = draw(st.lists(width.flatmap(lambda w: st.lists(MESSY_CELLS, min_size=w, max_size=w)), max_size=8))
    features = draw(st.one_of(st.none(), st.lists(st.sampled_from([*header, "zz"]), min_size=1, max_size=3)
                              .map(",".join)))
    return header, rows, features, draw(st.booleans())


def _label_of(cell: str) -> int:
    text = cell.strip().lower()
    return LABEL_WORDS[text] if text in LABEL_WORDS else int(float(text))


def _read_or_refuse(path, features=None, label_column=None, **read_kw):
    """Read ``path`` through the user CLI's table reader: (table, feature names, X, y), or None after a ``TableError``
    (which must carry a message). ``label_column`` may be a function of the table. The scratch folder goes
    either way; hypothesis's ``event`` records which way it went."""
    try:
        table = read_table(path, **read_kw)
        label = label_column(table) if callable(label_column) else label_column
        names = choose_features(table, features, label)
        got = table, names, feature_matrix(table, names), label_vector(table, label)
    except TableError as e:
        assert str(e)
        event("refused")
        return None
    finally:
        shutil.rmtree(path.parent)
    event("accepted")
    return got


@PROPERTY
@given(case=csv_files())
def test_csv_cells_parse_to_the_numbers_written_or_give_one_cli_error(case):
    header, rows, features, gz = case
    path = _scratch() / ("t.csv.gz" if gz else "t.csv")
    with (gzip.open(path, "wt", newline="", encoding="utf-8") if gz else open(path, "w", newline="",
                                                                            encoding="utf-8")) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    got = _read_or_refuse(path, features, "label")
    if got is None:
        return
    table, names, x, y = got
    # blank lines are skipped, as the reader documents
    data_rows = [r for r in rows if r and not (len(r) == 1 and not r[0].strip())]
    assert table.names == [h.strip() for h in header] and table.n_rows == len(data_rows)
    assert "label" not in names and x.shape == (len(data_rows), len(names)) and np.isfinite(x).all()
    for j, name in enumerate(names):
        col = table.names.index(name)
        assert x[:, j].tolist() == [float(r[col]) for r in data_rows], name
    if "label" in table.names:
        col = table.names.index("label")
        assert y.tolist() == [_label_of(r[col]) for r in data_rows]
    else:
        assert y is None


ARRAY_DTYPES = st.one_of(hnp.floating_dtypes(endianness="="), hnp.integer_dtypes(endianness="="),
                         hnp.unsigned_integer_dtypes(endianness="="), hnp.boolean_dtypes(),
                         hnp.complex_number_dtypes(endianness="="))


@PROPERTY
@given(x=hnp.arrays(ARRAY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
       kind=st.sampled_from([".npy", ".npz"]), unlabelled=st.booleans(),
       y=st.one_of(st.none(), hnp.arrays(st.sampled_from([np.int64, np.float64]), st.integers(0, 6))))
def test_array_files_give_finite_features_and_0_1_labels_or_one_cli_error(x, kind, unlabelled, y):
    path = _scratch() / f"a{kind}"
    if kind == ".npy":
        np.save(path, x)
    else:
        np.savez(path, X=x, **({} if y is None else {"y": y}))
    got = _read_or_refuse(path, unlabelled=unlabelled)
    if got is None:
        return
    _, _, feats, labels = got
    assert x.ndim == 2 and not np.iscomplexobj(x)
    assert feats.shape[0] == len(x) and feats.shape[1] >= 1 and np.isfinite(feats).all()
    if labels is not None:
        assert labels.shape == (len(x),) and set(labels.tolist()) <= {0, 1}


def _good_files() -> dict[str, bytes]:
    d = _scratch()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 3)), (rng.random(12) < 0.3).astype(int)
    np.savez(d / "a.npz", X=x, y=y)
    np.savez_compressed(d / "c.npz", X=x, y=y)
    np.save(d / "a.npy", np.c_[x, y])
    text = "a,b,c,label\n" + "".join(f"{r[0]},{r[1]},{r[2]},{v}\n" for r, v in zip(x, y))
    (d / "a.csv").write_text(text)
    (d / "a.csv.gz").write_bytes(gzip.compress(text.encode()))
    files = {p.name: p.read_bytes() for p in d.iterdir()}
    shutil.rmtree(d)
    return files


GOOD_FILES = _good_files()


@st.composite
def damaged(draw, files):
    name = draw(st.sampled_from(sorted(files)))
    raw = bytearray(files[name])
    if draw(st.booleans()):
        raw = raw[:draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(raw) - 1))
            raw[i] ^= draw(st.integers(1, 255))
    return name, bytes(raw)


@PROPERTY
@given(case=damaged(GOOD_FILES))
def test_cut_or_damaged_data_files_give_one_cli_error_or_a_clean_table(case):
    name, raw = case
    path = _scratch() / name
    path.write_bytes(raw)
    # CSVs name their label column; arrays carry the labels apart
    got = _read_or_refuse(path, label_column=lambda table: "label" if table.matrix is None else None)
    if got is None:
        return
    _, _, x, y = got
    assert np.isfinite(x).all() and (y is None or set(y.tolist()) <= {0, 1})


# ---- the IDX reader ------------------------------------------------------------------------------------
IDX_ARRAYS = hnp.arrays(st.sampled_from([np.uint8, np.int8]),
                        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))


@settings(PROPERTY, max_examples=max(EXAMPLES // 3, 10))
@given(a=IDX_ARRAYS, gz=st.booleans())
def test_idx_round_trips_and_every_cut_is_a_data_file_error(a, gz):
    d = _scratch()
    path = d / ("a.gz" if gz else "a")
    write_idx(path, a)
    back = read_idx(path)
    assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)
    raw = path.read_bytes()
    cut = d / ("cut.gz" if gz else "cut")
    try:
        for k in range(len(raw)):
            cut.write_bytes(raw[:k])
            with pytest.raises(DataFileError, match="IDX|corrupt or truncated"):
                read_idx(cut)
    finally:
        shutil.rmtree(d)


@PROPERTY
@given(a=IDX_ARRAYS, gz=st.booleans(), data=st.data())
def test_idx_damaged_bytes_give_a_data_file_error_or_a_consistent_array(a, gz, data):
    d = _scratch()
    path = d / ("a.gz" if gz else "a")
    write_idx(path, a)
    raw = bytearray(path.read_bytes())
    shutil.rmtree(d)  # before the draws below, which hypothesis may abandon midway
    # plain files: damage the header (magic, dtype code, rank, sizes); gzipped ones: anywhere in the stream
    span = len(raw) if gz else 4 + 4 * a.ndim
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, span - 1))] = data.draw(st.integers(0, 255))
    d = _scratch()
    path = d / path.name
    path.write_bytes(bytes(raw))
    try:
        got = read_idx(path)
    except DataFileError as e:
        assert "fetch" in str(e) or "IDX" in str(e), str(e)
        event("refused")
        return
    finally:
        shutil.rmtree(d)
    event("accepted")
    if not gz:
        assert got.nbytes == len(raw) - 4 - 4 * raw[3]


# ---- the experiment config -----------------------------------------------------------------------------
CONFIG_RULES = {
    **{k: (lambda v: v > 0 and _real(v)) for k in ("lr", "dual_lr", "head_lr", "kappa", "eta", "drocc_radius",
                                                   "drocc_lambda", "drocc_step_size")},
    **{k: (lambda v: v >= 0 and _real(v)) for k in ("weight_decay", "mu1", "mu2", "warmup_epochs")},
    **{k: (lambda v: 0 < v <= 1) for k in ("nu", "nu1", "nu2", "anomaly_fraction", "gamma")},
    "anomaly_share": lambda v: 0 < v < 1,
    "drocc_gamma": lambda v: v >= 1 and _real(v),
    "epochs": lambda v: v >= 1, "batch_size": lambda v: v >= 2, "n_folds": lambda v: v >= 2,
    "drocc_ascent_steps": lambda v: v >= 1, "pretrain_epochs": lambda v: v >= 0,
    "shallow_max_train": lambda v: v >= 10, "shallow_pca_dims": lambda v: v >= 1,
    "seeds": lambda v: len(v) > 0 and len(set(v)) == len(v) and all(0 <= s < 2 ** 32 for s in v),
    "classes": lambda v: len(v) > 0 and len(set(v)) == len(v),
}
INT_FIELDS = ("epochs", "batch_size", "n_folds", "drocc_ascent_steps", "pretrain_epochs", "shallow_max_train",
              "shallow_pca_dims")


@PROPERTY
@given(over=st.fixed_dictionaries({}, optional={
    **{k: st.floats() for k in CONFIG_RULES if k not in INT_FIELDS and k not in ("seeds", "classes")},
    **{k: st.integers(-3, 40) for k in INT_FIELDS},
    "seeds": st.lists(st.integers(-2, 2 ** 32), max_size=3).map(tuple),
    "classes": st.lists(st.integers(0, 9), max_size=3).map(tuple),
}), method=st.sampled_from(METHODS))
def test_config_accepts_exactly_the_settings_in_range(over, method):
    broken = [k for k, v in over.items() if not CONFIG_RULES[k](v)]
    try:
        make_config("paper", method=method, **over)
    except ConfigError as e:
        assert broken, f"refused valid settings: {e}"
        assert any(k in str(e) or (k == "classes" and "normal class" in str(e)) for k in broken), str(e)
        event("refused")
        return
    event("accepted")
    assert not broken, f"accepted {broken}"


# ---- worked examples: the bad inputs the older test files do not reach ---------------------------------
def _blobs(n=20, m=5, dim=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n + m, dim)), np.r_[np.zeros(n, int), np.ones(m, int)]


X_TAB, Y_TAB = _blobs()
IMAGES = np.zeros((6, 4, 4), np.uint8)
Y_IMG = np.r_[0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("kw, X, y, match", [
    ({"dense_features": (0,)}, X_TAB, Y_TAB, "dense_features must be a sequence of layer widths >= 1"),
    ({"batch_size": 2.5}, X_TAB, Y_TAB, "batch_size must be a whole number >= 1"),
    ({"batch_size": 0}, X_TAB, Y_TAB, "batch_size must be a whole number >= 1"),
    ({"lr": -1.0}, X_TAB, Y_TAB, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, X_TAB, Y_TAB, "lr must be a finite number > 0"),
    ({"weight_decay": -1.0}, X_TAB, Y_TAB, "weight_decay must be a finite number >= 0"),
    ({"epochs": 0}, X_TAB, Y_TAB, "epochs must be a whole number >= 1"),
    ({"anomaly_share": 1.0}, X_TAB, Y_TAB, r"anomaly_share must lie in \(0, 1\)"),
    ({"hyperparams": {"nu1": 2.0}}, X_TAB, Y_TAB, r"nu1 must lie in \(0, 1\]"),
    ({"hyperparams": {"dual_lr": float("inf")}}, X_TAB, Y_TAB, "dual_lr must be > 0 and finite"),
    ({"method": "nope"}, X_TAB, Y_TAB, "unknown method 'nope'; registered"),
    ({"arch": "resnet"}, X_TAB, Y_TAB, "unknown architecture 'resnet'"),
    ({}, np.zeros((6, 4, 4, 1, 1)), Y_IMG, r"give a table \(n, features\) or images"),
    ({}, np.zeros((6, 0, 4)), Y_IMG, "images with an empty axis"),
    ({}, np.zeros((6, 2, 3)), Y_IMG, "images of 2x3 are too small for cnn2's 2 2x2 pooling steps"),
    ({"arch": "cnn3"}, np.zeros((6, 4, 4)), Y_IMG, "images of 4x4 are too small for cnn3's 3 2x2 pooling steps"),
    ({"arch": "cnn2"}, X_TAB, Y_TAB, "arch='cnn2' takes images"),
    ({}, np.zeros((6, 4, 4), complex), Y_IMG, "image X must hold real numbers"),
    ({}, np.full((6, 4, 4), 1e300), Y_IMG, "beyond float32's range"),
    ({}, np.where(np.arange(6)[:, None, None] == 2, np.nan, IMAGES), Y_IMG, "X holds NaN or inf"),
    ({}, X_TAB, np.array([0, 1, None] + [0] * 22, dtype=object), "y must hold 0 .* only; got values"),
    # the normals' spread is 0.1, so the anomaly's 3e38 (a finite float32) is 3e39 once standardised
    ({}, np.r_[X_TAB[:-1] * 0.1, [[3e38, -3e38, 0]]], Y_TAB, "overflows float32 once standardised"),
])
def test_estimator_bad_settings_and_arrays_fail_before_training(kw, X, y, match):
    with pytest.raises(ValueError, match=match):
        DeepDetector(**{"epochs": 1, **kw}).fit(X, y)


def test_estimator_scoring_refuses_an_empty_image_batch(prepared):
    # decision_function would otherwise concatenate zero score chunks (numpy's "need at least one array")
    with pytest.raises(ValueError, match=r"Found array with 0 sample\(s\)"):
        prepared["images"]._check_x(np.zeros((0, 4, 4), np.uint8), fitting=False)


@pytest.fixture(scope="module")
def saved_detector(tmp_path_factory):
    """A detector saved without training: parameters straight from the model's initialiser."""
    import jax

    det = DeepDetector(method="deep_svdd", dense_features=(4, 2))
    _, xt, _, _ = det._prepare_fit(X_TAB, None)
    model = det._model(model_input_shape(det.input_shape_))
    init = getattr(model, "initialize", None)  # as DeepDetector.load builds its template
    params = model.init(jax.random.PRNGKey(0), xt[:1], **({"method": init} if init else {}))
    obj = get_objective("deep_svdd")
    det.params_, det.obj_state_ = jax.tree.map(np.asarray, (params, obj.init_obj_state(obj.Options())))
    return det.save(tmp_path_factory.mktemp("saved") / "model")


def _damaged_copy(src: Path, dst: Path, how: str) -> Path:
    import jax
    from flax import serialization

    shutil.copytree(src, dst)
    params = dst / "params.msgpack"
    if how == "cut json":
        text = (dst / "detector.json").read_text()
        (dst / "detector.json").write_text(text[:len(text) // 2])
    elif how == "cut params":
        raw = params.read_bytes()
        params.write_bytes(raw[:len(raw) // 2])
    elif how == "json of another version":
        meta = json.loads((dst / "detector.json").read_text())
        meta["params"]["width"] = 3
        (dst / "detector.json").write_text(json.dumps(meta))
    elif how == "params of another model":
        params.write_bytes(serialization.to_bytes({"params": {"w": np.zeros((3, 3))}, "obj_state": {}}))
    elif how == "params of another size":
        state = serialization.msgpack_restore(params.read_bytes())
        grown = jax.tree.map(lambda a: np.zeros(np.shape(a) + (1,) if np.ndim(a) else ()), state)
        params.write_bytes(serialization.msgpack_serialize(grown))
    elif how == "legacy params of another model":  # a format-1 save: positional arrays in params.npz
        params.unlink()
        np.savez(dst / "params.npz", np.zeros((3, 3)))
    return dst


@pytest.mark.parametrize("how, match", [
    ("cut json", "detector.json is damaged or was not written by save"),
    ("cut params", "params.msgpack is corrupt or truncated"),
    ("params of another model", "params.msgpack holds other arrays than the model in detector.json needs"),
    ("params of another size", "come from different detectors"),
    ("json of another version", "detector.json is damaged or was not written by save"),
    ("legacy params of another model", r"params.npz holds 1 arrays, the model needs \d+"),
])
def test_damaged_saved_detector_is_one_error_in_python_and_in_the_cli(saved_detector, tmp_path, capsys, how, match):
    DeepDetector.load(saved_detector)  # the undamaged save loads
    bad = _damaged_copy(saved_detector, tmp_path / "bad", how)
    with pytest.raises(ValueError, match=match):
        DeepDetector.load(bad)
    data = tmp_path / "new.csv"
    data.write_text("x0,x1,x2\n1,2,3\n4,5,6\n")
    assert user_main(["score", "--model", str(bad), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "cannot load the detector" in err


def _csv(path: Path, header=("a", "b", "c", "target"), n=30, cell=lambda i, j: f"{(i * 7 + j * 3) % 11 / 3:.3f}",
         label=lambda i: "1" if i % 6 == 0 else "0", encoding="utf-8") -> Path:
    lines = [",".join(header)] + [",".join([*(cell(i, j) for j in range(len(header) - 1)), label(i)])
                                  for i in range(n)]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def _npz_cut(d: Path) -> Path:
    np.savez(d / "a.npz", X=np.zeros((20, 3)), y=np.r_[np.zeros(18), 1, 1])
    raw = (d / "a.npz").read_bytes()
    (d / "a.npz").write_bytes(raw[:len(raw) - 40])
    return d / "a.npz"


def _renamed(d: Path, save, name: str) -> Path:
    save(d / "tmp")
    made = next(d.glob("tmp*"))
    return made.rename(d / name)


TRAIN = ["train", "--label_column", "target"]
USER_CLI_CASES = {
    "duplicated column names": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv", header=("a", "b", "a", "target")))],
                                "the header names 'a' more than once"),
    "unnamed column": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv", header=("a", "", "c", "target")))],
                       "column 2 of the header has no name"),
    "--features repeats a column": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv")), "--features", "a,a"],
                                    "--features names a column more than once"),
    "--features lists the label": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv")), "--features", "a,target"],
                                   "--features lists the label column 'target'"),
    "not UTF-8": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv", header=("a", "b", "c\u00e9", "target"),
                                                        encoding="latin-1"))], "is not UTF-8 text"),
    "cut .csv.gz": (lambda d: [*TRAIN, "--data", str(_cut_gz(_csv(d / "t.csv")))], "cannot read it as CSV"),
    "cut .npz": (lambda d: ["train", "--data", str(_npz_cut(d))], "the file is corrupt or truncated"),
    "3-D .npy": (lambda d: [np.save(d / "a.npy", np.zeros((20, 3, 3))), "train", "--data", str(d / "a.npy")][1:],
                 "the array has shape (20, 3, 3); the command line takes a table"),
    "complex .npy": (lambda d: [np.save(d / "a.npy", np.zeros((20, 3), complex)), "train", "--data",
                                str(d / "a.npy")][1:], "the array holds complex128, not real numbers"),
    ".npz named .npy": (lambda d: ["train", "--data", str(_renamed(d, lambda p: np.savez(p, X=np.zeros((20, 3))),
                                                                   "a.npy"))], "is a .npz archive, not a single array"),
    ".npy named .npz": (lambda d: ["train", "--data", str(_renamed(d, lambda p: np.save(p, np.zeros((20, 3))),
                                                                   "a.npz"))], "holds a single array, not a .npz"),
    "one-column .npy": (lambda d: [np.save(d / "a.npy", np.zeros((20, 1))), "train", "--data", str(d / "a.npy")][1:],
                        "has one column; the last column is read as the label"),
    "labels count": (lambda d: [np.savez(d / "a.npz", X=np.zeros((20, 3)), y=np.zeros(19)), "train", "--data",
                                str(d / "a.npz")][1:], "20 rows but 19 labels"),
    "no labels": (lambda d: [np.savez(d / "a.npz", X=np.zeros((20, 3))), "train", "--data", str(d / "a.npz")][1:],
                  "holds no labels; give --labels FILE.npy"),
    "--labels with a CSV": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv")), "--labels", "y.npy"],
                            "--labels is for .npy files"),
    "a folder as data": (lambda d: [*TRAIN, "--data", str(d)], "is a folder; give a data file"),
    "--epochs 0": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv")), "--epochs", "0"],
                   "--epochs must be at least 1"),
    "negative --lr": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv")), "--lr", "-1"],
                      "lr must be a finite number > 0"),
    "--hyperparam out of range": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv")), "--hyperparam", "nu1=2"],
                                  "nu1 must lie in (0, 1]"),
    "--anomaly_share out of range": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv")), "--anomaly_share", "1.5"],
                                     "anomaly_share must lie in (0, 1)"),
    "infinite cell": (lambda d: [*TRAIN, "--data", str(_csv(d / "t.csv", cell=lambda i, j: "1e999" if i == 3 else
                                                            str(i + j)))],
                      "empty, NaN or infinite cells in feature column(s) 'a' (1), 'b' (1), 'c' (1)"),
}


def _cut_gz(path: Path) -> Path:
    raw = gzip.compress(path.read_bytes())
    out = path.with_suffix(".csv.gz")
    out.write_bytes(raw[:len(raw) // 2])
    return out


@pytest.mark.parametrize("case", list(USER_CLI_CASES))
def test_user_cli_more_bad_inputs_are_one_line_and_exit_code_2(case, tmp_path, capsys):
    make_argv, fragment = USER_CLI_CASES[case]
    argv = make_argv(tmp_path)
    rc = user_main([*argv, "--out", str(tmp_path / "model")] if argv[0] == "train" else argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert fragment in err, err
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("args, needle", [
    (["--class=0,0"], "classes must be distinct"),
    (["--class=0", "--seeds=-1"], "seeds must lie in 0..2**32-1"),
    (["--class=0", "--lr=inf"], "lr must be > 0 and finite"),
    (["--class=0", "--weight_decay=nan"], "weight_decay must be >= 0 and finite"),
    (["--class=0", "--shallow_pca_dims=0"], "shallow_pca_dims must be >= 1"),
    (["--class=0", "--method=imdad,svm"], "unknown method ['svm']"),
    (["--class=0", "--checkpoint_every=-1"], "--checkpoint_every must be >= 0"),
])
def test_experiment_cli_more_bad_settings(args, needle, fake_fmnist_dir, tmp_path, capsys):
    rc = experiment_cli.main([*args, f"--data_dir={fake_fmnist_dir}", f"--out_dir={tmp_path}", "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and needle in err and "Traceback" not in err


def test_experiment_cli_class_name_instead_of_number(capsys):
    # argparse answers (exit 2, one "error:" line after the usage) before anything is loaded
    with pytest.raises(SystemExit) as e:
        experiment_cli.main(["--class=shirt"])
    assert e.value.code == 2 and "--class: expected comma-separated integers, got 'shirt'" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["cut", "flipped"])
def test_experiment_cli_cut_or_damaged_idx_file(damage, fake_fmnist_dir, tmp_path, capsys):
    data = tmp_path / "fmnist"
    shutil.copytree(fake_fmnist_dir, data)
    f = data / "train-labels-idx1-ubyte.gz"
    raw = bytearray(f.read_bytes())
    if damage == "cut":
        raw = raw[:len(raw) - 7]
    else:
        raw[len(raw) // 2] ^= 0xFF  # inside the deflate stream: zlib's error (it used to escape as zlib.error)
    f.write_bytes(bytes(raw))
    rc = experiment_cli.main(["--class=0", f"--data_dir={data}", f"--out_dir={tmp_path / 'out'}", "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "train-labels-idx1-ubyte.gz" in err
    assert "corrupt or truncated" in err and "fetch it again" in err


def test_fashion_mnist_images_and_labels_of_different_lengths(tmp_path):
    for stem, n in (("train-images-idx3-ubyte", 5), ("train-labels-idx1-ubyte", 4),
                    ("t10k-images-idx3-ubyte", 2), ("t10k-labels-idx1-ubyte", 2)):
        write_idx(tmp_path / f"{stem}.gz", np.zeros((n, 28, 28) if "images" in stem else (n,), np.uint8))
    with pytest.raises(DataFileError, match=r"train images \(5, 28, 28\) and labels \(4,\) do not match"):
        load_fashion_mnist(str(tmp_path))


@pytest.mark.parametrize("damage, match", [
    ("cut", "obs.csv.gz in the installed package is corrupt or truncated"),
    ("ragged", "obs.csv.gz: line 4 has a different number of fields than the header"),
])
def test_shipped_tabular_file_cut_or_damaged(damage, match, tmp_path, monkeypatch):
    real = tabular.resources.files("imdad_jax.data").joinpath("files", "obs.csv.gz").read_bytes()
    if damage == "cut":
        raw = real[:len(real) // 2]
    else:  # a table cut inside its fourth line, then compressed whole: gzip is fine, the CSV is not
        lines = gzip.decompress(real).decode().splitlines()
        raw = gzip.compress("\n".join([*lines[:3], lines[3][:10]]).encode())
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "obs.csv.gz").write_bytes(raw)
    monkeypatch.setattr(tabular, "resources", type("R", (), {"files": staticmethod(lambda pkg: tmp_path)}))
    with pytest.raises(DataFileError, match=match):
        load_tabular("on")


def test_protocol_refuses_a_single_class():
    x = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="y has a single class; the protocol needs other classes as anomalies"):
        cv_runs(x, np.zeros(20, int), [0], seeds=[0])


def test_idx_header_with_an_empty_axis_beside_huge_ones_is_a_data_file_error(tmp_path):
    # found by test_idx_damaged_bytes_give_a_data_file_error_or_a_consistent_array: the header sizes to 0 bytes,
    # which the file holds, but numpy refuses the shape (it used to raise a bare ValueError from reshape)
    import struct

    from imdad_jax.data.idx import DataFileError, read_idx
    path = tmp_path / "damaged-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 3506438144, 2634022912, 0))
    with pytest.raises(DataFileError, match="no array can have"):
        read_idx(path)
