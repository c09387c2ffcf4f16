"""The run's report as Markdown: the comparison table, the significance of the fusion, the images
and where the MLflow run is. Shown as a Prefect artifact; built here from plain data."""
from __future__ import annotations

import math
from urllib.parse import quote

from granular.core.promotion import metric_label
from granular.runtime.redact import redact_uri


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI when the store is a server, else how to open it. The
    link asks for the model-training view: MLflow 3.17 otherwise opens a run in the view last
    chosen in the browser, GenAI for a browser that never chose."""
    tracking_uri = redact_uri(tracking_uri)  # one from MLFLOW_TRACKING_URI may hold a password
    if tracking_uri.startswith(("http://", "https://")):
        page = f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
        return f"[MLflow run {run_id}]({page})"
    return f"MLflow run `{run_id}` in `{tracking_uri}` (open with `mlflow ui --backend-store-uri {tracking_uri}`)"


def artifact_link(tracking_uri: str, run_id: str, artifact_path: str) -> str | None:
    """Where a browser can fetch one of the run's artifacts: only through a tracking server."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    tracking_uri = redact_uri(tracking_uri)
    return f"{tracking_uri.rstrip('/')}/get-artifact?path={quote(artifact_path)}&run_uuid={run_id}"


SPEED = "img/s"
COST = "train s"  # seconds of training on this machine: a fused model's are its inputs'
# Each class score's column, for people, and the score it shows; its interval follows it.
CLASS_COLUMNS = {
    "accuracy": "accuracy", "bal_acc": "balanced_accuracy", "macro_f1": "macro_f1", "ROC-AUC": "roc_auc",
    "PR-AUC": "pr_auc",
}
HIERARCHY = ("hF1", "severity")  # scores of a taxonomy of two levels or more
# Shown for tables, where a class is often rare (metrics.json and comparison.csv have them always).
IMBALANCE = ("bal_acc", "ROC-AUC", "PR-AUC")


def interval_column(column: str) -> str:
    """The column of a score's 95% interval in a table of classes: accuracy's is "95% CI", the
    others' name their score."""
    return "95% CI" if column == "accuracy" else f"{column} 95% CI"


def named_interval_column(column: str) -> str:
    """The column of a score's 95% interval, named after it (a regression's table)."""
    return f"{column} 95% CI"


