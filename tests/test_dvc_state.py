"""A corrupted DVC lock file is cleared when no DVC process runs, and only then."""
import fcntl
import json

import pytest

from granular.runtime.dvc_state import DvcBusy, clear_corrupt_rwlock


@pytest.fixture
def repo(tmp_path):
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    return tmp_path


def test_an_empty_rwlock_is_removed_with_a_message(repo):
    rwlock = repo / ".dvc/tmp/rwlock"
    rwlock.write_text("")
    message = clear_corrupt_rwlock(repo)
    assert "empty" in message and "killed" in message
    assert not rwlock.exists()


def test_a_valid_rwlock_is_left_to_dvc(repo):
    rwlock = repo / ".dvc/tmp/rwlock"
    rwlock.write_text(json.dumps({"read": {}, "write": {"data": {"pid": 999999, "cmd": "dvc repro"}}}))
    assert clear_corrupt_rwlock(repo) is None
    assert rwlock.exists()


def test_no_rwlock_is_nothing_to_do(repo):
    assert clear_corrupt_rwlock(repo) is None


def test_a_corrupt_rwlock_is_kept_while_dvc_holds_the_repository(repo):
    rwlock = repo / ".dvc/tmp/rwlock"
    rwlock.write_text('{"write": {"da')
    with open(repo / ".dvc/tmp/lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DvcBusy, match="running DVC command"):
            clear_corrupt_rwlock(repo)
    assert rwlock.exists()
