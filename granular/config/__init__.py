"""One typed configuration, loaded from params.yaml (what DVC tracks) plus dotted overrides.

schema.py and training.py hold the sections, views.py the kinds of view and their names,
rules.py the rules across sections, root.py the whole (Config), load.py the reading of
params.yaml and `--set` overrides."""
from granular.config.cascade import CascadeConfig, CascadeStage
from granular.config.load import ConfigError, apply_override, load_config
from granular.config.root import Config
from granular.config.rules import config_paths
from granular.config.schema import (
    MIN_PER_CLASS,
    REGRESSION_METRICS,
    TABLE_FORMATS,
    CleanConfig,
    CotrainPair,
    DataConfig,
    FusionConfig,
    FusionStrategy,
    GateMetric,
    GatingConfig,
    OrchestrationConfig,
    PromotionConfig,
    ServingConfig,
    SourceConfig,
    SplitConfig,
    StackingConfig,
    TableConfig,
    TrackingConfig,
    ValidateConfig,
)
from granular.config.training import (
    ClassWeight,
    DistillConfig,
    Part,
    PartConfig,
    Precision,
    SearchRange,
    StageConfig,
    TrainConfig,
    TreesConfig,
    TuneConfig,
)
from granular.config.views import VIEW_SECTIONS, ClusterSegments, ColumnSegments, ImageView, Learner, TableView, ViewConfig, path_safe

__all__ = [
    "CascadeConfig", "CascadeStage", "ClassWeight", "CleanConfig", "ClusterSegments", "ColumnSegments", "Config",
    "ConfigError", "CotrainPair",
    "DataConfig", "DistillConfig", "FusionConfig", "FusionStrategy", "GateMetric", "GatingConfig", "ImageView",
    "Learner", "MIN_PER_CLASS", "OrchestrationConfig", "Part", "PartConfig", "Precision", "PromotionConfig",
    "REGRESSION_METRICS", "SearchRange", "ServingConfig", "SourceConfig", "SplitConfig", "StackingConfig",
    "StageConfig", "TABLE_FORMATS", "TableConfig", "TableView", "TrackingConfig", "TrainConfig", "TreesConfig",
    "TuneConfig", "VIEW_SECTIONS", "ValidateConfig", "ViewConfig", "apply_override", "config_paths", "load_config",
    "path_safe",
]
