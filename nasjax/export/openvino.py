"""OpenVINO exports: the ONNX graph (onnx_graph.py, + onnx_nms.py) converted to an OpenVINO IR directory,
float32, float16 weights or INT8 (NNCF post-training quantization), and the runner of such a directory
(docs/export.md#openvino).

    <output>/model.xml   the IR graph       (MODEL_FILE)
    <output>/model.bin   its weights        (WEIGHTS_FILE)
    <output>/nasjax.json the export JSON    (written by the exporter)

Why each choice:

* `openvino.convert_model` reads the serialized ONNX model from memory (it takes no ModelProto; a
  BytesIO goes through the same ONNX frontend as a file), and `openvino.save_model` writes the IR.
  float32 exports keep float32 weights (`compress_to_fp16=False`: save_model's default halves them);
  `half=True` (an ONNX graph already in float16) keeps float16 weights.
* INT8: `nncf.quantize` calibrates on `options.calibration`, each image pre-processed exactly as
  predict() does (tflite.calibration_inputs), all of them (`subset_size`), preset "mixed" (symmetric
  weights, asymmetric activations; Ultralytics' choice). The decode tail stays float: every operation
  that no convolution depends on (`decode_tail`: the head outputs' bias adds, reshapes and level
  concatenation, the DFL softmax and integral, the anchor arithmetic, the sigmoid and, with nms=True,
  the NMS) is in NNCF's ignored scope, validated (a name NNCF does not find fails the export rather
  than silently quantizing). 8-bit box arithmetic would round coordinates to about 1/256 of their
  range (2.5 px at 640), and NMS indices and counts must not be quantized at all; Ultralytics' OpenVINO
  INT8 export of YOLO ignores its decode tail likewise. (NNCF 3.4's own placement leaves this tail
  float too; the ignored scope makes that a guarantee, not a default.)
* An INT8 IR takes uint8 pixels 0..255 (as the export JSON says for INT8, and as the INT8 TFLite does):
  an OpenVINO pre-processing step (convert to f32, divide by 255) in front of the quantized graph,
  added after calibration (which runs on the float [0, 1] inputs).
* The runner compiles with `INFERENCE_PRECISION_HINT` f32 on CPU: on CPUs with AVX512-BF16 or AMX
  OpenVINO otherwise computes float layers in bfloat16, which moves boxes by about 0.5 px at 64x64
  (measured) instead of 1e-4. A float16 export runs with f32 arithmetic on its float16 weights too (an
  "f16" hint on a CPU without native float16 gives bfloat16); `precision=` overrides.
* openvino and nncf are imported with their usage telemetry off (`_telemetry_off`): it would post
  events to Intel's analytics from forked processes, inside a process where JAX is running.
"""
from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from nasjax.export.metadata import INPUT_NAME, OPENVINO_MODEL_FILE, SAVED_MODEL_METADATA_FILE, ExportedModelError
from nasjax.export.options import ExportDependencyError, ExportOptions
from nasjax.export.runners import ExportedDetector

MODEL_FILE = OPENVINO_MODEL_FILE  # "model.xml"
WEIGHTS_FILE = Path(MODEL_FILE).with_suffix(".bin").name  # "model.bin"
INSTALL_EXTRA = "pip install 'nasjax[onnx]'"
INT8_PRESET = "mixed"
# Operation types that end the quantized part of the graph: the decode tail is everything after the last
# of them on every path to an output.
_QUANTIZED_TYPES = frozenset({"Convolution", "GroupConvolution"})
_NOT_OPERATIONS = frozenset({"Parameter", "Constant", "Result"})


def import_openvino():
    """The openvino module (ExportDependencyError naming the extra when it is missing), imported without
    OpenVINO's usage telemetry (`_telemetry_off`)."""
    try:
        with _telemetry_off():
            import openvino
    except ImportError as e:
        raise ExportDependencyError(f"OpenVINO export needs openvino ({e.name} is missing): {INSTALL_EXTRA}") from e
    return openvino


