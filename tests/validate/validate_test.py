"""nasjax.validate: the CLI on coco8 (random weights, small imgsz), ground truth fed back as predictions,
a hand-made predictions file against pycocotools run directly, the detections against predict(), the
reference mode, the predictions.json round trip, TFDS (mocked), and the bad inputs, which must fail
before any inference. Model runs use imgsz 160 and batch 2 so that they share one compilation."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REFERENCE_DIR, REPO, _load_by_path
from PIL import Image

pytest.importorskip("pycocotools", reason="validation needs the 'data' extra: pip install -e '.[data]'")
pytest.importorskip("yaml", reason="the 'data' extra")
import nasjax
from nasjax import cli
import nasjax.data as datasets
from nasjax.data import DatasetError, preprocessing
from nasjax.data.coco import COCO80_TO_91
from nasjax.data.preprocessing import ImageLoadError
from nasjax.predict import predictor as predict_module
from nasjax.validate import coco_metrics, predictions
from nasjax.validate.validator import ClassCountMismatchError, validate
from nasjax.weights.coco import COCO_CLASS_NAMES

# The dataset builders of the data tests (tests/data is not on sys.path when only tests/validate runs).
_data_helpers = _load_by_path("validate_datasets_helpers", REPO / "tests/data/datasets_test.py")
make_yolo_dataset, mocked_coco, tfds_examples = (_data_helpers.make_yolo_dataset, _data_helpers.mocked_coco,
                                                 _data_helpers.tfds_examples)

cases = _load_by_path("predict_cases", REFERENCE_DIR / "predict_cases.py")
IMGSZ, BATCH = 160, 2


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATASETS_DIR_ENV, str(tmp_path / "datasets"))


@pytest.fixture(scope="module")
def detector():
    return nasjax.build("yolo_nas_s", class_names=COCO_CLASS_NAMES)


class NoInference:
    """A detector stand-in that fails the test if anything tries to run it."""

    def __init__(self, num_classes=80):
        self.num_classes = num_classes
        self.class_names = None

    def __getattr__(self, name):
        raise AssertionError(f"inference started (detector.{name})")


def coco_dataset(tmp_path, labels, size=(48, 64)):
    """A YOLO dataset with COCO's 80 names (so COCO category ids), PNG images of `size`."""
    return make_yolo_dataset(tmp_path / "data", labels, size=size, names=COCO_CLASS_NAMES)


def gt_records(ds: datasets.Dataset, score=0.9):
    return [{"image_id": s.key, "category_id": ds.category_ids[int(c)],
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": score}
            for chunk in ds.chunks(64) for s in chunk for b, c in zip(s.boxes, s.classes)]


# --- scoring files: no model -------------------------------------------------------------------------


def test_ground_truth_as_predictions_gives_one(tmp_path):
    yaml_file = coco_dataset(tmp_path, {"000000000001": "0 0.5 0.5 0.5 0.5\n2 0.2 0.3 0.1 0.2\n",
                                        "000000000002": "79 0.6 0.6 0.3 0.3\n", "000000000003": None})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt_records(datasets.load_dataset(yaml_file))))
    metrics = validate(None, yaml_file, predictions=path, print_results=False)
    # pycocotools divides by tp + fp + eps: "1" can be 1 - 1e-16
    assert metrics["map50_95"] == pytest.approx(1, abs=1e-12) and metrics["map50"] == pytest.approx(1, abs=1e-12)
    assert metrics["precision"] == 1.0 and metrics["recall"] == 1.0
    assert metrics["images"] == 3 and metrics["instances"] == 3


def test_shared_coco128_ground_truth_gives_one(shared_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(datasets.DATASETS_DIR_ENV, str(shared_dir / "assets"))
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt_records(datasets.load_dataset("coco128"))))
    metrics = validate(None, "coco128", predictions=path, verbose=True)
    assert metrics["map50_95"] == pytest.approx(1, abs=1e-12) and metrics["precision"] == metrics["recall"] == 1
    assert metrics["images"] == 128 and metrics["instances"] == 929
    out = capsys.readouterr().out
    assert "all        128        929          1          1          1          1" in out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in out


