"""The Markdown report: tables, links to the MLflow run and its images."""
from granular.core.report import artifact_link, markdown_report, markdown_table, run_link, summary_lines


def test_a_table_has_a_header_a_rule_and_rounded_floats():
    table = markdown_table([{"model": "fused", "accuracy": 0.93181, "ece": float("nan")}])
    assert table.splitlines() == ["| model | accuracy | ece |", "|---|---|---|", "| fused | 0.9318 |  |"]


def test_a_server_run_is_linked_and_a_local_store_is_named():
    assert run_link("http://127.0.0.1:5000/", "3", "abc") == (
        "[MLflow run abc](http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning)"
    )
    assert "`sqlite:///x.db`" in run_link("sqlite:///x.db", "3", "abc")


def test_images_are_embedded_only_when_a_server_can_serve_them():
    served = artifact_link("http://h:5000", "abc", "evaluation/confusion/fused.png")
    assert served == "http://h:5000/get-artifact?path=evaluation/confusion/fused.png&run_uuid=abc"
    assert artifact_link("sqlite:///x.db", "abc", "evaluation/confusion/fused.png") is None
    report = markdown_report(
        "Run", [{"model": "fused"}], ["fused beats fine-28"], "run link",
        {"fused confusion": served, "fused reliability": None},
    )
    assert f"![fused confusion]({served})" in report
    assert "- fused reliability: in the run's artifacts" in report
    assert "- fused beats fine-28" in report and "| fused |" in report


def _metrics(modality: str, hierarchy: bool) -> dict:
    scores = {"level": "fine", "accuracy": 0.9, "accuracy_ci_low": 0.88, "accuracy_ci_high": 0.92, "macro_f1": 0.89,
              "ece": 0.02, **({"hierarchical_f1": 0.95, "mistake_severity": 1.2} if hierarchy else {})}
    return {"modality": modality, "test": {"fine-all": scores, "fused": scores}, "best_single": "fine-all",
            "latency": {"fused": {"images_per_s": 1234.0}}}


def test_a_tables_comparison_counts_rows_and_shows_hierarchy_scores_only_where_there_is_a_hierarchy():
    from granular.problems import CLASSES

    comparison_rows = CLASSES.comparison_rows
    images = comparison_rows(_metrics("images", hierarchy=True))
    assert list(images[0])[-3:] == ["hF1", "severity", "img/s"] and images[1]["img/s"] == "1234"
    table = comparison_rows(_metrics("tables", hierarchy=False))
    assert list(table[0]) == [
        "model", "level", "accuracy", "95% CI", "bal_acc", "macro_f1", "ROC-AUC", "PR-AUC", "ECE", "rows/s",
    ]
    assert "ROC-AUC" not in images[0] and "bal_acc" not in images[0]  # images: every class is common


def test_each_row_ends_with_what_its_training_took_where_it_was_recorded():
    from granular.problems import CLASSES

    comparison_rows = CLASSES.comparison_rows
    metrics = _metrics("images", hierarchy=True)
    assert "train s" not in comparison_rows(metrics)[0]  # recorded for none: no column
    metrics["latency"] = {"fine-all": {"train_seconds": 264.4}, "fused": {"images_per_s": 1234.0, "train_seconds": 470.6}}
    rows = comparison_rows(metrics)
    assert [(row["model"], row["train s"]) for row in rows] == [("fine-all", "264"), ("fused", "471")]
    assert list(rows[0])[-2:] == ["img/s", "train s"]
    metrics["latency"] = {"fine-all": {"images_per_s": 99.0}, "fused": {"train_seconds": 12.0}}
    assert [row["train s"] for row in comparison_rows(metrics)] == ["-", "12"]


def test_the_printed_table_says_which_segments_had_no_expert():
    from flows.cli import format_table

    metrics = _metrics("tables", hierarchy=False)
    metrics["segments"] = {"fine-all-region": {
        "north": {"n": 40, "expert": True, "accuracy": 0.9, "global_accuracy": 0.8},
        "rare": {"n": 3, "expert": False, "accuracy": 0.67, "global_accuracy": 0.67},
    }}
    printed = format_table(metrics)
    assert "rows/s" in printed and "img/s" not in printed and "hF1" not in printed
    assert "north        n=40     expert 0.9000" in printed
    assert "rare         n=3      no expert, the view's global network 0.6700" in printed


def test_the_report_card_carries_the_headline_figures_and_the_verdict():
    from granular.core.report import headline

    metrics = _metrics("tables", hierarchy=False)
    metrics["test"]["hgb"] = {"accuracy": 0.88123}
    metrics["baseline"] = {"model": "hgb"}
    assert headline(metrics, "accuracy", "accuracy", {"version": "3", "promoted": False}) == (
        "test accuracy: fused 0.9000, best view fine-all 0.9000, hgb 0.8812; version 3 champion: no"
    )
    assert headline(_metrics("images", hierarchy=True), "accuracy", "accuracy") == (
        "test accuracy: fused 0.9000, best view fine-all 0.9000"
    )


def test_numbers_for_people_have_four_decimals_wherever_they_nest():
    from granular.core.report import for_people

    shown = for_people({"accuracy": 0.7563333333333333, "scores": {"stacking": [51.8449675746304, 3]}, "model": "fused"})
    assert shown == {"accuracy": 0.7563, "scores": {"stacking": [51.845, 3]}, "model": "fused"}


def test_the_cascade_is_reported_with_who_answered_what_it_gave_up_and_its_speed():
    metrics = {
        "cascade": {"stages": ["fine-28-no-tta", "fused"], "answered": {"fine-28-no-tta": 0.8596, "fused": 0.1404},
                    "accuracy_drop": 0.0002,
                    "mcnemar": {"versus": "fused", "b": 3, "c": 5, "p_value": 0.727, "method": "exact"}},
        "latency": {"cascade": {"images_per_s": 6800.0}, "fused": {"images_per_s": 1700.0}},
    }
    assert summary_lines(metrics) == [
        "cascade answered: fine-28-no-tta 86.0%, fused 14.0%",
        "cascade - fused: -0.0002; McNemar, cascade vs fused: cascade alone right b=3, alone wrong c=5, p = 0.727 (exact)",
        "cascade speed: 4.0x the fused model's (6,800 against 1,700 per second)",
    ]
