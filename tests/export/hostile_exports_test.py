"""Hostile and damaged exported models, and exports on a failing disk (issue 12).

A SavedModel is a program: one whose graph writes, reads or prints to files must be refused before
TensorFlow builds it (the scan, nasjax.export.scan), and run only with trusted=True. A damaged .tflite
or export JSON must be an `ExportedModelError` naming the file, never a bare ValueError, struct.error,
KeyError or TypeError. An export that cannot write its files (full or read-only disk, a directory in
the way) must raise one `ExportError` and leave the earlier export working.

Every hostile file is generated here, at test time. One SavedModel of YOLO-NAS S at 64x64 is exported
once for the module. The .tflite files come from the real `export()` with the tracing and conversion
stubbed by a stand-in graph of the same signature (a converted YOLO-NAS S takes 20-40 s here and is
covered by export_test.py): the metadata, the files and their writing are the real ones. Skipped
without the `export` extra.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from export_fixtures import detector, out_dir  # noqa: F401 (fixtures)
from hostile import read_only_dir, small_disk

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

import nasjax
from nasjax.export import graph, tflite
from nasjax.export import runners as exported
from nasjax.export.exporter import export
from nasjax.export.loader import load_exported
from nasjax.export.options import ExportError

S = 64
ExportedModelError = exported.ExportedModelError


def _stand_in_model() -> bytes:
    """A float32 TFLite graph with the signature of a YOLO-NAS S export at 64x64 (input `images`,
    outputs `boxes` and `scores` over its 84 anchors) that depends on its input."""
    class StandIn(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, S, S, 3], tf.float32)])
        def serve(self, images):
            pooled = tf.reshape(tf.nn.avg_pool2d(images, 8, 8, "VALID"), [1, 64, 3])[:, :, :1]  # (1, 64, 1)
            cells = tf.concat([pooled, pooled[:, :20]], axis=1)  # (1, 84, 1)
            return {"boxes": tf.tile(cells, [1, 1, 4]) * S, "scores": tf.sigmoid(tf.tile(cells, [1, 1, 80]))}

    module = StandIn()
    return tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module).convert()


def _stubbed(monkeypatch, model: bytes) -> None:
    monkeypatch.setattr(graph, "save_network", lambda *args, **kwargs: None)
    monkeypatch.setattr(tflite, "convert", lambda *args, **kwargs: model)


@pytest.fixture(scope="module")
def float_tflite(detector, out_dir):
    """A .tflite written by export() (its metadata entry and `.json` sidecar), of the stand-in graph."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _stubbed(monkeypatch, _stand_in_model())
        return export(detector, "tflite", out_dir / "s.tflite", imgsz=S)


@pytest.fixture(scope="module")
def saved_model(detector, out_dir):
    return export(detector, "saved_model", out_dir / "s_saved_model", imgsz=S)


def images(batch: int = 1) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (batch, S, S, 3)).astype(np.float32)


