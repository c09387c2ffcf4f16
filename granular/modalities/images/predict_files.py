"""Predicting images read from files (`granular predict`): `.npy` arrays, IDX files (gzipped
or not), PNG/JPEG images, or a folder of any of these. Each file gives a block of (N, H, W)
uint8 images, (N, H, W, C) for a colour model, of the size the model takes: a picture of another
size is brought to it as the project's pictures are (clean.fit), in the model's colour; an
array of another size, a picture that cannot be read or is too small, or a pixel outside 0..255
is refused naming the file. The predictions come back as one table, a row per image."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from granular.modalities.images.fit import ImageFit, decode
from granular.modalities.images.idx import IdxError, read_idx

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIX = ".npy"


class InputFileError(ValueError):
    """An input file cannot be read as images for the model; the message names the file."""


@dataclass(frozen=True)
class ImageBlock:
    source: Path  # the file the images came from
    images: np.ndarray  # (N, H, W) or (N, H, W, C) uint8


def _is_idx(path: Path) -> bool:
    return "idx" in path.name  # e.g. t10k-images-idx3-ubyte[.gz]


def input_files(path: Path) -> list[Path]:
    """The file itself, or the readable files of a folder (not its subfolders), by name."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.iterdir()
        if p.is_file() and (p.suffix.lower() in PICTURE_SUFFIXES + (ARRAY_SUFFIX,) or _is_idx(p))
    )
    if not files:
        raise InputFileError(f"{path}: no .npy, IDX, PNG or JPEG files in this folder")
    return files


def _read_picture(path: Path, fit: ImageFit) -> np.ndarray:
    decoded = decode(path, fit)
    if decoded.problem:
        raise InputFileError(f"{path}: {decoded.problem}")
    return decoded.image[None]  # one image


def _read_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InputFileError(f"{path}: cannot be read as a .npy array: {error}") from None


def _as_images(path: Path, array: np.ndarray, pixels: tuple[int, ...]) -> np.ndarray:
    """(N, *pixels) or (N, H*W*C) of any numeric type -> (N, *pixels) uint8, refusing what does not fit."""
    size = int(np.prod(pixels))
    if array.ndim == 2 and array.shape[1] == size:
        array = array.reshape(-1, *pixels)
    if array.shape[1:] != tuple(pixels):
        shape = ", ".join(map(str, pixels))
        raise InputFileError(
            f"{path}: images of shape {array.shape[1:]} (array {array.shape}); the model takes "
            f"{'x'.join(map(str, pixels[:2]))} pixels{' in colour' if len(pixels) == 3 else ''}, "
            f"as (N, {shape}) or (N, {size})"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputFileError(f"{path}: pixels of type {array.dtype}; expected numbers in 0..255")
    if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 255):
        raise InputFileError(f"{path}: pixels must be finite and within 0..255, found {array.min()}..{array.max()}")
    return np.rint(array).astype(np.uint8)


def read_image_file(path: Path, fit: ImageFit) -> ImageBlock:
    """One file's images at the model's image shape (`fit.shape`)."""
    path = Path(path)
    if path.suffix.lower() in PICTURE_SUFFIXES:
        array = _read_picture(path, fit)
    elif path.suffix.lower() == ARRAY_SUFFIX:
        array = _read_array(path)
    else:
        try:
            array = read_idx(path)
        except IdxError as error:  # its message names the file and the fault
            raise InputFileError(str(error)) from None
    return ImageBlock(source=path, images=_as_images(path, array, fit.pixels))


def read_images(path: Path, fit: ImageFit) -> list[ImageBlock]:
    """Every image under `path` (a file or a folder), file by file, at `fit.shape`."""
    return [read_image_file(file, fit) for file in input_files(path)]


def predict_blocks(
    blocks: list[ImageBlock], predict: Callable[[np.ndarray], pd.DataFrame], batch_size: int
) -> pd.DataFrame:
    """`predict` over every image, `batch_size` at a time: one row per image, its source file
    and its index in that file first, then the prediction's columns."""
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch_size}")
    tables = []
    for block in blocks:
        for start in range(0, len(block.images), batch_size):
            batch = block.images[start:start + batch_size]
            table = pd.DataFrame(predict(batch)).reset_index(drop=True)
            table.insert(0, "source", str(block.source))
            table.insert(1, "index", np.arange(start, start + len(batch)))
            tables.append(table)
    if not tables:
        raise InputFileError(f"no images in {', '.join(str(b.source) for b in blocks)}")
    return pd.concat(tables, ignore_index=True)
