"""The fused model as one object: its bundle on disk, the classifier rebuilt from it, and the
MLflow pyfunc that serves it."""
