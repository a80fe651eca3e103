"""nasjax.nms against numpy transcriptions of torchvision's CPU NMS and super-gradients' callback.

The references below mirror, operation by operation in float32:
  * torchvision's CPU `nms` kernel (as ../shared/oracle/tv_cpu_shim.py does): stable descending sort
    by score, greedy, suppress when IoU > threshold (float64 comparison), areas without +1;
  * `torchvision.ops.batched_nms`: coordinate trick up to 4000 coordinates, per class above;
  * `PPYoloEPostPredictionCallback.forward`: confidence filter, top-k, NMS, max_predictions,
with `torch.topk` replaced by a stable top-k (torch's is not stable; see nasjax/nms.py).
Reference outputs of the real callback, on inputs without score ties, are in
tests/reference/predict_reference.npz (made by tests/reference/make_predict_reference.py).
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import REFERENCE_DIR

from nasjax.model import nms

F32 = np.float32


def torchvision_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    n = boxes.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = (boxes[:, k].astype(F32) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2, areas = x1[order], y1[order], x2[order], y2[order], areas[order]
    suppressed = np.zeros(n, bool)
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(n):
            if suppressed[i]:
                continue
            keep.append(i)
            xx1 = np.maximum(x1[i], x1[i + 1:])
            yy1 = np.maximum(y1[i], y1[i + 1:])
            xx2 = np.minimum(x2[i], x2[i + 1:])
            yy2 = np.minimum(y2[i], y2[i + 1:])
            inter = np.maximum(F32(0), xx2 - xx1) * np.maximum(F32(0), yy2 - yy1)
            ovr = inter / (areas[i] + areas[i + 1:] - inter)
            suppressed[i + 1:] |= ovr.astype(np.float64) > iou_threshold
    return order[np.asarray(keep, np.int64)]


def batched_nms(boxes, scores, classes, iou_threshold):
    if boxes.size <= nms.COORDINATE_TRICK_MAX_NUMEL:
        if boxes.size == 0:
            return np.zeros(0, np.int64)
        offsets = classes.astype(F32) * (boxes.max() + F32(1))
        return torchvision_nms(boxes + offsets[:, None], scores, iou_threshold)
    keep_mask = np.zeros(len(scores), bool)
    for c in np.unique(classes):
        members = np.nonzero(classes == c)[0]
        keep_mask[members[torchvision_nms(boxes[members], scores[members], iou_threshold)]] = True
    kept = np.nonzero(keep_mask)[0]
    return kept[np.argsort(-scores[kept], kind="stable")]


def callback(boxes, scores, conf, iou, top_k=1024, max_det=300, multi_label=True, agnostic=False):
    """PPYoloEPostPredictionCallback for one image → (boxes, scores, classes)."""
    conf = F32(conf)
    if multi_label:
        i, j = np.nonzero(scores > conf)
        cand_boxes, cand_scores, cand_classes = boxes[i], scores[i, j], j
    else:
        cand_classes = scores.argmax(1)
        cand_scores = scores.max(1)
        mask = cand_scores >= conf
        cand_boxes, cand_scores, cand_classes = boxes[mask], cand_scores[mask], cand_classes[mask]
    if len(cand_scores) > top_k:
        top = np.argsort(-cand_scores, kind="stable")[:top_k]
        cand_boxes, cand_scores, cand_classes = cand_boxes[top], cand_scores[top], cand_classes[top]
    if agnostic:
        keep = torchvision_nms(cand_boxes, cand_scores, iou)
    else:
        keep = batched_nms(cand_boxes, cand_scores, cand_classes, iou)
    keep = keep[:max_det]
    return cand_boxes[keep], cand_scores[keep], cand_classes[keep]


jit_nms = jax.jit(nms.non_max_suppression, static_argnames=("top_k", "max_det", "multi_label", "agnostic"))


def run_nms(boxes, scores, conf, iou, **kwargs):
    """nasjax.nms on a batch → per image (boxes, scores, classes) as numpy."""
    out = jit_nms(boxes, scores, F32(conf), nms.iou_compare_threshold(iou), **kwargs)
    out = jax.tree.map(np.asarray, out)
    return [
        (out.boxes[b, : out.count[b]], out.scores[b, : out.count[b]], out.classes[b, : out.count[b]])
        for b in range(boxes.shape[0])
    ]


def assert_same(ours, ref, what=""):
    boxes, scores, classes = ours
    rb, rs, rc = ref
    assert len(scores) == len(rs), f"{what}: {len(scores)} detections, reference {len(rs)}"
    np.testing.assert_array_equal(classes, rc, err_msg=what)
    np.testing.assert_array_equal(scores, rs, err_msg=what)
    np.testing.assert_array_equal(boxes, rb, err_msg=what)


def random_case(rng, n, num_classes, *, score_levels=None, negative=False, degenerate=False, duplicates=False):
    """Boxes (n, 4) and scores (n, C) with the hard cases switched on."""
    centre = rng.uniform(-60 if negative else 0, 320, (n, 2))
    size = rng.exponential(40, (n, 2)) + 1
    boxes = np.concatenate([centre - size / 2, centre + size / 2], 1).astype(F32)
    if duplicates:
        src = rng.integers(0, n, n // 4)
        boxes[rng.integers(0, n, n // 4)] = boxes[src]
    if degenerate:
        rows = rng.integers(0, n, n // 8)
        boxes[rows, 2] = boxes[rows, 0]  # zero width
        rows = rng.integers(0, n, n // 8)
        boxes[rows, 2:] = boxes[rows, :2] - 3  # x2 < x1, y2 < y1
        rows = rng.integers(0, n, n // 16)
        boxes[rows] = boxes[rows, :1]  # a point
    if score_levels:
        scores = rng.integers(1, score_levels + 1, (n, num_classes)).astype(F32) / F32(score_levels)
    else:
        scores = rng.random((n, num_classes), dtype=F32)
    return boxes, scores


CASES = [
    dict(n=300, num_classes=3, score_levels=4, duplicates=True, degenerate=True),
    dict(n=300, num_classes=1, score_levels=3, duplicates=True, negative=True),
    dict(n=400, num_classes=5, negative=True),
    dict(n=2000, num_classes=2, score_levels=50, duplicates=True, degenerate=True, negative=True),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("multi_label,agnostic", [(True, False), (False, False), (True, True)])
def test_matches_reference_callback(case, multi_label, agnostic):
    rng = np.random.default_rng(case)
    batch = [random_case(rng, **CASES[case]) for _ in range(2)]
    boxes = np.stack([b for b, _ in batch])
    scores = np.stack([s for _, s in batch])
    for conf, iou, top_k in [(0.2, 0.5, 1024), (0.5, 0.3, 100), (0.0, 0.7, 1024)]:
        kwargs = dict(top_k=top_k, max_det=300, multi_label=multi_label, agnostic=agnostic)
        ours = run_nms(boxes, scores, conf, iou, **kwargs)
        for b in range(len(batch)):
            ref = callback(boxes[b], scores[b], conf, iou, **kwargs)
            assert_same(ours[b], ref, f"case {case} image {b} conf {conf} iou {iou} top_k {top_k}")


def test_both_batched_nms_paths_and_cross_class_suppression():
    """≤ 1000 candidates: the coordinate trick, where a class-0 box reaching right of the offset can
    overlap a class-1 box with negative coordinates; > 1000: plain per-class NMS."""
    big = np.array([-50, 0, 700, 100], F32)  # max coordinate 700 → class 1 offset 701
    small = np.array([-49.5, -650, 0, 0], F32)  # + 701 → [651.5, 51, 701, 701], overlaps `big`
    boxes = np.stack([big, small, np.array([0, 200, 10, 210], F32)])[None]
    scores = np.array([[[0.9, 0.0], [0.0, 0.8], [0.7, 0.0]]], F32)
    (b, s, c), = run_nms(boxes, scores, 0.1, 0.0)
    ref = callback(boxes[0], scores[0], 0.1, 0.0)
    assert_same((b, s, c), ref)
    assert list(c) == [0, 0]  # the class-1 box was suppressed by the class-0 box (intersection > 0)

    rng = np.random.default_rng(7)
    boxes, scores = random_case(rng, 1500, 2, negative=True)
    for conf in (0.05, 0.5):  # ~2850 candidates → top 1024 → per class; ~1500 → top 1024
        ours, = run_nms(boxes[None], scores[None], conf, 0.5)
        assert_same(ours, callback(boxes, scores, conf, 0.5), f"conf {conf}")


def test_ties_keep_index_order():
    """Equal scores on identical boxes: the earlier flat index (anchor * C + class) survives."""
    boxes = np.tile(np.array([[10, 10, 50, 50]], F32), (6, 1))
    scores = np.full((6, 2), 0.5, F32)
    (b, s, c), = run_nms(boxes[None], scores[None], 0.1, 0.5)
    assert list(c) == [0, 1] and len(s) == 2
    (b, s, c), = run_nms(boxes[None], scores[None], 0.1, 0.5, agnostic=True)
    assert list(c) == [0]


def test_thresholds_at_exact_iou_values():
    """200 isolated pairs of overlapping boxes; the threshold is set to each pair's float32 IoU (as
    torch computes it) and to the float32 just below: a single ulp of difference in our IoU flips that
    pair's decision. (An IoU computed with fused multiply-adds, as XLA emits for plain elementwise
    code, differs in the last bit for about a quarter of these pairs.)"""
    rng = np.random.default_rng(11)
    pairs = 200
    corner = np.stack(np.meshgrid(np.arange(20), np.arange(10)), -1).reshape(-1, 2) * 400.0
    centre = corner + rng.uniform(50, 150, (pairs, 2))
    size = rng.uniform(30, 120, (pairs, 2))
    first = np.concatenate([centre - size / 2, centre + size / 2], 1)
    boxes = np.concatenate([first, first + rng.normal(0, 8, (pairs, 4))]).astype(F32)
    scores = np.concatenate([np.full(pairs, 0.9), np.full(pairs, 0.8)]).astype(F32)[:, None]
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    inter = np.maximum(F32(0), np.minimum(x2[:pairs], x2[pairs:]) - np.maximum(x1[:pairs], x1[pairs:])) * np.maximum(
        F32(0), np.minimum(y2[:pairs], y2[pairs:]) - np.maximum(y1[:pairs], y1[pairs:])
    )
    iou = inter / (areas[:pairs] + areas[pairs:] - inter)
    assert (iou > 0).sum() > 190
    for value in iou[iou > 0]:
        for thr in (float(value), float(np.nextafter(value, F32(0)))):
            ours, = run_nms(boxes[None], scores[None], 0.0, thr)
            assert_same(ours, callback(boxes, scores, 0.0, thr), f"threshold {thr!r}")


def test_iou_compare_threshold():
    for thr in (0.7, 0.5, 0.1, 1 / 3, 0.0, 1.0):
        t = nms.iou_compare_threshold(thr)
        assert float(t) <= thr and float(np.nextafter(t, F32(2))) > thr


def test_empty_and_padding():
    boxes = np.zeros((2, 50, 4), F32)
    scores = np.zeros((2, 50, 3), F32)
    scores[1, 7, 2] = 0.9
    boxes[1, 7] = [1, 2, 3, 4]
    out = nms.non_max_suppression(boxes, scores, 0.25, 0.7, top_k=1024, max_det=10)
    assert out.boxes.shape == (2, 10, 4) and out.scores.shape == (2, 10) and out.classes.shape == (2, 10)
    assert list(np.asarray(out.count)) == [0, 1]
    assert np.asarray(out.classes)[1, 0] == 2 and np.asarray(out.scores)[1, 0] == F32(0.9)
    np.testing.assert_array_equal(np.asarray(out.boxes)[1, 0], [1, 2, 3, 4])
    assert not np.asarray(out.boxes)[:, 1:].any() and not np.asarray(out.scores)[0].any()


def test_max_det_truncates_in_score_order():
    rng = np.random.default_rng(5)
    boxes, scores = random_case(rng, 500, 4)
    ours, = run_nms(boxes[None], scores[None], 0.0, 0.9, max_det=7)
    assert_same(ours, callback(boxes, scores, 0.0, 0.9, max_det=7))
    assert len(ours[1]) == 7 and np.all(np.diff(ours[1]) <= 0)


def test_real_callback_reference():
    """Outputs of super-gradients' own PPYoloEPostPredictionCallback (torchvision batched_nms through
    the CPU shim) on synthetic inputs with distinct scores: both batched_nms paths, single-label,
    agnostic."""
    path = REFERENCE_DIR / "predict_reference.npz"
    with np.load(path) as data:
        ref = dict(data)
    names = sorted({k.split("/")[1] for k in ref if k.startswith("callback/")})
    assert names
    for name in names:
        p = f"callback/{name}/"
        params = dict(zip(["conf", "iou", "top_k", "max_det", "multi_label", "agnostic"], ref[p + "params"].tolist()))
        kwargs = dict(top_k=int(params["top_k"]), max_det=int(params["max_det"]),
                      multi_label=bool(params["multi_label"]), agnostic=bool(params["agnostic"]))
        ours, = run_nms(ref[p + "boxes"][None], ref[p + "scores"][None], params["conf"], params["iou"], **kwargs)
        expected = ref[p + "out"]
        assert_same(ours, (expected[:, :4], expected[:, 4], expected[:, 5].astype(np.int64)), name)
        assert_same(ours, callback(ref[p + "boxes"], ref[p + "scores"], params["conf"], params["iou"], **kwargs), name)
