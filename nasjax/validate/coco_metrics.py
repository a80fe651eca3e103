"""Detection metrics: COCO mAP with pycocotools, and precision / recall computed the way Ultralytics does.

    images = [EvalImage(image_id=0, height=480, width=640, gt_boxes=..., gt_classes=..., det_boxes=...,
                        det_scores=..., det_classes=...), ...]
    ev = evaluate(images, names={0: "person", ...})
    ev.stats["map50_95"], ev.stats["map50"], ev.precision, ev.recall

* mAP: pycocotools' `COCOeval` (iouType "bbox") on a ground truth built in memory: one COCO image per
  `EvalImage` (id, width, height), one annotation per box (bbox xywh in pixels, area = the given area
  or w * h, iscrowd as given, ids 1..N), and the categories: the COCO ids (1..90) when the class names
  are COCO's 80 (the 80 -> 91 mapping, `COCO80_TO_91`), else 1..nc (Ultralytics' `class_map`). The 12
  numbers of `COCOeval.summarize()` are `stats` under `STAT_KEYS`; per-class AP is read from
  `eval["precision"]` (area "all", 100 detections), as COCO's tools do.
* P and R: Ultralytics' `ap_per_class` re-implemented in numpy (`ap_per_class` here): predictions are
  matched to non-crowd ground truth per image (`match_predictions`: same class, IoU >= t for the ten
  thresholds 0.50:0.95, each prediction and each target used once, highest IoU first); per class, the
  precision and recall curves are interpolated on 1000 confidences in [0, 1]; the F1 curve averaged over
  the classes that have targets is smoothed with a box filter of fraction 0.1, and P and R are the
  per-class precision and recall at its maximum. The table's P and R are their means over those classes.
  The same function also gives Ultralytics' own 101-point AP (`ultralytics_map50`, `..._map50_95`),
  reported for comparison only: the mAP reported as `map50_95` / `map50` is pycocotools'.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
from typing import Any, Mapping, Sequence

import numpy as np

from nasjax.weights.coco import COCO_CLASS_NAMES

# COCO's 80 detection classes (in the order of the 80-class heads) → their original category ids 1..90.
COCO80_TO_91: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip

# The 12 numbers of COCOeval.summarize(), in its order.
STAT_KEYS: tuple[str, ...] = (
    "map50_95", "map50", "map75", "map50_95_small", "map50_95_medium", "map50_95_large",
    "mar_1", "mar_10", "mar_100", "mar_100_small", "mar_100_medium", "mar_100_large",
)  # fmt: skip

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # Ultralytics' iouv and COCO's iouThrs


def is_coco_names(names: Mapping[int, str] | Sequence[str]) -> bool:
    """Whether these are COCO's 80 class names in the standard order."""
    values = list(names.values()) if isinstance(names, Mapping) else list(names)
    return tuple(values) == COCO_CLASS_NAMES


def category_ids_for(names: Mapping[int, str] | Sequence[str]) -> list[int]:
    """Category id per class index: COCO's original ids for COCO's names, else 1..nc."""
    n = len(names)
    return list(COCO80_TO_91) if is_coco_names(names) else list(range(1, n + 1))


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


def require(module: str, package: str | None = None):
    """Import an optional dependency of validation, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"validation needs {package or module}: pip install 'nasjax[data]' ({e})") from e


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


# --- Ultralytics-style matching, precision and recall ---------------------------------------------


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(n, 4) x1 y1 x2 y2 → COCO's x y w h (top-left corner, width, height)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """(n, m) IoU of xyxy boxes a (n, 4) and b (m, 4), as Ultralytics' box_iou (eps in the denominator)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + eps)


