"""Export a Detector to a TensorFlow SavedModel or a TFLite flatbuffer.

    python -m nasjax.export --model yolo_nas_s --format tflite --int8 --data coco128/images --output s_int8.tflite
    nasjax.export.export(detector, format="saved_model", output="yolo_nas_s_saved_model")

The route measured to work with jax 0.10.0 and TF 2.21 (the project's EXPORT_NOTES): `jax2tf.convert` (native serialization: one
`XlaCallModule` op holding StableHLO) of the pure function (variables, images) → outputs; the variables
become `tf.Variable`s on a `tf.Module`; a `tf.function` with a fixed input signature is saved as the
`serving_default` signature; TFLite files are converted from such a SavedModel with `TFLiteConverter`.

What each format holds (all take NHWC RGB images; inputs and outputs are named):

* SavedModel: input `images` (B, H, W, 3) float32 in [0, 1] with a symbolic batch B (or a fixed one
  with `batch=`); outputs `boxes` (B, N, 4) xyxy input pixels and `scores` (B, N, C) after sigmoid. With
  `nms=True` also `detection_boxes` (B, max_det, 4), `detection_scores`, `detection_classes`,
  `num_detections`: the greedy NMS of nasjax/nms.py inside the graph with the export's conf / iou /
  top_k / max_det baked in (per image, through `tf.map_fn`: XLA cannot sort along a symbolic batch).
  The StableHLO is lowered for CPU.
* TFLite, float32 or float16 weights (`half=True`): input `images` (batch, H, W, 3) float32 in [0, 1]
  with a fixed batch (TFLite cannot convert the batch-polymorphic graph); outputs `boxes`, `scores`.
* TFLite, full-integer INT8 (`int8=True`): input `images` uint8 pixels 0..255 (quantization scale
  1/255, zero point 0: the raw pixels), calibrated on real images pre-processed exactly as predict()
  does. Where the decode tail (DFL softmax + integral, sigmoid) lives is `int8_tail`:
  "host" (default): the INT8 graph ends at the raw head outputs `reg_distri` (B, N, 4 * 17) and
  `cls_logits` (B, N, C), and the tail runs in float on the host (nasjax.exported does it, in JAX);
  "graph": the tail is quantized too and the outputs are `boxes` and `scores`. Measured on 64 COCO128
  images at 640 (benchmarks/export.py), the host tail has the smaller error: boxes 0.16 px mean
  absolute error against 2.1 px, scores 2e-4 against 9e-4 (max 0.0071 against 0.0085), for about
  2 ms of host work.
  Outputs are float32 (dequantized at the end of the graph); boxes and scores are separate outputs,
  each with its own quantization scale.
* NMS for TFLite (`nms=True`): a separate float32 `<name>_nms.tflite` with inputs `boxes`, `scores`,
  `conf`, `iou` (scalars: keep score > conf, suppress IoU > iou in float32; nasjax.exported passes
  `nms.iou_compare_threshold(iou)`, which makes the decisions torchvision's) and the four `detection_*`
  outputs; the other NMS settings are baked in.
  It is kept out of the INT8 graph: the INT8 calibrator crashes on the NMS loop. nasjax.exported runs
  NMS on the host by default (the same jitted code as predict), or through this file.

Beside every export a JSON (`<name>.json` beside a .tflite, `nasjax.json` inside a SavedModel
directory) records the class names, input size, pre-processing parameters, input encoding, outputs,
quantization and NMS settings; TFLite files carry the same JSON as a `nasjax` metadata entry.
`nasjax.load(path)` reads them back into a runner with the Detector interface (nasjax/exported.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from nasjax.data import preprocessing
from nasjax.model.nms import NMSSettings
from nasjax.utils.atomic_files import replace_directory, write_atomic

FORMATS = ("saved_model", "tflite")
INT8_TAILS = ("host", "graph")
DEFAULT_INT8_TAIL = "host"
METADATA_FORMAT = "nasjax-export"
METADATA_VERSION = 1
TFLITE_METADATA_NAME = "nasjax"
SAVED_MODEL_METADATA_FILE = "nasjax.json"
SIGNATURE = "serving_default"
DETECTION_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


class ExportError(ValueError):
    """Options that cannot be exported; raised before any work is done."""


# --- options ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    format: str
    imgsz: int
    batch: int | None  # None: symbolic (SavedModel only)
    int8: bool
    half: bool
    calibration: tuple[str, ...]  # image files (INT8 only)
    calibration_source: str | None
    int8_tail: str
    nms: NMSSettings | None
    preprocess: str

    @property
    def quantization(self) -> str:
        return "int8" if self.int8 else "float16" if self.half else "float32"


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ExportError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_options(
    format: str = "tflite",
    *,
    imgsz: int = 640,
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
) -> ExportOptions:
    """Validate export options (and find the calibration images) without touching the model."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    imgsz = _positive_int("imgsz", imgsz)
    if imgsz % preprocessing.STRIDE:
        up = -(-imgsz // preprocessing.STRIDE) * preprocessing.STRIDE
        raise ExportError(f"imgsz must be a multiple of {preprocessing.STRIDE}, got {imgsz} (use e.g. {up})")
    if batch is not None:
        batch = _positive_int("batch", batch)
    elif format == "tflite":
        batch = 1  # TFLite needs a fixed batch
    if int8 and half:
        raise ExportError("choose one of int8 and half")
    if format != "tflite" and (int8 or half):
        raise ExportError(f"{'int8' if int8 else 'half'} applies to TFLite; a SavedModel keeps float32 weights")
    if int8_tail not in INT8_TAILS:
        raise ExportError(f"unknown int8_tail {int8_tail!r}; expected one of {', '.join(INT8_TAILS)}")
    if preprocess not in preprocessing.PREPROCESS_METHODS:
        raise ExportError(f"unknown preprocess method {preprocess!r}; expected one of "
                          f"{', '.join(preprocessing.PREPROCESS_METHODS)}")
    calib_images = _positive_int("calib_images", calib_images)
    calibration: tuple[str, ...] = ()
    source = None
    if int8:
        if data is None:
            raise ExportError(
                "INT8 export needs calibration images: pass data= (CLI --data) a folder of images, a dataset "
                "YAML or a dataset name; a few hundred real images of the deployment domain are best"
            )
        files = calibration_files(data)
        calibration = tuple(files[:calib_images])
        source = f"{len(data)} listed files" if isinstance(data, (list, tuple)) else str(data)
    elif data is not None:
        warnings.warn("data is used only for INT8 calibration; ignored", stacklevel=3)
    nms_options = None
    if nms:
        if not 0 <= iou <= 1:
            raise ExportError(f"iou must be in [0, 1], got {iou}")
        nms_options = NMSSettings(float(conf), float(iou), _positive_int("top_k", top_k),
                                  _positive_int("max_det", max_det), bool(multi_label), bool(agnostic))
    return ExportOptions(format, imgsz, batch, bool(int8), bool(half), calibration, source,
                         int8_tail if int8 else "graph", nms_options, preprocess)


# --- calibration data ------------------------------------------------------------------------------


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    paths = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in paths if p.is_file() and p.suffix.lower().lstrip(".") in preprocessing.IMAGE_EXTENSIONS)


