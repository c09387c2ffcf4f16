"""Prefect tasks: thin wrappers that add logging, MLflow records and artifacts around the steps of granular.pipeline."""
