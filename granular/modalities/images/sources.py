"""Raw datasets: import them untouched into data/raw/, then read them as arrays.

Three layouts are understood:
- idx: a folder with train-/t10k- images and labels in IDX files, gzipped or not (MNIST style);
- npz: one .npz file holding x_train, y_train, x_test, y_test (x: (N, H, W) grey images, or
  (N, H, W, 3) with data.source.color rgb);
- folder: <path>/train/<class name>/*.png and <path>/test/<class name>/*.png (JPEG, BMP and GIF
  too), pictures of any size brought to one size and colour (granular/modalities/images/fit.py);
  a file that is not a picture to train on is kept as an example with its problem, which
  cleaning sets aside.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from granular.config import path_safe
from granular.core.partition import ORIGINS
from granular.modalities.images.fit import ImageFit, decode
from granular.modalities.images.idx import read_images_and_labels
from granular.store.atomic import atomic_dir
from granular.store.image_file import CHUNK_BYTES, ImageFile, ImageWriter

_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


class SourceError(ValueError):
    """The raw data is missing or not in the declared layout."""


@dataclass(frozen=True)
class RawDataset:
    # (N, H, W) grey or (N, H, W, 3) rgb, any numeric dtype, in memory or on disk (ImageFile: a
    # set larger than memory); cleaning decides what is valid.
    images: np.ndarray | ImageFile
    labels: np.ndarray  # (N,) int64
    origin: np.ndarray  # (N,) int8: core.partition.TRAIN or TEST
    index: np.ndarray  # (N,) int64: position within its official split, a stable example id
    # A folder's: each example's file, under the raw folder (train/Bag/0.png), and why it is not
    # an image to train on ("" when it is); None for the array layouts.
    files: np.ndarray | None = None
    problems: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def _idx_file(folder: Path, origin: str, kind: str) -> Path:
    stem = f"{_IDX_PREFIX[origin]}-{kind}"
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise SourceError(f"{folder}: no {stem}[.gz] file (expected MNIST-style IDX files)")


def _source_files(fmt: str, path: Path) -> list[Path]:
    if fmt == "idx":
        return [
            _idx_file(path, origin, kind)
            for origin in ORIGINS
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
        ]
    if fmt == "npz":
        if not path.is_file():
            raise SourceError(f"{path}: no such .npz file")
        return [path]
    for origin in ORIGINS:
        if not (path / origin).is_dir():
            raise SourceError(f"{path}: no {origin}/ folder of class folders")
    return [path / origin for origin in ORIGINS]


def import_raw(fmt: str, source: Path, raw_dir: Path) -> list[Path]:
    """Copy the source files, byte for byte, into raw_dir (replacing it as a whole)."""
    source = Path(source)
    if not source.exists():
        hint = ""
        if fmt == "idx" and str(source).startswith("/usr/share/datasets/fashion-mnist"):
            hint = (
                " Install the Debian package with `sudo apt-get install dataset-fashion-mnist`,"
                " or set data.source.path in params.yaml to your own data."
            )
        raise SourceError(f"raw data not found at {source}.{hint}")
    files = _source_files(fmt, source)
    with atomic_dir(raw_dir) as staging:
        for item in files:
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            else:
                shutil.copy2(item, staging / item.name)
    return sorted(p for p in Path(raw_dir).rglob("*") if p.is_file())


def _stack(parts: list[tuple[np.ndarray, np.ndarray]], where: Path) -> RawDataset:
    sizes = {origin: x.shape[1:] for origin, (x, _) in zip(ORIGINS, parts)}
    if len(set(sizes.values())) > 1:
        raise SourceError(f"{where}: the official splits' images differ in size: " + ", ".join(
            f"{origin} {'x'.join(map(str, size))}" for origin, size in sizes.items()
        ))
    images = np.concatenate([x for x, _ in parts])
    labels = np.concatenate([np.asarray(y).astype(np.int64).reshape(-1) for _, y in parts])
    origin = np.concatenate([np.full(len(y), o, dtype=np.int8) for o, (_, y) in enumerate(parts)])
    index = np.concatenate([np.arange(len(y), dtype=np.int64) for _, y in parts])
    return RawDataset(images=images, labels=labels, origin=origin, index=index)


def _load_npz(path: Path, color: str) -> list[tuple[np.ndarray, np.ndarray]]:
    with np.load(path, allow_pickle=False) as archive:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(archive.files)
        if missing:
            raise SourceError(f"{path}: missing arrays {sorted(missing)}")
        parts = [(archive[f"x_{o}"], archive[f"y_{o}"]) for o in ORIGINS]
    shape = "(N, H, W)" if color == "grey" else "(N, H, W, 3)"
    for origin, (x, y) in zip(ORIGINS, parts):
        fits = x.ndim == 3 if color == "grey" else x.ndim == 4 and x.shape[3] == 3
        if not fits or len(x) != len(y):
            raise SourceError(
                f"{path}: x_{origin} must be {shape} (data.source.color {color}) with one y_{origin} label "
                f"per image; found shapes {x.shape} and {y.shape}"
            )
    return parts


def _listing(path: Path, class_names: list[str]) -> tuple[list[Path], list[int], list[int], list[int]]:
    """Every picture file of each split's class folders: (files, labels, origins, index in its split)."""
    # A folder is named after its class, or as a path can hold the name (T-shirt/top: T-shirt_top).
    label_of = {path_safe(name): i for i, name in enumerate(class_names)} | {name: i for i, name in enumerate(class_names)}
    files, labels, origins, index = [], [], [], []
    for number, origin in enumerate(ORIGINS):
        count = 0
        for class_dir in sorted(p for p in (path / origin).iterdir() if p.is_dir()):
            if class_dir.name not in label_of:
                raise SourceError(
                    f"{class_dir}: folder name is not a class of the taxonomy ({', '.join(class_names)})"
                )
            for file in sorted(class_dir.iterdir()):
                if file.suffix.lower() in _IMAGE_SUFFIXES:
                    files.append(file)
                    labels.append(label_of[class_dir.name])
                    origins.append(number)
                    index.append(count)
                    count += 1
        if not count:
            raise SourceError(f"{path / origin}: no images found")
    return files, labels, origins, index


