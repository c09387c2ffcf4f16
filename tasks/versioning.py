"""Data versions: record a flow run's outputs in DVC (so `dvc repro` afterwards has nothing to
do and the MLflow run holds the dvc.lock of its data), and bring a past run's data back."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from typing import Callable

from mlflow.tracking import MlflowClient
from prefect import get_run_logger, task

from granular.runtime.dvc_state import repair_locks
from granular.store.digest import file_digest
from granular.store.paths import ProjectPaths
from tasks.tracking import SPLIT_TAG, RunRef

DVC_LOCK_ARTIFACT = "dvc/dvc.lock"
PUSHED_TAG = "granular.dvc.pushed"  # whether the run's data reached the default DVC remote


class ReproduceError(RuntimeError):
    """A run's data cannot be brought back; the message says why and what to do."""


def _warn_on_stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _dvc(paths: ProjectPaths, *args: str, warn: Callable[[str], None] = _warn_on_stderr) -> subprocess.CompletedProcess:
    """Run a DVC command in the project, first clearing what a killed DVC left in its lock file."""
    for repaired in repair_locks(paths.root):
        warn(repaired)
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=paths.root, capture_output=True, text=True)


@task(name="commit_data_versions", retries=1, retry_delay_seconds=2)  # a busy DVC lock clears
def commit_data_versions(paths: ProjectPaths, outputs_as_declared: bool, parent: RunRef) -> bool:
    """`dvc commit` every stage when the run's outputs are what dvc.yaml declares (params.yaml
    as it stands, every view trained), and keep the resulting dvc.lock in the MLflow run;
    otherwise (overrides, another parameters file, a failed view) leave DVC be."""
    logger = get_run_logger()
    if not (paths.root / ".dvc").is_dir():
        logger.info("%s is not a DVC project: outputs not recorded in DVC", paths.root)
        return False
    if not outputs_as_declared:
        logger.info("run used overrides, another parameters file or fewer views: outputs not recorded in DVC")
        return False
    done = _dvc(paths, "commit", "--force", "--quiet", warn=logger.warning)
    if done.returncode != 0:
        raise RuntimeError(f"dvc commit failed in {paths.root}:\n{done.stderr or done.stdout}")
    client = MlflowClient(parent.uri)
    client.log_artifact(parent.run_id, str(paths.root / "dvc.lock"), artifact_path="dvc")
    logger.info("outputs recorded in dvc.lock and in the MLflow run (DVC cache: %s)", paths.root / ".dvc" / "cache")
    client.set_tag(parent.run_id, PUSHED_TAG, str(_push(paths, logger)).lower())
    return True


def _push(paths: ProjectPaths, logger) -> bool:
    """Copy the run's data versions to the default DVC remote, if one is configured. A remote
    that is down does not undo the run: the data stays in the local cache, to push later."""
    remote = _dvc(paths, "remote", "default").stdout.strip()
    if not remote:
        logger.info("no default DVC remote: data versions stay in the local DVC cache")
        return False
    done = _dvc(paths, "push", "--quiet", warn=logger.warning)
    if done.returncode != 0:
        logger.warning(
            "dvc push to remote %r failed; the data is safe in the local cache, run `dvc push` later:\n%s",
            remote, (done.stderr or done.stdout).strip(),
        )
        return False
    logger.info("data versions pushed to DVC remote %r", remote)
    return True


def restore_run_data(paths: ProjectPaths, uri: str, run_id: str) -> dict[str, str]:
    """Put the dvc.lock of a past run in place, check its outputs out of the DVC cache, and
    verify every split against the hashes the run recorded; return those hashes."""
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    if DVC_LOCK_ARTIFACT not in {a.path for a in client.list_artifacts(run_id, "dvc")}:
        raise ReproduceError(
            f"run {run_id} did not record its data in DVC (it ran with --set/--params, or outside a "
            f"DVC project); the hashes of its splits are in its tags {SPLIT_TAG}*"
        )
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copy(client.download_artifacts(run_id, DVC_LOCK_ARTIFACT, scratch), paths.root / "dvc.lock")
    done = _dvc(paths, "checkout", "--force")
    if done.returncode != 0:  # not all in the local cache: fetch from the DVC remote
        done = _dvc(paths, "pull", "--force")
    if done.returncode != 0:
        raise ReproduceError(
            f"the run's files are neither in this DVC cache nor on its DVC remote:\n{(done.stderr or done.stdout).strip()}"
        )
    expected = {
        key.removeprefix(SPLIT_TAG).removesuffix(".md5"): md5
        for key, md5 in run.data.tags.items() if key.startswith(SPLIT_TAG)
    }
    for name, md5 in expected.items():
        view, split = name.rsplit(".", 1)
        found = file_digest(paths.view_split(view, split))
        if found != md5:
            raise ReproduceError(f"{paths.view_split(view, split)} has md5 {found}, the run recorded {md5}")
    return expected
