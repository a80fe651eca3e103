"""Detection metrics of a set of images: COCO mAP with pycocotools, and Ultralytics' P / R beside it.

    images = [EvalImage(image_id=0, height=480, width=640, gt_boxes=..., gt_classes=..., det_boxes=...,
                        det_scores=..., det_classes=...), ...]
    ev = evaluate(images, names={0: "person", ...})
    ev.stats["map50_95"], ev.stats["map50"], ev.precision, ev.recall

* mAP: pycocotools' `COCOeval` (iouType "bbox") on a ground truth built in memory: one COCO image per
  `EvalImage` (id, width, height), one annotation per box (bbox xywh in pixels, area = the given area
  or w * h, iscrowd as given, ids 1..N), and the categories: the COCO ids (1..90) when the class names
  are COCO's 80 (the 80 -> 91 mapping, `COCO80_TO_91`), else 1..nc (Ultralytics' `class_map`). The 12
  numbers of `COCOeval.summarize()` are `stats` under `STAT_KEYS`; per-class AP is read from
  `eval["precision"]` (area "all", 100 detections), as COCO's tools do. This is the mAP reported as
  `map50_95` / `map50` and in the table.
* P and R: Ultralytics' (`ultralytics_metrics.py`, which names the release it follows): predictions
  matched to the non-crowd ground truth per image, P and R at the maximum of the smoothed mean F1
  curve. Its own 101-point AP is reported beside as `ultralytics_map50` / `ultralytics_map50_95`, for
  comparison with Ultralytics' figures.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
from typing import Any, Mapping, Sequence

import numpy as np

from nasjax.data.coco import COCO80_TO_91, category_ids_for, is_coco_names  # noqa: F401  (re-exported)
from nasjax.utils.optional import require
from nasjax.validate import ultralytics_metrics

# The 12 numbers of COCOeval.summarize(), in its order.
STAT_KEYS: tuple[str, ...] = (
    "map50_95", "map50", "map75", "map50_95_small", "map50_95_medium", "map50_95_large",
    "mar_1", "mar_10", "mar_100", "mar_100_small", "mar_100_medium", "mar_100_large",
)  # fmt: skip


@dataclasses.dataclass
class EvalImage:
    """One image's ground truth and detections, boxes xyxy in original-image pixels, classes as indices
    0..nc-1 (the model's outputs). gt_iscrowd / gt_area may be None (no crowd regions; area w * h)."""

    image_id: int
    height: int
    width: int
    gt_boxes: np.ndarray
    gt_classes: np.ndarray
    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_classes: np.ndarray
    gt_iscrowd: np.ndarray | None = None
    gt_area: np.ndarray | None = None
    file_name: str = ""
    key: Any = None  # the image's id in COCO-format files (file stem or COCO image id)

    def __post_init__(self):
        self.gt_boxes = np.asarray(self.gt_boxes, np.float64).reshape(-1, 4)
        self.gt_classes = np.asarray(self.gt_classes, np.int64).reshape(-1)
        self.det_boxes = np.asarray(self.det_boxes, np.float64).reshape(-1, 4)
        self.det_scores = np.asarray(self.det_scores, np.float64).reshape(-1)
        self.det_classes = np.asarray(self.det_classes, np.int64).reshape(-1)
        n = len(self.gt_boxes)
        self.gt_iscrowd = np.zeros(n, bool) if self.gt_iscrowd is None else np.asarray(self.gt_iscrowd, bool).reshape(-1)
        if self.gt_area is not None:
            self.gt_area = np.asarray(self.gt_area, np.float64).reshape(-1)
        if not (len(self.gt_classes) == len(self.gt_iscrowd) == n and (self.gt_area is None or len(self.gt_area) == n)):
            raise ValueError(f"image {self.image_id}: ground-truth arrays differ in length")
        if not len(self.det_boxes) == len(self.det_scores) == len(self.det_classes):
            raise ValueError(f"image {self.image_id}: detection arrays differ in length")


# --- pycocotools -----------------------------------------------------------------------------------


def _quiet():
    """pycocotools prints progress ('index created!', 'DONE (t=0.01s)') to stdout: capture it."""
    return contextlib.redirect_stdout(io.StringIO())


def ground_truth_dict(images: Sequence[EvalImage], names: Mapping[int, str], category_ids: Sequence[int]) -> dict:
    """The COCO-format ground truth (a dataset dict) of `images`."""
    annotations = []
    for image in images:
        xywh = xyxy_to_xywh(image.gt_boxes)
        areas = image.gt_area if image.gt_area is not None else xywh[:, 2] * xywh[:, 3]
        for box, cls, crowd, area in zip(xywh, image.gt_classes, image.gt_iscrowd, areas):
            annotations.append({
                "id": len(annotations) + 1,  # pycocotools needs ids >= 1: 0 means "unmatched"
                "image_id": int(image.image_id),
                "category_id": int(category_ids[int(cls)]),
                "bbox": [float(v) for v in box],
                "area": float(area),
                "iscrowd": int(bool(crowd)),
            })
    return {
        "info": {"description": "nasjax in-memory ground truth"},
        "images": [{"id": int(im.image_id), "width": int(im.width), "height": int(im.height),
                    "file_name": im.file_name} for im in images],
        "annotations": annotations,
        "categories": [{"id": int(category_ids[i]), "name": names[i], "supercategory": ""} for i in sorted(names)],
    }


def coco_from_dict(dataset: dict):
    """A pycocotools `COCO` object holding `dataset` (no file)."""
    COCO = require("pycocotools.coco", "pycocotools").COCO
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def detection_records(images: Sequence[EvalImage], category_ids: Sequence[int]) -> list[dict]:
    """The detections as COCO results: image_id, category_id, bbox xywh, score."""
    records = []
    for image in images:
        for box, score, cls in zip(xyxy_to_xywh(image.det_boxes), image.det_scores, image.det_classes):
            records.append({"image_id": int(image.image_id), "category_id": int(category_ids[int(cls)]),
                            "bbox": [float(v) for v in box], "score": float(score)})
    return records


def load_results(gt, records: list[dict]):
    """`gt.loadRes(records)`, also for an empty list (which pycocotools cannot load)."""
    if records:
        with _quiet():
            return gt.loadRes(copy.deepcopy(records))
    return coco_from_dict({"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                           "annotations": []})


@dataclasses.dataclass
class CocoResult:
    stats: dict[str, float]  # STAT_KEYS → value (-1 where undefined: no ground truth)
    per_class_map50_95: np.ndarray  # (nc,) pycocotools AP per class index, -1 where the class has no GT
    per_class_map50: np.ndarray
    summary: str  # COCOeval.summarize()'s printout


def coco_evaluate(gt, records: list[dict], category_ids: Sequence[int], image_ids: Sequence[int] | None = None) -> CocoResult:
    """Run COCOeval (bbox) of `records` against the pycocotools COCO `gt`, on `image_ids` (default all)."""
    COCOeval = require("pycocotools.cocoeval", "pycocotools").COCOeval
    dt = load_results(gt, records)
    evaluator = COCOeval(gt, dt, "bbox")
    if image_ids is not None:
        evaluator.params.imgIds = sorted(int(i) for i in image_ids)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    stats = {key: float(v) for key, v in zip(STAT_KEYS, evaluator.stats)}
    # precision: [T iou, R recall, K category, A area, M maxDets]; area "all" is 0, 100 detections is 2.
    precision = evaluator.eval["precision"]
    order = {cat: k for k, cat in enumerate(evaluator.params.catIds)}
    ap, ap50 = np.full(len(category_ids), -1.0), np.full(len(category_ids), -1.0)
    for index, cat in enumerate(category_ids):
        k = order.get(int(cat))
        if k is None:
            continue
        p = precision[:, :, k, 0, 2]
        ap[index] = float(np.mean(p[p > -1])) if np.any(p > -1) else -1.0
        p50 = precision[0, :, k, 0, 2]
        ap50[index] = float(np.mean(p50[p50 > -1])) if np.any(p50 > -1) else -1.0
    return CocoResult(stats, ap, ap50, summary.getvalue())


# --- Ultralytics' precision and recall ------------------------------------------------------------


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) x1 y1 x2 y2 → COCO's x y w h (top-left corner, width, height)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def precision_recall(images: Sequence[EvalImage]) -> tuple[ultralytics_metrics.PRResult, dict]:
    """Ultralytics' P, R and AP over `images` (crowd ground truth left out, as Ultralytics' COCO labels
    do), plus the statistics: instances and images per class."""
    stats = []
    for image in images:
        keep = ~image.gt_iscrowd
        stats.append(ultralytics_metrics.image_stats(image.gt_boxes[keep], image.gt_classes[keep], image.det_boxes,
                                                     image.det_scores, image.det_classes))
    return ultralytics_metrics.precision_recall(stats)


# --- everything together ---------------------------------------------------------------------------


@dataclasses.dataclass
class Evaluation:
    stats: dict[str, float]  # the 12 COCOeval numbers under STAT_KEYS
    precision: float  # Ultralytics-style mean P
    recall: float
    ultralytics_map50: float
    ultralytics_map50_95: float
    per_class: list[dict]  # one row per class with instances: class, name, images, instances, P, R, AP
    images: int
    instances: int
    summary: str  # pycocotools' printout

    def to_dict(self) -> dict:
        return {**self.stats, "precision": self.precision, "recall": self.recall,
                "ultralytics_map50": self.ultralytics_map50, "ultralytics_map50_95": self.ultralytics_map50_95,
                "images": self.images, "instances": self.instances, "per_class": self.per_class}


def evaluate(images: Sequence[EvalImage], names: Mapping[int, str], category_ids: Sequence[int] | None = None,
             records: list[dict] | None = None) -> Evaluation:
    """pycocotools mAP and Ultralytics-style P / R of the detections in `images`.

    category_ids: per class index (default `category_ids_for(names)`); records: the COCO-format
    detections to score, when already made (default `detection_records(images, category_ids)`)."""
    names = dict(names)
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"class names must be indexed 0..{len(names) - 1}, got indices {sorted(names)}")
    category_ids = list(category_ids) if category_ids is not None else category_ids_for(names)
    if len(set(category_ids)) != len(category_ids) or len(category_ids) != len(names):
        raise ValueError("category_ids must be one distinct id per class name")
    for image in images:
        for what, cls in (("ground-truth", image.gt_classes), ("detection", image.det_classes)):
            if len(cls) and (cls.min() < 0 or cls.max() >= len(names)):
                raise ValueError(f"image {image.image_id}: {what} class {int(cls.max())} outside 0..{len(names) - 1}")
    gt = coco_from_dict(ground_truth_dict(images, names, category_ids))
    if records is None:
        records = detection_records(images, category_ids)
    coco = coco_evaluate(gt, records, category_ids, [im.image_id for im in images])
    pr, counts = precision_recall(images)
    per_class = []
    for k, c in enumerate(pr.classes):
        per_class.append({
            "class": int(c), "name": names[int(c)], "category_id": int(category_ids[int(c)]),
            "images": counts["images"].get(int(c), 0), "instances": counts["instances"].get(int(c), 0),
            "precision": float(pr.precision[k]), "recall": float(pr.recall[k]),
            "map50": float(coco.per_class_map50[c]), "map50_95": float(coco.per_class_map50_95[c]),
        })
    return Evaluation(
        stats=coco.stats, precision=pr.mean_precision, recall=pr.mean_recall,
        ultralytics_map50=pr.map50, ultralytics_map50_95=pr.map50_95,
        per_class=per_class, images=len(images), instances=int(sum(counts["instances"].values())),
        summary=coco.summary,
    )

