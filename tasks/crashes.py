"""How a pipeline run that does not end normally is recorded, so that none is left looking alive.

- Stopped by a signal (SIGTERM: a preempted machine, a cancelled job; SIGINT: Ctrl-C): the
  flow's MLflow run and its open child runs end KILLED, tagged with the signal
  (`granular.stop_reason`), and the flow raises the signal on, so that Prefect marks the flow
  run Crashed ("Execution was aborted by a termination signal" / "... an interrupt signal").
- Cut off from its tracking server: the flow fails naming the server (tasks/tracking.py).
- Killed outright (SIGKILL, a power cut), it can record nothing: the next pipeline run finds
  its MLflow runs still RUNNING, sees from their tags that their process is gone, and marks
  them KILLED, and their Prefect flow run and task runs Crashed, saying who found them when.
  A flow run killed before it had an MLflow run is found by its own tags (the project and the
  process, given when it was created) and marked Crashed alike.
"""
from __future__ import annotations

import hashlib
import logging
import signal
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator
from uuid import UUID

import httpx
from mlflow.entities import Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect.exceptions import TerminationSignal

from granular.runtime.preemption import Preempted
from granular.runtime.processes import ProcessIdentity, current_process, still_running
from tasks import tracking
from tasks.registry import mark_versions_of_unfinished_run

STOP_REASON_TAG = "granular.stop_reason"
PARENT_TAG = "mlflow.parentRunId"
SEARCH_PAGE = 1000  # runs per MLflow search request


_REASONS = {signal.SIGTERM: "stopped by SIGTERM", signal.SIGINT: "interrupted (SIGINT)"}
_signalled: list[int] = []  # the stop signals received inside `stop_signals_raise`, in order


def stop_reason(error: BaseException) -> str | None:
    """Why the run was stopped from outside, or None when `error` is a failure of its own."""
    if isinstance(error, (TerminationSignal, Preempted)):  # Preempted: SIGTERM during training
        return _REASONS[signal.SIGTERM]
    if isinstance(error, KeyboardInterrupt):
        return _REASONS[signal.SIGINT]
    # A signal that reaches Prefect's engine between two task runs can surface as an error of the
    # engine's own ("Task run is not set"): the run was still stopped by the signal.
    return _REASONS[_signalled[0]] if _signalled else None


