"""The modality-free domain: taxonomy, splits and folds, fusion strategies, evaluation metrics,
validation with Great Expectations, the promotion gate, the report and its plots."""
