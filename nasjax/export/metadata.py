"""The contract between an exported file and its runner: the names in the graph (signature, inputs,
outputs), the export JSON (docs/export.md#metadata) and where it lives.

The runners (`runners.py`) read what this module writes; it imports neither jax nor TensorFlow.
The JSON format is versioned by `format_version`; fields are only ever added.
"""
from __future__ import annotations

import os
from pathlib import Path

from nasjax.export.options import ExportOptions

METADATA_FORMAT = "nasjax-export"
METADATA_VERSION = 1
TFLITE_METADATA_NAME = "nasjax"  # the TFLite metadata entry (and ONNX metadata_props key) holding the JSON
SAVED_MODEL_METADATA_FILE = "nasjax.json"  # in a SavedModel or OpenVINO export directory
OPENVINO_MODEL_FILE = "model.xml"  # an OpenVINO export directory's IR (with model.bin)
SIGNATURE = "serving_default"
INPUT_NAME = "images"
# docs/export.md#output-names: outputs are read by name, never by index.
HOST_TAIL_OUTPUTS = ("reg_distri", "cls_logits")
DECODED_OUTPUTS = ("boxes", "scores")
DETECTION_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
# Formats whose graph ends in NMS with nms=True (TFLite writes a separate NMS file), and those whose input
# is channels-first (ONNX consumers expect NCHW; docs/export.md#onnx).
GRAPH_NMS_FORMATS = ("saved_model", "onnx", "openvino")
NCHW_FORMATS = ("onnx", "openvino")
# target="frigate": one output of super-gradients' "flat" detection rows (docs/export.md#frigate).
FRIGATE_OUTPUT = "output"
FRIGATE_COLUMNS = ("image", "x1", "y1", "x2", "y2", "score", "class")


class ExportedModelError(ValueError):
    """An exported model that cannot be run: a file that is not a model nasjax wrote (damaged, truncated,
    another program's), missing or invalid metadata, an unexpected signature. The message names the file."""


def metadata_path(model_path: str | os.PathLike) -> Path:
    """Where the JSON of an exported model lives: `<dir>/nasjax.json` for a SavedModel or OpenVINO
    directory, `<name>.json` beside a .tflite or .onnx file (an ONNX file also holds it in its
    `metadata_props`)."""
    path = Path(model_path)
    if path.suffix.lower() in (".tflite", ".onnx"):
        return path.with_suffix(".json")
    return path / SAVED_MODEL_METADATA_FILE


def nms_model_path(model_path: str | os.PathLike) -> Path:
    """The separate NMS graph of a .tflite export: `<name>_nms.tflite` beside it (docs/export.md#nms)."""
    path = Path(model_path)
    return path.with_name(path.stem + "_nms.tflite")


def detection_shapes(batch: int | None, max_det: int) -> dict[str, list]:
    return {"detection_boxes": [batch, max_det, 4], "detection_scores": [batch, max_det],
            "detection_classes": [batch, max_det], "num_detections": [batch]}


def output_shapes(detector, options: ExportOptions) -> dict[str, list]:
    """The graph's outputs, name → shape (None: the symbolic batch), in signature order."""
    from nasjax.model import box_decoding

    s, b = options.imgsz, options.batch
    n = box_decoding.num_anchors(s, s, detector.config.strides)
    c, r = detector.num_classes, 4 * (detector.config.reg_max + 1)
    if options.host_tail:
        outputs = {"reg_distri": [b, n, r], "cls_logits": [b, n, c]}
    else:
        outputs = {"boxes": [b, n, 4], "scores": [b, n, c]}
    if options.target == "frigate":
        return {FRIGATE_OUTPUT: [None, len(FRIGATE_COLUMNS)]}
    if options.nms and options.format in GRAPH_NMS_FORMATS:
        outputs.update(detection_shapes(b, options.nms.max_det))
    return outputs


def build_metadata(detector, options: ExportOptions, outputs: dict[str, list], nms_file: str | None) -> dict:
    """The export JSON of a model (docs/export.md#metadata)."""
    from nasjax import __version__
    from nasjax.predict.predictor import class_names_of

    config, weights = detector.config, detector.preprocessing
    names = class_names_of(detector)
    s = options.imgsz
    int8 = options.int8
    uint8_in = int8 or options.target == "frigate"  # pixels 0..255 in
    nchw = options.format in NCHW_FORMATS
    return {
        "format": METADATA_FORMAT,
        "format_version": METADATA_VERSION,
        "nasjax_version": __version__,
        "model_format": options.format,
        "variant": config.name,
        "num_classes": detector.num_classes,
        "class_names": [names[i] for i in range(detector.num_classes)],
        "imgsz": [s, s],
        "batch": options.batch,
        "quantization": options.quantization,
        "input": {
            "name": INPUT_NAME,
            "shape": [options.batch, 3, s, s] if nchw else [options.batch, s, s, 3],
            "layout": "NCHW" if nchw else "NHWC",
            "channels": "BGR" if options.target == "frigate" else "RGB",
            "dtype": "uint8" if uint8_in else "float32",
            "values": "pixels 0..255" if uint8_in else "pixels / 255, in [0, 1]",
        },
        "outputs": outputs,
        "target": options.target,
        "int8_tail": options.int8_tail if int8 else None,
        "reg_max": config.reg_max,
        "strides": list(config.strides),
        "preprocess": {
            "method": options.preprocess,
            "imgsz": s,
            "resize_longest_side": s - (weights.input_size - weights.resize_longest_side),
            "pad_value": weights.pad_value,
            "interpolation": "bilinear (cv2 INTER_LINEAR)",
            "scale": "1/255" if not uint8_in else None,
        },
        "config": {"input_size": weights.input_size, "resize_longest_side": weights.resize_longest_side,
                   "pad_value": weights.pad_value},
        "nms": options.nms.to_dict() if options.nms else None,
        "nms_model": nms_file,
        "calibration": ({"source": options.calibration_source, "images": len(options.calibration)}
                        if int8 else None),
    }


def build_nms_metadata(options: ExportOptions, model_name: str, num_anchors: int, num_classes: int) -> dict:
    """The JSON embedded in `<name>_nms.tflite` (`"kind": "nms"`)."""
    b = options.batch
    return {"format": METADATA_FORMAT, "format_version": METADATA_VERSION, "kind": "nms",
            "model": model_name, "nms": options.nms.to_dict(), "batch": b,
            "inputs": {"boxes": [b, num_anchors, 4], "scores": [b, num_anchors, num_classes], "conf": [], "iou": []},
            "outputs": detection_shapes(b, options.nms.max_det)}


def nms_settings_of(info: dict | None):
    """The `NMSSettings` recorded in an export JSON's "nms" field (None when absent); fields this version
    does not know are ignored, so that older readers accept newer files."""
    import dataclasses

    from nasjax.model.nms import NMSSettings

    if not info:
        return None
    known = {f.name for f in dataclasses.fields(NMSSettings)}
    return NMSSettings(**{k: v for k, v in info.items() if k in known})
