"""Kill `granular run` at random moments and check that the project's records stay true.

    .venv/bin/python benchmarks/crash_runs.py --kills 50            # about an hour on 2 cores
    .venv/bin/python benchmarks/crash_runs.py --kills 5 --seed 1    # a handful (tests/test_crash.py)

A small run (two views on 200 images a split, as tests/test_crash.py's) is first run once
uninterrupted on a fresh project: its seconds T and its metrics.json are the reference. Then,
for each kill, a fresh project: `granular run` is started as a terminal starts it (a process
group of its own, no Prefect server set, so it starts its temporary one), its whole group is
sent SIGKILL at a moment drawn uniformly from [0, T) (the first second included), and `granular
run` is started again, as a user would, until it succeeds (at most --reruns times). A run that
ended before its moment (one faster than the reference) was not killed: it is counted apart,
and moments are drawn on fresh projects until --kills runs were killed alive. Each line says
when the kill came, what the run had printed last, how the reruns ended, and then:

- `identical_metrics`: the project's final metrics.json is the reference's, byte for byte;
- `mlflow_running`: MLflow runs of the project still RUNNING after the reruns;
- `prefect_running`: Prefect flow and task runs of the project still RUNNING or PENDING (read
  from the project's Prefect database, .granular/prefect/prefect.db, after its server is gone);
- `processes_left`: processes still alive that belong to the project (a server, a DVC stage):
  any whose command line or environment names its folder;
- `ran_again_without_help`: the first rerun succeeded.

The last line sums them up. Kill moments come from --seed, so a campaign can be repeated.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
RUN_TIMEOUT_S = 600


def small_project(folder: Path) -> Path:
    """Two views (fine-14, coarse-28) on 200 examples a split (tests/test_crash.py's project too)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["views"] = {"fine-14": {"level": "fine", "resolution": 14}, "coarse-28": {"level": "coarse", "resolution": 28}}
    params["data"]["limit"] = 200
    params["train"].update(epochs=2, width=4)
    params["distill"]["enabled"] = False
    params["validate"]["min_per_class"] = 5
    params["fusion"]["strategy"] = "product"
    (folder / "data").mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "data" / "taxonomy.yaml").write_text((REPO / "data" / "taxonomy.yaml").read_text())
    return folder


