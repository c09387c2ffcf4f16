"""What a run reads first, checked before any server or step starts: the data source (a
table's header holds every column the settings name) and the taxonomy file, with the classes
each specialist view names in it. A mistake in any is a configuration error, said in a
fraction of a second, not after a Prefect server has started and the import step has failed."""
from __future__ import annotations

from granular.config import Config, ConfigError
from granular.core.taxonomy import TaxonomyError, load_taxonomy
from granular.pipeline.reads import specialist_class_ids
from granular.store.paths import ProjectPaths


def check_inputs(config: Config, paths: ProjectPaths) -> None:
    source = paths.resolve(config.data.source.path, "data.source.path")
    if not source.exists():
        raise ConfigError(f"data.source.path: {config.data.source.path} does not exist (read as {source})")
    if config.data.table is not None:
        _check_table_columns(config, source)
    if config.taxonomy is None:
        return  # a table's taxonomy is derived from its columns when cleaning
    taxonomy = paths.resolve(config.taxonomy, "taxonomy")
    if not taxonomy.is_file():
        raise ConfigError(f"taxonomy: {config.taxonomy} is not a file (read as {taxonomy})")
    try:
        classes = load_taxonomy(taxonomy)
    except (TaxonomyError, ValueError, OSError) as error:
        raise ConfigError(f"taxonomy: {error}") from None
    specialist_class_ids(config, classes)  # each specialist names classes of it


def _check_table_columns(config: Config, source) -> None:
    from granular.modalities.tables.source import TableSourceError, check_columns  # a table's only

    segments = {
        view.segments.column: f"segment column of view {view.name}"
        for view in config.views.values() if getattr(view.segments, "column", None)
    }
    try:
        check_columns(source, config.data.source.format, config.data.table, also=segments)
    except TableSourceError as error:
        raise ConfigError(f"data.table: {error}") from None
