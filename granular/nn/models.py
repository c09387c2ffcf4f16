"""One network per modality, each rebuilt from its own config: a small residual CNN for grey or
colour images of any size, its stem pooling large ones down so that a network's cost grows little
with the image's size, and an MLP with categorical embeddings for tables."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


# Extra heads of a network: taxonomy level -> the ancestor there of each of the network's classes.
LevelHeads = dict[str, list[int]]


@dataclass(frozen=True)
class CNNConfig:
    in_channels: int
    num_classes: int
    width: int = 32
    depth: int = 1  # residual blocks per stage
    dropout: float = 0.1
    # How much the stem max-pools each side (stem_pool_for): 2 from 14x14 up, so that the residual
    # stages work on a quarter of the input's pixels and a 14x14 view costs about a quarter of a
    # 28x28 one; more for images over 32 pixels, whose stages then see at most 16x16; 1 (none)
    # below 14. Checkpoints written before say True (2) or False (1).
    stem_pool: int = 2
    # Pool before the norm (conv -> max-pool -> BatchNorm -> ReLU, as airbench does): the norm and
    # the activation run on a quarter of the pixels; a training step at 28x28 in bf16 ran ~18%
    # faster. With a positive BatchNorm scale the two orders compute the same function. False is
    # the layout of checkpoints written before (conv -> BatchNorm -> ReLU -> max-pool).
    pool_first: bool = True
    # Extra heads on the trunk, each reading the features after the second residual stage.
    level_heads: LevelHeads = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.stem_pool, bool):
            object.__setattr__(self, "stem_pool", 2 if self.stem_pool else 1)

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


def _pooling(factor: int) -> nn.Module:
    # An Identity where nothing pools keeps the parameter names of every input size alike, so
    # weights move between a small input's network and a large one's (resolution stages).
    return nn.MaxPool2d(factor) if factor > 1 else nn.Identity()


def _conv_pool_bn(c_in: int, c_out: int, factor: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), _pooling(factor), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


def _downsampling(c_in: int, c_out: int, factor: int, pool_first: bool) -> list[nn.Module]:
    if pool_first:
        return [_conv_pool_bn(c_in, c_out, factor)]
    return [_conv_bn(c_in, c_out), _pooling(factor)]


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


STAGE_SIDE = 16  # pixels a side the residual stages see at most, from 32x32 inputs up


def stem_pool_for(height: int) -> int:
    """How much the stem pools an input of `height` pixels: 1 below 14, else the least power of
    two from 2 up that brings it to STAGE_SIDE or under (28 -> 14, 64 -> 16, 128 -> 16)."""
    if height < 14:
        return 1
    factor = 2
    while height / factor > STAGE_SIDE:
        factor *= 2
    return factor


class ResidualCNN(nn.Module):
    """Two stages of conv -> pool -> `depth` residual blocks, then global pooling and a linear head;
    optionally an extra head per coarser taxonomy level halfway up (one trunk, a head per
    granularity), whose log-probabilities of each class's ancestor add to the head's logits."""

    def __init__(self, config: CNNConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            # (B, w, S, S), S = H / stem_pool
            *_downsampling(config.in_channels, w, config.stem_pool, config.pool_first),
            nn.Sequential(*(Residual(w) for _ in range(config.depth))),
            *_downsampling(w, 2 * w, 2, config.pool_first),  # (B, 2w, S/2, S/2)
            nn.Sequential(*(Residual(2 * w) for _ in range(config.depth))),
            _conv_bn(2 * w, 4 * w),
            nn.AdaptiveMaxPool2d(1),  # (B, 4w, 1, 1)
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(4 * w, config.num_classes))
        if config.level_heads:
            if not config.pool_first:
                raise ValueError("extra heads need the pool_first layout")
            self.level_heads = nn.ModuleDict({
                level: nn.Sequential(
                    nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(config.dropout),
                    nn.Linear(2 * w, max(ancestors) + 1),
                )
                for level, ancestors in config.level_heads.items()
            })
            for level, ancestors in config.level_heads.items():
                self.register_buffer(f"ancestors_{level}", torch.tensor(ancestors), persistent=False)

    # Where the extra heads branch off: after the second residual stage (B, 2w, S/2, S/2).
    _BRANCH = 4

    def logits_by_head(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The view's head's logits (B, classes) and each extra head's (B, classes of its level)."""
        if not self.config.level_heads:
            return self.head(self.features(x)), {}
        halfway = self.features[: self._BRANCH](x)
        own = self.head(self.features[self._BRANCH :](halfway))
        return own, {level: head(halfway) for level, head in self.level_heads.items()}

    def ancestors(self) -> dict[str, torch.Tensor]:
        """Each extra head's level -> the ancestor id of each of the network's classes."""
        return {level: getattr(self, f"ancestors_{level}") for level in self.config.level_heads}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        own, extra = self.logits_by_head(x)
        ancestors = self.ancestors()
        for level, logits in extra.items():  # the heads' product: log p(class) + log p(its ancestor)
            own = own + F.log_softmax(logits.float(), dim=1)[:, ancestors[level]]
        return own


