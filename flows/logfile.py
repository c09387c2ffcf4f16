"""A command's log file in the project, `.granular/logs/<time>-<command>.log`: every line the
run logs at INFO and above (Prefect's flow and task lines, granular's own, MLflow's) and the
third parties' notices the terminal leaves out (flows/terminal.py), each with its time, level
and logger."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from flows.terminal import ASIDE, quiet_terminal_handlers
from granular.store.paths import ProjectPaths

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# MLflow's loggers do not pass their lines up to the root logger: the file hears them itself.
APART = ("mlflow", "alembic", "sqlalchemy.engine")


def log_file_path(root: Path, command: str, now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return ProjectPaths(Path(root)).state / "logs" / f"{stamp}-{command}.log"


def log_to_file(root: Path, command: str) -> Path:
    """After Prefect has set up its logging (a handler on the root logger before it would take
    the root's console handler's place): granular's own news (early stopping, importance's
    progress) at INFO, this command's log file, and the terminal's handlers quieted. Returns
    the file's path."""
    import mlflow  # noqa: F401  its loggers get their handler as it loads: before ours is added

    logging.getLogger("granular").setLevel(logging.INFO)
    path = log_file_path(root, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(FORMAT))
    for logger in (logging.getLogger(), ASIDE, *(logging.getLogger(name) for name in APART)):
        logger.addHandler(handler)
    quiet_terminal_handlers()
    return path
