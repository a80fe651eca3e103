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

__all__ = [
    "IGNORED",
    "StateDictError",
    "detect_form",
    "detect_variant",
    "reference_key_shapes",
    "state_dict_to_variables",
    "variables_to_state_dict",
]
