"""Write a benchmark's figures into its page (docs/results.md for the headline figures, the
others beside their subject: PAGES), between its two markers:

    <!-- measured: NAME -->
    ...rewritten by `record(NAME, figures)`...
    <!-- /measured: NAME -->

The block starts with one line giving the date, the machine (CPU model, cores, torch, GPU) and
the command line that measured it; then the figures: a Markdown table when they are a list of
flat dicts (one row each), else a fenced json block. The rest of the page is left as it is.
A page without the marker pair is an error: the figures go where the page says, never at its end.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "results.md"  # the headline figures; the others live with their subject
PAGES = {"overhead": REPO / "docs" / "operations.md", "concurrency": REPO / "docs" / "operations.md",
         "tabular": REPO / "docs" / "tables.md"}


def page_of(name: str) -> Path:
    return PAGES.get(name, PAGE)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- measured: {name} -->", f"<!-- /measured: {name} -->"


def _block(name: str, text: str) -> re.Match | None:
    start, end = (re.escape(marker) for marker in markers(name))
    found = list(re.finditer(rf"^{start}[ \t]*\n(.*?)^{end}[ \t]*$", text, flags=re.MULTILINE | re.DOTALL))
    return found[0] if len(found) == 1 else None


def check(name: str, page: Path | None = None) -> None:
    """Raise, naming the page and the markers to add, unless the page has exactly one marker pair
    for `name` (by default its page, page_of). Benchmarks call it before measuring, so a long run
    is not lost to a missing marker."""
    page = page or page_of(name)
    if not page.is_file() or _block(name, page.read_text()) is None:
        start, end = markers(name)
        raise ValueError(
            f"{page}: needs exactly one pair of lines `{start}` ... `{end}` around the figures of "
            f"{name}; add them where the figures belong"
        )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return "CPU model unknown"


def machine() -> str:
    """The machine, read now: CPU model, usable cores, torch version and the GPU when CUDA has one."""
    import torch

    cores = len(os.sched_getaffinity(0))
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu_model()} ({cores} cores), torch {torch.__version__}, {gpu}"


def command_line(argv: list[str] | None = None, executable: str | None = None) -> str:
    """This process's command line, the interpreter and script relative to the repository when
    they lie in it (`.venv/bin/python benchmarks/train.py --record`)."""
    argv = list(sys.argv if argv is None else argv)
    words = [executable or sys.executable, *argv]
    for i in (0, 1):
        if i < len(words):
            path = Path(words[i]).absolute()
            if path.is_relative_to(REPO):
                words[i] = str(path.relative_to(REPO))
    return shlex.join(words)


def heading(command: str, machine_text: str, today: datetime.date | None = None) -> str:
    return f"**Measured {(today or datetime.date.today()).isoformat()}** on {machine_text}: `{command}`"


def _cell(value) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def render(figures) -> str:
    """A Markdown table for a list of flat dicts (columns in order of first appearance), else JSON."""
    rows = figures if isinstance(figures, list) else None
    if rows and all(isinstance(row, dict) and not any(isinstance(v, (dict, list)) for v in row.values()) for row in rows):
        columns = list(dict.fromkeys(key for row in rows for key in row))
        lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
        return "\n".join(lines)
    return "```json\n" + json.dumps(figures, indent=2) + "\n```"


def record(name: str, figures, page: Path | None = None, command: str | None = None, machine_text: str | None = None) -> None:
    """Replace what lies between the markers of `name` in `page` (default: page_of) with today's
    date, the machine, the command (default: this process's) and the figures."""
    page = page or page_of(name)
    check(name, page)
    text = page.read_text()
    found = _block(name, text)
    body = f"{heading(command or command_line(), machine_text or machine())}\n\n{render(figures)}\n\n"
    page.write_text(text[: found.start(1)] + body + text[found.end(1):])
    print(f"recorded {name} in {page}", file=sys.stderr)