@contextmanager
def stop_signals_raise() -> Iterator[None]:
    """Within this block, SIGTERM raises TerminationSignal in the main thread (as Ctrl-C raises
    KeyboardInterrupt), so that the process ends through its exit handlers, and both signals
    are remembered, so that a run they stop is recorded as stopped whatever error it ends with.

    Once stopping, a later SIGTERM or SIGINT is remembered and nothing more: raised inside the
    handling of the first, it would cut the records short and end in tracebacks. That covers
    the SIGTERM Prefect's engine itself sends once it has marked a flow run Crashed (for the
    handler that was there before the flow; Python's default one would kill the process on the
    spot and leave the temporary Prefect server it started running, orphaned), and an
    impatient second Ctrl-C or `docker stop`.

    Wrap a flow call in it.
    """

    def _raise(signum: int, frame) -> None:
        _signalled.append(signum)
        if len(_signalled) > 1:  # stopping already
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise TerminationSignal(signum)

    _signalled.clear()
    previous = {sig: signal.signal(sig, _raise) for sig in _REASONS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _signalled.clear()


def end_parent_run(parent: tracking.RunRef, error: BaseException, logger: logging.Logger) -> BaseException:
    """End the flow's MLflow run as `error` ends the flow: KILLED with its open child runs when
    a signal stopped it, FAILED otherwise. Return the exception the flow should end with: the
    signal itself for a stop (Prefect then marks the flow run Crashed, not Failed), an error
    naming the tracking server when that no longer answers, else `error`."""
    reason = stop_reason(error)
    if reason is not None:
        if not _signalled:  # the training took the signal (Preempted): a later one finds the run stopping
            _signalled.append(signal.SIGINT if reason == _REASONS[signal.SIGINT] else signal.SIGTERM)
        _record_stop(parent, reason, logger)
        if isinstance(error, (KeyboardInterrupt, TerminationSignal)):
            return error
        # Training caught the SIGTERM to save a checkpoint first (Preempted), or the engine raised
        # an error of its own on the signal: the flow ends with the signal.
        stop = KeyboardInterrupt() if reason == _REASONS[signal.SIGINT] else TerminationSignal(signal.SIGTERM)
        stop.__cause__ = error
        return stop
    lost = tracking.lost_server_error(parent.uri)
    if lost is not None:  # nothing can be recorded there; the next run marks this one KILLED
        lost.__cause__ = error
        logger.error("%s", lost)
        return lost
    tracking.end_run(parent, "FAILED")
    return error


def _record_stop(parent: tracking.RunRef, reason: str, logger: logging.Logger) -> None:
    """The parent run and every child run still open (or ended KILLED by its training) KILLED, with `reason`."""
    client = MlflowClient(parent.uri)
    try:
        children = [run for run in child_runs(client, parent) if run.info.status in ("RUNNING", "KILLED")]
        for run in children:
            _mark_killed(client, run, reason)
        tracking.end_run(parent, "KILLED", {STOP_REASON_TAG: reason})
        versions = mark_versions_of_unfinished_run(client, parent.run_id, reason)
    except MlflowException as error:  # the stop goes on: a record that cannot be written is a warning
        logger.warning("%s, but MLflow run %s could not be marked KILLED: %s", reason, parent.run_id, error)
        return
    registered = f"; registered {', '.join(versions)} marked as from an unfinished run" if versions else ""
    logger.error("%s: MLflow run %s and %d child run(s) marked KILLED%s", reason, parent.run_id, len(children), registered)


def child_runs(client: MlflowClient, parent: tracking.RunRef | Run) -> list[Run]:
    """The nested runs of a parent run (the views' runs of a pipeline run)."""
    info = parent.info if isinstance(parent, Run) else parent
    return _search(client, info.experiment_id, f"tags.`{PARENT_TAG}` = '{info.run_id}'")


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=SEARCH_PAGE, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def _mark_killed(client: MlflowClient, run: Run, reason: str) -> None:
    client.log_batch(run.info.run_id, tags=[RunTag(STOP_REASON_TAG, reason)])
    if run.info.status == "RUNNING":
        client.set_terminated(run.info.run_id, status="KILLED")


def close_stale_runs(parent: tracking.RunRef, logger: logging.Logger) -> list[str]:
    """Mark KILLED the runs of the parent's experiment still RUNNING whose process, on this
    host, is gone, with their RUNNING child runs, and their Prefect flow run and its running
    task runs Crashed. Runs of live processes (a concurrent run) are left alone, as are runs
    of other hosts, which this host cannot check. Return a line per run marked, also logged."""
    client = MlflowClient(parent.uri)
    here = tracking.process_tags()[tracking.HOST_TAG]
    running = _search(
        client, parent.experiment_id, f"attributes.status = 'RUNNING' and tags.`{tracking.HOST_TAG}` = '{here}'"
    )
    found_at = datetime.now().astimezone().isoformat(timespec="seconds")
    marked = []
    for run in running:
        process = tracking.process_of(run.data.tags)
        if process is None or run.info.run_id == parent.run_id or still_running(process):
            continue
        reason = (f"{process.describe()} ended without closing this run; "
                  f"found by run {parent.run_id} at {found_at}")
        try:
            marked.append(_close_stale_run(client, run, reason))
        except MlflowException as error:
            logger.warning("MLflow run %s of %s looks stale but could not be marked KILLED: %s",
                           run.info.run_id, process.describe(), error)
    if marked:
        logger.warning("runs left open by processes that no longer exist, now closed:\n%s", "\n".join(marked))
    return marked


def _close_stale_run(client: MlflowClient, run: Run, reason: str) -> str:
    """One stale run and everything under it closed, Prefect's records first (the MLflow run
    RUNNING is what finds them again if that fails); a line saying what was marked."""
    flow_run_id = run.data.tags.get("prefect.flow_run_id")
    prefect_done = ""
    if flow_run_id:
        try:
            prefect_done = "; " + crash_flow_run(flow_run_id, reason)
        except httpx.HTTPError as error:
            prefect_done = f"; Prefect flow run {flow_run_id} could not be marked Crashed: {error}"
    children = [child for child in child_runs(client, run) if child.info.status == "RUNNING"]
    for child in children:
        _mark_killed(client, child, reason)
    _mark_killed(client, run, reason)
    versions = mark_versions_of_unfinished_run(client, run.info.run_id, reason)
    registered = f"; registered {', '.join(versions)} marked as from an unfinished run" if versions else ""
    return (f"MLflow run {run.info.run_id} ({run.info.run_name}) and {len(children)} child run(s) KILLED"
            f"{prefect_done}{registered}: {reason}")


PROJECT_TAG, PROCESS_TAG = "granular.project=", "granular.process="  # prefixes of a flow run's tags


def flow_run_process_tags(root: Path) -> list[str]:
    """The tags a pipeline flow run is created with (prefect.tags around the flow call): the
    project it writes and the process that runs it, so that a later run of the project can tell
    it was killed outright even when it died before it recorded anything else (in its first
    second: no MLflow run yet)."""
    process = current_process()
    return [f"{PROJECT_TAG}{_project_key(root)}", f"{PROCESS_TAG}{process.host}/{process.pid}/{process.start or ''}"]


def _project_key(root: Path) -> str:
    return hashlib.blake2b(str(Path(root).resolve()).encode(), digest_size=8).hexdigest()


def _process_of_flow_run(tags: list[str]) -> ProcessIdentity | None:
    for tag in tags:
        if tag.startswith(PROCESS_TAG):
            host, _, rest = tag.removeprefix(PROCESS_TAG).partition("/")
            pid, _, start = rest.partition("/")
            return ProcessIdentity(host=host, pid=int(pid), start=start or None) if pid.isdigit() else None
    return None


def close_dead_flow_runs(root: Path, current_flow_run_id: str | None, logger: logging.Logger) -> list[str]:
    """Mark Crashed the project's Prefect flow runs still RUNNING or PENDING whose process, on
    this host, is gone (with their running task runs): what a SIGKILL left before the run had an
    MLflow run (close_stale_runs finds the later ones through it). Return a line per run, also logged."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType

    here = current_process().host
    with get_client(sync_client=True) as client:
        open_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"{PROJECT_TAG}{_project_key(root)}"]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])),
        ))
    found_at = datetime.now().astimezone().isoformat(timespec="seconds")
    marked = []
    for flow_run in open_runs:
        process = _process_of_flow_run(flow_run.tags)
        if str(flow_run.id) == current_flow_run_id or process is None or process.host != here or still_running(process):
            continue
        reason = f"{process.describe()} ended without closing this flow run; found by flow run {current_flow_run_id} at {found_at}"
        try:
            marked.append(f"{crash_flow_run(str(flow_run.id), reason)}: {reason}")
        except httpx.HTTPError as error:
            logger.warning("Prefect flow run %s of %s looks stale but could not be marked Crashed: %s",
                           flow_run.id, process.describe(), error)
    if marked:
        logger.warning("flow runs left open by processes that no longer exist, now Crashed:\n%s", "\n".join(marked))
    return marked


def crash_flow_run(flow_run_id: str, message: str) -> str:
    """Force the Prefect flow run `flow_run_id`, if still RUNNING or PENDING, and its task runs
    still RUNNING or PENDING to Crashed with `message`; say what was done."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    try:
        run_id = UUID(flow_run_id)
    except ValueError:
        return f"its Prefect flow run id {flow_run_id!r} is not one"
    with get_client(sync_client=True) as client:
        try:
            flow_run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return f"Prefect flow run {flow_run_id} is not on this Prefect server"
        done = []
        if flow_run.state_type in (StateType.RUNNING, StateType.PENDING):
            client.set_flow_run_state(run_id, Crashed(message=message), force=True)
            done.append(f"Prefect flow run {flow_run.name} ({flow_run_id}) Crashed")
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PENDING],  # PENDING: created, about to run when the kill came
            ))),
        )
        for task_run in task_runs:
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        if task_runs:
            done.append(f"{len(task_runs)} of its task run(s) Crashed")
    return ", ".join(done) or f"Prefect flow run {flow_run_id} had ended already"
