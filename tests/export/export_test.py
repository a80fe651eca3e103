"""Export (nasjax/export.py) and the exported-model runners (nasjax/exported.py).

YOLO-NAS S with deterministic random weights at 64x64, each artifact exported once per module: float32
TFLite (+ its NMS .tflite), a batch-polymorphic SavedModel with NMS inside, INT8 TFLite (both decode
tails, calibrated on generated images), float16 TFLite. Float exports must match the jitted JAX model
(boxes 1e-3 px, scores 1e-5, the same detections after NMS). Skipped without the `export` extra.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE_DIR, _load_by_path
from PIL import Image

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import nasjax  # noqa: E402
from nasjax import exported, nms, preprocessing  # noqa: E402
from nasjax import export as export_module  # noqa: E402
from nasjax.export import ExportError, export  # noqa: E402
from nasjax.predict import jit_detect  # noqa: E402

cases = _load_by_path("predict_cases", REFERENCE_DIR / "predict_cases.py")

S = 64
NMS_OPTIONS = dict(conf=0.25, iou=0.7, top_k=1024, max_det=300, multi_label=True, agnostic=False)


@pytest.fixture(scope="module")
def detector():
    return nasjax.build("yolo_nas_s", seed=0)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def calibration_dir(out_dir):
    directory = out_dir / "calibration"
    directory.mkdir()
    for i in range(6):
        Image.fromarray(cases.pattern_image(48 + 16 * i, 80 - 8 * i, i + 1)).save(directory / f"im{i}.png")
    return directory


@pytest.fixture(scope="module")
def float_tflite(detector, out_dir):
    return export(detector, "tflite", out_dir / "s_float32.tflite", imgsz=S, nms=True)


@pytest.fixture(scope="module")
def saved_model(detector, out_dir):
    return export(detector, "saved_model", out_dir / "s_saved_model", imgsz=S, nms=True)


@pytest.fixture(scope="module")
def saved_model_runner(saved_model):
    return nasjax.load(saved_model)


@pytest.fixture(scope="module")
def int8_tflite(detector, out_dir, calibration_dir):
    return export(detector, "tflite", out_dir / "s_int8.tflite", imgsz=S, int8=True, data=calibration_dir)


@pytest.fixture(scope="module")
def half_tflite(detector, out_dir):
    return export(detector, "tflite", out_dir / "s_float16.tflite", imgsz=S, half=True)


def pixels(batch: int, seed: int = 0) -> np.ndarray:
    return np.stack([cases.pattern_image(S, S, seed + i) for i in range(batch)])


def jax_detections(detector, images: np.ndarray) -> nms.Detections:
    return nms.Detections(*map(np.asarray, jit_detect(
        detector.graphdef, detector.variables, images, np.float32(NMS_OPTIONS["conf"]),
        nms.iou_compare_threshold(NMS_OPTIONS["iou"]), top_k=1024, max_det=300, multi_label=True, agnostic=False)))


def assert_same_detections(got: nms.Detections, want: nms.Detections) -> None:
    np.testing.assert_array_equal(got.count, want.count)
    assert int(np.sum(want.count)) > 0
    for i, n in enumerate(want.count):
        np.testing.assert_array_equal(got.classes[i, :n], want.classes[i, :n])
        np.testing.assert_allclose(got.scores[i, :n], want.scores[i, :n], rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.boxes[i, :n], want.boxes[i, :n], rtol=0, atol=1e-3)


# --- float parity ----------------------------------------------------------------------------------


def test_float32_tflite_matches_jax(detector, float_tflite):
    runner = nasjax.load(float_tflite)
    assert isinstance(runner, exported.TFLiteDetector) and runner.batch == 1
    images = preprocessing.to_unit_float(pixels(2))  # 2 images through the fixed batch of 1
    boxes, scores = runner(images)
    want_boxes, want_scores = map(np.asarray, detector(images))
    assert boxes.shape == want_boxes.shape == (2, 84, 4) and scores.shape == (2, 84, 80)
    np.testing.assert_allclose(boxes, want_boxes, rtol=0, atol=1e-3)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
    assert_same_detections(runner.detect_batch(pixels(2), **NMS_OPTIONS), jax_detections(detector, pixels(2)))


def test_nms_tflite_matches_host_nms(detector, float_tflite):
    host = exported.TFLiteDetector(float_tflite)
    graph = exported.TFLiteDetector(float_tflite, nms="tflite")
    assert graph.nms_model.name == "s_float32_nms.tflite"
    images = pixels(2, seed=5)
    want = host.detect_batch(images, **NMS_OPTIONS)
    got = graph.detect_batch(images, **NMS_OPTIONS)
    for a, b in zip(got, want):  # the same float32 NMS on the same inputs: bit-identical
        np.testing.assert_array_equal(a, b)
    assert_same_detections(got, jax_detections(detector, images))
    # Thresholds are inputs of the NMS graph; the other settings are baked in (else host NMS).
    got = graph.detect_batch(images, **{**NMS_OPTIONS, "conf": 0.1, "iou": 0.5})
    want = host.detect_batch(images, **{**NMS_OPTIONS, "conf": 0.1, "iou": 0.5})
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_saved_model_symbolic_batch_and_nms_inside(detector, saved_model_runner):
    runner = saved_model_runner
    assert isinstance(runner, exported.SavedModelDetector) and runner.batch is None
    images = preprocessing.to_unit_float(pixels(2, seed=2))
    outputs = runner.outputs(images)
    assert set(outputs) == {"boxes", "scores", *export_module.DETECTION_OUTPUTS}
    want_boxes, want_scores = map(np.asarray, detector(images))
    np.testing.assert_allclose(outputs["boxes"], want_boxes, rtol=0, atol=1e-3)
    np.testing.assert_allclose(outputs["scores"], want_scores, rtol=0, atol=1e-5)
    in_graph = nms.Detections(*(outputs[k] for k in export_module.DETECTION_OUTPUTS))
    assert_same_detections(in_graph, jax_detections(detector, pixels(2, seed=2)))
    # The batch is symbolic: one graph call for another batch size too.
    single = runner.outputs(images[1:])
    for k in ("boxes", "scores", *export_module.DETECTION_OUTPUTS):
        np.testing.assert_allclose(single[k], outputs[k][1:], rtol=0, atol=1e-3 if k.endswith("boxes") else 1e-5)
    assert runner._nms_in_graph(NMS_OPTIONS) and not runner._nms_in_graph({**NMS_OPTIONS, "conf": 0.3})
    # Other NMS settings than the baked ones run on the host, on the graph's boxes and scores.
    options = {**NMS_OPTIONS, "conf": 0.1, "max_det": 7}
    got = runner.detect_batch(pixels(2), **options)
    want = jit_detect(detector.graphdef, detector.variables, pixels(2), np.float32(0.1), nms.iou_compare_threshold(0.7),
                      top_k=1024, max_det=7, multi_label=True, agnostic=False)
    assert_same_detections(got, nms.Detections(*map(np.asarray, want)))


def test_predict_on_exported_models(detector, float_tflite, saved_model_runner, tmp_path):
    images = [cases.pattern_image(120, 160, 1), cases.pattern_image(90, 60, 2)]
    paths = []
    for i, image in enumerate(images):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(image).save(paths[-1])
    want = detector.predict(paths, imgsz=S, batch_size=2)
    for runner in (nasjax.load(float_tflite), saved_model_runner):
        got = runner.predict(paths, batch_size=2)  # imgsz defaults to the exported size
        assert [r.path for r in got] == [str(p) for p in paths]
        for a, b in zip(got, want):
            assert a.names == b.names and a.orig_shape == b.orig_shape and len(a) == len(b) > 0
            np.testing.assert_array_equal(a.boxes.cls, b.boxes.cls)
            np.testing.assert_allclose(a.boxes.conf, b.boxes.conf, rtol=0, atol=1e-5)
            np.testing.assert_allclose(a.boxes.xyxy, b.boxes.xyxy, rtol=0, atol=5e-3)
        assert str(got[0]).startswith("Results(im0.png")
    with pytest.raises(ValueError, match="exported for 64x64"):
        nasjax.load(float_tflite).predict(paths, imgsz=320)


# --- reduced precision -----------------------------------------------------------------------------


def test_int8_tflite(detector, float_tflite, int8_tflite, calibration_dir):
    runner = nasjax.load(int8_tflite)
    details = runner.runner.get_input_details()["images"]
    assert details["dtype"] == np.uint8 and details["quantization"] == pytest.approx((1 / 255, 0))
    assert set(runner.runner.get_output_details()) == {"reg_distri", "cls_logits"}  # the default host tail
    assert int8_tflite.stat().st_size <= 0.3 * float_tflite.stat().st_size
    info = json.loads(export_module.metadata_path(int8_tflite).read_text())
    assert info["quantization"] == "int8" and info["int8_tail"] == "host"
    assert info["calibration"] == {"source": str(calibration_dir), "images": 6}
    images = preprocessing.to_unit_float(pixels(2, seed=7))
    boxes, scores = runner(images)
    want_boxes, want_scores = map(np.asarray, detector(images))
    assert boxes.shape == want_boxes.shape and scores.shape == want_scores.shape
    # Loose bounds (random weights on generated images); real-image figures are in the README.
    assert np.abs(scores - want_scores).max() < 0.05
    assert np.abs(boxes - want_boxes).mean() < 2.0
    results = runner.predict([cases.pattern_image(100, 80, 3)], conf=0.2)
    assert len(results) == 1 and results[0].boxes.xyxy.dtype == np.float32


def test_int8_graph_tail(detector, out_dir, calibration_dir):
    path = export(detector, "tflite", out_dir / "s_int8_graph.tflite", imgsz=S, int8=True, data=calibration_dir,
                  calib_images=3, int8_tail="graph")
    runner = nasjax.load(path)
    assert set(runner.runner.get_output_details()) == {"boxes", "scores"}
    assert runner.metadata["calibration"]["images"] == 3
    images = preprocessing.to_unit_float(pixels(1, seed=7))
    boxes, scores = runner(images)
    want_boxes, want_scores = map(np.asarray, detector(images))
    assert np.abs(scores - want_scores).max() < 0.05 and np.abs(boxes - want_boxes).mean() < 4.0


def test_float16_tflite(detector, float_tflite, half_tflite):
    runner = nasjax.load(half_tflite)
    assert runner.quantization == "float16"
    assert half_tflite.stat().st_size < 0.6 * float_tflite.stat().st_size
    images = preprocessing.to_unit_float(pixels(1, seed=3))
    boxes, scores = runner(images)
    want_boxes, want_scores = map(np.asarray, detector(images))
    assert np.abs(scores - want_scores).max() < 1e-2 and np.abs(boxes - want_boxes).max() < 1.0


# --- metadata --------------------------------------------------------------------------------------


def test_metadata_beside_and_inside(detector, float_tflite, saved_model, tmp_path):
    info = json.loads(export_module.metadata_path(float_tflite).read_text())
    assert export_module.metadata_path(float_tflite).name == "s_float32.json"
    assert info["class_names"] == list(nasjax.predict.class_names_of(detector).values())
    assert info["imgsz"] == [S, S] and info["batch"] == 1 and info["input"]["dtype"] == "float32"
    assert info["preprocess"] == {"method": "centre_pad", "imgsz": S, "resize_longest_side": S - 4, "pad_value": 114,
                                  "interpolation": "bilinear (cv2 INTER_LINEAR)", "scale": "1/255"}
    assert info["nms_model"] == "s_float32_nms.tflite" and info["nms"]["iou"] == 0.7
    assert json.loads(export_module.read_tflite_metadata(float_tflite)) == info
    # Without the JSON beside it, the embedded copy is used.
    lone = tmp_path / "lone.tflite"
    shutil.copy(float_tflite, lone)
    runner = nasjax.load(lone)
    assert runner.class_names == info["class_names"] and runner.imgsz == (S, S)
    assert (saved_model / "nasjax.json").is_file()
    assert json.loads((saved_model / "nasjax.json").read_text())["batch"] is None
    with pytest.raises(exported.ExportedModelError, match="NMS graph"):
        nasjax.load(export_module.nms_model_path(float_tflite))


# --- bad input -------------------------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if an export gets as far as tracing or converting."""
    def fail(*args, **kwargs):
        raise AssertionError("export started work despite bad options")

    monkeypatch.setattr(export_module, "_export", fail)


