"""The paper's tabular (BC, Card, ON) and synthetic (Two Moons, Spiral) data sets, as float32 tables.

Nothing is downloaded: BC comes from scikit-learn, Card and ON from the CSV files shipped in
``imdad_jax/data/files`` (UCI, CC BY 4.0; see ``files/ATTRIBUTION.md``). No scaling happens here:
the protocol (``imdad_jax.data.folds``) fits a scaler per run on that run's training normals.

Column handling:

- ``"bc"``: scikit-learn's 30 features; 0 = malignant (212), 1 = benign (357).
- ``"card"``: the 21 numeric features LB..Tendency; label = the FHR pattern ``CLASS`` 1-10 mapped to
  0-9 (A, B, C, D, SH, AD, DE, LD, FS, SUSP; ``CARD_CLASS_DESCRIPTIONS``). ``NSP`` is not used.
- ``"on"``: every column but ``Class`` (21 features, in file order). ``Node Status`` becomes the
  ordinal code B=0, NB=1, P NB=2. The 15 empty ``Packet_lost`` cells are filled with
  ``Packet_Transmitted - Packet_Received``; that identity holds exactly on 1045 of the 1060 filled
  rows; the 15 exceptions are 3 records (each present 5 times) whose counts disagree by 1, 2000 and
  62232 (the last has more packets received than transmitted), typos in the source. Label order ``ON_CLASSES``: NB-No Block, NB-Wait, No Block, Block (largest
  first). The file holds many exact duplicate rows (860 of 1075 rows repeat an earlier one); they
  are kept, as published.
"""
from __future__ import annotations

import csv
import gzip
import io
import zlib
from dataclasses import dataclass
from importlib import resources

import numpy as np

from imdad_jax.data.idx import DataFileError

TABULAR_DATASETS = ("bc", "card", "on")
SYNTHETIC_DATASETS = ("moons", "spiral")

CARD_FEATURES = ("LB", "AC", "FM", "UC", "DL", "DS", "DP", "ASTV", "MSTV", "ALTV", "MLTV", "Width", "Min", "Max",
                 "Nmax", "Nzeros", "Mode", "Mean", "Median", "Variance", "Tendency")
CARD_CLASSES = ("A", "B", "C", "D", "SH", "AD", "DE", "LD", "FS", "SUSP")
CARD_CLASS_DESCRIPTIONS = {
    "A": "calm sleep", "B": "REM sleep", "C": "calm vigilance", "D": "active vigilance",
    "SH": "shift pattern (A or SUSP with shifts)", "AD": "accelerative/decelerative pattern (stress situation)",
    "DE": "decelerative pattern (vagal stimulation)", "LD": "largely decelerative pattern",
    "FS": "flat-sinusoidal pattern (pathological state)", "SUSP": "suspect pattern",
}
ON_CLASSES = ("NB-No Block", "NB-Wait", "No Block", "Block")
ON_NODE_STATUS = {"B": 0, "NB": 1, "P NB": 2}

SPIRAL_TURNS = 2.0
# Per data set: neighbouring spiral arms are only 1 / (2 T) = 0.25 apart, so make_moons' 0.1 would make
# them overlap (every method scored 50-68 AUC on that version, results/tabular_all_methods at e06c86c);
# 0.03 keeps two separable arms, as the paper's spiral figure shows.
DEFAULT_NOISE = {"moons": 0.1, "spiral": 0.03}


@dataclass(eq=False)
class TabularDataset:
    """A table of features with integer class labels ``0..len(class_names)-1``."""

    x: np.ndarray  # (n, d) float32
    y: np.ndarray  # (n,) int64
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    source: str


