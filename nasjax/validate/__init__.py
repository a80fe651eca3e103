"""Validate: COCO mAP with pycocotools and Ultralytics' P / R / mAP table over a dataset
(`validator.py`); the metric code is in `coco_metrics.py`."""
from nasjax.validate.validator import (DEFAULT_SETTINGS, METRIC_KEYS, REFERENCE_SETTINGS, ClassCountMismatchError,
                                       read_predictions, resolve_settings, validate)

__all__ = ["DEFAULT_SETTINGS", "METRIC_KEYS", "REFERENCE_SETTINGS", "ClassCountMismatchError", "read_predictions",
           "resolve_settings", "validate"]
