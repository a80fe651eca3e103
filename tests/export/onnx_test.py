"""ONNX export (nasjax.export.onnx_graph, onnx_nms, exporter) and its ONNX Runtime runner
(nasjax.export.onnx_runners).

YOLO-NAS S with deterministic random weights. One float32 file per size (320 and 640, NMS inside,
symbolic batch) must match the jitted JAX model at batch 1 and 3 (boxes 1e-3 px, scores 1e-5) and give
the same detections as nasjax's NMS; the NMS tail alone must make exactly nasjax's decisions on
random crowded boxes, in ONNX Runtime and (when installed) OpenVINO. Skipped without the `onnx` extra.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from export_fixtures import detector, out_dir  # noqa: F401 (fixtures)
from PIL import Image

pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")
onnx = pytest.importorskip("onnx")

import jax  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import nasjax  # noqa: E402
from nasjax import cli  # noqa: E402
from nasjax.export import exporter as export_module  # noqa: E402
from nasjax.export import onnx_graph, onnx_nms  # noqa: E402
from nasjax.export.exporter import export  # noqa: E402
from nasjax.export.metadata import ExportedModelError  # noqa: E402
from nasjax.export.onnx_runners import ONNXDetector  # noqa: E402
from nasjax.export.options import ExportError  # noqa: E402
from nasjax.model import nms  # noqa: E402
from nasjax.model.core import jit_detect  # noqa: E402
from nasjax.model.nms import NMSSettings  # noqa: E402

# The NMS baked into the exports: with these random weights and noise images, 40-80 boxes an image.
BAKED = NMSSettings(conf=0.2, iou=0.6, top_k=1024, max_det=100)


@pytest.fixture(scope="module")
def onnx_files(detector, out_dir):
    """{size: path} of the float32 exports with NMS inside."""
    return {s: export(detector, "onnx", out_dir / f"s{s}.onnx", imgsz=s, nms=True, conf=BAKED.conf, iou=BAKED.iou,
                      max_det=BAKED.max_det) for s in (320, 640)}


def images(size: int, batch: int, seed: int = 0) -> np.ndarray:
    """Noise pixels: images with flat regions give these random weights many exactly equal scores, which
    float32 rounding differences then order differently (NMS ties); noise gives none."""
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), np.uint8)


def assert_same_detections(got: nms.Detections, want: nms.Detections, exact: bool = False) -> None:
    """exact: equal counts and rows, bit for bit, in order.

    Otherwise (detections from two computations of the network): each row of one matches its own row of
    the other (class equal, score within 1e-5, box 1e-3 px) for at least 80 % of the rows of each image.
    These random weights give many exactly equal scores (at 640, 2019 candidates above 0.2 hold 1417
    distinct values), and the two computations' rounding (up to 3e-7) orders such ties either way;
    greedy NMS then keeps another of the tied, heavily overlapping boxes of one class, and the change
    cascades (1 to 12 rows in 45-82 here). On the same boxes and scores the exported NMS decides
    exactly as nasjax, ties included (exact=True)."""
    assert int(np.sum(want.count)) > 0
    for i, n in enumerate(want.count):
        m = int(got.count[i])
        assert not np.any(got.boxes[i, m:]) and not np.any(got.scores[i, m:]) and not np.any(got.classes[i, m:])
        if exact:
            assert m == n
            for field in nms.Detections._fields[:3]:
                np.testing.assert_array_equal(getattr(got, field)[i, :n], getattr(want, field)[i, :n])
            continue
        unmatched, matched = list(range(n)), 0
        for k in range(m):
            match = [j for j in unmatched if got.classes[i, k] == want.classes[i, j]
                     and abs(got.scores[i, k] - want.scores[i, j]) <= 1e-5
                     and np.abs(got.boxes[i, k] - want.boxes[i, j]).max() <= 1e-3]
            if match:
                unmatched.remove(match[0])
                matched += 1
        assert matched >= 0.8 * max(n, m), f"image {i}: {matched} of {m} / {n} rows match"


# --- float parity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [320, 640])
def test_float32_onnx_matches_jax(detector, onnx_files, size):
    """One file, batch 1 and 3: boxes within 1e-3 px, scores 1e-5; in-graph NMS = nasjax's NMS."""
    runner = nasjax.load(onnx_files[size])
    assert isinstance(runner, ONNXDetector) and runner.batch is None and runner.graph_nms == BAKED
    for batch in (1, 3):
        pixels = images(size, batch, seed=batch)
        x = pixels.astype(np.float32) / 255.0
        boxes, scores = runner(x)
        want_boxes, want_scores = map(np.asarray, detector(x))
        assert boxes.shape == want_boxes.shape == (batch, want_boxes.shape[1], 4)
        np.testing.assert_allclose(boxes, want_boxes, rtol=0, atol=1e-3)
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
        # The graph's NonMaxSuppression makes exactly nasjax's decisions on the graph's own boxes and
        # scores; and the NMS graph alone, fed the JAX model's boxes and scores, exactly the JAX model's.
        assert runner._nms_in_graph(BAKED)
        got = runner.detect_batch(pixels, BAKED)
        outputs = runner.outputs(x)
        want = nms.non_max_suppression(outputs["boxes"], outputs["scores"], BAKED.conf, BAKED.iou, **BAKED.static())
        assert_same_detections(got, nms.Detections(*jax.device_get(want)), exact=True)
        want = nms.Detections(*map(np.asarray, jit_detect(detector.graphdef, detector.variables, pixels,
                              np.float32(BAKED.conf), nms.iou_compare_threshold(BAKED.iou), **BAKED.static())))
        session = nms_session(BAKED, *want_scores.shape[1:])
        alone = session.run(list(onnx_nms.DETECTION_OUTPUTS), {"in_boxes": want_boxes, "in_scores": want_scores})
        assert_same_detections(nms.Detections(*alone), want, exact=True)
        # Against the JAX model's own detections, most rows (ties: assert_same_detections).
        assert_same_detections(got, want)