def import_nncf():
    """The nncf module (ExportDependencyError naming the extra when it is missing), without its telemetry."""
    import_openvino()
    try:
        with _telemetry_off():
            import nncf
    except ImportError as e:
        raise ExportDependencyError(f"OpenVINO INT8 export needs nncf ({e.name} is missing): {INSTALL_EXTRA}") from e
    return nncf


@contextlib.contextmanager
def _telemetry_off():
    """Imports during which `openvino_telemetry` cannot be imported, so that openvino and nncf take their
    own no-telemetry fallbacks (both catch that ImportError). Otherwise `import openvino` (and each
    nncf.quantize) posts a usage event to Intel's analytics, writes a client id under ~/intel, and
    does so from a forked process, which JAX, already loaded here, warns may deadlock. No effect when
    openvino_telemetry is already imported (the user's own openvino import decides then)."""
    if "openvino_telemetry" in sys.modules:
        yield
        return
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import → ImportError
    try:
        yield
    finally:
        if sys.modules.get("openvino_telemetry", 0) is None:
            del sys.modules["openvino_telemetry"]


def check_dependencies(options: ExportOptions) -> None:
    """ExportDependencyError now when an OpenVINO export (`options`) could not be written: openvino, and nncf
    for INT8 (the exporter calls this before tracing)."""
    import_openvino()
    if options.int8:
        import_nncf()


def model_paths(directory: str | os.PathLike) -> tuple[Path, Path]:
    """(model.xml, model.bin) of an OpenVINO export directory."""
    directory = Path(directory)
    return directory / MODEL_FILE, directory / WEIGHTS_FILE


# --- export ----------------------------------------------------------------------------------------


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr)


def save(model, options: ExportOptions, config, directory: str | os.PathLike, verbose: bool = False) -> Path:
    """Convert `model` (the export's ONNX ModelProto) to OpenVINO and write `directory`/model.xml +
    model.bin: float32 weights, float16 with options.half, INT8 (NNCF, calibrated on options.calibration
    pre-processed for `config`, a weights Preprocessing) with options.int8. Returns the .xml path."""
    ov = import_openvino()
    nncf = import_nncf() if options.int8 else None  # before any work
    ov_model = to_openvino(model)
    for prop in model.metadata_props:  # the export JSON and the Ultralytics-style keys, in the IR too
        ov_model.set_rt_info(prop.value, ["nasjax", prop.key])
    if options.int8:
        ov_model = quantize(ov_model, options, config, nncf, verbose)
        ov_model = uint8_input(ov_model)
    xml, _ = model_paths(directory)
    try:
        ov.save_model(ov_model, str(xml), compress_to_fp16=options.half)
    except RuntimeError as e:  # OpenVINO's write failures (a full disk) → the OSError the exporter reports
        raise OSError(errno.EIO, f"OpenVINO could not write the IR ({_short(e)})", str(xml)) from e
    return xml


def to_openvino(model):
    """The OpenVINO Model of an ONNX ModelProto: `openvino.convert_model` of its serialized bytes (it takes
    no ModelProto; a BytesIO goes through the same ONNX frontend and graph simplifications as a file)."""
    ov = import_openvino()
    return ov.convert_model(io.BytesIO(model.SerializeToString()))


def decode_tail(ov_model) -> list[str]:
    """The friendly names of the operations after the last convolution on every path to an output (head
    output reshapes and concatenation, DFL softmax and integral, anchor arithmetic, sigmoid, NMS): the
    operations that no convolution depends on."""
    feeds_quantized: set[str] = set()  # (unique names of) operations some convolution depends on
    for op in reversed(ov_model.get_ordered_ops()):  # consumers before producers
        if op.get_type_name() in _QUANTIZED_TYPES or op.get_name() in feeds_quantized:
            for value in op.inputs():
                feeds_quantized.add(value.get_source_output().get_node().get_name())
    return [op.get_friendly_name() for op in ov_model.get_ordered_ops()
            if op.get_type_name() not in _NOT_OPERATIONS | _QUANTIZED_TYPES and op.get_name() not in feeds_quantized]


