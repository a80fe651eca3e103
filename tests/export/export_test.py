"""Export (nasjax.export: options, versions, graph, tflite, metadata, exporter) and the exported-model
runners (nasjax.export.runners).

YOLO-NAS S with deterministic random weights at 64x64, each artifact exported once per module: float32
TFLite (+ its NMS .tflite), a batch-polymorphic SavedModel with NMS inside, INT8 TFLite (both decode
tails, calibrated on generated images), float16 TFLite. Float exports must match the jitted JAX model
(boxes 1e-3 px, scores 1e-5, the same detections after NMS). The version checks run on monkeypatched
version strings (docs/export.md#versions). Skipped without the `export` extra.
"""
from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE_DIR, _load_by_path
from export_fixtures import calibration_dir, detector, out_dir  # noqa: F401 (fixtures)
from PIL import Image

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import jax  # noqa: E402

import nasjax  # noqa: E402
from nasjax import cli  # noqa: E402
from nasjax.weights.registry import Preprocessing  # noqa: E402
from nasjax.data import preprocessing  # noqa: E402
from nasjax.export import exporter as export_module  # noqa: E402
from nasjax.export import graph, metadata, tflite, versions  # noqa: E402
from nasjax.export import runners as exported  # noqa: E402
from nasjax.export.exporter import export  # noqa: E402
from nasjax.export.options import ExportDependencyError, ExportError, calibration_files  # noqa: E402
from nasjax.export.versions import ExportVersionWarning  # noqa: E402
from nasjax.model import nms  # noqa: E402
from nasjax.model.core import jit_detect  # noqa: E402
from nasjax.model.nms import NMSSettings  # noqa: E402

cases = _load_by_path("predict_cases", REFERENCE_DIR / "predict_cases.py")

S = 64
NMS_OPTIONS = dict(conf=0.25, iou=0.7, top_k=1024, max_det=300, multi_label=True, agnostic=False)


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
    assert_same_detections(runner.detect_batch(pixels(2), NMSSettings(**NMS_OPTIONS)), jax_detections(detector, pixels(2)))


