"""A scheduled deployment of the flow `granular`, served by the process that creates it.

The deployment is registered with the Prefect server (PREFECT_API_URL); this process then polls
it and runs each due run in a subprocess, which inherits this process's environment. At most one
run of the deployment is active at a time: a run that comes due while another is active waits
(ENQUEUE) instead of starting, or being dropped.
"""
from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron
from pydantic import ValidationError

from flows.pipeline import granular_pipeline

ONE_RUN_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


class DeploymentError(ValueError):
    """A schedule, timezone or deployment name that Prefect would refuse."""


def check_schedule(cron: str, timezone: str) -> None:
    """Raise DeploymentError naming what is wrong with the cron expression or the timezone,
    by Prefect's own rules (five cron fields, no random/hashed ones; an IANA timezone)."""
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as error:
        raise DeploymentError(
            "; ".join(str(problem["msg"]).removeprefix("Value error, ") for problem in error.errors())
        ) from None


def build_deployment(
    name: str, cron: str, timezone: str, root: str, params: str | None, overrides: list[str]
) -> RunnerDeployment:
    """The deployment `granular/<name>` of the pipeline on the project at `root`, on a cron
    schedule in `timezone`, one run at a time. Paths are made absolute, since runs may start
    from another working directory. Contacts no server."""
    check_schedule(cron, timezone)
    parameters = {
        "root": str(Path(root).resolve()),
        "params": str(Path(params).resolve()) if params else None,
        "overrides": list(overrides),
    }
    try:
        return granular_pipeline.to_deployment(
            name,
            schedule=Cron(cron, timezone=timezone),
            parameters=parameters,
            concurrency_limit=ONE_RUN_AT_A_TIME,
            # The module path is importable wherever the project is installed, whatever the cwd.
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
    except ValueError as error:  # a name Prefect refuses (InvalidNameError)
        raise DeploymentError(str(error)) from None


def next_run_times(cron: str, timezone: str, count: int = 3) -> list[datetime]:
    """The next `count` times the schedule comes due, in its timezone."""
    from prefect.server.schemas.schedules import CronSchedule as ServerCronSchedule

    return asyncio.run(ServerCronSchedule(cron=cron, timezone=timezone).get_dates(count))


def describe(deployment: RunnerDeployment) -> str:
    """What is about to be served: name, schedule, concurrency, parameters, next runs."""
    schedule = deployment.schedules[0].schedule
    strategy = deployment.concurrency_options.collision_strategy.value
    lines = [
        f"deployment {deployment.full_name}",
        f"  schedule:    cron {schedule.cron!r} in {schedule.timezone}",
        f"  concurrency: {deployment.concurrency_limit} run at a time; a run due meanwhile waits ({strategy})",
    ]
    parameters = deployment.parameters
    lines += [
        f"  root:        {parameters['root']}",
        f"  params:      {parameters['params'] or 'params.yaml under root'}",
        f"  overrides:   {' '.join(parameters['overrides']) or 'none'}",
    ]
    lines.append("  next runs:   " + ", ".join(
        when.isoformat(timespec="minutes") for when in next_run_times(schedule.cron, schedule.timezone)
    ))
    return "\n".join(lines)


def serve_deployment(deployment: RunnerDeployment) -> None:
    """Register the deployment and run its scheduled runs in this process until interrupted;
    the deployment is paused on shutdown, so that runs do not pile up while nothing serves them
    (deploying it again resumes it)."""
    serve(deployment, pause_on_shutdown=True)