class _Calibration:
    """The calibration inputs, re-readable (NNCF may iterate more than once) without holding them all in
    memory: (batch, 3, S, S) float32 NCHW batches as predict() prepares them, the last padded by
    repeating its images (tflite.representative_dataset)."""

    def __init__(self, options: ExportOptions, config):
        self.options, self.config = options, config
        batch = options.batch or 1
        self.batch = batch
        self.length = -(-len(options.calibration) // batch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[np.ndarray]:
        from nasjax.export.tflite import representative_dataset

        o = self.options
        for (images,) in representative_dataset(o.calibration, o.imgsz, self.batch, self.config, o.preprocess):
            yield np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))


def quantize(ov_model, options: ExportOptions, config, nncf=None, verbose: bool = False):
    """The NNCF INT8 model of `ov_model` (float input), calibrated on all of options.calibration, with the
    decode tail (`decode_tail`) kept float."""
    nncf = nncf or import_nncf()
    data = _Calibration(options, config)
    tail = decode_tail(ov_model)
    _log(verbose, f"quantizing with NNCF on {len(options.calibration)} calibration images; "
                  f"{len(tail)} decode-tail operations stay float")
    with _quiet_nncf(verbose):
        return nncf.quantize(
            ov_model, nncf.Dataset(data), preset=nncf.QuantizationPreset(INT8_PRESET), subset_size=len(data),
            ignored_scope=nncf.IgnoredScope(names=tail))


