"""How a pipeline run that does not end normally is recorded, so that none is left looking alive.

- Stopped by a signal (SIGTERM: a preempted machine, a cancelled job; SIGINT: Ctrl-C): the
  flow's MLflow run and its open child runs end KILLED, tagged with the signal
  (`granular.stop_reason`), and the flow raises the signal on, so that Prefect marks the flow
  run Crashed ("Execution was aborted by a termination signal" / "... an interrupt signal").
- Cut off from its tracking server: the flow fails naming the server (tasks/tracking.py).
- Killed outright (SIGKILL, a power cut), it can record nothing: the next pipeline run finds
  its MLflow runs still RUNNING, sees from their tags that their process is gone, and marks
  them KILLED, and their Prefect flow run and task runs Crashed, saying who found them when.
"""
from __future__ import annotations

import logging
import signal
from contextlib import contextmanager
from datetime import datetime
from typing import Iterator
from uuid import UUID

import httpx
from mlflow.entities import Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from prefect.exceptions import TerminationSignal

from granular.runtime.preemption import Preempted
from granular.runtime.processes import still_running
from tasks import tracking

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

    Wrap a flow call in it: once Prefect's engine has marked a flow run Crashed on SIGTERM, it
    sends SIGTERM again for the handler that was there before the flow; Python's default one
    kills the process on the spot, and the temporary Prefect server the process started stays
    running, orphaned. This one turns that second SIGTERM into an exception, like the first.
    """

    def _raise(signum: int, frame) -> None:
        _signalled.append(signum)
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
    except MlflowException as error:  # the stop goes on: a record that cannot be written is a warning
        logger.warning("%s, but MLflow run %s could not be marked KILLED: %s", reason, parent.run_id, error)
        return
    logger.error("%s: MLflow run %s and %d child run(s) marked KILLED", reason, parent.run_id, len(children))


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
    return (f"MLflow run {run.info.run_id} ({run.info.run_name}) and {len(children)} child run(s) KILLED"
            f"{prefect_done}: {reason}")


def crash_flow_run(flow_run_id: str, message: str) -> str:
    """Force the Prefect flow run `flow_run_id`, if still RUNNING or PENDING, and its task runs
    still RUNNING to Crashed with `message`; say what was done."""
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
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING]))),
        )
        for task_run in task_runs:
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        if task_runs:
            done.append(f"{len(task_runs)} of its task run(s) Crashed")
    return ", ".join(done) or f"Prefect flow run {flow_run_id} had ended already"
