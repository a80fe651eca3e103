"""Export: SavedModel and TFLite through jax2tf, ONNX through jax2onnx (and OpenVINO from that ONNX),
and the runners that `nasjax.load` gives for an exported file. `exporter.py` runs the stages (options, versions, graph, tflite, metadata: one module
each); `runners.py` runs the files. docs/export.md holds the measured facts behind each choice."""
from nasjax.export.exporter import export
from nasjax.export.metadata import metadata_path, nms_model_path
from nasjax.export.options import (
    FORMATS,
    ExportDependencyError,
    ExportError,
    ExportOptions,
    calibration_files,
    check_options,
    default_output,
)
from nasjax.export.versions import ExportVersionWarning, check_versions, import_tf

__all__ = ["FORMATS", "ExportDependencyError", "ExportError", "ExportOptions", "ExportVersionWarning",
           "calibration_files", "check_options", "check_versions", "default_output", "export", "import_tf",
           "metadata_path", "nms_model_path"]
