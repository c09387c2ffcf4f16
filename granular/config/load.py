"""Reading params.yaml with `--set key=value` overrides into a Config, and saying what is wrong
with either: the file or the override it came from, and the nearest key that exists."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from granular.config.root import Config
from granular.config.views import VIEW_SECTIONS


class ConfigError(ValueError):
    """params.yaml or an override is wrong; the message says which key and why."""


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` override in place; the value is parsed as YAML."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
        node = child
    try:
        node[leaf] = yaml.safe_load(text)
    except yaml.YAMLError as error:  # a python/object tag among them: never constructed
        raise ConfigError(f"override {assignment!r}: not valid YAML: {error}") from None


def load_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read params.yaml, apply `key=value` overrides, and validate the whole into a Config."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"no parameters file at {path}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start}: 0x{error.object[error.start]:02x})") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    for assignment in overrides:
        apply_override(raw, assignment)
    _refuse_shadowed_overrides(raw, overrides)
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_problem(e, path, overrides) for e in error.errors())
        raise ConfigError(problems) from None


def _refuse_shadowed_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    """A `--set train.K=V` changes nothing for a view that sets its own train.K (the view's wins),
    so it is refused unless the same command also sets that view's key (or the view whole)."""
    declared = {section: raw.get(section) for section in VIEW_SECTIONS}
    if "views" not in raw:  # the default views
        declared["views"] = Config.model_fields["views"].default
    set_keys = [assignment.partition("=")[0] for assignment in overrides]
    problems = []
    for assignment in overrides:
        key, _, text = assignment.partition("=")
        for setting, value_text in _shared_train_settings(key, text):
            suffix = key.removeprefix(f"train.{setting}") if key != "train" else ""  # train.parts.head... keeps .head...
            shadowing = [
                f"{section}.{name}.train.{setting}"
                for section, views in declared.items() if isinstance(views, dict)
                for name, view in views.items() if setting in _own_train(view)
            ]
            silent = [
                where for where in shadowing
                if not any(where == k or where.startswith(f"{k}.") or (where + suffix) == k for k in set_keys)
            ]
            if silent:
                names = ", ".join(where.split(".")[1] for where in silent)
                instead = " ".join(f"--set {where}{suffix}={value_text}" for where in silent)
                problems.append(
                    f"--set {assignment} changes nothing for view(s) {names}: each sets its own train.{setting}, "
                    f"which wins over the shared one. Set theirs as well: {instead}"
                )
    if problems:
        raise ConfigError("; ".join(problems))


def _shared_train_settings(key: str, text: str) -> list[tuple[str, str]]:
    """The settings of the shared train section an override sets, each with its value as text:
    `train.K...=V` sets K; `train={K: V, ...}` sets each K."""
    if key.startswith("train."):
        return [(key.split(".")[1], text)]
    if key == "train":
        value = yaml.safe_load(text)
        if isinstance(value, dict):
            return [(setting, _as_text(setting_value)) for setting, setting_value in value.items()]
    return []


def _as_text(value: Any) -> str:
    """A value as a --set writes it (YAML on one line)."""
    return yaml.safe_dump(value, default_flow_style=True, width=1_000_000).removesuffix("\n").removesuffix("\n...")


def _own_train(view: Any) -> dict[str, Any]:
    """A declared view's own training settings, from params.yaml (a mapping) or a default view."""
    own = view.get("train") if isinstance(view, dict) else getattr(view, "train", None)
    return own if isinstance(own, dict) else {}


def _problem(error: dict, path: Path, overrides: list[str] | tuple[str, ...]) -> str:
    """One validation error, said where it came from (the --set that set the key, or the file)
    and, for a key that does not exist, with the nearest one that does."""
    loc = [str(part) for part in error["loc"] if not str(part).startswith(("function-", "tagged-union"))]
    text = error["msg"].removeprefix("Value error, ")
    about_view = re.match(r"view (\S+): ([\w.\[\]]+):", text)  # a check of the whole configuration
    if not loc and about_view:
        loc = ["views", about_view.group(1), *about_view.group(2).split(".")]
        text = text[about_view.end():].strip()
    key = ".".join(loc)
    source = str(path)
    for assignment in overrides:
        set_key = assignment.partition("=")[0]
        if key == set_key or key.startswith(f"{set_key}.") or set_key.startswith(f"{key}."):
            source = f"--set {assignment}"
    message = f"{source}: {key}: {text}" if key else f"{source}: {text}"
    if "Extra inputs are not permitted" in text and loc:
        nearest = difflib.get_close_matches(loc[-1], sorted(_setting_names(Config)), n=1, cutoff=0.75)
        if nearest:
            message += f" (did you mean {'.'.join([*loc[:-1], nearest[0]])}?)"
    return message


def _setting_names(model: type[BaseModel], seen: set | None = None) -> set[str]:
    """Every key name of a configuration section and the sections inside it, their aliases too."""
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    names = set()
    for name, field in model.model_fields.items():
        names |= {name, field.alias} - {None}
        stack = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                names |= _setting_names(annotation, seen)
            stack.extend(get_args(annotation))
    return names
