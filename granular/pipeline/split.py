"""Step split: assign every example to train/val/test once, for all views, and the examples the
fusion is fitted on (the validation split; a small table's training and validation rows) to the
folds it is cross-fitted over (data/processed/splits.npz)."""
from __future__ import annotations

from granular.config import Config
from granular.core import partition
from granular.modalities import modality_for
from granular.pipeline.reads import project_taxonomy
from granular.store.atomic import write_npz
from granular.store.paths import ProjectPaths


def split_step(config: Config, paths: ProjectPaths) -> dict:
    modality = modality_for(config)
    examples = modality.examples(config, paths)
    labels = examples.labels
    split = partition.assign_splits(
        labels, examples.origin, config.split.val_fraction, config.split.seed, given_val=examples.given_val
    )
    partition.check_every_class_in_every_split(labels, split, project_taxonomy(config, paths))
    among = (partition.VAL_SPLIT,)
    # Co-trained pairs train together and transfers start from a network that learned every
    # fold: neither has models of its own per fold.
    if modality.fuses_out_of_fold and not config.cotrain and not config.transfers:
        among = partition.out_of_fold_splits(split, config.split.out_of_fold_rows)
    fold = partition.assign_folds(labels, split, config.split.folds, config.split.seed, among)
    write_npz(paths.splits, origin=examples.origin, index=examples.index, label=labels, split=split, fold=fold)
    return {name: int((split == code).sum()) for code, name in enumerate(partition.SPLITS)}