def match_predictions(pred_classes: np.ndarray, true_classes: np.ndarray, iou: np.ndarray,
                      thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """(n_pred, n_thresholds) bool: which predictions are true positives at each IoU threshold.

    iou: (n_true, n_pred). Per threshold, the (target, prediction) pairs of the same class with
    IoU >= t are taken in order of decreasing IoU, each target and each prediction at most once
    (Ultralytics' `match_predictions` without scipy). After the first pass (one target per prediction,
    the highest IoU) the pairs are in prediction order, so when two predictions claim the same target
    the earlier one (NMS order: the higher score) keeps it, as in Ultralytics."""
    pred_classes, true_classes = np.asarray(pred_classes).reshape(-1), np.asarray(true_classes).reshape(-1)
    correct = np.zeros((len(pred_classes), len(thresholds)), bool)
    if not len(pred_classes) or not len(true_classes):
        return correct
    iou = np.where(true_classes[:, None] == pred_classes[None, :], iou, 0.0)
    for j, threshold in enumerate(thresholds):
        matches = np.argwhere(iou >= threshold)  # (k, 2): target, prediction
        if not len(matches):
            continue
        if len(matches) > 1:
            matches = matches[iou[matches[:, 0], matches[:, 1]].argsort()[::-1]]
            matches = matches[np.unique(matches[:, 1], return_index=True)[1]]  # one target per prediction
            matches = matches[np.unique(matches[:, 0], return_index=True)[1]]  # one prediction per target
        correct[matches[:, 1], j] = True
    return correct


def smooth(y: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Box filter over round(len * fraction * 2) // 2 + 1 points, ends padded with the end values."""
    n = round(len(y) * fraction * 2) // 2 + 1
    pad = np.ones(n // 2)
    padded = np.concatenate([pad * y[0], y, pad * y[-1]])
    return np.convolve(padded, np.ones(n) / n, mode="valid")


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """101-point interpolated AP of one PR curve (Ultralytics' compute_ap, 'interp')."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    x = np.linspace(0, 1, 101)
    return float(np.trapezoid(np.interp(x, mrec, mpre), x))


@dataclasses.dataclass
class PRResult:
    classes: np.ndarray  # (k,) the class indices that have targets, ascending
    precision: np.ndarray  # (k,) at the max-F1 confidence of the mean F1 curve
    recall: np.ndarray  # (k,)
    f1: np.ndarray  # (k,)
    ap: np.ndarray  # (k, 10) Ultralytics' 101-point AP per IoU threshold
    confidence: float  # the confidence (grid point) where the smoothed mean F1 peaks

    @property
    def mean_precision(self) -> float:
        return float(self.precision.mean()) if len(self.precision) else 0.0

    @property
    def mean_recall(self) -> float:
        return float(self.recall.mean()) if len(self.recall) else 0.0


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 eps: float = 1e-16) -> PRResult:
    """Ultralytics' ap_per_class: tp (n, T) bool, conf (n,), pred_cls (n,), target_cls (m,) → PRResult."""
    tp = np.asarray(tp, bool).reshape(len(conf), -1) if len(conf) else np.zeros((0, len(IOU_THRESHOLDS)), bool)
    conf, pred_cls = np.asarray(conf, np.float64), np.asarray(pred_cls).astype(np.int64)
    order = np.argsort(-conf)  # as Ultralytics (its default sort also decides the order of exact ties)
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, n_targets = np.unique(np.asarray(target_cls).astype(np.int64), return_counts=True)
    grid = np.linspace(0, 1, 1000)
    ap = np.zeros((len(classes), tp.shape[1]))
    p_curve, r_curve = np.zeros((len(classes), 1000)), np.zeros((len(classes), 1000))
    for ci, c in enumerate(classes):
        mine = pred_cls == c
        if not mine.any():
            continue
        tpc = tp[mine].cumsum(0)
        fpc = (~tp[mine]).cumsum(0)
        recall = tpc / (n_targets[ci] + eps)
        precision = tpc / (tpc + fpc)
        # Curves against confidence; np.interp needs increasing x, so both axes are negated.
        r_curve[ci] = np.interp(-grid, -conf[mine], recall[:, 0], left=0)
        p_curve[ci] = np.interp(-grid, -conf[mine], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    if not len(classes):
        return PRResult(classes, np.zeros(0), np.zeros(0), np.zeros(0), ap, 0.0)
    i = int(smooth(f1_curve.mean(0), 0.1).argmax())
    return PRResult(classes, p_curve[:, i], r_curve[:, i], f1_curve[:, i], ap, float(grid[i]))


def precision_recall(images: Sequence[EvalImage]) -> tuple[PRResult, dict]:
    """Ultralytics' P and R over `images` (crowd ground truth left out, as Ultralytics' COCO labels
    do), plus the statistics: instances and images per class."""
    tps, confs, pred_classes, target_classes = [], [], [], []
    images_per_class: dict[int, int] = {}
    for image in images:
        keep = ~image.gt_iscrowd
        gt_boxes, gt_classes = image.gt_boxes[keep], image.gt_classes[keep]
        iou = box_iou(gt_boxes, image.det_boxes)
        tps.append(match_predictions(image.det_classes, gt_classes, iou))
        confs.append(image.det_scores)
        pred_classes.append(image.det_classes)
        target_classes.append(gt_classes)
        for c in np.unique(gt_classes):
            images_per_class[int(c)] = images_per_class.get(int(c), 0) + 1
    tp = np.concatenate(tps) if tps else np.zeros((0, len(IOU_THRESHOLDS)), bool)
    conf = np.concatenate(confs) if confs else np.zeros(0)
    pred_cls = np.concatenate(pred_classes) if pred_classes else np.zeros(0, np.int64)
    target_cls = np.concatenate(target_classes) if target_classes else np.zeros(0, np.int64)
    result = ap_per_class(tp, conf, pred_cls, target_cls)
    if not tp.any():  # Ultralytics leaves its metrics at zero when nothing matched
        zeros = np.zeros(len(result.classes))
        result = dataclasses.replace(result, precision=zeros, recall=zeros, f1=zeros)
    counts = dict(zip(*np.unique(target_cls, return_counts=True))) if len(target_cls) else {}
    return result, {"instances": {int(k): int(v) for k, v in counts.items()}, "images": images_per_class}


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
        ultralytics_map50=float(pr.ap[:, 0].mean()) if len(pr.ap) else 0.0,
        ultralytics_map50_95=float(pr.ap.mean()) if len(pr.ap) else 0.0,
        per_class=per_class, images=len(images), instances=int(sum(counts["instances"].values())),
        summary=coco.summary,
    )


TABLE_HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
_ROW = "%22s" + "%11i" * 2 + "%11.3g" * 4


def format_table(evaluation: Evaluation, verbose: bool = False) -> str:
    """Ultralytics' validation table: the 'all' row, and one row per class with instances if verbose."""
    s = evaluation.stats
    lines = [TABLE_HEADER, _ROW % ("all", evaluation.images, evaluation.instances, evaluation.precision,
                                   evaluation.recall, s["map50"], s["map50_95"])]
    if verbose and len(evaluation.per_class) > 0:
        for row in evaluation.per_class:
            lines.append(_ROW % (row["name"][:22], row["images"], row["instances"], row["precision"], row["recall"],
                                 row["map50"], row["map50_95"]))
    return "\n".join(lines)
