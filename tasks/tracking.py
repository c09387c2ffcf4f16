"""MLflow at the edge: where runs are stored, and how a run's records are written.

Everything goes through an explicit MlflowClient and run ids, never MLflow's global "active run",
so views trained in parallel threads cannot write into each other's runs.
"""
from __future__ import annotations

import fcntl
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import mlflow
import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from granular.config import Config
from granular.runtime.processes import ProcessIdentity, current_process
from granular.runtime.redact import redact_uri
from granular.store.paths import ProjectPaths

SPLIT_TAG = "granular.split."  # granular.split.<view>.<split>.md5: the content hash of a split file
# The process that opened a parent run, so that a later run can tell a run whose process died
# (SIGKILL, a power cut) from one that still goes on (tasks/crashes.py).
HOST_TAG, PID_TAG, PROCESS_START_TAG = "granular.host", "granular.pid", "granular.process_start"

# How long MLflow's client retries a tracking server that does not answer, unless the user set
# these variables: MLflow's own defaults (7 retries, factor 2) wait about 4 minutes per call.
# 5 retries with factor 1 sleep 0, 2, 4, 8 and 16 s (plus up to 1 s of jitter each): a server
# restarted within about 30 s is not noticed, one down for longer fails the call. A request
# that gets no answer at all is given up after 60 s (MLflow: 120 s).
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}
HEALTH_TIMEOUT_S = 5.0  # for the one request that tells whether a tracking server is there at all


class TrackingServerUnavailable(RuntimeError):
    """The MLflow tracking server the run logs to does not answer; the message says which and what to do."""


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


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to `uri` for the block, for the few MLflow calls that
    take no client (logging a model; a SQL store resolving `models:/<model_id>`), then put back
    as it was, with MLFLOW_TRACKING_URI, which MLflow sets along with it. It is one for the
    whole process: the flow's other MLflow calls name their store, and are not affected."""
    from mlflow.tracking._tracking_service import utils  # where MLflow keeps it: None when unset

    before, environment = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # which sets MLFLOW_TRACKING_URI to it too (None: unsets it)
        if environment is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = environment


