"""The package's shape, checked from its source: no import cycles, and each layer imports only
the layers below it. Read with `ast`, so function-level (lazy) imports count too."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "granular"

# Each layer, and the layers it may import (itself included). Listed top-down.
LAYERS = {
    "pipeline": {"pipeline", "serving", "modalities", "problems", "nn", "core", "config", "runtime", "store"},
    "serving": {"serving", "modalities", "problems", "nn", "core", "config", "runtime", "store"},
    "modalities": {"modalities", "problems", "nn", "core", "config", "runtime", "store"},
    "problems": {"problems", "core", "config", "runtime", "store"},
    "nn": {"nn", "core", "config", "runtime", "store"},
    "core": {"core", "config", "runtime", "store"},
    "demo": {"demo", "store"},
    "config": {"config", "runtime"},
    "runtime": {"runtime", "store", "config"},
    "store": {"store", "config"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(_without_type_checking_blocks(ast.parse(path.read_text()))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from granular.core import fusion` imports the module granular.core.fusion;
            # `from granular.modalities import modality_for`, the package's own code.
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != "granular":
                found.add(name)
    return found


def _without_type_checking_blocks(tree: ast.Module) -> ast.Module:
    """Imports under `if TYPE_CHECKING:` are for annotations only: they never run."""
    tree.body = [
        node for node in tree.body
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    ]
    return tree


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def module_file(module: str) -> Path:
    path = ROOT / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer(module: str) -> str:
    return module.split(".")[1]


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, f"import cycle: {' -> '.join(find_cycle(import_graph()))}"


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_layer_imports_only_layers_below_it():
    wrong = [
        f"{module} imports {dep}"
        for module, deps in import_graph().items()
        if module != "granular"
        for dep in deps
        if layer(dep) not in LAYERS[layer(module)]
    ]
    assert not wrong, "\n".join(sorted(wrong))


@pytest.mark.parametrize("outside", ["prefect", "mlflow", "tasks", "flows"])
def test_the_domain_package_needs_no_orchestration(outside):
    """granular/ is importable and testable without Prefect; the served model ships it alone."""
    users = [
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == outside)
        or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == outside for a in node.names))
    ]
    allowed = {"mlflow": {"granular.serving.model_code"}}.get(outside, set())
    assert set(users) <= allowed, f"{sorted(set(users) - allowed)} import {outside}"
