"""Validate: COCO mAP with pycocotools and Ultralytics' P / R / mAP table over a dataset. One job per
module:

    validator.py            validate(): the dataset, predict() streamed over it (or a predictions file), scoring
    settings.py             ValidationSettings: NMS and pre-processing, DEFAULT and REFERENCE (super-gradients')
    predictions.py          COCO-format records: made as images stream by, predictions / metrics files
    multihost.py            gathering every process's share before scoring
    coco_metrics.py         pycocotools' 12 numbers, and the Evaluation of a set of images
    ultralytics_metrics.py  Ultralytics' matching, P / R and 101-point AP (the release it follows is named there)
    table.py                the printed table and speed line
"""
from nasjax.validate.settings import ValidationSettings
from nasjax.validate.predictions import read_predictions
from nasjax.validate.validator import (DEFAULT_SETTINGS, METRIC_KEYS, REFERENCE_SETTINGS, ClassCountMismatchError,
                                       resolve_settings, validate)

__all__ = ["DEFAULT_SETTINGS", "METRIC_KEYS", "REFERENCE_SETTINGS", "ClassCountMismatchError", "ValidationSettings",
           "read_predictions", "resolve_settings", "validate"]