def for_people(value):
    """A score as people read it, where it is shown (a table, a tag, a log line): four decimals,
    in nested dicts and lists too. metrics.json and the MLflow metrics keep every digit."""
    if isinstance(value, dict):
        return {key: for_people(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [for_people(item) for item in value]
    return round(value, 4) if isinstance(value, float) else value


def decimals_for(values, significant: int = 4) -> int:
    """Decimals that show the largest of `values` to about `significant` digits in fixed
    notation: 0.1234, 55.12, 1,234.5 (at least 1, at most 6); 4 where there is no number."""
    sizes = [abs(v) for v in values if v is not None and math.isfinite(v) and v != 0]
    if not sizes:
        return 4
    return min(6, max(1, significant - 1 - math.floor(math.log10(max(sizes)))))


def number(value: float | None, decimals: int = 4) -> str:
    """A figure in fixed notation, with thousands separators (1,234.5, never 1.2e+03); "-" where
    there is none (None, or nan: an undefined score)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{decimals}f}"


def interval(low: float | None, high: float | None, decimals: int = 4) -> str:
    """A 95% interval as [low, high], each as `number` shows it; "-" without both ends."""
    if number(low) == "-" or number(high) == "-":
        return "-"
    return f"[{number(low, decimals)}, {number(high, decimals)}]"


def _scores_with_intervals(
    scores: dict, columns: dict[str, str], decimals: dict[str, int], interval_named=interval_column,
) -> dict[str, str]:
    """Each column's score and, after it, its interval (`<score>_ci_low`, `<score>_ci_high`) in
    the column `interval_named` names."""
    cells = {}
    for column, key in columns.items():
        cells[column] = number(scores.get(key), decimals.get(key, 4))
        cells[interval_named(column)] = interval(
            scores.get(f"{key}_ci_low"), scores.get(f"{key}_ci_high"), decimals.get(key, 4),
        )
    return cells


def _machine(latency: dict, name: str, speed: str) -> dict[str, str]:
    """What a model's answers and its training cost on this machine."""
    figures = latency.get(name, {})
    return {speed: number(figures.get("images_per_s"), 0), COST: number(figures.get("train_seconds"), 0)}


VALUE_SCORES = {"RMSE": "rmse", "MAE": "mae", "R²": "r2", "accuracy": "accuracy"}


def value_rows(metrics: dict) -> list[dict[str, str]]:
    """A regression's table: RMSE, MAE and R² of each model of the value, each with its interval
    (RMSE and MAE in the target's units: fixed notation, the decimals of the column's largest); a
    binned view's accuracy (its bins are classes). Each row ends with what the model's training
    took, where it was recorded."""
    latency = metrics.get("latency", {})
    test = metrics["test"]
    decimals = {key: decimals_for([scores.get(key) for scores in test.values()]) for key in ("rmse", "mae")}
    rows = [
        {"model": name, "level": scores.get("level", "-"),
         **_scores_with_intervals(scores, VALUE_SCORES, decimals, named_interval_column), **_machine(latency, name, "rows/s")}
        for name, scores in test.items()
    ]
    return _without_empty(rows, (COST, named_interval_column("accuracy")))


def class_rows(metrics: dict) -> list[dict[str, str]]:
    """One row of display strings per model of classes: the table the terminal and the report
    show, each score followed by its 95% interval. A metric a model lacks (hierarchy scores of a
    coarse view) shows as "-"; the hierarchy columns show only where a model has them (a
    taxonomy of one level has none); a table's rows show the scores that tell a rare class
    apart, and its speed in rows/s. Each row ends with what the model's training took, where it
    was recorded."""
    latency = metrics.get("latency", {})
    tables = metrics.get("modality") == "tables"
    speed = "rows/s" if tables else SPEED
    shown = {column: key for column, key in CLASS_COLUMNS.items() if tables or column not in IMBALANCE}
    rows = []
    for name, scores in metrics["test"].items():
        rows.append({
            "model": f"{name} (on its classes)" if name in metrics.get("specialists", {}) else name,
            "level": scores.get("level", "-"),
            **_scores_with_intervals(scores, shown, {}),
            "ECE": number(scores.get("ece")),
            "hF1": number(scores.get("hierarchical_f1")),
            "severity": number(scores.get("mistake_severity"), 2),
            **_machine(latency, name, speed),
        })
    return _without_empty(rows, (*HIERARCHY, COST))


def _without_empty(rows: list[dict[str, str]], columns: tuple[str, ...]) -> list[dict[str, str]]:
    """`rows` without those of `columns` that no row has a figure in."""
    empty = [c for c in columns if all(row[c] == "-" for row in rows)]
    return [{c: v for c, v in row.items() if c not in empty} for row in rows]


def headline(metrics: dict, metric: str, label: str, registry: dict | None = None) -> str:
    """The run in one line, for a card that is read before it is opened: the fused model's test
    score in the run's metric (metrics.json's "metric"; where it names none, `metric`, the
    problem's headline, with `label` for people) against the best single view's (and the boosted
    trees', where there are), and the registry's verdict. `registry`: what registering the model
    returned, if it was."""
    if metrics.get("metric", metric) != metric:
        metric = metrics["metric"]
        label = metric_label(metric)
    test = metrics["test"]
    parts = [f"fused {test['fused'][metric]:.4f}"]
    best = metrics.get("best_single")
    if best:
        parts.append(f"best view {best} {test[best][metric]:.4f}")
    baseline = metrics.get("baseline", {}).get("model")
    if baseline in test:
        parts.append(f"{baseline} {test[baseline][metric]:.4f}")
    line = f"test {label}: " + ", ".join(parts)
    if registry is not None:
        line += f"; version {registry['version']} champion: {'yes' if registry['promoted'] else 'no'}"
    return line


def summary_lines(metrics: dict, gain_unit: str = "") -> list[str]:
    """The fusion against the best single view in the run's metric: the gain (in that metric,
    named where it is not accuracy; `gain_unit` names it for an evaluation that does not say)
    with its paired interval, and its paired test: McNemar's, the paired bootstrap or a
    regression's paired test of squared errors. A fused model that answers as the best view does
    on every test row is said to, in place of a test of no difference."""
    lines = []
    metric = metrics.get("metric")
    unit = f" ({metric_label(metric)})" if metric not in (None, "accuracy") else gain_unit
    test = metrics.get("significance", {})
    identical = test.get("identical", False)
    if identical:
        lines.append(f"the fused model answers as {test['versus']} does (identical on every test row)")
    if "fused_minus_best_single" in metrics and not (identical and metrics["fused_minus_best_single"] == 0):
        ci = metrics.get("fused_minus_best_single_ci")
        shown = f"  95% CI [{ci['low']:+.4f}, {ci['high']:+.4f}]" if ci else ""
        lines.append(f"fused - best single view{unit}: {metrics['fused_minus_best_single']:+.4f}{shown}")
    if "mcnemar" in metrics and not identical:
        mcnemar = metrics["mcnemar"]
        lines.append(f"McNemar, fused vs {mcnemar['versus']}: fused alone right b={mcnemar['b']}, "
                     f"alone wrong c={mcnemar['c']}, p = {mcnemar['p_value']:.3g} ({mcnemar['method']})")
    if test.get("test") == "paired_bootstrap":
        lines.append(f"paired bootstrap, fused vs {test['versus']} in {metric_label(metric)}: p = {test['p_value']:.3g} "
                     f"({test['resamples']:,} resamples)")
    if "cascade" in metrics:
        lines += _cascade_lines(metrics)
    if "paired_test" in metrics and not identical:
        paired = metrics["paired_test"]
        gain = number(paired["mse_gain"], decimals_for([paired["mse_gain"]]))
        lines.append(f"fused vs {paired['versus']}: mean squared error {'+' if paired['mse_gain'] >= 0 else ''}{gain} lower, "
                     f"p = {paired['p_value']:.3g} ({paired['method']}); fused closer on {paired['b']:,} rows, "
                     f"farther on {paired['c']:,}")
    return lines


def _cascade_lines(metrics: dict) -> list[str]:
    """Who answered in the cascade, what it gave up against the fused model, and its speed."""
    cascade = metrics["cascade"]
    shares = ", ".join(f"{stage} {share:.1%}" for stage, share in cascade["answered"].items())
    test = cascade["mcnemar"]
    lines = [
        f"cascade answered: {shares}",
        f"cascade - fused: {-cascade['accuracy_drop']:+.4f}; McNemar, cascade vs fused: cascade alone right "
        f"b={test['b']}, alone wrong c={test['c']}, p = {test['p_value']:.3g} ({test['method']})",
    ]
    latency = metrics.get("latency", {})
    speeds = [latency.get(name, {}).get("images_per_s") for name in ("cascade", "fused")]
    if all(speeds):
        lines.append(
            f"cascade speed: {speeds[0] / speeds[1]:.1f}x the fused model's ({speeds[0]:,.0f} against {speeds[1]:,.0f} per second)"
        )
    return lines


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a Markdown table (floats to 4 places, missing values blank)."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(
    title: str, comparison: list[dict], summary_lines: list[str], run: str, images: dict[str, str | None]
) -> str:
    """The report: a heading, the comparison table, summary lines, the run and the images
    (embedded where a link can be fetched, else named)."""
    parts = [f"# {title}", "", markdown_table(comparison), ""]
    parts += [f"- {line}" for line in summary_lines]
    parts += ["", run, ""]
    for caption, link in images.items():
        parts.append(f"![{caption}]({link})" if link else f"- {caption}: in the run's artifacts")
    return "\n".join(parts) + "\n"
