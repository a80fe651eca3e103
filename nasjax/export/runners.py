"""Run exported models (written by nasjax.export.exporter) with the batch interface of the JAX network.

    model = nasjax.load("yolo_nas_s_int8.tflite")        # or a SavedModel directory
    boxes, scores = model(images)                         # (B, H, W, 3) float RGB in [0, 1]
    results = model.predict("bus.jpg")                    # the same `Results` as the JAX model

`nasjax.export.loader.load_exported` returns a runner (these, onnx_runners.py's, openvino.py's); `nasjax.load` adds predict / val to it (nasjax.detector), and
predict and validate call its `batch_size_for` and `detect_batch` (nasjax.model.core.BatchDetector).

TFLite files run in the LiteRT interpreter (`ai_edge_litert`, through the signature runner: outputs are
read by name); SavedModels in TensorFlow. What the host adds, so that every export gives the same
(boxes, scores) and detections as the JAX model:

* input encoding: float models take pixels / 255 (the exact super-gradients table), INT8 models the
  uint8 pixels themselves;
* a fixed export batch: inputs are split into chunks of it and the last chunk is padded;
* the decode tail of INT8 models exported with `int8_tail="host"` (DFL softmax + integral and
  sigmoid, in float32, in JAX: the same code as the model's own head; docs/export.md#host-tail);
* NMS: nasjax.model.nms jitted on the host (the same function predict() uses) unless the SavedModel
  has NMS inside with the same `NMSSettings`, or `nms="tflite"` asks for the exported
  `<name>_nms.tflite` (docs/export.md#nms).

Outputs are read by name from the `serving_default` signature (docs/export.md#output-names).

An exported file is checked before it runs: its export JSON against what the exporter writes (a
damaged or foreign file is an `ExportedModelError` naming the file and the field, never a bare
KeyError), a SavedModel's graph against the ops nasjax's exports contain and a .tflite's against
TFLite's built-in operators (nasjax.export.scan, docs/export.md#trusted; `trusted=True` skips this).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.configs import VARIANTS, get_config
from nasjax.data import preprocessing
from nasjax.export.metadata import (
    DECODED_OUTPUTS,
    DETECTION_OUTPUTS,
    GRAPH_NMS_FORMATS,
    HOST_TAIL_OUTPUTS,
    INPUT_NAME,
    METADATA_FORMAT,
    SIGNATURE,
    TFLITE_METADATA_NAME,
    ExportedModelError,
    metadata_path,
    nms_settings_of,
)
from nasjax.export.options import FORMATS
from nasjax.export.tflite import read_metadata as read_tflite_metadata
from nasjax.model import box_decoding, nms
from nasjax.model.core import check_images
from nasjax.model.nms import NMSSettings
from nasjax.weights.registry import COCO_PREPROCESSING, Preprocessing


# An export JSON is a few KiB (class names included); a larger "sidecar" is not one.
MAX_METADATA_BYTES = 16 * 2**20


def read_export_metadata(path: str | os.PathLike, embedded: tuple[bytes | str | None, str] | None = None
                         ) -> dict[str, Any]:
    """The export JSON of an exported model, checked (`check_metadata`): the sidecar beside a .tflite or
    .onnx file (`nasjax.json` in a SavedModel or OpenVINO directory) when there is one, else the copy in
    the file: a .tflite's metadata entry, or `embedded` = (the text, where it was read) that a runner
    found (an ONNX file's metadata_props)."""
    path = Path(path)
    sidecar = metadata_path(path)
    data, source = None, sidecar
    if sidecar.is_file():
        if sidecar.stat().st_size > MAX_METADATA_BYTES:
            raise ExportedModelError(f"{sidecar} ({sidecar.stat().st_size} bytes) is too large to be the export "
                                     f"JSON of {path}; export the model again")
        data = sidecar.read_bytes()
    elif embedded is not None:
        data, source = embedded
    elif path.suffix.lower() == ".tflite":
        data, source = read_tflite_metadata(path), f"the '{TFLITE_METADATA_NAME}' metadata entry of {path}"
    if data is None:
        raise ExportedModelError(f"{path} has no nasjax export metadata ({sidecar} or a '{TFLITE_METADATA_NAME}' "
                                 "metadata entry in the file); export it with nasjax export / model.export()")
    if len(data) > MAX_METADATA_BYTES:
        raise ExportedModelError(f"{source} is too large to be an export JSON; export the model again")
    try:
        info = json.loads(data)
    except ValueError as e:  # invalid JSON or not UTF-8
        raise ExportedModelError(f"{source} is not valid JSON ({e}); export the model again") from e
    return check_metadata(info, source)


def check_metadata(info: Any, source: str | os.PathLike) -> dict[str, Any]:
    """`info` if it is an export JSON this version can run (the fields and types `build_metadata`
    writes), else `ExportedModelError` naming `source` and the field. Fields this version does not
    know are ignored: the format only ever adds fields (nasjax/export/metadata.py)."""
    def fail(what: str):
        raise ExportedModelError(f"{source}: {what}; it is not an export JSON this nasjax can run "
                                 "(export the model again, or restore the JSON the export wrote)")

    def is_int(value, low: int = 1) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= low

    if not isinstance(info, dict) or info.get("format") != METADATA_FORMAT:
        fail(f"not a nasjax export description (no \"format\": \"{METADATA_FORMAT}\")")
    if info.get("kind") == "nms":
        raise ExportedModelError(f"{source} describes the NMS graph of {info.get('model')}; load that model instead")
    if info.get("target") == "frigate":
        raise ExportedModelError(f"{source} describes a Frigate export (uint8 BGR in, flat detections out, "
                                 "docs/export.md#frigate): run it in Frigate, or export without target=frigate "
                                 "for nasjax.load")
    missing = [k for k in ("variant", "num_classes", "imgsz", "input", "outputs") if k not in info]
    if missing:
        fail(f"missing field(s) {', '.join(missing)}")
    if info["variant"] not in VARIANTS:
        fail(f"unknown variant {info['variant']!r} (known: {', '.join(VARIANTS)})")
    if info.get("model_format", "tflite") not in FORMATS:
        fail(f"unknown model_format {info['model_format']!r}")
    if not is_int(info["num_classes"]):
        fail(f"num_classes must be a positive integer, got {info['num_classes']!r}")
    names = info.get("class_names")
    if names is not None and not (isinstance(names, list) and len(names) == info["num_classes"]
                                  and all(isinstance(n, str) for n in names)):
        fail(f"class_names must be a list of {info['num_classes']} strings")
    imgsz = info["imgsz"]
    if not (isinstance(imgsz, list) and len(imgsz) == 2 and all(is_int(v) for v in imgsz)):
        fail(f"imgsz must be [height, width] in pixels, got {imgsz!r}")
    if info.get("batch") is not None and not is_int(info["batch"]):
        fail(f"batch must be a positive integer or null, got {info['batch']!r}")
    if not isinstance(info.get("quantization", ""), str):
        fail(f"quantization must be a string, got {info['quantization']!r}")
    inputs = info["input"]
    if not (isinstance(inputs, dict) and inputs.get("dtype") in ("uint8", "float32")):
        fail(f"input must describe the input tensor with a dtype uint8 or float32, got {inputs!r}"[:300])
    outputs = info["outputs"]
    if not (isinstance(outputs, dict) and all(isinstance(v, list) for v in outputs.values())):
        fail(f"outputs must map output names to shapes, got {outputs!r}"[:300])
    heads = [names for names in (DECODED_OUTPUTS, HOST_TAIL_OUTPUTS) if set(names) <= set(outputs)]
    if len(heads) != 1 or set(outputs) - set(heads[0]) - set(DETECTION_OUTPUTS):
        fail(f"unknown outputs {sorted(outputs)} (expected {' and '.join(DECODED_OUTPUTS)} or "
             f"{' and '.join(HOST_TAIL_OUTPUTS)}, and optionally {', '.join(DETECTION_OUTPUTS)})")
    config = info.get("config") or {}
    if not (isinstance(config, dict) and all(is_int(v, 0) for v in config.values())):
        fail(f"config must map pre-processing numbers to integers, got {config!r}"[:300])
    nms_model = info.get("nms_model")
    if nms_model is not None and not (isinstance(nms_model, str) and nms_model and Path(nms_model).name == nms_model):
        fail(f"nms_model must be a file name beside the model, got {nms_model!r}")
    try:
        nms_settings_of(info.get("nms"))
    except (TypeError, ValueError, AttributeError) as e:
        fail(f"invalid nms settings {info.get('nms')!r} ({e})")
    return info


# The host-side tail and NMS, jitted once per shape and option set.


def _decode_tail(reg_distri, cls_logits, imgsz, strides, reg_max):
    sizes = [(imgsz[0] // s, imgsz[1] // s) for s in strides]
    grid = box_decoding.make_anchors(sizes, strides)
    boxes = box_decoding.decode_dfl_boxes(reg_distri, grid.anchor_points, grid.stride_tensor, reg_max)
    return boxes, jax.nn.sigmoid(cls_logits.astype(jnp.float32))


_jit_decode_tail = jax.jit(_decode_tail, static_argnames=("imgsz", "strides", "reg_max"))


def _host_detect(first, second, conf, iou, *, host_tail, imgsz, strides, reg_max, top_k, max_det, multi_label,
                 agnostic):
    """(boxes, scores), or (reg_distri, cls_logits) with host_tail → padded detections."""
    boxes, scores = _decode_tail(first, second, imgsz, strides, reg_max) if host_tail else (first, second)
    return nms.non_max_suppression(boxes, scores, conf, iou, top_k=top_k, max_det=max_det,
                                   multi_label=multi_label, agnostic=agnostic)


_jit_host_detect = jax.jit(_host_detect, static_argnames=(
    "host_tail", "imgsz", "strides", "reg_max", "top_k", "max_det", "multi_label", "agnostic"))


class ExportedDetector:
    """Common part of the runners: metadata, input encoding, batching, decode tail, NMS, predict."""

    backend = "exported"

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None):
        self.path = Path(path)
        self.metadata = check_metadata(metadata, "metadata=") if metadata is not None else read_export_metadata(path)
        m = self.metadata
        base = m.get("config") or {}  # the weights' pre-processing numbers (older files: the same keys)
        self.config = get_config(m["variant"], num_classes=int(m["num_classes"]))
        size = int(base.get("input_size", COCO_PREPROCESSING.input_size))
        self.preprocessing = Preprocessing(
            resize_longest_side=int(base.get("resize_longest_side", COCO_PREPROCESSING.resize_longest_side)),
            pad_to=(size, size), pad_value=int(base.get("pad_value", COCO_PREPROCESSING.pad_value)))
        self.class_names = list(m["class_names"]) if m.get("class_names") else None
        self.imgsz = tuple(m["imgsz"])
        self.batch = m.get("batch")  # None: any batch
        self.quantization = m.get("quantization", "float32")
        self.form = f"exported {m.get('model_format')} {self.quantization}"
        self.uint8_input = m["input"]["dtype"] == "uint8"  # checked: uint8 or float32
        self.output_names = tuple(m["outputs"])
        self.host_tail = "reg_distri" in self.output_names
        # The NMS settings baked into a SavedModel's graph (None: no NMS inside).
        self.graph_nms = nms_settings_of(m.get("nms")) if m.get("model_format") in GRAPH_NMS_FORMATS else None

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {self.config.name}, {self.quantization}, imgsz={self.imgsz})"

    # --- backend --------------------------------------------------------------------------------

    def _invoke(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """One call of the exported graph on a batch of its own size (`self.batch` when fixed)."""
        raise NotImplementedError

    def outputs(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's named outputs for a batch of inputs already in its input encoding (uint8 pixels
        for INT8, float32 [0, 1] otherwise), any batch size."""
        if self.batch is None or len(inputs) == self.batch:
            return self._invoke(inputs)
        chunks = []
        for start in range(0, len(inputs), self.batch):
            chunk = inputs[start: start + self.batch]
            n = len(chunk)
            if n < self.batch:
                chunk = np.concatenate([chunk, np.zeros((self.batch - n, *chunk.shape[1:]), chunk.dtype)])
            chunks.append({k: v[:n] for k, v in self._invoke(chunk).items()})
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    # --- the Detector interface -----------------------------------------------------------------

    def _check_size(self, shape) -> None:
        if tuple(shape[1:3]) != self.imgsz:
            h, w = self.imgsz
            raise ValueError(f"this model was exported for {h}x{w} inputs, got {shape[1]}x{shape[2]}; "
                             f"export again with imgsz={shape[1]} or resize the images")

    def _encode(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels → the graph's input encoding."""
        return pixels if self.uint8_input else preprocessing.to_unit_float(pixels)

    def _decoded(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if not self.host_tail:
            return outputs["boxes"], outputs["scores"]
        boxes, scores = _jit_decode_tail(outputs["reg_distri"], outputs["cls_logits"], **self._tail_options())
        return np.asarray(boxes), np.asarray(scores)

    def _tail_options(self) -> dict:
        return {"imgsz": self.imgsz, "strides": tuple(self.config.strides), "reg_max": self.config.reg_max}

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (B, N, 4) xyxy input pixels, scores (B, N, C)) for (B, H, W, 3) float RGB in [0, 1], as
        numpy arrays (INT8 models see the images rounded to uint8 pixels)."""
        check_images(images)
        self._check_size(images.shape)
        images = np.asarray(images, np.float32)
        if self.uint8_input:
            inputs = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
        else:
            inputs = images
        return self._decoded(self.outputs(inputs))

    def _nms_in_graph(self, settings: NMSSettings) -> bool:
        """The graph's own NMS gives these settings' detections: the same static settings and the same
        float32 thresholds."""
        return _same_nms(self.graph_nms, settings, thresholds=True)

    def batch_size_for(self, requested: int) -> int:
        """The exported batch when the file has a fixed one, else `requested`."""
        return self.batch or int(requested)

    def detect_batch(self, images: np.ndarray, settings: NMSSettings = NMSSettings(), dtype=None) -> nms.Detections:
        """(B, H, W, 3) uint8 network inputs (pre-processed) → padded `nms.Detections` of numpy arrays in
        network-input pixels: the batch interface predict and validate call (nasjax.model.core.BatchDetector)."""
        if dtype is not None:
            raise ValueError(f"dtype does not apply to an exported model (it computes in {self.quantization})")
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise TypeError(f"detect_batch takes (B, H, W, 3) uint8 images, got {images.dtype} {images.shape}")
        self._check_size(images.shape)
        outputs = self.outputs(self._encode(images))
        if self._nms_in_graph(settings):
            return nms.Detections(*(outputs[k] for k in DETECTION_OUTPUTS))
        detections = self._exported_nms(outputs, settings)
        if detections is not None:
            return detections
        names = ("reg_distri", "cls_logits") if self.host_tail else ("boxes", "scores")
        raw = (outputs[names[0]], outputs[names[1]])
        detections = _jit_host_detect(*raw, np.float32(settings.conf), nms.iou_compare_threshold(settings.iou),
                                      host_tail=self.host_tail, **self._tail_options(), **settings.static())
        return jax.device_get(detections)

    def _exported_nms(self, outputs, settings: NMSSettings) -> nms.Detections | None:
        """Detections from an exported NMS graph when one is in use and fits `settings`, else None."""
        return None

    def check_predict_options(self, options: dict) -> None:
        """predict()'s options that an exported model fixes: imgsz defaults to (and must equal) the
        exported size; dtype is not an option."""
        h, w = self.imgsz
        imgsz = options.setdefault("imgsz", h)
        if h != w or imgsz != h:
            raise ValueError(f"this model was exported for {h}x{w} inputs; predict needs imgsz={h}")
        if options.get("dtype") is not None:
            raise ValueError(f"dtype does not apply to an exported model (it computes in {self.quantization})")

    def info(self) -> str:
        m = self.metadata
        text = (f"{self.config.name} exported as {m.get('model_format')} ({self.quantization}): {self.path}\n"
                f"input {m['input'].get('name', INPUT_NAME)} {m['input'].get('shape')} {m['input']['dtype']} "
                f"({m['input'].get('values')}); "
                f"outputs {', '.join(f'{k} {v}' for k, v in m['outputs'].items())}; {self.num_classes} classes")
        print(text)
        return text


class TFLiteDetector(ExportedDetector):
    """A .tflite export run by the LiteRT interpreter.

    num_threads: interpreter threads (default: the interpreter's own choice).
    nms: "host" (default: nasjax.model.nms jitted on the host, bit-identical to predict on the JAX model)
        or "tflite" (the exported `<name>_nms.tflite`, when it exists and its settings match the call).
    trusted: False (default) refuses a file with custom (non built-in) operators, which nasjax exports
        never contain (a Flex op runs TensorFlow ops, file reads and writes included); True skips that.
    """

    backend = "tflite"

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None, nms: str = "host",
                 metadata: dict[str, Any] | None = None, trusted: bool = False):
        if nms not in ("host", "tflite"):
            raise ValueError(f"nms must be 'host' or 'tflite', got {nms!r}")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ImportError("running .tflite files needs ai-edge-litert: pip install 'nasjax[export]'") from e
        self.num_threads = num_threads
        # The interpreter first: it verifies the flatbuffer before anything reads it in Python.
        self.interpreter = self._interpreter(Interpreter, path, num_threads, trusted)
        super().__init__(path, metadata)
        self.runner = self._signature_runner(self.interpreter, self.path)
        inputs = self.runner.get_input_details()
        if set(inputs) != {INPUT_NAME}:
            raise ExportedModelError(f"{self.path}: expected one input '{INPUT_NAME}', got {sorted(inputs)}")
        details = inputs[INPUT_NAME]
        self.batch = int(details["shape"][0])
        self._check_input(details)
        missing = set(self.output_names) - set(self.runner.get_output_details())
        if missing:
            raise ExportedModelError(f"{self.path} lacks the outputs {sorted(missing)} its metadata lists")
        self.nms_backend = nms
        self._nms_runner = None
        self.nms_model = None
        if nms == "tflite":
            name = self.metadata.get("nms_model")
            if not name or not (self.path.parent / name).is_file():
                raise ExportedModelError(f"{self.path} has no exported NMS model (export with nms=True)")
            self.nms_model = self.path.parent / name
            self._nms_interpreter = self._interpreter(Interpreter, self.nms_model, num_threads, trusted)
            self._nms_runner = self._signature_runner(self._nms_interpreter, self.nms_model)
            try:
                self._nms_info = json.loads(read_tflite_metadata(self.nms_model) or b"{}")
                self._nms_baked = nms_settings_of(self._nms_info.get("nms"))
            except (ValueError, TypeError, AttributeError) as e:
                raise ExportedModelError(f"the '{TFLITE_METADATA_NAME}' metadata of {self.nms_model} is not a "
                                         f"valid NMS description ({e}); export the model again with nms=True") from e

    @staticmethod
    def _interpreter(interpreter_class, path, num_threads, trusted):
        """A LiteRT interpreter of `path`; a file it cannot read (empty, truncated, not a flatbuffer) or,
        unless trusted, one with custom operators raises ExportedModelError."""
        try:
            interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
        except (ValueError, RuntimeError) as e:
            raise ExportedModelError(f"{path} is not a readable TFLite model ({str(e).strip()[:200]}); "
                                     "export it again (nasjax export)") from e
        if not trusted:
            custom = _custom_operators(path)
            if custom:
                raise ExportedModelError(
                    f"{path} uses custom TFLite operators {sorted(custom)}, which nasjax exports never contain "
                    "(a Flex operator runs TensorFlow ops, which can read and write files); refusing to run it. "
                    "If you trust its source, load it with trusted=True (docs/export.md#trusted)")
        return interpreter

    @staticmethod
    def _signature_runner(interpreter, path):
        signatures = interpreter.get_signature_list()
        if SIGNATURE not in signatures:
            raise ExportedModelError(f"{path} has no '{SIGNATURE}' signature (found {sorted(signatures)})")
        return interpreter.get_signature_runner(SIGNATURE)

    def _check_input(self, details) -> None:
        dtype = np.dtype(details["dtype"])
        expected = np.uint8 if self.uint8_input else np.float32
        if dtype != expected:
            raise ExportedModelError(f"{self.path}: input dtype {dtype}, but its metadata says {expected.__name__}")
        if tuple(details["shape"][1:3]) != self.imgsz:
            raise ExportedModelError(f"{self.path}: input shape {details['shape']} disagrees with imgsz {self.imgsz}")
        if self.uint8_input:
            scale, zero_point = details["quantization"]
            if not (abs(scale * 255.0 - 1.0) < 1e-6 and zero_point == 0):
                raise ExportedModelError(f"{self.path}: uint8 input with scale {scale}, zero point {zero_point}; "
                                         "expected raw pixels (1/255, 0)")

    def _invoke(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.runner(images=np.ascontiguousarray(inputs))
        return {k: _dequantized(v, self.runner.get_output_details()[k]) for k, v in outputs.items()}

    def _exported_nms(self, outputs, settings: NMSSettings) -> nms.Detections | None:
        # conf and iou are inputs of the NMS graph; the static settings are baked in.
        if self._nms_runner is None or not _same_nms(self._nms_baked, settings, thresholds=False):
            return None
        boxes, scores = self._decoded(outputs)
        parts = []
        for start in range(0, len(boxes), self.batch):
            b, s = boxes[start: start + self.batch], scores[start: start + self.batch]
            n = len(b)
            if n < self.batch:
                b = np.concatenate([b, np.zeros((self.batch - n, *b.shape[1:]), b.dtype)])
                s = np.concatenate([s, np.zeros((self.batch - n, *s.shape[1:]), s.dtype)])
            out = self._nms_runner(boxes=np.ascontiguousarray(b, np.float32),
                                   scores=np.ascontiguousarray(s, np.float32), conf=np.float32(settings.conf),
                                   iou=nms.iou_compare_threshold(settings.iou))
            parts.append([out[k][:n] for k in DETECTION_OUTPUTS])
        return nms.Detections(*(np.concatenate(p) for p in zip(*parts)))


def _custom_operators(path) -> set[str]:
    """The custom operator codes of a .tflite file (already verified by the interpreter)."""
    from nasjax.export.tflite import _schema

    schema = _schema()
    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    codes = (model.OperatorCodes(i) for i in range(model.OperatorCodesLength()))
    return {(c.CustomCode() or b"?").decode(errors="replace") for c in codes
            if max(c.BuiltinCode(), c.DeprecatedBuiltinCode()) == schema.BuiltinOperator.CUSTOM}


def _same_nms(baked: NMSSettings | None, settings: NMSSettings, thresholds: bool) -> bool:
    """`baked` (an export's NMS settings) gives `settings`' detections: equal static settings and, with
    `thresholds`, equal float32 conf and iou."""
    if baked is None or baked.static() != settings.static():
        return False
    return not thresholds or (np.float32(baked.conf) == np.float32(settings.conf)  # the graph's comparisons
                              and nms.iou_compare_threshold(baked.iou) == nms.iou_compare_threshold(settings.iou))


def _dequantized(value: np.ndarray, details: dict) -> np.ndarray:
    if np.issubdtype(value.dtype, np.integer) and details.get("quantization", (0.0, 0))[0]:
        scale, zero_point = details["quantization"]
        return ((value.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)
    return value


class SavedModelDetector(ExportedDetector):
    """A SavedModel export run by TensorFlow (`serving_default` signature).

    trusted: False (default) refuses a SavedModel whose graph holds an op nasjax's exports never
        contain (nasjax.export.scan.SAVED_MODEL_OPS: no file reads or writes, no Python); True skips
        the scan, for a SavedModel from a source you trust.
    """

    backend = "saved_model"

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None, trusted: bool = False):
        super().__init__(path, metadata)
        from nasjax.export.versions import import_tf

        tf = import_tf()
        self._tf = tf
        if not trusted:
            from nasjax.export.scan import check_saved_model_ops

            check_saved_model_ops(self.path)  # before TensorFlow builds or runs any of it
        try:
            self.module = tf.saved_model.load(str(self.path))
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise ExportedModelError(f"TensorFlow cannot load the SavedModel {self.path} ({str(e).strip()[:300]}); "
                                     "export it again (nasjax export)") from e
        if SIGNATURE not in self.module.signatures:
            raise ExportedModelError(f"{self.path} has no '{SIGNATURE}' signature")
        self.function = self.module.signatures[SIGNATURE]
        missing = set(self.output_names) - set(self.function.structured_outputs)
        if missing:
            raise ExportedModelError(f"{self.path} lacks the outputs {sorted(missing)} its metadata lists")

    def _invoke(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.function(images=self._tf.constant(inputs))
        return {k: v.numpy() for k, v in outputs.items()}


def is_saved_model(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "saved_model.pb").is_file()
