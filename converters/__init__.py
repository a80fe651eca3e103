"""Readers for the YOLO-NAS weight files people have (.pt, .pth, state dicts, .safetensors): torch-free
and code-free, with numpy only. Installed as `nasjax.converters`.

The mapping of super-gradients tensor names onto the Flax variables lives beside the model
(`nasjax.model.state_dict`); its names are still reachable here, imported on first use, so that
reading a file needs neither jax nor flax.
"""
from __future__ import annotations

import importlib

from nasjax.converters.torch_pickle import UnsafeFileError, WeightFileError
from nasjax.converters.weight_file import SOURCE_FORMATS, WeightFile, read_weight_file

_FROM_MODEL = ("IGNORED", "StateDictError", "detect_form", "detect_variant", "reference_key_shapes",
               "state_dict_to_variables", "variables_to_state_dict")


def __getattr__(name: str):
    if name in _FROM_MODEL:
        return getattr(importlib.import_module("nasjax.model.state_dict"), name)
    raise AttributeError(f"module 'nasjax.converters' has no attribute {name!r}")


__all__ = ["SOURCE_FORMATS", "UnsafeFileError", "WeightFile", "WeightFileError", "read_weight_file", *_FROM_MODEL]
