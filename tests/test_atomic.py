"""Atomic writes: the reader sees the old content or the new, and no leftovers."""
import time

import numpy as np
import pytest

from granular.store.atomic import atomic_dir, atomic_path, read_npz, write_json, write_npz


class _Boom(RuntimeError):
    pass


def test_atomic_path_replaces_the_target_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == tmp_path
        tmp.write_text("new")
        assert target.read_text() == "old"  # unchanged until the body finishes
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_leaves_old_content_when_the_body_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(_Boom):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise _Boom
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_path_creates_missing_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    write_json(target, {"b": 1, "a": [1, 2]})
    assert target.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'


def test_write_npz_round_trips(tmp_path):
    write_npz(tmp_path / "a.npz", x=np.arange(3), y=np.array(["p", "q"]))
    arrays = read_npz(tmp_path / "a.npz")
    np.testing.assert_array_equal(arrays["x"], [0, 1, 2])
    np.testing.assert_array_equal(arrays["y"], ["p", "q"])


def _old_folder(tmp_path):
    target = tmp_path / "raw"
    target.mkdir()
    (target / "old.txt").write_text("old")
    (target / "shared.txt").write_text("old")
    return target


def test_atomic_dir_replaces_the_folder_as_a_whole(tmp_path):
    target = _old_folder(tmp_path)
    with atomic_dir(target) as staging:
        (staging / "shared.txt").write_text("new")
        (staging / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # the old folder is intact meanwhile
    assert sorted(p.name for p in target.iterdir()) == ["new.txt", "shared.txt"]
    assert (target / "shared.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_atomic_dir_leaves_the_old_folder_on_failure(tmp_path):
    target = _old_folder(tmp_path)
    with pytest.raises(_Boom):
        with atomic_dir(target) as staging:
            (staging / "shared.txt").write_text("new")
            raise _Boom
    assert sorted(p.name for p in target.iterdir()) == ["old.txt", "shared.txt"]
    assert (target / "shared.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]


def test_atomic_dir_creates_a_new_folder(tmp_path):
    with atomic_dir(tmp_path / "deep" / "out") as staging:
        (staging / "f").write_text("x")
    assert (tmp_path / "deep" / "out" / "f").read_text() == "x"


def test_write_npz_is_byte_for_byte_reproducible_and_readable(tmp_path):
    arrays = {"x": np.arange(12, dtype=np.uint8).reshape(3, 4), "y": np.array([0.5, 1.5])}
    write_npz(tmp_path / "a.npz", **arrays)
    time.sleep(2.1)  # zip timestamps have a 2-second resolution
    write_npz(tmp_path / "b.npz", **arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    loaded = read_npz(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded["x"], arrays["x"])
    np.testing.assert_array_equal(loaded["y"], arrays["y"])
