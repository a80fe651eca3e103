"""Ultralytics' detection P / R / mAP, in numpy: the table's P and R, and `ultralytics_map50(_95)`.

Followed: ultralytics 8.4.190 (`ULTRALYTICS_VERSION`), function by function, so that the same boxes
give the same numbers as its `DetectionValidator`:

* `box_iou`: `ultralytics.utils.metrics.box_iou`, in float32 as it is (`.float()`), slice products,
  eps 1e-7 added last.
* `match_predictions`: `BaseValidator.match_predictions` (use_scipy=False): the wrong-class IoUs are
  zeroed, then the predictions, in the order given (descending confidence, as NMS emits them), each
  claim the unclaimed target of highest IoU, separately at each of the ten thresholds
  `torch.linspace(0.5, 0.95, 10)` (float32, `IOU_THRESHOLDS`). Greedy in confidence order, as COCO
  matches; older releases (and nasjax before) took the pairs in order of IoU instead.
* `compute_ap`: its 101-point interpolated AP, with the sentinels [0, recall..., recall[-1], 1] /
  [1, precision..., 0, 0]: precision drops to 0 right after the highest recall reached, where the
  older code drew a line from that point to (1, 0).
* `smooth`, `ap_per_class`: unchanged in substance: per class, precision and recall against
  confidence on 1000 points, the mean F1 over the classes with targets smoothed by a box filter of
  fraction 0.1, P and R the per-class values at its maximum; AP per class and threshold.
* `precision_recall`: `DetectionValidator._process_batch` and `DetMetrics.process` over images: no
  special case when nothing matched (older releases set P / R to 0; the curves give 0 there too).

`tests/validate/ultralytics_metrics_test.py` checks all of it against the installed `ultralytics`.
Crowd regions are left out of the targets, as Ultralytics' COCO labels (converted without them) are.
The inputs are the detections as the predictions file holds them (boxes to 3 decimals, scores to 5, in
float64), where Ultralytics' validator holds its unrounded float32 outputs: on the same detections the
numbers agree (to 1e-9 in the tests); on a model's raw outputs the rounding can tie two scores or move a
box across a threshold. See docs/postprocessing.md#ultralytics-metrics.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

ULTRALYTICS_VERSION = "8.4.190"

# torch.linspace(0.5, 0.95, 10) in float32: the thresholds Ultralytics compares its float32 IoUs with.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10).astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """(n, m) float32 IoU of xyxy boxes a (n, 4) and b (m, 4), computed as Ultralytics' box_iou."""
    a = np.asarray(a, np.float32).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float32).reshape(-1, 4)[None, :, :]
    a1, a2, b1, b2 = a[..., :2], a[..., 2:], b[..., :2], b[..., 2:]
    wh = np.clip(np.minimum(a2, b2) - np.maximum(a1, b1), 0, None)
    wh1, wh2 = a2 - a1, b2 - b1
    inter = wh[..., 0] * wh[..., 1]
    return inter / (wh1[..., 0] * wh1[..., 1] + wh2[..., 0] * wh2[..., 1] - inter + np.float32(eps))


