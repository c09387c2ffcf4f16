"""`granular server`: the project's Prefect server and MLflow tracking server, started, watched
and stopped together, so that runs can be followed in both UIs; and the temporary Prefect API
of a `granular run` that has no server to report to.

Both keep their state in the project: Prefect's database under `.granular/prefect/` (its
PREFECT_HOME), MLflow's in the very store and artifact folder `granular run` writes without a
server, so runs made before the server existed show up in it. Each server runs in a process
group of its own, so stopping one stops the workers it spawned too.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from granular.store.paths import ProjectPaths

STARTUP_TIMEOUT_S = 120.0  # both answered after 23-51 s on a busy 2-core machine (Prefect creates its database)
STOP_GRACE_S = 15.0  # from SIGTERM to SIGKILL
RUN_SERVER_GRACE_S = 5.0  # ... for a run's temporary server, whose work is done when it is stopped
LOG_TAIL_LINES = 20


class ServerError(RuntimeError):
    """A server could not start, or stopped on its own; the message says which and why."""


@dataclass(frozen=True)
class Server:
    """How to start one server and how to tell that it answers."""

    name: str
    command: list[str]
    env: dict[str, str]  # set on top of this process's environment
    host: str
    port: int
    health_path: str
    log: Path

    @property
    def url(self) -> str:
        """Where its UI is; its API too."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        return f"http://{host}:{self.port}"

    @property
    def health_url(self) -> str:
        return self.url + self.health_path


def prefect_server(root: Path, host: str, port: int) -> Server:
    """A Prefect server whose database lives in the project (PREFECT_HOME=.granular/prefect).
    Its UI is told where its own API is: unset, Prefect 3.8 tells the browser the default
    http://127.0.0.1:4200/api whatever the port, and every page of a server on another port says
    "Can't connect to Server API" (or shows another server's runs)."""
    server = Server(
        name="Prefect",
        command=[sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env={"PREFECT_HOME": str(ProjectPaths(root).state / "prefect")},
        host=host,
        port=port,
        health_path="/api/health",
        log=ProjectPaths(root).state / "logs" / "prefect.log",
    )
    return replace(server, env={**server.env, "PREFECT_UI_API_URL": f"{server.url}/api"})


def mlflow_server(root: Path, host: str, port: int, store_uri: str, artifact_root: Path) -> Server:
    """An MLflow tracking server on the project's store. One worker is plenty for one user and
    spares the memory of three more full MLflow processes."""
    return Server(
        name="MLflow",
        command=[
            sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port), "--workers", "1",
            "--backend-store-uri", store_uri, "--artifacts-destination", str(artifact_root),
        ],
        env={},
        host=host,
        port=port,
        health_path="/health",
        log=ProjectPaths(root).state / "logs" / "mlflow.log",
    )


def ready_message(prefect: Server, mlflow: Server) -> str:
    """The UIs' addresses and the line a user pastes into another shell so that `granular run`
    reports to both servers."""
    return "\n".join([
        f"Prefect UI: {prefect.url}",
        f"MLflow UI:  {mlflow.url}",
        f"logs:       {prefect.log.parent}",
        "",
        "In another shell, before `granular run`:",
        f"export PREFECT_API_URL={prefect.url}/api MLFLOW_TRACKING_URI={mlflow.url}",
        "",
        "Ctrl-C stops both servers.",
    ])


def check_port_free(server: Server) -> None:
    """Refuse a port something already listens on, before starting anything: otherwise the
    health check could be answered by that other process."""
    family = socket.AF_INET6 if ":" in server.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((server.host, server.port))
        except OSError as error:
            raise ServerError(
                f"cannot start the {server.name} server on {server.host}:{server.port}: {error.strerror}; "
                f"choose another port with --{server.name.lower()}-port"
            ) from None


def start(server: Server, environ: dict[str, str], end_with_parent: bool = False) -> subprocess.Popen:
    """Start a server in its own process group, its output going to its log file. With
    `end_with_parent`, the kernel sends it SIGTERM when this process dies, SIGKILL included
    (Linux's parent-death signal; call from the main thread, whose end counts as the parent's)."""
    server.log.parent.mkdir(parents=True, exist_ok=True)
    with open(server.log, "wb") as log:
        return subprocess.Popen(
            server.command, env={**environ, **server.env}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_terminate_with_parent if end_with_parent and sys.platform == "linux" else None,
        )


