"""Which runner an exported path needs: `load_exported` (what `nasjax.load` calls for an exported
file) picks the TFLite, SavedModel, ONNX Runtime or OpenVINO runner by what the path is. Its own module
so that the runner modules (runners.py, onnx_runners.py, openvino.py) need not import each other."""
from __future__ import annotations

import os
from pathlib import Path

from nasjax.export.metadata import OPENVINO_MODEL_FILE, SAVED_MODEL_METADATA_FILE, ExportedModelError
from nasjax.export.runners import (MAX_METADATA_BYTES, ExportedDetector, SavedModelDetector, TFLiteDetector,
                                   is_saved_model)


def is_openvino_model(path: str | os.PathLike) -> bool:
    """An OpenVINO export directory: its IR (`model.xml`), or a `nasjax.json` that says it is one (the
    runner then names what is missing)."""
    path = Path(path)
    if not path.is_dir() or is_saved_model(path):
        return False
    if (path / OPENVINO_MODEL_FILE).is_file():
        return True
    info = path / SAVED_MODEL_METADATA_FILE
    return info.is_file() and info.stat().st_size < MAX_METADATA_BYTES and b'"openvino"' in info.read_bytes()


def is_exported(path: str | os.PathLike) -> bool:
    """A path `load_exported` runs: a .tflite or .onnx file, a SavedModel or OpenVINO export directory (or
    its model.xml)."""
    return Path(path).suffix.lower() in (".tflite", ".onnx", ".xml") or is_saved_model(path) or is_openvino_model(path)


def load_exported(path: str | os.PathLike, **options) -> ExportedDetector:
    """A runner for a .tflite or .onnx file, a SavedModel or an OpenVINO directory written by nasjax.export
    (options: those of `TFLiteDetector`, `SavedModelDetector`, `ONNXDetector` or `OpenVINODetector`;
    all take `trusted`)."""
    path = Path(path)
    if path.suffix.lower() == ".tflite":
        return TFLiteDetector(path, **options)
    if path.suffix.lower() == ".onnx":
        from nasjax.export.onnx_runners import ONNXDetector

        return ONNXDetector(path, **options)
    if is_saved_model(path):
        return SavedModelDetector(path, **options)
    if is_openvino_model(path) or path.suffix.lower() == ".xml":  # the directory or its model.xml
        from nasjax.export.openvino import OpenVINODetector

        return OpenVINODetector(path, **options)
    raise ExportedModelError(f"{path} is neither a .tflite or .onnx file nor a SavedModel or OpenVINO directory")
