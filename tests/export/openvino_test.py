"""OpenVINO exports (nasjax.export.openvino): the IR written from the ONNX graph, and its runner.

YOLO-NAS S with deterministic random weights at 64x64, each artifact exported once per module: float32
with NMS inside, float16 weights, INT8 (NNCF, calibrated on generated images). The float32 IR must
match the jitted JAX model (boxes 1e-3 px, scores 1e-5, the same detections); float16 and INT8 within
the bounds measured below. Skipped without openvino.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
from conftest import REFERENCE_DIR, _load_by_path
from export_fixtures import calibration_dir, detector, out_dir  # noqa: F401 (fixtures)
from PIL import Image

# Not pytest.importorskip("openvino"): a plain `import openvino` posts OpenVINO's usage telemetry from a forked
# process; nasjax imports it through import_openvino(), which turns that off.
if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
    pytest.skip("openvino and nncf are not installed (pip install 'nasjax[onnx]')", allow_module_level=True)

import jax  # noqa: E402

import nasjax  # noqa: E402
from nasjax.data import preprocessing  # noqa: E402
from nasjax.export import exporter as export_module  # noqa: E402
from nasjax.export import openvino as ov_export  # noqa: E402
from nasjax.export import runners  # noqa: E402
from nasjax.export.exporter import export  # noqa: E402
from nasjax.export.metadata import ExportedModelError  # noqa: E402
from nasjax.export.options import ExportDependencyError, ExportError, check_options  # noqa: E402
from nasjax.model import nms  # noqa: E402
from nasjax.model.nms import NMSSettings  # noqa: E402

cases = _load_by_path("predict_cases", REFERENCE_DIR / "predict_cases.py")
ov = ov_export.import_openvino()

S = 64
INT8_CONF = 0.2


@pytest.fixture(scope="module")
def float_dir(detector, out_dir):
    return export(detector, "openvino", out_dir / "s_float32_openvino_model", imgsz=S, nms=True)


@pytest.fixture(scope="module")
def float_runner(float_dir):
    return nasjax.load(float_dir)


@pytest.fixture(scope="module")
def half_dir(detector, out_dir):
    return export(detector, "openvino", out_dir / "s_float16_openvino_model", imgsz=S, half=True)


@pytest.fixture(scope="module")
def int8_dir(detector, out_dir, calibration_dir):
    return export(detector, "openvino", out_dir / "s_int8_openvino_model", imgsz=S, int8=True, data=calibration_dir,
                  nms=True, conf=INT8_CONF)


def pixels(batch: int, seed: int = 0) -> np.ndarray:
    return np.stack([cases.pattern_image(S, S, seed + i) for i in range(batch)])


# One batch of test images and the JAX model's outputs for it (one compilation), shared by the tests.
IMAGES = pixels(3)


@pytest.fixture(scope="module")
def jax_outputs(detector):
    return tuple(map(np.asarray, detector(preprocessing.to_unit_float(IMAGES))))


def jax_detections(jax_outputs, settings: NMSSettings) -> nms.Detections:
    """The JAX model's detections: what its detect_batch computes (nasjax.model.core.detect: the network, then
    nms.non_max_suppression), here the same NMS jitted on the outputs already computed (the function the
    runners' host NMS uses, so one compilation serves both)."""
    boxes, scores = jax_outputs
    return jax.device_get(runners._jit_host_detect(
        boxes, scores, np.float32(settings.conf), nms.iou_compare_threshold(settings.iou), host_tail=False,
        imgsz=(S, S), strides=(8, 16, 32), reg_max=16, **settings.static()))


def assert_same_detections(got: nms.Detections, want: nms.Detections) -> None:
    np.testing.assert_array_equal(got.count, want.count)
    assert int(np.sum(want.count)) > 0
    for i, n in enumerate(want.count):
        np.testing.assert_array_equal(got.classes[i, :n], want.classes[i, :n])
        np.testing.assert_allclose(got.scores[i, :n], want.scores[i, :n], rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.boxes[i, :n], want.boxes[i, :n], rtol=0, atol=1e-3)


# --- float32 ---------------------------------------------------------------------------------------


def test_float32_matches_jax(float_dir, float_runner, jax_outputs):
    assert sorted(p.name for p in float_dir.iterdir()) == ["model.bin", "model.xml", "nasjax.json"]
    assert isinstance(float_runner, ov_export.OpenVINODetector) and float_runner.backend == "openvino"
    assert float_runner.batch is None and float_runner.metadata["model_format"] == "openvino"
    # f32 arithmetic, not the bfloat16 OpenVINO picks on CPUs that have it
    assert float_runner.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    images = preprocessing.to_unit_float(IMAGES)
    for batch in (1, 3):  # one file, a symbolic batch
        boxes, scores = float_runner(images[:batch])
        want_boxes, want_scores = (v[:batch] for v in jax_outputs)
        assert boxes.shape == want_boxes.shape == (batch, 84, 4) and scores.shape == (batch, 84, 80)
        np.testing.assert_allclose(boxes, want_boxes, rtol=0, atol=1e-3)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)


