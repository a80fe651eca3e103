"""The schema of a YOLO-NAS variant config: every architectural number lives in an instance of it.

The values are those super-gradients 3.7.1 resolves from `recipes/arch_params/yolo_nas_*_arch_params.yaml`
(see docs/architecture.md#variants). `nasjax.model.yolo_nas` reads them and holds no numbers of its own.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """A backbone stage: a stride-2 QARepVGG downsample, then a CSP layer of QARepVGG bottlenecks."""

    out_channels: int
    num_blocks: int
    hidden_channels: int
    concat_intermediates: bool


@dataclasses.dataclass(frozen=True)
class NeckStageConfig:
    """One PAN stage: an up stage (neck1, neck2) or a down stage (neck3, neck4)."""

    out_channels: int
    num_blocks: int
    hidden_channels: int


@dataclasses.dataclass(frozen=True)
class YoloNASConfig:
    name: str
    stem_channels: int
    stages: tuple[StageConfig, StageConfig, StageConfig, StageConfig]
    spp_pool_sizes: tuple[int, ...]
    neck1: NeckStageConfig
    neck2: NeckStageConfig
    neck3: NeckStageConfig
    neck4: NeckStageConfig
    head_width_mult: float
    head_inter_channels_base: tuple[int, int, int] = (128, 256, 512)  # the YAML's `inter_channels`
    num_classes: int = 80
    reg_max: int = 16
    strides: tuple[int, int, int] = (8, 16, 32)
    grid_cell_offset: float = 0.5
    grid_cell_scale: float = 5.0
    cls_prior_prob: float = 0.01
    bn_eps: float = 1e-3
    bn_momentum: float = 0.03  # PyTorch convention: weight of the new batch statistic.
    # Pre-processing belongs to the weights, not the architecture: `nasjax.weights.Preprocessing`.

    @property
    def neck_out_channels(self) -> tuple[int, int, int]:
        """Channels of (p3, p4, p5), the inputs of the three heads."""
        return (self.neck2.out_channels, self.neck3.out_channels, self.neck4.out_channels)

    @property
    def head_inter_channels(self) -> tuple[int, ...]:
        # super-gradients: ceil(int(c * width_mult) / 8) * 8 on each head's configured inter_channels.
        return tuple(
            int(math.ceil(int(c * self.head_width_mult) / 8) * 8) for c in self.head_inter_channels_base
        )

    def replace(self, **changes) -> "YoloNASConfig":
        return dataclasses.replace(self, **changes)
