"""The run's report as Markdown: the comparison table, the significance of the fusion, the images
and where the MLflow run is. Shown as a Prefect artifact; built here from plain data."""
from __future__ import annotations

import math
from urllib.parse import quote

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
COLUMNS = (
    "model", "level", "accuracy", "95% CI", "bal_acc", "macro_f1", "ROC-AUC", "PR-AUC", "ECE", "hF1", "severity", SPEED,
    COST,
)
HIERARCHY = ("hF1", "severity")  # scores of a taxonomy of two levels or more
# Shown for tables, where a class is often rare (metrics.json and comparison.csv have them always).
IMBALANCE = ("bal_acc", "ROC-AUC", "PR-AUC")


def for_people(value):
    """A score as people read it, where it is shown (a table, a tag, a log line): four decimals,
    in nested dicts and lists too. metrics.json and the MLflow metrics keep every digit."""
    if isinstance(value, dict):
        return {key: for_people(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [for_people(item) for item in value]
    return round(value, 4) if isinstance(value, float) else value


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _interval(low: float | None, high: float | None, spec: str) -> str:
    return "-" if low is None or high is None else f"[{format(low, spec)}, {format(high, spec)}]"


VALUE_COLUMNS = ("model", "level", "RMSE", "95% CI", "MAE", "R²", "R² 95% CI", "accuracy", "rows/s", COST)


def value_rows(metrics: dict) -> list[dict[str, str]]:
    """A regression's table: RMSE, MAE and R² of each model of the value, with intervals; a
    binned view's accuracy (its bins are classes). Each row ends with what the model's training
    took, where it was recorded."""
    latency = metrics.get("latency", {})
    rows = [dict(zip(VALUE_COLUMNS, (
        name,
        scores.get("level", "-"),
        _number(scores.get("rmse"), ".4g"),
        _interval(scores.get("rmse_ci_low"), scores.get("rmse_ci_high"), ".4g"),
        _number(scores.get("mae"), ".4g"),
        _number(scores.get("r2"), ".4f"),
        _interval(scores.get("r2_ci_low"), scores.get("r2_ci_high"), ".4f"),
        _number(scores.get("accuracy"), ".4f"),
        _number(latency.get(name, {}).get("images_per_s"), ".0f"),
        _number(latency.get(name, {}).get("train_seconds"), ".0f"),
    ))) for name, scores in metrics["test"].items()]
    return _without_empty(rows, (COST,))


def class_rows(metrics: dict) -> list[dict[str, str]]:
    """One row of display strings per model of classes: the table the terminal and the report
    show. A metric a model lacks (hierarchy scores of a coarse view) shows as "-"; the hierarchy
    columns show only where a model has them (a taxonomy of one level has none); a table's rows
    show the scores that tell a rare class apart, and its speed in rows/s. Each row ends with
    what the model's training took, where it was recorded."""
    latency = metrics.get("latency", {})
    speed = "rows/s" if metrics.get("modality") == "tables" else SPEED
    rows = []
    for name, scores in metrics["test"].items():
        rows.append(dict(zip(COLUMNS, (
            f"{name} (on its classes)" if name in metrics.get("specialists", {}) else name,
            scores.get("level", "-"),
            _number(scores.get("accuracy"), ".4f"),
            _interval(scores.get("accuracy_ci_low"), scores.get("accuracy_ci_high"), ".4f"),
            _number(scores.get("balanced_accuracy"), ".4f"),
            _number(scores.get("macro_f1"), ".4f"),
            _number(scores.get("roc_auc"), ".4f"),
            _number(scores.get("pr_auc"), ".4f"),
            _number(scores.get("ece"), ".4f"),
            _number(scores.get("hierarchical_f1"), ".4f"),
            _number(scores.get("mistake_severity"), ".2f"),
            _number(latency.get(name, {}).get("images_per_s"), ".0f"),
            _number(latency.get(name, {}).get("train_seconds"), ".0f"),
        ))))
    rows = _without_empty(rows, (*HIERARCHY, COST))
    hidden = [] if metrics.get("modality") == "tables" else IMBALANCE
    return [{(speed if c == SPEED else c): v for c, v in row.items() if c not in hidden} for row in rows]


def _without_empty(rows: list[dict[str, str]], columns: tuple[str, ...]) -> list[dict[str, str]]:
    """`rows` without those of `columns` that no row has a figure in."""
    empty = [c for c in columns if all(row[c] == "-" for row in rows)]
    return [{c: v for c, v in row.items() if c not in empty} for row in rows]


def headline(metrics: dict, metric: str, label: str, registry: dict | None = None) -> str:
    """The run in one line, for a card that is read before it is opened: the fused model's test
    `metric` (its problem's headline: accuracy, R²; `label` for people) against the best single
    view's (and the boosted trees', where there are), and the registry's verdict. `registry`:
    what registering the model returned, if it was."""
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
    """The fusion against the best single view: the gain (in `gain_unit`, where it is not
    accuracy: " (R²)") with its paired interval, and McNemar (a regression's paired test of
    squared errors)."""
    lines = []
    if "fused_minus_best_single" in metrics:
        ci = metrics.get("fused_minus_best_single_ci")
        interval = f"  95% CI {_interval(ci['low'], ci['high'], '+.4f')}" if ci else ""
        lines.append(f"fused - best single view{gain_unit}: {metrics['fused_minus_best_single']:+.4f}{interval}")
    if "mcnemar" in metrics:
        test = metrics["mcnemar"]
        lines.append(f"McNemar, fused vs {test['versus']}: fused alone right b={test['b']}, "
                     f"alone wrong c={test['c']}, p = {test['p_value']:.3g} ({test['method']})")
    if "cascade" in metrics:
        lines += _cascade_lines(metrics)
    if "paired_test" in metrics:
        test = metrics["paired_test"]
        lines.append(f"fused vs {test['versus']}: mean squared error {test['mse_gain']:+.4g} lower, p = {test['p_value']:.3g} "
                     f"({test['method']}); fused closer on {test['b']} rows, farther on {test['c']}")
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
