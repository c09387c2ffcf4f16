"""Prefect flows and the `granular` command line."""