def test_hand_made_file_matches_pycocotools_directly(tmp_path):
    """Shifted boxes, a wrong class, a duplicate, a missed object, a background image and an empty one,
    scored through the YOLO dataset (labels → pixels, 80 → 91 ids) and by pycocotools on a ground
    truth written by hand in pixels."""
    yaml_file = coco_dataset(tmp_path, {
        "000000000010": "0 0.5 0.5 0.5 0.5\n2 0.25 0.25 0.25 0.25\n",  # person 16,12-48,36; car 8,6-24,18
        "000000000011": "56 0.5 0.5 1.0 1.0\n",  # chair 0,0-64,48
        "000000000012": "",  # background
        "000000000013": None,  # background, no label file
    })
    ground_truth = {
        "images": [{"id": i, "width": 64, "height": 48} for i in (10, 11, 12, 13)],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [16, 12, 32, 24], "area": 768, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [8, 6, 16, 12], "area": 192, "iscrowd": 0},
            {"id": 3, "image_id": 11, "category_id": 62, "bbox": [0, 0, 64, 48], "area": 3072, "iscrowd": 0},
        ],
        "categories": [{"id": cid, "name": n} for cid, n in zip(COCO80_TO_91, COCO_CLASS_NAMES)],
    }
    predictions = [
        {"image_id": 10, "category_id": 1, "bbox": [18, 12, 32, 24], "score": 0.9},  # shifted 2 px
        {"image_id": 10, "category_id": 1, "bbox": [16, 13, 32, 24], "score": 0.8},  # duplicate
        {"image_id": 10, "category_id": 1, "bbox": [8, 6, 16, 12], "score": 0.7},  # right box, wrong class
        {"image_id": 11, "category_id": 62, "bbox": [0, 0, 50, 40], "score": 0.6},  # IoU 0.65
        {"image_id": 12, "category_id": 3, "bbox": [1, 1, 5, 5], "score": 0.5},  # on a background image
    ]  # the car in image 10 is missed
    (tmp_path / "gt.json").write_text(json.dumps(ground_truth))
    (tmp_path / "pred.json").write_text(json.dumps(predictions))
    metrics = validate(None, yaml_file, predictions=tmp_path / "pred.json", print_results=False)

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(tmp_path / "gt.json"))
    direct = COCOeval(gt, gt.loadRes(str(tmp_path / "pred.json")), "bbox")
    direct.evaluate()
    direct.accumulate()
    direct.summarize()
    assert [metrics[k] for k in coco_metrics.STAT_KEYS] == pytest.approx(list(direct.stats), abs=1e-12)
    assert 0 < metrics["map50_95"] < metrics["map50"] < 1
    # P / R: the independent numpy implementation on the same boxes written in pixels by hand
    images = [
        coco_metrics.EvalImage(0, 48, 64, [[16, 12, 48, 36], [8, 6, 24, 18]], [0, 2],
                               [[18, 12, 50, 36], [16, 13, 48, 37], [8, 6, 24, 18]], [0.9, 0.8, 0.7], [0, 0, 0]),
        coco_metrics.EvalImage(1, 48, 64, [[0, 0, 64, 48]], [56], [[0, 0, 50, 40]], [0.6], [56]),
        coco_metrics.EvalImage(2, 48, 64, [], [], [[1, 1, 6, 6]], [0.5], [2]),
        coco_metrics.EvalImage(3, 48, 64, [], [], [], [], []),
    ]
    pr, _ = coco_metrics.precision_recall(images)
    assert metrics["precision"] == pytest.approx(pr.mean_precision) and metrics["recall"] == pytest.approx(pr.mean_recall)
    # by hand: person 1 TP (0.9) + 2 FP → at the lowest confidence P 1/3, R 1; car: nothing found; chair TP
    assert [(r["name"], r["instances"]) for r in metrics["per_class"]] == [("person", 1), ("car", 1), ("chair", 1)]


