"""Images on disk, read a batch of rows at a time: a set larger than memory trains without ever
being held whole.

An `ImageFile` is the array of an .npy file, or of an uncompressed .npz member (as write_npz
writes them), read with plain positioned reads: pages read through a memory map would count
towards the process's resident memory until the kernel drops them, reads do not. `ImageWriter`
writes such a file a block of rows at a time.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

CHUNK_BYTES = 64 << 20  # what one block of rows read or written at a time holds, at most


@dataclass(frozen=True)
class ImageFile:
    path: Path
    offset: int  # of the first pixel in the file
    shape: tuple[int, ...]  # (N, H, W) or (N, H, W, C)
    dtype: np.dtype

    @classmethod
    def npy(cls, path: Path) -> "ImageFile":
        with open(path, "rb") as handle:
            shape, dtype = _read_header(handle)
            return cls(Path(path), handle.tell(), shape, dtype)

    @classmethod
    def npz_member(cls, path: Path, name: str) -> "ImageFile":
        """The array `name` of an .npz whose members are stored uncompressed."""
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{name}.npy")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{path}: {name} is compressed; it cannot be read a block at a time")
            with archive.open(info) as member:
                shape, dtype = _read_header(member)
                header = member.tell()
        with open(path, "rb") as handle:  # where the member's data starts: past its local header
            handle.seek(info.header_offset + 26)
            name_length, extra_length = np.frombuffer(handle.read(4), dtype="<u2")
        data_start = info.header_offset + 30 + int(name_length) + int(extra_length)
        return cls(Path(path), data_start + header, shape, dtype)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:])) * self.dtype.itemsize

    def read(self, rows: slice | np.ndarray) -> np.ndarray:
        """The images of `rows` (a slice, or positions in any order), in memory."""
        if isinstance(rows, slice):
            start, stop, step = rows.indices(len(self))
            if step == 1:
                return self._read_run(start, max(stop - start, 0))
            rows = np.arange(start, stop, step)
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64, copy=False)
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        # Runs of consecutive rows are read at once.
        breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
        with open(self.path, "rb") as handle:
            for run in np.split(np.arange(len(ordered)), breaks):
                out[order[run]] = self._read_run(int(ordered[run[0]]), len(run), handle)
        return out

    def __getitem__(self, rows) -> np.ndarray:
        return self.read(rows)

    def _read_run(self, first: int, count: int, handle=None) -> np.ndarray:
        """Rows first..first+count-1, read straight into the array returned."""
        if handle is None:
            with open(self.path, "rb") as handle:
                return self._read_run(first, count, handle)
        out = np.empty((count, *self.shape[1:]), dtype=self.dtype)
        size = os.preadv(handle.fileno(), [memoryview(out).cast("B")], self.offset + first * self.row_bytes)
        if size != out.nbytes:
            raise OSError(f"{self.path}: cut short ({size} of {out.nbytes} bytes at row {first})")
        return out

    def blocks(self, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, images) a block at a time, in order."""
        rows = rows or max(1, CHUNK_BYTES // max(1, self.row_bytes))
        for start in range(0, len(self), rows):
            yield start, self.read(slice(start, start + rows))


def _read_header(handle) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(handle)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in read_header:
        raise ValueError(f".npy format {version[0]}.{version[1]} is not read a block at a time")
    shape, fortran, dtype = read_header[version](handle)
    if fortran:
        raise ValueError("a Fortran-ordered array cannot be read a row at a time")
    return tuple(shape), np.dtype(dtype)


def blocks_of(images: np.ndarray | ImageFile, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, images) a block at a time, of an array in memory or on disk."""
    if isinstance(images, ImageFile):
        yield from images.blocks(rows)
        return
    row_bytes = max(1, images[:1].nbytes)
    rows = rows or max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, len(images), rows):
        yield start, images[start : start + rows]


class ImageWriter:
    """Writes an .npy of `shape` (its row count known ahead) a block of rows at a time."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype=np.uint8):
        self.path, self.shape, self.dtype, self.written = Path(path), tuple(shape), np.dtype(dtype), 0
        self._handle = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(self._handle, header)

    def write(self, block: np.ndarray) -> None:
        if block.shape[1:] != self.shape[1:]:
            raise ValueError(f"{self.path}: a block of images {block.shape[1:]}, the file holds {self.shape[1:]}")
        self._handle.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.written += len(block)

    def close(self) -> ImageFile:
        self._handle.close()
        if self.written != self.shape[0]:
            raise ValueError(f"{self.path}: {self.written} images written of {self.shape[0]}")
        return ImageFile.npy(self.path)

    def __enter__(self) -> "ImageWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self._handle.closed:
            self._handle.close()
