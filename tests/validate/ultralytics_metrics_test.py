"""nasjax.validate.ultralytics_metrics: Ultralytics' matching, P / R and 101-point AP.

By hand (matching order, the AP sentinel, P and R at the max-F1 confidence, a brute-force transcription
of the definition), and against the installed `ultralytics` package itself: its
`DetectionValidator._process_batch` / `BaseValidator.match_predictions` and `DetMetrics` (ap_per_class,
compute_ap, smooth, Metric) on generated crowded scenes, through `evaluate()` and through `validate()`'s
metrics JSON. The real package is imported for its metrics only:

    pip install --no-deps ultralytics==8.4.190 torchvision==0.28.0 opencv-python-headless==4.14.0.94

(torchvision only for the version Ultralytics reads from its metadata at import; it is never imported.)
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO, _load_by_path
from ultralytics_cases import crowded_cases
from ultralytics_package import import_ultralytics

from nasjax.validate import ultralytics_metrics as um

NAMES = {k: f"class{k}" for k in range(8)}


@pytest.fixture(scope="module")
def ultralytics(tmp_path_factory):
    """The real package (tests/ultralytics_package.py) and the parts of it compared here."""
    ultralytics, torch = import_ultralytics(tmp_path_factory.mktemp("ultralytics_config"))
    from ultralytics.models.yolo.detect.val import DetectionValidator
    from ultralytics.utils import metrics

    return ultralytics, DetectionValidator, metrics, torch


def real_ultralytics(ultralytics, images) -> tuple[dict, list[np.ndarray], object]:
    """Ultralytics' own P, R, mAP50, mAP50-95 of `images` [(gt_boxes, gt_classes, det_boxes, det_scores,
    det_classes)], detections in descending score: what DetectionValidator.update_metrics does per image
    after NMS, then DetMetrics.process. The validator is not constructed (its __init__ needs a working
    torchvision); its iouv is set as its __init__ sets it."""
    _, DetectionValidator, metrics, torch = ultralytics
    validator = DetectionValidator.__new__(DetectionValidator)
    validator.iouv = torch.linspace(0.5, 0.95, 10)
    validator.niou = validator.iouv.numel()
    det_metrics = metrics.DetMetrics()
    tps = []
    for i, (gt_boxes, gt_classes, det_boxes, det_scores, det_classes) in enumerate(images):
        gt_cls = np.asarray(gt_classes, np.float32)  # Ultralytics' classes are float tensors
        pred = {"bboxes": torch.from_numpy(np.asarray(det_boxes, np.float64).reshape(-1, 4)),
                "conf": torch.from_numpy(np.asarray(det_scores, np.float64)),
                "cls": torch.from_numpy(np.asarray(det_classes, np.float32))}
        batch = {"bboxes": torch.from_numpy(np.asarray(gt_boxes, np.float64).reshape(-1, 4)),
                 "cls": torch.from_numpy(gt_cls)}
        tp = validator._process_batch(pred, batch)["tp"]
        tps.append(tp)
        no_pred = len(det_classes) == 0
        det_metrics.update_stats({"tp": tp, "target_cls": gt_cls, "target_img": np.unique(gt_cls),
                                  "conf": np.zeros(0) if no_pred else pred["conf"].numpy(),
                                  "pred_cls": np.zeros(0) if no_pred else pred["cls"].numpy(),
                                  "im_name": f"{i}.jpg"})
    det_metrics.process()
    mp, mr, map50, map50_95 = det_metrics.mean_results()
    return ({"precision": mp, "recall": mr, "ultralytics_map50": map50, "ultralytics_map50_95": map50_95}, tps,
            det_metrics)


def non_crowd(case):
    keep = ~case.gt_iscrowd
    return case.gt_boxes[keep], case.gt_classes[keep], case.det_boxes, case.det_scores, case.det_classes


# --- against the real package ------------------------------------------------------------------------


def test_follows_the_installed_release(ultralytics):
    installed = ultralytics[0].__version__
    assert installed == um.ULTRALYTICS_VERSION, (
        f"nasjax follows ultralytics {um.ULTRALYTICS_VERSION} but {installed} is installed: compare "
        "ultralytics_metrics.py with its match_predictions / ap_per_class / compute_ap, then update "
        "ULTRALYTICS_VERSION")


def test_iou_thresholds_are_ultralytics(ultralytics):
    torch = ultralytics[3]
    assert um.IOU_THRESHOLDS.dtype == np.float32
    np.testing.assert_array_equal(um.IOU_THRESHOLDS, torch.linspace(0.5, 0.95, 10).numpy())


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_equals_ultralytics_on_crowded_scenes(ultralytics, seed):
    """~1000 objects in clusters, ~1900 detections: every matching decision, P, R and both mAPs."""
    pytest.importorskip("pycocotools", reason="evaluate() needs the 'data' extra")
    from nasjax.validate import coco_metrics as cm

    cases = crowded_cases(seed)
    images = [cm.EvalImage(i, c.height, c.width, c.gt_boxes, c.gt_classes, c.det_boxes, c.det_scores, c.det_classes,
                           gt_iscrowd=c.gt_iscrowd) for i, c in enumerate(cases)]
    ev = cm.evaluate(images, NAMES)
    expected, tps, det_metrics = real_ultralytics(ultralytics, [non_crowd(c) for c in cases])
    for case, tp in zip(cases, tps):  # the matching itself, image by image
        np.testing.assert_array_equal(um.image_stats(*non_crowd(case)).tp, tp)
    ours = {k: getattr(ev, k) for k in expected}
    assert ours == pytest.approx(expected, abs=1e-9, rel=0)
    assert [row["class"] for row in ev.per_class] == list(det_metrics.box.ap_class_index)
    np.testing.assert_allclose([row["precision"] for row in ev.per_class], det_metrics.box.p, atol=1e-9, rtol=0)
    np.testing.assert_allclose([row["recall"] for row in ev.per_class], det_metrics.box.r, atol=1e-9, rtol=0)
    assert [row["instances"] for row in ev.per_class] == [int(det_metrics.nt_per_class[c]) for c in
                                                         det_metrics.box.ap_class_index]
    assert [row["images"] for row in ev.per_class] == [int(det_metrics.nt_per_image[c]) for c in
                                                      det_metrics.box.ap_class_index]


def test_ap_per_class_equals_ultralytics(ultralytics):
    """Random TP tables with tied scores, classes without predictions and predictions without targets."""
    metrics = ultralytics[2]
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(1, 300))
        tp = rng.random((n, 10)) < np.linspace(0.8, 0.2, 10)
        conf = np.round(rng.uniform(0, 1, n), 2)  # many ties
        pred_cls, target_cls = rng.integers(0, 6, n), rng.integers(1, 7, int(rng.integers(1, 200)))
        ours = um.ap_per_class(tp, conf, pred_cls, target_cls)
        _, _, p, r, f1, ap, classes, *_ = metrics.ap_per_class(tp, conf, pred_cls, target_cls)
        np.testing.assert_array_equal(ours.classes, classes)
        for a, b in ((ours.precision, p), (ours.recall, r), (ours.f1, f1), (ours.ap, ap)):
            np.testing.assert_allclose(a, b, atol=1e-12, rtol=0)
        curve = rng.random(n).cumsum() / n
        assert um.compute_ap(curve, curve[::-1]) == pytest.approx(metrics.compute_ap(curve, curve[::-1])[0], abs=1e-15)
        np.testing.assert_array_equal(um.smooth(curve, 0.1), metrics.smooth(curve, 0.1))


def test_box_iou_equals_ultralytics(ultralytics):
    metrics, torch = ultralytics[2], ultralytics[3]
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 600, (50, 2))
    boxes = np.round(np.concatenate([xy, xy + rng.uniform(0.5, 200, (50, 2))], 1), 3)
    expected = metrics.box_iou(torch.from_numpy(boxes[:20]), torch.from_numpy(boxes)).numpy()
    np.testing.assert_array_equal(um.box_iou(boxes[:20], boxes), expected)  # bit for bit, float32


def test_validate_json_equals_ultralytics(ultralytics, tmp_path, monkeypatch):
    """validate() scoring a predictions file: the metrics JSON's precision, recall, ultralytics_map50
    and ultralytics_map50_95 are Ultralytics' on the same boxes."""
    pytest.importorskip("pycocotools", reason="validation needs the 'data' extra")
    pytest.importorskip("yaml", reason="the 'data' extra")
    import nasjax.data as data
    from nasjax.validate import validate

    helpers = _load_by_path("validate_datasets_helpers", REPO / "tests/data/datasets_test.py")
    monkeypatch.setenv(data.DATASETS_DIR_ENV, str(tmp_path / "datasets"))
    cases = crowded_cases(seed=5, n_images=40, size=(96, 128), crowd_rate=0)
    labels = {}
    for i, c in enumerate(cases):
        xyxy = c.gt_boxes / [c.width, c.height, c.width, c.height]
        labels[f"{i + 1:012d}"] = "".join(
            f"{k} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}\n"
            for k, (x1, y1, x2, y2) in zip(c.gt_classes, xyxy))
    yaml_file = helpers.make_yolo_dataset(tmp_path / "crowded", labels, size=(96, 128), names=list(NAMES.values()))
    records = [{"image_id": i + 1, "category_id": int(k) + 1, "score": float(s),
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
               for i, c in enumerate(cases) for b, s, k in zip(c.det_boxes, c.det_scores, c.det_classes)]
    (tmp_path / "predictions.json").write_text(json.dumps(records))
    validate(None, yaml_file, predictions=tmp_path / "predictions.json", save_json=tmp_path / "metrics.json",
             print_results=False, progress=False)
    written = json.loads((tmp_path / "metrics.json").read_text())

    samples = {s.key: s for chunk in data.load_dataset(yaml_file).chunks(64) for s in chunk}
    images = []
    for i, c in enumerate(cases):
        s = samples[i + 1]  # the ground truth as nasjax read it (labels → pixels); the detections as in the file
        xywh = np.array([r["bbox"] for r in records if r["image_id"] == i + 1]).reshape(-1, 4)
        images.append((s.boxes, s.classes, np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                       c.det_scores, c.det_classes))
    expected, _, _ = real_ultralytics(ultralytics, images)
    assert {k: written[k] for k in expected} == pytest.approx(expected, abs=1e-9, rel=0)
    assert 0.2 < written["ultralytics_map50_95"] < written["ultralytics_map50"] < 0.95


# --- by hand ---------------------------------------------------------------------------------------


def test_greedy_matching_in_confidence_order():
    """Two overlapping objects of one class; the first (higher-score) prediction overlaps both, the second
    overlaps the first object more than the first prediction does. Taken in order of IoU (Ultralytics
    8.3), both predictions want object 0 and the second is a false positive; taken in confidence order
    (8.4, and COCO), prediction 0 takes object 0 and prediction 1 the still free object 1."""
    gt = np.array([[0, 0, 100, 100], [40, 0, 140, 100]], float)
    preds = np.array([[5, 0, 105, 100],  # p0: IoU 0.90 with g0, 0.48 with g1
                      [1, 0, 101, 100],  # p1: IoU 0.98 with g0, 0.43 with g1 → with g1 below 0.5 it stays FP
                      [15, 0, 115, 100]], float)  # p2: IoU 0.74 with g0, 0.60 with g1
    iou = um.box_iou(gt, preds)
    assert iou[0, 0] == pytest.approx(0.905, abs=1e-3) and iou[0, 1] == pytest.approx(0.980, abs=1e-3)
    assert iou[1, 2] == pytest.approx(0.600, abs=1e-3) and iou[0, 2] == pytest.approx(0.739, abs=1e-3)
    tp = um.match_predictions(np.zeros(3, int), np.zeros(2, int), iou)
    # p0 takes g0 wherever IoU 0.905 suffices; p1 finds g0 taken and g1 too far; p2 takes g1 up to 0.60
    np.testing.assert_array_equal(tp[0], um.IOU_THRESHOLDS <= iou[0, 0])
    np.testing.assert_array_equal(tp[2], um.IOU_THRESHOLDS <= iou[1, 2])
    assert tp[2, :3].all() and not tp[2, 3:].any()
    # at 0.95, p0 does not reach g0 (0.905) but p1 (0.98) does
    np.testing.assert_array_equal(tp[1], [False] * 9 + [True])


def test_match_predictions_by_hand():
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float)
    gt_classes = np.array([0, 1, 0])
    preds = np.array([
        [0, 0, 10, 10],  # p0 exact g0                               → TP at every threshold
        [0, 0, 10, 10],  # p1 duplicate of g0                        → FP (g0 taken)
        [20, 20, 30, 32],  # p2 g1 shifted: IoU 100/120 = 0.833      → TP up to 0.80
        [20, 20, 30, 30],  # p3 exact g1 box, wrong class            → FP
        [40, 40, 50, 51],  # p4 IoU 100/110 = 0.909 with g2          → TP up to 0.90
        [40, 40, 50, 50],  # p5 exact g2, after p4                   → TP at 0.95 only, where p4 left g2 free
    ], float)
    pred_classes = np.array([0, 0, 1, 0, 0, 0])
    tp = um.match_predictions(pred_classes, gt_classes, um.box_iou(gt_boxes, preds))
    expected = np.zeros((6, 10), bool)
    expected[0] = True
    expected[2, :7] = True  # 0.50 ... 0.80
    expected[4, :9] = True
    expected[5, 9] = True
    np.testing.assert_array_equal(tp, expected)
    assert um.match_predictions(np.array([0]), np.zeros(0), np.zeros((0, 1))).shape == (1, 10)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    iou = um.box_iou(a, b)
    assert iou.dtype == np.float32
    np.testing.assert_allclose(iou, [[50 / 150, 0, 1]], atol=1e-6)


