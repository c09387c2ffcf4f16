"""What is predicted, as one object per kind (granular/problems/base.py): classes or a value.
The pipeline finds it once, by name, and asks it."""
from __future__ import annotations

from granular.config import Config
from granular.problems.base import Problem
from granular.problems.classes import CLASSES
from granular.problems.values import VALUES

PROBLEMS = {problem.name: problem for problem in (CLASSES, VALUES)}


def problem_named(name: str) -> Problem:
    """The problem data.table.task (or a record's "task") names."""
    if name not in PROBLEMS:
        raise ValueError(f"no problem named {name!r}; there are {sorted(PROBLEMS)}")
    return PROBLEMS[name]


def problem_for(config: Config) -> Problem:
    """The problem of a run: a table names its task; images are classified."""
    return problem_named(getattr(config.data.table, "task", CLASSES.name))


def problem_of(record: dict) -> Problem:
    """The problem a written record (metrics.json, a fusion record) was made by: a regression's
    records name it; a classification's never carried the key."""
    return problem_named(record.get("task", CLASSES.name))
