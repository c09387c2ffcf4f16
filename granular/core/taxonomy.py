"""A label taxonomy: each fine class and its ancestor at every coarser level."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml


class TaxonomyError(ValueError):
    """The taxonomy file is malformed; the message names the class and level at fault."""


@dataclass(frozen=True)
class Taxonomy:
    levels: tuple[str, ...]  # finest first, e.g. ("fine", "coarse")
    names: dict[str, tuple[str, ...]]  # level -> class names, index = class id at that level
    parent: dict[str, np.ndarray]  # level -> (n_fine,) class id at that level of each fine class

    @property
    def fine(self) -> str:
        return self.levels[0]

    @property
    def fine_names(self) -> tuple[str, ...]:
        return self.names[self.fine]

    def num_classes(self, level: str) -> int:
        return len(self.names[self._check_level(level)])

    def map_labels(self, fine_labels: np.ndarray, level: str) -> np.ndarray:
        """Fine label ids -> class ids at `level`."""
        return self.parent[self._check_level(level)][fine_labels]

    def fine_ids_under(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        """The fine class ids under the named classes, each named at any level ("tops" stands for
        every fine class under it), sorted."""
        ids = set()
        for name in names:
            found = [level for level in self.levels if name in self.names[level]]
            if not found:
                raise TaxonomyError(f"{name!r} is no class of the taxonomy at any level {list(self.levels)}")
            level = found[0]
            ids |= set(np.flatnonzero(self.parent[level] == self.names[level].index(name)).tolist())
        return np.array(sorted(ids), dtype=np.int64)

    def _check_level(self, level: str) -> str:
        if level not in self.names:
            raise TaxonomyError(f"unknown taxonomy level {level!r}; levels are {list(self.levels)}")
        return level


def parse_taxonomy(document: dict, source: str = "taxonomy") -> Taxonomy:
    """Build a Taxonomy from {levels: [fine, ...], classes: [{fine: name, coarse: name}, ...]}.

    The position of a class in `classes` is its fine label id.
    """
    levels = document.get("levels") if isinstance(document, dict) else None
    classes = document.get("classes") if isinstance(document, dict) else None
    if not isinstance(levels, list) or not levels or not all(isinstance(l, str) for l in levels):
        raise TaxonomyError(f"{source}: 'levels' must be a non-empty list of level names, finest first")
    bad = [l for l in levels if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", l)]
    if bad:  # level names become parts of view names, file paths and metric keys
        raise TaxonomyError(f"{source}: level names must be letters, digits and '_': {bad}")
    if len(set(levels)) != len(levels):
        raise TaxonomyError(f"{source}: a level is named twice in {levels}")
    if not isinstance(classes, list) or not classes:
        raise TaxonomyError(f"{source}: 'classes' must be a non-empty list, one entry per fine class")
    fine = levels[0]
    rows = []
    for position, entry in enumerate(classes):
        if not isinstance(entry, dict):
            raise TaxonomyError(f"{source}: class #{position} must map each level to a name")
        missing = [level for level in levels if not entry.get(level)]
        if missing:
            raise TaxonomyError(
                f"{source}: class #{position} ({entry.get(fine, '?')}) has no name at level(s) {missing}"
            )
        unknown = sorted(set(entry) - set(levels))
        if unknown:
            raise TaxonomyError(f"{source}: class #{position} names unknown level(s) {unknown}")
        rows.append({level: str(entry[level]) for level in levels})

    fine_names = [row[fine] for row in rows]
    repeated = sorted({n for n in fine_names if fine_names.count(n) > 1})
    if repeated:
        raise TaxonomyError(f"{source}: fine class(es) listed twice: {repeated}")

    # Each class at a level must have exactly one parent at every coarser level.
    for lower, upper in zip(levels, levels[1:]):
        seen: dict[str, str] = {}
        for row in rows:
            known = seen.setdefault(row[lower], row[upper])
            if known != row[upper]:
                raise TaxonomyError(
                    f"{source}: {lower} class {row[lower]!r} has two parents at level "
                    f"{upper!r}: {known!r} and {row[upper]!r}"
                )

    names, parent = {}, {}
    for level in levels:
        ordered = list(dict.fromkeys(row[level] for row in rows))  # first-seen order, stable ids
        names[level] = tuple(ordered)
        parent[level] = np.array([ordered.index(row[level]) for row in rows], dtype=np.int64)
    return Taxonomy(levels=tuple(levels), names=names, parent=parent)


def load_taxonomy(path: Path) -> Taxonomy:
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TaxonomyError(f"no taxonomy file at {path}") from None
    except yaml.YAMLError as error:
        raise TaxonomyError(f"{path} is not valid YAML: {error}") from None
    return parse_taxonomy(document, source=str(path))