def test_nms_tflite_matches_host_nms(detector, float_tflite):
    host = exported.TFLiteDetector(float_tflite)
    graph = exported.TFLiteDetector(float_tflite, nms="tflite")
    assert graph.nms_model.name == "s_float32_nms.tflite"
    images = pixels(2, seed=5)
    want = host.detect_batch(images, NMSSettings(**NMS_OPTIONS))
    got = graph.detect_batch(images, NMSSettings(**NMS_OPTIONS))
    for a, b in zip(got, want):  # the same float32 NMS on the same inputs: bit-identical
        np.testing.assert_array_equal(a, b)
    assert_same_detections(got, jax_detections(detector, images))
    # Thresholds are inputs of the NMS graph; the other settings are baked in (else host NMS).
    got = graph.detect_batch(images, NMSSettings(**{**NMS_OPTIONS, "conf": 0.1, "iou": 0.5}))
    want = host.detect_batch(images, NMSSettings(**{**NMS_OPTIONS, "conf": 0.1, "iou": 0.5}))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_saved_model_symbolic_batch_and_nms_inside(detector, saved_model_runner):
    runner = saved_model_runner
    assert isinstance(runner, exported.SavedModelDetector) and runner.batch is None
    images = preprocessing.to_unit_float(pixels(2, seed=2))
    outputs = runner.outputs(images)
    assert set(outputs) == {"boxes", "scores", *metadata.DETECTION_OUTPUTS}
    want_boxes, want_scores = map(np.asarray, detector(images))
    np.testing.assert_allclose(outputs["boxes"], want_boxes, rtol=0, atol=1e-3)
    np.testing.assert_allclose(outputs["scores"], want_scores, rtol=0, atol=1e-5)
    in_graph = nms.Detections(*(outputs[k] for k in metadata.DETECTION_OUTPUTS))
    assert_same_detections(in_graph, jax_detections(detector, pixels(2, seed=2)))
    # The batch is symbolic: one graph call for another batch size too.
    single = runner.outputs(images[1:])
    for k in ("boxes", "scores", *metadata.DETECTION_OUTPUTS):
        np.testing.assert_allclose(single[k], outputs[k][1:], rtol=0, atol=1e-3 if k.endswith("boxes") else 1e-5)
    assert runner.graph_nms == NMSSettings(**NMS_OPTIONS)
    assert runner._nms_in_graph(NMSSettings(**NMS_OPTIONS))
    assert not runner._nms_in_graph(NMSSettings(**{**NMS_OPTIONS, "conf": 0.3}))
    assert not runner._nms_in_graph(NMSSettings(**{**NMS_OPTIONS, "max_det": 7}))
    # Other NMS settings than the baked ones run on the host, on the graph's boxes and scores.
    options = {**NMS_OPTIONS, "conf": 0.1, "max_det": 7}
    got = runner.detect_batch(pixels(2), NMSSettings(**options))
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
    info = json.loads(metadata.metadata_path(int8_tflite).read_text())
    assert info["quantization"] == "int8" and info["int8_tail"] == "host"
    assert info["calibration"] == {"source": str(calibration_dir), "images": 6}
    images = preprocessing.to_unit_float(pixels(2, seed=7))
    boxes, scores = runner(images)
    want_boxes, want_scores = map(np.asarray, detector(images))
    assert boxes.shape == want_boxes.shape and scores.shape == want_scores.shape
    # Loose bounds (random weights on generated images); real-image figures: docs/export.md#host-tail.
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
    info = json.loads(metadata.metadata_path(float_tflite).read_text())
    assert metadata.metadata_path(float_tflite).name == "s_float32.json"
    assert info["class_names"] == list(nasjax.predict.class_names_of(detector).values())
    assert info["imgsz"] == [S, S] and info["batch"] == 1 and info["input"]["dtype"] == "float32"
    assert info["preprocess"] == {"method": "centre_pad", "imgsz": S, "resize_longest_side": S - 4, "pad_value": 114,
                                  "interpolation": "bilinear (cv2 INTER_LINEAR)", "scale": "1/255"}
    assert info["nms_model"] == "s_float32_nms.tflite" and info["nms"]["iou"] == 0.7
    assert json.loads(tflite.read_metadata(float_tflite)) == info
    # Without the JSON beside it, the embedded copy is used.
    lone = tmp_path / "lone.tflite"
    shutil.copy(float_tflite, lone)
    runner = nasjax.load(lone)
    assert runner.class_names == info["class_names"] and runner.imgsz == (S, S)
    assert (saved_model / "nasjax.json").is_file()
    assert json.loads((saved_model / "nasjax.json").read_text())["batch"] is None
    with pytest.raises(exported.ExportedModelError, match="NMS graph"):
        nasjax.load(metadata.nms_model_path(float_tflite))


# --- bad input -------------------------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if an export gets as far as tracing or converting."""
    def fail(*args, **kwargs):
        raise AssertionError("export started work despite bad options")

    monkeypatch.setattr(export_module, "_export", fail)