def test_predictions_file_errors(tmp_path):
    yaml_file = coco_dataset(tmp_path, {"000000000001": "0 0.5 0.5 0.5 0.5\n"})
    path = tmp_path / "p.json"
    for content, message in [
        ([{"image_id": 99, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], "not images of data"),
        ([{"image_id": 1, "category_id": 12, "bbox": [0, 0, 1, 1], "score": 0.5}], "category_id 12"),
        ([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}], "#0 is malformed"),
        ({"image_id": 1}, "JSON list"),
    ]:
        path.write_text(json.dumps(content))
        with pytest.raises(DatasetError, match=message):
            validate(None, yaml_file, predictions=path, print_results=False)


# --- bad inputs fail before inference ----------------------------------------------------------------


def test_class_count_mismatch_before_inference(tmp_path):
    yaml_file = make_yolo_dataset(tmp_path / "d", {"1": "0 0.5 0.5 0.2 0.2\n"}, names=("a", "b", "c"))
    with pytest.raises(ClassCountMismatchError, match="predicts 80 classes but dataset d has 3 \\(a, b, c\\)"):
        validate(NoInference(80), yaml_file, print_results=False)


def test_bad_dataset_errors_before_inference(tmp_path):
    yaml_file = coco_dataset(tmp_path, {"1": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5\n"})
    with pytest.raises(DatasetError, match="labels/val/1.txt:2: expected 5 values"):
        validate(NoInference(), yaml_file, print_results=False)
    (tmp_path / "data/labels/val/1.txt").write_text("80 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DatasetError, match="1.txt:1: class id 80 is outside the dataset's 80 names"):
        validate(NoInference(), yaml_file, print_results=False)
    (tmp_path / "data/labels/val/1.txt").write_text("")
    (tmp_path / "data/images/val/2.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ImageLoadError, match="images/val/2.jpg"):
        validate(NoInference(), yaml_file, print_results=False)
    (tmp_path / "data/data.yaml").write_text("path: .\ntrain: images/val\nnames: [a]\n")
    with pytest.raises(DatasetError, match="'val:' missing"):
        validate(NoInference(), tmp_path / "data/data.yaml", print_results=False)
    with pytest.raises(ValueError, match="reference mode fixes .* drop conf=0.5"):
        validate(NoInference(), yaml_file, reference_mode=True, conf=0.5)


def test_cli_errors(tmp_path, capsys):
    yaml_file = coco_dataset(tmp_path, {"1": "0 0.5 x 0.2 0.2\n"})
    (tmp_path / "p.json").write_text("[]")
    with pytest.raises(SystemExit) as info:
        cli.main(["val", "--data", str(yaml_file), "--predictions", str(tmp_path / "p.json")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nasjax val: error: ") and "labels/val/1.txt:1: 'x' is not a number" in err
    assert err.count("\n") == 1
    with pytest.raises(SystemExit):
        cli.main(["val", "--data", "nonexistent.yaml", "--predictions", str(tmp_path / "p.json")])
    assert "not found" in capsys.readouterr().err
    # offline: the dataset is checked before any weights are fetched, and the message says what to do
    (tmp_path / "off.yaml").write_text("path: off\nval: images/val\nnames: [a]\ndownload: https://example.invalid/off.zip\n")
    with pytest.raises(SystemExit):
        cli.main(["val", "--data", str(tmp_path / "off.yaml"), "--no-download"])
    err = capsys.readouterr().err
    assert "Download https://example.invalid/off.zip" in err and str(tmp_path / "datasets") in err


# --- with a model ------------------------------------------------------------------------------------


def synthetic_dataset(tmp_path):
    """Three pattern images of different sizes with a few labels, one without."""
    root = tmp_path / "syn"
    labels = {"000000000001": "0 0.5 0.5 0.4 0.6\n16 0.3 0.3 0.2 0.2\n", "000000000002": "2 0.5 0.4 0.6 0.5\n",
              "000000000003": None}
    yaml_file = make_yolo_dataset(root, labels, names=COCO_CLASS_NAMES)
    for (stem, _), (h, w) in zip(labels.items(), [(120, 160), (90, 60), (100, 160)]):
        Image.fromarray(cases.pattern_image(h, w, int(stem))).save(root / f"images/val/{stem}.png")
    return yaml_file


def test_detections_are_predicts(detector, tmp_path, monkeypatch):
    yaml_file = synthetic_dataset(tmp_path)
    calls = []
    original = predict_module.predict

    def recording_predict(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(predict_module, "predict", recording_predict)
    saved = tmp_path / "pred.json"
    metrics = validate(detector, yaml_file, imgsz=IMGSZ, batch_size=BATCH, save_predictions=saved,
                       save_json=tmp_path / "m.json", print_results=False)
    assert calls[-1]["stream"] is True  # predictions stream to the host
    records = json.loads(saved.read_text())
    assert {r["image_id"] for r in records} <= {1, 2, 3} and records
    # the same detections as predict() with validation's settings, in COCO form
    paths = sorted((tmp_path / "syn/images/val").iterdir())
    results = original(detector, [str(p) for p in paths], imgsz=IMGSZ, batch_size=BATCH, conf=0.001, iou=0.7,
                       max_det=300, nms_top_k=1000)
    expected = []
    for path, r in zip(paths, results):
        for (x1, y1, x2, y2), s, c in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist()):
            expected.append([int(path.stem), COCO80_TO_91[c], x1, y1, x2 - x1, y2 - y1, s])
    ours = [[r["image_id"], r["category_id"], *r["bbox"], r["score"]] for r in records]
    np.testing.assert_allclose(np.array(ours), np.array(expected), atol=2e-3)
    written = json.loads((tmp_path / "m.json").read_text())
    assert {"map50_95", "map50", "precision", "recall", "speed", "per_class"} <= set(written)
    assert set(metrics["speed"]) == {"preprocess_ms", "inference_ms", "postprocess_ms"}
    assert all(v > 0 for v in metrics["speed"].values())
    # scoring the saved file reproduces every number
    rescored = validate(None, yaml_file, predictions=saved, print_results=False)
    for key in (*coco_metrics.STAT_KEYS, "precision", "recall", "ultralytics_map50_95"):
        assert rescored[key] == metrics[key], key


def test_reference_mode(detector, tmp_path):
    yaml_file = synthetic_dataset(tmp_path)
    saved = tmp_path / "ref.json"
    metrics = validate(detector, yaml_file, imgsz=IMGSZ, batch_size=BATCH, reference_mode=True,
                       save_predictions=saved, print_results=False)
    assert metrics["settings"]["conf"] == 0.01 and metrics["settings"]["resize_rounding"] == "trunc"
    paths = sorted((tmp_path / "syn/images/val").iterdir())
    results = predict_module.predict(detector, [str(p) for p in paths], imgsz=IMGSZ, batch_size=BATCH, conf=0.01,
                                     nms_top_k=1000, resize_rounding="trunc")
    assert len(json.loads(saved.read_text())) == sum(len(r) for r in results)
    assert all(r["score"] > 0.01 for r in json.loads(saved.read_text()))


def test_tfds_mocked_end_to_end(detector, tmp_path):
    examples = tfds_examples()
    with mocked_coco(examples):
        ds = datasets.load_dataset("tfds:coco/2017", process_index=0, process_count=1)
        (tmp_path / "gt.json").write_text(json.dumps(gt_records(ds)))
        metrics = validate(None, ds, predictions=tmp_path / "gt.json", print_results=False)
        assert metrics["map50_95"] == pytest.approx(1, abs=1e-12) and metrics["instances"] == 1  # the crowd box is not an instance
        metrics = validate(detector, ds, imgsz=IMGSZ, batch_size=BATCH, print_results=False,
                           save_predictions=tmp_path / "p.json")
    assert metrics["images"] == 2 and {r["image_id"] for r in json.loads((tmp_path / "p.json").read_text())} <= {7, 11}


def test_cli_on_shared_coco8(shared_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(datasets.DATASETS_DIR_ENV, str(shared_dir / "assets"))
    out_json, pred_json = tmp_path / "metrics.json", tmp_path / "predictions.json"
    with pytest.raises(SystemExit) as exit:
        cli.main(["val", "--data", "coco8", "--model", "yolo_nas_s", "--random-weights", "--imgsz", str(IMGSZ),
                  "--batch", str(BATCH), "--verbose", "--json", str(out_json), "--save-predictions", str(pred_json),
                  f"save_dir={tmp_path / 'run'}"])
    assert exit.value.code == 0
    captured = capsys.readouterr()
    assert "random weights" in captured.err
    lines = captured.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["Class", "Images"])
    assert lines[header].split() == ["Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"]
    assert lines[header + 1].split()[:3] == ["all", "4", "17"]
    assert lines[header + 2].split()[:3] == ["person", "3", "10"]  # --verbose: per class
    assert any(line.startswith("Speed: ") and "per image at shape (2, 160, 160, 3)" in line for line in lines)
    metrics = json.loads(out_json.read_text())
    assert {"map50_95", "map50", "precision", "recall", "speed", "model", "data"} <= set(metrics)
    assert metrics["random_weights"] is True and metrics["images"] == 4
    records = json.loads(pred_json.read_text())
    assert records and {r["image_id"] for r in records} <= {36, 42, 49, 61} and len(records[0]["bbox"]) == 4
    assert {r["category_id"] for r in records} <= set(COCO80_TO_91)
    # --predictions: no model, same numbers
    with pytest.raises(SystemExit):
        cli.main(["val", "data=coco8", f"predictions={pred_json}", f"json={tmp_path / 'again.json'}",
                  f"save_dir={tmp_path / 'run2'}"])
    again = json.loads((tmp_path / "again.json").read_text())
    assert [again[k] for k in coco_metrics.STAT_KEYS] == [metrics[k] for k in coco_metrics.STAT_KEYS]


# --- the small additions to preprocessing and predict ------------------------------------------------


def test_resize_rounding():
    assert preprocessing.make_transform((500, 640)).resized_shape == (497, 636)
    assert preprocessing.make_transform((500, 640), rounding="trunc").resized_shape == (496, 636)
    assert preprocessing.make_transform((480, 640), rounding="trunc").resized_shape == (477, 636)
    assert preprocessing.make_transform((500, 640), "letterbox", rounding="trunc").resized_shape == (500, 640)
    with pytest.raises(ValueError, match="rounding"):
        preprocessing.make_transform((10, 10), rounding="floor")


def test_predict_timings(detector):
    timings = {}
    image = cases.pattern_image(90, 60, 2)
    results = predict_module.predict(detector, [image, image], imgsz=IMGSZ, batch_size=BATCH, timings=timings,
                                     resize_rounding="trunc")
    assert len(results) == 2 and timings["images"] == 2
    assert all(timings[k] > 0 for k in ("preprocess", "inference", "postprocess"))


def test_duplicate_stems(tmp_path):
    """Two images named 1.png in different folders: scored correctly, but no predictions file."""
    root = tmp_path / "dup"
    for sub, line in (("a", "0 0.5 0.5 0.5 0.5\n"), ("b", "1 0.25 0.25 0.2 0.2\n")):
        (root / f"images/val/{sub}").mkdir(parents=True)
        (root / f"labels/val/{sub}").mkdir(parents=True)
        Image.new("RGB", (40, 30)).save(root / f"images/val/{sub}/1.png")
        (root / f"labels/val/{sub}/1.txt").write_text(line)
    (root / "dup.yaml").write_text("val: images/val\nnames: [a, b]\n")
    ds = datasets.load_dataset(root / "dup.yaml")
    assert [s.key for s in ds.samples] == [1, 1]
    collector = predictions.Collector(ds)
    for s in ds.samples:  # each image gets its own ground truth back as its detection
        xywh = np.concatenate([s.boxes[:, :2], s.boxes[:, 2:] - s.boxes[:, :2]], 1)
        collector.add(s, xywh, np.array([0.9]), s.classes)
    for i, im in enumerate(collector.images):
        im.image_id = i
    ev = coco_metrics.evaluate(collector.images, ds.names, ds.category_ids,
                               records=predictions.internal_records(collector.images, collector.records))
    assert ev.stats["map50_95"] == pytest.approx(1, abs=1e-12)
    (tmp_path / "p.json").write_text("[]")
    with pytest.raises(DatasetError, match="share the image_id '1'"):
        validate(None, ds, predictions=tmp_path / "p.json", print_results=False)
