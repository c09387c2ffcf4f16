"""Fashion-MNIST as a user's first folder of photographs: every image a JPEG or PNG file of a
random size between 20 and 80 pixels a side, tinted a random colour, and one file in a hundred
broken (cut short, or bytes that are no picture), in the folder layout the pipeline reads:
<out>/train/<class>/NNNNN.jpg and <out>/test/<class>/NNNNN.png, each class's folder named as a
path can hold its name (T-shirt/top: T-shirt_top). The same seed writes the same files.

    .venv/bin/python scripts/messy_photos.py --out data/photos
    .venv/bin/python scripts/messy_photos.py --out data/photos --limit 2000 --seed 1   # 2,000 a split
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np

from granular.config import path_safe
from granular.core.partition import ORIGINS
from granular.core.taxonomy import load_taxonomy
from granular.modalities.images.fit import ImageFit
from granular.modalities.images.sources import load_raw
from granular.store.atomic import atomic_dir

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SIDES = (20, 80)  # pixels: each side of a picture is drawn between these
BROKEN_SHARE = 0.01


def tinted(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W) grey -> (H, W, 3) colour: the grey levels scaled by a random colour, each channel
    between 40% and 100% of the grey."""
    colour = rng.uniform(0.4, 1.0, size=3)
    return np.round(image[:, :, None] * colour).astype(np.uint8)


def picture_bytes(image: np.ndarray, rng: np.random.Generator, suffix: str) -> bytes:
    """The tinted image at a random size, encoded as the suffix says; one in a hundred broken."""
    from PIL import Image

    height, width = rng.integers(SIDES[0], SIDES[1] + 1, size=2)
    picture = Image.fromarray(tinted(image, rng), mode="RGB").resize((int(width), int(height)), Image.Resampling.BILINEAR)
    encoded = io.BytesIO()
    picture.save(encoded, format="JPEG" if suffix == ".jpg" else "PNG")
    data = encoded.getvalue()
    if rng.random() < BROKEN_SHARE:
        return data[: len(data) // 3] if rng.random() < 0.5 else b"this file is no picture"
    return data


def export(source: Path, taxonomy_file: Path, out: Path, limit: int | None, seed: int) -> dict[str, int]:
    """Write the folder; return how many files each split has, and how many are broken."""
    taxonomy = load_taxonomy(taxonomy_file)
    names = [path_safe(name) for name in taxonomy.fine_names]
    data = load_raw("idx", source, list(taxonomy.fine_names), ImageFit((28, 28)))  # IDX: one size already
    rng = np.random.default_rng(seed)
    counts = {}
    with atomic_dir(out) as staging:
        for number, origin in enumerate(ORIGINS):
            rows = np.flatnonzero(data.origin == number)[:limit]
            for row in rows:
                suffix = ".jpg" if rng.random() < 0.5 else ".png"
                folder = staging / origin / names[data.labels[row]]
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{data.index[row]:05d}{suffix}").write_bytes(picture_bytes(data.images[row], rng, suffix))
            counts[origin] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/messy_photos.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (replaced as a whole)")
    parser.add_argument("--source", type=Path, default=FASHION_MNIST, help="Fashion-MNIST's IDX files")
    parser.add_argument("--taxonomy", type=Path, default=Path("data/taxonomy.yaml"))
    parser.add_argument("--limit", type=int, help="at most this many images of each official split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = export(args.source, args.taxonomy, args.out, args.limit, args.seed)
    print(f"{counts['train']} training and {counts['test']} test pictures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
