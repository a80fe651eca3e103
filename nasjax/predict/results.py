"""Per-image detection results, shaped like Ultralytics' `Results` (numpy instead of torch).

    r = detector.predict("bus.jpg")[0]
    r.boxes.xyxy, r.boxes.conf, r.boxes.cls     # (n, 4) float32 original-image pixels, (n,), (n,)
    print(r)                                     # Results(bus.jpg 810x1080: 4 persons, 1 bus)
    r.save("out/bus.jpg"); r.to_json()
    r.save_txt("labels/bus.txt"); r.save_crop("crops")     # Ultralytics' label lines and crops
    r.to_supervision()                           # supervision.Detections (Results.from_supervision back)

A video frame's Results also has `frame` (its index in the source), `timestamp` (seconds) and `video`
(nasjax.predict.video.VideoInfo: path, fps, size); a tracked one has `boxes.id`.
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
    """Detections of one image, in original-image pixels, sorted by confidence (descending); `id` holds
    the track IDs (from 1, as Ultralytics) when tracked, else None."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray, orig_shape: tuple[int, int],
                 id: np.ndarray | None = None):  # noqa: A002 — Ultralytics' name
        self.xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self.conf = np.asarray(conf, np.float32).reshape(-1)
        self.cls = np.asarray(cls, np.int64).reshape(-1)
        self.id = None if id is None else np.asarray(id, np.int64).reshape(-1)
        self.orig_shape = tuple(orig_shape)
        if not len(self.xyxy) == len(self.conf) == len(self.cls) == (len(self.cls) if id is None else len(self.id)):
            raise ValueError(f"boxes, conf, cls and id differ in length: {len(self.xyxy)}, {len(self.conf)}, "
                             f"{len(self.cls)}{'' if id is None else f', {len(self.id)}'}")

    def __len__(self) -> int:
        return len(self.conf)

    @property
    def is_track(self) -> bool:
        return self.id is not None

    def __getitem__(self, index) -> "Boxes":
        """The boxes selected by a numpy index (a boolean mask, indices or a slice)."""
        return Boxes(self.xyxy[index], self.conf[index], self.cls[index], self.orig_shape,
                     None if self.id is None else self.id[index])

    def of_classes(self, classes) -> "Boxes":
        """The boxes whose class is in `classes` (predict's and the server's `classes` filter)."""
        return self[np.isin(self.cls, list(classes))]

    @classmethod
    def from_supervision(cls, detections, orig_shape: tuple[int, int]) -> "Boxes":
        """Boxes from a `supervision.Detections` (confidence 1 where it has none, tracker_id as `id`)."""
        n = len(detections)
        conf = detections.confidence if detections.confidence is not None else np.ones(n, np.float32)
        classes = detections.class_id if detections.class_id is not None else np.zeros(n, np.int64)
        return cls(detections.xyxy, conf, classes, orig_shape, detections.tracker_id)

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
    """Detections for one image or video frame plus the image they were made on."""

    def __init__(self, orig_img: np.ndarray, boxes: Boxes, names: Mapping[int, str], path: str | None = None, *,
                 frame: int | None = None, timestamp: float | None = None, video=None):
        self.orig_img = orig_img  # (H, W, 3) uint8 RGB
        self.orig_shape = tuple(orig_img.shape[:2])
        self.boxes = boxes
        self.names = dict(names)
        self.path = path
        self.frame = frame  # video: 0-based index of the frame in its source
        self.timestamp = timestamp  # video: seconds from the start of the source
        self.video = video  # video: nasjax.predict.video.VideoInfo

    def with_boxes(self, boxes: Boxes) -> "Results":
        """The same image and frame with other boxes (a tracker's, a filter's)."""
        return Results(self.orig_img, boxes, self.names, self.path, frame=self.frame, timestamp=self.timestamp,
                       video=self.video)

    def to_supervision(self):
        """The detections as a `supervision.Detections` (xyxy, confidence, class_id, tracker_id when
        tracked, data["class_name"]), for supervision's annotators, zones and trackers."""
        import supervision as sv

        boxes = self.boxes
        return sv.Detections(
            xyxy=boxes.xyxy.copy(), confidence=boxes.conf.copy(), class_id=boxes.cls.copy(),
            tracker_id=None if boxes.id is None else boxes.id.copy(),
            data={"class_name": np.array([self.name(c) for c in boxes.cls], dtype=str)},
        )

    @classmethod
    def from_supervision(cls, detections, orig_img: np.ndarray, names: Mapping[int, str],
                         path: str | None = None) -> "Results":
        """Results of a `supervision.Detections` made on `orig_img` ((H, W, 3) uint8 RGB). For a video
        frame, `result.with_boxes(Boxes.from_supervision(detections, result.orig_shape))` keeps its frame,
        time and video."""
        return cls(orig_img, Boxes.from_supervision(detections, orig_img.shape[:2]), names, path)

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
        if self.frame is not None:
            where += f" frame {self.frame}"
        return f"Results({where} {w}x{h}: {self.summary()})"

    def to_list(self) -> list[dict]:
        """One dict per detection: name, class, confidence, box {x1, y1, x2, y2} (original pixels)."""
        return detection_list(self.boxes, self.names)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_list(), indent=indent)

    def plot(self, line_width: int | None = None, labels: bool = True, conf: bool = True) -> np.ndarray:
        """The image with boxes and 'name 0.87' labels ('id:3 name 0.87' when tracked) drawn, as
        (H, W, 3) uint8 RGB."""
        image = Image.fromarray(self.orig_img)
        draw = ImageDraw.Draw(image)
        h, w = self.orig_shape
        lw = line_width or max(round((h + w) / 2 * 0.003), 2)  # Ultralytics' default thickness
        font = ImageFont.load_default(size=max(lw * 5, 10))
        # Lowest confidence first, so the best boxes and their labels end up on top.
        ids = self.boxes.id if self.boxes.id is not None else [None] * len(self.boxes)
        for box, score, cls, track_id in reversed(list(zip(self.boxes.xyxy, self.boxes.conf, self.boxes.cls, ids))):
            colour = class_colour(cls)
            x1, y1, x2, y2 = (float(v) for v in box)
            draw.rectangle([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], outline=colour, width=lw)
            if not labels:
                continue
            text = f"{self.name(cls)} {score:.2f}" if conf else self.name(cls)
            if track_id is not None:
                text = f"id:{track_id} {text}"
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

    def text_lines(self, save_conf: bool = False) -> list[str]:
        """Ultralytics' label lines: 'class xc yc w h [conf] [id]', normalised to the image, %g format."""
        lines = []
        ids = self.boxes.id if self.boxes.id is not None else [None] * len(self.boxes)
        for cls, xywhn, conf, track_id in zip(self.boxes.cls, self.boxes.xywhn.tolist(), self.boxes.conf, ids):
            line = (int(cls), *xywhn) + ((float(conf),) if save_conf else ()) + (() if track_id is None else (int(track_id),))
            lines.append(("%g " * len(line)).rstrip() % line)
        return lines

    def save_txt(self, path: str | os.PathLike, save_conf: bool = False) -> Path | None:
        """Write `text_lines` to `path` (YOLO label format), atomically; nothing when there are no
        detections (as Ultralytics). The path written, or None."""
        lines = self.text_lines(save_conf)
        if not lines:
            return None
        text = "".join(line + "\n" for line in lines)
        return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def crops(self, gain: float = 1.02, pad: int = 10) -> list[tuple[str, np.ndarray]]:
        """(class name, RGB crop) of every detection: each box grown by `gain` and `pad` pixels about its
        centre and clipped to the image, as Ultralytics' save_one_box."""
        h, w = self.orig_shape
        out = []
        xywh = self.boxes.xywh  # float32 throughout, as Ultralytics' torch arithmetic
        xywh[:, 2:] = xywh[:, 2:] * np.float32(gain) + np.float32(pad)
        corners = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
        for (x1, y1, x2, y2), cls in zip(np.trunc(corners).astype(np.int64).tolist(), self.boxes.cls):  # .long()
            x1, x2 = min(max(x1, 0), w), min(max(x2, 0), w)
            y1, y2 = min(max(y1, 0), h), min(max(y2, 0), h)
            out.append((self.name(cls), self.orig_img[y1:y2, x1:x2]))
        return out

    def save_crop(self, save_dir: str | os.PathLike, file_name: str = "im.jpg") -> list[Path]:
        """Write each detection's crop to save_dir/<class name>/<file_name stem>.jpg (then -2, -3, ... as
        Ultralytics' increment_path), JPEG quality 95; the paths written."""
        written = []
        stem = Path(file_name).stem
        for name, crop in self.crops():
            if crop.size == 0:
                continue
            folder = Path(save_dir) / name
            path, k = folder / f"{stem}.jpg", 1
            while path.exists():
                k += 1
                path = folder / f"{stem}-{k}.jpg"
            image = Image.fromarray(np.ascontiguousarray(crop))
            written.append(write_atomic(path, lambda tmp: image.save(tmp, format="JPEG", quality=95, subsampling=0)))
        return written
