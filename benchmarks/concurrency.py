"""Views trained at once or one after the other on this CPU: which is faster in wall time.

    .venv/bin/python benchmarks/concurrency.py                 # fine-28 and fine-14, 6,000 images each
    .venv/bin/python benchmarks/concurrency.py --views fine-28 coarse-28 --images 12000
    .venv/bin/python benchmarks/concurrency.py --record        # and rewrite its section of docs/operations.md

The same views, one epoch each on the same images, trained two ways, the ways taking turns over
--rounds rounds so both meet the same load on a shared machine: one after the other, each with
every core (what `train.threads: null` does); all at once in threads of one process with the
cores shared out between them (what the flow does when train.threads gives each training fewer
threads than the machine has); and all at once, one process each (what a local Dask cluster of
worker processes does, process start included). Prints the median wall time of each way and
its speed-up over the first.
Data is the real Fashion-MNIST, cleaned and split as the pipeline does; nothing is written.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import record  # noqa: E402  (benchmarks/record.py)
from train import load_arrays  # noqa: E402  (benchmarks/train.py)

from granular.config import load_config  # noqa: E402
from granular.nn.device import select_runtime, usable_cores  # noqa: E402
from granular.nn.inputs import Pixels  # noqa: E402
from granular.nn.train import fit  # noqa: E402


def train_one_epoch(train_config, arrays: dict, num_classes: int, threads: int) -> None:
    runtime = select_runtime(threads, precision=train_config.precision)
    fit(Pixels(arrays["train"]["x"]), arrays["train"]["y"], Pixels(arrays["val"]["x"]), arrays["val"]["y"],
        num_classes=num_classes, config=train_config.model_copy(update={"epochs": 1, "threads": threads}),
        runtime=runtime)


def one_after_the_other(jobs: list, cores: int) -> float:
    started = time.perf_counter()
    for train_config, arrays, num_classes in jobs:
        train_one_epoch(train_config, arrays, num_classes, cores)
    return time.perf_counter() - started


def at_once_in_threads(jobs: list, cores: int) -> float:
    threads = max(1, cores // len(jobs))  # torch's thread count is process-wide: each training sets the same
    started = time.perf_counter()
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(train_one_epoch, *job, threads) for job in jobs]:
            future.result()
    return time.perf_counter() - started


def at_once_in_processes(jobs: list, cores: int) -> float:
    """Each training in a fresh process (started, torch imported, data sent: all timed), as a
    local Dask cluster of worker processes runs them."""
    threads = max(1, cores // len(jobs))
    started = time.perf_counter()
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        for future in [pool.submit(train_one_epoch, *job, threads) for job in jobs]:
            future.result()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", nargs="+", default=["fine-28", "fine-14"])
    parser.add_argument("--images", type=int, default=6000, help="training images of each view")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--record", action="store_true", help="also write the figures into docs/operations.md")
    args = parser.parse_args()
    if args.record:
        record.check("concurrency")

    config = load_config(REPO / "params.yaml", [])
    jobs = []
    for name in args.views:
        view = config.view(name)
        arrays, taxonomy, level = load_arrays(config, view, None)
        subset = {"train": {k: v[: args.images] for k, v in arrays["train"].items()},
                  "val": {k: v[:256] for k, v in arrays["val"].items()}}
        jobs.append((config.train_config(view), subset, taxonomy.num_classes(level)))

    cores = usable_cores()
    ways = {
        "one after the other": (one_after_the_other, cores),
        "at once, threads of one process": (at_once_in_threads, max(1, cores // len(jobs))),
        "at once, one process each": (at_once_in_processes, max(1, cores // len(jobs))),
    }
    times = {way: [] for way in ways}
    for _ in range(args.rounds):
        for way, (run, _threads) in ways.items():
            times[way].append(run(jobs, cores))
    sequential = statistics.median(times["one after the other"])
    rows = [
        {"views": ", ".join(args.views), "way": way, "threads_each": threads,
         "wall_s": round(statistics.median(times[way]), 1),
         "speedup_over_sequential": round(sequential / statistics.median(times[way]), 2)}
        for way, (_run, threads) in ways.items()
    ]
    print(json.dumps(rows, indent=2))
    if args.record:
        record.record("concurrency", rows)


if __name__ == "__main__":
    main()
