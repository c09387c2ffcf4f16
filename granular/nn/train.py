"""The training loop and inference of one network, with the data resident on the device.

One loop serves every kind of input (granular/nn/inputs.py): the inputs say which network reads
them, how they are scaled (by statistics of the training split) and how a batch is augmented.
"""
from __future__ import annotations

import functools
import hashlib
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Generator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from granular.config import PartConfig, TrainConfig
from granular.core.evaluate import log_loss
from granular.nn import checkpoints, inputs, models
from granular.nn.device import Runtime
from granular.nn.inputs import NetworkInputs
from granular.nn.quantize import runtime_for
from granular.nn.trained import TrainedModel
from granular.runtime import preemption

EpochCallback = Callable[[dict], None]
# An extra loss term of a training step: (the batch's training rows, the network's logits) -> loss.
ExtraLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _autocast(runtime: Runtime):
    if runtime.autocast_dtype is None:
        return nullcontext()
    return torch.autocast(runtime.device.type, dtype=runtime.autocast_dtype)


def _fingerprint(config: TrainConfig, num_classes: int, arrays: list[np.ndarray]) -> str:
    """What makes two trainings the same one: settings, data and the code that trains."""
    digest = hashlib.sha256(f"{config.model_dump_json()}|{num_classes}".encode())
    for array in arrays:
        digest.update(f"{array.shape}{array.dtype}".encode())
        if array.size:  # memoryview cannot cast an empty array (a table without categorical columns)
            digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    for source in (__file__, models.__file__, inputs.__file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()


def _frozen_modules(model: nn.Module, config: TrainConfig) -> list[nn.Module]:
    parts = models.network_parts(model)
    return [module for part, setting in config.parts.items() if setting.frozen for module in parts[part]]


def _parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """One optimiser group per part that trains, with its own learning rate and weight decay;
    a frozen part's parameters stop asking for gradients."""
    groups = []
    for part, modules in models.network_parts(model).items():
        setting = config.parts.get(part, PartConfig())
        params = [p for module in modules for p in module.parameters()]
        if setting.frozen:
            for p in params:
                p.requires_grad_(False)
            continue
        weight_decay = config.weight_decay if setting.weight_decay is None else setting.weight_decay
        groups.append({"params": params, "lr": config.lr * setting.lr_scale, "weight_decay": weight_decay})
    return groups


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _parameter_groups(model, config)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)