def test_graph_is_clean_and_described(detector, onnx_files):
    """Standard ops only, BN folded into 98 convolutions, few transposes; metadata_props describe it."""
    model = onnx.load(onnx_files[320])
    ops = [n.op_type for n in model.graph.node]
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert ops.count("Conv") == 98 and ops.count("NonMaxSuppression") == 1 and ops.count("Transpose") <= 12
    assert "BatchNormalization" not in ops and "Loop" not in ops
    assert onnx_graph.dims(model.graph.input[0]) == [None, 3, 320, 320]
    assert {o.name: onnx_graph.dims(o) for o in model.graph.output} == {
        "boxes": [None, 2100, 4], "scores": [None, 2100, 80], "detection_boxes": [None, 100, 4],
        "detection_scores": [None, 100], "detection_classes": [None, 100], "num_detections": [None]}
    props = onnx_graph.metadata_of(model)
    info = json.loads(props["nasjax"])
    assert info["model_format"] == "onnx" and info["imgsz"] == [320, 320] and info["batch"] is None
    assert info["input"]["layout"] == "NCHW" and info["input"]["shape"] == [None, 3, 320, 320]
    assert info["nms"] == BAKED.to_dict() and info["quantization"] == "float32"
    assert eval(props["names"])[0] == "person" and props["imgsz"] == "[320, 320]" and props["stride"] == "32"
    assert json.loads(onnx_files[320].with_suffix(".json").read_text()) == info  # the JSON beside it