def match_predictions(pred_classes: np.ndarray, true_classes: np.ndarray, iou: np.ndarray,
                      thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """(n_pred, n_thresholds) bool: which predictions are true positives at each IoU threshold.

    pred_classes (n_pred,) in descending confidence; true_classes (n_true,); iou (n_true, n_pred).
    At each threshold, each prediction in turn takes the unclaimed target of the same class with
    the highest IoU (the first on ties) if that IoU reaches the threshold."""
    pred_classes, true_classes = np.asarray(pred_classes).reshape(-1), np.asarray(true_classes).reshape(-1)
    correct = np.zeros((len(pred_classes), len(thresholds)), bool)
    if not len(pred_classes) or not len(true_classes):
        return correct
    iou = np.asarray(iou) * (true_classes[:, None] == pred_classes[None, :])  # zero out the wrong classes
    columns = np.arange(len(thresholds))
    matched = np.zeros((len(true_classes), len(thresholds)), bool)  # targets claimed at each threshold
    for j in np.flatnonzero((iou >= thresholds.min()).any(0)):
        available = np.where(matched, 0, iou[:, j, None])  # IoU with each unclaimed target, per threshold
        k = available.argmax(0)
        correct[j] = available[k, columns] >= thresholds
        matched[k, columns] |= correct[j]
    return correct


def smooth(y: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Box filter over round(len * fraction * 2) // 2 + 1 points, ends padded with the end values."""
    n = round(len(y) * fraction * 2) // 2 + 1
    pad = np.ones(n // 2)
    padded = np.concatenate((pad * y[0], y, pad * y[-1]), 0)
    return np.convolve(padded, np.ones(n) / n, mode="valid")


_AP_X = np.linspace(0, 1, 101)


def compute_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """101-point interpolated AP of one PR curve (precision 0 beyond the last recall reached)."""
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    return float(np.trapezoid(np.interp(_AP_X, mrec, mpre), _AP_X))


@dataclasses.dataclass
class PRResult:
    classes: np.ndarray  # (k,) the class indices that have targets, ascending
    precision: np.ndarray  # (k,) at the max-F1 confidence of the mean F1 curve
    recall: np.ndarray  # (k,)
    f1: np.ndarray  # (k,)
    ap: np.ndarray  # (k, 10) the 101-point AP per IoU threshold
    confidence: float  # the confidence (grid point) where the smoothed mean F1 peaks

    @property
    def mean_precision(self) -> float:  # Metric.mp
        return float(self.precision.mean()) if len(self.precision) else 0.0

    @property
    def mean_recall(self) -> float:  # Metric.mr
        return float(self.recall.mean()) if len(self.recall) else 0.0

    @property
    def map50(self) -> float:  # Metric.map50
        return float(self.ap[:, 0].mean()) if len(self.ap) else 0.0

    @property
    def map50_95(self) -> float:  # Metric.map
        return float(self.ap.mean()) if len(self.ap) else 0.0


def ap_per_class(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray,
                 eps: float = 1e-16) -> PRResult:
    """tp (n, T) bool, conf (n,), pred_cls (n,), target_cls (m,) → PRResult, as Ultralytics' ap_per_class."""
    conf, pred_cls = np.asarray(conf), np.asarray(pred_cls)
    tp = np.asarray(tp, bool).reshape(len(conf), -1) if len(conf) else np.zeros((0, len(IOU_THRESHOLDS)), bool)
    order = np.argsort(-conf)  # its (unstable) default sort, which also decides the order of exact ties
    tp, conf, pred_cls = tp[order], conf[order], pred_cls[order]
    classes, n_targets = np.unique(np.asarray(target_cls), return_counts=True)
    x = np.linspace(0, 1, 1000)
    ap = np.zeros((len(classes), tp.shape[1]))
    p_curve, r_curve = np.zeros((len(classes), 1000)), np.zeros((len(classes), 1000))
    for ci, c in enumerate(classes):
        mine = pred_cls == c
        if mine.sum() == 0 or n_targets[ci] == 0:
            continue
        fpc = (1 - tp[mine]).cumsum(0)
        tpc = tp[mine].cumsum(0)
        recall = tpc / (n_targets[ci] + eps)
        r_curve[ci] = np.interp(-x, -conf[mine], recall[:, 0], left=0)  # negated: np.interp needs increasing x
        precision = tpc / (tpc + fpc)
        p_curve[ci] = np.interp(-x, -conf[mine], precision[:, 0], left=1)
        for j in range(tp.shape[1]):
            ap[ci, j] = compute_ap(recall[:, j], precision[:, j])
    f1_curve = 2 * p_curve * r_curve / (p_curve + r_curve + eps)
    i = int(smooth(f1_curve.mean(0), 0.1).argmax()) if len(classes) else 0
    return PRResult(classes.astype(np.int64), p_curve[:, i], r_curve[:, i], f1_curve[:, i], ap, float(x[i]))


@dataclasses.dataclass
class ImageStats:
    """One image's matching, as DetectionValidator.update_metrics records it."""

    tp: np.ndarray  # (n_det, T) bool
    conf: np.ndarray  # (n_det,)
    pred_cls: np.ndarray  # (n_det,)
    target_cls: np.ndarray  # (n_target,)


def image_stats(gt_boxes: np.ndarray, gt_classes: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray,
                det_classes: np.ndarray) -> ImageStats:
    """Match one image's detections (xyxy) to its targets. The detections are put in descending score
    order first (stable: equal scores keep their order), the order Ultralytics' NMS hands them over in."""
    order = np.argsort(-np.asarray(det_scores), kind="stable")
    det_boxes, det_scores, det_classes = det_boxes[order], det_scores[order], det_classes[order]
    if len(gt_classes) and len(det_classes):
        tp = match_predictions(det_classes, gt_classes, box_iou(gt_boxes, det_boxes))
    else:
        tp = np.zeros((len(det_classes), len(IOU_THRESHOLDS)), bool)
    return ImageStats(tp, det_scores, det_classes, gt_classes)


def precision_recall(stats: Sequence[ImageStats]) -> tuple[PRResult, dict]:
    """P, R and AP over the images (DetMetrics.process), and instances and images per class."""
    tp = np.concatenate([s.tp for s in stats]) if stats else np.zeros((0, len(IOU_THRESHOLDS)), bool)
    conf = np.concatenate([s.conf for s in stats]) if stats else np.zeros(0)
    pred_cls = np.concatenate([s.pred_cls for s in stats]) if stats else np.zeros(0, np.int64)
    target_cls = np.concatenate([s.target_cls for s in stats]) if stats else np.zeros(0, np.int64)
    result = ap_per_class(tp, conf, pred_cls, target_cls)
    instances = dict(zip(*np.unique(target_cls, return_counts=True))) if len(target_cls) else {}
    images: dict[int, int] = {}
    for s in stats:
        for c in np.unique(s.target_cls):
            images[int(c)] = images.get(int(c), 0) + 1
    return result, {"instances": {int(k): int(v) for k, v in instances.items()}, "images": images}
