"""What a training does around its steps, each a small hook that the loop (granular/nn/loop.py)
calls at fixed points: the epoch records (Progress), saving and resuming the whole state
(Checkpoint), stopping once validation stops improving (EarlyStopping) and stopping on a stop
signal (Preemption). A hook defines the points it acts at; `Hooks` calls them in its order.
"""
from __future__ import annotations

import hashlib
import logging
import math
import time
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ContextManager, Iterator

import numpy as np
import torch

from granular.config import TrainConfig
from granular.nn import checkpoints
from granular.nn.predict import autocast
from granular.runtime import preemption

if TYPE_CHECKING:
    from granular.nn.loop import Run

EpochCallback = Callable[[dict], None]
Warn = Callable[[str], None]
logger = logging.getLogger(__name__)
# The code that trains, part of what makes two trainings the same one.
_TRAINING_CODE = ("train.py", "loop.py", "objective.py", "hooks.py", "predict.py", "models.py", "inputs.py")


class Hook:
    """Acts at none of the loop's points until a subclass defines one."""

    def running(self) -> ContextManager:
        """Held around all the epochs."""
        return nullcontext()

    def on_start(self, run: Run) -> None:
        """Set up, before the first epoch."""

    def on_epoch_start(self, run: Run) -> None:
        """The epoch's order of examples is drawn (or resumed), no step taken yet."""

    def after_step(self, run: Run) -> None:
        """An optimiser step is done, before the training pauses."""

    def after_turn(self, run: Run) -> None:
        """Back from the pause, in which other trainings may have taken their steps."""

    def on_validation_end(self, run: Run, record: dict, val_out: np.ndarray) -> None:
        """The epoch's record holds its loss and validation scores; `val_out` the predictions."""

    def on_epoch_end(self, run: Run, record: dict) -> None:
        """The record is complete and in the history; `run.epoch` is the finished epoch."""

    def on_end(self, run: Run) -> None:
        """The last epoch is done (or the training stopped early)."""


class Hooks:
    """The hooks of one training, each point's called in the order given."""

    def __init__(self, *hooks: Hook | None):
        self.hooks = [hook for hook in hooks if hook is not None]

    @contextmanager
    def running(self) -> Iterator[None]:
        with ExitStack() as stack:
            for hook in self.hooks:
                stack.enter_context(hook.running())
            yield

    def on_start(self, run: Run) -> None:
        self._each("on_start", run)

    def on_epoch_start(self, run: Run) -> None:
        self._each("on_epoch_start", run)

    def after_step(self, run: Run) -> None:
        self._each("after_step", run)

    def after_turn(self, run: Run) -> None:
        self._each("after_turn", run)

    def on_validation_end(self, run: Run, record: dict, val_out: np.ndarray) -> None:
        self._each("on_validation_end", run, record, val_out)

    def on_epoch_end(self, run: Run, record: dict) -> None:
        self._each("on_epoch_end", run, record)

    def on_end(self, run: Run) -> None:
        self._each("on_end", run)

    def _each(self, point: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, point)(*args)


def for_training(
    config: TrainConfig, on_epoch: EpochCallback | None, checkpoint_dir: Path | None, warn: Warn,
    defer_signals: bool = True,
) -> Hooks:
    """The hooks of `train.fit`: checkpoints where there is a folder for them, the records,
    early stopping where the config asks for it, and preemption; without `defer_signals` the
    caller defers the stop signals around all of its trainings (co-training)."""
    checkpoint = Checkpoint(checkpoint_dir, warn) if checkpoint_dir else None
    patience = config.early_stopping_patience
    return Hooks(checkpoint, Progress(on_epoch), EarlyStopping(patience, checkpoint_dir) if patience else None,
                 Preemption(checkpoint, defer_signals))


