"""The MLflow Model Registry at the edge: every run's fused model becomes a version of one
registered model, and the `champion` alias (what `models:/<name>@champion` serves) moves to it
only when the gate in granular.promotion says so.

A registration either completes or leaves the registry as it found it: a failure after the
version was created deletes that version and puts the alias back. A run stopped after its
registration (a Ctrl-C, a kill) leaves its version tagged and described as from an unfinished run.
"""
from __future__ import annotations

from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.store.artifact.utils.models import _parse_model_id_if_present  # MLflow's own reading of models:/ URIs
from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task

from granular.config import Config, PromotionConfig
from granular.core.promotion import FUSED, decide
from granular.problems import problem_of
from tasks.tracking import RunRef, using_tracking_uri

CHAMPION = "champion"
TAG_PREFIX = "granular."
PROMOTED_TAG = "granular.promotion.promoted"
REASONS_TAG = "granular.promotion.reasons"
MAX_TAG_LENGTH = 5000  # MLflow refuses longer tag values


def recorded_test_metrics(client: MlflowClient, run_id: str) -> dict:
    """The test metrics a run recorded as `test.<model>.<key>` (see record_evaluation), nested
    as in metrics.json: {"test": {model: {key: value}}}."""
    test: dict[str, dict[str, float]] = {}
    for key, value in client.get_run(run_id).data.metrics.items():
        scope, _, rest = key.partition(".")
        model, _, name = rest.rpartition(".")  # view names have no dots; metric names neither
        if scope == "test" and model:
            test.setdefault(model, {})[name] = value
    return {"test": test}


def _ensure_registered_model(client: MlflowClient, name: str) -> bool:
    """Create the registered model if it is missing; True when this call created it."""
    try:
        client.get_registered_model(name)
        return False
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
    client.create_registered_model(name, description="The fused multi-granularity classifier of `granular run`.")
    return True


def _champion_version(client: MlflowClient, name: str) -> str | None:
    version = client.get_registered_model(name).aliases.get(CHAMPION)  # an int from some stores
    return None if version is None else str(version)


def _champion_metrics(client: MlflowClient, name: str, champion: str | None) -> dict | None:
    """What the champion was promoted on; a version without a run has nothing to compare."""
    if champion is None:
        return None
    run_id = client.get_model_version(name, champion).run_id
    return recorded_test_metrics(client, run_id) if run_id else {"test": {}}


def _version_tags(metrics: dict, promoted: bool, reasons: list[str]) -> dict[str, str]:
    """The version's own record: the fused test metrics it was promoted (or not) on, and why."""
    scores = {f"test.{FUSED}.{key}": f"{value:.4f}" for key, value in metrics["test"][FUSED].items()
              if isinstance(value, float)}  # for people: the run's metrics keep every digit
    return {
        **scores,
        f"{TAG_PREFIX}best_single": str(metrics.get("best_single")),
        PROMOTED_TAG: str(promoted).lower(),
        REASONS_TAG: "; ".join(reasons)[:MAX_TAG_LENGTH],
    }


def _restore(client: MlflowClient, name: str, version: str | None, champion: str | None, created: bool) -> None:
    """Put the registry back as it was before this registration."""
    if created:  # deleting the registered model deletes its versions too
        client.delete_registered_model(name)
        return
    if version is not None:
        client.delete_model_version(name, version)  # drops the alias too, if it had moved here
    if champion is not None:
        client.set_registered_model_alias(name, CHAMPION, champion)


def register_version(
    client: MlflowClient, name: str, model_uri: str, run_id: str, metrics: dict, config: PromotionConfig
) -> dict:
    """Register `model_uri` (logged by run `run_id`, evaluated as `metrics`) as a new version of
    `name`, gate it against the current champion, move the alias when it passes, and record the
    decision in the version's and the run's tags. Returns name, version, promoted and reasons."""
    created = _ensure_registered_model(client, name)
    champion = _champion_version(client, name)
    champion_metrics = _champion_metrics(client, name, champion)
    decision = decide(metrics, champion_metrics, config, problem_of(metrics), champion_name=f"the champion (version {champion})")
    version = None
    try:
        # A SQL store looks models:/<model_id> up through MLflow's global tracking URI; a tracking
        # server wants the id beside it.
        with using_tracking_uri(client.tracking_uri):
            version = client.create_model_version(
                name, source=model_uri, run_id=run_id, model_id=_parse_model_id_if_present(model_uri),
                tags=_version_tags(metrics, decision.promote, decision.reasons),
            ).version
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, version)
        run_tags = {
            f"{TAG_PREFIX}registry.model": name,
            f"{TAG_PREFIX}registry.version": str(version),
            PROMOTED_TAG: str(decision.promote).lower(),
            REASONS_TAG: "; ".join(decision.reasons)[:MAX_TAG_LENGTH],
        }
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in run_tags.items()])
    except BaseException:
        _restore(client, name, version, champion, created)
        raise
    return {"name": name, "version": str(version), "promoted": decision.promote, "reasons": decision.reasons}


UNFINISHED_TAG = "granular.unfinished_run"  # on a version whose registering run was stopped after it


def mark_versions_of_unfinished_run(client: MlflowClient, run_id: str, reason: str) -> list[str]:
    """Tag and describe every registered version of run `run_id`, which was stopped (or killed)
    after its registration, the pipeline's last step: the version's model is whole (logged and
    evaluated before), but its run is KILLED, not FINISHED, and the version says so. Return the
    versions marked, as "<name> version <n>"."""
    marked = []
    for version in client.search_model_versions(f"run_id = '{run_id}'"):
        client.set_model_version_tag(version.name, version.version, UNFINISHED_TAG, reason[:MAX_TAG_LENGTH])
        client.update_model_version(version.name, version.version, description=(
            f"Registered by run {run_id}, which did not finish: {reason}. The model was logged and evaluated "
            "before the registration; the run's last records (its report) may be missing."
        ))
        marked.append(f"{version.name} version {version.version}")
    return marked


def summary_line(result: dict) -> str:
    """One line for the terminal and the log: the version, whether it is champion, and why."""
    verdict = "yes" if result["promoted"] else "no"
    return f"registered {result['name']} version {result['version']}; champion: {verdict} — {'; '.join(result['reasons'])}"


@task(name="register_fused_model")
def register_fused_model(parent: RunRef, model_uri: str, metrics: dict, config: Config) -> dict:
    """The run's fused model as a new registered version; champion only if it passes the gate.
    Not retried: a failure has already put the registry back, and the run fails with it."""
    result = register_version(
        MlflowClient(parent.uri), config.serving.model_name, model_uri, parent.run_id, metrics, config.promotion
    )
    get_run_logger().info(summary_line(result))
    return result
