"""Security basics: servers on loopback, no code run by loading a file, configured paths kept in
the project, no credentials in params.yaml, output or logs."""
from __future__ import annotations

import ast
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from flows import cli, servers
from granular.config import Config, ConfigError, config_paths, load_config
from granular.nn.checkpoints import load_latest, save_state
from granular.nn.device import Runtime
from granular.nn.trained import load_checkpoint
from granular.runtime.redact import has_password, redact_uri
from granular.store.paths import ProjectPaths

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
CODE_FOLDERS = ("granular", "tasks", "flows", "tests", "benchmarks")
CPU = Runtime(torch.device("cpu"), None)


def project_sources() -> list[Path]:
    return sorted(f for folder in CODE_FOLDERS if (REPO / folder).is_dir() for f in (REPO / folder).rglob("*.py"))


def calls(source: Path):
    """Every call in a Python file, with the file's text for messages."""
    tree = ast.parse(source.read_text(), filename=str(source))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def dotted(node: ast.AST) -> str:
    """`yaml.load` for the function of a call `yaml.load(...)`; '' for anything not a plain name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = dotted(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is value for k in call.keywords)


def where(source: Path, node: ast.AST) -> str:
    shown = source.relative_to(REPO) if source.is_relative_to(REPO) else source
    return f"{shown}:{node.lineno}"


# --- servers bind to loopback unless told otherwise -------------------------------------------

def test_granular_server_binds_to_loopback_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    hosts = []

    def record_host(args, config) -> int:  # instead of starting the servers
        hosts.append(args.host)
        return 0

    monkeypatch.setattr(cli, "_server", record_host)
    assert cli.main(["server", "--root", str(tmp_path)]) == 0
    assert hosts == ["127.0.0.1"]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_both_servers_bind_to_the_host_they_are_given(tmp_path: Path, host: str):
    prefect = servers.prefect_server(tmp_path, host, 4200)
    mlflow = servers.mlflow_server(tmp_path, host, 5000, "sqlite:///x.db", tmp_path / "a")
    for server in (prefect, mlflow):
        assert server.command[server.command.index("--host") + 1] == host


def test_the_temporary_dask_cluster_listens_on_loopback_without_a_dashboard():
    from tasks.training import dask_task_runner

    config = load_config(PARAMS, ["orchestration.task_runner=dask", "orchestration.n_workers=1"])
    kwargs = dask_task_runner(config).cluster_kwargs
    assert kwargs["host"] == "127.0.0.1" and kwargs["dashboard_address"] is None


def test_documented_server_commands_bind_to_loopback():
    """The README's shell blocks that start `mlflow ui` / `mlflow server` / `mlflow models
    serve` are what users copy: each binds to 127.0.0.1."""
    readme = (REPO / "README.md").read_text()
    shell = "\n".join(re.findall(r"```(?:bash|sh)\n(.*?)```", readme, re.DOTALL)).replace("\\\n", " ")
    commands = [line for line in shell.splitlines() if re.search(r"mlflow (ui|server|models serve)\b", line)]
    assert commands, "the README no longer shows how to start an MLflow server"
    for line in commands:
        assert re.search(r"(--host|-h) 127\.0\.0\.1\b", line), f"README starts a server off loopback: {line}"


# --- loading a file never runs code from it ---------------------------------------------------

def unsafe_loads(source: Path) -> list[str]:
    found = []
    for call in calls(source):
        name = dotted(call.func)
        if name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"):
            found.append(f"{where(source, call)}: {name}( runs YAML tags as code; use yaml.safe_load")
        elif name == "torch.load" and not keyword_is(call, "weights_only", True):
            found.append(f"{where(source, call)}: torch.load( without weights_only=True unpickles any object")
        elif name in ("pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads"):
            found.append(f"{where(source, call)}: {name}( runs whatever the file holds")
        elif name in ("np.load", "numpy.load") and keyword_is(call, "allow_pickle", True):
            found.append(f"{where(source, call)}: np.load(allow_pickle=True) unpickles object arrays")
    return found


def test_no_loader_in_the_project_can_run_code_from_a_file():
    found = [problem for source in project_sources() for problem in unsafe_loads(source)]
    assert not found, "unsafe loading:\n" + "\n".join(found)


def test_the_scan_finds_unsafe_loaders(tmp_path: Path):
    """The scan above, shown a file with each unsafe call, names each one by file and line."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "yaml.load(text, Loader=yaml.Loader)\n"
        "torch.load(path)\n"
        "torch.load(path, weights_only=False)\n"
        "pickle.loads(blob)\n"
        "np.load(path, allow_pickle=True)\n"
        "torch.load(path, weights_only=True)\n"
        "yaml.safe_load(text)\n"
    )
    assert sorted(int(line.split(":")[1]) for line in unsafe_loads(bad)) == [1, 2, 3, 4, 5]


def test_a_python_tag_in_params_is_refused_not_run(tmp_path: Path):
    marker = tmp_path / "ran"
    params = tmp_path / "params.yaml"
    params.write_text(f"train: !!python/object/apply:os.mkdir [{str(marker)!r}]\n")
    with pytest.raises(ConfigError, match=r"params.yaml is not valid YAML: .*python/object/apply:os.mkdir"):
        load_config(params)
    assert not marker.exists()


def test_an_override_with_a_python_tag_is_refused_not_run(tmp_path: Path):
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError, match=r"override .train\.epochs=.*: not valid YAML: .*python/object/apply"):
        load_config(PARAMS, [f"train.epochs=!!python/object/apply:os.mkdir [{str(marker)!r}]"])
    assert not marker.exists()


class RunsCode:
    """Pickles into a call of os.mkdir: loading it with a full unpickler would create `folder`."""

    def __init__(self, folder: Path):
        self.folder = str(folder)

    def __reduce__(self):
        return os.mkdir, (self.folder,)


def test_a_model_checkpoint_holding_an_object_is_refused_not_run(tmp_path: Path):
    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    torch.save({"architecture": "cnn", "model_config": {}, "state_dict": {}, "payload": RunsCode(marker)}, path)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_checkpoint(path, CPU)
    assert not marker.exists()


def test_a_training_checkpoint_holding_an_object_is_skipped_not_run(tmp_path: Path):
    marker = tmp_path / "ran"
    save_state(tmp_path, 1, 0, {"fingerprint": "f", "payload": RunsCode(marker)})
    warnings: list[str] = []
    assert load_latest(tmp_path, "f", torch.device("cpu"), warnings.append) is None
    assert not marker.exists()
    assert len(warnings) == 1 and "cannot be read" in warnings[0]


# --- configured paths stay in the project -----------------------------------------------------

@pytest.fixture
def layout(tmp_path: Path) -> tuple[ProjectPaths, Path]:
    """A project root and a folder beside it, outside the project."""
    root, outside = tmp_path / "project", tmp_path / "outside"
    (root / "data").mkdir(parents=True)
    outside.mkdir()
    (outside / "taxonomy.yaml").write_text("fine: []\n")
    (root / "data" / "taxonomy.yaml").write_text("fine: []\n")
    return ProjectPaths(root), outside


def test_a_relative_path_inside_the_project_is_read_from_its_root(layout):
    paths, _ = layout
    assert paths.resolve(Path("data/taxonomy.yaml"), "taxonomy") == paths.root / "data/taxonomy.yaml"
    assert paths.resolve(Path("data/../data/taxonomy.yaml"), "taxonomy").resolve() == paths.root / "data/taxonomy.yaml"
    assert paths.resolve(paths.root / "data/taxonomy.yaml", "taxonomy") == paths.root / "data/taxonomy.yaml"


@pytest.mark.parametrize("key", ["taxonomy", "data.source.path"])
def test_a_relative_path_climbing_out_of_the_project_is_refused(layout, key: str):
    paths, _ = layout
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: \.\./outside/taxonomy\.yaml, which resolves to .* is outside the project root"):
        paths.resolve(Path("../outside/taxonomy.yaml"), key)


def test_an_absolute_path_outside_the_project_is_refused(layout):
    paths, outside = layout
    with pytest.raises(ConfigError, match=rf"^taxonomy: {re.escape(str(outside))}/taxonomy.yaml is outside the project root"):
        paths.resolve(outside / "taxonomy.yaml", "taxonomy")


def test_the_import_source_alone_may_be_an_absolute_path_anywhere(layout):
    paths, outside = layout
    assert paths.resolve(outside, "data.source.path") == outside


@pytest.mark.parametrize("key", ["taxonomy", "data.source.path"])
def test_a_symlink_out_of_the_project_is_refused(layout, key: str):
    paths, outside = layout
    (paths.root / "data" / "elsewhere").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: data/elsewhere/taxonomy.yaml, which resolves to {re.escape(str(outside))}"):
        paths.resolve(Path("data/elsewhere/taxonomy.yaml"), key)


def test_a_symlink_within_the_project_is_followed(layout):
    paths, _ = layout
    (paths.root / "link.yaml").symlink_to(paths.root / "data" / "taxonomy.yaml")
    assert paths.resolve(Path("link.yaml"), "taxonomy") == paths.root / "link.yaml"


@pytest.mark.parametrize("override,key", [
    ("taxonomy=../taxonomy.yaml", "taxonomy"),
    ("data.source.path=data/../../fashion", "data.source.path"),
])
def test_a_path_climbing_out_is_refused_when_the_configuration_loads(override: str, key: str):
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: .* leaves the project root"):
        load_config(PARAMS, [override])


def test_every_path_of_the_configuration_is_resolved_with_its_key():
    """Each Path setting is read through ProjectPaths.resolve(path, "its.key"), and every call
    of resolve names a key: a new Path setting that is read another way fails here."""
    keys_passed, missing_key = set(), []
    for source in project_sources():
        if source.parent.name == "tests":
            continue
        for call in calls(source):
            # ProjectPaths.resolve: on a project's `paths`, or within ProjectPaths on `self`
            if not (isinstance(call.func, ast.Attribute) and call.func.attr == "resolve"
                    and dotted(call.func.value) in ("paths", "self")):
                continue
            key = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "key"), None)
            if key is None:
                missing_key.append(where(source, call))
            elif isinstance(key, ast.Constant):
                keys_passed.add(key.value)
    assert not missing_key, f"ProjectPaths.resolve called without the key of the setting: {missing_key}"
    settings = set(config_paths(Config()))
    assert {"taxonomy", "data.source.path"} <= settings
    assert settings <= keys_passed, f"Path settings never resolved with their key: {sorted(settings - keys_passed)}"


# --- no credentials in params.yaml, output or logs --------------------------------------------

@pytest.mark.parametrize("uri,shown", [
    ("http://user:secret@mlflow.example:5000", "http://user:***@mlflow.example:5000"),
    ("https://user:p%40ss:w@host/prefix?x=1#f", "https://user:***@host/prefix?x=1#f"),
    ("postgresql://me:pw@db/mlflow", "postgresql://me:***@db/mlflow"),
    ("http://user@host:5000", "http://user@host:5000"),  # a user name alone is no secret
    ("http://host:5000/?next=a:b@c", "http://host:5000/?next=a:b@c"),  # an @ after the host is not a user part
    ("sqlite:////tmp/x/mlruns.db", "sqlite:////tmp/x/mlruns.db"),
    ("databricks://profile:prefix", "databricks://profile:prefix"),
    ("not a uri", "not a uri"),
])
def test_redaction_hides_the_password_and_nothing_else(uri: str, shown: str):
    assert redact_uri(uri) == shown
    assert has_password(uri) == (shown != uri)


def test_a_password_in_the_tracking_uri_of_params_is_refused(tmp_path: Path):
    raw = yaml.safe_load(PARAMS.read_text())
    raw["tracking"]["uri"] = "http://alice:s3cret@mlflow.example:5000"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as refused:
        load_config(params)
    message = str(refused.value)
    assert "tracking.uri" in message and "MLFLOW_TRACKING_USERNAME" in message and "MLFLOW_TRACKING_PASSWORD" in message
    assert "s3cret" not in message and "http://alice:***@mlflow.example:5000" in message
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_PASSWORD"):
        load_config(PARAMS, ["tracking.uri=http://alice:s3cret@host"])


# Names that hold a tracking URI wherever the project formats one into text.
URI_NAMES = {"uri", "tracking_uri"}
# Calls whose f-string argument is an address used to connect, never shown.
CONNECTS = ("requests.", "urllib.request.", "urlopen", "MlflowClient")


def mentions_uri(node: ast.AST, redacted: set[str]) -> bool:
    """Whether an f-string's `{...}` shows a tracking URI not passed through redact_uri (nor
    held in a variable set from redact_uri)."""
    for inner in ast.walk(node):
        if isinstance(inner, ast.Call) and dotted(inner.func) == "redact_uri":
            return False
        if isinstance(inner, ast.Name) and inner.id in URI_NAMES - redacted:
            return True
        if isinstance(inner, ast.Attribute) and inner.attr in URI_NAMES:
            return True
        if isinstance(inner, ast.Constant) and inner.value in URI_NAMES:  # result['tracking_uri']
            return True
    return False


def redacted_names(function: ast.AST) -> set[str]:
    """Variables a function sets to redact_uri(...)."""
    return {
        target.id for node in ast.walk(function)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and dotted(node.value.func) == "redact_uri"
        for target in node.targets if isinstance(target, ast.Name)
    }


def unredacted_uris(source: Path) -> list[str]:
    tree = ast.parse(source.read_text(), filename=str(source))
    connecting = {
        id(arg) for call in ast.walk(tree) if isinstance(call, ast.Call) and dotted(call.func).startswith(CONNECTS)
        for arg in call.args
    }
    redacted_in = {}  # each f-string -> the redacted variables of the innermost function around it
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for scope, names in [(tree, set()), *((f, redacted_names(f)) for f in functions)]:  # outer scopes first
        redacted_in.update({id(text): (text, names) for text in ast.walk(scope) if isinstance(text, ast.JoinedStr)})
    return sorted({
        f"{where(source, value)}: {ast.unparse(value.value)}"
        for text, names in redacted_in.values() if id(text) not in connecting
        for value in text.values if isinstance(value, ast.FormattedValue) and mentions_uri(value.value, names)
    })


def test_every_tracking_uri_put_into_text_is_redacted():
    """Whatever is printed, logged, raised or published (a Markdown report) shows a tracking
    URI through redact_uri: one from MLFLOW_TRACKING_URI may hold a password."""
    found = [problem for source in project_sources() if source.parent.name != "tests" for problem in unredacted_uris(source)]
    assert not found, "a tracking URI shown without redact_uri:\n" + "\n".join(found)


def test_the_uri_scan_finds_what_it_looks_for(tmp_path: Path):
    code = tmp_path / "code.py"
    code.write_text(
        'print(f"run in {result[\'tracking_uri\']}")\n'
        'raise E(f"no server at {uri}")\n'
        'requests.get(f"{uri.rstrip(\'/\')}/health")\n'
        'print(f"run in {redact_uri(ref.uri)}")\n'
        'link = f"{parent.uri}/#/runs"\n'
        'def shown(tracking_uri):\n'
        '    tracking_uri = redact_uri(tracking_uri)\n'
        '    return f"in {tracking_uri}"\n'
        'def unshown(tracking_uri):\n'
        '    return f"in {tracking_uri}"\n'
    )
    assert sorted(int(line.split(":")[1]) for line in unredacted_uris(code)) == [1, 2, 5, 10]