def _load_folder(path: Path, class_names: list[str], fit: ImageFit, scratch: Path | None) -> RawDataset:
    """Every picture of each split's class folders, brought to `fit`; a file that is not a
    picture to train on stays an example, with its problem. With a `scratch` folder the pictures
    go to a file there a block at a time (an ImageFile), else into memory."""
    files, labels, origins, index = _listing(path, class_names)
    shape = (len(files), *fit.pixels)
    if scratch is None:
        images, writer = np.empty(shape, dtype=np.uint8), None
    else:
        writer = ImageWriter(Path(scratch) / "decoded.npy", shape)
    problems = []
    block = max(1, CHUNK_BYTES // int(np.prod(fit.pixels)))
    # Pillow decodes without the GIL: two threads decode about twice as fast on two cores.
    with writer or nullcontext(), ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(files), block):
            decoded = list(pool.map(partial(decode, fit=fit), files[start : start + block]))
            pixels = np.stack([d.image for d in decoded])
            if writer is None:
                images[start : start + len(decoded)] = pixels
            else:
                writer.write(pixels)
            problems += [d.problem for d in decoded]
        if writer is not None:
            images = writer.close()
    return RawDataset(
        images=images, labels=np.asarray(labels, dtype=np.int64), origin=np.asarray(origins, dtype=np.int8),
        index=np.asarray(index, dtype=np.int64), files=np.asarray([f.relative_to(path).as_posix() for f in files]),
        problems=np.asarray(problems),
    )


def load_raw(fmt: str, raw_dir: Path, class_names: list[str], fit: ImageFit, scratch: Path | None = None) -> RawDataset:
    """Read what import_raw copied into raw_dir; a folder's pictures brought to `fit` (the array
    layouts hold images of one size already, in `fit.color`), into a file in `scratch` where
    given (a set larger than memory), else into memory."""
    raw_dir = Path(raw_dir)
    if fmt == "idx":
        parts = [
            read_images_and_labels(
                _idx_file(raw_dir, origin, "images-idx3-ubyte"),
                _idx_file(raw_dir, origin, "labels-idx1-ubyte"),
            )
            for origin in ORIGINS
        ]
    elif fmt == "npz":
        files = sorted(raw_dir.glob("*.npz"))
        if len(files) != 1:
            raise SourceError(f"{raw_dir}: expected exactly one .npz file, found {len(files)}")
        parts = _load_npz(files[0], fit.color)
    else:
        return _load_folder(raw_dir, class_names, fit, scratch)
    return _stack(parts, raw_dir)
