"""Images written for people: confusion matrices, learning curves, reliability diagrams and a
regression's predicted against actual values."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def save_confusion_png(path: Path, matrix: np.ndarray, class_names: Sequence[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no screen on servers
    from matplotlib import pyplot as plt

    size = 2.5 + 0.45 * len(class_names)
    fig, ax = plt.subplots(figsize=(size, size))
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=6,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_learning_curves_png(path: Path, history: list[dict], title: str, score: str, score_label: str) -> None:
    """Loss (train and validation) and the validation `score` of each record (val_accuracy, a
    regression's val_rmse; `score_label` for people) per epoch; one line per expert."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    for segment in sorted({record.get("segment") for record in history}, key=lambda s: -1 if s is None else s):
        records = [r for r in history if r.get("segment") == segment]
        epochs = [r["epoch"] for r in records]
        label = "" if segment is None else f"segment-{segment} "
        loss_ax.plot(epochs, [r["train_loss"] for r in records], "--", label=f"{label}train")
        loss_ax.plot(epochs, [r["val_loss"] for r in records], label=f"{label}val")
        accuracy_ax.plot(epochs, [r.get(score) for r in records], label=f"{label}val".strip())
    loss_ax.set(xlabel="epoch", ylabel="loss")
    accuracy_ax.set(xlabel="epoch", ylabel=score_label)
    for ax in (loss_ax, accuracy_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_reliability_png(path: Path, bins: list[dict], title: str) -> None:
    """Reliability diagram: accuracy against mean confidence per confidence bin (the bins of
    `granular.evaluate.calibration`); a calibrated model's bars meet the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (reliability_ax, count_ax) = plt.subplots(
        2, 1, figsize=(4.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    lower = [b["lower"] for b in bins]
    width = [b["upper"] - b["lower"] for b in bins]
    reliability_ax.bar(lower, [b["accuracy"] for b in bins], width=width, align="edge",
                       edgecolor="black", linewidth=0.5, label="accuracy")
    reliability_ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="tab:red",
                        markersize=3, label="(mean confidence, accuracy)")
    reliability_ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="calibrated")
    reliability_ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    reliability_ax.legend(fontsize=7, loc="upper left")
    count_ax.bar(lower, [b["count"] for b in bins], width=width, align="edge", color="gray")
    count_ax.set(xlabel="confidence of the predicted class", ylabel="examples")
    for ax in (reliability_ax, count_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_predicted_vs_actual_png(path: Path, actual: np.ndarray, predicted: np.ndarray, title: str) -> None:
    """A regression's reliability diagram: each test row's predicted value against its actual
    one; a perfect model's points lie on the diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(actual, predicted, s=4, alpha=0.4)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], "--", color="gray", linewidth=1, label="predicted = actual")
    ax.set(xlabel="actual", ylabel="predicted", title=title)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_cascade_curve_png(path: Path, record: dict) -> None:
    """The cascade's accuracy against its cost (the fused model's = 1): every cheapest setting of
    the thresholds on the validation split, the one chosen, and where it landed on the test split,
    beside the fused model's own accuracy. `record`: data/cascade/cascade.json."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    full = record["stages"][-1]["seconds_per_example"]
    validation, test = record["validation"], record["test"]
    fig, ax = plt.subplots(figsize=(6, 4))
    frontier = validation["frontier"]
    ax.plot([p["seconds_per_example"] / full for p in frontier], [p["accuracy"] for p in frontier], ".-",
            color="tab:blue", markersize=3, label="validation: cheapest thresholds of each accuracy")
    chosen = validation["chosen"]
    ax.plot(chosen["seconds_per_example"] / full, chosen["accuracy"], "o", color="tab:blue", label="chosen (validation)")
    ax.plot(test["seconds_per_example"] / full, test["accuracy"], "s", color="tab:orange", label="chosen (test)")
    ax.axhline(validation["fused_accuracy"], color="tab:blue", linestyle=":", label="fused model (validation)")
    ax.axhline(test["fused_accuracy"], color="tab:orange", linestyle=":", label="fused model (test)")
    lowest = min(p["accuracy"] for p in frontier if p["seconds_per_example"] >= chosen["seconds_per_example"] / 2)
    ax.set_ylim(lowest - 0.002, max(validation["fused_accuracy"], test["fused_accuracy"], chosen["accuracy"]) + 0.003)
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("cost per example (fused model = 1), as measured")
    ax.set_ylabel("accuracy")
    ax.set_title(f"cascade: {' -> '.join(stage['name'] for stage in record['stages'])}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
