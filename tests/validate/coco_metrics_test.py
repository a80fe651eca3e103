"""nasjax.validate.coco_metrics: the 80 -> 91 mapping, pycocotools on hand-made cases (checked against
pycocotools run directly on JSON files), evaluate() as a whole, and the table. Ultralytics' matching and
P / R: ultralytics_metrics_test.py."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pycocotools", reason="validation needs the 'data' extra: pip install -e '.[data]'")

from nasjax.validate import coco_metrics as cm
from nasjax.validate import table
from nasjax.weights.coco import COCO_CLASS_NAMES

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


def test_table():
    ev = cm.evaluate(hand_made_case(), COCO_NAMES)
    lines = table.format_table(ev, verbose=True).splitlines()
    assert lines[0].split() == ["Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"]
    assert lines[1].split()[:3] == ["all", "5", "5"]
    assert [line.split()[0] for line in lines[2:]] == ["person", "car"]
    assert lines[2].split()[1:3] == ["2", "2"]  # person: the crowd region in image 4 is no instance
    assert lines[3].split()[1:3] == ["3", "3"]
    assert len(table.format_table(ev).splitlines()) == 2
