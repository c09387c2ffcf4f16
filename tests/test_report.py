"""The Markdown report: tables, links to the MLflow run and its images."""
from granular.core.report import artifact_link, markdown_report, markdown_table, run_link


def test_a_table_has_a_header_a_rule_and_rounded_floats():
    table = markdown_table([{"model": "fused", "accuracy": 0.93181, "ece": float("nan")}])
    assert table.splitlines() == ["| model | accuracy | ece |", "|---|---|---|", "| fused | 0.9318 |  |"]


def test_a_server_run_is_linked_and_a_local_store_is_named():
    assert run_link("http://127.0.0.1:5000/", "3", "abc") == (
        "[MLflow run abc](http://127.0.0.1:5000/#/experiments/3/runs/abc)"
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