def linked_copy(src: Path, dst: Path) -> Path:
    """A copy of an export that costs no disk (hard links; the tests only replace whole files)."""
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=os.link)
    else:
        os.link(src, dst)
        os.link(src.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


# --- a SavedModel runs its own graph ---------------------------------------------------------------


def _hostile_module(kind: str, target: Path):
    """A tf.Module whose serving function (or, for "unused", a function no signature calls) touches
    `target`: writes it, reads it or prints into it."""
    spec = tf.TensorSpec([None, S, S, 3], tf.float32)

    def outputs(x):
        n = tf.shape(x)[0]
        return {"boxes": tf.zeros([n, 84, 4]), "scores": tf.zeros([n, 84, 80])}

    def touch():
        if kind == "read_file":
            return tf.strings.length(tf.io.read_file(str(target)))
        if kind == "print_to_file":
            return tf.print("pwned", output_stream=f"file://{target}")
        return tf.io.write_file(str(target), "pwned")

    class Hostile(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, images):
            if kind != "unused":
                with tf.control_dependencies([touch()]):
                    return {k: tf.identity(v) for k, v in outputs(images).items()}
            return outputs(images)

        @tf.function(input_signature=[spec])
        def other(self, x):
            touch()
            return x

    module = Hostile()
    module.other.get_concrete_function()  # traced: its graph is in the library, called or not
    return module


@pytest.mark.parametrize("kind, op", [("write_file", "WriteFile"), ("read_file", "ReadFile"),
                                      ("print_to_file", "PrintV2"), ("unused", "WriteFile")])
def test_saved_model_with_file_ops_is_refused(saved_model, tmp_path, capsys, kind, op):
    target = tmp_path / "pwned.txt"
    if kind == "read_file":
        target.write_text("secret")
    path = tmp_path / "hostile_saved_model"
    module = _hostile_module(kind, target)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    shutil.copy(saved_model / "nasjax.json", path / "nasjax.json")  # a valid export JSON: only the graph is wrong
    if kind != "read_file":
        target.unlink(missing_ok=True)

    for load in (nasjax.load, exported.SavedModelDetector):
        with pytest.raises(ExportedModelError, match=f"{re.escape(str(path))}.*saved_model.pb.*'{op}'.*trusted=True"):
            load(path)
    assert kind == "read_file" or not target.exists()

    if kind == "write_file":  # the command: one line, exit 2, the op named
        from nasjax import cli

        with pytest.raises(SystemExit) as exit:
            cli.main(["info", f"model={path}"])
        err = capsys.readouterr().err
        assert exit.value.code == 2 and err.count("\n") == 1 and "'WriteFile'" in err and not target.exists()

    if kind == "write_file":  # trusted: the file's own graph runs (what the scan prevents)
        model = nasjax.load(path, trusted=True)
        model(images())
        assert target.read_text() == "pwned"


def test_nasjax_saved_model_passes_the_scan(saved_model):
    from nasjax.export.scan import SAVED_MODEL_OPS, check_saved_model_ops

    check_saved_model_ops(saved_model)
    assert "WriteFile" not in SAVED_MODEL_OPS and "XlaCallModule" in SAVED_MODEL_OPS
    model = nasjax.load(saved_model)  # (export_test.py runs it against the JAX model)
    assert model.batch is None and set(model.function.structured_outputs) == {"boxes", "scores"}


def test_damaged_saved_model(saved_model, tmp_path):
    path = linked_copy(saved_model, tmp_path / "sm")
    (path / "nasjax.json").unlink()
    (path / "nasjax.json").write_text("{\"format\": \"nasjax-export\"")
    with pytest.raises(ExportedModelError, match="nasjax.json is not valid JSON"):
        nasjax.load(path)
    shutil.copy(saved_model / "nasjax.json", path / "nasjax.json")

    (path / "saved_model.pb").unlink()
    (path / "saved_model.pb").write_bytes(os.urandom(4096))
    for trusted in (False, True):
        with pytest.raises(ExportedModelError, match=re.escape(str(path))):
            nasjax.load(path, trusted=trusted)
    (path / "saved_model.pb").unlink()
    with pytest.raises(ExportedModelError, match="neither a .tflite or .onnx file nor a SavedModel or OpenVINO directory"):
        load_exported(path)
    with pytest.raises(ExportedModelError, match="not a readable SavedModel"):
        exported.SavedModelDetector(path)


# --- damaged .tflite files and export JSONs --------------------------------------------------------


def _tflite_bytes(kind: str, model: bytes) -> bytes:
    return {"random": os.urandom(5000), "tfl3_random": os.urandom(4) + b"TFL3" + os.urandom(5000),
            "truncated_head": model[:len(model) // 2], "truncated_tail": model[:-1000], "empty": b""}[kind]


@pytest.mark.parametrize("sidecar", [True, False], ids=["with_json", "without_json"])
@pytest.mark.parametrize("kind", ["random", "tfl3_random", "truncated_head", "truncated_tail", "empty"])
def test_damaged_tflite(float_tflite, tmp_path, kind, sidecar):
    path = tmp_path / "m.tflite"
    path.write_bytes(_tflite_bytes(kind, float_tflite.read_bytes()))
    if sidecar:
        shutil.copy(float_tflite.with_suffix(".json"), path.with_suffix(".json"))
    with pytest.raises(ExportedModelError, match=re.escape(str(path))):
        nasjax.load(path)
    if kind != "truncated_tail":  # a truncated tail still has its (intact) metadata entry
        with pytest.raises(ExportedModelError, match=re.escape(str(path))):
            tflite.read_metadata(path)


def _edit(info: dict, case: str):
    """The export JSON text for `case` (None: the text itself is the case)."""
    info = json.loads(json.dumps(info))
    field, _, change = case.partition(":")
    if change == "missing":
        del info[field]
    elif change == "unknown":
        info[field] = {"outputs": {"foo": [1, 84, 4], "bar": [1, 84, 80]}, "variant": "yolo_nas_xxl",
                       "input": {**info["input"], "dtype": "int16"}, "model_format": "keras",
                       "nms_model": "../../elsewhere_nms.tflite"}[field]
    else:
        info[field] = json.loads(change)
    return json.dumps(info)


JSON_CASES = [
    *(f"{k}:missing" for k in ("format", "variant", "num_classes", "imgsz", "input", "outputs")),
    *(f"{k}:unknown" for k in ("outputs", "variant", "input", "model_format", "nms_model")),
    'num_classes:"eighty"', "num_classes:0", "num_classes:true", "imgsz:64", "imgsz:[64]", 'imgsz:["64", 64]',
    'input:"x"', "input:{}", "outputs:[1]", 'outputs:{"boxes": 1, "scores": 2}', 'batch:"one"', "batch:-1",
    'config:{"input_size": "x"}', 'nms:{"conf": "x"}', "nms:5", 'nms:{"max_det": -3}', "class_names:3",
    'class_names:["a"]', "quantization:5",
]


@pytest.mark.parametrize("case", JSON_CASES)
def test_bad_export_json(float_tflite, tmp_path, case):
    path = tmp_path / "m.tflite"
    os.link(float_tflite, path)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(_edit(json.loads(float_tflite.with_suffix(".json").read_text()), case))
    with pytest.raises(ExportedModelError, match=f"{re.escape(str(sidecar))}: .*{case.partition(':')[0]}") as error:
        nasjax.load(path)
    assert type(error.value).__name__ == "ExportedModelError"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "null", "\"text\"", b"\xff\xfe{}"])
def test_export_json_that_is_not_one(float_tflite, tmp_path, text):
    path = tmp_path / "m.tflite"
    os.link(float_tflite, path)
    sidecar = path.with_suffix(".json")
    sidecar.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ExportedModelError, match=re.escape(str(sidecar))):
        nasjax.load(path)


