"""docs/results.md is rewritten by the benchmarks' --record: benchmarks/record.py replaces
exactly the block between a benchmark's markers, and the page has the markers each benchmark needs.
Nothing here runs a benchmark or trains a model."""
from __future__ import annotations

import datetime
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import record  # benchmarks/record.py, found through sys.path above

BEFORE = "# Measurements\n\nProse before, kept.\n\n## Demo\n\nWhat the figures mean.\n\n"
AFTER = "\nProse after, kept.\n\n<!-- measured: other -->\nOther figures, kept.\n<!-- /measured: other -->\n"
COMMAND = ".venv/bin/python benchmarks/demo.py --record"
MACHINE = "Test CPU (2 cores), torch 0.0, no GPU"


def page_with_demo(tmp_path: Path) -> Path:
    page = tmp_path / "results.md"
    page.write_text(BEFORE + "<!-- measured: demo -->\nold figures\n\n| x |\n|---|\n| 1 |\n<!-- /measured: demo -->" + AFTER)
    return page


def block_of(text: str, name: str) -> str:
    start, end = record.markers(name)
    return text.split(start + "\n", 1)[1].split(end, 1)[0]


def test_record_replaces_only_the_block_between_the_markers(tmp_path: Path):
    page = page_with_demo(tmp_path)
    rows = [{"rows": 100, "seconds": 1.5, "note": None}, {"rows": 1000, "seconds": 12.0, "note": "a|b"}]
    record.record("demo", rows, page=page, command=COMMAND, machine_text=MACHINE)

    text = page.read_text()
    start, end = record.markers("demo")
    assert text.startswith(BEFORE + start + "\n")
    assert text.endswith(end + AFTER)
    block = block_of(text, "demo")
    assert "old figures" not in block
    first, *rest = block.splitlines()
    assert datetime.date.today().isoformat() in first and MACHINE in first and f"`{COMMAND}`" in first
    assert "| rows | seconds | note |" in rest
    assert "| 100 | 1.5 |  |" in rest
    assert "| 1000 | 12.0 | a\\|b |" in rest  # a pipe in a cell does not split it

    record.record("demo", rows, page=page, command=COMMAND, machine_text=MACHINE)  # once more: the same page
    assert page.read_text() == text


def test_figures_that_are_not_flat_rows_are_written_as_json(tmp_path: Path):
    page = page_with_demo(tmp_path)
    figures = {"device": "cpu", "seconds_to_val_accuracy": {"0.92": 41.0, "0.94": None}}
    record.record("demo", figures, page=page, command=COMMAND, machine_text=MACHINE)
    block = block_of(page.read_text(), "demo")
    fenced = re.search(r"```json\n(.*?)\n```", block, flags=re.DOTALL)
    assert fenced and json.loads(fenced.group(1)) == figures


@pytest.mark.parametrize("text", ["# Measurements\n\nNo markers.\n", "<!-- measured: demo -->\nno end marker\n"])
def test_a_missing_marker_is_an_error_naming_it(tmp_path: Path, text: str):
    page = tmp_path / "results.md"
    page.write_text(text)
    with pytest.raises(ValueError) as raised:
        record.record("demo", [{"a": 1}], page=page, command=COMMAND, machine_text=MACHINE)
    message = str(raised.value)
    assert "<!-- measured: demo -->" in message and "<!-- /measured: demo -->" in message and str(page) in message
    assert page.read_text() == text  # nothing appended


def test_the_line_names_this_machine_and_command():
    import torch

    assert f"({len(os.sched_getaffinity(0))} cores), torch {torch.__version__}, " in record.machine()
    python = str(ROOT / ".venv" / "bin" / "python")
    argv = [str(BENCHMARKS / "train.py"), "--epochs", "2", "--record"]
    assert record.command_line(argv, python) == ".venv/bin/python benchmarks/train.py --epochs 2 --record"


def test_tabular_records_a_row_per_figure():
    import tabular

    results = [
        {"rows": 1000, "pipeline_seconds": 3.0, "test_accuracy": {"fused": 0.5, "hgb": 0.6}},
        {"rows": 2000, "error": ["MemoryError"]},
    ]
    table = record.render(tabular.by_figure(results)).splitlines()
    assert table[0] == "| figure | 1,000 rows | 2,000 rows |"
    assert "| test_accuracy.hgb | 0.6 |  |" in table
    assert "| error |  | MemoryError |" in table


def recording_benchmarks() -> list[str]:
    return sorted(path.stem for path in BENCHMARKS.glob("*.py") if '"--record"' in path.read_text())


