"""Task caching: an unchanged re-run takes every expensive step from the cache, a changed view
retrains alone, and a cached result that is unreadable or whose outputs changed is recomputed.
Retries: only transient errors are retried."""
from __future__ import annotations

import errno
import logging
import shutil
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.tracking import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.pipeline import granular_pipeline
from granular.config import load_config
from granular.core.validation import ValidationFailed
from granular.store.paths import ProjectPaths
from tasks.caching import HITS_TAG, StepCache, path_digest, results_dir
from tasks.retries import is_transient
from small_project import EVERY_KIND

REPO = Path(__file__).resolve().parents[1]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
VIEWS = ["fine-28", "fine-14", "coarse-28", "fine-14-clusters4"]
# A small run (see tests/small_project.py) with one epoch everywhere.
QUICK = [
    "data.limit=600", "train.epochs=1", "train.width=8", "distill.enabled=true", "distill.epochs=1", "distill.width=8",
    "validate.min_per_class=20",
    "views={fine-28: {level: fine, resolution: 28}, fine-14: {level: fine, resolution: 14},"
    " coarse-28: {level: coarse, resolution: 28},"
    " fine-14-clusters4: {level: fine, resolution: 14, segments: {by: clusters, count: 4, min_size: 40}}}",
]
DATA_STEPS = ["import_raw", "clean_data", "validate_data", "partition_data"]
EXPENSIVE = set(DATA_STEPS) | {f"train_view[{v}]" for v in VIEWS} | {"fuse_views", "distill_student", "fit_cascade", "evaluate_models"}


pytestmark = [pytest.mark.usefixtures("prefect_test_server"), pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project for the whole module, run once in full: the tests re-run it."""
    assert FASHION_MNIST.is_dir(), "the real dataset is needed: apt-get install dataset-fashion-mnist"
    root = tmp_path_factory.mktemp("cached")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "data").mkdir()
    shutil.copy(REPO / "data" / "taxonomy.yaml", root / "data" / "taxonomy.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        started = time.perf_counter()
        first = _run(root, QUICK)
        print(f"\nfull run: {time.perf_counter() - started:.1f} s")
        assert first["hits"] == set()
        yield root


def _run(root: Path, overrides: list[str]) -> dict:
    """Run the pipeline; return the steps it took from the cache, by its own record in MLflow
    and by the state of each Prefect task run."""
    result = granular_pipeline(root=str(root), overrides=overrides)
    parent = MlflowClient(result["tracking_uri"]).get_run(result["mlflow_run_id"])
    recorded = set(parent.data.tags[HITS_TAG].split(", ")) - {"none"}
    assert parent.data.metrics["cache.hits"] == len(recorded)
    states = _task_states(parent.data.tags["prefect.flow_run_id"])
    cached = {name for name, state in states.items() if state == "Cached"}
    assert recorded == cached, "the run's record of its cache hits differs from Prefect's task states"
    return {"hits": recorded, "states": states}


def _task_states(flow_run_id: str, timeout: float = 30.0) -> dict[str, str]:
    """Each expensive task of a flow run (named as the run records its hits) -> its state name.
    Task states reach the API as events, so wait until every one is final."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            states = {_step_name(run.name): run.state for run in runs}
            expensive = {name: state for name, state in states.items() if name in EXPENSIVE}
            if len(expensive) == len(EXPENSIVE) and all(s.is_final() for s in expensive.values()):
                return {name: state.name for name, state in expensive.items()}
            assert time.monotonic() < deadline, f"task runs not final after {timeout} s: {states}"
            time.sleep(0.5)


def _step_name(task_run_name: str) -> str:
    """train-VIEW -> train_view[VIEW]; clean_data-3f2 -> clean_data."""
    if task_run_name.startswith("train-"):
        return f"train_view[{task_run_name.removeprefix('train-')}]"
    return task_run_name.rsplit("-", 1)[0]


@pytest.fixture
def caching_warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="prefect.task_runs")
    return caplog


def test_an_unchanged_rerun_takes_every_expensive_step_from_the_cache(project: Path):
    started = time.perf_counter()
    second = _run(project, QUICK)
    seconds = time.perf_counter() - started
    print(f"\nunchanged re-run: {seconds:.1f} s")
    assert second["hits"] == EXPENSIVE
    assert any(results_dir(ProjectPaths(project)).iterdir())  # persisted in the project, not elsewhere


def test_a_changed_view_retrains_that_view_and_what_depends_on_it(project: Path):
    started = time.perf_counter()
    changed = _run(project, QUICK + ["views.fine-14.train.epochs=2"])
    print(f"\nre-run with one view changed: {time.perf_counter() - started:.1f} s")
    recomputed = EXPENSIVE - changed["hits"]
    assert recomputed == {"train_view[fine-14]", "fuse_views", "distill_student", "fit_cascade", "evaluate_models"}


