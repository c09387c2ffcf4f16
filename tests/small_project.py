"""What the end-to-end tests share: the small run they make on the real data, the project
folder it runs in, and a `granular server` to run it against (see tests/conftest.py)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
GRANULAR = str(Path(sys.executable).parent / "granular")
VIEWS = ["fine-28", "fine-14", "coarse-28", "fine-14-clusters4"]
# A view of each kind (full and low resolution, coarse labels, one expert per cluster), as the
# default run had them before its specialist.
EVERY_KIND = (
    "views={fine-28: {level: fine, resolution: 28, train: {epochs: 6, stages: [{level: fine, epochs: 8, resolution: 14}]}},"
    " fine-14: {level: fine, resolution: 14, train: {epochs: 8}},"
    " coarse-28: {level: coarse, resolution: 28, train: {epochs: 2, stages: [{level: coarse, epochs: 4, resolution: 14}]}},"
    " fine-14-clusters4: {level: fine, resolution: 14, segments: {by: clusters, count: 4, min_size: 2000}, train: {epochs: 6}}}"
)
# A small run on a subsample of the real data, with a view of each kind (full and low
# resolution, coarse labels, one expert per cluster): two tiny epochs (the 28x28 views after one
# at 14x14), and segments small enough for 600 training images.
SMALL_RUN = [
    "data.limit=600",
    "train.epochs=2",
    "views={fine-28: {level: fine, resolution: 28, train: {epochs: 2, stages: [{level: fine, epochs: 1, resolution: 14}]}},"
    " fine-14: {level: fine, resolution: 14},"
    " coarse-28: {level: coarse, resolution: 28, train: {epochs: 2, stages: [{level: coarse, epochs: 1, resolution: 14}]}},"
    " fine-14-clusters4: {level: fine, resolution: 14, segments: {by: clusters, count: 4, min_size: 40}}}",
    "train.width=8",
    "train.batch_size=64",  # 540 training images: enough steps to learn in two epochs
    "train.lr=0.05",
    "train.dropout=0.1",
    "distill.enabled=true",  # the student, off by default, is trained here too
    "distill.epochs=1",
    "distill.width=8",
    "validate.min_per_class=20",
]
STARTUP_TIMEOUT_S = 150  # both servers on a busy 2-core machine; the command itself waits 120 s


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_command(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run a command with this environment's tools on PATH; its output, or a failure showing it."""
    env = {**(env or os.environ), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def default_project(folder: Path) -> Path:
    """A project folder with the repository's params.yaml and taxonomy."""
    assert FASHION_MNIST.is_dir(), "the real dataset is needed: apt-get install dataset-fashion-mnist"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", folder / "params.yaml")
    shutil.copy(REPO / "data" / "taxonomy.yaml", folder / "data" / "taxonomy.yaml")
    return folder


def small_params() -> dict:
    """The repository's params.yaml with SMALL_RUN applied."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for override in SMALL_RUN:
        key, value = override.split("=", 1)
        *parents, leaf = key.split(".")
        node = params
        for name in parents:
            node = node[name]
        node[leaf] = yaml.safe_load(value)
    return params


def small_dvc_project(folder: Path) -> dict:
    """A git + DVC repository with the project's stages, code and taxonomy, and the small
    run's parameters in its params.yaml; those parameters."""
    assert FASHION_MNIST.is_dir(), "the real dataset is needed: apt-get install dataset-fashion-mnist"
    folder.mkdir(parents=True)
    for item in ("dvc.yaml", ".dvcignore", "granular"):
        (shutil.copytree if (REPO / item).is_dir() else shutil.copy)(REPO / item, folder / item)
    (folder / "data").mkdir()
    shutil.copy(REPO / "data" / "taxonomy.yaml", folder / "data" / "taxonomy.yaml")
    params = small_params()
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_command(["git", "init", "-q"], folder)
    run_command([sys.executable, "-m", "dvc", "init", "-q"], folder)
    shutil.copy(REPO / ".dvc" / "config", folder / ".dvc" / "config")  # with its default local remote
    return params


@dataclass
class RunningServers:
    """A `granular server` process, what it printed, and the processes it started."""

    process: subprocess.Popen
    root: Path
    ports: tuple[int, int]
    output: list[str] = field(default_factory=list)
    family: list[psutil.Process] = field(default_factory=list)

    def exports(self) -> dict[str, str]:
        """The variables of the `export ...` line it printed for users to paste."""
        line = next(line for line in self.output if line.startswith("export "))
        return dict(pair.split("=", 1) for pair in line.removeprefix("export ").split())


def _read_lines(process: subprocess.Popen, into: list[str]) -> None:
    for line in process.stdout:
        into.append(line.rstrip("\n"))


def stop_for_good(running: RunningServers) -> None:
    """Stop the command, then any server it left behind (by the pids it had started)."""
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        try:
            running.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running.process.kill()
    for process in running.family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


@contextmanager
def granular_server(root: Path) -> Iterator[RunningServers]:
    """`granular server` on the project at `root`, on two free ports, until the block ends."""
    ports = (free_port(), free_port())
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "server", "--root", str(root),
         "--prefect-port", str(ports[0]), "--mlflow-port", str(ports[1])],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    running = RunningServers(process, root, ports)
    threading.Thread(target=_read_lines, args=(process, running.output), daemon=True).start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not any(line.startswith("export ") for line in running.output):
            assert process.poll() is None, "granular server exited:\n" + "\n".join(running.output)
            assert time.monotonic() < deadline, "granular server did not get ready:\n" + "\n".join(running.output)
            time.sleep(0.5)
        running.family = psutil.Process(process.pid).children(recursive=True)
        yield running
    finally:
        stop_for_good(running)


@dataclass(frozen=True)
class SmallRun:
    """`granular run` of the small project against `granular server`, as a user runs it."""

    root: Path
    servers: RunningServers
    stdout: str
    mlflow_run_id: str
    tracking_uri: str
    prefect_api: str
