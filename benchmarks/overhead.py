"""What orchestration and tracking cost: a full `granular run`, an immediate re-run, and `dvc repro`
with nothing changed, timed on this machine and printed as JSON.

    .venv/bin/python benchmarks/overhead.py                                  # the default run
    .venv/bin/python benchmarks/overhead.py --set data.limit=2000 --set distill.epochs=1 \\
        --set views.fine-28.train.epochs=1 --set views.fine-28-tops-Dress.train.epochs=1   # a quick look
    .venv/bin/python benchmarks/overhead.py --root /path/to/project --set train.lr=0.1
    .venv/bin/python benchmarks/overhead.py --record     # and rewrite its section of docs/operations.md

By default the runs happen in a fresh temporary project: params.yaml (with the `--set`
overrides written into it), the taxonomy, dvc.yaml and the `granular` package copied into a new
git + DVC repository, with its own MLflow store and DVC remote, so nothing of yours is touched.
Since that params.yaml is then used as it stands, `granular run` records its outputs in DVC
and `dvc repro` afterwards has nothing to do. With `--root`, the runs use that project and the
overrides are passed to `granular run` as `--set`; `dvc repro` is timed only there when the
project is a DVC repository and no override was given (otherwise the run leaves DVC alone and
there would be everything to redo).

Each run is a fresh process, as `granular run` is for a user: the second one finds what the
task cache kept from the first. In that process every `granular.pipeline.*_step` function (the
computations themselves: import, clean, validate, split, view, train, fuse, distill, evaluate)
is wrapped by a timer, and the flow is called through the `granular` command's own `main`.

    overhead_s = wall_s - in_steps_s

where `wall_s` is the run's process from start to exit, and `in_steps_s` the length of the union
of the intervals during which at least one step function was running (views trained at once
count once). The overhead is everything else: Python start and imports, the temporary Prefect
server (none when PREFECT_API_URL names a running one), flow and task runs, cache look-ups, MLflow runs, parameters, metrics, artifacts and the
logged model, the DVC commit and push, the registry, the report. Steps must run in the flow's
process for their timers to see them: the benchmark refuses orchestration.task_runner=dask.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import record  # noqa: E402  (benchmarks/record.py)

from granular.config import apply_override, load_config  # noqa: E402

STEP_SUFFIX = "_step"
COPIED = ("dvc.yaml", "granular", "data/taxonomy.yaml")  # what the DVC stages read


@contextmanager
def timed_steps(intervals: list[tuple[str, float, float]]) -> Iterator[None]:
    """Within this block, every call of a granular.pipeline.*_step function appends its name,
    start and end (time.perf_counter) to `intervals`, from whichever thread it runs in. The
    functions are replaced where the Prefect tasks look them up."""
    import tasks.data
    import tasks.evaluation
    import tasks.training

    originals = {
        (module, name): f
        for module in (tasks.data, tasks.training, tasks.evaluation)
        for name, f in vars(module).items()
        if name.endswith(STEP_SUFFIX) and callable(f)
    }

    def timed(name: str, step):
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                intervals.append((name, started, time.perf_counter()))
        return call

    for (module, name), step in originals.items():
        setattr(module, name, timed(name, step))
    try:
        yield
    finally:
        for (module, name), step in originals.items():
            setattr(module, name, step)


def covered_seconds(intervals: list[tuple[str, float, float]]) -> float:
    """The length of the union of the intervals: time during which at least one step ran."""
    total, reach = 0.0, float("-inf")
    for _, start, end in sorted(intervals, key=lambda interval: interval[1]):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def timed_run(root: str, overrides: list[str], report: Path) -> int:
    """In this process: `granular run` with the steps timed; the timings go to `report`."""
    from flows.cli import main

    intervals: list[tuple[str, float, float]] = []
    with timed_steps(intervals):
        code = main(["run", "--root", root, *[a for o in overrides for a in ("--set", o)]])
    per_step: dict[str, float] = {}
    for name, start, end in intervals:
        per_step[name] = per_step.get(name, 0.0) + end - start
    report.write_text(json.dumps({"in_steps_s": covered_seconds(intervals), "steps_s": per_step}))
    return code


def measure_run(root: Path, overrides: list[str], env: dict[str, str]) -> dict:
    """One `granular run` in a fresh process: its wall time, the time in steps, the overhead."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "steps.json"
        command = [sys.executable, __file__, "--timed-run", str(report), "--root", str(root)]
        command += [a for o in overrides for a in ("--set", o)]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"granular run failed in {root}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        timings = json.loads(report.read_text())
    return {
        "wall_s": round(wall, 2),
        "in_steps_s": round(timings["in_steps_s"], 2),
        "overhead_s": round(wall - timings["in_steps_s"], 2),
        "steps_s": {name: round(seconds, 2) for name, seconds in timings["steps_s"].items()},
    }


def time_dvc_repro(root: Path, env: dict[str, str]) -> dict:
    """`dvc repro` in a project whose outputs were just committed: the seconds, and whether it
    found everything up to date (as it should) or had stages to run."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=root, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dvc repro failed in {root}:\n{done.stdout}\n{done.stderr}")
    return {"seconds": round(seconds, 2), "up_to_date": "Running stage" not in done.stdout + done.stderr}


def make_project(folder: Path, overrides: list[str]) -> None:
    """A git + DVC repository with this project's stages, code, taxonomy and default DVC remote
    (a folder inside it), and params.yaml with the overrides written into it; an override that
    is not valid is refused, naming the key."""
    for item in COPIED:
        source, target = REPO / item, folder / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for assignment in overrides:
        apply_override(params, assignment)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    load_config(folder / "params.yaml")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=folder, check=True)
    shutil.copy(REPO / ".dvc" / "config", folder / ".dvc" / "config")  # names the default remote


def refuse_dask(params: Path, overrides: list[str]) -> None:
    """Stop, saying why, when the trainings would run where the step timers cannot see them."""
    if load_config(params, overrides).orchestration.task_runner == "dask":
        raise SystemExit("orchestration.task_runner=dask runs the steps in other processes, where "
                         "their timers cannot see them; measure with threads")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, help="a project to run in (default: a fresh temporary copy)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter override, as for `granular run` (repeatable)")
    parser.add_argument("--record", action="store_true", help="also write the figures into docs/operations.md")
    parser.add_argument("--timed-run", type=Path, help=argparse.SUPPRESS)  # the measured process
    args = parser.parse_args()
    if args.timed_run:
        sys.exit(timed_run(str(args.root), args.overrides, args.timed_run))
    if args.record:
        record.check("overhead")

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    with tempfile.TemporaryDirectory(prefix="granular-overhead-") as scratch:
        if args.root:
            root, passed = args.root.resolve(), args.overrides
            refuse_dask(root / "params.yaml", passed)
        else:
            root, passed = Path(scratch), []
            make_project(root, args.overrides)
            refuse_dask(root / "params.yaml", [])
            env.pop("MLFLOW_TRACKING_URI", None)  # the copy's own store, not yours
        result = {
            "root": str(args.root or "temporary copy"),
            "overrides": args.overrides,
            "run": measure_run(root, passed, env),
            "rerun": measure_run(root, passed, env),
            "dvc_repro_unchanged": (
                time_dvc_repro(root, env) if (root / ".dvc").is_dir() and not passed else None
            ),
        }
    print(json.dumps(result, indent=2))
    if args.record:
        record.record("overhead", result)


if __name__ == "__main__":
    main()
