"""Training task: one view, one nested MLflow run with per-epoch and system metrics and the
learning curves, a Prefect progress artifact and a terminal progress line updated every epoch;
and where the views train: in threads of the flow's process, or on a Dask cluster."""
from __future__ import annotations

import hashlib
import logging
import re
import sys
from typing import TYPE_CHECKING, Callable, TextIO

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext
from prefect.settings import PREFECT_API_URL, temporary_settings

from granular.config import Config
from granular.nn.device import concurrent_trainings

# The step is looked up in its module when called: a task shipped to a Dask worker by value
# then runs the worker's module (where a test's plugin may replace the step).
from granular.pipeline import cotrain as cotrain_step
from granular.pipeline import train as step
from granular.pipeline.order import Unit, training_units, waves
from granular.runtime.preemption import Preempted
from granular.store.paths import ProjectPaths
from tasks import tracking
from tasks.caching import StepResult, cached_task

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

SYSTEM_METRICS_SECONDS = 10
# Its start/stop notices would interleave with the per-epoch lines in the terminal.
logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)


class EpochBar:
    """A terminal line per view: epochs done (every expert's), loss, validation accuracy and
    images/s. Drawn only on a terminal, with the cursor left at its start, so the next log line
    writes over it and the bar is redrawn below; logs keep the full record. (Not tqdm: its bar
    leaves the cursor at its end, so each of Prefect's log lines, written to the same terminal
    by Prefect's own handler, lands on the bar's line, as seen with tqdm 4.70:
    `fine-28:  50%|█████     | 1/2 [00:00<00:00]12:00:01 | INFO | ...`; tqdm's logging
    redirection would replace that handler and its formatting.)"""

    def __init__(self, view_name: str, epochs_total: int, unit: str = "img", stream: TextIO = sys.stderr):
        self.view_name, self.total, self.done, self.unit, self.stream = view_name, epochs_total, 0, unit, stream
        self.shown, self.width = stream.isatty(), 0

    def update(self, record: dict) -> None:
        self.done += 1
        filled = round(20 * self.done / self.total)
        line = (
            f"{self.view_name} [{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total} epochs"
            f" | loss {record['train_loss']:.4g} | val {validation_score(record)}"
            f" | {record['images_per_s']:.0f} {self.unit}/s"
        )
        self._draw(line)

    def close(self) -> None:
        self._draw(" " * self.width)  # wipe it: the logs say how training ended

    def _draw(self, line: str) -> None:
        if self.shown:
            self.stream.write(f"\r{line.ljust(self.width)}\r")
            self.stream.flush()
            self.width = max(self.width, len(line))


def validation_score(record: dict) -> str:
    """An epoch's validation score for people: accuracy, or a regression's RMSE."""
    return f"RMSE {record['val_rmse']:.4g}" if "val_rmse" in record else f"accuracy {record['val_accuracy']:.4f}"


def epoch_metrics(record: dict, earlier_stages: int) -> tuple[list[str], dict[str, float]]:
    """What an epoch's record is of (segment-N for an expert, stage-K-LEVEL[-RESOLUTION] for a
    stage before the view's own, on that stage's labels and inputs) and its metrics, named
    PART.<metric> after those."""
    parts = [f"segment-{record['segment']}"] if "segment" in record else []
    if record.get("stage", earlier_stages) < earlier_stages:
        resolution = f"-{record['stage_resolution']}" if "stage_resolution" in record else ""
        parts.append(f"stage-{record['stage']}-{record['stage_level']}{resolution}")
    prefix = "".join(f"{part}." for part in parts)
    tags = ("epoch", "segment", "stage", "stage_level", "stage_resolution")
    return parts, {f"{prefix}{key}": value for key, value in record.items() if key not in tags}


class ViewsFailed(RuntimeError):
    """Views failed to train; the message names each one and why."""


