"""`granular` command line:
    granular run [--root DIR] [--params FILE] [--set key=value ...]
    granular reproduce MLFLOW_RUN_ID [--root DIR]
    granular tune VIEW [--root DIR] [--params FILE] [--set key=value ...]
    granular predict --model URI_OR_BUNDLE --input FILE_OR_DIR [--output CSV] [--batch-size N]
    granular server [--root DIR] [--prefect-port 4200] [--mlflow-port 5000] [--host 127.0.0.1]
    granular deploy --cron "0 3 * * *" [--timezone TZ] [--name NAME] [--root DIR] [--params FILE] [--set key=value ...]

Each subcommand has its own --help. argparse rather than typer or click: it already gives that
help, and importing typer took ~80 ms against argparse's ~4 ms, on a command whose whole
`granular --help` takes ~0.3 s (measured on this project's 2-core machine, December 2026).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Callable

from flows.logfile import log_to_file
from flows.terminal import error_lines, hide_tracebacks, quiet_third_parties
from granular.config import Config, ConfigError, load_config
from granular.pipeline.preflight import check_inputs
from granular.runtime.redact import redact_uri
from granular.store.paths import ProjectPaths


def format_table(metrics: dict) -> str:
    """Test metrics as a fixed-width table, fused model last, then the fusion against the best
    single view and each segmented view's experts."""
    from granular.core.report import summary_lines
    from granular.problems import problem_of

    problem = problem_of(metrics)
    rows = problem.comparison_rows(metrics)
    columns = list(rows[0]) if rows else []
    # Each column as wide as its widest cell (at least 8; the model's at least 20), so that
    # intervals and large figures stay in line.
    widths = {column: max([8, len(column), *(len(row[column]) for row in rows)]) for column in columns}
    widths["model"] = max(20, widths.get("model", 0))
    left = ("model", "level")

    def line(cells) -> str:
        return " ".join(
            f"{cell:<{widths.get(column, 8)}}" if column in left else f"{cell:>{widths.get(column, 8)}}"
            for column, cell in zip(columns, cells)
        )

    lines = [line(columns)]
    for row in rows:
        mark = "  <- best single view" if row["model"] == metrics.get("best_single") else ""
        lines.append(line(row.values()) + mark)
    lines += summary_lines(metrics, problem.gain_unit)
    metric, label, spec = problem.segment_score
    for view, by_segment in metrics.get("segments", {}).items():
        lines.append(f"\n{view}: test {label} of each segment's expert vs the global model")
        for segment, scores in by_segment.items():
            global_key = f"global_{metric}"
            versus = f"  global {scores[global_key]:{spec}}" if global_key in scores else ""
            answered = "expert" if scores.get("expert", True) else "no expert, the view's global network"
            lines.append(f"  {segment:<12} n={scores['n']:<6} {answered} {scores[metric]:{spec}}{versus}")
    return "\n".join(lines)


# Settings of the tools, unless the environment sets them. No outside network is assumed: the
# tools' usage reports would only fail and log errors. Prefect's temporary server gets 20 s to
# answer by default; the first run after an install, on a busy 2-core machine, took longer.
TOOL_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "granular",  # granular's own lines in the Prefect UI too
}


def _run(args: argparse.Namespace, config: Config) -> int:
    from flows.pipeline import granular_pipeline  # Prefect and torch load only when needed
    from flows.servers import prefect_api
    from granular.core.quarantine import project_summary_line
    from prefect import tags

    from tasks.crashes import flow_run_process_tags, stop_signals_raise

    root = Path(args.root)
    # A stopped run still stops its temporary server; its flow run names its project and process.
    with stop_signals_raise(), prefect_api(root), tags(*flow_run_process_tags(root)):
        result = granular_pipeline(root=args.root, params=args.params, overrides=args.overrides)
    print()
    print(format_table(result["metrics"]))
    for view, error in result["failed_views"].items():
        print(f"left out: view {view} failed to train: {error}")
    print(f"\nmetrics:     {Path(args.root) / 'data/evaluation/metrics.json'}")
    print(project_summary_line(Path(args.root)))
    print(f"MLflow run:  {result['mlflow_run_id']} in {redact_uri(result['tracking_uri'])}")
    print(f"served:      {result['model_uri']}")
    from tasks.registry import summary_line

    print(summary_line(result["registry"]))
    return 0


