"""COCO-format detections: the records validate() makes as the images stream by, the predictions file it
writes (`save_predictions`) and reads back (`predictions=`), and the metrics file.

The records follow Ultralytics' predictions.json, so that the same file can be scored by either tool:
image_id = the file stem (an int when numeric; the COCO image id for COCO JSON and TFDS), category_id
= COCO's original id when the names are COCO's (else 1..nc; a COCO JSON's own ids), bbox = [x, y, w, h]
in original-image pixels rounded to 3 decimals, score rounded to 5 (`round_records`, as Ultralytics'
pred_to_json). The metrics are computed from exactly these rounded values (`Collector` keeps them, not
the unrounded ones), which is why scoring a saved file reproduces every number of the run that wrote it.

A file read back is checked entry by entry (types, boxes) and bounded: at most
`limits.MAX_PREDICTIONS_PER_IMAGE` detections per image of the dataset, packed into arrays while it is
parsed (docs/datasets.md#limits).
"""
from __future__ import annotations

import array
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from nasjax.data import limits
from nasjax.data.base import (
    Dataset,
    DatasetError,
    DatasetNotFoundError,
    Sample,
    parse_json_file,
)
from nasjax.data.coco_json import box_xywh
from nasjax.utils.atomic_files import write_atomic
from nasjax.validate.coco_metrics import EvalImage, xyxy_to_xywh


