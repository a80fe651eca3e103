"""Old module names, kept importable: `nasjax.models` and the rest moved into the stage sub-packages.

`import nasjax.models` (or `from nasjax import models`) still works: a meta-path finder maps the
old name onto the new module, the same module object, and warns once with DeprecationWarning. The
map is the single list of what moved where.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

MOVED = {
    "nasjax.models": "nasjax.model.yolo_nas",
    "nasjax.box_decoding": "nasjax.model.box_decoding",
    "nasjax.conv": "nasjax.model.conv",
    "nasjax.fusion": "nasjax.model.fusion",
    "nasjax.deterministic_weights": "nasjax.model.deterministic_weights",
    "nasjax.nms": "nasjax.model.nms",
    "nasjax.hub": "nasjax.loading.hub",
    "nasjax.checkpoint": "nasjax.loading.checkpoint",
    "nasjax.preprocessing": "nasjax.data.preprocessing",
    "nasjax.datasets": "nasjax.data",
    "nasjax.input_pipeline": "nasjax.data",
    "nasjax.results": "nasjax.predict.results",
    "nasjax.coco_metrics": "nasjax.validate.coco_metrics",
    "nasjax.exported": "nasjax.export.runners",
    "nasjax.loss": "nasjax.train.loss",
    "nasjax.assigners": "nasjax.train.assigners",
    "nasjax.training_plots": "nasjax.train.plots",
    "nasjax.atomic_files": "nasjax.utils.atomic_files",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        warnings.warn(f"{spec.name} moved to {self.target}; import it from there", DeprecationWarning, stacklevel=4)
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(MOVED[fullname]))
        return None


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
