"""What an export is asked to do: the options checked once, before any work (`check_options` →
`ExportOptions`), the calibration images found, and the output path checked.

Nothing here imports jax or TensorFlow: a bad option fails in milliseconds, not after a trace.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np

from nasjax.data import preprocessing
from nasjax.model.nms import NMSSettings

FORMATS = ("saved_model", "tflite", "onnx", "openvino")
# Formats whose batch may be symbolic (the default there); TFLite needs a fixed one (docs/export.md#batch).
SYMBOLIC_BATCH_FORMATS = ("saved_model", "onnx", "openvino")
INT8_TAILS = ("host", "graph")
TARGETS = ("frigate",)  # consumer-specific forms of an export (docs/export.md#frigate)
DEFAULT_INT8_TAIL = "host"


class ExportError(ValueError):
    """An export that cannot be done as asked (an option, an output path, the installed jax / TF);
    raised before any work where it can be known then."""


class ExportDependencyError(ExportError, ImportError):
    """A package the export needs is not installed (`pip install 'nasjax[export]'`)."""


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    format: str
    imgsz: int
    batch: int | None  # None: symbolic (not TFLite)
    int8: bool
    half: bool
    calibration: tuple[str, ...]  # image files (INT8 only)
    calibration_source: str | None
    int8_tail: str  # "host" (INT8 only) or "graph"
    nms: NMSSettings | None  # baked into the graph (SavedModel) or the NMS .tflite; None: no NMS export
    preprocess: str
    target: str | None = None  # "frigate": uint8 BGR in, flat detections out (ONNX only)

    @property
    def quantization(self) -> str:
        return "int8" if self.int8 else "float16" if self.half else "float32"

    @property
    def host_tail(self) -> bool:
        """The graph ends at the raw head outputs; the decode tail runs on the host (docs/export.md#host-tail)."""
        return self.int8_tail == "host"


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
    target: str | None = None,
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
        batch = 1  # TFLite needs a fixed batch (docs/export.md#batch)
    if int8 and half:
        raise ExportError("choose one of int8 and half")
    if format == "saved_model" and (int8 or half):
        raise ExportError(f"{'int8' if int8 else 'half'} applies to TFLite, ONNX and OpenVINO; a SavedModel keeps "
                          "float32 weights")
    if format == "onnx" and int8:
        raise ExportError("INT8 applies to format=openvino (NNCF calibration; it runs the same ONNX graph) and "
                          "format=tflite; an ONNX export is float32 or float16 (half=true)")
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
    if target is not None:
        if target not in TARGETS:
            raise ExportError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
        if format != "onnx" or batch not in (None, 1):
            raise ExportError("target=frigate is an ONNX file with batch 1: use format=onnx (without batch)")
        nms, batch = True, 1  # Frigate reads detections: NMS inside, its batch of one frame
    settings = None
    if nms:
        try:
            settings = NMSSettings(float(conf), float(iou), _positive_int("top_k", top_k),
                                   _positive_int("max_det", max_det), bool(multi_label), bool(agnostic))
        except (TypeError, ValueError) as e:
            raise ExportError(str(e)) from e
    if int8 and format == "openvino" and int8_tail != DEFAULT_INT8_TAIL:
        raise ExportError("int8_tail applies to TFLite; an OpenVINO INT8 model keeps its decode tail in float")
    return ExportOptions(format, imgsz, batch, bool(int8), bool(half), calibration, source,
                         int8_tail if int8 and format == "tflite" else "graph", settings, preprocess, target)


# --- calibration images ----------------------------------------------------------------------------


def _image_files(folder: Path, recursive: bool) -> list[Path]:
    paths = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in paths if p.is_file() and p.suffix.lower().lstrip(".") in preprocessing.IMAGE_EXTENSIONS)


def calibration_files(data, split: str = "val") -> list[str]:
    """Image files for INT8 calibration from `data`: a folder of images; a list of image files; or a
    dataset as nasjax.data resolves it (a data YAML, a dataset folder holding its YAML, a shipped
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
        import nasjax.data as datasets

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


# --- the output path -------------------------------------------------------------------------------


def default_output(detector, options: ExportOptions) -> Path:
    """In the working directory: `<variant>_saved_model`, `<variant>_<float32|float16|int8>.tflite`,
    `<variant>_<float32|float16>.onnx`, `<variant>_<float32|float16|int8>_openvino_model`."""
    name = detector.config.name
    if options.format == "saved_model":
        return Path(f"{name}_saved_model")
    if options.format == "openvino":
        return Path(f"{name}_{options.quantization}_openvino_model")
    target = f"_{options.target}" if options.target else ""
    return Path(f"{name}_{options.quantization}{target}.{options.format}")


def check_output(output: str | os.PathLike, options: ExportOptions) -> None:
    """Refuse an output path of the wrong kind, in a directory that does not exist, or a directory that is
    not an export of the same format (it would be replaced)."""
    output = Path(output)
    parent = output.absolute().parent
    if not parent.is_dir():
        raise ExportError(f"the output's directory {parent} does not exist; create it or choose another output")
    suffix = {"tflite": ".tflite", "onnx": ".onnx"}.get(options.format)
    if suffix is not None:
        if output.suffix.lower() != suffix:
            raise ExportError(f"an {options.format.upper() if options.format == 'onnx' else 'TFLite'} output must "
                              f"end in {suffix}, got {output}")
        if output.is_dir():
            raise ExportError(f"{output} is a directory")
    elif output.exists():
        if not output.is_dir():
            raise ExportError(f"{output} exists and is not a directory")
        marker = "saved_model.pb" if options.format == "saved_model" else "model.xml"  # OpenVINO's IR
        if any(output.iterdir()) and not (output / marker).exists():
            kind = "a SavedModel" if options.format == "saved_model" else "an OpenVINO export"
            raise ExportError(f"{output} exists and is not {kind} directory; refusing to overwrite it")
