"""Serving speed of every model a run serves, in-process and over HTTP, printed as JSON.

    .venv/bin/python benchmarks/serving.py --root PROJECT                # a project `granular run` completed in
    .venv/bin/python benchmarks/serving.py --root PROJECT --rounds 2 --requests 20   # a quick look
    .venv/bin/python benchmarks/serving.py --root PROJECT --no-http      # in-process only, no server
    .venv/bin/python benchmarks/serving.py --root PROJECT --record       # and rewrite its section of docs/results.md

For each model: the latency of one image (p50 and p99 of --requests requests of a batch of one)
and the throughput of batches of 256 test images (images/s). The models are those the evaluate
step times, loaded from the project's files as it loads them (every view, the fused model, the
cascade and each of its cheaper stages alone, the student where there is one):
granular.pipeline.evaluate.served_predictors, so a model added there is measured here too.
Beside them, the registered model (the newest version of serving.model_name: the cascade, or
the fused model in a run without one) served by `mlflow models serve` on 127.0.0.1 and asked
over HTTP as a client would (JSON encoding and decoding included); the server is stopped, with
its workers, at the end. `speedups`: each model's throughput over the fused model's.

The machine is shared and noisy: each round measures every model once, in an order that rotates
from round to round, and the figures are the medians over --rounds rounds. The models run on the
device the runtime selects (CUDA when present), named in the output; the server selects its own
the same way on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import record  # noqa: E402  (benchmarks/record.py)

from granular.config import load_config  # noqa: E402
from granular.core.cascade import CASCADE  # noqa: E402
from granular.core.evaluate import measure_latency  # noqa: E402
from granular.modalities import modality_for  # noqa: E402
from granular.pipeline.evaluate import LATENCY_BATCH, LATENCY_IMAGES, served_models, served_predictors  # noqa: E402
from granular.store.paths import ProjectPaths  # noqa: E402

IN_PROCESS = "in-process"
HTTP = "http"
REQUEST_TIMEOUT_S = 60.0  # one request; a fused model answers 256 images in well under a second
HTTP_BUDGET_S = 1800.0  # every request of a benchmark, together: past it, the benchmark stops


def round_order(names: list[str], round_index: int) -> list[str]:
    """The order in which round `round_index` measures the models: rotated by one each round,
    so that over len(names) rounds every model is measured once in every position."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    """The 50th and 99th percentiles of request latencies, in milliseconds."""
    if not seconds:
        raise ValueError("latency percentiles need at least one request")
    p50, p99 = np.percentile(np.asarray(seconds) * 1000, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99)}


def medians_over_rounds(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each model's figures, the median of each figure over the rounds that measured it."""
    names = list(dict.fromkeys(name for figures in rounds for name in figures))
    return {
        name: {
            figure: statistics.median(figures[name][figure] for figures in rounds if name in figures)
            for figure in next(figures[name] for figures in rounds if name in figures)
        }
        for name in names
    }


def request_seconds(predict: Callable, images: np.ndarray, requests: int, clock: Callable[[], float]) -> list[float]:
    """Seconds of each of `requests` requests of one image, after one untimed warm-up request."""
    predict(images[:1])
    seconds = []
    for number in range(requests):
        one = images[number % len(images):][:1]
        started = clock()
        predict(one)
        seconds.append(clock() - started)
    return seconds


def measure_round(
    predictors: dict, images: np.ndarray, requests: int, round_index: int, clock: Callable[[], float] = time.perf_counter
) -> dict:
    """One round: each model's batch-1 latency over `requests` requests of one image each (the
    test images in turn: a cascade answers some at its first stage, some at its last), then its
    throughput over `images` in batches of LATENCY_BATCH, the models in this round's order."""
    figures = {}
    for name in round_order(list(predictors), round_index):
        predict = predictors[name]
        figures[name] = latency_summary(request_seconds(predict, images, requests, clock))
        figures[name]["images_per_s"] = measure_latency(predict, images, LATENCY_BATCH, 1, clock)["images_per_s"]
    return figures


def registered_model_uri(config, paths: ProjectPaths) -> tuple[str, str]:
    """The tracking store's URI and the models:/ URI of the newest version of the registered
    fused model (serving.model_name): the one the project's last run registered."""
    from mlflow.tracking import MlflowClient

    from granular.runtime.redact import redact_uri
    from tasks.tracking import tracking_uri

    uri = tracking_uri(config, paths)
    name = config.serving.model_name
    versions = MlflowClient(uri).search_model_versions(f"name='{name}'")
    if not versions:
        raise SystemExit(
            f"no version of the registered model {name!r} in {redact_uri(uri)}: has `granular run` completed in {paths.root}?"
        )
    return uri, f"models:/{name}/{max(int(v.version) for v in versions)}"


