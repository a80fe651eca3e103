"""Per-image detection results, shaped like Ultralytics' `Results` (numpy instead of torch).

    r = detector.predict("bus.jpg")[0]
    r.boxes.xyxy, r.boxes.conf, r.boxes.cls     # (n, 4) float32 original-image pixels, (n,), (n,)
    print(r)                                     # Results(bus.jpg 810x1080: 4 persons, 1 bus)
    r.save("out/bus.jpg"); r.to_json()
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from nasjax.utils.atomic_files import write_atomic

# Ultralytics' default palette (ultralytics.utils.plotting.Colors), one colour per class index mod 20.
PALETTE = (
    "FF3838", "FF9D97", "FF701F", "FFB21D", "CFD231", "48F90A", "92CC17", "3DDB86", "1A9334", "00D4BB",
    "2C99A8", "00C2FF", "344593", "6473FF", "0018EC", "8438FF", "520085", "CB38FF", "FF95C8", "FF37C7",
)  # fmt: skip


def class_colour(index: int) -> tuple[int, int, int]:
    h = PALETTE[int(index) % len(PALETTE)]
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _plural(name: str, n: int) -> str:
    if n == 1:
        return name
    return name + ("es" if name.endswith(("s", "x", "z", "ch", "sh")) else "s")


def class_name(names: Mapping[int, str], cls: int) -> str:
    return names.get(int(cls), f"class{int(cls)}")


def summary_of(classes: np.ndarray, names: Mapping[int, str]) -> str:
    """`Results.summary` of detections of these classes."""
    if not len(classes):
        return "(no detections)"
    classes, counts = np.unique(np.asarray(classes, np.int64), return_counts=True)
    return ", ".join(f"{n} {_plural(class_name(names, c), n)}" for c, n in zip(classes, counts))


def detection_list(boxes: "Boxes", names: Mapping[int, str]) -> list[dict]:
    """`Results.to_list` of `boxes`, for callers that have detections but not the image (nasjax.ray)."""
    return [
        {"name": class_name(names, c), "class": int(c), "confidence": float(s),
         "box": dict(zip(("x1", "y1", "x2", "y2"), (float(v) for v in box)))}
        for box, s, c in zip(boxes.xyxy, boxes.conf, boxes.cls)
    ]


class Boxes:
    """Detections of one image, in original-image pixels, sorted by confidence (descending)."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray, orig_shape: tuple[int, int]):
        self.xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self.conf = np.asarray(conf, np.float32).reshape(-1)
        self.cls = np.asarray(cls, np.int64).reshape(-1)
        self.orig_shape = tuple(orig_shape)
        if not len(self.xyxy) == len(self.conf) == len(self.cls):
            raise ValueError(f"boxes, conf and cls differ in length: {len(self.xyxy)}, {len(self.conf)}, {len(self.cls)}")

    def __len__(self) -> int:
        return len(self.conf)

    @property
    def xywh(self) -> np.ndarray:
        """(n, 4) centre x, centre y, width, height (Ultralytics' xywh)."""
        x1, y1, x2, y2 = self.xyxy.T
        return np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)

    @property
    def xyxyn(self) -> np.ndarray:
        """xyxy divided by (width, height, width, height) of the original image."""
        h, w = self.orig_shape
        return self.xyxy / np.array([w, h, w, h], np.float32)

    @property
    def xywhn(self) -> np.ndarray:
        h, w = self.orig_shape
        return self.xywh / np.array([w, h, w, h], np.float32)


class Results:
    """Detections for one image plus the image they were made on."""

    def __init__(self, orig_img: np.ndarray, boxes: Boxes, names: Mapping[int, str], path: str | None = None):
        self.orig_img = orig_img  # (H, W, 3) uint8 RGB
        self.orig_shape = tuple(orig_img.shape[:2])
        self.boxes = boxes
        self.names = dict(names)
        self.path = path

    def __len__(self) -> int:
        return len(self.boxes)

    def name(self, cls: int) -> str:
        return class_name(self.names, cls)

    def summary(self) -> str:
        """'4 persons, 1 bus' (classes in index order), or '(no detections)'."""
        return summary_of(self.boxes.cls, self.names)

    def __repr__(self) -> str:
        h, w = self.orig_shape
        where = os.path.basename(self.path) if self.path else "image"
        return f"Results({where} {w}x{h}: {self.summary()})"

    def to_list(self) -> list[dict]:
        """One dict per detection: name, class, confidence, box {x1, y1, x2, y2} (original pixels)."""
        return detection_list(self.boxes, self.names)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_list(), indent=indent)

    def plot(self, line_width: int | None = None, labels: bool = True, conf: bool = True) -> np.ndarray:
        """The image with boxes and 'name 0.87' labels drawn, as (H, W, 3) uint8 RGB."""
        image = Image.fromarray(self.orig_img)
        draw = ImageDraw.Draw(image)
        h, w = self.orig_shape
        lw = line_width or max(round((h + w) / 2 * 0.003), 2)  # Ultralytics' default thickness
        font = ImageFont.load_default(size=max(lw * 5, 10))
        # Lowest confidence first, so the best boxes and their labels end up on top.
        for box, score, cls in reversed(list(zip(self.boxes.xyxy, self.boxes.conf, self.boxes.cls))):
            colour = class_colour(cls)
            x1, y1, x2, y2 = (float(v) for v in box)
            draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=colour, width=lw)
            if not labels:
                continue
            text = f"{self.name(cls)} {score:.2f}" if conf else self.name(cls)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left + 2 * lw, bottom - top + lw
            ty = y1 - th if y1 - th >= 0 else y1  # above the box, or inside it at the top edge
            draw.rectangle([x1, ty, x1 + tw, ty + th], fill=colour)
            text_colour = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
            draw.text((x1 + lw - left, ty + lw / 2 - top), text, fill=text_colour, font=font)
        return np.asarray(image)

    def save(self, path: str | os.PathLike, **plot_options) -> Path:
        """Write `plot()` to `path` (format from the extension), atomically."""
        path = Path(path)
        fmt = Image.registered_extensions().get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot tell the image format of {path}: use an extension such as .jpg or .png")
        annotated = Image.fromarray(self.plot(**plot_options))
        return write_atomic(path, lambda tmp: annotated.save(tmp, format=fmt))
