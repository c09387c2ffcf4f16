"""A generated colour image set whose fine classes differ by colour alone.

Each picture is a bar, lying or standing (the coarse class), painted in one of three colours of
the same luminance (the fine class: `lying-red`, `standing-green`, ...) over a dark background
with noise. Every picture's brightness is scaled at random (60-100%), alike in every class, so the
luminance of a picture says nothing of its colour: a view that sees colour tells all six fine
classes apart, a view of the luminance alone (`color: grey`) only the bar's direction, a third
of the fine classes within it at best.

Written as the folder layout a run reads (train/ and test/, a folder per fine class, PNG or JPEG
files) with its taxonomy.yaml:

    python -m granular.demo.colours --out data/colours [--per-class 300] [--size 32] [--format png|jpg]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from granular.store.atomic import atomic_dir

# BT.601 luminance of each: 0.299 R + 0.587 G + 0.114 B ~ 120.
COLOURS = {"red": (255, 75, 0), "green": (0, 190, 75), "violet": (150, 80, 255)}
SHAPES = ("lying", "standing")
BACKGROUND = 40
NOISE = 8.0  # standard deviation of each pixel's noise, per channel


def fine_classes() -> list[tuple[str, str]]:
    """(fine class, its coarse class), coarse by coarse."""
    return [(f"{shape}-{colour}", shape) for shape in SHAPES for colour in COLOURS]


def taxonomy_text() -> str:
    rows = "".join(f"  - {{fine: {fine}, coarse: {coarse}}}\n" for fine, coarse in fine_classes())
    return f"levels: [fine, coarse]\nclasses:\n{rows}"


def picture(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One (size, size, 3) uint8 picture of fine class `label`."""
    shape, colour = divmod(label, len(COLOURS))
    image = np.full((size, size, 3), BACKGROUND, dtype=np.float64)
    long, thick = rng.integers(size // 2, size - 2), rng.integers(max(2, size // 8), max(3, size // 4))
    along = slice(start := rng.integers(0, size - long + 1), start + long)
    across = slice(start := rng.integers(0, size - thick + 1), start + thick)
    rows, cols = (across, along) if SHAPES[shape] == "lying" else (along, across)
    image[rows, cols] = np.asarray(list(COLOURS.values())[colour]) * rng.uniform(0.6, 1.0)
    image += rng.normal(0.0, NOISE, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _write_class(out: Path, label: int, per_class: int, size: int, seed: int, test_count: int, suffix: str) -> None:
    from PIL import Image

    rng = np.random.default_rng([seed, label])  # a class's pictures are the same whoever writes them
    fine = fine_classes()[label][0]
    for split in ("train", "test"):
        (out / split / fine).mkdir(parents=True, exist_ok=True)
    for number in range(per_class):
        split = "test" if number < test_count else "train"
        Image.fromarray(picture(label, size, rng)).save(out / split / fine / f"{number:06d}{suffix}")


def generate(
    out: Path, per_class: int = 300, size: int = 32, seed: int = 0, test_share: float = 0.25, suffix: str = ".png",
    workers: int = 1,
) -> Path:
    """Write the set under `out` (replaced as a whole): `per_class` pictures of each fine class
    (PNG, or JPEG with suffix .jpg), `test_share` of them under test/, and taxonomy.yaml; the
    classes written by `workers` processes."""
    from concurrent.futures import ProcessPoolExecutor

    test_count = round(per_class * test_share)
    with atomic_dir(Path(out)) as staging:
        jobs = [(staging, label, per_class, size, seed, test_count, suffix) for label in range(len(fine_classes()))]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(_write_class, *zip(*jobs)))
        else:
            for job in jobs:
                _write_class(*job)
        (staging / "taxonomy.yaml").write_text(taxonomy_text())
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m granular.demo.colours", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (replaced)")
    parser.add_argument("--per-class", type=int, default=300, help="pictures per fine class (default 300)")
    parser.add_argument("--size", type=int, default=32, help="pixels a side (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing (default: every core)")
    args = parser.parse_args(argv)
    out = generate(args.out, args.per_class, args.size, args.seed, suffix=f".{args.format}", workers=args.workers)
    print(f"{len(fine_classes()) * args.per_class} pictures of {len(fine_classes())} classes written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
