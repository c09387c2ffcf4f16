"""Retries for tasks whose failures can be transient (a tracking server, a network mount): with
exponential backoff and jitter, and only when the error is of a transient kind, so that a
deterministic failure (a missing file, a bad value) is reported at once rather than three times."""
from __future__ import annotations

import errno
from typing import Any

import requests
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from prefect.tasks import exponential_backoff

# OS errors that a moment later may not happen again: a busy or unreachable resource.
TRANSIENT_ERRNOS = {
    errno.EAGAIN, errno.EBUSY, errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ECONNRESET,
    errno.ECONNREFUSED, errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH,
}
# MLflow error codes of a server that is unavailable, overloaded or timed out (HTTP 503, 429, 504).
# Not INTERNAL_ERROR: every MlflowException raised without a code has it. A lost connection
# reaches us as an MlflowException raised while handling the requests error, found below.
TRANSIENT_MLFLOW_CODES = {
    databricks_pb2.ErrorCode.Name(code) for code in (
        databricks_pb2.TEMPORARILY_UNAVAILABLE, databricks_pb2.REQUEST_LIMIT_EXCEEDED, databricks_pb2.DEADLINE_EXCEEDED,
    )
}


def is_transient(error: BaseException | None) -> bool:
    """Whether `error`, or an error it was raised from, is of a kind that may pass: a lost
    connection, a timeout, a busy resource or store, an unavailable MLflow server."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        if isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS:
            return True
        if isinstance(error, MlflowException) and error.error_code in TRANSIENT_MLFLOW_CODES:
            return True
        if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)):
            return True
        if isinstance(error, sqlalchemy.exc.OperationalError) and "database is locked" in str(error):
            return True  # a SQLite tracking store busy with another writer
        error = error.__cause__ or error.__context__
    return False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry a failed run only if its error is transient."""
    error = state.data if isinstance(state.data, BaseException) else None
    return is_transient(error)


# For @task(**TRANSIENT_RETRIES): 3 retries after about 2, 4 and 8 s, each delay varied by up
# to half again, so that runs failing together do not retry in step.
TRANSIENT_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_if_transient,
}
