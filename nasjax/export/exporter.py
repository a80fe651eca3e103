"""Export a model to a TensorFlow SavedModel, a TFLite flatbuffer, an ONNX file or an OpenVINO model:
`export()` runs the stages.

    nasjax.export.export(model, format="saved_model", output="yolo_nas_s_saved_model")
    nasjax export --model yolo_nas_s --format tflite --int8 --data coco128/images --output s_int8.tflite

One job per module (docs/export.md explains each choice):

    options.py    check_options → ExportOptions; calibration image files; the output path
    versions.py   the jax / TF versions export is verified with (#versions); importing TF
    graph.py      jax2tf of the network and the NMS, SavedModel writing (#route, #stablehlo, #batch)
    tflite.py     TFLite conversion: float16 (#float16), INT8 calibration (#int8); TFLite metadata
    metadata.py   the export JSON, output names and paths the runners read (#metadata, #output-names)
    onnx_graph.py jax2onnx of the network, ONNX Runtime's graph clean-up, float16 (#onnx)
    onnx_nms.py   NMS at the end of the ONNX graph in ONNX's NonMaxSuppression (#onnx-nms)
    openvino.py   the ONNX graph in OpenVINO, INT8 by NNCF; its runner (#openvino)
    runners.py    what `nasjax.load` gives for an exported file (onnx_runners.py: ONNX Runtime)

What each format holds (RGB images, NHWC for TFLite and SavedModel, NCHW for ONNX and OpenVINO; inputs
and outputs are named):

* SavedModel: input `images` (B, H, W, 3) float32 in [0, 1] with a symbolic batch B (or a fixed one
  with `batch=`); outputs `boxes` (B, N, 4) xyxy input pixels and `scores` (B, N, C) after sigmoid. With
  `nms=True` also `detection_boxes` (B, max_det, 4), `detection_scores`, `detection_classes`,
  `num_detections`: nasjax's greedy NMS (nasjax.model.nms) inside the graph with the export's
  `NMSSettings` baked in (#nms).
* TFLite, float32 or float16 weights (`half=True`): input `images` (batch, H, W, 3) float32 in [0, 1]
  with a fixed batch (#batch); outputs `boxes`, `scores`.
* TFLite, full-integer INT8 (`int8=True`): input `images` uint8 pixels 0..255, calibrated on real
  images pre-processed exactly as predict() does (#int8). `int8_tail="host"` (default) ends the graph
  at the raw head outputs `reg_distri`, `cls_logits` and the runners decode them in float on the host;
  "graph" quantizes the tail too (#host-tail).
* NMS for TFLite (`nms=True`): a separate float32 `<name>_nms.tflite` with inputs `boxes`, `scores`,
  `conf`, `iou`; never inside the INT8 graph (#nms).
* ONNX (float32, or float16 arithmetic with `half=True`): input `images` (B, 3, H, W) float32 in
  [0, 1], NCHW, with a symbolic batch (or `batch=`); outputs `boxes`, `scores`, and with `nms=True` the
  four detection_* outputs from ONNX's NonMaxSuppression with the same decisions as nasjax's NMS.
* OpenVINO: the same graph as OpenVINO IR (`model.xml`, `model.bin` in a directory), float32, float16
  weights or INT8 quantized by NNCF on calibration images (`int8=True`, `data=`).

Beside every export a JSON (`<name>.json` beside a .tflite or .onnx, `nasjax.json` inside a SavedModel or
OpenVINO directory) records the class names, input size, pre-processing, input encoding, outputs, quantization
and NMS settings; TFLite files carry the same JSON as a `nasjax` metadata entry, ONNX files as a `nasjax` metadata_props
entry (#metadata).

Files are replaced as a unit, so that a failure (a full or read-only disk, a directory in the way)
leaves the earlier export working: a SavedModel directory is staged beside its target and renamed over
it; the files of a TFLite export (`.tflite`, `.json`, `_nms.tflite`) are all written in full beside
their targets before the first is renamed, and a failed rename puts the earlier files back. A write
that fails raises one `ExportError` naming the file and the cause.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
import tempfile
import time
import uuid
from pathlib import Path

from nasjax.export import graph, metadata, tflite, versions
from nasjax.export.metadata import (SAVED_MODEL_METADATA_FILE, TFLITE_METADATA_NAME, build_metadata, metadata_path,
                                    nms_model_path)
from nasjax.export.options import (DEFAULT_INT8_TAIL, ExportError, ExportOptions,
                                   check_options, default_output)
from nasjax.export.options import check_output as _check_output
from nasjax.utils.atomic_files import replace_directory


def export(
    detector,
    format: str = "tflite",
    output: str | os.PathLike | None = None,
    *,
    imgsz: int | None = None,
    batch: int | None = None,
    int8: bool = False,
    half: bool = False,
    data=None,
    calib_images: int = 300,
    int8_tail: str = DEFAULT_INT8_TAIL,
    nms: bool = False,
    conf: float = 0.25,
    iou: float = 0.7,
    top_k: int = 1024,
    max_det: int = 300,
    multi_label: bool = True,
    agnostic: bool = False,
    preprocess: str = "centre_pad",
    target: str | None = None,
    verbose: bool = False,
) -> Path:
    """Export `detector` (a `Detector` or `nasjax.model.core.Network`); returns the path of the model
    written (a .tflite or .onnx file, a SavedModel or OpenVINO folder).

    format: "tflite", "saved_model", "onnx" or "openvino". output: default (in the working directory)
        `<variant>_<float32|float16|int8>.tflite`, `<variant>_saved_model`, `<variant>_<float32|float16>.onnx`
        or `<variant>_<float32|float16|int8>_openvino_model`; its directory must exist.
    imgsz: square input side, a multiple of 32 (default: the model's 640).
    batch: TFLite: the fixed batch (default 1); the others: None (default) for a symbolic batch.
    int8: full-integer TFLite with uint8 input, or OpenVINO quantized by NNCF, calibrated on `data` (a
        folder of images, a dataset YAML, a list of files) with at most `calib_images` images.
        int8_tail (TFLite): "host" or "graph" (docs/export.md#host-tail). half: float16 weights (ONNX:
        float16 arithmetic too, float32 input and outputs).
    nms: SavedModel, ONNX, OpenVINO: NMS inside the graph (conf, iou, top_k, max_det, multi_label,
        agnostic baked in); TFLite: a separate float32 `<name>_nms.tflite`.
    preprocess: the pre-processing the model is meant for (recorded; calibration images use it).
    target: "frigate" (ONNX): uint8 BGR input and super-gradients' flat detections, as Frigate NVR's
        yolonas model type reads them (docs/export.md#frigate); NMS inside, batch 1.
    Every option is checked before any work: bad ones raise `ExportError`; so does a jax that cannot
    export this graph (docs/export.md#versions), and a missing TensorFlow raises `ExportDependencyError`.
    """
    options = check_options(
        format, imgsz=detector.preprocessing.input_size if imgsz is None else imgsz, batch=batch, int8=int8, half=half,
        data=data, calib_images=calib_images, int8_tail=int8_tail, nms=nms, conf=conf, iou=iou, top_k=top_k,
        max_det=max_det, multi_label=multi_label, agnostic=agnostic, preprocess=preprocess, target=target,
    )
    output = Path(output) if output is not None else default_output(detector, options)
    _check_output(output, options)
    return _export(detector, options, output, verbose)


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr)


def _export(detector, options: ExportOptions, output: Path, verbose: bool = False) -> Path:
    """The work, on checked options: versions, graph, conversion, metadata, files (written atomically)."""
    if options.format in ("onnx", "openvino"):
        return _export_onnx(detector, options, output, verbose)
    verified = versions.check_versions(uses_top_k=options.nms is not None,
                                       symbolic_batch=options.format == "saved_model" and options.batch is None)
    start = time.perf_counter()
    outputs = metadata.output_shapes(detector, options)
    with versions.translate_failures(verified):
        if options.format == "saved_model":
            with _writing(output), replace_directory(output) as staging:
                graph.save_network(detector, options, staging)
                info = build_metadata(detector, options, outputs, None)
                (staging / SAVED_MODEL_METADATA_FILE).write_text(json.dumps(info, indent=1) + "\n")
            _log(verbose, f"wrote {output} in {time.perf_counter() - start:.1f} s")
            return output

        with tempfile.TemporaryDirectory(prefix="nasjax-export-") as tmp:
            with _writing(output, Path(tmp)):  # the graph is staged in the temporary folder
                graph.save_network(detector, options, Path(tmp))
            _log(verbose, f"traced and saved the graph in {time.perf_counter() - start:.1f} s; converting"
                 + (f" with {len(options.calibration)} calibration images" if options.int8 else ""))
            model = tflite.convert(tmp, options, detector.preprocessing)
        files = {}
        if options.nms:
            files[nms_model_path(output)] = _export_nms_tflite(detector, options, output, outputs)
    info = build_metadata(detector, options, outputs, nms_model_path(output).name if options.nms else None)
    text = json.dumps(info, indent=1) + "\n"
    model = tflite.add_metadata(model, TFLITE_METADATA_NAME, text.encode())
    with _writing(output):
        _replace_files({output: model, metadata_path(output): text.encode(), **files})
    _log(verbose, f"wrote {output} ({len(model) / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return output


def onnx_model(detector, options: ExportOptions, outputs: dict[str, list]):
    """The ONNX ModelProto of an ONNX or OpenVINO export: the network (onnx_graph.py), the NMS with
    options.nms (onnx_nms.py), the export JSON in its metadata_props (docs/export.md#onnx)."""
    from nasjax.export import onnx_graph, onnx_nms

    model = onnx_graph.convert_network(detector, options)
    if options.nms:
        anchors = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
        model = onnx_nms.append_nms(model, options.nms, anchors, detector.num_classes)
    if options.target == "frigate":
        from nasjax.export import frigate

        model = frigate.wrap(model)
    info = build_metadata(detector, options, outputs, None)
    onnx_graph.set_metadata(model, onnx_graph.metadata_entries(info))
    return model, info


def _export_onnx(detector, options: ExportOptions, output: Path, verbose: bool) -> Path:
    """A .onnx file (+ its JSON beside it), or an OpenVINO directory converted from the same graph."""
    from nasjax.export import onnx_graph

    openvino = None
    if options.format == "openvino":
        from nasjax.export import openvino

        openvino.check_dependencies(options)  # before the trace
    start = time.perf_counter()
    outputs = metadata.output_shapes(detector, options)
    model, info = onnx_model(detector, options, outputs)
    _log(verbose, f"traced and converted to ONNX in {time.perf_counter() - start:.1f} s")
    text = json.dumps(info, indent=1) + "\n"
    if openvino is not None:
        with _writing(output), replace_directory(output) as staging:
            openvino.save(model, options, detector.preprocessing, staging, verbose=verbose)
            (staging / SAVED_MODEL_METADATA_FILE).write_text(text)
    else:
        data = onnx_graph.serialized(model)
        with _writing(output):
            _replace_files({output: data, metadata_path(output): text.encode()})
    _log(verbose, f"wrote {output} in {time.perf_counter() - start:.1f} s")
    return output


def _export_nms_tflite(detector, options: ExportOptions, output: Path, outputs: dict[str, list]) -> bytes:
    """`<name>_nms.tflite` (float32, with its own metadata entry)."""
    first = next(iter(outputs.values()))
    num_anchors, num_classes = first[1], detector.num_classes
    with tempfile.TemporaryDirectory(prefix="nasjax-nms-") as tmp:
        with _writing(output, Path(tmp)):
            graph.save_nms(options.nms, options.batch, num_anchors, num_classes, Path(tmp))
        model = tflite.convert(tmp)
    info = metadata.build_nms_metadata(options, output.name, num_anchors, num_classes)
    return tflite.add_metadata(model, TFLITE_METADATA_NAME, json.dumps(info).encode())


@contextlib.contextmanager
def _writing(output: Path, where: Path | None = None):
    """A write (in `where`, default `output`) that fails — disk full, read-only, not allowed, from Python
    or from TensorFlow's own file writes — becomes one ExportError naming the file and the cause, and
    saying that `output` was not replaced."""
    unchanged = f"nothing was replaced (an earlier {output} is unchanged)"
    try:
        yield
    except OSError as e:
        raise ExportError(f"could not write {e.filename or where or output}: {e.strerror or e}; {unchanged}") from e
    except Exception as e:
        tf = sys.modules.get("tensorflow")
        if tf is None or not isinstance(e, (tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError)):
            raise
        cause = re.sub(r"\{\{.*?\}\}\s*", "", " ".join(str(e).split())) or type(e).__name__  # less TF's node tag
        raise ExportError(f"could not write {where or output}: {cause[-400:]}; {unchanged}") from e


def _replace_files(files: dict[Path, bytes]) -> None:
    """Write `files` ({target: bytes}) so that they replace their targets together: every file is written
    in full beside its target first (a full disk fails here, before any target changes); then each is
    renamed over its target, the earlier file kept as a hard link until all are in place; a rename that
    fails puts every earlier file back. No temporary file is left either way."""
    tag = uuid.uuid4().hex[:12]
    staged = {target: target.parent / f".{target.name}.{tag}.tmp" for target in files}
    backups: dict[Path, Path | None] = {}  # target → its earlier file (None: there was none)
    try:
        for target, data in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(staged[target], "xb") as f:
                    f.write(data)
            except OSError as e:  # name the target, not the temporary file
                raise OSError(e.errno, e.strerror, str(target)) from e
        for target, tmp in staged.items():
            backup = None
            if os.path.isdir(target) and not os.path.islink(target):
                raise IsADirectoryError(errno.EISDIR, "a directory is in the way", str(target))
            if os.path.lexists(target):
                backup = target.parent / f".{target.name}.{tag}.old"
                try:
                    os.link(target, backup, follow_symlinks=False)
                except OSError:  # a filesystem without hard links: the target is missing until the rename
                    os.rename(target, backup)
            backups[target] = backup
            os.replace(tmp, target)
    except BaseException:
        for target, backup in backups.items():  # undo, in any order: each target is independent
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, target)
                elif not os.path.lexists(staged[target]):  # the new file is in place: there was none before
                    os.unlink(target)
        raise
    finally:
        for path in [*staged.values(), *(b for b in backups.values() if b is not None)]:
            with contextlib.suppress(OSError):
                os.unlink(path)


# --- command line ----------------------------------------------------------------------------------