@pytest.mark.parametrize("options, message", [
    (dict(format="onnx"), "unknown export format 'onnx'"),
    (dict(imgsz=100), "multiple of 32, got 100 \\(use e.g. 128\\)"),
    (dict(imgsz=0), "imgsz must be a positive integer"),
    (dict(int8=True), "INT8 export needs calibration images"),
    (dict(int8=True, data="/nonexistent/images"), "not found"),
    (dict(int8=True, half=True, data="x"), "choose one of int8 and half"),
    (dict(format="saved_model", int8=True, data="x"), "int8 applies to TFLite"),
    (dict(format="saved_model", half=True), "half applies to TFLite"),
    (dict(batch=0), "batch must be a positive integer"),
    (dict(int8_tail="device"), "unknown int8_tail"),
    (dict(nms=True, iou=1.5), "iou must be in"),
])
def test_bad_options_fail_before_any_work(detector, no_work, tmp_path, options, message):
    options = {"format": "tflite", "output": tmp_path / "m.tflite", **options}
    with pytest.raises(ExportError, match=message):
        export(detector, **options)


def test_bad_outputs(detector, no_work, tmp_path):
    with pytest.raises(ExportError, match="must end in .tflite"):
        export(detector, "tflite", tmp_path / "m.bin")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(ExportError, match="not a SavedModel directory"):
        export(detector, "saved_model", tmp_path / "notes")


