"""Validation's run settings as one value: the NMS (`nasjax.model.nms.NMSSettings`) and the
pre-processing, with the two sets validate() knows, `DEFAULT` and `REFERENCE`.

    settings = ValidationSettings.DEFAULT.replace(conf=0.01)          # None values leave a setting as is
    settings = resolve(reference_mode=True)                            # ValidationSettings.REFERENCE
    predict(detector, images, **settings.predict_options())

DEFAULT: Ultralytics' validation NMS (conf 0.001, IoU 0.7, 300 detections, multi-label, class-aware)
over super-gradients' top 1000 candidates (a static shape on the device), the model's own centre-pad
pre-processing with the resized size rounded (docs/postprocessing.md#settings,
docs/preprocessing.md#validation-resize).

REFERENCE: super-gradients' COCO evaluation of YOLO-NAS (recipe coco2017_yolo_nas_s): score threshold
0.01 and otherwise the same NMS, the longest side resized to imgsz - 4 with the new size truncated by
int() (`resize_rounding="trunc"`), centre padding with 114. Its settings are fixed: asking for a
different one is an error rather than a silent mix of the two.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, ClassVar, Mapping

from nasjax.model.nms import VALIDATION_NMS, NMSSettings

# The flat keyword names (validate()'s) of the NMS fields.
_NMS_KEYWORDS = {"conf": "conf", "iou": "iou", "max_det": "max_det", "nms_top_k": "top_k",
                 "multi_label": "multi_label", "agnostic": "agnostic"}
KEYS = (*_NMS_KEYWORDS, "preprocess", "resize_rounding")


@dataclasses.dataclass(frozen=True)
class ValidationSettings:
    nms: NMSSettings = VALIDATION_NMS
    preprocess: str = "centre_pad"  # or "letterbox"
    resize_rounding: str = "round"  # or "trunc" (super-gradients' int())

    DEFAULT: ClassVar[ValidationSettings]
    REFERENCE: ClassVar[ValidationSettings]

    def __post_init__(self):
        if self.preprocess not in ("centre_pad", "letterbox"):
            raise ValueError(f"preprocess must be 'centre_pad' or 'letterbox', got {self.preprocess!r}")
        if self.resize_rounding not in ("round", "trunc"):
            raise ValueError(f"resize_rounding must be 'round' or 'trunc', got {self.resize_rounding!r}")

    def replace(self, **overrides) -> ValidationSettings:
        """These settings with `overrides` by validate()'s keyword names (conf, iou, max_det, nms_top_k,
        multi_label, agnostic, preprocess, resize_rounding); None leaves a setting unchanged."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - set(KEYS)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        nms = {_NMS_KEYWORDS[k]: v for k, v in given.items() if k in _NMS_KEYWORDS}
        rest = {k: v for k, v in given.items() if k not in _NMS_KEYWORDS}
        return dataclasses.replace(self, nms=dataclasses.replace(self.nms, **nms) if nms else self.nms, **rest)

    def to_dict(self) -> dict[str, Any]:
        """Flat, by validate()'s keyword names (the metrics' "settings")."""
        return {**{k: getattr(self.nms, field) for k, field in _NMS_KEYWORDS.items()},
                "preprocess": self.preprocess, "resize_rounding": self.resize_rounding}

    def predict_options(self) -> dict[str, Any]:
        """The keywords of nasjax.predict.predict that these settings fix."""
        return self.to_dict()


ValidationSettings.DEFAULT = DEFAULT = ValidationSettings()
ValidationSettings.REFERENCE = REFERENCE = ValidationSettings(
    nms=dataclasses.replace(VALIDATION_NMS, conf=0.01), resize_rounding="trunc")


def resolve(reference_mode: bool = False, **overrides) -> ValidationSettings:
    """DEFAULT with `overrides` (None = unset), or REFERENCE, which takes none that differ from it."""
    if not reference_mode:
        return DEFAULT.replace(**overrides)
    asked = REFERENCE.replace(**overrides).to_dict()  # also rejects unknown names
    fixed = REFERENCE.to_dict()
    conflicting = {k: v for k, v in asked.items() if v != fixed[k]}
    if conflicting:
        raise ValueError(
            "reference mode fixes super-gradients' evaluation settings "
            + ", ".join(f"{k}={v!r}" for k, v in fixed.items())
            + f"; drop {', '.join(f'{k}={v!r}' for k, v in conflicting.items())} or leave reference mode"
        )
    return REFERENCE


def as_mapping(settings: ValidationSettings) -> Mapping[str, Any]:
    """A read-only flat view (the old DEFAULT_SETTINGS / REFERENCE_SETTINGS dicts)."""
    return types.MappingProxyType(settings.to_dict())
