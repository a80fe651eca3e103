"""Hostile and malformed predictions files scored by validate(predictions=...) (issue 12): values of the
wrong type (a box of strings, a float category id, a bool score), impossible boxes, absurd nesting, and
files far larger than the dataset could produce (a 10-million-entry file took 7.4 GiB and minutes). Each
ends in a DatasetError naming the file and the detection, quickly and in bounded memory; and the `nasjax
val` command prints it as one line with exit status 2. No model is built (the `scored_dataset` fixture)."""
from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("pycocotools", reason="validation needs the 'data' extra")
from nasjax import cli
from nasjax.data import DatasetError, Sample, SampleListDataset, limits
from nasjax.validate import read_predictions, validate

GOOD = {"image_id": "a", "category_id": 1, "bbox": [16, 16, 32, 32], "score": 0.9}


def run_cli(argv) -> int:
    with pytest.raises(SystemExit) as exit:
        cli.main(list(argv))
    return exit.value.code


@pytest.mark.parametrize("change, message", [
    ({"bbox": ["16", "16", "32", "32"]}, "detection #1: 'bbox' must be a finite number, got '16'"),
    ({"bbox": "16 16 32 32"}, r"detection #1: 'bbox' must be a list of 4 numbers \[x, y, width, height\]"),
    ({"bbox": [16, 16, -32, 32]}, r"detection #1: 'bbox' \[16, 16, -32, 32\] has a negative width or height"),
    ({"bbox": [16, 16, 32, -1]}, "negative width or height"),
    ({"bbox": [16, 16, 32, float("nan")]}, "detection #1: 'bbox' must be a finite number, got nan"),
    ({"category_id": 1.0}, "detection #1: 'category_id' must be an integer, got 1.0"),
    ({"category_id": "1"}, "'category_id' must be an integer, got '1'"),
    ({"category_id": 7}, "detection #1 has category_id 7, which is not one of the dataset's category ids"),
    ({"score": True}, "detection #1: 'score' must be a finite number, got True"),
    ({"score": float("inf")}, "'score' must be a finite number, got inf"),
    ({"image_id": [1]}, "detection #1: 'image_id' must be an integer or a string, got \\[1\\]"),
    ({"image_id": None}, "'image_id' must be an integer or a string, got None"),
])
def test_wrong_types_and_impossible_boxes_name_the_detection(scored_dataset, change, message):
    """Before: strings and floats were converted (float("16"), int(1.5)), negative sizes scored."""
    data, predictions = scored_dataset
    predictions.write_text(json.dumps([GOOD, {**GOOD, **change}]))
    with pytest.raises(DatasetError, match=f"p.json: .*{message}"):
        validate(None, data, predictions=predictions, print_results=False)


def test_structure_errors(scored_dataset):
    data, predictions = scored_dataset
    for text, message in [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # a RecursionError before
        (json.dumps([GOOD, [1, 2, 3]]), "entry #1 is not a detection"),
        (json.dumps([GOOD, {"x": 1}]), "entry #1 is not a detection"),
        (json.dumps([{**GOOD, "bbox": {"x": 1}}]), "detection #0: 'bbox' must be a list of 4 numbers"),
        (json.dumps({"detections": [GOOD]}), "expected a JSON list of detections"),
        ("[" + json.dumps(GOOD) + ",", "not a valid JSON predictions file"),
    ]:
        predictions.write_text(text)
        with pytest.raises(DatasetError, match=f"p.json: .*{message}"):
            validate(None, data, predictions=predictions, print_results=False)


def test_segmentation_results_are_scored_by_their_boxes(scored_dataset):
    """Ultralytics' segment predictions carry an RLE object per detection: only the box is read."""
    data, predictions = scored_dataset
    predictions.write_text(json.dumps([{**GOOD, "segmentation": {"size": [64, 64], "counts": "abc"}}]))
    assert validate(None, data, predictions=predictions, print_results=False)["map50_95"] == pytest.approx(1.0)


def test_files_past_the_bound_are_refused_quickly(scored_dataset):
    """One image: at most MAX_PREDICTIONS_PER_IMAGE detections. A file too large to hold that few is
    refused from its size (nothing parsed); one that holds more is refused as the parse passes the bound."""
    data, predictions = scored_dataset
    bound = limits.MAX_PREDICTIONS_PER_IMAGE
    predictions.write_text("[" + " " * (bound * limits.MAX_PREDICTION_BYTES) + "]")
    start = time.perf_counter()
    with pytest.raises(DatasetError, match=f"p.json: 1,024,002 bytes: too large to hold at most {bound:,} detections"):
        validate(None, data, predictions=predictions, print_results=False)
    assert time.perf_counter() - start < 2
    predictions.write_text(json.dumps([GOOD] * (bound + 1)))
    with pytest.raises(DatasetError, match=f"p.json: more than {bound:,} detections \\({bound} per image for the 1 "
                                           "images of data\\)"):
        validate(None, data, predictions=predictions, print_results=False)
    predictions.write_text(json.dumps([GOOD] * bound))  # at the bound: scored
    assert validate(None, data, predictions=predictions, print_results=False)["images"] == 1


def test_parsing_packs_detections_as_it_goes(tmp_path):
    """50,000 detections (a 4 MB file) over 50 images: the Python objects of json.loads took ~600 bytes
    per detection beside the text before (34 MB here; 7.4 GiB for 10 million); packed into arrays while
    parsing, the peak is ~85 (the text read twice, as bytes and str, and the arrays). The grouping is exact."""
    n_images, per_image = 50, 1000
    samples = [Sample(i, f"{i}.jpg", f"{i}.jpg", 100, 100, np.zeros((0, 4)), np.zeros(0, np.int64))
               for i in range(n_images)]
    dataset = SampleListDataset("many", {0: "a", 1: "b"}, [1, 2], samples)
    rng = np.random.default_rng(0)
    keys = rng.integers(0, n_images, n_images * per_image)
    boxes = np.round(rng.uniform(0, 50, (len(keys), 4)), 3)
    scores = np.round(rng.uniform(0, 1, len(keys)), 5)
    records = [{"image_id": int(k), "category_id": 1 + int(k % 2), "bbox": b, "score": s}
               for k, b, s in zip(keys.tolist(), boxes.tolist(), scores.tolist())]
    path = tmp_path / "many.json"
    path.write_text(json.dumps(records, separators=(",", ":")))
    size = path.stat().st_size
    del records
    tracemalloc.start()
    try:
        start = time.perf_counter()
        grouped = read_predictions(path, dataset)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * size + 100 * len(keys), (peak, size)
    assert elapsed < 20
    assert len(grouped) == len(np.unique(keys))
    rows = np.flatnonzero(keys == 7)
    np.testing.assert_array_equal(grouped["7"].xywh, boxes[rows])
    np.testing.assert_array_equal(grouped["7"].score, scores[rows])
    assert set(grouped["7"].cls.tolist()) == {1}


@pytest.mark.parametrize("text, message", [
    (json.dumps([{**GOOD, "bbox": ["16", 16, 32, 32]}]), "detection #0: 'bbox' must be a finite number"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("[" + " " * (limits.MAX_PREDICTIONS_PER_IMAGE * limits.MAX_PREDICTION_BYTES) + "]", "too large"),
])
def test_cli_prints_one_line_and_exits_2(scored_dataset, tmp_path, capsys, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    data, predictions = scored_dataset
    predictions.write_text(text)
    assert run_cli(["val", f"data={data}", f"predictions={predictions}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nasjax val: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "p.json" in err and message in err
