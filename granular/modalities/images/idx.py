"""Reader and writer for the IDX format of (Fashion-)MNIST, gzipped or not.

Layout: two zero bytes, a type code, the number of dimensions, one big-endian uint32 per
dimension, then the values in row-major order.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# type code -> big-endian dtype
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}


class IdxError(ValueError):
    """The file is not a well-formed IDX file; the message names the file and the fault."""


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError) as error:  # gzip raises these on a truncated or foreign file
        raise IdxError(f"{path}: cannot be read as {'gzip' if opener is gzip.open else 'a file'}: {error}") from None


# What an IDX file holds by its number of dimensions, to name a file found where another belongs.
_HOLDS = {1: "labels (N,)", 3: "images (N, H, W)"}


def read_idx(path: Path, dimensions: int | None = None) -> np.ndarray:
    """Return the array stored in an IDX file, checking magic number, dimensions (`dimensions`
    where given, from the header, before any length is checked) and length."""
    path = Path(path)
    blob = _read_bytes(path)
    if len(blob) < 4:
        raise IdxError(f"{path}: {len(blob)} bytes is too short for an IDX header")
    zero, code, ndim = struct.unpack(">HBB", blob[:4])
    if zero != 0 or code not in _DTYPES:
        raise IdxError(f"{path}: bad magic number 0x{blob[:4].hex()} (not an IDX file)")
    if ndim == 0:
        raise IdxError(f"{path}: IDX header declares zero dimensions")
    if dimensions is not None and ndim != dimensions:
        raise IdxError(
            f"{path}: its header (magic 0x{blob[:4].hex()}) declares {ndim} dimension(s), the shape of "
            f"{_HOLDS.get(ndim, 'neither images nor labels')}, where {_HOLDS[dimensions]} belong: "
            "is it the other file of the pair?"
        )
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise IdxError(f"{path}: truncated header ({len(blob)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", blob[4:header])
    dtype = _DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(blob) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise IdxError(
            f"{path}: {what}: shape {shape} of {dtype.name} needs {expected} data bytes, found {found}"
        )
    return np.frombuffer(blob, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write `array` as IDX (gzipped when the name ends in .gz); used for tests and exports."""
    array = np.ascontiguousarray(array)
    code = _CODES.get(array.dtype)
    if code is None:
        raise IdxError(f"{path}: dtype {array.dtype} has no IDX type code")
    payload = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(_DTYPES[code]).tobytes()
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as handle:
        handle.write(payload)


def read_images_and_labels(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair of IDX files: images (N, H, W) and labels (N,), with matching counts."""
    images = read_idx(images_path, dimensions=3)
    labels = read_idx(labels_path, dimensions=1)
    if len(images) != len(labels):
        raise IdxError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    return images, labels
