"""The documentation cannot rot: every command shown in README.md and docs/*.md is checked
against the real code.

For each fenced code block in bash, sh, shell, console or no language (console blocks: only the
lines after a `$ ` prompt), and for each inline code span of the prose (`make run ARGS="..."`),
every command line (continuations joined, comments, environment assignments and redirections
dropped, `&&`, `;`, `|`, `&` split) is checked when it invokes:

- `granular ...` or `.venv/bin/granular ...`: parsed by the real argparse parser of the
  `granular` console script (found in pyproject.toml, built by its `main`, abbreviations off),
  so an unknown subcommand or flag fails; then each `--set KEY=VALUE` key is walked through the
  configuration's pydantic models, and the parameters file (`--params`, else ROOT/params.yaml)
  must load with all the line's overrides (`granular.config.load_config`); each override must
  change what the run reads of its configuration (`resolved`: loaded without that override, the
  same file and the other overrides, the run would read the same, so the line shows a setting
  that does nothing: a value it has already, or a shared `train` key every view sets itself);
  `granular tune VIEW` must name a view of that configuration. A span of prose that is only
  `--set KEY=VALUE` stands for `granular run --set KEY=VALUE` on ROOT/params.yaml;
- `make TARGET [ARGS="..."]`: the target and variable must exist in the Makefile; `make run`'s
  ARGS are checked as `granular run ARGS`, `make test`'s paths must exist;
- `python -m granular...` (any python): the module must be importable (importlib.util.find_spec),
  and its arguments must parse with a parser rebuilt from the module's `add_argument` calls
  (read from its source: importing torch or scikit-learn would cost seconds);
- `python SCRIPT.py`: the script must exist, and its arguments parse the same way;
- `dvc SUBCOMMAND`: the subcommand (and the sub-subcommand of metrics, plots, remote) must be in
  the allowlist below.

docs/archive.md is not checked for commands or configuration fragments: it records trials as
they ran with the code and parameters of their day.

Placeholders: write them as UPPER_CASE words (`RUN_ID`, `VIEW`); they are passed to the parser
as they are, and an UPPER_CASE view name is not looked up. A `--root` under `/path/to/` stands
for the project root. Commands of other tools (prefect, mlflow, curl, ...) are not checked.

Besides commands: ```yaml blocks whose top-level keys are all configuration sections must load
as a configuration; relative Markdown links must point at files (and headings) that exist; and
inline code naming a file or folder of the repository (`granular/core/`, `flows/cli.py`) must
name one that exists.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import io
import os
import re
import shlex
import tomllib
import types
import typing
from pathlib import Path
from unittest import mock

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ARCHIVE = ROOT / "docs" / "archive.md"  # dated trials: their commands ran with the code of their day
CURRENT_DOCS = [path for path in DOCS if path != ARCHIVE]
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*")
PLACEHOLDER_ROOT = "/path/to/"

# dvc subcommands the docs may show; for these, the second word too.
DVC_COMMANDS = {
    "add": None, "checkout": None, "commit": None, "dag": None, "diff": None, "exp": None,
    "fetch": None, "gc": None, "init": None, "params": {"diff"}, "pull": None, "push": None,
    "repro": None, "status": None,
    "metrics": {"show", "diff"},
    "plots": {"show", "diff", "modify", "templates"},
    "remote": {"add", "modify", "list", "remove", "default", "rename"},
}


# ---------------------------------------------------------------------------------------------
# Finding the commands


@dataclasses.dataclass(frozen=True)
class Command:
    source: str  # "docs/operations.md:42"
    text: str  # the command as written (continuations joined)
    argv: tuple[str, ...]  # its words, as the shell would pass them

    def __str__(self) -> str:
        return f"{self.source}: {self.text}"


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    language: str
    start: int  # line number of the first line inside the fence
    lines: tuple[str, ...]


def fenced_blocks(path: Path) -> list[Block]:
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"\s*(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.groups()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            body.append(lines[j])
            j += 1
        blocks.append(Block(path, language.lower(), i + 2, tuple(body)))
        i = j + 1
    return blocks


def command_lines(block: Block) -> list[tuple[int, str]]:
    """(line number, text) of each logical command line of a shell block."""
    found: list[tuple[int, str]] = []
    heredoc = None
    pending, pending_line = "", 0
    for offset, raw in enumerate(block.lines):
        number = block.start + offset
        line = raw.strip()
        if heredoc:
            if line == heredoc:
                heredoc = None
            continue
        if block.language == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending:
            pending_line = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        opened = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", text)
        if opened:
            heredoc = opened.group(1)
        if text and not text.startswith("#"):
            found.append((pending_line, text))
    return found


SEPARATORS = {"&&", "||", ";", "|", "&", ";;"}
REDIRECTIONS = {">", ">>", "<", "<<", "<<<", ">&", "&>", "2>", "<<-"}


def simple_commands(text: str) -> list[list[str]]:
    """The words of each simple command of a shell line: comments, leading VAR=value
    assignments and redirections dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands, words = [], []
    tokens = iter(list(lexer))
    for token in tokens:
        if token in SEPARATORS:
            commands.append(words)
            words = []
        elif token in REDIRECTIONS or re.fullmatch(r"\d?[<>]+&?", token):
            next(tokens, None)  # the redirection's target
        else:
            words.append(token)
    commands.append(words)
    cleaned = []
    for words in commands:
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words:
            cleaned.append(words)
    return cleaned


