"""Images written for people: confusion matrices and learning curves."""
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


def save_learning_curves_png(path: Path, history: list[dict], title: str) -> None:
    """Loss (train and validation) and validation accuracy per epoch; one line per expert."""
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
        accuracy_ax.plot(epochs, [r["val_accuracy"] for r in records], label=f"{label}val".strip())
    loss_ax.set(xlabel="epoch", ylabel="loss")
    accuracy_ax.set(xlabel="epoch", ylabel="validation accuracy")
    for ax in (loss_ax, accuracy_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
