"""Colour as a granularity: a view sees the images as the data holds them, grey (N, H, W) or
colour (N, H, W, 3), or their luminance alone (a view's `color: grey`)."""
from __future__ import annotations

import numpy as np

# ITU-R BT.601 weights, as Pillow's convert("L") uses them.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def as_seen(images: np.ndarray, color: str | None) -> np.ndarray:
    """The images as a view of `color` sees them: their luminance (N, H, W) float32 for a grey
    view of colour images, else untouched."""
    if color == "grey" and images.ndim == 4:
        return images @ LUMA
    return images
