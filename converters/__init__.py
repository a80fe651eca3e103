"""Readers for YOLO-NAS weight files and the mapping of reference tensor names onto nasjax variables."""
from converters.state_dict import (
    IGNORED,
    StateDictError,
    detect_form,
    detect_variant,
    reference_key_shapes,
    state_dict_to_variables,
    variables_to_state_dict,
)
from converters.torch_pickle import UnsafeFileError, WeightFileError
from converters.weight_file import SOURCE_FORMATS, WeightFile, read_weight_file

__all__ = [
    "IGNORED",
    "SOURCE_FORMATS",
    "UnsafeFileError",
    "WeightFile",
    "WeightFileError",
    "read_weight_file",
    "StateDictError",
    "detect_form",
    "detect_variant",
    "reference_key_shapes",
    "state_dict_to_variables",
    "variables_to_state_dict",
]
