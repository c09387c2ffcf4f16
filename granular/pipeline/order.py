"""Which trainings a run makes and in what order: one per view, one per `cotrain` pair, each
transfer after the training of its source view. Plain data from the configuration, so the
Prefect flow and its tests read the same plan."""
from __future__ import annotations

from dataclasses import dataclass

from granular.config import Config


@dataclass(frozen=True)
class Unit:
    """One training: a view, or a `cotrain` pair of views trained together."""

    name: str
    pair: bool = False

    def views(self, config: Config) -> list[str]:
        return [config.cotrain[self.name].first, config.cotrain[self.name].second] if self.pair else [self.name]

    def source(self, config: Config) -> str | None:
        """The view whose trained network this training starts from (a transfer's), or None."""
        return None if self.pair else config.views[self.name].start_from


def training_units(config: Config) -> list[Unit]:
    """Every view's training in the views' order: a pair where its first view comes."""
    units = []
    for name in config.views:
        pair = config.pair_of(name)
        if pair is None:
            units.append(Unit(name))
        elif config.cotrain[pair].first == name:
            units.append(Unit(pair, pair=True))
    return units


def waves(config: Config, width: int) -> list[list[Unit]]:
    """The trainings in waves of at most `width` at once, in the views' order (sources before
    the transfers that start from them), each transfer in a wave after its source's."""
    result: list[list[Unit]] = []
    for unit in training_units(config):
        in_last = {view for other in result[-1] for view in other.views(config)} if result else set()
        if not result or len(result[-1]) == width or unit.source(config) in in_last:
            result.append([])
        result[-1].append(unit)
    return result
