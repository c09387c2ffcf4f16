"""The terminal side of training: a progress line over epochs, drawn only on a terminal."""
import io

from tasks.training import EpochBar, epoch_metrics

RECORD = {"epoch": 1, "train_loss": 0.51234, "val_accuracy": 0.9123, "images_per_s": 2345.6}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_shows_epochs_loss_accuracy_and_speed_on_a_terminal():
    stream = _Terminal()
    bar = EpochBar("fine-28", 4, stream)
    bar.update(RECORD)
    bar.update(RECORD)
    drawn = [part for part in stream.getvalue().split("\r") if part]
    assert drawn[-1] == "fine-28 [##########..........] 2/4 epochs | loss 0.5123 | val acc 0.9123 | 2346 img/s"
    bar.close()
    assert stream.getvalue().endswith("\r" + " " * len(drawn[-1]) + "\r")  # wiped, cursor at the start


def test_no_bar_is_drawn_into_a_file_or_a_pipe():
    stream = io.StringIO()
    bar = EpochBar("fine-28", 4, stream)
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