def test_float32_detections_match_jax(float_runner, jax_outputs):
    settings = NMSSettings()  # the export's settings: the graph's own NMS (onnx_nms)
    assert float_runner._nms_in_graph(settings)
    assert_same_detections(float_runner.detect_batch(IMAGES, settings), jax_detections(jax_outputs, settings))
    other = NMSSettings(conf=0.2, iou=0.5)  # other settings: the host NMS on the graph's boxes and scores
    assert not float_runner._nms_in_graph(other)
    assert_same_detections(float_runner.detect_batch(IMAGES, other), jax_detections(jax_outputs, other))


def test_predict(float_runner, tmp_path):
    image = cases.pattern_image(120, 160, 1)
    Image.fromarray(image).save(tmp_path / "im.png")
    (result,) = float_runner.predict(tmp_path / "im.png")  # imgsz defaults to the exported size
    assert result.orig_shape == (120, 160) and len(result) > 0
    # predict's detections are the runner's on the image pre-processed as predict does (the graph's NMS)
    p = float_runner.preprocessing
    network_input, _ = preprocessing.preprocess(image, "centre_pad", S, p.pad_value,
                                                resize_margin=p.input_size - p.resize_longest_side)
    want = float_runner.detect_batch(network_input[None])
    n = int(want.count[0])
    np.testing.assert_array_equal(np.sort(result.boxes.conf), np.sort(want.scores[0, :n]))
    np.testing.assert_array_equal(np.sort(result.boxes.cls), np.sort(want.classes[0, :n]))


def test_runner_options(float_dir):
    runner = ov_export.OpenVINODetector(float_dir / "model.xml", num_threads=1, trusted=True)  # the .xml: its folder
    assert runner.path == float_dir
    assert runner.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    boxes, _ = runner(preprocessing.to_unit_float(pixels(1)))
    assert boxes.shape == (1, 84, 4)


# --- float16, INT8 ---------------------------------------------------------------------------------


def test_float16(float_dir, half_dir, jax_outputs):
    runner = nasjax.load(half_dir)
    assert runner.quantization == "float16" and set(runner.output_names) == {"boxes", "scores"}
    assert (half_dir / "model.bin").stat().st_size < 0.55 * (float_dir / "model.bin").stat().st_size
    boxes, scores = runner(preprocessing.to_unit_float(IMAGES))
    want_boxes, want_scores = jax_outputs
    # float16 weights (relative rounding 2^-11), float32 arithmetic: measured 0.014 px (boxes span
    # -260..400 px) and 1.3e-4 in scores on these images; bounds with a 3-4x margin. (With bfloat16
    # arithmetic, OpenVINO's default on CPUs with AVX512-BF16, the errors are 0.5 px and 2.6e-3.)
    np.testing.assert_allclose(boxes, want_boxes, rtol=0, atol=0.05)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=5e-4)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