def test_predict_and_val_on_onnx(detector, onnx_files, tmp_path):
    paths = []
    for i, image in enumerate([images(400, 1, 1)[0, :, :300], images(320, 1, 2)[0, :200]]):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(image).save(paths[-1])
    runner = nasjax.load(onnx_files[320])
    # nasjax's NMS on the graph's boxes and scores, against the JAX model.
    got, want = runner.predict(paths), detector.predict(paths, imgsz=320)
    for a, b in zip(got, want):
        assert a.names == b.names and a.orig_shape == b.orig_shape and len(b) > 0
        assert_same_detections(*(nms.Detections(r.boxes.xyxy[None], r.boxes.conf[None], r.boxes.cls[None].astype(np.int32),
                                                np.array([len(r)])) for r in (a, b)))
    # The graph's NMS (the baked settings) = nasjax's NMS on the same outputs (one more max_det: host path).
    baked = runner.predict(paths, conf=BAKED.conf, iou=BAKED.iou, max_det=BAKED.max_det)
    host = runner.predict(paths, conf=BAKED.conf, iou=BAKED.iou, max_det=BAKED.max_det + 1)
    for a, b in zip(baked, host):
        n = len(a)
        assert 0 < n <= BAKED.max_det and len(b) in (n, n + 1)
        for field in ("xyxy", "conf", "cls"):
            np.testing.assert_array_equal(getattr(a.boxes, field), getattr(b.boxes, field)[:n])
    # val runs on the ONNX model (imgsz defaults to its size) as on the JAX model: a two-image dataset in
    # COCO's 80 classes, scored within 0.02 of the JAX model (random weights score ~0 on any labels).
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for path, result in zip(paths, want):
        (root / "images" / path.name).write_bytes(path.read_bytes())
        h, w = result.orig_shape
        x1, y1, x2, y2 = (np.clip(result.boxes.xyxy[:10], 0, [w, h, w, h]) / [w, h, w, h]).T
        lines = [f"{int(c)} {(a + b) / 2:.6f} {(t + u) / 2:.6f} {b - a:.6f} {u - t:.6f}"
                 for c, a, t, b, u in zip(result.boxes.cls[:10], x1, y1, x2, y2) if b > a and u > t]
        (root / "labels" / path.with_suffix(".txt").name).write_text("\n".join(lines) + "\n")
    names = "".join(f"\n  {i}: {json.dumps(name)}" for i, name in want[0].names.items())
    (root / "data.yaml").write_text(f"path: {root}\nval: images\nnames:{names}\n")
    metrics = runner.val(data=str(root / "data.yaml"), batch_size=2)
    reference = detector.val(data=str(root / "data.yaml"), batch_size=2, imgsz=320)
    assert metrics["images"] == reference["images"] == 2 and metrics["instances"] == reference["instances"] > 0
    for key in ("map50", "map50_95", "precision", "recall"):
        assert abs(metrics[key] - reference[key]) <= 0.02, key
    with pytest.raises(ValueError, match="exported for 320x320"):
        runner.predict(paths, imgsz=640)


def test_float16_onnx(detector, out_dir, onnx_files):
    path = export(detector, "onnx", out_dir / "s_half.onnx", imgsz=320, half=True)
    model = onnx.load(path)
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    assert onnx_graph.dims(model.graph.input[0]) == [None, 3, 320, 320]
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # float32 in and out
    runner = nasjax.load(path)
    assert runner.quantization == "float16" and path.stat().st_size < 0.55 * onnx_files[320].stat().st_size
    x = images(320, 2).astype(np.float32) / 255.0
    boxes, scores = runner(x)
    want_boxes, want_scores = map(np.asarray, detector(x))
    # float16 arithmetic: measured 0.046 px and 1.9e-4 at 320 with these weights and images.
    np.testing.assert_allclose(boxes, want_boxes, rtol=0, atol=0.25)
    np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-3)


# --- the NMS tail alone ------------------------------------------------------------------------------


def nms_session(settings: NMSSettings, n: int, c: int):
    import onnxruntime as ort

    return ort.InferenceSession(nms_only_model(settings, n, c))


