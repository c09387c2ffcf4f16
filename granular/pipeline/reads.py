"""What the later steps read back from the earlier ones: the taxonomy, a split's rows of
splits.npz (and a regression target's values), each view's outputs (class probabilities, or a
view of a value's values)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from granular.config import Config, ConfigError, ViewConfig
from granular.core.partition import SPLITS, TRAIN_SPLIT, fusion_rows
from granular.core.taxonomy import Taxonomy, TaxonomyError, load_taxonomy
from granular.modalities.experts import read_view_spec
from granular.store.atomic import read_npz
from granular.store.paths import ProjectPaths


def project_taxonomy(config: Config, paths: ProjectPaths) -> Taxonomy:
    return load_taxonomy(paths.taxonomy(config.taxonomy))


def specialist_classes(taxonomy: Taxonomy, view: ViewConfig) -> np.ndarray:
    """The fine class ids a specialist view (`classes:`) learns, two or more and not all."""
    if view.level != taxonomy.fine:
        raise ConfigError(
            f"view {view.name}: classes: a specialist learns fine classes (level {taxonomy.fine}), not level {view.level!r}"
        )
    try:
        ids = taxonomy.fine_ids_under(view.classes)
    except TaxonomyError as error:
        raise ConfigError(f"view {view.name}: classes: {error}") from None
    if not 2 <= len(ids) < len(taxonomy.fine_names):
        raise ConfigError(
            f"view {view.name}: classes: {view.classes} stand for {len(ids)} of the {len(taxonomy.fine_names)} "
            "fine classes; a specialist learns two or more, and fewer than all"
        )
    return ids


def specialist_class_ids(config: Config, taxonomy: Taxonomy) -> dict[str, np.ndarray]:
    """Each specialist view's fine class ids, by name."""
    return {name: specialist_classes(taxonomy, config.view(name)) for name in config.specialists}


def split_rows(paths: ProjectPaths, split_name: str) -> dict[str, np.ndarray]:
    """Every column of splits.npz (label, fold, ...) for the examples of one split."""
    splits = read_npz(paths.splits)
    rows = splits["split"] == SPLITS.index(split_name)
    return {column: values[rows] for column, values in splits.items()}


def split_values(paths: ProjectPaths, split_name: str) -> np.ndarray:
    """A regression target's values of one split's examples (splits.npz is in clean.npz's order)."""
    from granular.modalities.tables.clean_file import TARGET  # a table's: an image run never loads it

    return read_npz(paths.clean)[TARGET][read_npz(paths.splits)["split"] == SPLITS.index(split_name)]


def fitting_rows(paths: ProjectPaths) -> dict[str, np.ndarray]:
    """Every column of splits.npz (label, split, fold, ...) for the rows the fusion is fitted on
    (partition.fusion_rows: training then validation rows out of fold, else validation rows)."""
    splits = read_npz(paths.splits)
    rows = fusion_rows(splits["split"], splits["fold"])
    return {column: values[rows] for column, values in splits.items()}


def out_of_fold(paths: ProjectPaths) -> bool:
    """Whether the split step dealt the training rows into folds: the views are then also trained
    on them, and the fusion fitted on their out-of-fold outputs."""
    splits = read_npz(paths.splits)
    return bool((splits["fold"][splits["split"] == TRAIN_SPLIT] >= 0).any())


# A view's predictions.npz: its outputs on the validation and test splits (`val_proba`,
# `test_proba`), and out of fold (OUT_OF_FOLD: on the training then validation rows, each from
# the fold model that did not learn it; FOLDS_TEST: the fold models' mean on the test split).
OUT_OF_FOLD, FOLDS_TEST = "out_of_fold_proba", "folds_test_proba"
FOLDS_FILE = "folds.json"  # in a view's folder: what each fold model learned and answered, its seconds


def view_fitting_outputs(config: Config, paths: ProjectPaths) -> dict[str, np.ndarray]:
    """Each view's outputs on the rows the fusion is fitted on (fitting_rows)."""
    key = OUT_OF_FOLD if out_of_fold(paths) else "val_proba"
    return {name: read_npz(paths.model_dir(name) / "predictions.npz")[key] for name in config.views}


def view_outputs(config: Config, paths: ProjectPaths, split: str) -> dict[str, np.ndarray]:
    """Each view's outputs on the `split` (val, test), as its train step wrote them (its file
    keeps them as `val_proba`, `test_proba`)."""
    return {name: read_npz(paths.model_dir(name) / "predictions.npz")[f"{split}_proba"] for name in config.views}


@dataclass(frozen=True)
class ProjectReads:
    """The earlier steps' results, as a problem (granular/problems/base.py) reads them."""

    config: Config
    paths: ProjectPaths

    def rows(self, split: str) -> dict[str, np.ndarray]:
        return split_rows(self.paths, split)

    def values(self, split: str) -> np.ndarray:
        return split_values(self.paths, split)

    def fitting_rows(self) -> dict[str, np.ndarray]:
        return fitting_rows(self.paths)

    def fitting_values(self) -> np.ndarray:
        """A regression target's values of the rows the fusion is fitted on."""
        from granular.modalities.tables.clean_file import TARGET

        splits = read_npz(self.paths.splits)
        return read_npz(self.paths.clean)[TARGET][fusion_rows(splits["split"], splits["fold"])]

    def fitting_outputs(self) -> dict[str, np.ndarray]:
        return view_fitting_outputs(self.config, self.paths)

    def outputs(self, split: str) -> dict[str, np.ndarray]:
        return view_outputs(self.config, self.paths, split)

    def specialists(self, taxonomy: Taxonomy) -> dict[str, np.ndarray]:
        return specialist_class_ids(self.config, taxonomy)

    def test_segments(self, view: ViewConfig) -> tuple[np.ndarray, list[str] | None]:
        segment = read_npz(self.paths.view_split(view.name, "test"))["segment"]
        return segment, read_view_spec(self.paths.model_dir(view.name))["reader"].get("expert_values")