def _read_csv(filename: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a gzipped CSV shipped in ``imdad_jax/data/files``."""
    ref = resources.files("imdad_jax.data").joinpath("files", filename)
    try:
        raw = ref.read_bytes()
    except FileNotFoundError as e:
        raise DataFileError(f"{filename} is missing from the installed package (imdad_jax/data/files); "
                            "reinstall imdad-jax (pip install -e .)") from e
    try:
        rows = list(csv.reader(io.StringIO(gzip.decompress(raw).decode("utf-8"), newline="")))
    # a cut or damaged copy: gzip's own errors, zlib's for damage inside the compressed data, or bad text
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as e:
        raise DataFileError(f"{filename} in the installed package is corrupt or truncated ({type(e).__name__}: {e}); "
                            "reinstall imdad-jax (pip install -e .)") from None
    if not rows:
        raise DataFileError(f"{filename} in the installed package is empty; reinstall imdad-jax (pip install -e .)")
    ragged = [i + 2 for i, r in enumerate(rows[1:]) if len(r) != len(rows[0])]
    if ragged:
        raise DataFileError(f"{filename}: line {ragged[0]} has a different number of fields than the header "
                            f"({len(ragged)} such line(s)); the file is cut or damaged, reinstall imdad-jax")
    return rows[0], rows[1:]


def _column(header: list[str], rows: list[list[str]], name: str, filename: str) -> list[str]:
    if name not in header:
        raise DataFileError(f"{filename}: column {name!r} not found; columns are {header}")
    j = header.index(name)
    return [r[j] for r in rows]


def _labels(values: list[str], order: dict[str, int], filename: str, column: str) -> np.ndarray:
    unknown = sorted(set(values) - set(order))
    if unknown:
        raise DataFileError(f"{filename}: column {column!r} has unexpected values {unknown}; expected {list(order)}")
    return np.array([order[v] for v in values], np.int64)


def _load_bc() -> TabularDataset:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return TabularDataset(d.data.astype(np.float32), d.target.astype(np.int64), tuple(map(str, d.target_names)),
                          tuple(map(str, d.feature_names)),
                          "scikit-learn load_breast_cancer (UCI id 17, Breast Cancer Wisconsin (Diagnostic), CC BY 4.0)")


def _load_card() -> TabularDataset:
    fn = "ctg.csv.gz"
    header, rows = _read_csv(fn)
    x = np.array([[float(v) for v in _column(header, rows, f, fn)] for f in CARD_FEATURES], np.float64).T
    y = _labels(_column(header, rows, "CLASS", fn), {str(i + 1): i for i in range(10)}, fn, "CLASS")
    return TabularDataset(x.astype(np.float32), y, CARD_CLASSES, CARD_FEATURES,
                          "imdad_jax/data/files/ctg.csv.gz (UCI id 193, Cardiotocography, doi:10.24432/C51S4N, "
                          "CC BY 4.0)")


def _load_on() -> TabularDataset:
    fn = "obs.csv.gz"
    header, rows = _read_csv(fn)
    features = [h for h in header if h != "Class"]
    cols = {}
    for f in features:
        vals = _column(header, rows, f, fn)
        if f == "Node Status":
            cols[f] = _labels(vals, ON_NODE_STATUS, fn, f).astype(np.float64)
        else:
            cols[f] = np.array([float(v) if v.strip() else np.nan for v in vals])
    # Packet_lost is the only column with empty cells; the packet counts determine it.
    lost = cols["Packet_lost"]
    missing = np.isnan(lost)
    lost[missing] = (cols["Packet_Transmitted"] - cols["Packet_Received"])[missing]
    x = np.stack([cols[f] for f in features], axis=1)
    if np.isnan(x).any():
        bad = [f for f in features if np.isnan(cols[f]).any()]
        raise DataFileError(f"{fn}: empty cells in columns {bad}; only Packet_lost may be empty")
    y = _labels(_column(header, rows, "Class", fn), {c: i for i, c in enumerate(ON_CLASSES)}, fn, "Class")
    return TabularDataset(x.astype(np.float32), y, ON_CLASSES, tuple(features),
                          "imdad_jax/data/files/obs.csv.gz (UCI id 404, OBS-Network BHP flooding, CC BY 4.0)")


_LOADERS = {"bc": _load_bc, "card": _load_card, "on": _load_on}


def load_tabular(name: str) -> TabularDataset:
    """One of the paper's real tabular data sets, unscaled: ``"bc"``, ``"card"`` or ``"on"``."""
    key = name.strip().lower()
    if key not in _LOADERS:
        hint = "; it is synthetic: use load_synthetic" if key in SYNTHETIC_DATASETS else ""
        raise ValueError(f"unknown tabular data set {name!r}{hint}; known: {', '.join(TABULAR_DATASETS)}")
    return _LOADERS[key]()


def _spiral(n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    # Arm c in {0, 1}: t ~ U(0, 1), angle a = 2 pi T t + c pi, point = t (cos a, sin a) + noise * N(0, I).
    # Radius t in [0, 1] puts it on the scale of make_moons; neighbouring arms are 1 / (2 T) apart.
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array([0, 1], np.int64), [n - n // 2, n // 2])
    t = rng.uniform(0.0, 1.0, n)
    a = 2 * np.pi * SPIRAL_TURNS * t + np.pi * y
    x = t[:, None] * np.stack([np.cos(a), np.sin(a)], axis=1) + noise * rng.standard_normal((n, 2))
    order = rng.permutation(n)  # classes interleaved, like make_moons(shuffle=True)
    return x[order], y[order]


def load_synthetic(name: str, n: int = 1000, seed: int = 0, noise: float | None = None) -> TabularDataset:
    """A seeded 2-D, two-class toy set of ``n`` points (``n // 2`` or ``n - n // 2`` per class).

    ``"moons"``: ``sklearn.datasets.make_moons(n, noise=noise, random_state=seed)``; class 0 is the
    upper moon. ``"spiral"``: two arms, class c at angle ``2 pi T t + c pi`` and radius ``t`` for
    ``t ~ U(0, 1)``, ``T = SPIRAL_TURNS`` turns, plus Gaussian noise of std ``noise``.
    ``noise`` defaults to ``DEFAULT_NOISE[name]`` (0.1 for moons, 0.03 for the spiral).
    """
    key = name.strip().lower()
    if key not in SYNTHETIC_DATASETS:
        hint = "; it is a real data set: use load_tabular" if key in TABULAR_DATASETS else ""
        raise ValueError(f"unknown synthetic data set {name!r}{hint}; known: {', '.join(SYNTHETIC_DATASETS)}")
    if n < 2:
        raise ValueError(f"n must be at least 2 (one point per class), got {n}")
    noise = DEFAULT_NOISE[key] if noise is None else noise
    if noise < 0:
        raise ValueError(f"noise is a standard deviation and must be >= 0, got {noise}")
    if key == "moons":
        from sklearn.datasets import make_moons

        x, y = make_moons(n_samples=n, noise=noise, random_state=seed)
        names, source = ("upper moon", "lower moon"), f"sklearn make_moons(n={n}, noise={noise}, seed={seed})"
    else:
        x, y = _spiral(n, seed, noise)
        names = ("arm 0", "arm 1")
        source = f"two-arm spiral (turns={SPIRAL_TURNS}, n={n}, noise={noise}, seed={seed})"
    return TabularDataset(x.astype(np.float32), y.astype(np.int64), names, ("x1", "x2"), source)