def bound_http_retries() -> dict[str, str]:
    """Set MLflow's HTTP retry settings to HTTP_RETRY_DEFAULTS where the user has not set them
    (MLflow reads them at every request); return the settings in force."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return {name: os.environ[name] for name in HTTP_RETRY_DEFAULTS}


def server_answers(uri: str, timeout_s: float = HEALTH_TIMEOUT_S) -> bool:
    """Whether anything answers HTTP at the tracking server `uri` (any status: an error page is
    a server that is there, and MLflow's own calls will say what is wrong with it)."""
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
    except requests.RequestException:
        return False
    return True


def check_tracking_server(config: Config, paths: ProjectPaths) -> None:
    """Fail at once, naming the server and what to do, when the tracking URI is a server that
    does not answer (rather than after minutes of MLflow's retries)."""
    uri = tracking_uri(config, paths)
    if not is_server(uri) or server_answers(uri):
        return
    if config.tracking.uri:
        origin, instead = "tracking.uri in params.yaml", "set tracking.uri to null in params.yaml"
    else:
        origin, instead = "MLFLOW_TRACKING_URI", "unset MLFLOW_TRACKING_URI"
    raise TrackingServerUnavailable(
        f"no MLflow tracking server answers at {redact_uri(uri)} (set by {origin}): start it with `granular server` "
        f"(it prints the URI to export), or {instead} to track runs in the project's own store "
        f"{project_store_uri(paths)}"
    )


def lost_server_error(uri: str) -> TrackingServerUnavailable | None:
    """When the tracking server `uri` no longer answers: the error that says so, else None."""
    if not is_server(uri) or server_answers(uri):
        return None
    retries = ", ".join(f"{name}={os.environ.get(name, 'MLflow default')}" for name in HTTP_RETRY_DEFAULTS)
    return TrackingServerUnavailable(
        f"the MLflow tracking server at {redact_uri(uri)} stopped answering during the run, and still did not after "
        f"MLflow's retries ({retries}); the run's records on it end where it stopped. "
        "Start it again (`granular server`) and run again"
    )


def process_tags(process: ProcessIdentity | None = None) -> dict[str, str]:
    """The process that writes a run (this one by default), as tags of that run."""
    process = process or current_process()
    return {HOST_TAG: process.host, PID_TAG: str(process.pid), PROCESS_START_TAG: process.start or ""}


def process_of(tags: dict[str, str]) -> ProcessIdentity | None:
    """The process a run's tags name, or None when they name none (a run made before these tags)."""
    try:
        return ProcessIdentity(host=tags[HOST_TAG], pid=int(tags[PID_TAG]), start=tags.get(PROCESS_START_TAG) or None)
    except (KeyError, ValueError):
        return None


DESCRIPTION_TAG = "mlflow.note.content"  # what the MLflow UI shows as the run's description


def flow_run_tags() -> dict[str, str]:
    """The current Prefect flow run, as tags of its MLflow run: its id, its name and, when the
    flow reports to a Prefect server, its page in that server's UI (PREFECT_UI_URL, derived
    from PREFECT_API_URL; the temporary server has no UI to link to)."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    tags = {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_name": str(flow_run.name)}
    if PREFECT_UI_URL.value():
        tags["prefect.flow_run_url"] = flow_run.ui_url
        # The run's description in the MLflow UI (Markdown): the flow run, one click away.
        tags[DESCRIPTION_TAG] = f"Prefect flow run [{flow_run.name}]({flow_run.ui_url})"
    else:
        tags[DESCRIPTION_TAG] = f"Prefect flow run {flow_run.name} (id {flow_run.id}), on a temporary server with no UI"
    return tags


class TrackingStoreDamaged(RuntimeError):
    """The project's SQLite tracking store exists but MLflow cannot open it; the message names
    the file and what to do."""


def open_experiment(uri: str, name: str, artifact_root: Path) -> tuple[MlflowClient, str]:
    """A client and the experiment id, creating store and experiment once, safely.

    Several processes creating one SQLite store at the same moment can leave it half-migrated,
    so creation happens under an exclusive file lock beside the database; and a process killed
    while MLflow migrates it would leave it half-made, so it is made under another name and
    moved into place once complete (_create_store).
    """
    if not uri.startswith("sqlite:///"):  # a server: the experiment keeps its artifacts where the server says
        client = MlflowClient(tracking_uri=uri)
        return client, _experiment_id(client, name, None)
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists():
            _create_store(database)
        try:
            client = MlflowClient(tracking_uri=uri)
            return client, _experiment_id(client, name, artifact_root)
        except Exception as error:  # SQLAlchemy's and MLflow's errors alike: the file is not a store MLflow can use
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TrackingStoreDamaged(
                f"the project's MLflow tracking store {database} cannot be opened ({reason[:200]}): it is damaged, "
                f"or was made by another MLflow version. Move it aside (mv {database} {database}.damaged) and run "
                "again: a new store is made; the moved one keeps its runs for `mlflow ui --backend-store-uri "
                f"sqlite:///{database}.damaged`"
            ) from error


def _create_store(database: Path) -> None:
    """Make a new SQLite store: MLflow creates and migrates its tables (seconds) in a file beside
    `database`, which is then renamed to it (atomic); a file left by a process killed meanwhile
    is started over."""
    making = database.with_name(database.name + ".making")
    making.unlink(missing_ok=True)
    MlflowClient(tracking_uri=f"sqlite:///{making}").search_experiments(max_results=1)  # creates and migrates
    os.replace(making, database)


# MLflow 3's UI opens an experiment of no kind as a GenAI one (traces, an assistant); this kind
# opens the runs, as model training. An experiment a user gave a kind keeps it.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def _experiment_id(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        if not EXPERIMENT_KIND.keys() & found.tags.keys():
            client.set_experiment_tag(found.experiment_id, *next(iter(EXPERIMENT_KIND.items())))
        return found.experiment_id
    try:
        location = (artifact_root / name).as_uri() if artifact_root else None
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
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
    return [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]


def metric_key(name: str) -> str:
    """`name` as MLflow takes a metric key: a table's segment value in it (`Credit card
    (automatic)`, `N/A`) may hold characters MLflow refuses; each becomes `_`."""
    return re.sub(r"[^\w.\- :]", "_", name)


def start_parent_run(config: Config, paths: ProjectPaths, run_name: str, tags: dict[str, str]) -> RunRef:
    """Open the flow's MLflow run, tagged with this process, and record the fully resolved
    configuration in it; first make sure a tracking server is there, and bound its retries."""
    bound_http_retries()
    check_tracking_server(config, paths)
    uri = tracking_uri(config, paths)
    client, experiment_id = open_experiment(uri, config.tracking.experiment, artifact_root(paths))
    run = client.create_run(experiment_id, run_name=run_name, tags={**tags, **process_tags()})
    log_params(client, run.info.run_id, config.as_dict())
    client.log_dict(run.info.run_id, config.as_dict(), "config.json")
    return RunRef(uri=uri, experiment_id=experiment_id, run_id=run.info.run_id)


def end_run(ref: RunRef, status: str, tags: dict[str, str] | None = None) -> None:
    """End a run with `status` (FINISHED, FAILED, KILLED), after setting `tags` on it."""
    client = MlflowClient(ref.uri)
    if tags:
        client.log_batch(ref.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(ref.run_id, status=status)


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