def http_predictor(url: str, deadline: float) -> Callable[[np.ndarray], object]:
    """POST a batch of images to the model server as `{"inputs": [...]}`; refuse to start a
    request past `deadline` (time.monotonic), and wait at most REQUEST_TIMEOUT_S for each."""
    def predict(batch: np.ndarray) -> object:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the requests to {url} took more than {HTTP_BUDGET_S:.0f} s in all")
        request = urllib.request.Request(
            url, data=json.dumps({"inputs": batch.tolist()}).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=min(REQUEST_TIMEOUT_S, remaining)) as response:
            return json.loads(response.read())
    return predict


def model_server(model_uri: str, tracking_uri: str, scratch: Path):
    """`mlflow models serve` of `model_uri` with one worker on a free port of 127.0.0.1; its log
    and the model it downloads (it leaves that behind when stopped) go to `scratch`."""
    from flows.servers import Server, free_port

    port = free_port()
    return Server(
        name="MLflow model",
        command=[sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                 "--workers", "1", "-h", "127.0.0.1", "-p", str(port)],
        # the server runs `uvicorn` from PATH: the venv's bin, as in an activated venv
        env={"MLFLOW_TRACKING_URI": tracking_uri, "TMPDIR": str(scratch),
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        host="127.0.0.1", port=port, health_path="/ping", log=scratch / "model-server.log",
    )


def measure(predictors: dict[str, Callable], images: np.ndarray, rounds: int, requests: int) -> dict:
    per_round = []
    for round_index in range(rounds):
        per_round.append(measure_round(predictors, images, requests, round_index))
        print(f"round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return medians_over_rounds(per_round)


def rows(medians: dict[str, dict[str, float]], served: dict[str, tuple[str, str]]) -> list[dict]:
    """One row a model: its name, how it was served, the device, and its median figures."""
    return [
        {"model": model, "served": how, "device": device,
         "p50_ms": round(medians[key]["p50_ms"], 2), "p99_ms": round(medians[key]["p99_ms"], 2),
         "images_per_s": round(medians[key]["images_per_s"])}
        for key, (model, how, device) in served.items()
    ]


def speedups(medians: dict[tuple[str, str], dict[str, float]]) -> dict[str, float]:
    """Each model's batch throughput over the in-process fused model's, measured in the same rounds."""
    fused = medians[("fused", IN_PROCESS)]["images_per_s"]
    return {f"{name} ({how})": round(figures["images_per_s"] / fused, 2) for (name, how), figures in medians.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="a project folder `granular run` completed in")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of measuring every model once")
    parser.add_argument("--requests", type=int, default=200, help="batch-1 requests of each model in each round")
    parser.add_argument("--no-http", dest="http", action="store_false", help="measure in-process only, start no server")
    parser.add_argument("--record", nargs="?", const="serving", metavar="SECTION",
                        help="also write the figures into docs/results.md, in SECTION (default: serving)")
    args = parser.parse_args()
    if args.rounds < 1 or args.requests < 1:
        parser.error("--rounds and --requests need at least 1")
    if args.record:
        record.check(args.record)

    paths = ProjectPaths(Path(args.root).resolve())
    config = load_config(paths.params)
    models = served_models(config, paths)
    device = models["runtime"].name
    predictors = {(name, IN_PROCESS): predict for name, predict in served_predictors(config, models).items()}
    images = modality_for(config).raw_inputs(config, paths, ("test",), LATENCY_IMAGES)["test"]
    served = {key: (key[0], IN_PROCESS, device) for key in predictors}

    with tempfile.TemporaryDirectory(prefix="serving-benchmark-") as scratch:
        server = process = None
        try:
            if args.http:
                from flows.servers import start, wait_until_answering

                tracking, model_uri = registered_model_uri(config, paths)
                server = model_server(model_uri, tracking, Path(scratch))
                process = start(server, dict(os.environ), end_with_parent=True)
                wait_until_answering([(server, process)])
                registered = CASCADE if config.cascade.enabled else "fused"
                key = (registered, HTTP)
                predictors[key] = http_predictor(f"{server.url}/invocations", time.monotonic() + HTTP_BUDGET_S)
                served[key] = (registered, f"{HTTP} ({model_uri}, mlflow models serve)", device)
            medians = measure(predictors, images, args.rounds, args.requests)
        finally:
            if process is not None:
                from flows.servers import stop_all

                stop_all([(server, process)])

    table = rows(medians, served)
    print(json.dumps({"machine": record.machine(), "rounds": args.rounds, "requests": args.requests,
                      "throughput_batch": LATENCY_BATCH, "models": table, "speedups": speedups(medians)}, indent=2))
    if args.record:
        record.record(args.record, table)


if __name__ == "__main__":
    main()
