"""Export: SavedModel and TFLite through jax2tf (`exporter.py`), and the runners that `nasjax.load`
gives for an exported file (`runners.py`)."""
from nasjax.export.exporter import FORMATS, ExportError, calibration_files, check_options, export, import_tf

__all__ = ["FORMATS", "ExportError", "calibration_files", "check_options", "export", "import_tf"]
