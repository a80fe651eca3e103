"""Where the pretrained YOLO-NAS weights live (the registry) and the COCO class names."""
from nasjax.weights.coco import COCO_CLASS_NAMES
from nasjax.weights.registry import (
    LICENSE_NOTE,
    Preprocessing,
    UnknownWeightsError,
    WeightEntry,
    get_entry,
    is_known,
    list_weights,
)

__all__ = [
    "COCO_CLASS_NAMES",
    "LICENSE_NOTE",
    "Preprocessing",
    "UnknownWeightsError",
    "WeightEntry",
    "get_entry",
    "is_known",
    "list_weights",
]