def train_all_views(
    config: Config, paths: ProjectPaths, parent: tracking.RunRef, on_view_done: Callable[[str], None] | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """Train every view (a pair of co-trained views as one training), as many at once as the
    machine holds without contention (one per GPU; on the CPU, as many as the cores hold at
    train.threads each), or on a Dask cluster with orchestration.task_runner: dask. A view that
    fails does not stop the others; return the summaries of the views that finished, and why
    each other failed. `on_view_done(view)` is called as each view finishes or fails."""
    if config.orchestration.task_runner == "dask":
        return train_on_dask(config, paths, parent, on_view_done)
    width = min(len(config.views), concurrent_trainings(config.train.threads))
    finished, failed = [], {}
    for wave in waves(config, width):
        wave = [unit for unit in wave if not _source_failed(config, unit, failed)]
        if width == 1:  # in this thread, where SIGTERM can be deferred until a checkpoint is saved
            for unit in wave:
                _collect(config, unit, lambda: _training(unit)(config, paths, unit.name, parent), finished, failed,
                         on_view_done)
            continue
        futures = {unit: _training(unit).submit(config, paths, unit.name, parent, gpu=i) for i, unit in enumerate(wave)}
        for unit, future in futures.items():
            _collect(config, unit, future.result, finished, failed, on_view_done)
    return finished, failed


def _training(unit: Unit):
    return train_pair if unit.pair else train_view


def _source_failed(config: Config, unit: Unit, failed: dict[str, str]) -> bool:
    """Whether `unit` is a view that starts from a view that failed; if so it fails too, saying why."""
    source = unit.source(config)
    if source not in failed:
        return False
    failed[unit.name] = f"its source view {source} failed to train"
    get_run_logger().error("view %s not trained: %s", unit.name, failed[unit.name])
    return True


def _collect(
    config: Config, unit: Unit, result: Callable[[], dict], finished: list[dict], failed: dict[str, str],
    on_view_done: Callable[[str], None] | None = None,
) -> None:
    """Wait for one training: each view's summary goes to `finished` (a pair's as values of its
    own, so that the run tells which came from the cache), its error to `failed` for each view."""
    try:
        value = result()
    except Preempted:  # the machine is going away: stop everything
        raise
    except Exception as error:
        for name in unit.views(config):
            failed[name] = f"{type(error).__name__}: {error}"
            get_run_logger().error("view %s failed to train: %s", name, failed[name])
        _report_done(config, unit, on_view_done)
        return
    _report_done(config, unit, on_view_done)
    if not unit.pair:
        finished.append(value)
        return
    for summary in value["views"].values():
        finished.append(StepResult(summary, step=value.step, outputs=value.outputs, computed_at=value.computed_at))


def _report_done(config: Config, unit: Unit, on_view_done: Callable[[str], None] | None) -> None:
    for name in unit.views(config) if on_view_done else ():
        on_view_done(name)


def train_on_dask(
    config: Config, paths: ProjectPaths, parent: tracking.RunRef, on_view_done: Callable[[str], None] | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """Train every view on the Dask cluster of orchestration, in the sub-flow `granular-train-views`.

    Prefect 3 gives a task runner to a flow, and the configuration is only known inside the
    pipeline flow, so the trainings run in a sub-flow given a DaskTaskRunner here. Its workers
    are other processes: they report to the Prefect API the pipeline uses (also when that is the
    temporary server, which they would otherwise each start for themselves), read and write the
    project's files at the same paths, and log to the same MLflow store.
    """
    api_url = str(FlowRunContext.get().client.api_url)
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        sub_flow = train_views_on_cluster.with_options(task_runner=dask_task_runner(config))
        finished, failed = sub_flow(config, paths, parent)
    for view in config.views if on_view_done else ():  # the sub-flow's views are done together
        on_view_done(view)
    return finished, failed


def dask_task_runner(config: Config) -> "DaskTaskRunner":
    """A DaskTaskRunner on the cluster at orchestration.dask_address, or on a temporary cluster
    of worker processes on this machine (processes: a training holds the GIL), on loopback."""
    from prefect_dask import DaskTaskRunner  # dask loads only for runs that use it

    settings = config.orchestration
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    workers = settings.n_workers or concurrent_trainings(config.train.threads)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": workers, "threads_per_worker": settings.threads_per_worker, "processes": True,
            "host": "127.0.0.1", "dashboard_address": None,
        },
    )


