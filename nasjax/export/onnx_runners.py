"""Run an ONNX export with ONNX Runtime behind the runner interface of nasjax.export.runners.

    model = nasjax.load("yolo_nas_s_float32.onnx")     # predict, val, detect_batch, model(images)

The file is checked before ONNX Runtime reads it (docs/export.md#trusted): every operator must be a
standard ONNX operator, and no tensor may live in an external file (nasjax writes its weights inside
the .onnx; an external-data path is a file read wherever it points). The export JSON is the `<name>.json`
beside the file when there is one, else the copy in the file's `metadata_props` ("nasjax").
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from nasjax.export.metadata import INPUT_NAME, TFLITE_METADATA_NAME, ExportedModelError
from nasjax.export.runners import ExportedDetector, read_export_metadata

STANDARD_DOMAINS = ("", "ai.onnx")


def check_onnx_file(path: Path) -> None:
    """Refuse a file that is not an ONNX model, or that uses operators outside the standard ONNX domain or
    external tensor data (ExportedModelError naming the file)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise ExportedModelError(f"{path} is not a readable ONNX model ({str(e).strip()[:200]}); "
                                 "export it again (nasjax export format=onnx)") from e
    graphs = [model.graph]
    domains, external = set(), []
    while graphs:
        graph = graphs.pop()
        external += [t.name for t in graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        for node in graph.node:
            domains.add(node.domain)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attribute.g)
                graphs.extend(attribute.graphs)
                if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_location == onnx.TensorProto.EXTERNAL:
                    external.append(attribute.t.name)
    other = sorted(domains - set(STANDARD_DOMAINS))
    if other or external or model.functions:
        what = (f"operators of the domain(s) {other}" if other else
                f"tensors stored in external files ({', '.join(external[:3])})" if external else "model-local functions")
        raise ExportedModelError(
            f"{path} uses {what}, which nasjax's ONNX exports never contain; refusing to run it. If you trust "
            "its source, load it with trusted=True (docs/export.md#trusted)")


def providers_for(device: str) -> list[str]:
    """ONNX Runtime execution providers for "cpu", "cuda" or "auto" (CUDA when installed, else CPU)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("cuda", "auto"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "cuda":
            raise ValueError(f"device='cuda' needs onnxruntime-gpu; this onnxruntime has {available}")
        return ["CPUExecutionProvider"]
    raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")


class ONNXDetector(ExportedDetector):
    """A .onnx export run by ONNX Runtime.

    num_threads: ONNX Runtime's intra-op threads (default: its own choice, one per core).
    device: "auto" (default: CUDA with onnxruntime-gpu, else CPU), "cpu" or "cuda".
    trusted: False (default) checks the file first (`check_onnx_file`); True skips that.
    """

    backend = "onnx"

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None, device: str = "auto",
                 metadata: dict[str, Any] | None = None, trusted: bool = False):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError("running .onnx files needs onnxruntime: pip install 'nasjax[onnx]'") from e
        path = Path(path)
        if not trusted:
            check_onnx_file(path)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        self.num_threads = num_threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers_for(device))
        except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf classes
            if not type(e).__module__.startswith("onnxruntime"):
                raise
            raise ExportedModelError(f"ONNX Runtime cannot load {path} ({str(e).strip()[:300]}); "
                                     "export it again (nasjax export format=onnx)") from e
        super().__init__(path, metadata if metadata is not None else self._metadata(path))
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {INPUT_NAME}:
            raise ExportedModelError(f"{self.path}: expected one input '{INPUT_NAME}', got {sorted(inputs)}")
        shape = inputs[INPUT_NAME].shape
        if inputs[INPUT_NAME].type != "tensor(float)" or len(shape) != 4 or tuple(shape[2:]) != self.imgsz:
            raise ExportedModelError(f"{self.path}: input {inputs[INPUT_NAME].type} {shape} disagrees with its "
                                     f"metadata (float32 (batch, 3, {self.imgsz[0]}, {self.imgsz[1]}))")
        self.batch = shape[0] if isinstance(shape[0], int) else None
        missing = set(self.output_names) - {o.name for o in self.session.get_outputs()}
        if missing:
            raise ExportedModelError(f"{self.path} lacks the outputs {sorted(missing)} its metadata lists")

    def _metadata(self, path: Path) -> dict[str, Any]:
        """The export JSON: beside the file, else in its metadata_props; checked."""
        text = self.session.get_modelmeta().custom_metadata_map.get(TFLITE_METADATA_NAME)
        return read_export_metadata(path, embedded=(text, f"the '{TFLITE_METADATA_NAME}' metadata_props entry of {path}"))

    def _invoke(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        from nasjax.export.onnx_graph import to_nchw

        values = self.session.run(list(self.output_names), {INPUT_NAME: to_nchw(inputs.astype(np.float32, copy=False))})
        return dict(zip(self.output_names, values))