def round_records(boxes_xyxy: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xywh rounded to 3 decimals and scores to 5, as Ultralytics' pred_to_json writes them."""
    return np.round(xyxy_to_xywh(boxes_xyxy), 3), np.round(np.asarray(scores, np.float64), 5)


def key_text(key) -> str:
    """An image_id as text: files give ints or strings, and both must find the same image."""
    return str(key)


class Collector:
    """Turns each image's detections into COCO records and `EvalImage`s as they arrive, so that memory
    holds only the records, never the images."""

    def __init__(self, dataset: Dataset):
        self.category_ids = dataset.category_ids
        self.num_classes = len(dataset.names)
        self.images: list[EvalImage] = []
        self.records: list[list[dict]] = []  # per image; image_id = the sample's key (the file convention)

    def add(self, sample: Sample, xywh: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> None:
        """xywh / scores already rounded as in the file (`round_records`); classes are indices."""
        xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
        self.records.append([
            {"image_id": sample.key, "category_id": self.category_ids[int(cls)], "bbox": box, "score": score}
            for box, score, cls in zip(xywh.tolist(), np.asarray(scores).tolist(), np.asarray(classes).tolist())
        ])
        det_boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        self.images.append(EvalImage(
            image_id=len(self.images), height=sample.height, width=sample.width,
            gt_boxes=sample.boxes, gt_classes=sample.classes, gt_iscrowd=sample.iscrowd, gt_area=sample.area,
            det_boxes=det_boxes, det_scores=scores, det_classes=classes, file_name=sample.file_name, key=sample.key,
        ))


def check_image_size(sample: Sample, orig_shape: tuple[int, int]) -> None:
    """The image read for `sample` must have the size its annotations are for."""
    if tuple(orig_shape) != (sample.height, sample.width):
        raise DatasetError(f"{sample.path or sample.file_name}: the image is {orig_shape[1]}x{orig_shape[0]} "
                           f"but its annotations are for {sample.width}x{sample.height}")


def internal_records(images: Sequence[EvalImage], records: Sequence[list[dict]]) -> list[dict]:
    """The per-image records with image_id replaced by the EvalImage ids of the in-memory ground truth."""
    return [{**r, "image_id": im.image_id} for im, rows in zip(images, records) for r in rows]


def check_unique_keys(images: Sequence[EvalImage], dataset_name: str) -> None:
    """A predictions file names images by file stem: two images with one stem cannot both be in it."""
    seen: set[str] = set()
    for image in images:
        key = key_text(image.key)
        if key in seen:
            raise DatasetError(f"two images of {dataset_name} share the image_id {key!r} (the file stem), so a "
                               "predictions file cannot tell them apart")
        seen.add(key)


class FileDetections(NamedTuple):
    """One image's detections from a predictions file (`read_predictions`), in the file's order."""

    xywh: np.ndarray  # (n, 4) float64, COCO [x, y, width, height] in original-image pixels
    cls: np.ndarray  # (n,) int64 class indices
    score: np.ndarray  # (n,) float64


def read_predictions(path: str | os.PathLike, dataset: Dataset, *,
                     max_per_image: int = limits.MAX_PREDICTIONS_PER_IMAGE) -> dict[str, FileDetections]:
    """A COCO-format predictions file grouped by image key (`key_text`); checks every entry (types: a
    bbox of 4 numbers with width and height not negative, an integer category_id of the dataset, a
    finite score; anything else is a DatasetError naming the entry).

    Bounded: a file with more than `max_per_image` x (the dataset's images) detections is refused — by
    its size alone when it cannot hold fewer (`limits.MAX_PREDICTION_BYTES` each), else as soon as the
    parse passes the bound. Each detection is checked and packed into arrays while the file is parsed,
    so memory holds ~50 bytes per detection beside the file's text, not its ~1 KB of Python objects."""
    path = Path(path)
    bound = max(1, len(dataset)) * max_per_image
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DatasetNotFoundError(f"predictions file not found: {path}") from None
    too_many = (f"more than {bound:,} detections ({max_per_image} per image for the {len(dataset)} images of "
                f"{dataset.name}); is it the predictions file of another dataset? Keep at most max_det per image")
    if size > bound * limits.MAX_PREDICTION_BYTES:
        raise DatasetError(f"{path}: {size:,} bytes: too large to hold at most {bound:,} detections "
                           f"({max_per_image} per image for the {len(dataset)} images of {dataset.name}); "
                           "is it the predictions file of another dataset?")
    known_categories = {int(c): i for i, c in enumerate(dataset.category_ids)}
    key_index: dict[str, int] = {}
    keys, classes = array.array("q"), array.array("q")
    boxes, scores = array.array("d"), array.array("d")

    def detection(entry: dict):
        """json's object_hook: a detection is checked, packed and replaced by None; other objects (the
        RLE of a segmentation result) are kept for their detection."""
        if not _DETECTION_KEYS & entry.keys():
            return entry
        n = len(keys)
        if n >= bound:
            raise DatasetError(f"{path}: {too_many}")
        where = f"{path}: detection #{n}"
        for name in _DETECTION_KEYS:
            if name not in entry:
                raise DatasetError(f"{where} is malformed: no '{name}' (each needs image_id, category_id, bbox, score)")
        key, category, score = entry["image_id"], entry["category_id"], entry["score"]
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise DatasetError(f"{where}: 'image_id' must be an integer or a string, got {_short(key)}")
        if isinstance(category, bool) or not isinstance(category, int):
            raise DatasetError(f"{where}: 'category_id' must be an integer, got {_short(category)}")
        if category not in known_categories:
            raise DatasetError(f"{where} has category_id {category}, which is not one of the dataset's category ids "
                               f"({min(known_categories)}..{max(known_categories)})")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DatasetError(f"{where}: 'score' must be a finite number, got {_short(score)}")
        boxes.extend(box_xywh(entry["bbox"], where))
        text = key_text(key)
        keys.append(key_index.setdefault(text, len(key_index)))
        classes.append(known_categories[category])
        scores.append(score)
        return None

    def parse(text: str):
        if not text.lstrip().startswith("["):
            raise DatasetError(f"{path}: expected a JSON list of detections (COCO results format)")
        return json.loads(text, object_hook=detection)

    data = parse_json_file(path, "predictions file", parse)
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of detections (COCO results format)")
    stray = next((i for i, entry in enumerate(data) if entry is not None), None)
    if stray is not None:
        raise DatasetError(f"{path}: entry #{stray} is not a detection {{image_id, category_id, bbox, score}}: "
                           f"{_short(data[stray])}")
    key_of = np.frombuffer(keys, np.int64)
    order = np.argsort(key_of, kind="stable")
    starts = np.searchsorted(key_of[order], np.arange(len(key_index) + 1))
    xywh = np.frombuffer(boxes, np.float64).reshape(-1, 4)
    cls, score = np.frombuffer(classes, np.int64), np.frombuffer(scores, np.float64)
    grouped = {}
    for text, i in key_index.items():
        rows = order[starts[i]:starts[i + 1]]
        grouped[text] = FileDetections(xywh[rows], cls[rows], score[rows])
    return grouped


_DETECTION_KEYS = frozenset(("image_id", "category_id", "bbox", "score"))


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def add_file_detections(collector: Collector, sample: Sample, detections: FileDetections | None) -> None:
    """One image's detections from `read_predictions` (None: none), in descending score (the order NMS
    emits, which Ultralytics' matching relies on; stable, so equal scores keep the file's order)."""
    if detections is None:
        collector.add(sample, np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
        return
    order = np.argsort(-detections.score, kind="stable")
    collector.add(sample, detections.xywh[order], detections.score[order], detections.cls[order])


def jsonable(value):
    """`value` with numpy scalars, tuples and paths made plain JSON types (dict keys as text)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def write_predictions(path: str | os.PathLike, records: list[dict]) -> Path:
    """The COCO results list (plain Python values already, see `Collector`), atomically: a reader never
    sees half a file."""
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(records) + "\n"))


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """The metrics dict as indented JSON, atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(jsonable(metrics), indent=1) + "\n"))