@flow(name="granular-train-views")
def train_views_on_cluster(
    config: Config, paths: ProjectPaths, parent: tracking.RunRef
) -> tuple[list[dict], dict[str, str]]:
    """Every view submitted at once: the cluster runs one training per worker thread and queues
    the rest. The view's position picks its GPU on a worker that sees several."""
    futures, by_view = {}, {}
    for i, unit in enumerate(training_units(config)):  # a transfer waits for its source's training
        source = unit.source(config)
        after = [by_view[source]] if source else None
        futures[unit] = _training(unit).submit(config, paths, unit.name, parent, gpu=i, wait_for=after)
        by_view.update({name: futures[unit] for name in unit.views(config)})
    finished, failed = [], {}
    for unit, future in futures.items():
        _collect(config, unit, future.result, finished, failed)
    return finished, failed


def progress_key(view_name: str) -> str:
    """The key of a view's progress artifact: Prefect takes lowercase letters, digits and dashes
    only, and a view's name may carry a column's (`fine-all-area_Code`); a name that had to change
    gets a few characters of its hash, so that two views never share a key."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"train-{view_name}".lower())
    if key != f"train-{view_name}":
        key += "-" + hashlib.sha256(view_name.encode()).hexdigest()[:6]
    return key


class ViewRun:
    """One view's records while it trains: a nested MLflow run with its parameters, per-epoch
    and system metrics and, at the end, its model folder; a Prefect progress artifact; a line
    in the terminal."""

    def __init__(self, config: Config, paths: ProjectPaths, view_name: str, parent: tracking.RunRef, tags: dict[str, str]):
        self.paths, self.view_name, self.logger = paths, view_name, get_run_logger()
        self.client = MlflowClient(parent.uri)
        run = self.client.create_run(
            parent.experiment_id, run_name=view_name,
            tags={"mlflow.parentRunId": parent.run_id, "granular.view": view_name, **tags},
        )
        self.run_id = run.info.run_id
        view = config.view(view_name)
        self.train_config = config.train_config(view)
        learner = {"train": self.train_config.model_dump()} if view.trains_networks else {"trees": config.trees.model_dump()}
        tracking.log_params(self.client, self.run_id, {"view": view.model_dump(exclude={"train"}), **learner})
        # Watched in the Prefect UI while it trains: epochs done over epochs to do, all experts
        # counted (trees: one fit each, shown as one epoch).
        self.epochs_each = self.train_config.total_epochs if view.trains_networks else 1
        self.epochs_total = self.epochs_each * step.networks_in_view(config, paths, view.name)
        self.progress = create_progress_artifact(
            progress=0.0, key=progress_key(view_name), description=f"training view {view_name}: {self.epochs_total} epochs"
        )
        self.unit = "rows" if config.data.modality == "tables" else "images"
        self.bar = EpochBar(view_name, self.epochs_total, "rows" if self.unit == "rows" else "img")
        # CPU, memory (and GPU, with pynvml) utilisation as system/* metrics of the view's run.
        self.system_metrics = SystemMetricsMonitor(
            self.run_id, sampling_interval=SYSTEM_METRICS_SECONDS, tracking_uri=parent.uri
        )
        self.system_metrics.start()

    def on_epoch(self, record: dict) -> None:
        parts, metrics = epoch_metrics(record, len(self.train_config.stages))
        name = " ".join([self.view_name, *parts])
        self.logger.info(
            "%s epoch %d/%d: loss %.4g, val %s, %.0f %s/s",
            name, record["epoch"], self.epochs_each, record["train_loss"], validation_score(record),
            record["images_per_s"], self.unit,
        )
        tracking.log_metrics(self.client, self.run_id, metrics, step=record["epoch"])
        self.bar.update(record)  # after the log line, so the next one writes over it
        update_progress_artifact(
            self.progress, progress=100.0 * self.bar.done / self.epochs_total,
            description=(
                f"{name}: epoch {record['epoch']}/{self.epochs_each}, "
                f"val {validation_score(record)}"
            ),
        )

    def on_fold(self, record: dict) -> None:
        """A fold model trained for the out-of-fold fusion: a line, and its seconds in the view's run."""
        self.logger.info(
            "%s fold %d/%d: learned %d rows, answered %d (%.1f s)", self.view_name, record["fold"] + 1, record["folds"],
            record["learned"], record["answered"], record["seconds"],
        )
        tracking.log_metrics(self.client, self.run_id, {"fold_seconds": record["seconds"]}, step=record["fold"])

    def finished(self, summary: dict) -> dict:
        """The training's summary, with the run's id, once its model is logged."""
        self.client.set_tag(self.run_id, "granular.device", summary["device"])
        self.client.log_artifacts(self.run_id, str(self.paths.model_dir(self.view_name)), artifact_path="model")
        self._end()
        self.client.set_terminated(self.run_id, status="FINISHED")
        return {**summary, "mlflow_run_id": self.run_id}

    def stopped(self, error: BaseException) -> None:
        """KILLED when stopped from outside (a rerun resumes from the view's checkpoints; a pair
        starts again), else FAILED."""
        self._end()
        killed = isinstance(error, (Preempted, KeyboardInterrupt, SystemExit))
        self.client.set_terminated(self.run_id, status="KILLED" if killed else "FAILED")

    def _end(self) -> None:
        if self.system_metrics is not None:
            self.system_metrics.finish()
            self.bar.close()
            self.system_metrics = None