def nms_only_model(settings: NMSSettings, n: int, c: int):
    """A graph whose `boxes` and `scores` are its inputs, ending in the exported NMS."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["in_boxes"], ["boxes"]), helper.make_node("Identity", ["in_scores"], ["scores"])],
        "nms", [helper.make_tensor_value_info("in_boxes", TensorProto.FLOAT, ["batch", n, 4]),
                helper.make_tensor_value_info("in_scores", TensorProto.FLOAT, ["batch", n, c])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", n, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n, c])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_graph.OPSET)])
    onnx_nms.append_nms(model, settings, n, c)
    return onnx_graph.serialized(model)  # the checker passes


@pytest.mark.parametrize("settings", [
    NMSSettings(0.25, 0.5, 1024, 300, True, False),
    NMSSettings(0.1, 0.45, 100, 20, True, False),  # top_k and max_det bind
    NMSSettings(0.3, 0.6, 1024, 300, False, False),  # single-label: fewer candidates than max_det
    NMSSettings(0.2, 0.5, 64, 50, True, True),  # class-agnostic
])
def test_onnx_nms_makes_nasjax_decisions(settings):
    """Random crowded boxes (300 anchors, 5 classes, 3 images): the exported NMS gives exactly
    nasjax.model.nms's detections, in ONNX Runtime and OpenVINO."""
    import onnxruntime as ort

    n, c = 300, 5
    data = nms_only_model(settings, n, c)
    runs = {"onnxruntime": lambda feed, s=ort.InferenceSession(data): dict(zip(
        [o.name for o in s.get_outputs()], s.run(None, feed)))}
    try:
        from nasjax.export.openvino import import_openvino

        ov = import_openvino()  # telemetry off
    except ImportError:
        pass
    else:
        core = ov.Core()
        compiled = core.compile_model(core.read_model(data), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        runs["openvino"] = lambda feed: (lambda out: {k: out[k] for k in onnx_nms.DETECTION_OUTPUTS})(compiled(feed))
    rng = np.random.default_rng(0)
    for _ in range(3):
        xy = rng.uniform(-10, 100, (3, n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (3, n, 2)).astype(np.float32)], -1)
        scores = (rng.uniform(0, 1, (3, n, c)) ** 3).astype(np.float32)
        want = jax.device_get(nms.non_max_suppression(boxes, scores, settings.conf, settings.iou, **settings.static()))
        assert 0 < want.count.min() and (want.count.max() == settings.max_det or not settings.multi_label)
        for name, run in runs.items():
            out = run({"in_boxes": boxes, "in_scores": scores})
            for key, value in zip(nms.Detections._fields, want):
                got = out[onnx_nms.DETECTION_OUTPUTS[nms.Detections._fields.index(key)]]
                assert got.dtype == np.asarray(value).dtype and np.array_equal(got, value), (name, key)


# --- bad input -------------------------------------------------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    monkeypatch.setattr(export_module, "_export", lambda *a, **k: pytest.fail("export started work"))


@pytest.mark.parametrize("options, message", [
    (dict(int8=True), "INT8 applies to format=openvino"),
    (dict(imgsz=100), "multiple of 32, got 100"),
    (dict(output="missing/dir/m.onnx"), "does not exist; create it"),
    (dict(output="m.tflite"), "must end in .onnx"),
    (dict(int8_tail="graph", int8=True), "INT8 applies to format=openvino"),
])
def test_bad_onnx_options_fail_before_any_work(detector, no_work, tmp_path, options, message):
    options = {"output": tmp_path / "m.onnx", **options}
    if isinstance(options["output"], str):
        options["output"] = tmp_path / options["output"]
    with pytest.raises(ExportError, match=message):
        export(detector, "onnx", **options)


def test_failed_export_leaves_no_file(detector, tmp_path, monkeypatch, onnx_files):
    """A conversion that fails, or a write that fails, leaves the earlier file as it was and nothing new."""
    target = tmp_path / "m.onnx"
    target.write_bytes(b"earlier")

    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(onnx_graph, "convert_network", broken)
    with pytest.raises(RuntimeError, match="conversion failed"):
        export(detector, "onnx", target, imgsz=64)
    monkeypatch.undo()
    model = onnx.load(onnx_files[320])
    monkeypatch.setattr(onnx_graph, "convert_network", lambda *a: model)
    monkeypatch.setattr(onnx_graph, "serialized", lambda m: b"x" * 1000)

    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        if "x" in mode and str(path).endswith(".tmp") and ".m.json" in str(path):
            raise OSError(28, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk)
    with pytest.raises(ExportError, match="No space left"):
        export(detector, "onnx", target, imgsz=320)
    monkeypatch.undo()
    assert target.read_bytes() == b"earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_cli_onnx(detector, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(nasjax, "load", lambda *a, **k: pytest.fail("the CLI loaded a model despite a bad output"))
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "--random-weights", "--format", "onnx", "--output", str(tmp_path / "no/m.onnx")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "does not exist" in err and err.count("\n") == 1
    monkeypatch.setattr(nasjax, "load", lambda *a, **k: detector)
    output = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "--model", "yolo_nas_s", "--random-weights", "--format", "onnx", "--imgsz", "64",
                  "--batch", "2", "--output", str(output)])
    assert e.value.code == 0 and f"exported {output}" in capsys.readouterr().out
    monkeypatch.undo()
    # predict on the file: imgsz defaults to the exported 64 (the command's default is 640).
    Image.fromarray(images(100, 1)[0]).save(tmp_path / "im.png")
    with pytest.raises(SystemExit) as e:
        cli.main(["predict", f"model={output}", f"source={tmp_path / 'im.png'}", f"save_dir={tmp_path / 'run'}"])
    assert e.value.code == 0 and (tmp_path / "run" / "im.png").is_file()
    runner = nasjax.load(output)
    assert runner.batch == 2 and runner.graph_nms is None and runner.output_names == ("boxes", "scores")
    boxes, _ = runner(np.zeros((3, 64, 64, 3), np.float32))  # split into batches of 2, the last padded
    assert boxes.shape == (3, 84, 4)