class Progress(Hook):
    """Completes each epoch's record (seconds and images per second of the epoch's own steps,
    not a co-trained partner's turns; the learning rate; each head's validation accuracy) and
    passes it to `on_epoch`, a resumed training's earlier records first, so the curves are whole."""

    def __init__(self, on_epoch: EpochCallback | None):
        self.on_epoch = on_epoch

    def on_start(self, run: Run) -> None:
        for record in run.trained.history:
            self.on_epoch_end(run, record)

    def on_epoch_start(self, run: Run) -> None:
        self.first_step, self.seconds, self.since = run.step, 0.0, time.perf_counter()

    def after_step(self, run: Run) -> None:
        self.seconds += time.perf_counter() - self.since

    def after_turn(self, run: Run) -> None:
        self.since = time.perf_counter()

    def on_validation_end(self, run: Run, record: dict, val_out: np.ndarray) -> None:
        steps_per_epoch = math.ceil(len(run.data.x_train) / run.recipe.config.batch_size)
        images = len(run.data.x_train) * (1 - self.first_step / steps_per_epoch)
        record["seconds"] = self.seconds
        # No steps at all: an epoch resumed from a checkpoint taken after its last step.
        record["images_per_s"] = images / self.seconds if self.seconds else 0.0
        record["lr"] = run.schedule.get_last_lr()[0]
        record.update(_head_accuracies(run))

    def on_epoch_end(self, run: Run, record: dict) -> None:
        if self.on_epoch is not None:
            self.on_epoch(record)


@torch.no_grad()
def _head_accuracies(run: Run) -> dict[str, float]:
    """Validation accuracy of each head alone, the view's own (`head`) and each extra one
    (`head_LEVEL`), on its own labels; {} without extra heads. The plain images, no copies."""
    trained, x_val, y_val, runtime = run.trained, run.data.x_val, run.data.y_val, run.recipe.runtime
    if not run.recipe.level_heads or not len(y_val):
        return {}
    model = trained.model.eval()
    ancestors = model.ancestors()  # extra head's level -> each class's ancestor
    correct = {"head": 0, **{f"head_{level}": 0 for level in ancestors}}
    for start in range(0, len(x_val), 1024):
        rows = x_val[start : start + 1024]
        y = torch.as_tensor(np.asarray(y_val[start : start + 1024]), device=runtime.device)
        with autocast(runtime):
            scaled = rows.scaled(rows.to_device(runtime.device), trained.mean, trained.std)
            own, by_level = model.logits_by_head(*scaled)
        correct["head"] += int((own.argmax(1) == y).sum())
        for level, logits in by_level.items():
            correct[f"head_{level}"] += int((logits.argmax(1) == ancestors[level][y]).sum())
    return {f"val_accuracy_{name}": count / len(y_val) for name, count in correct.items()}


class Checkpoint(Hook):
    """The whole training state (weights, optimiser, schedule, random generators, history, best
    epoch so far), saved atomically after every epoch (and on a stop request, by Preemption). A
    training with the same settings, data and code resumes from the newest readable checkpoint:
    on the CPU it ends with exactly the weights an uninterrupted one would have."""

    def __init__(self, folder: Path, warn: Warn):
        self.folder, self.warn, self.fingerprint = folder, warn, ""

    def on_start(self, run: Run) -> None:
        self.fingerprint = _fingerprint(run)
        resumed = checkpoints.load_latest(self.folder, self.fingerprint, run.recipe.runtime.device, self.warn)
        if resumed is None:
            return
        run.model.load_state_dict(resumed["model"])
        run.optimizer.load_state_dict(resumed["optimizer"])
        run.schedule.load_state_dict(resumed["schedule"])
        run.generator.set_state(resumed["generator"])
        torch.set_rng_state(resumed["torch_rng"])
        if resumed["cuda_rng"]:
            torch.cuda.set_rng_state_all(resumed["cuda_rng"])
        run.trained.history, run.best = resumed["history"], resumed["best"]
        run.epoch, run.step = resumed["epoch"], resumed["step"]
        run.order, run.loss_sum = resumed["order"], resumed["loss_sum"]
        self.warn(f"resuming from checkpoint at epoch {run.epoch}, batch {run.step} ({self.folder})")

    def on_epoch_end(self, run: Run, record: dict) -> None:
        self.save(run, run.epoch + 1, 0)  # the next epoch, not begun

    def save(self, run: Run, epoch: int, step: int) -> Path:
        """The state at `step` batches into `epoch`."""
        return checkpoints.save_state(self.folder, epoch, step, {
            "fingerprint": self.fingerprint, "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "schedule": run.schedule.state_dict(), "generator": run.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if run.recipe.runtime.device.type == "cuda" else [],
            "history": run.trained.history, "order": run.order, "loss_sum": run.loss_sum, "best": run.best,
        })