def _reproduce(args: argparse.Namespace, config: Config) -> int:
    from mlflow.exceptions import MlflowException

    from tasks.tracking import tracking_uri
    from tasks.versioning import ReproduceError, restore_run_data

    paths = ProjectPaths(Path(args.root).resolve())
    try:
        hashes = restore_run_data(paths, tracking_uri(config, paths), args.run_id)
    except (ReproduceError, MlflowException) as error:
        print(f"granular: cannot reproduce run {args.run_id}: {error}", file=sys.stderr)
        return 1
    print(f"restored the data of run {args.run_id}: dvc.lock and its outputs; "
          f"{len(hashes)} split files match the hashes the run recorded")
    return 0


def _tune(args: argparse.Namespace, config: Config) -> int:
    from flows.servers import prefect_api
    from flows.tune import tune_flow
    from tasks.crashes import stop_signals_raise

    if args.view not in config.views:
        print(f"granular: no view named {args.view!r}; views are {list(config.views)}", file=sys.stderr)
        return 2
    with stop_signals_raise(), prefect_api(Path(args.root)):
        result = tune_flow(view=args.view, root=args.root, params=args.params, overrides=args.overrides)
    trials = result["trials"]
    print(f"\n{args.view}: best {result['metric']} = {result['best_value']:.4f} "
          f"({trials['COMPLETE']} trials completed, {trials['PRUNED']} pruned, {trials['FAIL']} failed)")
    for key, value in result["best_params"].items():
        print(f"  train.{key} = {value}")
    print(f"proposal:   {result['proposal']}  (merge into params.yaml to use it)")
    print(f"MLflow run: {result['mlflow_run_id']}")
    return 0


def _predictor(model: str, config: Config, root: Path) -> tuple[tuple[int, ...], Callable]:
    """The shape of an image a model takes ((H, W) grey, (H, W, C) colour) and its predict function (images -> table): a model's folder
    (data/cascade/, data/fused/) as it serves, with serving.backoff_threshold; anything else
    (models:/name@alias, runs:/..., an MLflow model folder) as an MLflow pyfunc, which carries
    its own threshold."""
    from granular.serving.served import holds_a_model, load_served

    if holds_a_model(Path(model)):
        import pandas as pd

        classifier = load_served(Path(model))
        pixels = getattr(classifier.inputs, "pixels", None)
        if pixels is None:
            raise ValueError(f"{model} is a model of a table's rows, not of images; give it a .csv or .parquet file")
        threshold = config.serving.backoff_threshold
        return pixels, lambda images: pd.DataFrame(classifier.predict(images, threshold))
    import mlflow.pyfunc

    from tasks.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(config, ProjectPaths(root.resolve())))  # where models:/ and runs:/ resolve
    served = mlflow.pyfunc.load_model(model)
    schema = served.metadata.get_input_schema()
    if schema is None or not schema.is_tensor_spec():
        raise ValueError(f"{model} has no image input signature (an (N, H, W) or (N, H, W, C) tensor)")
    return tuple(schema.inputs[0].shape[1:]), served.predict


TABLE_SUFFIXES = {".csv": "read_csv", ".parquet": "read_parquet"}


def _predict_rows(args: argparse.Namespace, config: Config) -> int:
    """Predict the rows of a CSV or Parquet file with a model of a table: one output row per
    input row, numbered from 1 as the file's data lines."""
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from granular.serving.served import holds_a_model, load_served
    from granular.store.atomic import write_csv

    try:
        rows = getattr(pd, TABLE_SUFFIXES[Path(args.input).suffix])(args.input)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        print(f"granular: cannot read {args.input}: {error}", file=sys.stderr)
        return 2
    try:
        if holds_a_model(Path(args.model)):
            classifier = load_served(Path(args.model))
            columns = getattr(classifier.inputs, "columns", None)
            if columns is None:
                raise ValueError(f"{args.model} is a model of images, not of a table's rows")
            missing = [c for c in columns if c not in rows.columns]
            if missing:
                raise ValueError(f"{args.input} lacks the feature column(s) {missing}")
            table = pd.DataFrame(classifier.predict(rows[columns], config.serving.backoff_threshold))
        else:
            import mlflow.pyfunc

            from tasks.tracking import tracking_uri

            mlflow.set_tracking_uri(tracking_uri(config, ProjectPaths(Path(args.root).resolve())))
            table = pd.DataFrame(mlflow.pyfunc.load_model(args.model).predict(rows))
    except (ValueError, OSError, MlflowException) as error:
        print(f"granular: cannot predict: {error}", file=sys.stderr)
        return 2
    table.insert(0, "row", range(1, len(table) + 1))
    id_column = config.data.table.id if config.data.table else None
    if id_column in rows.columns:  # each answer beside the id of the row it answers
        table.insert(1, id_column, rows[id_column].to_numpy())
    write_csv(Path(args.output), table)
    print(f"{len(table)} predictions of the rows of {args.input} written to {args.output}")
    return 0


