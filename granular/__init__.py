"""granular: train one model per granularity of a dataset and fuse them into one.

The package in layers, each importing only those below it (tests/test_architecture.py checks it):

    pipeline     one module per step; the Prefect tasks (tasks/) and the DVC stages call them
    serving      the fused model: its bundle, the classifier rebuilt from it, the MLflow pyfunc
    modalities   images and tables behind one protocol, and the one expert loop both use
    nn           networks, the training loop, compression, distillation
    core         taxonomy, splits, fusion, evaluation, validation, promotion, report
    config, runtime, store   the ground: the typed configuration, run plumbing, files

demo/ holds demo data (example and synthetic tables).
"""