def _fingerprint(run: Run) -> str:
    """What makes two trainings the same one: settings, data and the code that trains."""
    data, recipe = run.data, run.recipe
    arrays = [*data.x_train.arrays(), np.asarray(data.y_train), *data.x_val.arrays(), np.asarray(data.y_val)]
    arrays += [tensor.cpu().numpy() for tensor in (recipe.initial or {}).values()]
    arrays += [np.asarray(ancestors) for ancestors in recipe.level_heads.values()]
    arrays += run.objective.fingerprint_arrays()
    digest = hashlib.sha256(f"{recipe.config.model_dump_json()}|{recipe.num_classes}".encode())
    for array in arrays:
        digest.update(f"{array.shape}{array.dtype}".encode())
        if array.size:  # memoryview cannot cast an empty array (a table without categorical columns)
            digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    for source in _TRAINING_CODE:
        digest.update((Path(__file__).parent / source).read_bytes())
    return digest.hexdigest()


class EarlyStopping(Hook):
    """Stops once the validation loss has not improved for `patience` epochs, and ends with the
    best epoch's weights and validation outputs. Says so as news, not as a warning: stopping is
    what it is asked to do."""

    def __init__(self, patience: int, folder: Path | None = None):
        self.patience = patience
        self.where = f" ({folder})" if folder else ""  # the training's checkpoints: which one stopped

    def on_start(self, run: Run) -> None:
        history = run.trained.history  # resumed: had it stopped already?
        run.stopped = bool(history) and history[-1]["epoch"] - run.best["epoch"] >= self.patience

    def on_validation_end(self, run: Run, record: dict, val_out: np.ndarray) -> None:
        if record["val_loss"] < run.best["val_loss"]:
            weights = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
            run.best = {"val_loss": record["val_loss"], "epoch": run.epoch, "weights": weights,
                        "val_proba": torch.from_numpy(val_out)}  # a tensor: checkpoints load weights only

    def on_epoch_end(self, run: Run, record: dict) -> None:
        if run.epoch - run.best["epoch"] >= self.patience:
            logger.info("early stop after epoch %d: no better validation loss since epoch %d%s",
                        run.epoch, run.best["epoch"], self.where)
            run.stopped = True

    def on_end(self, run: Run) -> None:
        if run.best["weights"] is not None:
            run.model.load_state_dict(run.best["weights"])
            run.trained.val_proba = run.best["val_proba"].numpy()


class Preemption(Hook):
    """A stop signal (SIGTERM, SIGINT; granular/runtime/preemption.py) ends the training after the
    step in flight, with a checkpoint of that point where there is a Checkpoint. With
    `defer_signals` it defers the signals around the epochs itself."""

    def __init__(self, checkpoint: Checkpoint | None, defer_signals: bool):
        self.checkpoint, self.defer_signals = checkpoint, defer_signals

    def running(self) -> ContextManager:
        return preemption.deferred_stop_signals() if self.defer_signals else nullcontext()

    def after_turn(self, run: Run) -> None:
        if preemption.requested():
            saved = self.checkpoint.save(run, run.epoch, run.step) if self.checkpoint else None
            raise preemption.stop(f"at epoch {run.epoch}, batch {run.step}; checkpoint: {saved}")