@dataclass(frozen=True)
class MLPConfig:
    num_numeric: int
    cardinalities: tuple[int, ...]  # known categories of each categorical column
    num_classes: int
    width: int = 256  # hidden units
    depth: int = 2  # residual blocks after the input layer
    dropout: float = 0.1

    def embedding_dims(self) -> list[int]:
        # The rule of thumb of fastai's tabular models, capped: wide enough for the category
        # count, far narrower than one-hot.
        return [min(32, max(2, round(1.6 * (c + 1) ** 0.56))) for c in self.cardinalities]

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualMLPBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        # LayerNorm, not BatchNorm: a last batch of one row must still train.
        self.body = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(width, width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class TabularMLP(nn.Module):
    """Scaled numeric features and one learned embedding per categorical column, concatenated,
    then an input layer, `depth` residual blocks and a linear head. Each embedding has one extra
    row, for categories the training split did not have (any code outside 0..cardinality-1)."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        dims = config.embedding_dims()
        self.embeddings = nn.ModuleList(nn.Embedding(c + 1, d) for c, d in zip(config.cardinalities, dims))
        self.register_buffer("unknown", torch.tensor(config.cardinalities, dtype=torch.long), persistent=False)
        self.stem = nn.Sequential(nn.Linear(config.num_numeric + sum(dims), config.width), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(ResidualMLPBlock(config.width, config.dropout) for _ in range(config.depth)))
        self.head = nn.Sequential(
            nn.LayerNorm(config.width), nn.Dropout(config.dropout), nn.Linear(config.width, config.num_classes)
        )

    def forward(self, numeric: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.where((codes >= 0) & (codes < self.unknown), codes, self.unknown)  # (B, C)
        embedded = [embedding(codes[:, i]) for i, embedding in enumerate(self.embeddings)]
        return self.head(self.blocks(self.stem(torch.cat([numeric, *embedded], dim=1))))


def network_parts(model: nn.Module) -> dict[str, list[nn.Module]]:
    """The parts that take their own optimiser settings (config.Part): `head`, the classifier
    every network here ends with (and its extra heads), and `features`, every module below it."""
    heads = ("head", "level_heads")
    return {
        "features": [module for name, module in model.named_children() if name not in heads],
        "head": [module for name, module in model.named_children() if name in heads],
    }


ARCHITECTURES = {"ResidualCNN": (ResidualCNN, CNNConfig), "TabularMLP": (TabularMLP, MLPConfig)}


def rebuild(architecture: str, config: dict) -> nn.Module:
    """The untrained network a checkpoint describes (its weights are loaded after)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    network, config_type = ARCHITECTURES[architecture]
    if architecture == "ResidualCNN":
        config = {"pool_first": False, **config}  # a checkpoint from before pool_first has the older layout
    return network(config_type(**config))
