"""nasjax.coco_metrics: the 80 -> 91 mapping, pycocotools on hand-made cases (checked against pycocotools
run directly on JSON files), Ultralytics-style matching and P / R (checked against hand computations
and a brute-force transcription of the definition), and the table."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pycocotools", reason="validation needs the 'data' extra: pip install -e '.[data]'")

from nasjax import coco_metrics as cm
from weights.coco import COCO_CLASS_NAMES

COCO_NAMES = dict(enumerate(COCO_CLASS_NAMES))


def image(image_id, gt=(), det=(), size=(100, 200), crowd=None):
    """gt: [(x1, y1, x2, y2, cls)], det: [(x1, y1, x2, y2, score, cls)]."""
    gt, det = np.array(gt, float).reshape(-1, 5), np.array(det, float).reshape(-1, 6)
    return cm.EvalImage(image_id, size[0], size[1], gt[:, :4], gt[:, 4], det[:, :4], det[:, 4], det[:, 5],
                        gt_iscrowd=crowd)


# --- category ids ------------------------------------------------------------------------------------


def test_coco80_to_91():
    ids = cm.COCO80_TO_91
    assert len(ids) == 80 and list(ids) == sorted(set(ids)) and ids[0] == 1 and ids[-1] == 90
    assert set(range(1, 91)) - set(ids) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    assert cm.category_ids_for(COCO_NAMES) == list(ids)
    assert cm.category_ids_for(COCO_CLASS_NAMES) == list(ids)
    assert cm.category_ids_for({0: "cat", 1: "dog"}) == [1, 2]  # Ultralytics' class_map for other names
    renamed = {**COCO_NAMES, 0: "human"}
    assert cm.category_ids_for(renamed) == list(range(1, 81))


def test_coco80_to_91_against_real_annotations(shared_dir):
    data = json.loads((shared_dir / "assets/tinycoco/annotations/instances_train2017.json").read_text())
    categories = sorted(data["categories"], key=lambda c: c["id"])
    assert [c["id"] for c in categories] == list(cm.COCO80_TO_91)
    assert tuple(c["name"] for c in categories) == COCO_CLASS_NAMES


# --- pycocotools -------------------------------------------------------------------------------------


def random_case(rng, n_images=6, nc=3):
    images = []
    for i in range(n_images):
        n = rng.integers(0, 6)
        xy = rng.uniform(0, 150, (n, 2))
        wh = rng.uniform(5, 60, (n, 2))
        gt = np.concatenate([xy, xy + wh, rng.integers(0, nc, (n, 1))], 1)
        images.append(image(i, gt, size=(220, 240)))
    return images


def test_ground_truth_as_predictions_gives_one():
    images = random_case(np.random.default_rng(0))
    for im in images:
        im.det_boxes, im.det_classes = im.gt_boxes.copy(), im.gt_classes.copy()
        im.det_scores = np.linspace(0.9, 0.5, len(im.gt_boxes))
    ev = cm.evaluate(images, {0: "a", 1: "b", 2: "c"})
    assert [ev.stats[k] for k in ("map50_95", "map50", "mar_100")] == pytest.approx([1, 1, 1], abs=1e-12)
    assert ev.precision == 1.0 and ev.recall == 1.0
    assert all(row["map50_95"] == pytest.approx(1) and row["precision"] == 1.0 for row in ev.per_class)
    assert ev.ultralytics_map50_95 == pytest.approx(0.995)  # its 101-point interpolation tops out at 0.995
    assert ev.instances == sum(len(im.gt_boxes) for im in images)


def hand_made_case():
    """Five images: shifted boxes, a wrong class, a duplicate, missed objects, empty images, a crowd."""
    return [
        # exact hit (person), shifted car (IoU 0.8), duplicate of the person at lower score
        image(0, gt=[(10, 10, 50, 50, 0), (60, 20, 100, 60, 2)],
              det=[(10, 10, 50, 50, 0.9, 0), (60, 20, 100, 70, 0.8, 2), (11, 10, 50, 51, 0.7, 0)]),
        # wrong class on an exact box, and one missed object
        image(1, gt=[(5, 5, 30, 40, 2), (40, 40, 90, 95, 0)], det=[(5, 5, 30, 40, 0.95, 0)]),
        # background image with a false positive
        image(2, det=[(0, 0, 20, 20, 0.6, 2)]),
        # empty: nothing at all
        image(3),
        # a crowd region that absorbs a detection, and a weak true positive far below the others
        image(4, gt=[(0, 0, 100, 100, 0), (120, 10, 160, 50, 2)], crowd=[True, False],
              det=[(10, 10, 60, 60, 0.5, 0), (121, 10, 160, 51, 0.05, 2)]),
    ]


def write_coco_files(tmp_path, images, names_ids):
    """The case as the plain JSON files pycocotools reads: ground truth by hand, results list."""
    gt = {"images": [], "annotations": [], "categories": [{"id": cid, "name": n} for n, cid in names_ids]}
    dets = []
    for im in images:
        gt["images"].append({"id": im.image_id, "width": im.width, "height": im.height})
        for box, cls, crowd in zip(im.gt_boxes, im.gt_classes, im.gt_iscrowd):
            x1, y1, x2, y2 = box.tolist()
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": im.image_id,
                                      "category_id": names_ids[int(cls)][1], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                      "area": (x2 - x1) * (y2 - y1), "iscrowd": int(crowd)})
        for box, score, cls in zip(im.det_boxes, im.det_scores, im.det_classes):
            x1, y1, x2, y2 = box.tolist()
            dets.append({"image_id": im.image_id, "category_id": names_ids[int(cls)][1],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    return tmp_path / "gt.json", tmp_path / "dt.json"


def pycocotools_directly(gt_file, dt_file):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(gt_file))
    evaluator = COCOeval(gt, gt.loadRes(str(dt_file)), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


def test_hand_made_case_matches_pycocotools_directly(tmp_path):
    images = hand_made_case()
    ev = cm.evaluate(images, COCO_NAMES)  # classes 0 (person, id 1) and 2 (car, id 3)
    names_ids = [(n, cid) for n, cid in zip(COCO_CLASS_NAMES, cm.COCO80_TO_91)]
    direct = pycocotools_directly(*write_coco_files(tmp_path, images, names_ids))
    assert [ev.stats[k] for k in cm.STAT_KEYS] == pytest.approx(list(direct.stats), abs=1e-12)
    assert 0 < ev.stats["map50_95"] < 1
    # per class: pycocotools' precision array for category id 1 and 3
    precision = direct.eval["precision"]
    for row in ev.per_class:
        k = direct.params.catIds.index(row["category_id"])
        p = precision[:, :, k, 0, 2]
        assert row["map50_95"] == pytest.approx(p[p > -1].mean())
    assert {row["name"] for row in ev.per_class} == {"person", "car"}
    assert ev.instances == 5  # the crowd region is not an instance


def test_non_coco_names_use_one_based_ids(tmp_path):
    images = hand_made_case()
    names = {0: "a", 1: "b", 2: "c"}
    ev = cm.evaluate(images, names)
    direct = pycocotools_directly(*write_coco_files(tmp_path, images, [("a", 1), ("b", 2), ("c", 3)]))
    assert [ev.stats[k] for k in cm.STAT_KEYS] == pytest.approx(list(direct.stats), abs=1e-12)
    assert [r["category_id"] for r in ev.per_class] == [1, 3]


def test_no_detections_and_no_ground_truth():
    images = hand_made_case()
    for im in images:
        im.det_boxes, im.det_scores, im.det_classes = np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    ev = cm.evaluate(images, COCO_NAMES)
    assert ev.stats["map50_95"] == 0 and ev.precision == 0 and ev.recall == 0
    ev = cm.evaluate([image(0, det=[(0, 0, 5, 5, 0.5, 1)])], COCO_NAMES)
    assert ev.stats["map50_95"] == -1  # pycocotools: undefined without ground truth
    assert ev.per_class == [] and ev.instances == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="outside"):
        cm.evaluate([image(0, gt=[(0, 0, 5, 5, 3)])], {0: "a", 1: "b"})
    with pytest.raises(ValueError, match="indexed"):
        cm.evaluate([], {1: "a"})
    with pytest.raises(ValueError, match="differ in length"):
        cm.EvalImage(0, 10, 10, np.zeros((2, 4)), np.zeros(1), np.zeros((0, 4)), np.zeros(0), np.zeros(0))


# --- matching ----------------------------------------------------------------------------------------


def test_match_predictions_by_hand():
    gt_boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], float)
    gt_classes = np.array([0, 1, 0])
    preds = np.array([
        [0, 0, 10, 10],  # p0 exact g0                               → TP at every threshold
        [0, 0, 10, 10],  # p1 duplicate of g0                        → FP (g0 taken)
        [20, 20, 30, 32],  # p2 g1 shifted: IoU 100/120 = 0.833      → TP up to 0.80
        [20, 20, 30, 30],  # p3 exact g1 box, wrong class            → FP
        [40, 40, 50, 51],  # p4 IoU 100/110 = 0.909 with g2          → TP up to 0.90
        [40, 40, 50, 50],  # p5 exact g2, listed after p4            → TP at 0.95 only
    ], float)
    # p4 keeps g2 although p5 overlaps it more: Ultralytics' second np.unique pass (one prediction per
    # target) sees the pairs in prediction order, so the earlier prediction (NMS order: the higher
    # score) wins. COCO's matching, greedy by score, decides the same way here.
    pred_classes = np.array([0, 0, 1, 0, 0, 0])
    tp = cm.match_predictions(pred_classes, gt_classes, cm.box_iou(gt_boxes, preds))
    expected = np.zeros((6, 10), bool)
    expected[0] = True
    expected[2, :7] = True  # 0.50 ... 0.80
    expected[4, :9] = True
    expected[5, 9] = True
    np.testing.assert_array_equal(tp, expected)
    assert cm.match_predictions(np.array([0]), np.zeros(0), np.zeros((0, 1))).shape == (1, 10)


def test_box_iou():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(cm.box_iou(a, b), [[50 / 150, 0, 1]], atol=1e-6)


# --- P and R -----------------------------------------------------------------------------------------


def pr(tp, conf, pred_cls, target_cls):
    tp = np.repeat(np.asarray(tp, bool)[:, None], 10, 1)
    return cm.ap_per_class(tp, np.asarray(conf, float), np.asarray(pred_cls), np.asarray(target_cls))


def test_precision_recall_by_hand_single_class():
    # 3 targets; predictions TP 0.9, TP 0.85, FP 0.2, TP 0.1. F1 per confidence: below 0.1 every
    # prediction counts, P = 3/4, R = 3/3, F1 = 6/7; anywhere above 0.1 F1 <= 0.8. The smoothed F1
    # peaks on that plateau, so P = 0.75, R = 1.
    result = pr([1, 1, 0, 1], [0.9, 0.85, 0.2, 0.1], [0, 0, 0, 0], [0, 0, 0])
    assert result.precision == pytest.approx([0.75]) and result.recall == pytest.approx([1.0])
    assert result.f1 == pytest.approx([6 / 7])
    assert result.confidence < 0.1


def test_precision_recall_by_hand_two_classes():
    # class 0 as above; class 1: 2 targets, TP 0.9, FP 0.5, TP 0.05 → below 0.05: P 2/3, R 1, F1 0.8,
    # its maximum. The mean F1 is highest below 0.05, where each class has all its predictions:
    # P = (3/4 + 2/3) / 2, R = 1.
    result = pr([1, 1, 0, 1, 1, 0, 1], [0.9, 0.85, 0.2, 0.1, 0.9, 0.5, 0.05], [0, 0, 0, 0, 1, 1, 1],
                [0, 0, 0, 1, 1])
    np.testing.assert_allclose(result.precision, [3 / 4, 2 / 3])
    np.testing.assert_allclose(result.recall, [1, 1])
    assert result.mean_precision == pytest.approx((3 / 4 + 2 / 3) / 2) and result.mean_recall == pytest.approx(1)
    # a class with targets but no predictions counts with P = R = 0; predicted classes without targets are ignored
    result = pr([1, 0], [0.9, 0.8], [0, 5], [0, 3])
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
    result = pr(tp, conf, pred_cls, target_cls)
    p, r = brute_force_pr(tp.astype(int).tolist(), conf.tolist(), pred_cls.tolist(), target_cls.tolist())
    np.testing.assert_allclose(result.precision, p, atol=1e-9)
    np.testing.assert_allclose(result.recall, r, atol=1e-9)


def test_table():
    ev = cm.evaluate(hand_made_case(), COCO_NAMES)
    lines = cm.format_table(ev, verbose=True).splitlines()
    assert lines[0].split() == ["Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"]
    assert lines[1].split()[:3] == ["all", "5", "5"]
    assert [line.split()[0] for line in lines[2:]] == ["person", "car"]
    assert lines[2].split()[1:3] == ["2", "2"]  # person: the crowd region in image 4 is no instance
    assert lines[3].split()[1:3] == ["3", "3"]
    assert len(cm.format_table(ev).splitlines()) == 2