def _predict(args: argparse.Namespace, config: Config) -> int:
    from mlflow.exceptions import MlflowException

    from granular.modalities.images.fit import fit_to, image_fit
    from granular.modalities.images.predict_files import predict_blocks, read_images
    from granular.store.atomic import write_csv

    if Path(args.input).suffix in TABLE_SUFFIXES:
        return _predict_rows(args, config)

    try:
        pixels, predict = _predictor(args.model, config, Path(args.root))
    except (ValueError, OSError, MlflowException) as error:
        print(f"granular: cannot load the model {args.model}: {error}", file=sys.stderr)
        return 2
    try:
        blocks = read_images(Path(args.input), fit_to(image_fit(config), pixels))  # the model's size and colour
        table = predict_blocks(blocks, predict, args.batch_size)
    except (ValueError, OSError, MlflowException) as error:
        print(f"granular: cannot predict: {error}", file=sys.stderr)
        return 2
    write_csv(Path(args.output), table)
    print(f"{len(table)} predictions from {len(blocks)} file(s) written to {args.output}")
    return 0


def _deploy(args: argparse.Namespace, config: Config) -> int:
    from flows.deploy import DeploymentError, build_deployment, describe, serve_deployment

    try:
        deployment = build_deployment(
            name=args.name, cron=args.cron, timezone=args.timezone,
            root=args.root, params=args.params, overrides=args.overrides,
        )
    except DeploymentError as error:
        print(f"granular: cannot deploy: {error}", file=sys.stderr)
        return 2
    print(describe(deployment))
    # Runs start in subprocesses of this one: they inherit TOOL_DEFAULTS, set in main().
    serve_deployment(deployment)
    return 0


def _server(args: argparse.Namespace, config: Config) -> int:
    from flows import servers
    from tasks.tracking import artifact_root, open_experiment, project_store_uri

    paths = ProjectPaths(Path(args.root).resolve())
    store = project_store_uri(paths)
    open_experiment(store, config.tracking.experiment, artifact_root(paths))  # created once, under its lock
    prefect = servers.prefect_server(paths.root, args.host, args.prefect_port)
    mlflow = servers.mlflow_server(paths.root, args.host, args.mlflow_port, store, artifact_root(paths))
    if config.tracking.uri:
        print(f"granular: tracking.uri in params.yaml ({redact_uri(config.tracking.uri)}) comes before MLFLOW_TRACKING_URI: "
              "runs will not be tracked by this MLflow server", file=sys.stderr)
    print(f"starting the Prefect server ({prefect.url}) and the MLflow server ({mlflow.url})", flush=True)
    # The servers inherit this environment, TOOL_DEFAULTS included (set in main()).
    return servers.serve([prefect, mlflow], dict(os.environ), servers.ready_message(prefect, mlflow))


