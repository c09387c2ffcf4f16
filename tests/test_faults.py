"""The fault suite, through the pipeline's own steps on a project: each bad input stops the data
steps with a message that names the file (and the column or line), and leaves the outputs of
the last good run as they were; a step killed midway leaves no half-written output in use.

Row faults (NaN, ±inf, unknown labels, conflicting duplicates, text in a number column) are
quarantined with their reasons: see test_tabular.py, test_clean.py and test_quarantine.py.
Killed trainings, truncated checkpoints and cached results, concurrent runs and a tracking
server that is down: test_resume.py, test_caching.py, test_concurrency.py, test_crash.py.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml

from granular.config import load_config
from granular.modalities.images.idx import IdxError, write_idx
from granular.modalities.tables.source import TableSourceError
from granular.pipeline.clean import clean_step
from granular.pipeline.import_raw import import_raw_step
from granular.pipeline.split import split_step
from granular.pipeline.validate import validate_step
from granular.pipeline.view import view_step
from granular.store.paths import ProjectPaths

REPO = Path(__file__).resolve().parents[1]
IMAGES, LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"


def _digest(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _data_steps(root: Path) -> ProjectPaths:
    paths = ProjectPaths(root)
    config = load_config(paths.params)
    import_raw_step(config, paths)
    clean_step(config, paths)
    validate_step(config, paths)
    return paths


def _image_project(root: Path) -> Path:
    """An IDX source of 4x4 images, 10 classes, and a project that reads it."""
    source = root / "source"
    source.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 30)):
        write_idx(source / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
        write_idx(source / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    (root / "data").mkdir()
    (root / "data" / "taxonomy.yaml").write_bytes((REPO / "data" / "taxonomy.yaml").read_bytes())
    params = {
        "data": {"source": {"format": "idx", "path": str(source)}},
        "validate": {"image_shape": [4, 4], "min_per_class": 1},
        "views": {"fine-4": {"level": "fine", "resolution": 4}},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return source


def _gzip(path: Path, payload: bytes) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(payload)


def _empty(source: Path) -> None:
    (source / IMAGES).write_bytes(b"")


def _truncated_gzip(source: Path) -> None:
    blob = (source / IMAGES).read_bytes()
    (source / IMAGES).write_bytes(blob[: len(blob) // 2])


def _wrong_magic(source: Path) -> None:
    _gzip(source / IMAGES, b"\x08\x03\x00\x01" + bytes(64))


def _count_mismatch(source: Path) -> None:
    write_idx(source / LABELS, np.zeros(59, dtype=np.uint8))


IMAGE_FAULTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (how the source is broken, the file the message names, what it says)
    "empty file": (_empty, IMAGES, "too short for an IDX header"),
    "truncated gzip": (_truncated_gzip, IMAGES, "cannot be read as gzip"),
    "wrong IDX magic": (_wrong_magic, IMAGES, "bad magic number 0x08030001"),
    "image/label count mismatch": (_count_mismatch, LABELS, "holds 60 images but"),
}


@pytest.mark.parametrize("fault", list(IMAGE_FAULTS))
def test_a_broken_image_source_stops_cleaning_by_name_and_keeps_the_last_clean_data(tmp_path: Path, fault: str):
    source = _image_project(tmp_path)
    paths = _data_steps(tmp_path)
    kept = {path: _digest(path) for path in (paths.clean, paths.validation_report)}

    breaks, file, message = IMAGE_FAULTS[fault]
    breaks(source)
    with pytest.raises(IdxError) as caught:
        _data_steps(tmp_path)
    assert file in str(caught.value) and message in str(caught.value)
    assert {path: _digest(path) for path in kept} == kept  # what the last good run made is intact


GOOD_TABLE = "id,size,colour,label\n" + "".join(
    f"{i},{i * 1.5},{'red' if i % 2 else 'blue'},{'a' if i % 3 else 'b'}\n" for i in range(12)
)
TABLE_FAULTS: dict[str, tuple[bytes, list[str]]] = {
    # name: (the file's bytes, what the message says besides the file's name)
    "empty file": (b"", ["the file is empty (0 bytes)"]),
    "header-only table": (b"id,size,colour,label\n", ["has a header", "but no data rows"]),
    "missing column": (GOOD_TABLE.replace("colour", "hue").encode(), ["'colour'", "hue"]),
    "bad encoding": (GOOD_TABLE.replace("red", "r\xe9d").encode("latin-1"), ["not valid utf-8", "line 3",
                                                                              "data.table.encoding"]),
    "wrong delimiter": (GOOD_TABLE.replace(",", ";").encode(), ["seems to use", "';'", "data.table.delimiter"]),
}


def _table_project(root: Path) -> Path:
    (root / "data").mkdir()
    table = root / "data" / "table.csv"
    table.write_text(GOOD_TABLE)
    params = {
        "data": {"source": {"format": "csv", "path": "data/table.csv"},
                 "table": {"target": "label", "id": "id", "features": ["size", "colour"]}},
        "taxonomy": None,
        "validate": {"min_per_class": 1},
        "views": {"fine-all": {"level": "fine", "features": "all"}},
        "distill": {"enabled": False},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return table


@pytest.mark.parametrize("fault", list(TABLE_FAULTS))
def test_a_broken_table_stops_cleaning_by_name_and_keeps_the_last_clean_data(tmp_path: Path, fault: str):
    table = _table_project(tmp_path)
    paths = _data_steps(tmp_path)
    kept = {path: _digest(path) for path in (paths.clean, paths.validation_report, paths.table_schema)}

    content, message_parts = TABLE_FAULTS[fault]
    table.write_bytes(content)
    with pytest.raises(TableSourceError) as caught:
        _data_steps(tmp_path)
    message = str(caught.value)
    assert "table.csv" in message
    for part in message_parts:
        assert part in message
    assert {path: _digest(path) for path in kept} == kept


def test_a_class_with_too_few_examples_fails_validation_by_name(tmp_path: Path):
    table = _table_project(tmp_path)
    table.write_text(GOOD_TABLE + "12,3.0,red,c\n")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["validate"]["min_per_class"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(Exception) as caught:
        _data_steps(tmp_path)
    message = str(caught.value)
    assert "class_counts" in message and "label=c: count=1" in message
    # Cleaning kept every row; the failed validation left its full result to read.
    assert (tmp_path / "data/interim/validation/result.json").is_file()


KILL_DURING_PARTITION = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from granular.store import atomic
    from granular.pipeline import view
    from granular.config import load_config
    from granular.store.paths import ProjectPaths

    written = atomic.write_npz
    def write_then_die(target, **arrays):
        written(target, **arrays)
        if target.name == "train.npz":  # the first of the view's three files
            os.kill(os.getpid(), signal.SIGKILL)
    view.write_npz = write_then_die
    paths = ProjectPaths(Path(sys.argv[1]))
    view.view_step(load_config(paths.params), paths, "fine-4")
""")


def test_sigkill_during_partitioning_leaves_the_previous_view_files_in_use(tmp_path: Path):
    _image_project(tmp_path)
    paths = _data_steps(tmp_path)
    config = load_config(paths.params)
    split_step(config, paths)
    view_step(config, paths, "fine-4")
    before = {p.name: _digest(p) for p in paths.view_dir("fine-4").iterdir()}

    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_PARTITION, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # The killed step wrote into a hidden staging folder beside the view's: the folder the next
    # steps read is the previous one, whole.
    assert {p.name: _digest(p) for p in paths.view_dir("fine-4").iterdir()} == before
    leftovers = [p.name for p in paths.processed.iterdir() if p.name.startswith(".fine-4.staging-")]
    assert leftovers, "the kill should have left the staging folder it was writing"
    # A rerun replaces the view whole: one training example per training row of the split.
    view_step(config, paths, "fine-4")
    in_train = int((np.load(paths.splits)["split"] == 0).sum())
    assert len(np.load(paths.view_split("fine-4", "train"))["y"]) == in_train
