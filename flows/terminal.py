"""What a command prints on the terminal when something fails: one line naming the error, not
the traceback Prefect logs for the failed task, again for the flow and once more as the
exception leaves it (about 175 lines, for an error that one line says); `--debug` adds the
traceback, once. The Prefect server's logs (the UI) keep Prefect's tracebacks either way. And
what it does not print: third parties' notices that say nothing to the user."""
from __future__ import annotations

import logging
import os
import warnings


class _WithoutTraceback(logging.Formatter):
    """The wrapped formatter's line without the record's traceback, which other handlers of the
    same record (Prefect's API log handler) still see."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def hide_tracebacks() -> None:
    """Prefect's terminal output without tracebacks."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()  # its handlers, which a later setup (as prefect loads) keeps

    for logger in (logging.getLogger(), *(logging.getLogger(name) for name in ("prefect", "uvicorn"))):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))


# Third parties' notices that say nothing to a user of granular: MLflow's advice to type-hint the
# served model's predict (it takes an array or a table, checked against the logged signature).
UNSAID = ("Add type hints to the `predict` method",)


def _said(message: object) -> bool:
    return not any(notice in str(message) for notice in UNSAID)


class _Unsaid(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return _said(record.getMessage())


def quiet_third_parties() -> None:
    """Keep the UNSAID notices and MLflow's artifact download bars off the terminal. MLflow
    shows its warnings under a filter of its own (`once`), so they are dropped where they are
    shown: as Python prints a warning, or as Prefect logs it (the py.warnings logger)."""
    logging.getLogger("py.warnings").addFilter(_Unsaid())
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if _said(message):
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def error_lines(error: BaseException, debug: bool = False) -> str:
    """A failure as its message says it, and how to see the rest."""
    return f"granular: {type(error).__name__}: {error}" + ("" if debug else "\ngranular: --debug prints the traceback")