def test_cli_errors_before_loading(capsys, monkeypatch):
    monkeypatch.setattr(nasjax, "load", lambda *a, **k: pytest.fail("the CLI loaded a model despite bad options"))
    for argv, message in [(["--imgsz", "100"], "multiple of 32"), (["--int8"], "needs calibration images"),
                          (["--format", "onnx"], "invalid choice")]:
        with pytest.raises(SystemExit) as e:
            export_module.main(["--random-weights", "--output", "m.tflite", *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_runner_input_errors(float_tflite, int8_tflite):
    runner = nasjax.load(float_tflite)
    with pytest.raises(ValueError, match="exported for 64x64 inputs, got 96x96"):
        runner(np.zeros((1, 96, 96, 3), np.float32))
    with pytest.raises(TypeError, match="expected float images"):
        runner(np.zeros((1, S, S, 3), np.uint8))
    with pytest.raises(ValueError, match="dtype does not apply"):
        runner.predict(cases.pattern_image(40, 40, 1), dtype=np.float16)
    with pytest.raises(TypeError, match="uint8"):
        nasjax.load(int8_tflite).detect_batch(np.zeros((1, S, S, 3), np.float32))


# --- calibration data ------------------------------------------------------------------------------


def test_calibration_sources(tmp_path, calibration_dir):
    root = tmp_path / "ds"
    for split, names in (("val", ("im0.png", "im1.png")), ("train", ("im2.png",))):
        (root / "images" / split).mkdir(parents=True)
        for name in names:
            shutil.copy(calibration_dir / name, root / "images" / split / name)
    (root / "images" / "val" / "notes.txt").write_text("not an image")
    (root / "ds.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n")
    val = [str(root / "images" / "val" / n) for n in ("im0.png", "im1.png")]
    assert export_module.calibration_files(root / "ds.yaml") == val  # a data YAML: its val images
    assert export_module.calibration_files(root) == val  # a dataset folder holding its YAML
    assert export_module.calibration_files(root / "images" / "val") == val  # a folder of images
    (root / "ds.yaml").unlink()
    assert export_module.calibration_files(root) == sorted(val + [str(root / "images" / "train" / "im2.png")])
    inputs = list(export_module.calibration_inputs(val, S, nasjax.get_config("yolo_nas_s")))
    assert len(inputs) == 2 and inputs[0].shape == (1, S, S, 3) and inputs[0].dtype == np.float32
    image = preprocessing.load_image(val[0])
    want = preprocessing.to_unit_float(preprocessing.preprocess(image, imgsz=S)[0])
    np.testing.assert_array_equal(inputs[0][0], want)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no calibration images"):
        export_module.calibration_files(tmp_path / "empty")


def test_calibration_from_shared_dataset(shared_dir):
    files = export_module.calibration_files(shared_dir / "assets" / "coco8")  # coco8.yaml's val split
    assert [Path(f).name for f in files] == ["000000000036.jpg", "000000000042.jpg", "000000000049.jpg",
                                            "000000000061.jpg"]


def test_cli_saved_model(detector, tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(nasjax, "load", lambda *a, **k: calls.append((a, k)) or detector)  # build once per module
    output = tmp_path / "cli_saved_model"
    export_module.main(["--model", "yolo_nas_s", "--random-weights", "--format", "saved_model", "--imgsz", "64",
                        "--output", str(output)])
    assert calls == [(("yolo_nas_s",), {"pretrained": False})]
    assert f"exported {output}" in capsys.readouterr().out
    info = json.loads((output / "nasjax.json").read_text())
    assert info["model_format"] == "saved_model" and info["batch"] is None and info["nms"] is None
    assert info["outputs"] == {"boxes": [None, 84, 4], "scores": [None, 84, 80]}
    assert (output / "saved_model.pb").is_file() and not list(tmp_path.glob(".*tmp"))