def main(argv: list[str] | None = None) -> int:
    for name, value in TOOL_DEFAULTS.items():
        os.environ.setdefault(name, value)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=".", help="project root holding params.yaml and data/ (default: .)")
    common.add_argument("--params", help="parameters file (default: ROOT/params.yaml)")
    common.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a parameter by its dotted key, e.g. --set train.epochs=2 (repeatable)",
    )
    common.add_argument("--debug", action="store_true", help="print an error's traceback, not only its one line")
    parser = argparse.ArgumentParser(prog="granular", description="Multi-granularity training pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", parents=[common], help="run the whole pipeline as a Prefect flow")
    run.set_defaults(handler=_run, reads_data=True, runs_flows=True)
    reproduce = commands.add_parser(
        "reproduce", parents=[common], help="restore the data (dvc.lock and DVC outputs) a past MLflow run trained on"
    )
    reproduce.add_argument("run_id", help="the MLflow run id printed by `granular run`")
    reproduce.set_defaults(handler=_reproduce)
    tune = commands.add_parser(
        "tune", parents=[common], help="search one view's training settings with Optuna (the tune: section)"
    )
    tune.add_argument("view", help="the view to tune, e.g. fine-28")
    tune.set_defaults(handler=_tune, reads_data=True, runs_flows=True)
    predict = commands.add_parser(
        "predict", parents=[common],
        help="predict images (or a table's rows) from files with a registered, logged or local fused model"
    )
    predict.add_argument(
        "--model", required=True,
        help="models:/NAME@ALIAS (e.g. models:/granular-fused@champion), models:/MODEL_ID (a run's logged "
             "model), or a model folder: data/cascade (the served cascade), data/fused, data/student",
    )
    predict.add_argument(
        "--input", required=True,
        help="a .npy array, an IDX file (.gz too), a PNG/JPEG image, or a folder of these; for a model of a "
             "table, a .csv or .parquet file of rows"
    )
    predict.add_argument("--output", default="predictions.csv", help="CSV to write (default: predictions.csv)")
    predict.add_argument("--batch-size", type=int, default=256, help="images per model call (default: 256)")
    predict.set_defaults(handler=_predict)
    server = commands.add_parser(
        "server", help="start a Prefect server and an MLflow tracking server for this project, until Ctrl-C"
    )
    server.add_argument("--root", default=".", help="project root: the servers keep their state in it (default: .)")
    server.add_argument("--prefect-port", type=int, default=4200, help="Prefect server and UI port (default: 4200)")
    server.add_argument("--mlflow-port", type=int, default=5000, help="MLflow server and UI port (default: 5000)")
    server.add_argument(
        "--host", default="127.0.0.1",
        help="address both servers bind to (default: 127.0.0.1, this machine only); any other address "
             "exposes both servers, unauthenticated, to everyone who can reach it",
    )
    server.set_defaults(handler=_server, params=None, overrides=[], debug=False)
    deploy = commands.add_parser(
        "deploy", parents=[common],
        help="serve a scheduled deployment of the pipeline from this process, one run at a time",
    )
    deploy.add_argument("--cron", required=True, help='when runs are due, a cron expression, e.g. "0 3 * * *"')
    deploy.add_argument("--timezone", default="UTC", help="IANA timezone of the cron expression (default: UTC)")
    deploy.add_argument("--name", default="nightly", help="deployment name, granular/NAME (default: nightly)")
    deploy.set_defaults(handler=_deploy, runs_flows=True)  # its runs read the data when they are due, not now
    args = parser.parse_args(argv)

    params = Path(args.params) if args.params else ProjectPaths(Path(args.root)).params
    try:  # refuse a bad configuration, data source or taxonomy before starting any server
        config = load_config(params, args.overrides)
        if getattr(args, "reads_data", False):
            check_inputs(config, ProjectPaths(Path(args.root).resolve()))
    except ConfigError as error:
        print(f"granular: configuration error: {error}", file=sys.stderr)
        return 2
    quiet_third_parties()
    if getattr(args, "runs_flows", False):
        hide_tracebacks()
        print(f"log: {log_to_file(Path(args.root).resolve(), args.command)}", file=sys.stderr, flush=True)
    try:
        return args.handler(args, config)
    except KeyboardInterrupt:  # the run has recorded its stop (tasks/crashes.py): say so once
        print("granular: interrupted (Ctrl-C)", file=sys.stderr)
        return INTERRUPTED
    except Exception as error:
        if args.debug:
            traceback.print_exception(error)
        print(error_lines(error, args.debug), file=sys.stderr)
        return 1
    except BaseException as error:  # Prefect's TerminationSignal: SIGTERM, recorded as Ctrl-C is
        if getattr(error, "signal", None) != signal.SIGTERM:
            raise
        print("granular: stopped (SIGTERM)", file=sys.stderr)
        return TERMINATED


INTERRUPTED = 130  # the exit status of a command a terminal's Ctrl-C stopped (128 + SIGINT)
TERMINATED = 143  # of one stopped by SIGTERM (128 + 15): a cancelled job, docker stop, systemd


if __name__ == "__main__":
    sys.exit(main())
