"""Synthetic classification tables with a known label hierarchy and segment effects.

A table to try the pipeline on at any size (10 thousand to 10 million rows and more), written
in chunks so that memory stays flat. Its label process is known, so every granularity has
something to find:

- the coarse label depends on x0, x1 (its class is the direction of the point (x0, x1)) and a
  little on `region`: a view on those features alone predicts the coarse label well and the
  fine label only as well as its coarse class allows;
- the fine label within its coarse class depends on x2..x{k-1} and `channel`, and on x3
  through a weight whose SIGN flips with the region (positive in even regions, negative in odd
  ones): pooled over regions the x3 effect cancels, within one region it is plain, so one
  model per region helps a model that cannot learn the interaction;
- labels are drawn from their probabilities (not argmaxed) and a share `label_noise` of them
  is replaced by a uniformly drawn fine class, so no model is perfect; the description gives
  the Bayes accuracy, the best any model can reach (knowing even the values hidden as missing);
- a share of x{k-1} is missing (null), at random.

The coarse column is always the parent of the fine column, noise included. The same seed and
row count give the same table whatever `chunk_rows` is: rows are drawn in fixed blocks, each
from its own seeded generator.

    python -m granular.demo.synthetic --rows 1000000 --out data/synthetic.parquet [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from granular.store.atomic import atomic_path

BLOCK_ROWS = 1 << 16  # rows drawn from one generator; a chunk written is a whole number of blocks
FORMATS = ("parquet", "csv")
CHANNELS = ("web", "store", "phone")
CHANNEL_SHARES = (0.5, 0.3, 0.2)
COARSE_SCALE = 4.0  # weight of the (x0, x1) direction in the coarse logits
FINE_SCALE = 1.0  # weight of the other features in the fine logits
MISSING_SHARE = 0.05  # of the last numeric column
FLIPPED = 3  # index of the feature whose weight flips sign with the region


@dataclass(frozen=True)
class LabelProcess:
    """The parameters of the label process, drawn once from the seed."""

    coarse_directions: np.ndarray  # (coarse, 2): unit vector in (x0, x1) of each coarse class
    region_bias: np.ndarray  # (segments, coarse): coarse logit offsets per region
    region_shares: np.ndarray  # (segments,): how often each region occurs
    fine_weights: np.ndarray  # (numeric, fine): weights of x on the fine logits (0 on x0, x1, x3)
    flip_weights: np.ndarray  # (fine,): x3's weight on each fine logit in an even region
    channel_bias: np.ndarray  # (channels, fine): fine logit offsets per channel
    parent: np.ndarray  # (fine,): coarse class of each fine class
    label_noise: float


def _label_process(
    seed: int, segments: int, coarse: int, fine_per_coarse: int, numeric: int, segment_effect: float, label_noise: float
) -> LabelProcess:
    rng = np.random.default_rng([seed, 0])
    fine = coarse * fine_per_coarse
    angles = 2 * np.pi * np.arange(coarse) / coarse
    fine_weights = FINE_SCALE * rng.normal(size=(numeric, fine))
    fine_weights[[0, 1, FLIPPED]] = 0.0  # x0, x1 drive the coarse label; x3 drives through the flip
    # Within each coarse class the fine classes are ordered along x3: the first gains from a
    # large x3 in an even region, the last from a small one (and the other way in odd regions).
    ordering = np.linspace(1.0, -1.0, fine_per_coarse) if fine_per_coarse > 1 else np.zeros(1)
    return LabelProcess(
        coarse_directions=np.stack([np.cos(angles), np.sin(angles)], axis=1),
        region_bias=0.5 * rng.normal(size=(segments, coarse)),
        region_shares=(segments + np.arange(segments)) / (segments + np.arange(segments)).sum(),
        fine_weights=fine_weights,
        flip_weights=2.0 * segment_effect * np.tile(ordering, coarse),
        channel_bias=0.5 * rng.normal(size=(len(CHANNELS), fine)),
        parent=np.repeat(np.arange(coarse), fine_per_coarse),
        label_noise=label_noise,
    )


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _draw(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One class per row from its probabilities (inverse CDF)."""
    cumulative = np.cumsum(probabilities, axis=1)
    uniform = rng.random((len(probabilities), 1)) * cumulative[:, -1:]
    return np.minimum((uniform > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def _true_probabilities(process: LabelProcess, x: np.ndarray, region: np.ndarray, channel: np.ndarray):
    """(rows, coarse) and (rows, fine) probabilities of the noise-free label process."""
    coarse_logits = COARSE_SCALE * x[:, :2] @ process.coarse_directions.T + process.region_bias[region]
    sign = np.where(region % 2 == 0, 1.0, -1.0)[:, None]  # the segment effect: x3's direction flips
    fine_logits = x @ process.fine_weights + sign * x[:, FLIPPED : FLIPPED + 1] * process.flip_weights
    fine_logits += process.channel_bias[channel]
    coarse_probabilities = _softmax(coarse_logits)
    # p(fine) = p(its coarse class) * p(fine | coarse): a softmax over the siblings only.
    within = np.exp(fine_logits - fine_logits.max(axis=1, keepdims=True))
    sibling_sums = within @ (process.parent[:, None] == np.arange(coarse_logits.shape[1]))  # (rows, coarse)
    fine_probabilities = coarse_probabilities[:, process.parent] * within / sibling_sums[:, process.parent]
    return coarse_probabilities, fine_probabilities


@dataclass
class Block:
    x: np.ndarray  # (rows, numeric) float32, missing values as NaN
    region: np.ndarray
    channel: np.ndarray
    coarse: np.ndarray
    fine: np.ndarray
    bayes_hits: dict[str, float]  # level -> sum over rows of the best class's probability


def _draw_block(process: LabelProcess, rows: int, numeric: int, seed: int, index: int) -> Block:
    rng = np.random.default_rng([seed, 1, index])
    x = rng.standard_normal((rows, numeric), dtype=np.float32)
    region = rng.choice(len(process.region_shares), size=rows, p=process.region_shares)
    channel = rng.choice(len(CHANNELS), size=rows, p=CHANNEL_SHARES)
    coarse_p, fine_p = _true_probabilities(process, x.astype(np.float64), region, channel)
    fine = _draw(fine_p, rng)
    noisy = rng.random(rows) < process.label_noise
    fine[noisy] = rng.integers(0, fine_p.shape[1], size=int(noisy.sum()))
    # The best any model can do: the most probable class once the noise is mixed in.
    eps, num_fine = process.label_noise, fine_p.shape[1]
    fine_share = 1 / num_fine
    coarse_share = fine_share * np.bincount(process.parent)
    bayes_hits = {
        "fine": float(((1 - eps) * fine_p + eps * fine_share).max(axis=1).sum()),
        "coarse": float(((1 - eps) * coarse_p + eps * coarse_share).max(axis=1).sum()),
    }
    x[rng.random(rows) < MISSING_SHARE, numeric - 1] = np.nan
    return Block(x, region, channel, process.parent[fine], fine, bayes_hits)


def _names(segments: int, coarse: int, fine_per_coarse: int, numeric: int) -> dict[str, list[str]]:
    return {
        "numeric": [f"x{j}" for j in range(numeric)],
        "region": [f"region_{r}" for r in range(segments)],
        "coarse": [f"coarse_{c}" for c in range(coarse)],
        "fine": [f"fine_{c}_{f}" for c in range(coarse) for f in range(fine_per_coarse)],
    }


def _schema(numeric_names: list[str]) -> pa.Schema:
    fields = [pa.field("id", pa.int64(), nullable=False)]
    fields += [pa.field(name, pa.float32()) for name in numeric_names]
    fields += [pa.field(name, pa.string(), nullable=False) for name in ("region", "channel", "coarse", "fine")]
    return pa.schema(fields)


def _to_arrow(blocks: list[Block], first_id: int, names: dict[str, list[str]], schema: pa.Schema) -> pa.Table:
    def strings(values: list[str], codes: np.ndarray) -> pa.Array:
        return pa.array(values, pa.string()).take(pa.array(codes))

    x = np.concatenate([block.x for block in blocks])
    columns = [pa.array(np.arange(first_id, first_id + len(x), dtype=np.int64))]
    columns += [pa.array(x[:, j], pa.float32(), mask=np.isnan(x[:, j])) for j in range(x.shape[1])]
    columns += [
        strings(names["region"], np.concatenate([b.region for b in blocks])),
        strings(list(CHANNELS), np.concatenate([b.channel for b in blocks])),
        strings(names["coarse"], np.concatenate([b.coarse for b in blocks])),
        strings(names["fine"], np.concatenate([b.fine for b in blocks])),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class _Writer:
    """Parquet (one row group per chunk) or CSV, appended chunk by chunk."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str):
        self._writer = pq.ParquetWriter(path, schema) if fmt == "parquet" else pa_csv.CSVWriter(path, schema)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()


def _format_of(path: Path, fmt: str | None) -> str:
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "parquet")
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    return fmt


def _check_sizes(rows: int, segments: int, coarse: int, fine_per_coarse: int, numeric: int, chunk_rows: int) -> None:
    problems = [
        f"{name} must be at least {least}, got {value}"
        for name, value, least in (
            ("rows", rows, 1), ("segments", segments, 1), ("coarse", coarse, 2),
            ("fine_per_coarse", fine_per_coarse, 1), ("numeric", numeric, 5), ("chunk_rows", chunk_rows, 1),
        )
        if value < least
    ]
    if problems:  # numeric >= 5: x0, x1 for the coarse label, x3 flips, the last has gaps
        raise ValueError("; ".join(problems))


def generate(
    rows: int,
    path: Path | str,
    seed: int = 0,
    segments: int = 4,
    fine_per_coarse: int = 3,
    coarse: int = 4,
    numeric: int = 8,
    segment_effect: float = 1.0,
    chunk_rows: int = 1_000_000,
    fmt: str | None = None,
    label_noise: float = 0.05,
) -> dict:
    """Write a synthetic table of `rows` rows to `path` (atomically) and describe it.

    `fmt` is parquet or csv; None takes it from the suffix (.csv, else parquet). Columns: id,
    x0..x{numeric-1} (float32; x{numeric-1} has nulls), region (the segment column, `segments`
    values), channel, coarse (`coarse` classes) and fine (`fine_per_coarse` per coarse class).
    `segment_effect` scales the region-flipped weight of x3 (0: no segment effect).
    """
    path = Path(path)
    fmt = _format_of(path, fmt)
    _check_sizes(rows, segments, coarse, fine_per_coarse, numeric, chunk_rows)
    if not 0 <= label_noise <= 1:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    process = _label_process(seed, segments, coarse, fine_per_coarse, numeric, segment_effect, label_noise)
    names = _names(segments, coarse, fine_per_coarse, numeric)
    schema = _schema(names["numeric"])
    blocks_per_chunk = max(1, -(-chunk_rows // BLOCK_ROWS))
    bayes_hits = {"fine": 0.0, "coarse": 0.0}
    started = time.perf_counter()
    with atomic_path(path) as tmp:
        writer = _Writer(tmp, schema, fmt)
        try:
            for first in range(0, rows, blocks_per_chunk * BLOCK_ROWS):
                blocks = []
                for start in range(first, min(rows, first + blocks_per_chunk * BLOCK_ROWS), BLOCK_ROWS):
                    block = _draw_block(process, min(BLOCK_ROWS, rows - start), numeric, seed, start // BLOCK_ROWS)
                    blocks.append(block)
                    for level in bayes_hits:
                        bayes_hits[level] += block.bayes_hits[level]
                writer.write(_to_arrow(blocks, first, names, schema))
        finally:
            writer.close()
    return {
        "path": str(path),
        "format": fmt,
        "rows": rows,
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 3),
        "columns": schema.names,
        "id": "id",
        "numeric": names["numeric"],
        "categorical": ["region", "channel"],
        "target": "fine",
        "ancestors": {"coarse": "coarse"},
        "classes": {"fine": names["fine"], "coarse": names["coarse"]},
        "hierarchy": {name: names["coarse"][process.parent[i]] for i, name in enumerate(names["fine"])},
        "coarse_features": ["x0", "x1", "region"],
        "segment_column": "region",
        "flipped_feature": f"x{FLIPPED}",
        "missing_column": names["numeric"][-1],
        "label_noise": label_noise,
        "bayes_accuracy": {level: round(hits / rows, 4) for level, hits in bayes_hits.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m granular.demo.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="file to write (.parquet or .csv)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--segments", type=int, default=4, help="values of the region column")
    parser.add_argument("--coarse", type=int, default=4, help="coarse classes")
    parser.add_argument("--fine-per-coarse", type=int, default=3)
    parser.add_argument("--numeric", type=int, default=8, help="numeric features (at least 5)")
    parser.add_argument("--segment-effect", type=float, default=1.0, help="strength of the region-flipped x3 effect")
    parser.add_argument("--label-noise", type=float, default=0.05, help="share of labels replaced at random")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows written at a time")
    parser.add_argument("--format", choices=FORMATS, default=None, help="default: from the suffix of --out")
    args = parser.parse_args(argv)
    try:
        description = generate(
            args.rows, args.out, seed=args.seed, segments=args.segments, fine_per_coarse=args.fine_per_coarse,
            coarse=args.coarse, numeric=args.numeric, segment_effect=args.segment_effect,
            chunk_rows=args.chunk_rows, fmt=args.format, label_noise=args.label_noise,
        )
    except ValueError as error:
        print(f"granular.demo.synthetic: {error}", file=sys.stderr)
        return 2
    print(json.dumps(description, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