def _schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """Warm-up to the peak learning rate over warmup_fraction of the steps, then down to ~0."""
    # OneCycleLR divides by zero when its warm-up is shorter than a step: tiny runs (a small
    # segment's expert) get a schedule of at least 5 steps, not all of which they take.
    total_steps = max(total_steps, 5)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total_steps,
            pct_start=config.warmup_fraction,
        )
    warmup = max(1, round(config.warmup_fraction * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(_warmup_cosine, warmup, total_steps))


def _warmup_cosine(warmup: int, total: int, step: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _load_initial(model: nn.Module, initial: dict[str, torch.Tensor]) -> None:
    """Start from `initial`; heads it lacks start afresh, extra heads the network lacks are dropped."""
    missing, unexpected = model.load_state_dict(initial, strict=False)
    not_head = [key for key in missing if not key.startswith(("head.", "level_heads."))]
    unexpected = [key for key in unexpected if not key.startswith("level_heads.")]
    if not_head or unexpected:
        raise ValueError(f"initial weights do not fit the network: missing {not_head}, unexpected {unexpected}")


def _targets(y_train: np.ndarray, rows: int, num_classes: int, runtime: Runtime) -> torch.Tensor:
    """The training targets on the device: class ids (N,), or probabilities (N, classes), which
    cross-entropy takes as they are (a teacher's soft targets, for distillation)."""
    y_train = np.asarray(y_train)
    if len(y_train) != rows:
        raise ValueError(f"{rows} training inputs but {len(y_train)} targets")
    if y_train.ndim == 1:
        return torch.as_tensor(y_train, dtype=torch.long, device=runtime.device)
    if y_train.ndim != 2 or y_train.shape[1] != num_classes:
        raise ValueError(f"soft targets must have shape (N, {num_classes}), got {y_train.shape}")
    if not np.allclose(y_train.sum(axis=1), 1.0, atol=1e-3) or (y_train < 0).any():
        raise ValueError("soft targets must be probabilities: non-negative rows that sum to 1")
    return torch.as_tensor(y_train, dtype=torch.float32, device=runtime.device)


def _check_heads(config: TrainConfig, level_heads: models.LevelHeads, ys: torch.Tensor) -> None:
    if set(config.heads) != set(level_heads):
        raise ValueError(f"train.heads {sorted(config.heads)} need each level's ancestors; given {sorted(level_heads)}")
    if level_heads and ys.ndim != 1:
        raise ValueError("extra heads learn from class ids, not from soft targets")


@torch.no_grad()
def _head_accuracies(
    trained: TrainedModel, x_val: NetworkInputs, y_val: np.ndarray, ancestors: dict[str, torch.Tensor], runtime: Runtime
) -> dict[str, float]:
    """Validation accuracy of each head alone, the view's own (`head`) and each extra one
    (`head_LEVEL`), on its own labels; {} without extra heads. The plain images, no copies."""
    if not ancestors or not len(y_val):
        return {}
    model = trained.model.eval()
    correct = {"head": 0, **{f"head_{level}": 0 for level in ancestors}}
    for start in range(0, len(x_val), 1024):
        rows = x_val[start : start + 1024]
        y = torch.as_tensor(np.asarray(y_val[start : start + 1024]), device=runtime.device)
        with _autocast(runtime):
            scaled = rows.scaled(rows.to_device(runtime.device), trained.mean, trained.std)
            own, by_level = model.logits_by_head(*scaled)
        correct["head"] += int((own.argmax(1) == y).sum())
        for level, logits in by_level.items():
            correct[f"head_{level}"] += int((logits.argmax(1) == ancestors[level][y]).sum())
    return {f"val_accuracy_{name}": count / len(y_val) for name, count in correct.items()}


def fit(
    x_train: NetworkInputs,
    y_train: np.ndarray,
    x_val: NetworkInputs,
    y_val: np.ndarray,
    num_classes: int,
    config: TrainConfig,
    runtime: Runtime,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: Path | None = None,
    warn: Callable[[str], None] = print,
    initial: dict[str, torch.Tensor] | None = None,
    level_heads: models.LevelHeads | None = None,
    class_weights: np.ndarray | None = None,
    regression: bool = False,
) -> TrainedModel:
    """Train the network that reads `x_train` with the recipe in `config` (optimizer and its
    per-part settings, warm-up schedule, label smoothing, the inputs' augmentation, early
    stopping on the validation loss), from the weights in `initial` where given (a state dict
    of the same network; the head's may be left out, to start it afresh).

    `level_heads` gives each level of `config.heads` the ancestor of every class: an extra head
    learns those ancestors, its loss weighted as `config.heads` says (granular/nn/stages.py:
    level_heads_for).

    `y_train` holds class ids (N,), or target probabilities (N, num_classes) to train on soft
    targets (distillation); validation accuracy and loss always use the class ids `y_val`.
    `class_weights` (num_classes,) weighs each class's examples in the training loss (not in
    the validation loss, which stays the model's plain log-loss).

    A `regression` network (num_classes 1) learns the numbers `y_train`, standardised, by their
    squared error; its validation loss is the mean squared error in the target's units, its
    record's val_rmse the root of it, and it predicts values (`predict_proba`, shape (N, 1)).

    With a checkpoint_dir, the whole training state (weights, optimizer, schedule, random
    generators, history, best weights so far) is saved after every epoch and on SIGTERM, and a
    later call with the same settings and data resumes from the newest readable checkpoint: on
    the CPU it ends with exactly the weights an uninterrupted run would have.
    """
    return run_to_end(training_steps(
        x_train, y_train, x_val, y_val, num_classes, config, runtime, on_epoch, checkpoint_dir, warn, initial,
        level_heads=level_heads, class_weights=class_weights, regression=regression,
    ))


def run_to_end(steps: Generator[None, None, TrainedModel]) -> TrainedModel:
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def training_steps(
    x_train: NetworkInputs,
    y_train: np.ndarray,
    x_val: NetworkInputs,
    y_val: np.ndarray,
    num_classes: int,
    config: TrainConfig,
    runtime: Runtime,
    on_epoch: EpochCallback | None = None,
    checkpoint_dir: Path | None = None,
    warn: Callable[[str], None] = print,
    initial: dict[str, torch.Tensor] | None = None,
    extra_loss: ExtraLoss | None = None,
    exposed: dict | None = None,
    own_signals: bool = True,
    level_heads: models.LevelHeads | None = None,
    class_weights: np.ndarray | None = None,
    regression: bool = False,
) -> Generator[None, None, TrainedModel]:
    """`fit`, one optimiser step at a time: a generator that pauses after each step and returns
    the trained model, so that a caller can interleave several trainings (co-training). Each
    step's loss adds `extra_loss`; `exposed` receives the network in training (`trained`), its
    inputs and their tensors on the device once they exist; without `own_signals` the caller
    defers the stop signals (granular/runtime/preemption.py) around all of its trainings."""
    if len(x_train) == 0:
        raise ValueError("cannot train on an empty training split")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    mean, std = x_train.statistics(runtime.device)
    xs = x_train.to_device(runtime.device)
    target_scale = _target_scale(y_train, num_classes, class_weights, level_heads) if regression else None
    if regression:
        ys = torch.as_tensor((np.asarray(y_train, dtype=np.float64) - target_scale[0]) / target_scale[1],
                             dtype=torch.float32, device=runtime.device)
    else:
        ys = _targets(y_train, len(x_train), num_classes, runtime)
    _check_heads(config, level_heads or {}, ys)
    if class_weights is not None and np.shape(class_weights) != (num_classes,):
        raise ValueError(f"class_weights: one weight per class ({num_classes}) is needed, got shape {np.shape(class_weights)}")
    weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32, device=runtime.device)

    model = x_train.network(num_classes, config, level_heads)
    if initial is not None:
        _load_initial(model, initial)
    model = model.to(runtime.device, memory_format=torch.channels_last)
    ancestors = model.ancestors() if level_heads else {}  # extra head's level -> each class's ancestor
    # With extra heads, a step reads every head's logits; a prediction, their product.
    forward = model.logits_by_head if ancestors else model
    # The compiled module shares the model's parameters; checkpoints keep the plain model's names.
    compiled = config.compile == "on" or (config.compile == "auto" and runtime.device.type == "cuda")
    forward = torch.compile(forward) if compiled else forward
    optimizer = _optimizer(model, config)
    frozen = _frozen_modules(model, config)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    schedule = _schedule(optimizer, config, config.epochs * steps_per_epoch)
    trained = TrainedModel(
        model=model, mean=mean, std=std, tta=config.tta and x_train.spatial_tta,
        tta_shift=config.tta_shift if x_train.spatial_tta else 0, target_scale=target_scale,
    )
    best = {"val_loss": math.inf, "epoch": 0, "weights": None, "val_proba": None}  # for early stopping
    if exposed is not None:
        exposed.update(trained=trained, inputs=x_train, tensors=xs)
    yield  # set up: a co-training's networks all exist before any takes a step

    data = [*x_train.arrays(), np.asarray(y_train), *x_val.arrays(), np.asarray(y_val)]
    data += [tensor.cpu().numpy() for tensor in (initial or {}).values()]
    data += [np.asarray(level_heads[level]) for level in ancestors]
    data += [] if class_weights is None else [np.asarray(class_weights, dtype=np.float64)]
    fingerprint = _fingerprint(config, num_classes, data) if checkpoint_dir else ""

    def state(order: torch.Tensor | None, loss_sum: torch.Tensor) -> dict:
        return {
            "fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(), "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if runtime.device.type == "cuda" else [],
            "history": trained.history, "order": order, "loss_sum": loss_sum, "best": best,
        }

    first_epoch, first_step, order, loss_sum = 1, 0, None, torch.zeros((), device=runtime.device)
    resumed = checkpoints.load_latest(checkpoint_dir, fingerprint, runtime.device, warn) if checkpoint_dir else None
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        schedule.load_state_dict(resumed["schedule"])
        generator.set_state(resumed["generator"])
        torch.set_rng_state(resumed["torch_rng"])
        if resumed["cuda_rng"]:
            torch.cuda.set_rng_state_all(resumed["cuda_rng"])
        trained.history, best = resumed["history"], resumed["best"]
        first_epoch, first_step, order, loss_sum = resumed["epoch"], resumed["step"], resumed["order"], resumed["loss_sum"]
        warn(f"resuming from checkpoint at epoch {first_epoch}, batch {first_step} ({checkpoint_dir})")
        for record in trained.history:  # the epochs done before, so the caller's curves are whole
            if on_epoch is not None:
                on_epoch(record)

    last_epoch = config.epochs
    if config.early_stopping_patience and trained.history:  # resumed: had it already stopped early?
        if trained.history[-1]["epoch"] - best["epoch"] >= config.early_stopping_patience:
            last_epoch = trained.history[-1]["epoch"]
    with preemption.deferred_stop_signals() if own_signals else nullcontext():
        for epoch in range(first_epoch, last_epoch + 1):
            model.train()
            for module in frozen:  # dropout off and BatchNorm statistics kept, as in prediction
                module.eval()
            started, elsewhere = time.perf_counter(), 0.0  # elsewhere: a co-trained partner's turns
            if order is None:
                order = torch.randperm(len(x_train), generator=generator).to(runtime.device)
                loss_sum = torch.zeros((), device=runtime.device)
            for start in range(first_step * config.batch_size, len(x_train), config.batch_size):
                rows = order[start : start + config.batch_size]
                batch = x_train.augment(tuple(x[rows] for x in xs), config, generator)
                batch = x_train.scaled(batch, mean, std)
                with _autocast(runtime):
                    logits, by_level = forward(*batch) if ancestors else (forward(*batch), {})
                    if regression:
                        loss = F.mse_loss(logits[:, 0].float(), ys[rows])
                    else:
                        loss = F.cross_entropy(logits, ys[rows], weight=weight, label_smoothing=config.label_smoothing)
                    for level, level_logits in by_level.items():
                        ancestor = ancestors[level][ys[rows]]
                        loss = loss + config.heads[level] * F.cross_entropy(
                            level_logits, ancestor, label_smoothing=config.label_smoothing
                        )
                    if extra_loss is not None:
                        loss = loss + extra_loss(rows, logits)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += loss.detach() * len(rows)  # stays on the device: no sync per step
                handed_over = time.perf_counter()
                yield
                elsewhere += time.perf_counter() - handed_over
                if preemption.requested():
                    step = start // config.batch_size + 1
                    saved = checkpoints.save_state(checkpoint_dir, epoch, step, state(order, loss_sum)) if checkpoint_dir else None
                    raise preemption.stop(f"at epoch {epoch}, batch {step}; checkpoint: {saved}")
            seconds = time.perf_counter() - started - elsewhere
            # Each epoch's check predicts without the shifted copies (a third of their cost); the
            # final validation probabilities below have them.
            val_proba = predict_proba(trained, x_val, runtime, batch_size=1024, shifted=False)
            record = {
                "epoch": epoch,
                "train_loss": float(loss_sum) / len(x_train),
                **_validation_scores(val_proba, y_val, regression),
                "seconds": seconds,
                "images_per_s": len(x_train) * (1 - first_step / steps_per_epoch) / seconds,
                "lr": schedule.get_last_lr()[0],
                **_head_accuracies(trained, x_val, y_val, ancestors, runtime),
            }
            trained.history.append(record)
            trained.val_proba = val_proba
            order, first_step = None, 0
            if config.early_stopping_patience and record["val_loss"] < best["val_loss"]:
                weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = {"val_loss": record["val_loss"], "epoch": epoch, "weights": weights,
                        "val_proba": torch.from_numpy(val_proba)}  # a tensor: checkpoints load weights only
            stopped_early = config.early_stopping_patience and epoch - best["epoch"] >= config.early_stopping_patience
            if checkpoint_dir:
                checkpoints.save_state(checkpoint_dir, epoch + 1, 0, state(None, loss_sum))
            if on_epoch is not None:
                on_epoch(record)
            if stopped_early:
                warn(f"early stop after epoch {epoch}: no better validation loss since epoch {best['epoch']}")
                break
    if config.early_stopping_patience and best["weights"] is not None:  # the best epoch's weights
        model.load_state_dict(best["weights"])
        trained.val_proba = best["val_proba"].numpy()
    if trained.val_proba is None or trained.tta_shift:  # resumed after the last epoch, or predicted without shifts
        trained.val_proba = predict_proba(trained, x_val, runtime, batch_size=1024)
    return trained


def _target_scale(y_train: np.ndarray, num_classes: int, class_weights, level_heads) -> tuple[float, float]:
    """The training targets' mean and standard deviation (1 for a constant target)."""
    y = np.asarray(y_train, dtype=np.float64)
    if num_classes != 1 or y.ndim != 1 or class_weights is not None or level_heads:
        raise ValueError("a regression network has one output, one number per example, no class weights or extra heads")
    if not np.isfinite(y).all():
        raise ValueError("regression targets must be finite numbers")
    return float(y.mean()), float(y.std()) or 1.0


def _validation_scores(val_out: np.ndarray, y_val: np.ndarray, regression: bool) -> dict[str, float]:
    """A classifier's validation accuracy and log-loss; a regressor's RMSE and mean squared error."""
    if not len(y_val):
        return {"val_rmse" if regression else "val_accuracy": float("nan"), "val_loss": float("nan")}
    if regression:
        mse = float(np.mean((val_out[:, 0] - y_val) ** 2))
        return {"val_rmse": math.sqrt(mse), "val_loss": mse}
    return {"val_accuracy": float((val_out.argmax(1) == y_val).mean()), "val_loss": log_loss(val_out, y_val)}


@torch.no_grad()
def predict_proba(
    trained: TrainedModel, x: NetworkInputs, runtime: Runtime, batch_size: int = 1024, shifted: bool = True
) -> np.ndarray:
    """Class probabilities (N, classes); for an image model with test-time augmentation, the
    mean over the image and its shifted (unless not `shifted`) and mirrored copies (the inputs'
    test_time_copies). A regressor's: its values (N, 1), in the target's units."""
    model = trained.model.eval()
    runtime = runtime_for(model, runtime)
    out = []
    shift = trained.tta_shift if shifted else 0
    for start in range(0, len(x), batch_size):
        rows = x[start : start + batch_size]
        # Copied before scaling, so the pixels a shift uncovers are black, as in training.
        copies = rows.test_time_copies(rows.to_device(runtime.device), trained.tta, shift)
        with _autocast(runtime):
            scaled = (rows.scaled(copy, trained.mean, trained.std) for copy in copies)
            outputs = (model(*inputs).float() for inputs in scaled)
            if trained.target_scale is None:
                outputs = (F.softmax(logits, dim=1) for logits in outputs)
            proba = sum(outputs) / len(copies)
        out.append(proba.cpu())
    if not out:
        return np.zeros((0, model.config.num_classes), dtype=np.float32)
    if trained.target_scale is not None:  # standardised values back in the target's units
        mean, std = trained.target_scale
        return torch.cat(out).double().numpy() * std + mean
    return torch.cat(out).numpy()

