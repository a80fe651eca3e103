"""Bounds on what nasjax will read from user files, in one place (documented in docs/datasets.md#limits).

Images, data YAMLs, annotation and prediction files come from anyone; a small file can describe a huge
object (a 30000 x 30000 PNG of a few kilobytes, a YAML "billion laughs" of nested aliases, JSON nested a
million deep, a predictions file of ten million rows). Each bound below turns such a file into a clear
error naming the file and the bound, before the memory or time is spent, instead of an out-of-memory
kill or a hang. The bounds are far above what real datasets use; the image one can be raised.
"""
from __future__ import annotations

import os

# Images: decoded pixels (width x height) per image file. Reading holds up to ~10 bytes per pixel at
# once (a 16-bit or palette image converted to RGB), so 2**26 pixels (8192 x 8192) keeps one image under
# ~640 MiB. Raise it with $NASJAX_MAX_IMAGE_PIXELS (0: no nasjax limit). Pillow's own limit,
# PIL.Image.MAX_IMAGE_PIXELS (refusing above twice its value, ~179 M pixels), applies as well.
MAX_IMAGE_PIXELS = 2**26
MAX_IMAGE_PIXELS_ENV = "NASJAX_MAX_IMAGE_PIXELS"

# Data YAMLs: nodes that aliases (*name) may add in all when expanded. Real data YAMLs use a handful
# (e.g. `test: *val`); a "billion laughs" needs billions.
MAX_YAML_ALIAS_NODES = 10_000

# Predictions files scored by validate(predictions=...): detections per image of the dataset, on
# average. Ultralytics and nasjax write at most max_det (300) per image; super-gradients' top_k is 1000.
MAX_PREDICTIONS_PER_IMAGE = 1000
# ... and bytes per detection when deciding, from the file's size alone, that it cannot fit the bound
# (Ultralytics writes ~90 bytes per detection; 1 KiB leaves room for long image ids and indentation).
MAX_PREDICTION_BYTES = 1024


def max_image_pixels() -> int | None:
    """The image pixel limit in force: $NASJAX_MAX_IMAGE_PIXELS when set (0 or negative: none), else
    MAX_IMAGE_PIXELS."""
    value = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not value:
        return MAX_IMAGE_PIXELS
    try:
        limit = int(float(value))
    except ValueError:
        raise ValueError(f"${MAX_IMAGE_PIXELS_ENV}={value!r} is not a number of pixels (e.g. 200000000, or 0 "
                         "for no limit)") from None
    return limit if limit > 0 else None
