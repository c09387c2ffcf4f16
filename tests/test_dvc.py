"""dvc.yaml is real: `dvc repro` runs the same steps as `granular run`, with the same results."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from small_project import GRANULAR, REPO, VIEWS, SmallRun, run_command, small_dvc_project

pytestmark = pytest.mark.slow  # every test runs dvc repro or reads the small run

DATA_STAGES = ("import_raw", "clean", "split") + tuple(f"view@{v}" for v in VIEWS)


def _dvc(*args: str, cwd: Path) -> str:
    return run_command([sys.executable, "-m", "dvc", *args], cwd)


def _out_hashes(folder: Path, stages: tuple[str, ...]) -> dict[str, list[str]]:
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    return {stage: [out["md5"] for out in lock[stage]["outs"]] for stage in stages}


@pytest.fixture(scope="module")
def repro_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("dvc") / "project"
    params = small_dvc_project(folder)  # as the session's small run has, for comparing the two
    _dvc("repro", cwd=folder)
    return folder, params


def test_dvc_repro_builds_every_stage_then_has_nothing_to_do(repro_project):
    folder, _ = repro_project
    metrics = json.loads((folder / "data/evaluation/metrics.json").read_text())
    assert set(metrics["test"]) == set(VIEWS) | {"fused", "student", "cascade", "fine-28-no-tta"}
    assert "up to date" in _dvc("status", cwd=folder)
    assert "fused" in _dvc("metrics", "show", cwd=folder)
    plots = json.loads(_dvc("plots", "show", "--json", cwd=folder))
    assert {"fused_confusion", "test_accuracy_by_model"} <= set(plots["data"])


def _stages_listing(code: str) -> set[str]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name for name, stage in stages.items() if code in stage.get("do", stage)["deps"]}


@pytest.mark.parametrize(("module", "listed_as"), [
    ("granular/modalities/tables/features.py", "granular/modalities"),
    ("granular/serving/predict.py", "granular/serving"),
])
def test_a_code_change_reruns_the_same_stages_under_dvc_and_the_task_cache(
    repro_project, module: str, listed_as: str, monkeypatch: pytest.MonkeyPatch
):
    from granular.config import load_config
    from granular.store.paths import ProjectPaths
    from tasks import caching

    folder, _ = repro_project
    monkeypatch.setattr(caching, "REPO", folder)  # the task cache reads the project copy's code
    config, paths = load_config(folder / "params.yaml"), ProjectPaths(folder)
    stages = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]

    def cache_keys() -> dict[str, str]:
        return {
            stage: caching.code_version(caching.StepCache(stages=(stage,)).resolve(config, paths).code, run_command)
            for stage in stages
        }

    edited = folder / module
    original = edited.read_text()
    before = cache_keys()
    edited.write_text(original + "\n# an edit\n")
    try:
        rerun_by_dvc = {name.split("@")[0] for name in json.loads(_dvc("status", "--json", cwd=folder))}
        after = cache_keys()
    finally:
        edited.write_text(original)
    rerun_by_cache = {stage for stage in stages if before[stage] != after[stage]}
    # Of the stages listing the code, those the project has (a foreach over no view has none).
    present = {name.split("@")[0] for name in _dvc("stage", "list", "--name-only", cwd=folder).split()}
    assert rerun_by_dvc == rerun_by_cache == _stages_listing(listed_as) & present
    assert "up to date" in _dvc("status", cwd=folder)


def test_a_parameter_reruns_only_the_stages_that_use_it(repro_project):
    folder, params = repro_project
    original = (folder / "params.yaml").read_text()
    try:
        changed = json.loads(json.dumps(params))
        changed["views"]["fine-14"]["train"] = {"epochs": 2}
        (folder / "params.yaml").write_text(yaml.safe_dump(changed))
        # that view's stages, and the fusion, which reads the list of views; no other view
        assert set(json.loads(_dvc("status", "--json", cwd=folder))) == {"view@fine-14", "train@fine-14", "fuse"}

        changed = json.loads(json.dumps(params))
        changed["train"]["lr"] = 0.02
        (folder / "params.yaml").write_text(yaml.safe_dump(changed))
        # every training: the views' and the student's, which follows the same recipe
        assert set(json.loads(_dvc("status", "--json", cwd=folder))) == {f"train@{v}" for v in VIEWS} | {"distill"}

        changed = json.loads(json.dumps(params))
        changed["views"]["fine-14-clusters4"]["segments"]["feature_resolution"] = 4
        (folder / "params.yaml").write_text(yaml.safe_dump(changed))
        assert set(json.loads(_dvc("status", "--json", cwd=folder))) == {
            "view@fine-14-clusters4", "train@fine-14-clusters4", "fuse"
        }
    finally:
        (folder / "params.yaml").write_text(original)


def test_granular_run_records_the_same_data_versions_as_dvc_repro(repro_project, small_run: SmallRun, tmp_path: Path):
    folder = tmp_path / "project"
    shutil.copytree(small_run.root, folder, ignore=shutil.ignore_patterns("prefect"))  # not the live server's state
    assert "up to date" in _dvc("status", cwd=folder)  # the flow committed its outputs to DVC
    assert _out_hashes(folder, DATA_STAGES) == _out_hashes(repro_project[0], DATA_STAGES)

    # The run leads back to its exact data: lose the splits and the local DVC cache, then
    # reproduce the run from the default DVC remote it pushed to.
    run = MlflowClient(f"sqlite:///{folder / 'mlruns.db'}").get_run(small_run.mlflow_run_id)
    assert run.data.tags["granular.dvc.pushed"] == "true"
    shutil.rmtree(folder / "data/processed")
    shutil.rmtree(folder / ".dvc/cache")
    local = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}  # the copy's own store
    assert "restored the data of run" in run_command([GRANULAR, "reproduce", run.info.run_id], folder, env=local)
    for key, md5 in run.data.tags.items():
        if key.startswith("granular.split."):
            view, split = key.removeprefix("granular.split.").removesuffix(".md5").rsplit(".", 1)
            assert hashlib.md5((folder / "data/processed" / view / f"{split}.npz").read_bytes()).hexdigest() == md5


def test_metrics_and_plots_diff_between_two_commits(repro_project, tmp_path: Path):
    folder = tmp_path / "project"
    shutil.copytree(repro_project[0], folder)
    git = ["git", "-c", "user.name=granular tests", "-c", "user.email=tests@localhost"]
    run_command(git + ["add", "-A"], folder)
    run_command(git + ["commit", "-q", "-m", "first run"], folder)
    params = yaml.safe_load((folder / "params.yaml").read_text())
    params["views"]["coarse-28"]["train"] = {"epochs": 3}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    _dvc("repro", cwd=folder)

    diff = json.loads(_dvc("metrics", "diff", "--json", cwd=folder))["data/evaluation/metrics.json"]
    changed = diff["test.coarse-28.accuracy"]
    assert changed["old"] != changed["new"]
    plots = json.loads(_dvc("plots", "diff", "HEAD", "--json", cwd=folder))
    revisions = {rev for entry in plots["data"]["test_accuracy_by_model"] for rev in entry["revisions"]}
    assert revisions == {"HEAD", "workspace"}


def test_a_pair_trains_in_one_stage_and_a_transfer_after_its_source_and_again_when_it_changes(tmp_path: Path):
    folder = tmp_path / "project"
    params = small_dvc_project(folder)
    params["cotrained"] = {"fine-7": {"level": "fine", "resolution": 7}, "fine-4": {"level": "fine", "resolution": 4}}
    params["cotrain"] = {"mutual": {"first": "fine-7", "second": "fine-4", "weight": 0.5}}
    params["transfers"] = {"coarse-7": {"start_from": "fine-7", "level": "coarse", "resolution": 7}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _dvc("repro", "train_transfer@coarse-7", cwd=folder)
    assert ran.index("Running stage 'cotrain@mutual'") < ran.index("Running stage 'train_transfer@coarse-7'")
    lock = yaml.safe_load((folder / "dvc.lock").read_text())["stages"]
    assert {out["path"] for out in lock["cotrain@mutual"]["outs"]} == {"data/models/fine-7", "data/models/fine-4"}
    assert "data/models/fine-7" in {dep["path"] for dep in lock["train_transfer@coarse-7"]["deps"]}
    for view in ("fine-7", "fine-4", "coarse-7"):
        assert (folder / f"data/models/{view}/network-0.pt").is_file()

    params["cotrain"]["mutual"]["weight"] = 0.2  # the pair retrains: so does what starts from it
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert set(json.loads(_dvc("status", "--json", cwd=folder))) >= {"cotrain@mutual"}
    ran = _dvc("repro", "train_transfer@coarse-7", cwd=folder)
    assert "Running stage 'cotrain@mutual'" in ran and "Running stage 'train_transfer@coarse-7'" in ran
    assert "Running stage 'view_transfer@coarse-7'" not in ran and "Running stage 'view_cotrained@fine-7'" not in ran
