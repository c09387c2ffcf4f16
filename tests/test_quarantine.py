"""Nothing silently dropped: the quarantine counted by reason, and a failed validation's results
and Data Docs kept on disk and in MLflow, on a small npz source with bad rows (no training)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import tasks.data
from flows.pipeline import granular_pipeline
from granular.config import load_config
from granular.core.quarantine import project_summary_line, reason_slug, rejected_by_reason_metrics, summary_line
from granular.core.validation import ValidationFailed
from granular.store.paths import ProjectPaths

REPO = Path(__file__).resolve().parents[1]
REPORT = {
    "examined": 1200, "kept": 1197, "rejected": 3,
    "rejected_by_reason": {"label outside the taxonomy's 0..9": 2, "non-finite pixel value (NaN or inf)": 1},
}


def test_reasons_become_metric_keys():
    assert reason_slug("non-finite pixel value (NaN or inf)") == "non_finite_pixel_value_nan_or_inf"
    assert reason_slug("pixel value outside [0, 255]") == "pixel_value_outside_0_255"
    assert rejected_by_reason_metrics(REPORT) == {
        "clean.rejected.label_outside_the_taxonomy_s_0_9": 2,
        "clean.rejected.non_finite_pixel_value_nan_or_inf": 1,
    }


def test_summary_line_counts_each_reason_and_names_the_listing():
    assert summary_line(REPORT, Path("data/quarantine/rejected.csv")) == (
        "quarantined: 3 of 1200 examples (2 label outside the taxonomy's 0..9, "
        "1 non-finite pixel value (NaN or inf)) -> data/quarantine/rejected.csv"
    )
    nothing = {"examined": 10, "rejected": 0, "rejected_by_reason": {}}
    assert summary_line(nothing, Path("q.csv")) == "quarantined: 0 of 10 examples -> q.csv"


def test_project_summary_line_reads_the_clean_report(tmp_path: Path):
    assert "nothing recorded" in project_summary_line(tmp_path)
    paths = ProjectPaths(tmp_path)
    paths.clean_report.parent.mkdir(parents=True)
    paths.clean_report.write_text(json.dumps(REPORT))
    assert project_summary_line(tmp_path).startswith("quarantined: 3 of 1200 examples (2 label outside")
    assert project_summary_line(tmp_path).endswith(f"-> {paths.quarantine_csv}")


# 3 train and 2 test images of each of the taxonomy's 10 classes, then the bad rows.
PER_CLASS = {"train": 3, "test": 2}
BAD_TRAIN_ROWS = {30: "label", 31: "label", 32: "nan", 33: "range"}  # index in x_train -> what is wrong


def _npz_source(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for origin, per_class in PER_CLASS.items():
        labels = np.repeat(np.arange(10), per_class)
        arrays[f"x_{origin}"] = rng.integers(0, 256, (len(labels), 28, 28)).astype(np.float32)
        arrays[f"y_{origin}"] = labels
    bad = rng.integers(0, 256, (len(BAD_TRAIN_ROWS), 28, 28)).astype(np.float32)
    bad[2, 5, 5] = np.nan
    bad[3, 0, 0] = 300.0
    arrays["x_train"] = np.concatenate([arrays["x_train"], bad])
    arrays["y_train"] = np.concatenate([arrays["y_train"], [12, 11, 0, 1]])
    path = folder / "source.npz"
    np.savez(path, **arrays)
    return path




@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "data").mkdir()
    shutil.copy(REPO / "data" / "taxonomy.yaml", tmp_path / "data" / "taxonomy.yaml")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _parent_runs(project: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{project / 'mlruns.db'}")
    experiment = client.get_experiment_by_name(load_config(project / "params.yaml").tracking.experiment)
    return client, client.search_runs([experiment.experiment_id], order_by=["attribute.start_time ASC"])


def _artifact_files(client: MlflowClient, run_id: str, path: str = "") -> list[str]:
    files = []
    for entry in client.list_artifacts(run_id, path):
        files += _artifact_files(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return files


@pytest.mark.slow
def test_a_failed_validation_is_recorded_and_the_quarantine_counted(
    prefect_test_server, project: Path, monkeypatch: pytest.MonkeyPatch
):
    from prefect.artifacts import Artifact

    overrides = [f"data.source.path={_npz_source(project)}", "data.source.format=npz", "validate.min_per_class=3"]
    with pytest.raises(ValidationFailed, match=r"class_counts, column 'count': .*\n +e\.g\. origin=test label=0 class=T-shirt/top: count=2"):
        granular_pipeline(root=str(project), overrides=overrides)

    # On disk: GX's result of every suite and its Data Docs, though validation failed.
    validation = project / "data/interim/validation"
    result = json.loads((validation / "result.json").read_text())
    assert result["success"] is False and result["source"].startswith("data/interim/clean.npz (cleaned from data/raw, npz")
    assert result["suites"]["granular_class_counts"]["success"] is False
    assert "granular_class_counts" in (validation / "data_docs/index.html").read_text()

    # In MLflow: the same files, and the quarantine by reason, in the FAILED parent run.
    client, [run] = _parent_runs(project)
    assert run.info.status == "FAILED"
    logged = _artifact_files(client, run.info.run_id)
    assert {"validation/result.json", "validation/data_docs/index.html", "quarantine/rejected.csv"} <= set(logged)
    assert any(f.startswith("validation/data_docs/validations/granular_class_counts/") for f in logged)
    metrics = run.data.metrics
    assert metrics["clean.rejected"] == 4 and metrics["clean.kept"] == 50
    assert metrics["clean.rejected.label_outside_the_taxonomy_s_0_9"] == 2
    assert metrics["clean.rejected.non_finite_pixel_value_nan_or_inf"] == 1
    assert metrics["clean.rejected.pixel_value_outside_0_255"] == 1
    listing = pd.read_csv(client.download_artifacts(run.info.run_id, "quarantine/rejected.csv", str(project / "dl")))
    assert sorted(listing["index"]) == sorted(BAD_TRAIN_ROWS) and set(listing["origin"]) == {"train"}
    assert "pixel value outside [0, 255]" in set(listing["reason"])  # a comma inside a quoted field

    # In Prefect: every expectation, passed or failed.
    artifact = Artifact.get("granular-validation")
    assert "## Data validation FAILED" in artifact.data and "| class_counts | count |" in artifact.data

    # A rerun takes the clean step from the cache, and still records its quarantine.
    cleaned = []
    monkeypatch.setattr(tasks.data, "clean_step", lambda *args: cleaned.append(args))
    with pytest.raises(ValidationFailed):
        granular_pipeline(root=str(project), overrides=overrides)
    assert cleaned == []
    client, [_, rerun] = _parent_runs(project)
    assert rerun.data.metrics["clean.rejected.label_outside_the_taxonomy_s_0_9"] == 2
    assert "quarantine/rejected.csv" in _artifact_files(client, rerun.info.run_id, "quarantine")
    assert "validation/result.json" in _artifact_files(client, rerun.info.run_id, "validation")


def _image_project(root, labels: list[int], taxonomy_classes: list[str], **validate) -> tuple:
    """An npz of 4x4 images with these labels and a one-level taxonomy of these classes."""
    import numpy as np
    import yaml

    from granular.config import Config
    from granular.store.paths import ProjectPaths

    rng = np.random.default_rng(0)
    y = np.asarray(labels)
    np.savez(root / "source.npz", x_train=rng.integers(0, 255, (len(y), 4, 4)), y_train=y,
             x_test=rng.integers(0, 255, (len(y), 4, 4)), y_test=y)
    (root / "taxonomy.yaml").write_text(yaml.safe_dump({"levels": ["fine"], "classes": [{"fine": c} for c in taxonomy_classes]}))
    config = Config.model_validate({
        "data": {"source": {"format": "npz", "path": str(root / "source.npz")}},
        "validate": {"image_shape": [4, 4], "min_per_class": 10, **validate}, "taxonomy": "taxonomy.yaml",
        "views": {"fine-4": {"level": "fine", "resolution": 4}},
    })
    return config, ProjectPaths(root)


def test_a_taxonomy_that_lacks_a_class_fails_validation_naming_the_label(tmp_path):
    """With one class left out of taxonomy.yaml, label 2's 30 examples would all be set aside
    (and with classes told apart by position, the names after it shift): refused, not run."""
    import pytest

    from granular.core.validation import ValidationFailed
    from granular.pipeline.clean import clean_step
    from granular.pipeline.import_raw import import_raw_step
    from granular.pipeline.validate import validate_step

    config, paths = _image_project(tmp_path, [0, 1, 2] * 30, ["a", "b"])
    import_raw_step(config, paths)
    assert clean_step(config, paths)["unknown_labels"] == {"2": 60}  # 30 in each official split
    with pytest.raises(ValidationFailed, match=r"(?s)labels_outside_the_taxonomy, column 'examples'.*label=2: examples=60"):
        validate_step(config, paths)
    # One stray label is a fault of that example, set aside; the run goes on.
    config, paths = _image_project(tmp_path, [0, 1] * 45 + [7], ["a", "b"])
    import_raw_step(config, paths)
    clean_step(config, paths)
    assert validate_step(config, paths)["success"]


def test_setting_aside_more_than_the_allowed_share_fails_validation(tmp_path):
    import pytest

    from granular.core.validation import ValidationFailed
    from granular.pipeline.clean import clean_step
    from granular.pipeline.import_raw import import_raw_step
    from granular.pipeline.validate import validate_step

    config, paths = _image_project(tmp_path, [0, 1] * 45 + [7] * 9, ["a", "b"], max_quarantined_share=0.05)
    import_raw_step(config, paths)
    clean_step(config, paths)  # 18 of 198 set aside: 9%
    with pytest.raises(ValidationFailed, match=r"(?s)quarantine, column 'share'.*max_value=0.05.*set_aside=18"):
        validate_step(config, paths)


def test_a_taxonomy_class_the_data_lacks_fails_validation_naming_it(tmp_path):
    import pytest

    from granular.core.validation import ValidationFailed
    from granular.pipeline.clean import clean_step
    from granular.pipeline.import_raw import import_raw_step
    from granular.pipeline.validate import validate_step

    config, paths = _image_project(tmp_path, [0, 1] * 30, ["a", "b", "Ankle boot"])
    import_raw_step(config, paths)
    clean_step(config, paths)
    with pytest.raises(ValidationFailed, match=r"(?s)class_counts.*origin=train label=2 class=Ankle boot: count=0"):
        validate_step(config, paths)


def test_a_folder_of_pictures_of_any_size_runs_with_its_broken_files_set_aside_by_name(tmp_path):
    import numpy as np
    import pandas as pd
    import yaml
    from PIL import Image

    from granular.config import Config
    from granular.pipeline.clean import clean_step
    from granular.pipeline.import_raw import import_raw_step
    from granular.pipeline.validate import validate_step
    from granular.store.atomic import read_npz
    from granular.store.paths import ProjectPaths

    rng = np.random.default_rng(0)
    source = tmp_path / "pictures"
    for origin in ("train", "test"):
        for name in ("a", "b"):
            (source / origin / name).mkdir(parents=True)
            for number in range(12):
                height, width = rng.integers(10, 40, size=2)
                Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), mode="L").save(
                    source / origin / name / f"{number}.{'png' if number % 2 else 'jpg'}")
    (source / "train" / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not the rest of a JPEG")
    (tmp_path / "taxonomy.yaml").write_text(yaml.safe_dump({"levels": ["fine"], "classes": [{"fine": "a"}, {"fine": "b"}]}))
    config = Config.model_validate({
        "data": {"source": {"format": "folder", "path": str(source)}},
        "validate": {"image_shape": [16, 16], "min_per_class": 10}, "taxonomy": "taxonomy.yaml",
        "views": {"fine-16": {"level": "fine", "resolution": 16}},
    })
    paths = ProjectPaths(tmp_path)
    import_raw_step(config, paths)
    report = clean_step(config, paths)
    assert (report["examined"], report["kept"]) == (49, 48)
    assert read_npz(paths.clean)["images"].shape == (48, 16, 16)
    listing = pd.read_csv(paths.quarantine_csv)
    assert listing[["file", "reason"]].values.tolist() == [["train/b/broken.jpg", "cannot be read as an image (UnidentifiedImageError)"]]
    assert validate_step(config, paths)["success"]  # 1 of 49 set aside: under validate.max_quarantined_share
