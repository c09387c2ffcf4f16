"""A table's feature groups (data.table.feature_groups): each entry is a column's name or a glob
(fnmatch, case-sensitive: `mfcc_*`, `dim_?`, `band[123]`), expanded against the table's feature
columns. One expansion serves the check of the headers before a run and every view that reads
a group, so both see the same columns."""
from __future__ import annotations

import difflib
import re
from fnmatch import fnmatchcase

_GLOB = "*?["  # fnmatch's special characters: an entry with one of them may be a pattern
_SHOWN_COLUMNS = 10


def is_pattern(entry: str) -> bool:
    return any(character in entry for character in _GLOB)


def entry_columns(entry: str, columns: list[str]) -> list[str]:
    """The columns an entry stands for: the column of that name (even one whose name holds
    `[` or `*`), else every column the glob matches, in the order of `columns`."""
    if entry in columns:
        return [entry]
    return [column for column in columns if fnmatchcase(column, entry)] if is_pattern(entry) else []


def expand_group(name: str, entries: list[str], columns: list[str]) -> list[str]:
    """Group `name`'s columns: each entry in turn, a named column or a glob's matches in the order
    of `columns` (the table's feature columns, header order), each column once. An entry that
    names or matches none of `columns` is a ValueError that says the group, the entry and the
    columns like it."""
    chosen: list[str] = []
    for entry in entries:
        found = entry_columns(entry, columns)
        if not found:
            raise ValueError(unmatched_entry(name, entry, columns))
        chosen += found
    return list(dict.fromkeys(chosen))


def unmatched_entry(name: str, entry: str, columns: list[str]) -> str:
    what = f"pattern {entry!r} matches" if is_pattern(entry) else f"{entry!r} names"
    message = f"feature_groups.{name}: {what} no feature column"
    like = _columns_like(entry, columns)
    if like:
        return f"{message} (did you mean {', '.join(repr(column) for column in like)}?)"
    shown = ", ".join(columns[:_SHOWN_COLUMNS])
    more = f" and {len(columns) - _SHOWN_COLUMNS:,} more" if len(columns) > _SHOWN_COLUMNS else ""
    return f"{message}; the feature columns are {shown}{more}"


def _columns_like(entry: str, columns: list[str]) -> list[str]:
    """Up to three columns close to a name; for a glob, those whose start is close to the text
    before its first wildcard (`petals_*` finds petal_length_cm), in the order of `columns`."""
    stem = re.split(r"[*?\[]", entry)[0]
    if not is_pattern(entry) or not stem:
        return difflib.get_close_matches(entry, columns, n=3, cutoff=0.6)
    starts = set(difflib.get_close_matches(stem, {column[:len(stem)] for column in columns}, n=3, cutoff=0.75))
    return [column for column in columns if column[:len(stem)] in starts][:3]