def test_an_unreadable_result_or_changed_outputs_are_recomputed_with_a_warning(
    project: Path, caching_warnings: pytest.LogCaptureFixture
):
    paths = ProjectPaths(project)
    record = next(results_dir(paths).glob("validate_data-*"))
    record.write_bytes(record.read_bytes()[:100])  # truncated, as by a crash while writing
    shutil.rmtree(paths.model_dir("coarse-28"))
    rerun = _run(project, QUICK)
    assert {"validate_data", "train_view[coarse-28]"}.isdisjoint(rerun["hits"])
    assert {"import_raw", "clean_data", "train_view[fine-28]"} <= rerun["hits"]
    warnings = [r.getMessage() for r in caching_warnings.records if "cached result" in r.getMessage()]
    assert any(str(record) in w and "unreadable" in w for w in warnings), warnings
    assert any("train_view[coarse-28]" in w and "data/models/coarse-28" in w for w in warnings), warnings
    assert (paths.model_dir("coarse-28") / "predictions.npz").is_file()


def test_a_partition_key_ignores_view_training_settings_and_a_train_key_covers_one_view(tmp_path: Path):
    paths = ProjectPaths(tmp_path)
    base = load_config(REPO / "params.yaml", [EVERY_KIND])
    changed = load_config(REPO / "params.yaml", [EVERY_KIND, "views.fine-14.train.lr=0.2"])
    partition = StepCache(stages=("split", "view"), ignored=("views.${key}.train",))
    assert partition.resolve(base, paths).params == partition.resolve(changed, paths).params
    train = StepCache(stages=("train",))
    assert train.resolve(base, paths, "fine-28").params == train.resolve(changed, paths, "fine-28").params
    assert train.resolve(base, paths, "fine-14").params != train.resolve(changed, paths, "fine-14").params
    # The task's own intermediate file (splits.npz, written by split for the view stages) is no input.
    assert "data/processed/splits.npz" in partition.resolve(base, paths).outs
    assert "data/processed/splits.npz" not in partition.resolve(base, paths).deps


def test_a_transfers_keys_cover_its_sources_model_and_its_own_entry(tmp_path: Path):
    paths = ProjectPaths(tmp_path)
    config = load_config(REPO / "params.yaml", [
        EVERY_KIND, "transfers={coarse-14: {start_from: fine-14, level: coarse, resolution: 14, train: {epochs: 2}}}",
    ])
    train = StepCache(stages=("train", "train_transfer"))  # as the training task has them
    transfer = train.resolve(config, paths, "coarse-14")
    assert {"data/processed/coarse-14", "data/models/fine-14"} <= set(transfer.deps)
    assert set(transfer.params) == {"train", "transfers.coarse-14"}
    assert set(transfer.outs) == {"data/models/coarse-14"}
    assert "data/models/fine-14" not in train.resolve(config, paths, "fine-14").deps
    partition = StepCache(stages=("split", "view", "view_transfer"), ignored=("views.${key}.train", "transfers.${key}.train"))
    resolved = partition.resolve(config, paths)
    assert "data/processed/coarse-14" in resolved.outs and "train" not in resolved.params["transfers.coarse-14"]


def test_a_folder_digest_follows_its_content_not_its_timestamps(tmp_path: Path):
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.npz").write_bytes(b"a")
    (folder / "sub" / "b.json").write_text("{}")
    before = path_digest(folder)
    (folder / "a.npz").write_bytes(b"a")  # rewritten, same content
    assert path_digest(folder) == before
    (folder / "sub" / "b.json").write_text("{ }")
    assert path_digest(folder) != before
    assert path_digest(tmp_path / "missing") is None


def test_a_gitignore_that_dvc_commit_writes_into_a_folder_is_not_content(tmp_path: Path):
    folder = tmp_path / "models"
    (folder / "fine-28").mkdir(parents=True)
    (folder / "fine-28" / "model.pt").write_bytes(b"weights")
    before = path_digest(folder)
    (folder / ".gitignore").write_text("/fine-28\n")  # what `dvc commit` leaves in a new project
    assert path_digest(folder) == before


@pytest.mark.parametrize("error, transient", [
    (ConnectionResetError(), True),
    (TimeoutError(), True),
    (OSError(errno.ESTALE, "stale file handle"), True),
    (MlflowException("server down", error_code=databricks_pb2.TEMPORARILY_UNAVAILABLE), True),
    (FileNotFoundError(errno.ENOENT, "no such file"), False),
    (MlflowException("bad value", error_code=databricks_pb2.INVALID_PARAMETER_VALUE), False),
    (ValidationFailed({"failed": [{"table": "images", "expectation": "not null", "details": ""}]}), False),
    (ValueError("bad"), False),
    (MlflowException("no such artifact"), False),  # INTERNAL_ERROR, the code of any uncoded error
])
def test_only_transient_errors_are_retried(error: BaseException, transient: bool):
    assert is_transient(error) is transient


def test_an_error_raised_from_a_transient_one_is_transient():
    try:
        try:
            raise ConnectionRefusedError("tracking server")
        except ConnectionRefusedError as cause:
            raise RuntimeError("could not log") from cause
    except RuntimeError as error:
        assert is_transient(error)
