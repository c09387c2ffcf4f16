"""MLflow at the edge: where runs are stored, and how a run's records are written.

Everything goes through an explicit MlflowClient and run ids, never MLflow's global "active run",
so views trained in parallel threads cannot write into each other's runs.
"""
from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from granular.config import Config
from granular.paths import ProjectPaths


SPLIT_TAG = "granular.split."  # granular.split.<view>.<split>.md5: the content hash of a split file


@dataclass(frozen=True)
class RunRef:
    """Where a task writes its MLflow records: a store, an experiment and a run."""

    uri: str
    experiment_id: str
    run_id: str


def project_store_uri(paths: ProjectPaths) -> str:
    """The project's own SQLite store: used when no URI is given, and served by `granular server`."""
    return f"sqlite:///{paths.root / 'mlruns.db'}"


def artifact_root(paths: ProjectPaths) -> Path:
    """Where the project's experiments keep their artifacts, with or without a tracking server."""
    return paths.root / "mlartifacts"


def tracking_uri(config: Config, paths: ProjectPaths) -> str:
    """The configured URI, else MLFLOW_TRACKING_URI, else a SQLite store in the project."""
    return config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or project_store_uri(paths)


def flow_run_tags() -> dict[str, str]:
    """The current Prefect flow run, as tags of its MLflow run: its id, its name and, when the
    flow reports to a Prefect server, its page in that server's UI (PREFECT_UI_URL, derived
    from PREFECT_API_URL; the temporary server has no UI to link to)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    tags = {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_name": str(flow_run.name)}
    if PREFECT_UI_URL.value():
        tags["prefect.flow_run_url"] = flow_run.ui_url
    return tags


def open_experiment(uri: str, name: str, artifact_root: Path) -> tuple[MlflowClient, str]:
    """A client and the experiment id, creating store and experiment once, safely.

    Several processes creating one SQLite store at the same moment can leave it half-migrated,
    so creation happens under an exclusive file lock beside the database.
    """
    if not uri.startswith("sqlite:///"):  # a server: the experiment keeps its artifacts where the server says
        client = MlflowClient(tracking_uri=uri)
        return client, _experiment_id(client, name, None)
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = MlflowClient(tracking_uri=uri)  # its store creates and migrates the tables
        return client, _experiment_id(client, name, artifact_root)


def _experiment_id(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        location = (artifact_root / name).as_uri() if artifact_root else None
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it between our two calls
        return client.get_experiment_by_name(name).experiment_id


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1}"""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def log_params(client: MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in flatten(params).items()])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    client.log_batch(run_id, metrics=_metric_list(metrics, step))


def _metric_list(metrics: dict[str, float], step: int) -> Iterable[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in metrics.items()]


def start_parent_run(config: Config, paths: ProjectPaths, run_name: str, tags: dict[str, str]) -> RunRef:
    """Open the flow's MLflow run and record the fully resolved configuration in it."""
    uri = tracking_uri(config, paths)
    client, experiment_id = open_experiment(uri, config.tracking.experiment, artifact_root(paths))
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    log_params(client, run.info.run_id, config.as_dict())
    client.log_dict(run.info.run_id, config.as_dict(), "config.json")
    return RunRef(uri=uri, experiment_id=experiment_id, run_id=run.info.run_id)


def end_run(ref: RunRef, status: str) -> None:
    MlflowClient(ref.uri).set_terminated(ref.run_id, status=status)


def tag_splits(ref: RunRef, partitions: dict) -> None:
    """Content hash of every split of every view, so a model leads back to its exact data."""
    tags = {
        f"{SPLIT_TAG}{view}.{split}.md5": info["md5"]
        for view, splits in partitions["views"].items()
        for split, info in splits.items()
    }
    MlflowClient(ref.uri).log_batch(ref.run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def log_clean_report(ref: RunRef, report: dict) -> None:
    """How many examples cleaning kept and set aside, by reason."""
    counts = {"clean.examined": report["examined"], "clean.kept": report["kept"], "clean.rejected": report["rejected"]}
    log_metrics(MlflowClient(ref.uri), ref.run_id, counts)


def tag_failed_views(ref: RunRef, failed: dict[str, str]) -> None:
    """The views a run went on without, and why each failed."""
    tags = [RunTag(f"granular.failed_view.{name}", why[:5000]) for name, why in failed.items()]
    MlflowClient(ref.uri).log_batch(ref.run_id, tags=tags)
