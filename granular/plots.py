"""Images written for people: confusion matrices."""
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
