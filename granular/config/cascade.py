"""The cascade section: models ordered by cost, each answering the examples it is sure of, the
last (the fused model) whatever reaches it (granular/core/cascade.py fits the thresholds,
granular/serving/cascade.py serves it)."""
from __future__ import annotations

from pydantic import Field, field_validator

from granular.config.schema import _Section

FUSED = "fused"
STUDENT = "student"


class CascadeStage(_Section):
    """One stage: a model as it runs here."""

    model: str = Field(min_length=1)  # a view of every fine class, `student`, or `fused` (the last)
    # Images: average over the test-time copies the model was trained with (mirror, shifts);
    # false: one pass over each image, about a sixth of the cost.
    tta: bool = True
    # A view's (or the student's) network reads the images pooled to this size; None: its own.
    # One network at 14, then at 28 is a self-cascade.
    resolution: int | None = Field(default=None, ge=4)

    @property
    def name(self) -> str:
        """How a served answer names the stage that gave it: fine-28, fine-28@14-no-tta, ..."""
        at = f"@{self.resolution}" if self.resolution is not None else ""
        return f"{self.model}{at}{'' if self.tta else '-no-tta'}"


DEFAULT_STAGES = [CascadeStage(model="fine-28", tta=False), CascadeStage(model=FUSED)]


class CascadeConfig(_Section):
    # Cheapest first; each answers where its top class probability clears its threshold,
    # fitted on the validation split. The last is the fused model. []: the fused model serves alone.
    stages: list[CascadeStage] = DEFAULT_STAGES
    # The fitted thresholds are the cheapest whose validation accuracy is at most this far below
    # the fused model's (its cross-fitted validation accuracy); 0: never below it.
    max_accuracy_drop: float = Field(default=0.0, ge=0, lt=1)

    @field_validator("stages")
    @classmethod
    def _ends_in_the_fused_model(cls, stages: list[CascadeStage]) -> list[CascadeStage]:
        if not stages:
            return stages
        last = stages[-1]
        if len(stages) < 2 or last.model != FUSED or not last.tta or last.resolution is not None:
            raise ValueError(
                "a cascade has at least two stages and ends in the fused model as it is ({model: fused}), "
                "which answers whatever the cheaper stages pass on"
            )
        names = [stage.name for stage in stages]
        for stage in stages[:-1]:
            if stage.model == FUSED:
                raise ValueError("the fused model is the last stage only")
            if names.count(stage.name) > 1:
                raise ValueError(f"stage {stage.name} is declared twice")
        return stages

    @property
    def enabled(self) -> bool:
        return bool(self.stages)
