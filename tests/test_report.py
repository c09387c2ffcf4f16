"""The Markdown report: tables, links to the MLflow run and its images."""
from granular.core.report import artifact_link, markdown_report, markdown_table, run_link, summary_lines, value_rows


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
    assert list(images[0])[-3:] == ["hF1", "severity", "img/s"] and images[1]["img/s"] == "1,234"
    table = comparison_rows(_metrics("tables", hierarchy=False))
    assert list(table[0]) == [
        "model", "level", "accuracy", "95% CI", "bal_acc", "bal_acc 95% CI", "macro_f1", "macro_f1 95% CI",
        "ROC-AUC", "ROC-AUC 95% CI", "PR-AUC", "PR-AUC 95% CI", "ECE", "rows/s",
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


def test_a_large_rmse_is_in_fixed_notation_with_thousands_separators_and_its_columns_aligned():
    from flows.cli import format_table

    def model(rmse: float, r2: float) -> dict:
        return {"level": "fine", "rmse": rmse, "rmse_ci_low": rmse * 0.9, "rmse_ci_high": rmse * 1.1,
                "mae": rmse * 0.7, "mae_ci_low": rmse * 0.6, "mae_ci_high": rmse * 0.8, "r2": r2, "r2_ci_low": r2 - 0.05,
                "r2_ci_high": r2 + 0.05}

    metrics = {"task": "regression", "metric": "r2", "best_single": "fine-all", "test": {
        "fine-all": model(45_123.46, 0.81), "fused": model(41_234.5, 0.84), "mean": model(123_456.7, -0.01)}}
    rows = {row["model"]: row for row in value_rows(metrics)}
    assert rows["fused"]["RMSE"] == "41,234.5" and rows["mean"]["RMSE"] == "123,456.7"
    assert rows["fused"]["RMSE 95% CI"] == "[37,111.1, 45,358.0]" and rows["fused"]["R²"] == "0.8400"
    assert rows["fused"]["MAE 95% CI"] == "[24,740.7, 32,987.6]"
    printed = format_table(metrics).splitlines()
    assert not any("e+" in line for line in printed)
    ends = {line.index("0.8") + 6 for line in printed[1:3]} | {printed[3].index("-0.0100") + 7}
    assert ends == {printed[0].index("R²") + 2}  # R² right-aligned under its header in every row


def test_a_small_rmse_keeps_its_digits():
    rows = value_rows({"test": {"fine-all": {"level": "fine", "rmse": 0.012345, "mae": 55.123, "r2": 0.5}}})
    assert (rows[0]["RMSE"], rows[0]["MAE"]) == ("0.01235", "55.12")  # four significant digits


def test_a_model_compared_with_itself_is_said_to_answer_as_it_does():
    metrics = {"task": "regression", "metric": "r2", "fused_minus_best_single": 0.0,
               "fused_minus_best_single_ci": {"low": 0.0, "high": 0.0},
               "paired_test": {"versus": "fine-all", "b": 0, "c": 0, "mse_gain": 0.0, "p_value": 1.0,
                               "method": "paired t on squared errors"},
               "significance": {"test": "paired_t", "versus": "fine-all", "p_value": 1.0, "b": 0, "c": 0, "identical": True}}
    assert summary_lines(metrics, " (R²)") == ["the fused model answers as fine-all does (identical on every test row)"]
    metrics["significance"]["identical"] = False
    metrics["paired_test"] |= {"b": 120, "c": 80, "mse_gain": 1_234_567.8, "p_value": 0.02}
    metrics["fused_minus_best_single"] = 0.012
    assert summary_lines(metrics, " (R²)") == [
        "fused - best single view (R²): +0.0120  95% CI [+0.0000, +0.0000]",
        "fused vs fine-all: mean squared error +1,234,567.8 lower, p = 0.02 (paired t on squared errors); "
        "fused closer on 120 rows, farther on 80",
    ]


def test_the_gain_is_named_in_the_runs_metric_with_its_paired_bootstrap():
    metrics = {"metric": "balanced_accuracy", "fused_minus_best_single": 0.031,
               "fused_minus_best_single_ci": {"low": 0.012, "high": 0.05},
               "significance": {"test": "paired_bootstrap", "versus": "fine-all", "difference": 0.031, "p_value": 0.002,
                                "resamples": 1000, "identical": False}}
    assert summary_lines(metrics) == [
        "fused - best single view (balanced accuracy): +0.0310  95% CI [+0.0120, +0.0500]",
        "paired bootstrap, fused vs fine-all in balanced accuracy: p = 0.002 (1,000 resamples)",
    ]


def test_the_report_card_headlines_the_runs_metric():
    from granular.core.report import headline

    metrics = _metrics("tables", hierarchy=False)
    metrics["metric"] = "balanced_accuracy"
    metrics["test"]["fused"] = {**metrics["test"]["fused"], "balanced_accuracy": 0.8312}
    metrics["test"]["fine-all"] = {**metrics["test"]["fine-all"], "balanced_accuracy": 0.7901}
    assert headline(metrics, "accuracy", "accuracy") == "test balanced accuracy: fused 0.8312, best view fine-all 0.7901"
