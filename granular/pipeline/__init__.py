"""The pipeline's steps, one module each: its entry reads the step's files and configuration,
the modality (granular/modalities/) and the modality-free core do the work, and it writes its
outputs atomically. Both entry points call these functions: the Prefect tasks in tasks/ and the
DVC stages (`python -m granular.pipeline.stages STEP`, see dvc.yaml)."""