def test_the_page_has_the_markers_of_every_benchmark_that_records():
    names = recording_benchmarks()
    assert {"train", "overhead", "tabular"} <= set(names)
    for name in names:
        record.check(name)  # raises, naming the marker, when docs/results.md lacks it


def test_a_compared_setting_may_name_its_view():
    import train  # benchmarks/train.py

    assert train.split_view(["view=fine-14", "train.epochs=3"], "fine-28") == ("fine-14", ["train.epochs=3"])
    assert train.split_view(["train.epochs=3"], "fine-28") == ("fine-28", ["train.epochs=3"])


def test_the_one_network_of_the_views_passes_scales_each_stage_and_the_staged_one_keeps_the_passes():
    import granularity  # benchmarks/granularity.py
    from granular.config import TrainConfig

    staged_view = TrainConfig(epochs=12, stages=[{"level": "fine", "epochs": 14, "resolution": 14}])
    longer = granularity.scaled(staged_view, 1.846)
    assert ([s.epochs for s in longer.stages], longer.epochs) == ([26], 22)
    coarse_first, coarse = granularity.coarse_first(staged_view)
    assert coarse == 4 and coarse_first.total_epochs == staged_view.total_epochs and coarse_first.epochs == 12
    assert [(s.level, s.epochs, s.resolution) for s in coarse_first.stages] == [("coarse", 4, 14), ("fine", 10, 14)]
    plain, coarse = granularity.coarse_first(TrainConfig(epochs=12))
    assert coarse == 4 and [(s.level, s.epochs) for s in plain.stages] == [("coarse", 4)] and plain.epochs == 8


def test_serving_rotates_the_models_round_by_round_and_reports_medians_of_rounds():
    import serving  # benchmarks/serving.py

    names = ["fine-28", "fused", "student"]
    orders = [serving.round_order(names, r) for r in range(4)]
    assert orders[:3] == [["fine-28", "fused", "student"], ["fused", "student", "fine-28"], ["student", "fine-28", "fused"]]
    assert orders[3] == orders[0]
    for position in range(3):  # over three rounds, every model is measured once in every position
        assert {order[position] for order in orders[:3]} == set(names)

    summary = serving.latency_summary([0.001 * k for k in range(1, 101)])  # 1..100 ms
    assert summary["p50_ms"] == pytest.approx(50.5) and summary["p99_ms"] == pytest.approx(99.01)
    with pytest.raises(ValueError, match="at least one request"):
        serving.latency_summary([])

    rounds = [{"a": {"p50_ms": 1.0, "images_per_s": 100.0}, "b": {"p50_ms": 9.0, "images_per_s": 5.0}},
              {"a": {"p50_ms": 50.0, "images_per_s": 300.0}, "b": {"p50_ms": 7.0, "images_per_s": 6.0}},
              {"b": {"p50_ms": 8.0, "images_per_s": 1.0}, "a": {"p50_ms": 2.0, "images_per_s": 200.0}}]
    assert serving.medians_over_rounds(rounds) == {
        "a": {"p50_ms": 2.0, "images_per_s": 200.0}, "b": {"p50_ms": 8.0, "images_per_s": 5.0},
    }


def test_serving_times_each_request_after_a_warm_up_in_the_order_of_the_round():
    import serving  # benchmarks/serving.py

    calls, firsts, now = [], [], [0.0]

    def model(name: str, seconds_per_image: float):
        def predict(batch):
            calls.append((name, len(batch)))
            firsts.append(int(batch[0, 0, 0]))
            now[0] += seconds_per_image * len(batch)
        return predict

    figures = serving.measure_round({"slow": model("slow", 0.01), "fast": model("fast", 0.001)},
                                    np.arange(512 * 4).reshape(512, 2, 2) // 4, requests=3, round_index=1,
                                    clock=lambda: now[0])
    assert [name for name, _ in calls] == ["fast"] * 7 + ["slow"] * 7  # round 1 starts with the second model
    assert [size for _, size in calls[:7]] == [1, 1, 1, 1, 256, 256, 256]  # warm-up + 3 requests, warm-up + 2 batches
    assert firsts[:4] == [0, 0, 1, 2]  # after the warm-up, each request is the next image
    assert figures["slow"]["p50_ms"] == pytest.approx(10) and figures["fast"]["p99_ms"] == pytest.approx(1)
    assert figures["slow"]["images_per_s"] == pytest.approx(100) and figures["fast"]["images_per_s"] == pytest.approx(1000)
