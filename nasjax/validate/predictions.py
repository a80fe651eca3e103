"""COCO-format detections: the records validate() makes as the images stream by, the predictions file it
writes (`save_predictions`) and reads back (`predictions=`), and the metrics file.

The records follow Ultralytics' predictions.json, so that the same file can be scored by either tool:
image_id = the file stem (an int when numeric; the COCO image id for COCO JSON and TFDS), category_id
= COCO's original id when the names are COCO's (else 1..nc; a COCO JSON's own ids), bbox = [x, y, w, h]
in original-image pixels rounded to 3 decimals, score rounded to 5 (`round_records`, as Ultralytics'
pred_to_json). The metrics are computed from exactly these rounded values (`Collector` keeps them, not
the unrounded ones), which is why scoring a saved file reproduces every number of the run that wrote it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nasjax.data.base import Dataset, DatasetError, Sample, read_json_file
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


def read_predictions(path: str | os.PathLike, dataset: Dataset) -> dict[str, list[dict]]:
    """A COCO-format predictions file grouped by image key (`key_text`); checks every entry. Each
    detection is {"bbox": xywh, "cls": class index, "score"}."""
    path = Path(path)
    data = read_json_file(path, "predictions file")
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of detections (COCO results format)")
    known_categories = {int(c): i for i, c in enumerate(dataset.category_ids)}
    grouped: dict[str, list[dict]] = {}
    for n, entry in enumerate(data):
        try:
            bbox = [float(v) for v in entry["bbox"]]
            category, score = int(entry["category_id"]), float(entry["score"])
            key = entry["image_id"]
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{path}: detection #{n} is malformed (needs image_id, category_id, bbox, score): "
                               f"{e}") from e
        if len(bbox) != 4 or not all(math.isfinite(v) for v in [*bbox, score]):
            raise DatasetError(f"{path}: detection #{n} has a bad bbox {entry['bbox']!r} or score")
        if category not in known_categories:
            raise DatasetError(f"{path}: detection #{n} has category_id {category}, which is not one of the dataset's "
                               f"category ids ({min(known_categories)}..{max(known_categories)})")
        grouped.setdefault(key_text(key), []).append({"bbox": bbox, "cls": known_categories[category], "score": score})
    return grouped


def add_file_detections(collector: Collector, sample: Sample, rows: list[dict]) -> None:
    """One image's detections from `read_predictions`, in descending score (the order NMS emits, which
    Ultralytics' matching relies on; stable, so equal scores keep the file's order)."""
    rows = sorted(rows, key=lambda r: -r["score"])
    xywh = np.array([r["bbox"] for r in rows], np.float64).reshape(-1, 4)
    collector.add(sample, xywh, np.array([r["score"] for r in rows]), np.array([r["cls"] for r in rows], np.int64))


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