def hostile(path, model):
    onnx.save(model, path)
    return path


def test_hostile_onnx_files_refused(onnx_files, tmp_path):
    source = onnx_files[320]
    data = source.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportedModelError, match=r"cut.onnx is not a readable ONNX model"):
        nasjax.load(cut)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(ExportedModelError, match="empty.onnx"):
        nasjax.load(tmp_path / "empty.onnx")

    model = onnx.load(source)
    model.graph.node[0].domain = "com.example.evil"
    with pytest.raises(ExportedModelError, match=r"custom.onnx uses operators of the domain\(s\) \['com.example.evil'\]"):
        nasjax.load(hostile(tmp_path / "custom.onnx", model))

    model = onnx.load(source)
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    weight.ClearField("raw_data")
    with pytest.raises(ExportedModelError, match="tensors stored in external files"):
        nasjax.load(hostile(tmp_path / "external.onnx", model))

    model = onnx.load(source)
    del model.metadata_props[:]
    with pytest.raises(ExportedModelError, match="no nasjax export metadata"):
        nasjax.load(hostile(tmp_path / "bare.onnx", model))
    onnx_graph.set_metadata(model, {"nasjax": json.dumps({"format": "nasjax-export", "variant": "yolo_nas_x"})})
    with pytest.raises(ExportedModelError, match="missing field"):
        nasjax.load(hostile(tmp_path / "foreign.onnx", model))
    # trusted=True skips the scan: the custom-domain file then fails in ONNX Runtime, still named.
    with pytest.raises(ExportedModelError, match="ONNX Runtime cannot load .*custom.onnx"):
        nasjax.load(tmp_path / "custom.onnx", trusted=True)


def test_frigate_target(onnx_files, detector, out_dir):
    """target=frigate: uint8 BGR (1, 3, S, S) in, super-gradients' flat (K, 7) detections out, equal to the
    plain export's in-graph NMS on the same image; nasjax.load refuses it with a pointer."""
    import onnxruntime as ort

    path = export(detector, "onnx", out_dir / "frigate.onnx", imgsz=320, target="frigate", conf=BAKED.conf,
                  iou=BAKED.iou, max_det=BAKED.max_det)
    session = ort.InferenceSession(str(path))
    (image_input,), (output,) = session.get_inputs(), session.get_outputs()
    assert (image_input.name, image_input.type, image_input.shape) == ("images", "tensor(uint8)", [1, 3, 320, 320])
    assert output.name == "output" and output.shape[1] == 7
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["target"] == "frigate" and info["input"]["channels"] == "BGR" and info["batch"] == 1
    plain = nasjax.load(onnx_files[320])
    for seed in (1, 2):
        rgb = images(320, 1, seed)
        flat = session.run(None, {"images": np.ascontiguousarray(rgb[..., ::-1].transpose(0, 3, 1, 2))})[0]
        want = plain.detect_batch(rgb, BAKED)
        n = int(want.count[0])
        assert flat.shape == (n, 7) and n > 0
        np.testing.assert_array_equal(flat, np.c_[np.zeros(n), want.boxes[0, :n], want.scores[0, :n],
                                                  want.classes[0, :n]].astype(np.float32))
    with pytest.raises(ExportedModelError, match="a Frigate export"):
        nasjax.load(path)
    for options, message in [(dict(format="tflite"), "use format=onnx"), (dict(batch=2), "batch 1"),
                             (dict(target="deepstream"), "unknown target 'deepstream'")]:
        with pytest.raises(ExportError, match=message):
            export(detector, **{"format": "onnx", "output": out_dir / "x.onnx", "target": "frigate", **options})
