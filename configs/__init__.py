"""Variant configs. `get_config("yolo_nas_s")` returns the `YoloNASConfig` of that variant."""
from __future__ import annotations

import importlib

from nasjax.configs.yolo_nas import NeckStageConfig, StageConfig, YoloNASConfig

VARIANTS = ("yolo_nas_s", "yolo_nas_m", "yolo_nas_l")


def get_config(variant: str, **overrides) -> YoloNASConfig:
    """The config of `variant` ('yolo_nas_s', 'yolo_nas_m' or 'yolo_nas_l'), with fields overridden."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown YOLO-NAS variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    config = importlib.import_module(f"{__name__}.{variant}").get_config()
    return config.replace(**overrides) if overrides else config


__all__ = ["VARIANTS", "get_config", "YoloNASConfig", "StageConfig", "NeckStageConfig"]
