"""Task caching on the content of what a step reads, so a re-run with nothing changed skips it.

A cached task's key is a hash of exactly what `dvc.yaml` declares its stage depends on: the
content of its input files and folders, the values of its `params:` keys, and its code (the
granular/ files and folders the stage lists, and the task's own function). Reading the key from
`dvc.yaml` keeps one declaration of each step's inputs, shared by `dvc repro` and `granular run`:
a change to a module reruns the same steps under both.

Results are persisted under `<project>/.granular/results/`, one file per key. A result is only
valid while the files its step wrote are still there, unchanged, so each result also carries the
digests of its step's outputs. Before Prefect reads a record, `StepCache.compute_key` checks it:
a record that cannot be read, or whose outputs were deleted or edited since, is removed with a
warning, so the task recomputes (Prefect alone would recompute an unreadable one silently).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import yaml
from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task
from prefect._internal.result_records import ResultRecord
from prefect.cache_policies import CachePolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.filesystems import LocalFileSystem

from granular.config import Config
from granular.store.digest import file_digest
from granular.store.paths import ProjectPaths
from tasks import tracking

REPO = Path(__file__).resolve().parents[1]
DVC_FILE = REPO / "dvc.yaml"  # the stages of this code, beside it
PACKAGE = REPO / "granular"  # the code the steps run: dvc.yaml deps under granular/ are read here
HITS_TAG = "granular.cache.hits"


def results_dir(paths: ProjectPaths) -> Path:
    return paths.state / "results"


@contextmanager
def results_in(paths: ProjectPaths) -> Iterator[None]:
    """Persist the results of the tasks run inside (also those submitted to other threads or a
    Dask cluster, which inherit the flow run's context) under the project's results folder.

    Prefect fixes a flow's result storage when the flow is declared; the project is only known
    inside the flow run, so its context is entered again with the project's storage."""
    context = FlowRunContext.get()
    if context is None:
        raise RuntimeError("results_in is for use inside a flow run")
    storage = LocalFileSystem(basepath=str(results_dir(paths)))
    store = context.result_store.model_copy(update={"result_storage": storage})
    with context.model_copy(update={"result_store": store}):
        yield


class StepResult(dict):
    """A cached task's value: the step's dict, as the callers use it, which also carries the
    digests of the files the step wrote (`outputs`, paths relative to the project), which task
    computed it (`step`) and when (`computed_at`, seconds since the epoch)."""

    def __init__(self, value: dict, step: str, outputs: dict[str, str | None], computed_at: float):
        super().__init__(value)
        self.step, self.outputs, self.computed_at = step, outputs, computed_at


# Content digests, remembered by size, modification time and inode as DVC does, so files read by
# several steps (clean.npz: 55 MB) are hashed once per process.
_DIGESTS: dict[tuple, str] = {}


def path_digest(path: Path) -> str | None:
    """md5 of a file; of a folder, md5 of its files' relative paths and digests in sorted
    order; None when nothing is there."""
    if path.is_file():
        stat = path.stat()
        memo = (str(path), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if memo not in _DIGESTS:
            _DIGESTS[memo] = file_digest(path)
        return _DIGESTS[memo]
    if path.is_dir():
        return _tree_digest(path, "*")
    return None


# Not content: `dvc commit` writes a .gitignore beside outputs git does not ignore yet (in
# data/models/ of a new project), which must not change the key of every step reading data/models.
NOT_CONTENT = {".gitignore"}


def _tree_digest(folder: Path, pattern: str) -> str:
    files = sorted(f for f in folder.rglob(pattern) if f.is_file() and f.name not in NOT_CONTENT)
    listing = "\n".join(f"{f.relative_to(folder).as_posix()} {path_digest(f)}" for f in files)
    return hashlib.md5(listing.encode()).hexdigest()


def code_version(code: dict[str, Path], fn: Callable) -> str:
    """The stage's code (files, and folders by their .py files) and the task's function."""
    listing = "\n".join(
        f"{dep} {_tree_digest(where, '*.py') if where.is_dir() else path_digest(where)}" for dep, where in sorted(code.items())
    )
    source = inspect.getsource(inspect.unwrap(fn))
    return hashlib.md5(f"{listing}\n{source}".encode()).hexdigest()


@lru_cache(maxsize=1)
def _dvc_stages() -> dict[str, Any]:
    if not DVC_FILE.is_file():
        raise FileNotFoundError(f"task caching reads each step's inputs from {DVC_FILE}, which is missing")
    return yaml.safe_load(DVC_FILE.read_text())["stages"]


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{DVC_FILE.name} names parameter {dotted!r}, which the configuration does not have")
        node = node[part]
    return node


def _interpolate(text: str, settings: dict[str, Any], view: str | None, item: dict[str, Any] | None = None) -> str:
    """${key} is the foreach view, ${item.a} a value of its entry; ${a.b} a configuration value,
    as DVC reads them from params.yaml."""
    def value(name: str) -> str:
        if name == "key":
            return view
        if name.startswith("item."):
            return str(_lookup(item or {}, name.removeprefix("item.")))
        return str(_lookup(settings, name))

    return re.sub(r"\$\{([^}]+)\}", lambda m: value(m[1]), text)


def _entry_path(entry: str | dict) -> str:
    """A dvc.yaml list entry: `path`, or `{path: {options}}`."""
    return entry if isinstance(entry, str) else next(iter(entry))


@dataclass(frozen=True)
class StageInputs:
    """What one or more dvc.yaml stages read and write, resolved for a configuration and project."""

    deps: dict[str, Path]  # as written in dvc.yaml (after interpolation) -> where it is
    code: dict[str, Path]  # the deps under granular/: code beside dvc.yaml, not in the project
    params: dict[str, Any]  # dotted key -> value
    outs: dict[str, Path]  # path relative to the project -> where it is


@dataclass
class StepCache(CachePolicy):
    """The cache key of a task running the dvc.yaml `stages` (a foreach stage: for the task's
    `view_name`, or for every view of the configuration). `ignored` are dotted parameters a
    stage lists but its step does not read (${key} = the view)."""

    stages: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    key: str = "view_name"  # the task's argument that names its foreach key

    def resolve(self, config: Config, paths: ProjectPaths, view: str | None = None) -> StageInputs:
        settings = config.as_dict()
        deps, code, params, outs = {}, {}, {}, {}
        for name in self.stages:
            stage = _dvc_stages()[name]
            collection = _lookup(settings, stage["foreach"].strip("${}")) if "foreach" in stage else {}
            for key in self._foreach_keys(stage, collection, view):
                spec = stage["do"] if "foreach" in stage else stage
                item = collection.get(key)
                for entry in spec.get("deps", []):
                    dep = _interpolate(entry, settings, key, item)
                    if dep.startswith(f"{PACKAGE.name}/"):
                        code[dep] = REPO / dep
                    else:
                        deps[dep] = paths.resolve(Path(dep), key=entry.strip("${}"))  # ${taxonomy} -> taxonomy
                for entry in spec.get("params", []):
                    dotted = _interpolate(entry, settings, key, item)
                    params[dotted] = self._without_ignored(dotted, _lookup(settings, dotted), settings, key)
                for section in ("outs", "metrics", "plots"):
                    for entry in spec.get(section, []):
                        out = _interpolate(_entry_path(entry), settings, key, item)
                        outs[out] = paths.resolve(Path(out), key=out)
        # What one of the task's stages writes for the next (partition: splits.npz) is no input of the task.
        deps = {dep: where for dep, where in deps.items() if where not in outs.values()}
        return StageInputs(deps=deps, code=code, params=params, outs=outs)

    @staticmethod
    def _foreach_keys(stage: dict, collection: dict[str, Any], view: str | None) -> list[str | None]:
        """A foreach stage's keys this task runs: the task's view, where the stage iterates over it
        (`views` or `transfers`), or all of them."""
        if "foreach" not in stage:
            return [None]
        if view is None:
            return list(collection)
        return [view] if view in collection else []

    def _without_ignored(self, dotted: str, value: Any, settings: dict, view: str | None) -> Any:
        for pattern in self.ignored:
            ignored = _interpolate(pattern, settings, view)
            if ignored.startswith(f"{dotted}.") and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k != ignored.removeprefix(f"{dotted}.")}
        return value

    def label(self, task_name: str, inputs: dict[str, Any]) -> str:
        view = inputs.get(self.key)
        return f"{task_name}[{view}]" if view else task_name

    def output_digests(self, inputs: dict[str, Any]) -> dict[str, str | None]:
        resolved = self.resolve(inputs["config"], inputs["paths"], inputs.get(self.key))
        return {out: path_digest(where) for out, where in resolved.outs.items()}

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        resolved = self.resolve(inputs["config"], inputs["paths"], inputs.get(self.key))
        material = {
            "stages": self.stages,
            "deps": {dep: path_digest(where) for dep, where in resolved.deps.items()},
            "params": resolved.params,
            "code": code_version(resolved.code, task_ctx.task.fn),
        }
        digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:32]
        key = f"{self.label(task_ctx.task.name, inputs)}-{digest}"
        self._drop_invalid_record(task_ctx, key, inputs["paths"])
        return key

    def _drop_invalid_record(self, task_ctx: TaskRunContext, key: str, paths: ProjectPaths) -> None:
        """Remove the record under `key` when it must not be used, saying why, so that Prefect
        finds no record and recomputes."""
        storage = task_ctx.result_store.result_storage
        if not isinstance(storage, LocalFileSystem):
            raise TypeError(f"cached tasks keep their results in a local folder, not in {type(storage).__name__}")
        record = Path(storage.basepath).expanduser() / key
        if not record.is_file():
            return
        why = _why_invalid(record, paths)
        if why:
            get_run_logger().warning("cached result %s not used (%s): recomputing", record, why)
            record.unlink()


