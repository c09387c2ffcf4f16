"""Pictures of any size brought to the one size a run trains on (validate.image_shape), as the
clean section says: `crop` scales the picture so that it covers the size and cuts the middle
out; `pad` scales it so that it fits inside and fills the margins with black; `stretch` scales
each side to the size, the aspect ratio changing with it. A file that cannot be decoded, or a
picture whose shorter side is under clean.min_side pixels, is not an image to train on: its
reason says why, and cleaning sets it aside. Pictures are read in data.source.color: grey (their
luminance) or rgb."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from granular.config import Config

Policy = Literal["crop", "pad", "stretch"]
_MODES = {"grey": "L", "rgb": "RGB"}  # Pillow's


@dataclass(frozen=True)
class ImageFit:
    shape: tuple[int, int]  # (height, width) every picture is brought to
    policy: Policy = "crop"
    min_side: int = 8  # pixels: a smaller picture is set aside
    color: Literal["grey", "rgb"] = "grey"

    @property
    def pixels(self) -> tuple[int, ...]:
        """A fitted picture's array shape: (H, W) grey, (H, W, 3) rgb."""
        return self.shape if self.color == "grey" else (*self.shape, 3)


def image_fit(config: Config) -> ImageFit:
    """What a run brings pictures to: validate.image_shape in data.source.color, by clean.fit,
    above clean.min_side."""
    return ImageFit(tuple(config.validate_.image_shape), config.clean.fit, config.clean.min_side, config.data.source.color)


def fit_to(fit: ImageFit, pixels: tuple[int, ...]) -> ImageFit:
    """`fit` bringing pictures to what a model takes: (H, W) grey pixels or (H, W, C) colour ones."""
    return replace(fit, shape=tuple(pixels[:2]), color="grey" if len(pixels) == 2 else "rgb")


@dataclass(frozen=True)
class Decoded:
    image: np.ndarray  # (height, width[, 3]) uint8 at the fitted size; zeros where `problem` is set
    problem: str  # why the file is not an image to train on; "" when it is


def decode(file: Path, fit: ImageFit) -> Decoded:
    """The file's picture as pixels of `fit.color` at `fit.shape`, or the reason it cannot be."""
    from PIL import Image, UnidentifiedImageError  # only pictures need Pillow

    blank = np.zeros(fit.pixels, dtype=np.uint8)
    try:
        with Image.open(file) as picture:
            picture.load()  # a truncated file fails here, not at open
            picture = picture.convert(_MODES[fit.color])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:  # a reason a kind, to count
        return Decoded(blank, f"cannot be read as an image ({type(error).__name__})")
    if min(picture.size) < fit.min_side:
        return Decoded(blank, f"smaller than clean.min_side ({fit.min_side} pixels)")
    return Decoded(np.asarray(_fitted(picture, fit)), "")


def _fitted(picture, fit: ImageFit):
    """`picture` (a Pillow image) at `fit.shape`, by `fit.policy`."""
    from PIL import Image

    height, width = fit.shape
    if picture.size == (width, height):
        return picture
    if fit.policy == "stretch":
        return picture.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    cover = fit.policy == "crop"
    scale = (max if cover else min)(width / picture.size[0], height / picture.size[1])
    scaled = (max(1, round(picture.size[0] * scale)), max(1, round(picture.size[1] * scale)))
    resized = picture.resize(scaled, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
    if cover:
        return resized.crop((left, top, left + width, top + height))
    canvas = Image.new(picture.mode, (width, height), 0)
    canvas.paste(resized, (-left, -top))
    return canvas