def test_int8(float_dir, int8_dir, calibration_dir, jax_outputs):
    runner = nasjax.load(int8_dir)
    info = runner.metadata
    assert info["quantization"] == "int8" and info["input"]["dtype"] == "uint8"
    assert info["calibration"] == {"source": str(calibration_dir), "images": 6}
    assert runner.model.input(0).get_element_type() == ov.Type.u8  # uint8 pixels, / 255 inside the graph
    assert (int8_dir / "model.bin").stat().st_size < 0.3 * (float_dir / "model.bin").stat().st_size
    # The decode tail (DFL softmax and integral, anchor arithmetic, sigmoid, NMS) is float: no quantizer
    # after the last convolution on any path to an output, and the convolutions themselves are quantized.
    model = ov.Core().read_model(int8_dir / "model.xml")
    types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    assert "FakeQuantize" not in {types[name] for name in ov_export.decode_tail(model)}
    assert sum(t == "FakeQuantize" for t in types.values()) >= 90

    boxes, scores = runner(preprocessing.to_unit_float(IMAGES))
    want_boxes, want_scores = jax_outputs
    # Random weights on generated images: measured 0.83 px (max) / 0.09 px (mean) and 2.7e-3 in scores
    # on the calibration images; real-image figures: docs/export.md#openvino.
    assert np.abs(boxes - want_boxes).max() < 2.0 and np.abs(boxes - want_boxes).mean() < 0.3
    assert np.abs(scores - want_scores).max() < 0.01

    # Detections (the graph's NMS at conf 0.2): every float detection clearly above conf (by 0.01, more
    # than the score error) has an INT8 detection of its class with IoU >= 0.5 (COCO's match), and vice
    # versa. Not tighter: random weights score neighbouring anchors almost equally (0.2338 and 0.2338),
    # so INT8 rounding can make NMS keep a neighbour, 16 px away, of the float detection (IoU 0.87).
    settings = NMSSettings(conf=INT8_CONF)
    assert runner._nms_in_graph(settings)
    got, want = runner.detect_batch(IMAGES, settings), jax_detections(jax_outputs, settings)
    assert int(np.sum(want.count)) > 0
    for a, b in ((got, want), (want, got)):
        for i in range(len(IMAGES)):
            for j in range(int(a.count[i])):
                if a.scores[i, j] < INT8_CONF + 0.01:
                    continue
                same = [k for k in range(int(b.count[i])) if b.classes[i, k] == a.classes[i, j]]
                assert max((_iou(a.boxes[i, j], b.boxes[i, k]) for k in same), default=0.0) >= 0.5


# --- bad input -------------------------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if an export gets as far as tracing or converting."""
    def fail(*args, **kwargs):
        raise AssertionError("export started work despite bad options")

    monkeypatch.setattr(export_module, "_export", fail)
    monkeypatch.setattr(export_module, "onnx_model", fail)


def test_bad_options_fail_before_any_work(detector, no_work, tmp_path, calibration_dir):
    with pytest.raises(ExportError, match="INT8 export needs calibration images"):
        export(detector, "openvino", tmp_path / "m", imgsz=S, int8=True)
    with pytest.raises(ExportError, match="int8_tail applies to TFLite"):
        export(detector, "openvino", tmp_path / "m", imgsz=S, int8=True, data=calibration_dir, int8_tail="graph")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(ExportError, match="not an OpenVINO export directory"):
        export(detector, "openvino", tmp_path / "notes", imgsz=S)
    assert (tmp_path / "notes" / "a.txt").read_text() == "x"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="exists and is not a directory"):
        export(detector, "openvino", tmp_path / "file", imgsz=S)


def test_missing_packages_name_the_extra(monkeypatch, tmp_path):
    options = check_options("openvino", imgsz=S)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino → ImportError
    with pytest.raises(ExportDependencyError, match=r"pip install 'nasjax\[onnx\]'"):
        ov_export.save(None, options, None, tmp_path)  # before it looks at the model
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(ExportDependencyError, match=r"nncf.*pip install 'nasjax\[onnx\]'"):
        ov_export.check_dependencies(dataclasses.replace(options, int8=True))


def _damaged(float_dir, tmp_path, damage):
    copy = tmp_path / "copy"
    shutil.copytree(float_dir, copy)
    damage(copy)
    return copy


def _set_json(path, **changes):
    info = json.loads((path / "nasjax.json").read_text())
    info.update(changes)
    (path / "nasjax.json").write_text(json.dumps(info))


@pytest.mark.parametrize("damage, names, message", [
    (lambda d: (d / "model.xml").write_text("not an IR"), "model.xml", "not an OpenVINO IR"),
    (lambda d: (d / "model.xml").write_bytes((d / "model.xml").read_bytes()[:4000]), "model.xml", "cannot read"),
    (lambda d: (d / "model.bin").unlink(), "model.bin", "is missing"),
    (lambda d: (d / "model.bin").write_bytes((d / "model.bin").read_bytes()[:1000]), "model.bin", "cannot read"),
    (lambda d: _set_json(d, imgsz=[96, 96]), "model.xml", "input shape .* disagrees with its nasjax.json"),
    (lambda d: _set_json(d, batch=2), "model.xml", "input shape"),
    (lambda d: _set_json(d, quantization="int8", input={"dtype": "uint8"}), "model.xml", "input element type f32"),
])
def test_damaged_exports(float_dir, tmp_path, damage, names, message):
    path = _damaged(float_dir, tmp_path, damage)
    with pytest.raises(ExportedModelError, match=message) as error:
        nasjax.load(path)
    assert str(path / names) in str(error.value) and "export the model again" in str(error.value)
