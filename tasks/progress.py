"""The run's own progress in the Prefect UI: one progress artifact (key granular-run-progress)
that says which step runs, how many views are trained of all, and what comes next. Each view's
training, and the distillation, have their own artifact of epochs beside it."""
from __future__ import annotations

from prefect.artifacts import create_progress_artifact, update_progress_artifact

RUN_PROGRESS_KEY = "granular-run-progress"
# The steps in order, and where each ends on the run's bar: training is most of a run's time.
STEPS = {
    "prepare data": 10.0, "train views": 75.0, "fuse": 80.0, "distill": 87.0, "cascade": 90.0, "evaluate": 95.0, "register": 100.0,
}


class RunProgress:
    """The artifact of one run, updated as its steps begin and its views finish."""

    def __init__(self, views: int):
        self.views, self.trained, self.current = views, 0, next(iter(STEPS))
        self.artifact = create_progress_artifact(progress=0.0, key=RUN_PROGRESS_KEY, description=self._description())

    def step(self, name: str) -> None:
        """Step `name` begins."""
        self.current = name
        self._show(self._start(name))

    def view_done(self, view: str) -> None:
        """One more view trained (or failed: it is done with either way)."""
        self.trained += 1
        start, end = self._start("train views"), STEPS["train views"]
        self._show(start + (end - start) * self.trained / max(self.views, 1))

    def finished(self) -> None:
        self.current = None
        self._show(100.0)

    def _start(self, name: str) -> float:
        names = list(STEPS)
        return 0.0 if name == names[0] else STEPS[names[names.index(name) - 1]]

    def _description(self) -> str:
        if self.current is None:
            return f"run finished: views trained ({self.trained} of {self.views} done), fused, evaluated and registered"
        names = list(STEPS)
        number = names.index(self.current) + 1
        trained = f" ({self.trained} of {self.views} view(s) trained)" if self.current == "train views" else ""
        following = f"; next: {names[number]}" if number < len(names) else ""
        return f"step {number} of {len(names)}: {self.current}{trained}{following}"

    def _show(self, progress: float) -> None:
        update_progress_artifact(self.artifact, progress=progress, description=self._description())