def start_run(project: Path, log: Path) -> subprocess.Popen:
    """`granular run` as a terminal starts it: its own process group, no Prefect or MLflow server set."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    environ["PREFECT_HOME"] = str(project / ".prefect-client")
    with open(log, "w") as output:
        return subprocess.Popen(
            [str(REPO / ".venv/bin/granular"), "run", "--root", str(project)],
            cwd=project, env=environ, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )


def run_to_the_end(project: Path, log: Path) -> tuple[int, float]:
    started = time.monotonic()
    run = start_run(project, log)
    try:
        return run.wait(timeout=RUN_TIMEOUT_S), time.monotonic() - started
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()


def kill_at(project: Path, log: Path, moment: float) -> bool:
    """Start a run and SIGKILL its whole group `moment` seconds later; whether it was still running."""
    run = start_run(project, log)
    deadline = time.monotonic() + moment
    while time.monotonic() < deadline and run.poll() is None:
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
    alive = run.poll() is None
    try:
        os.killpg(run.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    run.wait()
    return alive


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def mlflow_running(project: Path) -> int:
    store = project / "mlruns.db"
    if not store.exists():
        return 0
    with sqlite3.connect(store) as database:
        return database.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0]


def prefect_running(project: Path) -> int:
    store = project / ".granular" / "prefect" / "prefect.db"
    if not store.exists():
        return 0
    with sqlite3.connect(store) as database:
        flows = database.execute("select count(*) from flow_run where state_type in ('RUNNING', 'PENDING')").fetchone()[0]
        tasks = database.execute("select count(*) from task_run where state_type in ('RUNNING', 'PENDING')").fetchone()[0]
    return flows + tasks


def processes_left(project: Path, grace_s: float = 10.0) -> list[str]:
    """Processes alive `grace_s` after the last run that name the project in their command line
    or environment (its temporary server gets SIGTERM when the run dies, and needs a moment)."""
    deadline, found = time.monotonic() + grace_s, []
    while True:
        found = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                named = str(project) in " ".join(process.info["cmdline"] or []) or any(
                    str(project) in value for value in process.environ().values())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if named and process.pid != os.getpid():
                found.append(f"{process.pid} {' '.join(process.info['cmdline'] or [])[:120]}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def one_kill(number: int, moment: float, workdir: Path, reference: bytes, reruns: int) -> dict:
    project = small_project(workdir / f"kill-{number}")
    hit = kill_at(project, project / "killed.log", moment)
    record = {"kill": number, "moment_s": round(moment, 3), "hit_a_live_run": hit,
              "last_line_before_the_kill": last_line(project / "killed.log"), "reruns": []}
    for attempt in range(reruns):
        returncode, seconds = run_to_the_end(project, project / f"rerun-{attempt}.log")
        record["reruns"].append({"exit": returncode, "seconds": round(seconds, 1)})
        if returncode == 0:
            break
        record["reruns"][-1]["last_line"] = last_line(project / f"rerun-{attempt}.log")
    metrics = project / "data" / "evaluation" / "metrics.json"
    record |= {
        "ran_again_without_help": record["reruns"][0]["exit"] == 0,
        "identical_metrics": metrics.is_file() and metrics.read_bytes() == reference,
        "mlflow_running": mlflow_running(project),
        "prefect_running": prefect_running(project),
        "processes_left": processes_left(project),
    }
    return record


def summary(records: list[dict], reference_s: float) -> dict:
    return {
        "kills": sum(r["hit_a_live_run"] for r in records), "reference_run_s": round(reference_s, 1),
        "missed_a_run_already_ended": sum(not r["hit_a_live_run"] for r in records),
        "in_the_first_second": sum(r["moment_s"] < 1.0 for r in records),
        "identical_metrics": sum(r["identical_metrics"] for r in records),
        "ran_again_without_help": sum(r["ran_again_without_help"] for r in records),
        "records_left_running": sum(r["mlflow_running"] + r["prefect_running"] for r in records),
        "processes_left": sum(len(r["processes_left"]) for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="of the kill moments")
    parser.add_argument("--reruns", type=int, default=3, help="runs after a kill, at most, until one succeeds")
    parser.add_argument("--workdir", type=Path, help="where the projects go (default: a temporary folder, deleted)")
    parser.add_argument("--keep", action="store_true", help="keep each project (default: deleted once checked)")
    args = parser.parse_args()
    if not FASHION_MNIST.is_dir():
        raise SystemExit("the real dataset is needed: apt-get install dataset-fashion-mnist")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="granular-crashes-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        reference_project = small_project(workdir / "reference")
        returncode, reference_s = run_to_the_end(reference_project, reference_project / "run.log")
        if returncode != 0:
            raise SystemExit(f"the uninterrupted run failed ({returncode}):\n{(reference_project / 'run.log').read_text()[-3000:]}")
        reference = (reference_project / "data" / "evaluation" / "metrics.json").read_bytes()
        print(json.dumps({"reference_run_s": round(reference_s, 1)}), flush=True)
        moments = random.Random(args.seed)
        records, number = [], 0
        while sum(r["hit_a_live_run"] for r in records) < args.kills:
            records.append(one_kill(number, moments.uniform(0, reference_s), workdir, reference, args.reruns))
            print(json.dumps(records[-1]), flush=True)
            if not args.keep:
                shutil.rmtree(workdir / f"kill-{number}", ignore_errors=True)
            number += 1
        print(json.dumps(summary(records, reference_s)), flush=True)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
