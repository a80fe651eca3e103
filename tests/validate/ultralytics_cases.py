"""Generated detection sets for the Ultralytics comparisons: crowded scenes where the order of matching
matters (greedy by confidence vs by IoU), duplicates, wrong classes, misses, background detections and
crowd regions, with boxes and scores rounded as in a predictions file."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass
class Case:
    height: int
    width: int
    gt_boxes: np.ndarray  # (m, 4) xyxy float64
    gt_classes: np.ndarray  # (m,) int64
    gt_iscrowd: np.ndarray  # (m,) bool
    det_boxes: np.ndarray  # (n, 4) xyxy, in descending score (as NMS emits them)
    det_scores: np.ndarray  # (n,) rounded to 5 decimals
    det_classes: np.ndarray  # (n,)


def _jitter(rng, box, scale):
    w, h = box[2] - box[0], box[3] - box[1]
    d = rng.normal(0, scale, 4) * np.array([w, h, w, h])
    return box + d


def crowded_cases(seed: int = 0, n_images: int = 120, nc: int = 8, size=(480, 640), crowd_rate=0.05) -> list[Case]:
    rng = np.random.default_rng(seed)
    h, w = size
    k = w / 640  # sizes below are for 640 wide
    cases = []
    for _ in range(n_images):
        gts, classes = [], []
        for _ in range(rng.integers(0, 5)):  # clusters of heavily overlapping objects of one or two classes
            cls = rng.integers(0, nc)
            centre = rng.uniform([60 * k, 60 * k], [w - 60 * k, h - 60 * k])
            bw, bh = rng.uniform(20 * k, 120 * k, 2)
            for _ in range(rng.integers(1, 7)):
                c = centre + rng.normal(0, 0.35, 2) * [bw, bh]
                s = rng.uniform(0.7, 1.3, 2) * [bw, bh]
                gts.append([c[0] - s[0] / 2, c[1] - s[1] / 2, c[0] + s[0] / 2, c[1] + s[1] / 2])
                classes.append(cls if rng.random() < 0.8 else rng.integers(0, nc))
        for _ in range(rng.integers(0, 4)):  # isolated objects
            xy = rng.uniform([0, 0], [w - 40 * k, h - 40 * k])
            s = rng.uniform(8 * k, 200 * k, 2)
            gts.append([xy[0], xy[1], xy[0] + s[0], xy[1] + s[1]])
            classes.append(rng.integers(0, nc))
        gt = np.clip(np.array(gts, np.float64).reshape(-1, 4), 0, [w, h, w, h])
        keep = (gt[:, 2] - gt[:, 0] > 2 * k) & (gt[:, 3] - gt[:, 1] > 2 * k)
        gt, classes = np.round(gt[keep], 2), np.array(classes, np.int64)[keep]
        crowd = rng.random(len(gt)) < crowd_rate

        dets, scores, det_classes = [], [], []
        for box, cls in zip(gt, classes):
            quality = rng.uniform(0.02, 0.25)
            if rng.random() < 0.85:  # found
                dets.append(_jitter(rng, box, quality))
                scores.append(np.clip(0.95 - 2 * quality + rng.normal(0, 0.15), 0.001, 1))
                det_classes.append(cls if rng.random() < 0.93 else rng.integers(0, nc))
            for _ in range(rng.poisson(0.6)):  # duplicates and boxes spanning neighbours
                dets.append(_jitter(rng, box, rng.uniform(0.1, 0.4)))
                scores.append(rng.uniform(0.001, 0.7))
                det_classes.append(cls)
        for _ in range(rng.poisson(3)):  # background
            xy = rng.uniform([0, 0], [w - 30 * k, h - 30 * k])
            s = rng.uniform(5 * k, 150 * k, 2)
            dets.append([xy[0], xy[1], xy[0] + s[0], xy[1] + s[1]])
            scores.append(rng.uniform(0.001, 0.5))
            det_classes.append(rng.integers(0, nc))
        det = np.array(dets, np.float64).reshape(-1, 4)
        det = np.concatenate([np.minimum(det[:, :2], det[:, 2:]), np.maximum(det[:, :2], det[:, 2:])], 1)
        det = np.clip(det, 0, [w, h, w, h])
        xywh = np.round(np.concatenate([det[:, :2], det[:, 2:] - det[:, :2]], 1), 3)  # as in the file
        det = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        scores = np.round(np.array(scores, np.float64), 5)
        order = np.argsort(-scores, kind="stable")
        cases.append(Case(h, w, gt, classes, crowd, det[order], scores[order],
                          np.array(det_classes, np.int64)[order]))
    return cases