def test_compute_ap_stops_at_the_highest_recall():
    """Recall reaches 0.5 at precision 1: the AP is the area up to recall 0.5, where the precision drops
    to 0 (on the 101-point grid: 0.49 + half of the step 0.49 → 0.50), with no line drawn on to (1, 0)
    as before 8.4 (which gave 0.75)."""
    assert um.compute_ap(np.array([0.25, 0.5]), np.array([1.0, 1.0])) == pytest.approx(0.495, abs=1e-12)
    assert um.compute_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(0.995, abs=1e-12)


def image_stats_of(tp, conf, pred_cls, target_cls):
    return um.ap_per_class(np.repeat(np.asarray(tp, bool)[:, None], 10, 1), np.asarray(conf, float),
                           np.asarray(pred_cls), np.asarray(target_cls))


def test_precision_recall_by_hand_single_class():
    # 3 targets; predictions TP 0.9, TP 0.85, FP 0.2, TP 0.1. F1 per confidence: below 0.1 every
    # prediction counts, P = 3/4, R = 3/3, F1 = 6/7; anywhere above 0.1 F1 <= 0.8. The smoothed F1
    # peaks on that plateau, so P = 0.75, R = 1.
    result = image_stats_of([1, 1, 0, 1], [0.9, 0.85, 0.2, 0.1], [0, 0, 0, 0], [0, 0, 0])
    assert result.precision == pytest.approx([0.75]) and result.recall == pytest.approx([1.0])
    assert result.f1 == pytest.approx([6 / 7])
    assert result.confidence < 0.1