def calibration_files(data, split: str = "val") -> list[str]:
    """Image files for INT8 calibration from `data`: a folder of images; a list of image files; or a
    dataset as nasjax.datasets resolves it (a data YAML, a dataset folder holding its YAML, a shipped
    name such as "coco8"; downloaded when missing and the YAML says how), whose `split` images are
    used (Ultralytics calibrates on val too). A folder without images or a YAML is searched recursively."""
    path = None if isinstance(data, (list, tuple)) else Path(data)
    if path is None:
        files = [Path(p) for p in data]
    elif path.is_dir() and (_image_files(path, recursive=False) or not any(path.rglob("*.yaml"))):
        files = _image_files(path, recursive=False) or _image_files(path, recursive=True)
    elif path.is_file() and path.suffix.lower().lstrip(".") in preprocessing.IMAGE_EXTENSIONS:
        files = [path]
    else:
        from nasjax.data import datasets

        try:
            config = datasets.check_det_dataset(data, split=split)
            files = datasets.list_images(config.splits[split])
        except (datasets.DatasetError, datasets.DatasetNotFoundError) as e:
            raise ExportError(f"calibration data {str(data)!r}: {e}") from e
    if not files:
        raise ExportError(f"no calibration images in {data}")
    missing = [str(p) for p in files if not Path(p).is_file()]
    if missing:
        raise ExportError(f"calibration image(s) not found: {', '.join(missing[:3])}")
    return [str(p) for p in files]


