"""The training task's own logic: the progress line over epochs (drawn only on a terminal), the
order and waves views train in, the keys of their progress artifacts."""
import io

from small_project import EVERY_KIND

from tasks.training import EpochBar, epoch_metrics

RECORD = {"epoch": 1, "train_loss": 0.51234, "val_accuracy": 0.9123, "images_per_s": 2345.6}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_shows_epochs_loss_accuracy_and_speed_on_a_terminal():
    stream = _Terminal()
    bar = EpochBar("fine-28", 4, stream=stream)
    bar.update(RECORD)
    bar.update(RECORD)
    drawn = [part for part in stream.getvalue().split("\r") if part]
    assert drawn[-1] == "fine-28 [##########..........] 2/4 epochs | loss 0.5123 | val accuracy 0.9123 | 2346 img/s"
    bar.close()
    assert stream.getvalue().endswith("\r" + " " * len(drawn[-1]) + "\r")  # wiped, cursor at the start
    # A view of a regression target's value shows its validation RMSE, in the target's units.
    stream = _Terminal()
    bar = EpochBar("fine-all", 4, unit="rows", stream=stream)
    bar.update({"train_loss": 0.31, "val_rmse": 52.6124, "images_per_s": 10000.0})
    drawn = [part for part in stream.getvalue().split("\r") if part]
    assert drawn[-1].endswith("| loss 0.31 | val RMSE 52.61 | 10000 rows/s")


def test_no_bar_is_drawn_into_a_file_or_a_pipe():
    stream = io.StringIO()
    bar = EpochBar("fine-28", 4, stream=stream)
    bar.update(RECORD)
    bar.close()
    assert stream.getvalue() == ""


def test_epoch_metrics_are_named_after_the_expert_and_the_earlier_stage():
    assert epoch_metrics(RECORD, 0) == ([], {"train_loss": 0.51234, "val_accuracy": 0.9123, "images_per_s": 2345.6})
    staged = {**RECORD, "stage": 0, "stage_level": "coarse", "segment": 2}
    parts, metrics = epoch_metrics(staged, 1)
    assert parts == ["segment-2", "stage-0-coarse"]
    assert metrics["segment-2.stage-0-coarse.val_accuracy"] == 0.9123 and len(metrics) == 3
    low_resolution = {**RECORD, "stage": 0, "stage_level": "fine", "stage_resolution": 14}
    assert epoch_metrics(low_resolution, 1)[0] == ["stage-0-fine-14"]
    own_stage = {**RECORD, "stage": 1, "stage_level": "fine"}
    assert epoch_metrics(own_stage, 1) == ([], epoch_metrics(RECORD, 0)[1])  # the view's own metrics


def test_a_transfer_trains_in_a_wave_after_its_sources_and_views_fill_the_waves_otherwise():
    from pathlib import Path

    from granular.config import load_config
    from granular.pipeline.order import waves

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    config = load_config(params, [
        EVERY_KIND,
        "transfers={coarse-14: {start_from: coarse-28, level: coarse, resolution: 14},"
        " coarse-7: {start_from: coarse-14, level: coarse, resolution: 7}}",
    ])
    own = ["fine-28", "fine-14", "coarse-28", "fine-14-clusters4"]
    def names(result):
        return [[unit.name for unit in wave] for wave in result]

    assert names(waves(config, 8)) == [own, ["coarse-14"], ["coarse-7"]]
    assert names(waves(config, 3)) == [own[:3], [own[3], "coarse-14"], ["coarse-7"]]
    assert names(waves(config, 1)) == [[name] for name in [*own, "coarse-14", "coarse-7"]]


def test_a_transfer_whose_source_failed_is_not_trained_and_says_why(monkeypatch):
    import logging
    from pathlib import Path

    import tasks.training
    from granular.config import load_config

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    config = load_config(params, [EVERY_KIND, "transfers={coarse-14: {start_from: fine-14, level: coarse, resolution: 14}}"])
    trained = []

    def train_view(config, paths, name, parent, gpu=0):
        trained.append(name)
        if name == "fine-14":
            raise RuntimeError("out of memory (simulated)")
        return {"view": name}

    monkeypatch.setattr(tasks.training, "train_view", train_view)
    monkeypatch.setattr(tasks.training, "concurrent_trainings", lambda threads: 1)
    monkeypatch.setattr(tasks.training, "get_run_logger", lambda: logging.getLogger("test"))
    finished, failed = tasks.training.train_all_views(config, paths=None, parent=None)
    assert trained == ["fine-28", "fine-14", "coarse-28", "fine-14-clusters4"]
    assert [summary["view"] for summary in finished] == ["fine-28", "coarse-28", "fine-14-clusters4"]
    assert failed == {"fine-14": "RuntimeError: out of memory (simulated)",
                      "coarse-14": "its source view fine-14 failed to train"}


def test_a_pair_trains_as_one_unit_and_a_transfer_from_one_of_its_views_after_it():
    from pathlib import Path

    from granular.config import load_config
    from granular.pipeline.order import Unit, waves

    params = Path(__file__).resolve().parents[1] / "params.yaml"
    config = load_config(params, [
        "views={fine-14: {level: fine, resolution: 14}}",
        "cotrained={fine-7: {level: fine, resolution: 7}, fine-4: {level: fine, resolution: 4}}",
        "cotrain={mutual: {first: fine-7, second: fine-4, weight: 0.5}}",
        "transfers={coarse-4: {start_from: fine-4, level: coarse, resolution: 4}}",
    ])
    assert waves(config, 4) == [[Unit("fine-14"), Unit("mutual", pair=True)], [Unit("coarse-4")]]
    assert Unit("mutual", pair=True).views(config) == ["fine-7", "fine-4"]


def test_a_views_progress_key_is_one_prefect_takes_and_no_two_views_share_one():
    from prefect.client.schemas.actions import ArtifactCreate

    from tasks.training import progress_key

    views = ["fine-all", "fine-all-area_code", "fine-all-area-code", "fine-all-Area.Code", "fine-all-área"]
    keys = {view: progress_key(view) for view in views}
    for key in keys.values():
        ArtifactCreate(key=key, type="progress", data=0.0)  # refused with a bad key
    assert len(set(keys.values())) == len(views)
    assert keys["fine-all"] == "train-fine-all"  # a name Prefect takes stays as it is


def test_the_run_progress_says_the_step_the_views_trained_and_what_is_next(monkeypatch):
    from tasks import progress

    shown = []
    monkeypatch.setattr(progress, "create_progress_artifact",
                        lambda **kwargs: shown.append((kwargs["progress"], kwargs["description"])) or "id")
    monkeypatch.setattr(progress, "update_progress_artifact",
                        lambda artifact, progress, description: shown.append((progress, description)))
    run = progress.RunProgress(views=4)
    run.step("train views")
    run.view_done("fine-28")
    run.view_done("fine-14")
    run.step("fuse")
    run.finished()
    assert shown == [
        (0.0, "step 1 of 7: prepare data; next: train views"),
        (10.0, "step 2 of 7: train views (0 of 4 view(s) trained); next: fuse"),
        (26.25, "step 2 of 7: train views (1 of 4 view(s) trained); next: fuse"),
        (42.5, "step 2 of 7: train views (2 of 4 view(s) trained); next: fuse"),
        (75.0, "step 3 of 7: fuse; next: distill"),
        (100.0, "run finished: views trained (2 of 4 done), fused, evaluated and registered"),
    ]