def test_export_json_extra_field_and_missing_sidecar(float_tflite, tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    os.link(float_tflite, path)
    info = json.loads(float_tflite.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**info, "added_by_a_newer_nasjax": 1}))
    nasjax.load(path)  # fields are only ever added: a newer file loads
    path.with_suffix(".json").unlink()
    assert nasjax.load(path).metadata == info  # the entry embedded in the .tflite
    monkeypatch.setattr(exported, "MAX_METADATA_BYTES", 100)
    path.with_suffix(".json").write_text(json.dumps(info))
    with pytest.raises(ExportedModelError, match="too large"):
        nasjax.load(path)


def test_tflite_with_a_flex_op_is_refused(float_tflite, tmp_path):
    class Hostile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, S, S, 3], tf.float32)])
        def serve(self, images):
            tf.io.write_file(str(tmp_path / "pwned.txt"), "pwned")
            return {"boxes": tf.zeros([1, 84, 4]), "scores": tf.zeros([1, 84, 80])}

    module = Hostile()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path = tmp_path / "hostile.tflite"
    path.write_bytes(converter.convert())
    shutil.copy(float_tflite.with_suffix(".json"), path.with_suffix(".json"))
    with pytest.raises(ExportedModelError, match=r"custom TFLite operators \['FlexWriteFile'\].*trusted=True"):
        nasjax.load(path)
    assert not (tmp_path / "pwned.txt").exists()