# Not retried: a training failure is deterministic (bad data, out of memory) and is reported;
# MLflow's HTTP client already retries a request that a tracking server fails.
# Tagged so a Prefect concurrency limit on "granular-train" can guard a GPU across flow runs.
# Cached per view (the key covers this view's data and parameters only): a cache hit creates no
# MLflow run and no progress artifact; the view's records are in the run that trained it.
@cached_task("train", "train_transfer", name="train_view", task_run_name="train-{view_name}", tags=["granular-train"])
def train_view(config: Config, paths: ProjectPaths, view_name: str, parent: tracking.RunRef, gpu: int = 0) -> dict:
    run = ViewRun(config, paths, view_name, parent, tags={})
    try:
        summary = step.train_step(
            config, paths, view_name, on_epoch=run.on_epoch, warn=run.logger.warning, gpu=gpu, on_fold=run.on_fold,
        )
        return run.finished(summary)
    except BaseException as error:
        run.stopped(error)
        raise


# A pair of co-trained views: one task, an MLflow run per view, as train_view's.
@cached_task("cotrain", key="pair_name", name="train_pair", task_run_name="cotrain-{pair_name}", tags=["granular-train"])
def train_pair(config: Config, paths: ProjectPaths, pair_name: str, parent: tracking.RunRef, gpu: int = 0) -> dict:
    pair = config.cotrain[pair_name]
    tags = {"granular.cotrain.pair": pair_name, "granular.cotrain.weight": str(pair.weight)}
    runs = {name: ViewRun(config, paths, name, parent, tags) for name in (pair.first, pair.second)}

    def on_epoch(record: dict) -> None:
        runs[record["view"]].on_epoch({key: value for key, value in record.items() if key != "view"})

    try:
        result = cotrain_step.cotrain_step(
            config, paths, pair_name, on_epoch=on_epoch, warn=get_run_logger().warning, gpu=gpu
        )
        return {**result, "views": {name: runs[name].finished(summary) for name, summary in result["views"].items()}}
    except BaseException as error:
        for run in runs.values():
            run.stopped(error)
        raise