@contextlib.contextmanager
def _quiet_nncf(verbose: bool):
    """NNCF logs at INFO and draws progress bars on stdout; keep them for verbose=True only."""
    if verbose:
        yield
        return
    from nncf.common.logging.logger import nncf_logger, set_log_level

    level = nncf_logger.level
    set_log_level(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        set_log_level(level)


def uint8_input(ov_model):
    """`ov_model` taking uint8 pixels 0..255 on `images`: converted to f32 and divided by 255 in the graph."""
    ov = import_openvino()
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(ov_model)
    ppp.input(INPUT_NAME).tensor().set_element_type(ov.Type.u8)
    ppp.input(INPUT_NAME).preprocess().convert_element_type(ov.Type.f32).scale(255.0)
    return ppp.build()


# --- runner ----------------------------------------------------------------------------------------


class OpenVINODetector(ExportedDetector):
    """An OpenVINO export directory (model.xml, model.bin, nasjax.json) run by OpenVINO Runtime.

    device: the OpenVINO device ("CPU" default; "GPU", "AUTO", ...).
    num_threads: CPU inference threads (INFERENCE_NUM_THREADS; default OpenVINO's choice).
    precision: INFERENCE_PRECISION_HINT ("f32", "bf16", "f16"); default "f32" on CPU, so that float32 and
        INT8 exports give the JAX model's numbers (OpenVINO would use bfloat16 on CPUs that have it).
    trusted: accepted for `nasjax.load`'s interface; an IR holds standard OpenVINO operations only (none
        reads or writes files), so there is nothing to skip.
    `path` is the export directory (or its model.xml).
    """

    backend = "openvino"

    def __init__(self, path: str | os.PathLike, device: str = "CPU", num_threads: int | None = None,
                 precision: str | None = None, metadata: dict[str, Any] | None = None, trusted: bool = False):
        path = Path(path)
        if path.name == MODEL_FILE and path.is_file():
            path = path.parent
        ov = import_openvino()
        super().__init__(path, metadata)
        xml, weights = model_paths(self.path)
        for f in (xml, weights):
            if not f.is_file():
                raise ExportedModelError(f"{f} is missing from the OpenVINO export {self.path}; export the model again "
                                         "(nasjax export --format openvino)")
        _check_ir(xml)
        core = ov.Core()
        try:
            self.model = core.read_model(str(xml), str(weights))
        except RuntimeError as e:
            raise ExportedModelError(f"OpenVINO cannot read {_blamed(e, xml, weights)} ({_short(e)}); export the "
                                     "model again (nasjax export --format openvino)") from e
        self._check_model(xml)
        self.device = device
        self.num_threads = num_threads
        self.precision = precision or ("f32" if device.upper().startswith("CPU") else None)
        config = {}
        if self.precision:
            config["INFERENCE_PRECISION_HINT"] = self.precision
        if num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        try:
            self.compiled = core.compile_model(self.model, device, config)
        except RuntimeError as e:
            raise ExportedModelError(f"OpenVINO cannot compile {xml} for {device} ({_short(e)}); export the model "
                                     "again (nasjax export --format openvino)") from e
        self._ports = {name: self.compiled.output(name) for name in self.output_names}
        self.request = self.compiled.create_infer_request()

    def _check_model(self, xml: Path) -> None:
        """The IR's input and outputs against the export JSON."""
        def fail(what: str):
            raise ExportedModelError(f"{xml}: {what}, which disagrees with its {SAVED_MODEL_METADATA_FILE}; export "
                                     "the model again (nasjax export --format openvino)")

        inputs = self.model.inputs
        if len(inputs) != 1 or INPUT_NAME not in inputs[0].get_names():
            fail(f"inputs {[sorted(i.get_names()) for i in inputs]} (expected one '{INPUT_NAME}')")
        port = inputs[0]
        dtype = port.get_element_type().get_type_name()
        expected = "u8" if self.uint8_input else "f32"
        if dtype != expected:
            fail(f"input element type {dtype} (expected {expected})")
        h, w = self.imgsz
        if not _shape_matches(port.get_partial_shape(), [self.batch, 3, h, w]):
            fail(f"input shape {port.get_partial_shape()} (expected {[self.batch, 3, h, w]})")
        names = {name: out for out in self.model.outputs for name in out.get_names()}
        missing = [k for k in self.output_names if k not in names]
        if missing:
            fail(f"no output(s) {', '.join(missing)}")
        for k, shape in self.metadata["outputs"].items():
            if not _shape_matches(names[k].get_partial_shape(), shape):
                fail(f"output {k} of shape {names[k].get_partial_shape()} (expected {shape})")

    def _invoke(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        images = np.ascontiguousarray(np.transpose(inputs, (0, 3, 1, 2)))
        result = self.request.infer({INPUT_NAME: images})
        # Copies: the request's output tensors are overwritten by its next inference.
        return {k: np.array(result[port]) for k, port in self._ports.items()}


def _check_ir(xml: Path) -> None:
    """ExportedModelError unless `xml` begins as an OpenVINO IR (`<?xml` or `<net`): `read_model` picks its
    frontend by content, and would read an ONNX, TFLite or PaddlePaddle model under that name too (an
    ONNX model can point at external weight files anywhere)."""
    with open(xml, "rb") as f:
        head = f.read(256).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith((b"<?xml", b"<net")):
        raise ExportedModelError(f"{xml} is not an OpenVINO IR (an XML <net> document); export the model again "
                                 "(nasjax export --format openvino)")


def _shape_matches(partial_shape, expected: list) -> bool:
    """An OpenVINO PartialShape against a metadata shape (None: a dynamic dimension)."""
    if partial_shape.rank.is_dynamic or len(partial_shape) != len(expected):
        return False
    for dim, want in zip(partial_shape, expected):
        if want is None:
            if not dim.is_dynamic:
                return False
        elif dim.is_dynamic or dim.get_length() != want:
            return False
    return True


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


def _blamed(e: Exception, xml: Path, weights: Path) -> str:
    """The file an OpenVINO read error is about: the weights when it says so, else the graph."""
    text = str(e).lower()
    return str(weights) if any(w in text for w in ("weight", ".bin", "bin file")) else str(xml)
