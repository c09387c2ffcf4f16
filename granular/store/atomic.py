"""Write files so that a reader sees the old content or the new, never half of either."""
from __future__ import annotations

import json
import os
import shutil
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from granular.store.image_file import ImageFile

if TYPE_CHECKING:
    import pandas as pd


def _sibling(target: Path, kind: str) -> Path:
    """An unused hidden name beside `target` (created by the caller, so the umask applies)."""
    return target.with_name(f".{target.name}.{kind}-{uuid.uuid4().hex[:12]}")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success fsync it and rename it over `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _sibling(target, "tmp")
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(target: Path, payload: Any) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_csv(target: Path, frame: pd.DataFrame) -> None:
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)


def write_npz(target: Path, **arrays: np.ndarray | ImageFile) -> None:
    """Like np.savez, but byte-for-byte reproducible: np.savez stamps each member with the
    current time, so equal arrays would get different content hashes (and DVC versions). Members
    are stored uncompressed, so that an array can be read from its place in the file
    (ImageFile.npz_member); an ImageFile is copied in a block of rows at a time."""
    with atomic_path(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with archive.open(member, "w", force_zip64=True) as handle:
                    if isinstance(array, ImageFile):
                        header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                                  "shape": array.shape}
                        np.lib.format.write_array_header_2_0(handle, header)
                        for _, block in array.blocks():
                            handle.write(np.ascontiguousarray(block).tobytes())
                    else:
                        np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def read_npz(source: Path, *names: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz: those of `names`, or all."""
    with np.load(source, allow_pickle=False) as archive:
        return {key: archive[key] for key in names or archive.files}


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh sibling folder; on success it replaces `target` as a whole."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(target, "staging")
    staging.mkdir()
    try:
        yield staging
        old = _sibling(target, "old")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