def calibration_inputs(files: Sequence[str], imgsz: int, config,
                       preprocess: str = "centre_pad") -> Iterator[np.ndarray]:
    """Each calibration image as predict() prepares it: (1, imgsz, imgsz, 3) float32 in [0, 1]."""
    for f in files:
        image = preprocessing.load_image(f)
        network_input, _ = preprocessing.preprocess(image, preprocess, imgsz, config.pad_value,
                                                    resize_margin=config.input_size - config.resize_longest_side)
        yield preprocessing.to_unit_float(network_input[None])


# --- the TF side -----------------------------------------------------------------------------------


def import_tf():
    """tensorflow, quietly (its C++ INFO logs otherwise fill the terminal)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError("export needs TensorFlow: pip install 'nasjax[export]'") from e
    return tf


def _output_fn(detector, options: ExportOptions):
    """The pure JAX function (flat variable leaves, images) → dict of named outputs."""
    import jax

    from nasjax.model.core import forward

    leaves, treedef = jax.tree.flatten(detector.variables)
    graphdef, tail = detector.graphdef, options.int8_tail

    def fn(flat, images):
        out = forward(graphdef, jax.tree.unflatten(treedef, flat), images)
        if tail == "host":
            return {"reg_distri": out.reg_distri, "cls_logits": out.cls_logits}
        return {"boxes": out.boxes, "scores": out.scores}

    return fn, leaves


def _nms_fn(o: NMSSettings, baked: bool):
    """NMS of a batch as a pure function: (boxes, scores, conf, iou) → the four detection_* outputs, or
    (boxes, scores) → the same with o.conf and o.iou baked in."""
    from nasjax.model import nms

    def fn(boxes, scores, conf, iou):
        d = nms.non_max_suppression(boxes, scores, conf, iou, top_k=o.top_k, max_det=o.max_det,
                                    multi_label=o.multi_label, agnostic=o.agnostic)
        return dict(zip(DETECTION_OUTPUTS, d))

    if baked:
        return lambda boxes, scores: fn(boxes, scores, np.float32(o.conf), nms.iou_compare_threshold(o.iou))
    return fn


def _save_model_graph(detector, options: ExportOptions, directory: Path) -> None:
    """Write the SavedModel of the network (no TFLite conversion) to `directory`."""
    tf = import_tf()
    from jax.experimental import jax2tf

    fn, leaves = _output_fn(detector, options)
    s = options.imgsz
    batch = options.batch
    shapes = [None, f"(b, {s}, {s}, 3)"] if batch is None else None
    converted = jax2tf.convert(fn, polymorphic_shapes=shapes, with_gradient=False,
                               native_serialization_platforms=("cpu",))
    module = tf.Module()
    module.variables_list = [tf.Variable(np.asarray(x), trainable=False) for x in leaves]
    fake_quant = options.int8

    @tf.function(input_signature=[tf.TensorSpec([batch, s, s, 3], tf.float32, name="images")], autograph=False)
    def serve(images):
        if fake_quant:  # pins the INT8 input quantization to scale 1/255, zero point 0: raw pixels
            images = tf.quantization.fake_quant_with_min_max_args(images, min=0.0, max=1.0, num_bits=8)
        return converted(module.variables_list, images)

    if options.nms and options.format == "saved_model":
        # NMS per image, with static shapes: XLA cannot sort (top_k) along a symbolic batch.
        m = options.nms.max_det
        per_image = jax2tf.convert(_nms_fn(options.nms, baked=True), with_gradient=False,
                                   native_serialization_platforms=("cpu",))
        signature = {"detection_boxes": tf.TensorSpec([1, m, 4], tf.float32),
                     "detection_scores": tf.TensorSpec([1, m], tf.float32),
                     "detection_classes": tf.TensorSpec([1, m], tf.int32),
                     "num_detections": tf.TensorSpec([1], tf.int32)}
        network = serve

        @tf.function(input_signature=[tf.TensorSpec([batch, s, s, 3], tf.float32, name="images")], autograph=False)
        def serve(images):
            outputs = dict(network(images))
            detections = tf.map_fn(lambda bs: per_image(bs[0][None], bs[1][None]),
                                   (outputs["boxes"], outputs["scores"]), fn_output_signature=signature)
            outputs.update({k: v[:, 0] for k, v in detections.items()})
            return outputs

    module.serve = serve
    tf.saved_model.save(module, str(directory), signatures={SIGNATURE: serve})


def _convert_tflite(saved_model: Path, options: ExportOptions, config) -> bytes:
    tf = import_tf()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if options.half:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif options.int8:
        batch = options.batch

        def representative():
            pending = []
            for x in calibration_inputs(options.calibration, options.imgsz, config, options.preprocess):
                pending.append(x)
                if len(pending) == batch:
                    yield [np.concatenate(pending)]
                    pending = []
            if pending:  # pad the last group by repeating its images
                yield [np.concatenate((pending * batch)[:batch])]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.float32
    return converter.convert()


def _nms_tflite(options: ExportOptions, num_anchors: int, num_classes: int) -> bytes:
    """The float32 NMS graph: (boxes, scores, conf, iou) → detection_* ."""
    tf = import_tf()
    from jax.experimental import jax2tf

    converted = jax2tf.convert(_nms_fn(options.nms, baked=False), with_gradient=False,
                               native_serialization_platforms=("cpu",))
    b = options.batch

    @tf.function(input_signature=[tf.TensorSpec([b, num_anchors, 4], tf.float32, name="boxes"),
                                  tf.TensorSpec([b, num_anchors, num_classes], tf.float32, name="scores"),
                                  tf.TensorSpec([], tf.float32, name="conf"),
                                  tf.TensorSpec([], tf.float32, name="iou")], autograph=False)
    def serve(boxes, scores, conf, iou):
        return converted(boxes, scores, conf, iou)

    module = tf.Module()
    module.serve = serve
    with tempfile.TemporaryDirectory(prefix="nasjax-nms-") as tmp:
        tf.saved_model.save(module, tmp, signatures={SIGNATURE: serve})
        return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()


# --- TFLite metadata -------------------------------------------------------------------------------


def add_tflite_metadata(model: bytes, name: str, data: bytes) -> bytes:
    """`model` with a metadata entry `name` → `data` (replacing one of that name)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    m.metadata = [e for e in (m.metadata or []) if e.name.decode() != name]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, np.uint8)
    m.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = name
    entry.buffer = len(m.buffers) - 1
    m.metadata.append(entry)
    builder = flatbuffers.Builder(len(model) + len(data) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite_metadata(path: str | os.PathLike, name: str = TFLITE_METADATA_NAME) -> bytes | None:
    """The bytes of metadata entry `name` of a .tflite file, or None."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() is not None and entry.Name().decode() == name:
            buffer = model.Buffers(entry.Buffer())
            if buffer.Offset() > 1:  # stored outside the flatbuffer (models over 2 GB)
                return data[buffer.Offset(): buffer.Offset() + buffer.Size()]
            return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    return None


# --- export ----------------------------------------------------------------------------------------


def metadata_path(model_path: str | os.PathLike) -> Path:
    """Where the JSON of an exported model lives: `<dir>/nasjax.json` for a SavedModel directory,
    `<name>.json` beside a .tflite file."""
    path = Path(model_path)
    if path.suffix.lower() == ".tflite":
        return path.with_suffix(".json")
    return path / SAVED_MODEL_METADATA_FILE


def nms_model_path(model_path: str | os.PathLike) -> Path:
    path = Path(model_path)
    return path.with_name(path.stem + "_nms.tflite")


def default_output(detector, options: ExportOptions) -> Path:
    name = detector.config.name
    if options.format == "saved_model":
        return Path(f"{name}_saved_model")
    return Path(f"{name}_{options.quantization}.tflite")


def build_metadata(detector, options: ExportOptions, outputs: dict[str, list], nms_file: str | None) -> dict:
    from nasjax import __version__
    from nasjax.predict.predictor import class_names_of

    config = detector.config
    names = class_names_of(detector)
    s = options.imgsz
    int8 = options.int8
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
            "name": "images",
            "shape": [options.batch, s, s, 3],
            "layout": "NHWC",
            "channels": "RGB",
            "dtype": "uint8" if int8 else "float32",
            "values": "pixels 0..255" if int8 else "pixels / 255, in [0, 1]",
        },
        "outputs": outputs,
        "int8_tail": options.int8_tail if int8 else None,
        "reg_max": config.reg_max,
        "strides": list(config.strides),
        "preprocess": {
            "method": options.preprocess,
            "imgsz": s,
            "resize_longest_side": s - (config.input_size - config.resize_longest_side),
            "pad_value": config.pad_value,
            "interpolation": "bilinear (cv2 INTER_LINEAR)",
            "scale": "1/255" if not int8 else None,
        },
        "config": {"input_size": config.input_size, "resize_longest_side": config.resize_longest_side,
                   "pad_value": config.pad_value},
        "nms": dataclasses.asdict(options.nms) if options.nms else None,
        "nms_model": nms_file,
        "calibration": ({"source": options.calibration_source, "images": len(options.calibration)}
                        if int8 else None),
    }


def _check_output(output: Path, options: ExportOptions) -> None:
    if options.format == "tflite":
        if output.suffix.lower() != ".tflite":
            raise ExportError(f"a TFLite output must end in .tflite, got {output}")
        if output.is_dir():
            raise ExportError(f"{output} is a directory")
    elif output.exists():
        if not output.is_dir():
            raise ExportError(f"{output} exists and is not a directory")
        if any(output.iterdir()) and not (output / "saved_model.pb").exists():
            raise ExportError(f"{output} exists and is not a SavedModel directory; refusing to overwrite it")


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
    verbose: bool = False,
) -> Path:
    """Export `detector`; returns the path of the model written (a .tflite file or a SavedModel folder).

    format: "tflite" or "saved_model". output: default `<variant>_<float32|float16|int8>.tflite` or
        `<variant>_saved_model` in the working directory.
    imgsz: square input side, a multiple of 32 (default: the model's 640).
    batch: TFLite: the fixed batch (default 1); SavedModel: None (default) for a symbolic batch.
    int8: full-integer TFLite with uint8 input, calibrated on `data` (a folder of images, a dataset
        YAML, a list of files) with at most `calib_images` images. int8_tail: "host" or "graph" (the
        module docstring). half: float16 weights.
    nms: SavedModel: NMS inside the graph (conf, iou, top_k, max_det, multi_label, agnostic baked in);
        TFLite: a separate float32 `<name>_nms.tflite`.
    preprocess: the pre-processing the model is meant for (recorded; calibration images use it).
    Every option is checked before any work: bad ones raise `ExportError`.
    """
    options = check_options(
        format, imgsz=detector.config.input_size if imgsz is None else imgsz, batch=batch, int8=int8, half=half,
        data=data, calib_images=calib_images, int8_tail=int8_tail, nms=nms, conf=conf, iou=iou, top_k=top_k,
        max_det=max_det, multi_label=multi_label, agnostic=agnostic, preprocess=preprocess,
    )
    output = Path(output) if output is not None else default_output(detector, options)
    _check_output(output, options)
    return _export(detector, options, output, verbose)


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr)


def _export(detector, options: ExportOptions, output: Path, verbose: bool = False) -> Path:
    from nasjax.model import box_decoding

    import_tf()
    start = time.perf_counter()
    s = options.imgsz
    n = box_decoding.num_anchors(s, s, detector.config.strides)
    b, c, r = options.batch, detector.num_classes, 4 * (detector.config.reg_max + 1)
    if options.int8_tail == "host":
        outputs = {"reg_distri": [b, n, r], "cls_logits": [b, n, c]}
    else:
        outputs = {"boxes": [b, n, 4], "scores": [b, n, c]}
    if options.nms and options.format == "saved_model":
        m = options.nms.max_det
        outputs.update(detection_boxes=[b, m, 4], detection_scores=[b, m], detection_classes=[b, m],
                       num_detections=[b])

    if options.format == "saved_model":
        with replace_directory(output) as staging:
            _save_model_graph(detector, options, staging)
            info = build_metadata(detector, options, outputs, None)
            (staging / SAVED_MODEL_METADATA_FILE).write_text(json.dumps(info, indent=1) + "\n")
        _log(verbose, f"wrote {output} in {time.perf_counter() - start:.1f} s")
        return output


    with tempfile.TemporaryDirectory(prefix="nasjax-export-") as tmp:
        _save_model_graph(detector, options, Path(tmp))
        _log(verbose, f"traced and saved the graph in {time.perf_counter() - start:.1f} s; converting"
             + (f" with {len(options.calibration)} calibration images" if options.int8 else ""))
        model = _convert_tflite(Path(tmp), options, detector.config)
    nms_file = None
    if options.nms:
        nms_path = nms_model_path(output)
        m = options.nms.max_det
        nms_info = {"format": METADATA_FORMAT, "format_version": METADATA_VERSION, "kind": "nms",
                    "model": output.name, "nms": dataclasses.asdict(options.nms), "batch": b,
                    "inputs": {"boxes": [b, n, 4], "scores": [b, n, c], "conf": [], "iou": []},
                    "outputs": {"detection_boxes": [b, m, 4], "detection_scores": [b, m],
                                "detection_classes": [b, m], "num_detections": [b]}}
        nms_bytes = add_tflite_metadata(_nms_tflite(options, n, c), TFLITE_METADATA_NAME, json.dumps(nms_info).encode())
        write_atomic(nms_path, lambda p: p.write_bytes(nms_bytes))
        nms_file = nms_path.name
    info = build_metadata(detector, options, outputs, nms_file)
    text = json.dumps(info, indent=1) + "\n"
    model = add_tflite_metadata(model, TFLITE_METADATA_NAME, text.encode())
    write_atomic(output, lambda p: p.write_bytes(model))
    write_atomic(metadata_path(output), lambda p: p.write_text(text))
    _log(verbose, f"wrote {output} ({len(model) / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return output


# --- command line ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nasjax.export",
        description="Export a YOLO-NAS model to a TensorFlow SavedModel or a TFLite file (plus a JSON of its "
                    "class names and pre-processing). Run it with nasjax.load(PATH).predict(...).",
    )
    parser.add_argument("--model", default="yolo_nas_s", help="registered weight name or weight file / directory")
    parser.add_argument("--random-weights", action="store_true",
                        help="the architecture of --model with deterministic random weights (no download)")
    parser.add_argument("--format", choices=FORMATS, default="tflite")
    parser.add_argument("--output", type=Path, help="the .tflite file or SavedModel directory to write")
    parser.add_argument("--imgsz", type=int, default=640, help="square input side, a multiple of 32")
    parser.add_argument("--batch", type=int, help="fixed batch (TFLite default 1; SavedModel default symbolic)")
    parser.add_argument("--int8", action="store_true", help="full-integer INT8 TFLite with uint8 input")
    parser.add_argument("--data", help="INT8 calibration images: a folder, a dataset YAML or a dataset name")
    parser.add_argument("--calib-images", type=int, default=300, help="at most this many calibration images")
    parser.add_argument("--int8-tail", choices=INT8_TAILS, default=DEFAULT_INT8_TAIL,
                        help="where the DFL/sigmoid decode of an INT8 model runs (default: %(default)s, in float)")
    parser.add_argument("--half", action="store_true", help="float16 weights (TFLite)")
    parser.add_argument("--nms", action="store_true",
                        help="NMS inside the SavedModel, or a separate <name>_nms.tflite for TFLite")
    parser.add_argument("--conf", type=float, default=0.25, help="NMS confidence threshold (with --nms)")
    parser.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (with --nms)")
    parser.add_argument("--max-det", type=int, default=300, help="detections per image (with --nms)")
    parser.add_argument("--preprocess", choices=preprocessing.PREPROCESS_METHODS, default="centre_pad")
    args = parser.parse_args(argv)
    try:
        options = check_options(args.format, imgsz=args.imgsz, batch=args.batch, int8=args.int8, half=args.half,
                                data=args.data, calib_images=args.calib_images, int8_tail=args.int8_tail,
                                nms=args.nms, conf=args.conf, iou=args.iou, max_det=args.max_det,
                                preprocess=args.preprocess)
        if args.output is not None:
            _check_output(args.output, options)
    except ExportError as e:
        parser.error(str(e))

    import nasjax

    if args.random_weights:
        print(f"warning: {args.model} with random weights (seed 0): the detections are meaningless", file=sys.stderr)
        detector = nasjax.load(args.model, pretrained=False)
    else:
        detector = nasjax.load(args.model)
    output = args.output if args.output is not None else default_output(detector, options)
    path = _export(detector, options, output, verbose=True)
    extra = f" (+ {nms_model_path(path).name})" if options.nms and options.format == "tflite" else ""
    print(f"exported {path}{extra} and {metadata_path(path)}")


if __name__ == "__main__":
    main()
