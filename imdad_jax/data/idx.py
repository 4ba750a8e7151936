"""Read and write the IDX format (LeCun's MNIST files, Fashion-MNIST), gzipped or not."""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


class DataFileError(ValueError):
    """A data file exists but cannot be read as what it claims to be."""


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file. Raises ``DataFileError`` for a bad magic number or a cut file."""
    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    # gzip raises OSError / EOFError for a cut or non-gzip file, zlib.error for damage inside the compressed data
    except (OSError, EOFError, zlib.error) as e:
        raise DataFileError(f"{path}: cannot read ({e}); the file is corrupt or truncated, fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataFileError(f"{path}: not an IDX file (bad magic number); expected e.g. train-images-idx3-ubyte.gz")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated IDX header; fetch the file again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    need = math.prod(shape) * dtype.itemsize  # exact: np.prod wraps around for a damaged header's huge sizes
    if len(raw) - header != need:
        raise DataFileError(f"{path}: IDX header says shape {shape} ({need} bytes of data) but the file holds "
                            f"{len(raw) - header}; the file is truncated or corrupt, fetch it again")
    try:
        data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    except ValueError:  # an empty axis beside axes too large for numpy (a damaged header that sizes to 0 bytes)
        raise DataFileError(f"{path}: IDX header says shape {shape}, which no array can have; the file is corrupt, "
                            "fetch it again") from None
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` (uint8 or int8) as an IDX file, gzipped when ``path`` ends in ``.gz``."""
    path = Path(path)
    array = np.asarray(array)  # not ascontiguousarray, which turns a 0-d array into shape (1,); tobytes is C order
    code = _CODES.get(array.dtype)
    if code is None:
        raise ValueError(f"write_idx supports uint8 and int8 arrays, got {array.dtype}")
    data = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(data)