def _terminate_with_parent() -> None:
    """In the child, before it runs the server: SIGTERM to it when its parent dies."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def run_prefect_server(root: Path, port: int) -> Server:
    """The Prefect API a `granular run` starts for itself when no PREFECT_API_URL is set: what
    Prefect's own temporary server serves (no UI), on the project's own database (that of
    `granular server`, .granular/prefect/, unless the Prefect profile names a database URL), so
    that a later run finds and closes a killed run's records there and the UI shows them; started
    here, in a process group of its own and ending with the run, so that a terminal's Ctrl-C (sent
    to the run's whole group) does not kill it under the run, and a run killed outright does not
    leave it behind."""
    import prefect
    from prefect.settings import get_current_settings

    return Server(
        name="Prefect",
        command=[
            sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on",
        ],
        env={
            **get_current_settings().to_environment_variables(exclude_unset=True),
            "PREFECT_HOME": str(ProjectPaths(root).state / "prefect"),
            "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
        },
        host="127.0.0.1",
        port=port,
        health_path="/api/health",
        log=ProjectPaths(root).state / "logs" / "prefect-run.log",
    )


@contextmanager
def prefect_api(root: Path) -> Iterator[None]:
    """Within this block Prefect reports to PREFECT_API_URL where one is set, else to a
    temporary server of this run's own (`run_prefect_server`), stopped as the block ends."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    server = run_prefect_server(root, free_port())
    process = start(server, dict(os.environ), end_with_parent=True)
    print(f"temporary Prefect server on {server.url} (pid {process.pid}, log {server.log})",
          file=sys.stderr, flush=True)
    try:
        wait_until_answering([(server, process)])
        # No UI: no "View at" line, no MLflow tag linking a page this server does not serve.
        with temporary_settings({PREFECT_API_URL: f"{server.url}/api", PREFECT_UI_URL: ""}):
            try:
                yield
            finally:
                _send_what_prefect_holds()
    finally:
        stop_all([(server, process)], grace_s=RUN_SERVER_GRACE_S)


def _send_what_prefect_holds(timeout_s: float = RUN_SERVER_GRACE_S) -> None:
    """Let Prefect's background workers send the logs and events they still hold while the
    server is there: at exit, they would retry a stopped server for a minute or more."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=timeout_s)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:  # refused, reset, timed out, or an HTTP error status
        return False


def log_tail(server: Server, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = server.log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def check_alive(running: list[tuple[Server, subprocess.Popen]]) -> None:
    for server, process in running:
        if process.poll() is not None:
            raise ServerError(
                f"the {server.name} server stopped with exit code {process.returncode}; "
                f"the end of {server.log}:\n{log_tail(server)}"
            )


def wait_until_answering(running: list[tuple[Server, subprocess.Popen]], timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Wait until every server answers its health check; fail as soon as one exits."""
    waiting = [server for server, _ in running]
    deadline = time.monotonic() + timeout_s
    while True:
        check_alive(running)
        waiting = [server for server in waiting if not answers(server.health_url)]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise ServerError("; ".join(
                f"the {server.name} server did not answer {server.health_url} within {timeout_s:.0f} s "
                f"(see {server.log})" for server in waiting
            ))
        time.sleep(0.5)


def signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    """Signal the server and every process it started: its group's id is its pid (start_new_session)."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:  # the whole group has exited already
        pass


def stop_all(running: list[tuple[Server, subprocess.Popen]], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every server at once; SIGKILL any still there after `grace_s`."""
    for _, process in running:
        signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for server, process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"the {server.name} server did not stop within {grace_s:.0f} s: killing it", file=sys.stderr, flush=True)
            signal_group(process, signal.SIGKILL)
            process.wait()


def serve(servers: list[Server], environ: dict[str, str], ready: str) -> int:
    """Start the servers, print `ready` once all answer, then watch them until SIGINT or SIGTERM
    (exit 0) or until one stops on its own (the others are stopped; exit 1)."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C: one way out
    running: list[tuple[Server, subprocess.Popen]] = []
    try:
        for server in servers:
            check_port_free(server)
        for server in servers:
            running.append((server, start(server, environ)))
        wait_until_answering(running)
        print(ready, flush=True)
        while True:
            check_alive(running)
            time.sleep(1.0)
    except KeyboardInterrupt:
        print("stopping the servers", flush=True)
        return 0
    except ServerError as error:
        print(f"granular server: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig in previous:  # a second Ctrl-C must not leave a server running
            signal.signal(sig, signal.SIG_IGN)
        stop_all(running)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