# --- exports on a failing disk keep the earlier export ---------------------------------------------


@pytest.fixture
def cheap_export(float_tflite, monkeypatch):
    """export() with the tracing and the conversion stubbed (the stand-in graph): what remains is the
    metadata and the writing of the files."""
    _stubbed(monkeypatch, float_tflite.read_bytes())

    def run(detector, output, **options):
        return export(detector, "tflite", output, **{"imgsz": 96, **options})  # metadata ≠ the earlier pair's
    return run


def _outputs(path: Path):
    return nasjax.load(path)(images())


def test_sidecar_that_cannot_be_replaced_keeps_the_earlier_pair(detector, float_tflite, cheap_export, tmp_path):
    path = tmp_path / "m.tflite"
    shutil.copy(float_tflite, path)  # the earlier export, its metadata embedded
    path.with_suffix(".json").mkdir()  # its sidecar's place is taken: the new sidecar cannot be renamed there
    before = _outputs(path)
    with pytest.raises(ExportError, match=f"{re.escape(str(path.with_suffix('.json')))}.*nothing was replaced"):
        cheap_export(detector, path)
    after = _outputs(path)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.tflite"]  # no temporary files


@pytest.mark.parametrize("fails", ["model", "sidecar"])
def test_full_disk_keeps_the_earlier_pair(detector, float_tflite, cheap_export, tmp_path, fails):
    pages = -(-float_tflite.stat().st_size // 4096)  # tmpfs counts 4 KiB pages; a sidecar takes one
    free = pages // 2 if fails == "model" else pages  # room for half the new model, or for all of it but its sidecar
    with small_disk(tmp_path, f"{4 * (pages + 1 + free)}k") as disk:
        path = disk / "m.tflite"
        shutil.copy(float_tflite, path)
        shutil.copy(float_tflite.with_suffix(".json"), path.with_suffix(".json"))
        before = _outputs(path)
        failed = path if fails == "model" else path.with_suffix(".json")
        with pytest.raises(ExportError, match=f"could not write {re.escape(str(failed))}: No space left on device.*"
                                              f"nothing was replaced"):
            cheap_export(detector, path, nms=False)
        np.testing.assert_array_equal(before[1], _outputs(path)[1])
        assert sorted(p.name for p in disk.iterdir()) == ["m.json", "m.tflite"]


def test_read_only_folder_is_one_error(detector, cheap_export, tmp_path):
    with read_only_dir(tmp_path) as folder:
        with pytest.raises(ExportError, match="Read-only file system.*nothing was replaced"):
            cheap_export(detector, folder / "m.tflite")
        assert list(folder.iterdir()) == []


def test_full_disk_saved_model_keeps_the_earlier_one(detector, saved_model, tmp_path):
    size = sum(f.stat().st_size for f in saved_model.rglob("*") if f.is_file())
    with small_disk(tmp_path, f"{(size * 3 // 2) // 2**20}m") as disk:
        path = disk / "sm"
        shutil.copytree(saved_model, path)
        before = {f: f.read_bytes() for f in path.rglob("*") if f.is_file()}
        with pytest.raises(ExportError, match="No space left on device.*nothing was replaced"):
            export(detector, "saved_model", path, imgsz=S)
        # the same files (test_nasjax_saved_model_passes_the_scan runs them)
        assert {f: f.read_bytes() for f in path.rglob("*") if f.is_file()} == before
        assert [p.name for p in disk.iterdir()] == ["sm"]