def _why_invalid(record: Path, paths: ProjectPaths) -> str | None:
    """Why a persisted result cannot stand for its step (unreadable, or its outputs changed), or None."""
    try:
        value = ResultRecord.deserialize(record.read_bytes()).result
    except Exception as error:  # truncated, garbage, or pickled by code that no longer loads it
        return f"unreadable: {type(error).__name__}: {str(error)[:200]}"
    if not isinstance(value, StepResult):
        return "it does not record the files its step wrote"
    changed = [out for out, digest in value.outputs.items() if path_digest(paths.resolve(Path(out), key=out)) != digest]
    if changed:
        return f"its outputs were deleted or changed since: {', '.join(changed)}"
    return None


def cached_task(
    *stages: str, ignored: tuple[str, ...] = (), key: str = "view_name", **options: Any
) -> Callable[[Callable], Any]:
    """`@task(**options)` cached on the content hash of what the dvc.yaml `stages` read (see
    StepCache), its value a StepResult that records the digests of what they wrote. The task
    takes `config` and `paths` (and, for one key of a foreach stage, the argument `key`: the
    view, or the pair of co-trained views)."""
    policy = StepCache(stages=stages, ignored=ignored, key=key)

    def decorate(fn: Callable[..., dict]) -> Any:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run_step(*args: Any, **kwargs: Any) -> StepResult:
            inputs = signature.bind(*args, **kwargs).arguments
            value = fn(*args, **kwargs)
            step = policy.label(options.get("name", fn.__name__), inputs)
            return StepResult(value, step=step, outputs=policy.output_digests(inputs), computed_at=time.time())

        # No expiry: a result stays valid as long as its inputs, code and outputs are unchanged.
        return task(run_step, cache_policy=policy, persist_result=True, cache_expiration=None, **options)

    return decorate


def cache_hits(values: Iterable[Any], since: float) -> list[str]:
    """The steps among `values` (task results) that came from the cache: computed before `since`,
    the start of this run. A value carries its time rather than a flag, because a fresh result
    also travels pickled when it was computed on a Dask worker."""
    # Each once: a pair of co-trained views is one step with a value per view.
    return list(dict.fromkeys(v.step for v in values if isinstance(v, StepResult) and v.computed_at < since))


def log_cache_hits(parent: tracking.RunRef, hits: list[str]) -> None:
    """Which steps this run took from the cache: their count as the metric `cache.hits`, their
    names in the tag granular.cache.hits. A cached step logged nothing in this run (no MLflow
    run per cached view, no distillation metrics): its records are in the run that computed it."""
    client = MlflowClient(parent.uri)
    tracking.log_metrics(client, parent.run_id, {"cache.hits": len(hits)})
    client.log_batch(parent.run_id, tags=[RunTag(HITS_TAG, ", ".join(hits) or "none")])
    get_run_logger().info("%d step(s) taken from the cache: %s", len(hits), ", ".join(hits) or "none")
