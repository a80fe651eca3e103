"""The JAX → ONNX graph of the network (docs/export.md#onnx): jax2onnx traces the jitted forward, ONNX
Runtime's hardware-independent optimiser cleans it, onnxconverter-common makes the float16 copy, and
`onnx_nms.py` appends the NMS.

Why each step:

* jax2onnx (`to_onnx`) turns the same pure function the SavedModel export converts — variables
  closed over as initialisers, images in — into standard ONNX ops with a symbolic batch dimension
  (`batch`). Its input is NCHW (`inputs_as_nchw`): ONNX consumers (ONNX Runtime, OpenVINO, TensorRT)
  expect channels first, and the transposes it adds are cancelled by the next step.
* ONNX Runtime's *basic* graph optimisations (constant folding, batch norm into convolutions,
  cancelling transposes, dead nodes) are rewrites into standard ONNX ops only, so the saved graph runs
  in any ONNX consumer. They turn jax2onnx's ~1,900 nodes for YOLO-NAS S into ~300: 98 Conv and 11
  Transpose, where the traced graph had 280 Transposes and an unfolded batch norm per convolution.
* float16: `onnxconverter_common.float16.convert_float_to_float16` with float32 inputs and outputs
  (`keep_io_types`). Tracing the network in float16 with jax2onnx gives graphs with mixed-type
  operators that neither ONNX Runtime nor OpenVINO accept.
"""
from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from nasjax.export.metadata import DECODED_OUTPUTS, INPUT_NAME
from nasjax.export.options import ExportDependencyError, ExportOptions

OPSET = 17  # ONNX Runtime, OpenVINO and TensorRT 8.6+ all read opset 17
BATCH_DIM = "batch"


def import_onnx_tools():
    """(jax2onnx.to_onnx, onnx, onnxruntime), or ExportDependencyError saying what to install."""
    try:
        import onnx
        import onnxruntime
        with _quiet_jax2onnx():
            from jax2onnx import to_onnx
    except ImportError as e:
        raise ExportDependencyError(f"ONNX export needs jax2onnx, onnx and onnxruntime ({e.name} is missing): "
                                    "pip install 'nasjax[onnx]'") from e
    return to_onnx, onnx, onnxruntime


@contextlib.contextmanager
def _quiet_jax2onnx():
    """jax2onnx logs a warning for every optional plugin it cannot import (equinox, dm_pix, ...) and for
    conversions it does not need here; those are not nasjax's concern."""
    import logging

    loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def network_function(network):
    """The pure function images (B, S, S, 3) float32 in [0, 1] → (boxes, scores), variables closed over."""
    from nasjax.model.core import forward

    graphdef, variables = network.graphdef, network.variables

    def fn(images):
        out = forward(graphdef, variables, images)
        return out.boxes, out.scores

    return fn


def convert_network(network, options: ExportOptions):
    """The ONNX `ModelProto` of the network: input `images` (batch, 3, S, S) float32 in [0, 1] (batch
    symbolic when options.batch is None), outputs `boxes` (batch, N, 4) xyxy input pixels and `scores`
    (batch, N, C), optimised (`optimize`), in float16 when options.half."""
    to_onnx, _, _ = import_onnx_tools()
    s = options.imgsz
    batch = BATCH_DIM if options.batch is None else options.batch
    with _quiet_jax2onnx():
        model = to_onnx(network_function(network), [(batch, s, s, 3)], model_name=network.config.name,
                        opset=OPSET, input_names=[INPUT_NAME], output_names=list(DECODED_OUTPUTS),
                        inputs_as_nchw=[0])
    model = optimize(model)
    if options.half:
        model = to_float16(model)
    return model


def optimize(model):
    """`model` after ONNX Runtime's basic (hardware-independent, standard-op) graph optimisations."""
    _, onnx, ort = import_onnx_tools()
    with tempfile.TemporaryDirectory(prefix="nasjax-onnx-") as tmp:
        source, target = Path(tmp, "traced.onnx"), Path(tmp, "optimized.onnx")
        onnx.save(model, source)
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        session_options.optimized_model_filepath = str(target)
        session_options.log_severity_level = 3
        ort.InferenceSession(str(source), session_options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(target)
    # The optimiser keeps the opset and the graph's names; it drops the model name.
    optimized.graph.name = model.graph.name
    return optimized


def to_float16(model):
    """float16 weights and arithmetic with float32 `images` in and `boxes` / `scores` out."""
    try:
        from onnxconverter_common import float16
    except ImportError as e:
        raise ExportDependencyError("float16 ONNX export needs onnxconverter-common: pip install 'nasjax[onnx]'") from e
    return float16.convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)


def dims(value_info) -> list:
    """The shape of a graph input or output: ints, or None for a symbolic dimension."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def to_nchw(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) → (B, 3, H, W), contiguous."""
    return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))


def serialized(model) -> bytes:
    """The bytes of `model` after the ONNX checker: every export is a valid ONNX model (< 2 GiB: weights inside)."""
    _, onnx, _ = import_onnx_tools()
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def metadata_entries(info: dict) -> dict[str, str]:
    """The `metadata_props` of an export: the export JSON under "nasjax" (what the runners read), and the
    keys Ultralytics writes, for tools that read those (names as a Python dict literal, imgsz, stride,
    batch, task)."""
    import json

    from nasjax.export.metadata import TFLITE_METADATA_NAME

    names = {i: name for i, name in enumerate(info["class_names"])}
    return {TFLITE_METADATA_NAME: json.dumps(info), "description": f"nasjax {info['variant']} ({info['quantization']})",
            "names": repr(names), "imgsz": repr(info["imgsz"]), "stride": str(max(info["strides"])),
            "batch": str(info["batch"] if info["batch"] is not None else -1), "task": "detect"}


def set_metadata(model, entries: dict[str, str]) -> None:
    """Replace the model's `metadata_props` with `entries` (name → text)."""
    del model.metadata_props[:]
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def metadata_of(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}
