"""Record the outputs of a flow run in DVC, so `dvc repro` afterwards has nothing to do."""
from __future__ import annotations

import subprocess
import sys

from prefect import get_run_logger, task

from granular.dvc_state import clear_corrupt_rwlock
from granular.paths import ProjectPaths


@task(name="commit_data_versions", retries=1, retry_delay_seconds=2)  # a busy DVC lock clears
def commit_data_versions(paths: ProjectPaths, configured_by_params_file: bool) -> bool:
    """`dvc commit` every stage when the run used params.yaml as it stands; otherwise (overrides,
    another parameters file) the outputs do not match what dvc.yaml declares, so leave DVC be."""
    logger = get_run_logger()
    if not (paths.root / ".dvc").is_dir():
        logger.info("%s is not a DVC project: outputs not recorded in DVC", paths.root)
        return False
    if not configured_by_params_file:
        logger.info("run used overrides or another parameters file: outputs not recorded in DVC")
        return False
    repaired = clear_corrupt_rwlock(paths.root)
    if repaired:
        logger.warning(repaired)
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "commit", "--force", "--quiet"],
        cwd=paths.root, capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"dvc commit failed in {paths.root}:\n{done.stderr or done.stdout}")
    logger.info("outputs recorded in dvc.lock (DVC cache: %s)", paths.root / ".dvc" / "cache")
    return True
