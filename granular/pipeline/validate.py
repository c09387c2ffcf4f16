"""Step validate: Great Expectations on the clean data."""
from __future__ import annotations

from granular.config import Config
from granular.modalities import modality_for
from granular.store.atomic import atomic_dir, write_json
from granular.store.paths import ProjectPaths


def validate_step(config: Config, paths: ProjectPaths) -> dict:
    """Validate clean.npz; write the short report (validation.json), GX's full result of every
    suite and its Data Docs (validation/), also when validation fails, and then raise."""
    with atomic_dir(paths.validation_dir) as staging:  # written whole, pass or fail
        validation = modality_for(config).validate(config, paths, docs_dir=staging / "data_docs")
        write_json(staging / "result.json", {**validation.report, "suites": validation.results})
    write_json(paths.validation_report, validation.report)  # kept for the user to read
    validation.raise_if_failed()
    return validation.report
