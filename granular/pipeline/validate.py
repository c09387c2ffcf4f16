"""Step validate: Great Expectations on the clean data."""
from __future__ import annotations

from granular.config import Config
from granular.core.validation import markdown_report
from granular.modalities import modality_for
from granular.store.atomic import atomic_dir, write_json
from granular.store.paths import ProjectPaths


VALIDATION_MARKDOWN = "validation.md"  # in data/interim/validation/: every check, for people, offline


def validate_step(config: Config, paths: ProjectPaths) -> dict:
    """Validate clean.npz; write the short report (validation.json), GX's full result of every
    suite, its Data Docs and the same as one Markdown table that reads offline (validation/),
    also when validation fails, and then raise."""
    with atomic_dir(paths.validation_dir) as staging:  # written whole, pass or fail
        validation = modality_for(config).validate(config, paths, docs_dir=staging / "data_docs")
        result = {**validation.report, "suites": validation.results}
        write_json(staging / "result.json", result)
        (staging / VALIDATION_MARKDOWN).write_text(markdown_report(result))
    write_json(paths.validation_report, validation.report)  # kept for the user to read
    validation.raise_if_failed()
    return validation.report