def test_precision_recall_by_hand_two_classes():
    # class 0 as above; class 1: 2 targets, TP 0.9, FP 0.5, TP 0.05 → below 0.05: P 2/3, R 1, F1 0.8,
    # its maximum. The mean F1 is highest below 0.05, where each class has all its predictions:
    # P = (3/4 + 2/3) / 2, R = 1.
    result = image_stats_of([1, 1, 0, 1, 1, 0, 1], [0.9, 0.85, 0.2, 0.1, 0.9, 0.5, 0.05], [0, 0, 0, 0, 1, 1, 1],
                            [0, 0, 0, 1, 1])
    np.testing.assert_allclose(result.precision, [3 / 4, 2 / 3])
    np.testing.assert_allclose(result.recall, [1, 1])
    assert result.mean_precision == pytest.approx((3 / 4 + 2 / 3) / 2) and result.mean_recall == pytest.approx(1)
    # a class with targets but no predictions counts with P = R = 0; predicted classes without targets are ignored
    result = image_stats_of([1, 0], [0.9, 0.8], [0, 5], [0, 3])
    np.testing.assert_array_equal(result.classes, [0, 3])
    np.testing.assert_allclose(result.precision, [1, 0]) and np.testing.assert_allclose(result.recall, [1, 0])


def brute_force_pr(tp, conf, pred_cls, target_cls):
    """The definition, point by point: per class and per grid confidence x, precision and recall
    linearly interpolated between the predictions' confidences (1 and 0 above the highest), mean F1
    over classes, a centred moving average of 101 points with the ends extended, its first maximum."""
    grid = [i / 999 for i in range(1000)]
    classes = sorted(set(int(c) for c in target_cls))
    curves = []
    for c in classes:
        n_targets = sum(int(t) == c for t in target_cls)
        mine = sorted([(s, t) for s, t, k in zip(conf, tp, pred_cls) if k == c], key=lambda st: -st[0])
        if not mine:
            curves.append(([0.0] * 1000, [0.0] * 1000))
            continue
        points, n_tp = [], 0
        for i, (s, t) in enumerate(mine):
            n_tp += t
            points.append((s, n_tp / (i + 1), n_tp / (n_targets + 1e-16)))

        def at(x, column, above):
            if x > points[0][0]:
                return above
            if x <= points[-1][0]:
                return points[-1][column]
            for (s0, *v0), (s1, *v1) in zip(points, points[1:]):
                if s1 <= x <= s0:
                    if s0 == s1:
                        return v1[column - 1]
                    w = (s0 - x) / (s0 - s1)
                    return v0[column - 1] * (1 - w) + v1[column - 1] * w
            raise AssertionError

        curves.append(([at(x, 1, 1.0) for x in grid], [at(x, 2, 0.0) for x in grid]))
    f1 = [[2 * p * r / (p + r + 1e-16) for p, r in zip(*curve)] for curve in curves]
    mean = [sum(col) / len(col) for col in zip(*f1)]
    padded = [mean[0]] * 50 + mean + [mean[-1]] * 50
    smoothed = [sum(padded[i: i + 101]) / 101 for i in range(1000)]
    best = max(range(1000), key=lambda i: (smoothed[i], -i))
    return [c[0][best] for c in curves], [c[1][best] for c in curves]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_precision_recall_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 40
    conf = np.round(rng.uniform(0.01, 1, n), 3)  # distinct enough; ties are resolved the same way
    conf = conf + np.arange(n) * 1e-7
    pred_cls = rng.integers(0, 3, n)
    tp = rng.random(n) < 0.5
    target_cls = rng.integers(0, 4, 25)
    result = image_stats_of(tp, conf, pred_cls, target_cls)
    p, r = brute_force_pr(tp.astype(int).tolist(), conf.tolist(), pred_cls.tolist(), target_cls.tolist())
    np.testing.assert_allclose(result.precision, p, atol=1e-9)
    np.testing.assert_allclose(result.recall, r, atol=1e-9)


def test_detections_are_matched_in_score_order():
    """image_stats puts the detections in descending score first, so the file's row order is irrelevant."""
    case = crowded_cases(seed=2, n_images=1)[0]
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(case.det_scores))
    assert len(np.unique(case.det_scores)) == len(case.det_scores)
    a = um.image_stats(*non_crowd(case))
    gt_boxes, gt_classes, det_boxes, det_scores, det_classes = non_crowd(case)
    b = um.image_stats(gt_boxes, gt_classes, det_boxes[shuffled], det_scores[shuffled], det_classes[shuffled])
    np.testing.assert_array_equal(a.tp, b.tp) and np.testing.assert_array_equal(a.conf, b.conf)
