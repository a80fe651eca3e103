"""The padded box targets of a batch: what the input pipeline yields and the loss takes."""
from __future__ import annotations

from typing import Any, NamedTuple


class LossTargets(NamedTuple):
    """Targets padded to M boxes per image (numpy in the loader, jax arrays in the step)."""

    boxes: Any  # (B, M, 4) xyxy pixels, float32
    labels: Any  # (B, M) int32
    mask: Any  # (B, M) bool: which rows are real boxes