def is_python(word: str) -> bool:
    return re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word) is not None


def kind_of(argv: list[str]) -> str | None:
    """Which checker a command goes to, or None when it is not checked."""
    head = argv[0]
    if head == "granular" or head.endswith("/granular"):
        return "granular"
    if head == "make":
        return "make"
    if head == "dvc" or head.endswith("/dvc"):
        return "dvc"
    if is_python(head) and len(argv) > 1:
        if argv[1] == "-m" and len(argv) > 2 and argv[2].split(".")[0] == "granular":
            return "module"
        if argv[1].endswith(".py"):
            return "script"
    return None


def inline_spans(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each inline code span of the prose: outside the fenced blocks and
    the blocks a benchmark writes (between `<!-- measured: NAME -->` markers: a record of what
    ran, with the code of its date). A span may run over a line break (not a blank line), which
    becomes a space."""
    lines, fenced, measured = path.read_text().splitlines(), False, False
    for i, line in enumerate(lines):  # the lines left out are blanked, so the line numbers stay
        fence = re.match(r"\s*(`{3,}|~{3,})", line)
        marker = re.match(r"<!-- (/?)measured: \S+ -->", line)
        fenced ^= bool(fence)
        measured = bool(marker and not marker.group(1)) or (measured and not marker)
        lines[i] = "" if fence or marker or fenced or measured else line
    text = "\n".join(lines)
    spans = re.finditer(r"(?<!`)`(?!`)((?:[^`\n]|\n(?![ \t]*\n))+?)`(?!`)", text)
    return [(text.count("\n", 0, span.start()) + 1, " ".join(span.group(1).split())) for span in spans]


def _words(text: str) -> list[list[str]]:
    try:
        return simple_commands(text)
    except ValueError as error:  # unbalanced quotes: only a problem for a command
        return [[text.split()[0], f"<unparsable: {error}>"]] if text.split() else []


# The fewest words of an inline span that runs something, by kind: fewer only name a program or
# a subcommand (`granular tune`, `dvc`), as prose does.
LEAST_WORDS = {"granular": 3, "make": 2, "dvc": 2, "module": 3, "script": 2}


def span_commands(text: str) -> list[list[str]]:
    """The commands an inline span shows; a bare `--set KEY=VALUE` is one of the default run,
    unless a placeholder in its key makes it a form (`--set train.KEY=VALUE`)."""
    commands = []
    for argv in _words(text):
        if argv[0] == "--set" and len(argv) > 1 and "=" in argv[1]:
            if any(PLACEHOLDER.fullmatch(part) for part in argv[1].partition("=")[0].split(".")):
                continue
            argv = ["granular", "run", *argv]
        if kind_of(argv) and len(argv) >= LEAST_WORDS[kind_of(argv)]:
            commands.append(argv)
    return commands


def documented_commands(paths: list[Path] = CURRENT_DOCS) -> list[Command]:
    commands = []
    for path in paths:
        shown = [
            (number, text, argv)
            for block in fenced_blocks(path) if block.language in SHELL_LANGUAGES
            for number, text in command_lines(block) for argv in _words(text)
        ]
        shown += [(number, text, argv) for number, text in inline_spans(path) for argv in span_commands(text)]
        for number, text, argv in shown:
            if kind_of(argv):
                    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    commands.append(Command(f"{where}:{number}", text, tuple(argv)))
    return commands


# ---------------------------------------------------------------------------------------------
# Capturing a program's argparse parser without running the program


class _ParserBuilt(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def capture_parser(main, drop: frozenset[str] = frozenset()) -> argparse.ArgumentParser | None:
    """The argparse parser `main` builds: main runs until its first parse_args, which hands the
    parser over instead of parsing. Flags in `drop` are left out of it (to prove the checker
    notices a removed flag). None when main parses no arguments with argparse."""

    def hand_over(self, args=None, namespace=None):
        raise _ParserBuilt(self)

    add_argument = argparse._ActionsContainer.add_argument

    def add_argument_but_dropped(self, *names, **kwargs):
        if drop & set(names):
            return None
        return add_argument(self, *names, **kwargs)

    environ = dict(os.environ)
    try:
        with (
            mock.patch.object(argparse.ArgumentParser, "parse_args", hand_over),
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", hand_over),
            mock.patch.object(argparse._ActionsContainer, "add_argument", add_argument_but_dropped),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            takes_argv = bool(inspect.signature(main).parameters)
            main([]) if takes_argv else main()
    except _ParserBuilt as built:
        parser = built.parser
    else:
        return None  # main returned without parsing arguments
    finally:
        os.environ.clear()
        os.environ.update(environ)
    for each in _parsers(parser):  # a shortened flag must not pass for a documented one
        each.allow_abbrev = False
    return parser


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found += _parsers(sub)
    return found


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace | None, str]:
    """The namespace, or None and argparse's complaint."""
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parser.parse_args(argv), ""
        except SystemExit as stop:
            if stop.code == 0:  # --help
                return argparse.Namespace(), ""
            lines = errors.getvalue().strip().splitlines()
            return None, lines[-1] if lines else f"exit code {stop.code}"


def console_script(name: str) -> str:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts[name]


@functools.cache
def granular_parser(drop: frozenset[str] = frozenset()) -> argparse.ArgumentParser:
    target = console_script("granular")
    module_name, _, attribute = target.partition(":")
    main = getattr(importlib.import_module(module_name), attribute)
    parser = capture_parser(main, drop)
    assert parser is not None, (
        f"the `granular` console script ({target}) built no argparse parser before running: "
        "tests/test_docs.py needs one to check the documented commands"
    )
    return parser


@functools.cache
def program_parser(path: Path, module_name: str | None = None) -> argparse.ArgumentParser | None:
    """The parser of a module or script, read from its source without importing it (its imports,
    torch or scikit-learn, would cost seconds): every `add_argument` call with its literal names,
    action, nargs, required and dest, and its choices when they are a literal or a module-level
    collection of literals (`choices=sorted(STEPS)`). A program with subcommands is imported and
    its parser captured instead. None when the program takes no argparse arguments."""
    tree = ast.parse(path.read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)]
    if any(call.func.attr == "add_subparsers" for call in calls):
        main = importlib.import_module(module_name).main if module_name else None
        return capture_parser(main) if main else None
    adds = [call for call in calls if call.func.attr == "add_argument"]
    if not adds:
        return None
    collections = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            items = _literal_items(node.value)
            for target in targets:
                if isinstance(target, ast.Name) and items is not None:
                    collections[target.id] = items
    parser = argparse.ArgumentParser(prog=str(module_name or path.name), allow_abbrev=False)
    for call in adds:
        names = [arg.value for arg in call.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        settings = {}
        for keyword in call.keywords:
            if keyword.arg in ("action", "nargs", "required", "dest", "const"):
                with contextlib.suppress(ValueError):
                    settings[keyword.arg] = ast.literal_eval(keyword.value)
            elif keyword.arg == "choices" and (choices := _choices(keyword.value, collections)) is not None:
                settings["choices"] = choices
        parser.add_argument(*names, **settings)
    return parser


def _literal_items(node) -> list | None:
    """The keys of a dict display, the items of a list, tuple or set display: when literal."""
    elements = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
    if elements is None or not isinstance(node, (ast.Dict, ast.List, ast.Tuple, ast.Set)):
        return None
    try:
        return [ast.literal_eval(element) for element in elements]
    except ValueError:
        return None


def _choices(node, collections: dict) -> list | None:
    if isinstance(node, ast.Name):
        return collections.get(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("sorted", "list", "tuple"):
        return _choices(node.args[0], collections) if node.args else None
    return _literal_items(node)


# ---------------------------------------------------------------------------------------------
# The configuration: does a dotted key exist?


_LEAF = object()  # a value with no keys below it


def _expand(annotation) -> list:
    """The models, mappings and leaves a field's annotation can hold."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _expand(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [kind for member in typing.get_args(annotation) for kind in _expand(member)]
    if annotation is type(None):
        return []
    if annotation is typing.Any or origin in (dict, list, tuple):
        return [annotation]
    return [annotation] if _is_model(annotation) else [_LEAF]


def _is_model(kind) -> bool:
    from pydantic import BaseModel

    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _children(kind, part: str, top) -> list:
    """What the key `part` under something of `kind` can hold; [] when it has no such key."""
    if _is_model(kind):
        for name, field in kind.model_fields.items():
            if part in (name, field.alias):
                found = _expand(field.annotation)
                # A view's own `train:` is a mapping checked as the shared `train` section.
                if found == [dict[str, typing.Any]] and part in top.model_fields:
                    return _expand(top.model_fields[part].annotation)
                return found
        return []
    origin = typing.get_origin(kind)
    if origin is dict:
        return _expand(typing.get_args(kind)[1])
    if origin in (list, tuple):
        return _expand(typing.get_args(kind)[0]) if part.isdigit() else []
    if kind is typing.Any:
        return [typing.Any]
    return []


def unknown_key(key: str) -> str | None:
    """Why the dotted key names nothing in the configuration, or None when it does. Walks the
    pydantic models of granular.config: a view's `train.*` are the train section's fields; the
    entries of a mapping (a view's name, tune.space.<setting>) are left to load_config."""
    from granular.config import Config

    kinds, parts = [Config], key.split(".")
    for depth, part in enumerate(parts):
        below = [child for kind in kinds for child in _children(kind, part, Config)]
        if not below:
            known = sorted(
                {field.alias or name for kind in kinds if _is_model(kind) for name, field in kind.model_fields.items()}
            )
            where = ".".join(parts[:depth]) or "the top level"
            return f"--set {key}: {part!r} is not a key of {where}" + (f" (keys there: {', '.join(known)})" if known else "")
        kinds = below
    return None


# ---------------------------------------------------------------------------------------------
# What a run reads of its configuration


def resolved(config) -> dict:
    """What a run reads of its configuration: every section as loaded, except the shared `train`
    section, which the run reads through each view's training (`Config.train_config`) and the
    student's (`student_config`; it also carries what is read directly: seed, threads,
    precision). A shared `train` key that every view and the student set for themselves
    reaches nothing."""
    from granular.nn.distill import student_config

    settings = config.model_dump(mode="json", by_alias=True)
    del settings["train"]
    settings["training of each view"] = {
        name: config.train_config(view).model_dump(mode="json") for name, view in config.views.items()
    }
    settings["training of the student"] = student_config(config.distill, config.train).model_dump(mode="json")
    return settings


def idle_overrides(params: Path, overrides: list[str], config) -> list[str]:
    """The overrides without which the run would read the same configuration (`config`: loaded
    with them all). One without which the configuration does not load is needed."""
    from granular.config import ConfigError, load_config

    reads = resolved(config)
    idle = []
    for i, override in enumerate(overrides):
        try:
            without = load_config(params, overrides[:i] + overrides[i + 1:])
        except ConfigError:
            continue
        if resolved(without) == reads:
            idle.append(override)
    return idle


# ---------------------------------------------------------------------------------------------
# The checks


def _project_path(text: str) -> Path:
    if text.startswith(PLACEHOLDER_ROOT):
        return ROOT
    path = Path(text)
    return path if path.is_absolute() else ROOT / path


def check_granular(argv: list[str], parser: argparse.ArgumentParser | None = None) -> list[str]:
    from granular.config import ConfigError, load_config

    parser = parser or granular_parser()
    namespace, complaint = parse(parser, argv)
    if namespace is None:
        return [f"`granular {' '.join(argv)}`: the granular command refuses it: {complaint}"]
    if "--help" in argv or "-h" in argv:
        return []
    overrides = list(getattr(namespace, "overrides", None) or [])
    problems = [problem for override in overrides if (problem := unknown_key(override.partition("=")[0]))]
    root = _project_path(getattr(namespace, "root", None) or ".")
    params = _project_path(namespace.params) if getattr(namespace, "params", None) else root / "params.yaml"
    if not params.is_file():
        return problems + [f"the parameters file {params} does not exist"]
    try:
        config = load_config(params, overrides)
    except ConfigError as error:
        return problems + [f"the configuration refuses it: {error}"]
    problems += [
        f"--set {override}: changes nothing the run reads of {params.name} (the same without it): "
        "show an override that does something"
        for override in idle_overrides(params, overrides, config)
    ]
    view = getattr(namespace, "view", None)
    if view and not PLACEHOLDER.fullmatch(view) and view not in config.views:
        problems.append(f"no view named {view!r} in {params.name}; views are {list(config.views)}")
    return problems


def _makefile() -> tuple[set[str], str]:
    text = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.MULTILINE))
    return targets, text


def check_make(argv: list[str]) -> list[str]:
    targets, text = _makefile()
    wanted = [word for word in argv[1:] if "=" not in word]
    variables = dict(word.split("=", 1) for word in argv[1:] if "=" in word)
    problems = [f"the Makefile has no target {target!r}" for target in wanted if target not in targets]
    problems += [f"the Makefile does not use the variable {name}" for name in variables if f"$({name})" not in text]
    arguments = shlex.split(variables.get("ARGS", ""))
    if "run" in wanted:
        problems += check_granular(["run", *arguments])
    if "test" in wanted:
        for word in arguments:
            if not word.startswith("-") and not (ROOT / word.split("::")[0]).exists():
                problems.append(f"make test ARGS: no test path {word}")
    return problems


def check_dvc(argv: list[str]) -> list[str]:
    words = [word for word in argv[1:] if not word.startswith("-")]
    if not words or words[0] not in DVC_COMMANDS:
        return [f"`dvc {' '.join(argv[1:])}`: not a dvc subcommand of the allowlist {sorted(DVC_COMMANDS)}"]
    second = DVC_COMMANDS[words[0]]
    if second is not None and (len(words) < 2 or words[1] not in second):
        return [f"`dvc {words[0]}` needs one of {sorted(second)}"]
    return []


def check_module(argv: list[str]) -> list[str]:
    module, arguments = argv[2], argv[3:]
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        missing = f"`python -m {module}`: no module {module} (importlib.util.find_spec finds nothing)"
        return [f"{missing}: the docs name a module that does not exist; move the code there or fix the docs"]
    if spec.origin is None or not spec.origin.endswith(".py"):
        return []
    parser = program_parser(Path(spec.origin), module)
    if parser is None:
        return []
    namespace, complaint = parse(parser, arguments)
    return [] if namespace is not None else [f"`python -m {module} {' '.join(arguments)}`: refused: {complaint}"]


def check_script(argv: list[str]) -> list[str]:
    path = _project_path(argv[1])
    if not path.is_file():
        return [f"no script {argv[1]}"]
    parser = program_parser(path)
    if parser is None:
        return []
    namespace, complaint = parse(parser, argv[2:])
    return [] if namespace is not None else [f"`{argv[1]} {' '.join(argv[2:])}`: refused: {complaint}"]


def check(argv: list[str]) -> list[str]:
    """Why a documented command would not run as shown; [] when it would."""
    kind = kind_of(argv)
    if kind == "granular":
        return check_granular(argv[1:])
    if kind == "make":
        return check_make(argv)
    if kind == "dvc":
        return check_dvc(argv)
    if kind == "module":
        return check_module(argv)
    if kind == "script":
        return check_script(argv)
    return []


def check_line(text: str) -> list[str]:
    """The problems of every checked command of one shell line."""
    return [problem for argv in simple_commands(text) if kind_of(argv) for problem in check(argv)]


# ---------------------------------------------------------------------------------------------
# The tests: the docs as they are


COMMANDS = documented_commands()


def test_the_docs_show_commands_to_check():
    kinds = {kind_of(list(command.argv)) for command in COMMANDS}
    assert {"granular", "make", "dvc", "module"} <= kinds, kinds
    readme = [command for command in COMMANDS if command.source.startswith("README.md")]
    quick_run = [command for command in readme if command.argv[:2] == ("make", "run") and len(command.argv) > 2]
    assert quick_run, "README.md shows no `make run ARGS=...` example"


@pytest.mark.parametrize("command", COMMANDS, ids=[command.source for command in COMMANDS])
def test_documented_command_runs(command: Command):
    problems = check(list(command.argv))
    assert not problems, f"{command}\n  " + "\n  ".join(problems)


def _config_sections() -> set[str]:
    from granular.config import Config

    return {field.alias or name for name, field in Config.model_fields.items()}


def yaml_fragments() -> list[tuple[str, dict]]:
    fragments = []
    for path in CURRENT_DOCS:
        for block in fenced_blocks(path):
            if block.language not in ("yaml", "yml"):
                continue
            content = yaml.safe_load("\n".join(block.lines))
            if isinstance(content, dict) and content and set(content) <= _config_sections():
                fragments.append((f"{path.relative_to(ROOT)}:{block.start}", content))
    return fragments


@pytest.mark.parametrize("source,fragment", yaml_fragments(), ids=[source for source, _ in yaml_fragments()])
def test_documented_configuration_loads(source: str, fragment: dict, tmp_path: Path):
    from granular.config import ConfigError, load_config

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(fragment))
    try:
        load_config(params)
    except ConfigError as error:
        pytest.fail(f"{source}: this params.yaml fragment does not load on its own: {error}")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _outside_fences(path: Path) -> str:
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if re.match(r"\s*(`{3,}|~{3,})", line):
            inside = not inside
            continue
        if not inside:
            lines.append(line)
    return "\n".join(lines)


