"""Each DVC stage lists, as dependencies, the code it can run: `dvc repro` reruns a stage whose
code changed, and the Prefect cache (tasks/caching.py) keys each step on the same list."""
from __future__ import annotations

from pathlib import Path

import yaml
from test_architecture import ROOT, import_graph, module_file

from granular.pipeline.stages import STEPS

DVC_FILE = ROOT / "dvc.yaml"
# Code listed file by file; elsewhere a subpackage is listed whole.
BY_FILE = ("granular/pipeline",)


def runs(module: str, graph: dict[str, set[str]]) -> set[str]:
    """Every module of the package that `module` imports, directly or not, itself included."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += graph.get(current, ())
    return seen


def covering_paths(modules: set[str]) -> set[str]:
    """The dependency entries that cover these modules: a subpackage folder, or a file of
    granular/pipeline/ or at the package's top. Packages whose __init__ holds no code are no entry."""
    paths = set()
    for module in modules:
        path = module_file(module).relative_to(ROOT)
        if path.name == "__init__.py" and not _has_code(ROOT / path):
            continue
        parts = path.parts
        if len(parts) == 2 or str(path.parent) in BY_FILE:
            paths.add(path.as_posix())
        else:
            paths.add(Path(*parts[:2]).as_posix())
    return paths


def _has_code(path: Path) -> bool:
    import ast

    body = ast.parse(path.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def expected_code_deps() -> dict[str, list[str]]:
    graph = import_graph()
    return {
        module: sorted(covering_paths(runs(f"granular.pipeline.{module}", graph) | runs("granular.pipeline.stages", graph)))
        for module in STEPS.values()
    }


def listed_code_deps() -> dict[str, tuple[str, list[str]]]:
    """Each dvc.yaml stage -> the step module its command runs, and the code it lists."""
    stages = yaml.safe_load(DVC_FILE.read_text())["stages"]
    listed = {}
    for name, stage in stages.items():
        spec = stage.get("do", stage)
        step = spec["cmd"].removeprefix("python -m granular.pipeline.stages ").split()[0]
        listed[name] = (STEPS[step], sorted(dep for dep in spec.get("deps", []) if dep.startswith("granular/")))
    return listed


def test_each_stage_lists_exactly_the_code_it_runs():
    expected, listed = expected_code_deps(), listed_code_deps()
    assert {module for module, _ in listed.values()} == set(expected), "dvc.yaml's stages are not the pipeline's steps"
    wrong = {stage: expected[module] for stage, (module, paths) in listed.items() if paths != expected[module]}
    assert not wrong, "dvc.yaml must list, as code deps of each stage:\n" + yaml.safe_dump(wrong)


def test_the_closure_follows_lazy_imports_and_skips_annotation_only_ones():
    graph = import_graph()
    clean = runs("granular.pipeline.clean", graph)
    assert "granular.modalities.tables.modality" in clean  # imported inside modality_named()
    assert "granular.serving.predict" not in clean
    assert "granular.serving.predict" in runs("granular.pipeline.distill", graph)
