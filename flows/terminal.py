"""What a command prints on the terminal when something fails: one line naming the error, not
the traceback Prefect logs for the failed task, again for the flow and once more as the
exception leaves it (about 175 lines, for an error that one line says); `--debug` adds the
traceback, once. The Prefect server's logs (the UI) keep Prefect's tracebacks either way. And
what it does not print: third parties' notices that say nothing to the user, which the command's
log file keeps (flows/logfile.py)."""
from __future__ import annotations

import logging
import os
import re
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


# Third parties' notices that say nothing to a user of granular, by a part of their text. They
# go to the command's log file (flows/logfile.py) alone.
UNSAID = (
    # MLflow: advice to type-hint the served model's predict (it takes an array or a table,
    # checked against the logged signature), and how a Python model object would be pickled
    # (granular logs its model as code).
    "Add type hints to the `predict` method",
    "CloudPickle",
    # MLflow: a new tracking store's tables, and a check of the served model's example that passes.
    "Creating initial MLflow database tables",
    "Updating database tables",
    "Validating input example against model signature",
    # Great Expectations: the temporary folder of docs it never builds here.
    "for ephemeral docs site",
    # pandas: a PerformanceWarning about how a wide table's frame was built, not about the data.
    "DataFrame is highly fragmented",
)
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # colours MLflow writes into its warnings' text
# What the terminal leaves out: the log file's alone (flows/logfile.py gives it its handler). Its
# NullHandler keeps Python's last-resort handler from printing it where there is no log file.
ASIDE = logging.getLogger("granular.aside")
ASIDE.propagate = False
ASIDE.addHandler(logging.NullHandler())


def _said(message: object) -> bool:
    return not any(notice in str(message) for notice in UNSAID)


class _SetAside(logging.Filter):
    """A logger's filter: an UNSAID record goes to ASIDE (the log file) instead of to the handlers
    the logger would give it to."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _said(record.getMessage()):
            return True
        ASIDE.handle(record)
        return False


class _ForTheTerminal(logging.Filter):
    """A terminal handler's filter: no UNSAID record (the log file's handler has it), and no
    colour codes in the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _said(record.getMessage()):
            return False
        record.color = None  # MLflow's formatter colours a record that asks for it
        message = record.getMessage()
        if ANSI_CODES.search(message):
            record.msg, record.args = ANSI_CODES.sub("", message), ()
        return True


def quiet_third_parties() -> None:
    """Keep the UNSAID notices and MLflow's artifact download bars off the terminal. MLflow
    shows its warnings under a filter of its own (`once`), so they are dropped where they are
    shown: as Python prints a warning (the rest without colour codes), or as a library logs it
    (the py.warnings logger); either way to ASIDE."""
    logging.getLogger("py.warnings").addFilter(_SetAside())
    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if _said(message):
            show(ANSI_CODES.sub("", str(message)), category, filename, lineno, file, line)
        else:
            ASIDE.warning(ANSI_CODES.sub("", warnings.formatwarning(message, category, filename, lineno, line)).rstrip())

    warnings.showwarning = showwarning
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def terminal_handlers() -> list[logging.Handler]:
    """The handlers that write log lines to the terminal: Prefect's console handler on the root
    logger, and MLflow's own (its loggers do not pass their lines up)."""
    loggers = [logging.getLogger(), logging.getLogger("mlflow")]
    return [h for logger in loggers for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def quiet_terminal_handlers() -> None:
    """The UNSAID log lines off the terminal, and the colour codes out of the rest."""
    for handler in terminal_handlers():
        if not any(isinstance(f, _ForTheTerminal) for f in handler.filters):
            handler.addFilter(_ForTheTerminal())


def error_lines(error: BaseException, debug: bool = False) -> str:
    """A failure as its message says it, and how to see the rest."""
    return f"granular: {type(error).__name__}: {error}" + ("" if debug else "\ngranular: --debug prints the traceback")