@pytest.mark.parametrize("options, message", [
    (dict(format="keras"), "unknown export format 'keras'"),
    (dict(imgsz=100), "multiple of 32, got 100 \\(use e.g. 128\\)"),
    (dict(imgsz=0), "imgsz must be a positive integer"),
    (dict(int8=True), "INT8 export needs calibration images"),
    (dict(int8=True, data="/nonexistent/images"), "not found"),
    (dict(int8=True, half=True, data="x"), "choose one of int8 and half"),
    (dict(format="saved_model", int8=True, data="x"), "int8 applies to TFLite, ONNX and OpenVINO"),
    (dict(format="saved_model", half=True), "half applies to TFLite"),
    (dict(batch=0), "batch must be a positive integer"),
    (dict(int8_tail="device"), "unknown int8_tail"),
    (dict(nms=True, iou=1.5), "iou must be in"),
    (dict(nms=True, conf=-0.1), "conf must be in"),
    (dict(nms=True, max_det=0), "max_det must be a positive integer"),
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
                          (["--format", "keras"], "expected one of tflite, saved_model, onnx, openvino")]:
        with pytest.raises(SystemExit) as e:
            cli.main(["export", "--random-weights", "--output", "m.tflite", *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1


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
    assert calibration_files(root / "ds.yaml") == val  # a data YAML: its val images
    assert calibration_files(root) == val  # a dataset folder holding its YAML
    assert calibration_files(root / "images" / "val") == val  # a folder of images
    (root / "ds.yaml").unlink()
    assert calibration_files(root) == sorted(val + [str(root / "images" / "train" / "im2.png")])
    inputs = list(tflite.calibration_inputs(val, S, Preprocessing()))
    assert len(inputs) == 2 and inputs[0].shape == (1, S, S, 3) and inputs[0].dtype == np.float32
    image = preprocessing.load_image(val[0])
    want = preprocessing.to_unit_float(preprocessing.preprocess(image, imgsz=S)[0])
    np.testing.assert_array_equal(inputs[0][0], want)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no calibration images"):
        calibration_files(tmp_path / "empty")


def test_calibration_from_shared_dataset(shared_dir):
    files = calibration_files(shared_dir / "assets" / "coco8")  # coco8.yaml's val split
    assert [Path(f).name for f in files] == ["000000000036.jpg", "000000000042.jpg", "000000000049.jpg",
                                            "000000000061.jpg"]


def test_cli_saved_model(detector, tmp_path, capsys, monkeypatch):
    calls = []
    monkeypatch.setattr(nasjax, "load", lambda *a, **k: calls.append((a, k)) or detector)  # build once per module
    output = tmp_path / "cli_saved_model"
    with pytest.raises(SystemExit) as exit:
        cli.main(["export", "--model", "yolo_nas_s", "--random-weights", "--format", "saved_model", "--imgsz", "64",
                  "--output", str(output)])
    assert exit.value.code == 0
    assert calls == [(("yolo_nas_s",), {"pretrained": False})]
    assert f"exported {output}" in capsys.readouterr().out
    info = json.loads((output / "nasjax.json").read_text())
    assert info["model_format"] == "saved_model" and info["batch"] is None and info["nms"] is None
    assert info["outputs"] == {"boxes": [None, 84, 4], "scores": [None, 84, 80]}
    assert (output / "saved_model.pb").is_file() and not list(tmp_path.glob(".*tmp"))


# --- versions and dependencies (docs/export.md#versions) -------------------------------------------


@pytest.fixture
def no_conversion(monkeypatch):
    """Fails the test if an export gets as far as tracing or converting (after the version check)."""
    def fail(*args, **kwargs):
        raise AssertionError("export converted despite a refused version")

    monkeypatch.setattr(graph, "save_network", fail)
    monkeypatch.setattr(tflite, "convert", fail)


def assert_names_the_fix(message: str) -> None:
    assert "jax 0.10.0" in message
    assert "pip install 'jax==0.10.0' 'jaxlib==0.10.0'" in message
    assert "pip install -c constraints.txt 'nasjax[export]'" in message
    assert "docs/export.md#versions" in message


@pytest.mark.parametrize("version", ["0.10.1", "0.10.2"])
@pytest.mark.parametrize("format", ["tflite", "saved_model"])
def test_known_broken_jax_refuses_nms_before_work(detector, no_conversion, monkeypatch, tmp_path, version, format):
    monkeypatch.setattr(jax, "__version__", version)
    output = tmp_path / ("m.tflite" if format == "tflite" else "m_saved_model")
    with pytest.raises(ExportError, match=f"jax {version} cannot export NMS") as e:
        export(detector, format, output, imgsz=S, nms=True)
    assert_names_the_fix(str(e.value))
    assert not output.exists()


def test_version_check_outcomes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the verified set says nothing
        assert versions.check_versions(uses_top_k=True, jax_version="0.10.0", tf_version="2.21.0") is True
    for jax_version, tf_version, top_k in [("0.11.0", "2.21.0", True),  # newer jax (GPU machines): tried
                                           ("0.10.1", "2.21.0", False),  # broken top_k, but no top_k here
                                           ("0.9.2", "2.21.0", True),
                                           ("0.10.0", "2.22.0", True)]:  # another TF
        with pytest.warns(ExportVersionWarning) as record:
            assert versions.check_versions(top_k, jax_version=jax_version, tf_version=tf_version) is False
        message = str(record[0].message)
        assert f"jax {jax_version}" in message and f"tensorflow {tf_version}" in message
        assert_names_the_fix(message)
    with pytest.raises(ExportError, match="vhlo.composite_v2"):
        versions.check_versions(True, jax_version="0.10.2", tf_version="2.21.0")
    # A symbolic-batch SavedModel: verified with jax 0.10.0 only (jax 0.11.2 writes one that fails when called).
    assert versions.check_versions(False, jax_version="0.10.0", tf_version="2.21.0", symbolic_batch=True) is True
    with pytest.raises(ExportError, match="symbolic batch.*batch=N") as error:
        versions.check_versions(False, jax_version="0.11.2", tf_version="2.21.0", symbolic_batch=True)
    assert_names_the_fix(str(error.value))


def test_unverified_jax_deserialisation_failure_is_explained(detector, monkeypatch, tmp_path):
    monkeypatch.setattr(jax, "__version__", "0.11.0")

    def unreadable(*args, **kwargs):  # what TF says when it cannot read jax2tf's StableHLO
        raise ValueError("Cannot deserialize computation\nerror: unregistered operation 'vhlo.composite_v2'")

    monkeypatch.setattr(graph, "save_network", unreadable)
    with pytest.warns(ExportVersionWarning, match="jax 0.11.0"):
        with pytest.raises(ExportError, match="TensorFlow could not read the graph") as e:
            export(detector, "tflite", tmp_path / "m.tflite", imgsz=S)
    assert "unregistered operation 'vhlo.composite_v2'" in str(e.value) and "installed: jax 0.11.0" in str(e.value)
    assert_names_the_fix(str(e.value))
    assert isinstance(e.value.__cause__, ValueError) and not (tmp_path / "m.tflite").exists()

    def other(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(graph, "save_network", other)  # failures of another kind pass unchanged
    with pytest.warns(ExportVersionWarning), pytest.raises(RuntimeError, match="disk full"):
        export(detector, "tflite", tmp_path / "m.tflite", imgsz=S)
    # With the verified set the error is TF's own (a real bug, not a version mismatch).
    monkeypatch.setattr(jax, "__version__", "0.10.0")
    monkeypatch.setattr(versions, "installed_versions", lambda: ("0.10.0", "2.21.0"))
    monkeypatch.setattr(graph, "save_network", unreadable)
    with pytest.raises(ValueError, match="Cannot deserialize") as e:
        export(detector, "tflite", tmp_path / "m.tflite", imgsz=S)
    assert not isinstance(e.value, ExportError)


def test_missing_tensorflow_names_the_extra(detector, no_conversion, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'nasjax\[export\]'") as e:
        versions.import_tf()
    assert isinstance(e.value, ExportDependencyError) and isinstance(e.value, ExportError)
    with pytest.raises(ExportDependencyError, match="export needs TensorFlow"):
        export(detector, "saved_model", tmp_path / "m_saved_model", imgsz=S)
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    with pytest.raises(ExportDependencyError, match=r"ai-edge-litert: pip install 'nasjax\[export\]'"):
        tflite.read_metadata(tmp_path / "m.tflite")


def test_nms_metadata_backward_compatible(saved_model):
    info = json.loads(metadata.metadata_path(saved_model).read_text())
    assert info["nms"] == NMS_OPTIONS  # the JSON field keeps the NMSOptions-era layout
    assert metadata.nms_settings_of(info["nms"]) == NMSSettings(**NMS_OPTIONS)
    assert metadata.nms_settings_of({**NMS_OPTIONS, "added_later": 1}) == NMSSettings(**NMS_OPTIONS)
    assert metadata.nms_settings_of(None) is None