def test_links_between_pages_resolve():
    broken = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", _outside_fences(path)):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}: no such file")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+\s+(.+)$", _outside_fences(linked), flags=re.MULTILINE)
                if anchor not in {_anchor(heading) for heading in headings}:
                    broken.append(f"{path.relative_to(ROOT)}: {target}: no heading with that anchor")
    assert not broken, "\n".join(broken)


REPOSITORY_PATH = re.compile(
    r"(?:granular|flows|tasks|tests|benchmarks|examples|docs|scripts)/[\w./-]*?(?:/|\.(?:py|yaml|md|sh|toml|txt))"
)


def test_repository_paths_named_in_the_docs_exist():
    missing = []
    for path in DOCS:
        for span in re.findall(r"`([^`\n]+)`", _outside_fences(path)):
            name = span.split(":")[0]
            if REPOSITORY_PATH.fullmatch(name) and not (ROOT / name).exists():
                missing.append(f"{path.relative_to(ROOT)}: `{span}`")
    missing += [f"README.md, Layout: {name}" for name in layout_entries() if not (ROOT / name).exists()]
    assert not missing, "named in the docs, absent from the repository:\n" + "\n".join(missing)


def layout_entries() -> list[str]:
    """The paths of the README's layout tree: the block under `## Layout`, one entry a line
    (indented under its folder), its description after two spaces or more."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1] if "## Layout" in text else ""
    blocks = fenced_blocks_of(section)
    assert blocks, "README.md has no layout tree under `## Layout`"
    entries, folders = [], []  # folders: (indent, name) of the enclosing folders
    for line in blocks[0]:
        indent = len(line) - len(line.lstrip())
        names = re.split(r"\s{2,}", line.strip())[0] if line.strip() else ""
        if not names or indent >= 16:  # a description continued
            continue
        while folders and folders[-1][0] >= indent:
            folders.pop()
        for name in names.split(", "):
            entries.append("/".join([folder for _, folder in folders] + [name.rstrip("/")]))
        if names.endswith("/"):
            folders.append((indent, names.rstrip("/")))
    return entries


def fenced_blocks_of(text: str) -> list[list[str]]:
    blocks, current = [], None
    for line in text.splitlines():
        if re.match(r"\s*`{3,}", line):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    return blocks


# ---------------------------------------------------------------------------------------------
# The tests: the checker catches what rots


def test_checker_reports_an_unknown_flag():
    problems = check_line(".venv/bin/granular run --no-such-flag")
    assert problems and "--no-such-flag" in problems[0]


def test_checker_reports_an_unknown_subcommand():
    assert check_line("granular frobnicate --set train.epochs=2")


def test_checker_reports_an_unknown_set_key():
    problems = check_line("granular run --set no.such.key=1")
    assert problems and "no" in problems[0] and "no.such.key" in problems[0]
    assert check_line("granular run --set train.no_such_setting=1")
    assert check_line("granular run --set views.fine-28.no_such_setting=1")
    assert check_line("granular run --set views.fine-28.train.no_such_setting=1")
    assert check_line("granular run --set train.epochs=zero")  # a key that exists, a value that does not fit


def test_checker_accepts_what_exists():
    assert check_line("granular run --set views.fine-28.train.width=48 --set promotion.min_level_accuracy.coarse=0.98") == []
    assert check_line("MLFLOW_TRACKING_URI=http://127.0.0.1:5000 .venv/bin/granular run   # a comment") == []
    assert check_line("granular reproduce RUN_ID --root /path/to/project") == []


def test_checker_reports_an_override_that_changes_nothing():
    problems = check_line("granular run --set split.seed=0 --set data.limit=5000")  # split.seed is 0 already
    assert len(problems) == 1 and "--set split.seed=0: changes nothing" in problems[0]
    assert check_line('make run ARGS="--set split.seed=0"')
    assert check_line("granular run --set data.limit=5000 --set data.limit=5000")  # one repeats the other
    assert check_line("granular run --set split.seed=1 --set data.limit=5000") == []


def test_checker_reports_an_override_that_the_views_shadow():
    """Both default views set their own epochs and the student has its own, so the shared
    train.epochs reaches nothing of the default run."""
    problems = check_line("granular run --set train.epochs=2")
    assert problems and "train.epochs=2" in " ".join(problems)
    assert check_line("granular run --set views.fine-28.train.epochs=2") == []
    every_view = "--set views.fine-28.train.epochs=2 --set views.fine-28-tops-Dress.train.epochs=2"
    problems = check_line(f"granular run --set train.epochs=2 {every_view}")  # accepted, and inert
    assert len(problems) == 1 and "--set train.epochs=2: changes nothing" in problems[0]


def test_commands_in_the_prose_are_checked(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        'A quick run: `make run ARGS="--set data.limit=5000"`; a wrong one, `granular run --set\n'
        "no.such.key=1`; a folder, `granular/core/`; a bare `--set split.seed=0`, a flag `--set`, a form\n"
        "`--set views.NAME.train.KEY=VALUE`;\n"
        "names, not commands: `granular tune`, `dvc`, `/opt/granular`.\n\n"
        "```bash\ngranular run --set `data.limit=1`\n```\n\n"
        "<!-- measured: demo -->\nWhat ran then: `granular run --set train.epochs=1`\n<!-- /measured: demo -->\n"
    )
    found = [(command.source.rsplit(":", 1)[1], command.argv) for command in documented_commands([page])]
    assert found == [
        ("7", ("granular", "run", "--set", "`data.limit=1`")),  # a fence holds no spans
        ("1", ("make", "run", "ARGS=--set data.limit=5000")),
        ("1", ("granular", "run", "--set", "no.such.key=1")),  # over the line break
        ("2", ("granular", "run", "--set", "split.seed=0")),  # a bare override: of the default run
    ], found
    assert [bool(check(list(argv))) for _, argv in found[1:]] == [False, True, True]


def test_checker_reports_make_and_dvc_mistakes():
    assert check_line('make run ARGS="--no-such-flag"')
    assert check_line('make run ARGS="--set no.such.key=1"')
    assert check_line("make runn")
    assert check_line("dvc reproo")
    assert check_line("dvc metrics shw")
    assert check_line("dvc repro && dvc metrics show") == []


def test_checker_reports_a_missing_module_or_script():
    problems = check_line(".venv/bin/python -m granular.no_such_module --rows 10")
    assert problems and "granular.no_such_module" in problems[0]
    assert check_line(".venv/bin/python benchmarks/no_such_benchmark.py")


def test_checker_reports_arguments_a_module_or_script_refuses():
    examples = "python -m granular.demo.examples {} --out data/iris.csv"
    assert check_line(examples.format("iris")) == []
    assert check_line(examples.format("no_such_example"))  # not among its choices
    assert check_line("python -m granular.demo.synthetic --out data/synthetic.parquet")  # --rows is required
    assert check_line(".venv/bin/python benchmarks/train.py --no-such-flag")


def test_removing_a_documented_flag_fails_the_docs():
    """For every flag the docs pass to `granular`, a CLI without that flag makes at least one
    documented command fail."""
    documented = [list(command.argv) for command in COMMANDS if kind_of(list(command.argv)) == "granular"]
    for command in COMMANDS:
        argv = list(command.argv)
        if argv[:2] == ["make", "run"]:
            documented += [["granular", "run", *shlex.split(word.partition("=")[2])] for word in argv if word.startswith("ARGS=")]
    flags = sorted({word.split("=")[0] for argv in documented for word in argv if word.startswith("--")})
    assert {"--set", "--params", "--model", "--input"} <= set(flags), flags
    for flag in flags:
        parser = granular_parser(frozenset({flag}))
        failing = [argv for argv in documented if flag in argv and check_granular(argv[1:], parser)]
        assert failing, f"with {flag} removed from the granular command, no documented command fails"
