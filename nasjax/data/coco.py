"""COCO's category ids: the 80 training classes map onto the 91 ids of the annotation files."""
from __future__ import annotations

from typing import Mapping, Sequence

from nasjax.weights.coco import COCO_CLASS_NAMES

# Class index 0..79 → COCO category id (the ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71, 83).
COCO80_TO_91: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip


def is_coco_names(names: Mapping[int, str] | Sequence[str]) -> bool:
    """Whether these are COCO's 80 class names in the standard order."""
    values = list(names.values()) if isinstance(names, Mapping) else list(names)
    return tuple(values) == COCO_CLASS_NAMES


def category_ids_for(names: Mapping[int, str] | Sequence[str]) -> list[int]:
    """Category id per class index: COCO's original ids for COCO's names, else 1..nc."""
    n = len(names)
    return list(COCO80_TO_91) if is_coco_names(names) else list(range(1, n + 1))
