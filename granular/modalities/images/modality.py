"""Images (IDX, .npz or a folder of picture files) through the pipeline: the `Modality` of
granular/modalities/base.py.

clean.npz holds every kept image (uint8, N x H x W, or N x H x W x 3 in colour; read from its
place in the file a batch of rows at a time) with its fine label, official split of origin and
index there; a view's folder holds, per split, the rows of the clean images it sees (in its
colour, pooled to its resolution as they are read), and, for a segmented view, the cluster of
each image and the segmenter that finds it.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from granular.config import Config, ImageView
from granular.core.partition import ORIGINS, SPLITS, TRAIN_SPLIT
from granular.core.taxonomy import Taxonomy, load_taxonomy
from granular.modalities.base import Baseline, Examples, TrainingData
from granular.modalities.experts import ExpertPlan, single_network
from granular.modalities.images import segments, sources
from granular.modalities.images.clean import clean, subsample
from granular.modalities.images.color import as_seen
from granular.modalities.images.fit import image_fit
from granular.modalities.images.reader import MODALITY, ImageInput, ImageReader
from granular.modalities.images.validate import validate
from granular.modalities.images.views import build_view, view_inputs
from granular.store.atomic import atomic_dir, read_npz, write_json, write_npz
from granular.store.image_file import ImageFile, blocks_of
from granular.store.paths import ProjectPaths


def load_clean(paths: ProjectPaths) -> sources.RawDataset:
    """The clean examples, their images left on disk (read a batch of rows at a time)."""
    arrays = read_npz(paths.clean, "labels", "origin", "index")
    images = ImageFile.npz_member(paths.clean, "images")
    return sources.RawDataset(images=images, labels=arrays["labels"], origin=arrays["origin"], index=arrays["index"])


def _channels(config: Config) -> int:
    return 3 if config.data.source.color == "rgb" else 1


def _taxonomy(config: Config, paths: ProjectPaths) -> Taxonomy:
    return load_taxonomy(paths.taxonomy(config.taxonomy))


class Images:
    name = MODALITY
    fuses_out_of_fold = False  # a network per fold would cost an image set several trainings

    def import_raw(self, config: Config, paths: ProjectPaths) -> list[Path]:
        source = paths.resolve(config.data.source.path, "data.source.path")
        return sources.import_raw(config.data.source.format, source, paths.raw)

    def clean(self, config: Config, paths: ProjectPaths) -> dict:
        taxonomy = _taxonomy(config, paths)
        paths.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="clean-", dir=paths.scratch) as scratch:
            return self._clean(config, paths, taxonomy, Path(scratch))

    def _clean(self, config: Config, paths: ProjectPaths, taxonomy: Taxonomy, scratch: Path) -> dict:
        """Clean with a folder's pictures decoded into `scratch`, a block at a time."""
        raw = sources.load_raw(config.data.source.format, paths.raw, list(taxonomy.fine_names), image_fit(config), scratch)
        raw = subsample(raw, config.data.limit, config.data.limit_seed)
        result = clean(raw, num_classes=len(taxonomy.fine_names), max_pixel=config.clean.max_pixel, scratch=scratch)
        with atomic_dir(paths.quarantine) as staging:
            rejected = result.rejected
            files = {} if rejected.files is None else {"file": rejected.files}  # a folder's: the file of each
            write_npz(
                staging / "rejected.npz",
                images=rejected.images, labels=rejected.labels, origin=rejected.origin,
                index=rejected.index, reason=result.reasons, **files,
            )
            listing = pd.DataFrame({  # csv quoting: a reason may hold a comma ("outside [0, 255]")
                "origin": np.asarray(ORIGINS)[rejected.origin] if len(rejected) else np.array([], dtype=str),
                "index": rejected.index, "label": rejected.labels, **files, "reason": result.reasons,
            })
            listing.to_csv(staging / paths.quarantine_csv.name, index=False)
        kept = result.kept
        write_npz(paths.clean, images=kept.images, labels=kept.labels, origin=kept.origin, index=kept.index)
        report = result.report()
        write_json(paths.clean_report, report)
        return report

    def validate(self, config: Config, paths: ProjectPaths, docs_dir: Path):
        source = (
            f"{paths.clean.relative_to(paths.root)} (cleaned from {paths.raw.relative_to(paths.root)}, "
            f"{config.data.source.format} files imported from {paths.resolve(config.data.source.path, 'data.source.path')})"
        )
        names = _taxonomy(config, paths).fine_names
        return validate(
            load_clean(paths), config.validate_, num_classes=len(names), source=source, docs_dir=docs_dir,
            class_names=names, channels=_channels(config),
            clean_report=json.loads(paths.clean_report.read_text()) if paths.clean_report.is_file() else None,
        )

    def examples(self, config: Config, paths: ProjectPaths) -> Examples:
        data = load_clean(paths)
        return Examples(labels=data.labels, origin=data.origin, index=data.index)

    def view_arrays(
        self, config: Config, paths: ProjectPaths, view: ImageView, taxonomy: Taxonomy, staging: Path
    ) -> dict[str, dict[str, np.ndarray]]:
        """The rows of the clean images in each split, y, the example ids, and for a segmented
        view the cluster of each image, by the segmenter learned on the training split (saved
        into `staging`)."""
        data = load_clean(paths)
        split = read_npz(paths.splits)["split"]
        arrays_by_split = build_view(data, split, taxonomy, view)
        if view.segments:
            training = as_seen(data.images[np.flatnonzero(split == TRAIN_SPLIT)], view.color)
            segmenter = segments.fit_segmenter(training, view.segments, seed=config.split.seed)
            segment = np.concatenate(
                [segmenter.assign(as_seen(block, view.color)) for _, block in blocks_of(data.images)]
            )
            segments.check_segment_sizes(segment, split, segmenter.count, view.segments.min_size, f"view {view.name}")
            for code, split_name in enumerate(SPLITS):
                arrays_by_split[split_name]["segment"] = segment[split == code]
            segmenter.save(staging / segments.SEGMENTER_FILE)
        return arrays_by_split

    def networks_in_view(self, config: Config, paths: ProjectPaths, view: ImageView) -> int:
        return view.segments.count if view.segments else 1

    def training_data(self, config: Config, paths: ProjectPaths, view: ImageView, taxonomy: Taxonomy, warn) -> TrainingData:
        splits = {s: read_npz(paths.view_split(view.name, s)) for s in SPLITS}
        images, in_memory = load_clean(paths).images, config.train_config(view).in_memory_gib
        if view.segments:  # network k: the expert of cluster k
            plan = ExpertPlan(route={s: a["segment"] for s, a in splits.items()},
                              tags=[{"segment": k} for k in range(view.segments.count)])
            segmenter = segments.ClusterSegmenter.load(paths.view_dir(view.name) / segments.SEGMENTER_FILE)
        else:
            plan, segmenter = single_network({s: len(a["y"]) for s, a in splits.items()}), None
        return TrainingData(
            x={s: view_inputs(images, a["rows"], view, in_memory) for s, a in splits.items()},
            y={s: a["y"] for s, a in splits.items()},
            plan=plan, reader=ImageReader(resolution=view.resolution, segmenter=segmenter, color=view.color),
        )

    def student_reader(self, config: Config, paths: ProjectPaths) -> ImageReader:
        return ImageReader(resolution=config.validate_.image_shape[0])  # full size: pooling is a no-op

    def raw_inputs(
        self, config: Config, paths: ProjectPaths, splits: tuple[str, ...], count: int | None = None
    ) -> dict[str, np.ndarray]:
        split = read_npz(paths.splits)["split"]  # one row per clean example
        images = load_clean(paths).images
        return {name: images[np.flatnonzero(split == SPLITS.index(name))[:count]] for name in splits}

    def input_spec(self, config: Config, paths: ProjectPaths) -> ImageInput:
        return ImageInput(image_shape=tuple(config.validate_.image_shape), channels=_channels(config))

    def load_input_spec(self, spec: dict[str, Any]) -> ImageInput:
        return ImageInput(image_shape=tuple(spec["image_shape"]), channels=spec.get("channels", 1))

    def load_reader(self, folder: Path, spec: dict[str, Any]) -> ImageReader:
        return ImageReader.load(folder, spec)

    def baselines(self, config: Config, paths: ProjectPaths) -> dict[str, Baseline]:
        return {}

    def importance_rows(self, config: Config, paths: ProjectPaths) -> None:
        return None  # a pixel is not a feature a user names


IMAGES = Images()
