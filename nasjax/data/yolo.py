"""The YOLO format (Ultralytics'): a split's images and their label files, read into `Sample`s.

* A split entry (resolved by `config.py`) is a folder (all images below it, recursively), a .txt list
  of images (`./x` lines relative to the list's folder), or an image file. Images are the files with
  one of `IMAGE_EXTENSIONS` (the one list, in `preprocessing.py`; predict lists folders with it too).
* Labels: the image path with its last `/images/` replaced by `/labels/` and the extension by `.txt`;
  one `class cx cy w h` line per object, normalised to [0, 1]; a line of class + 2k values, k >= 3, is a
  polygon (an Ultralytics segment label, `class x1 y1 x2 y2 x3 y3 ...`) and is read as its bounding box;
  any other count is an error naming file and line (docs/datasets.md#labels). Exact duplicate lines are
  dropped (as Ultralytics does). An image without a label file, or with an empty one, is a background
  image.
* Folders are walked as glob's `**` does, but a symbolic link loop is an error naming the link (glob
  follows it until paths are too long: hours with two loops).
"""
from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from nasjax.data import preprocessing
from nasjax.data.base import (
    DatasetError,
    DatasetNotFoundError,
    Sample,
    SampleListDataset,
    image_key,
)
from nasjax.data.coco import category_ids_for
from nasjax.data.config import DataConfig
from nasjax.data.preprocessing import IMAGE_EXTENSIONS, ImageLoadError


def walk_files(folder: Path) -> list[str]:
    """Every file below `folder` as glob's `folder/**/*.*` finds them (hidden names skipped, links to
    folders followed), but a link that leads back to a folder it is inside (a symlink loop, which glob
    follows until the path is too long: hours with a few loops) is a DatasetError naming it."""
    files: list[str] = []

    def walk(directory: str, ancestors: frozenset) -> None:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            raise DatasetError(f"cannot list the folder {directory}: {e}") from e
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:  # a link loop on its own (ELOOP) is not a folder: reported when read
                is_dir = False
            if not is_dir:
                if "." in entry.name:
                    files.append(entry.path)
                continue
            info = os.stat(entry.path)
            key = (info.st_dev, info.st_ino)
            if key in ancestors:
                raise DatasetError(f"{entry.path} is a symbolic link loop: it leads back to a folder it is in "
                                   f"({os.path.realpath(entry.path)}); remove the link")
            walk(entry.path, ancestors | {key})

    top = os.stat(folder)
    walk(str(folder), frozenset({(top.st_dev, top.st_ino)}))
    return files


def list_images(entries: Sequence[Path]) -> list[Path]:
    """Ultralytics' get_img_files: folders searched recursively (`walk_files`), .txt lists read, image
    files kept."""
    files: list[str] = []
    for entry in entries:
        if entry.is_dir():
            files += walk_files(entry)
        elif entry.is_file() and entry.suffix.lower() == ".txt":
            parent = entry.parent
            for line in entry.read_text(encoding="utf-8").strip().splitlines():
                line = line.strip()
                if not line:
                    continue
                if line.startswith("./"):
                    files.append(str(parent / line[2:]))
                elif os.path.isabs(line) or os.path.exists(line):
                    files.append(line)
                else:
                    files.append(str(parent / line))
        elif entry.is_file():
            files.append(str(entry))
        else:
            raise DatasetNotFoundError(f"{entry} does not exist")
    return sorted(Path(f) for f in files if f.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS)


def label_path(image: Path) -> Path:
    """Ultralytics' img2label_paths: the last /images/ becomes /labels/, the extension .txt."""
    text = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(text.rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def parse_label_file(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes (n,), boxes (n, 4) normalised cx cy w h) of a YOLO label file; duplicate rows dropped.
    Raises DatasetError naming file and line for anything malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not a UTF-8 text label file: {e}") from e
    except OSError as e:
        raise DatasetError(f"cannot read label file {path}: {e.strerror or e}") from e
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{path}:{lineno}"
        if len(parts) != 5 and not (len(parts) > 6 and len(parts) % 2 == 1):
            raise DatasetError(f"{where}: expected 5 values 'class x_center y_center width height' (or a polygon "
                               f"'class x1 y1 x2 y2 x3 y3 ...'), got {len(parts)}: {line.strip()!r}")
        try:
            values = [float(v) for v in parts]
        except ValueError:
            bad = next(v for v in parts if not _is_float(v))
            raise DatasetError(f"{where}: {bad!r} is not a number: {line.strip()!r}") from None
        if not all(np.isfinite(values)):
            raise DatasetError(f"{where}: non-finite value: {line.strip()!r}")
        cls = values[0]
        if cls != int(cls):
            raise DatasetError(f"{where}: class id {parts[0]!r} is not an integer")
        if not 0 <= cls < num_classes:
            raise DatasetError(f"{where}: class id {int(cls)} is outside the dataset's {num_classes} names "
                               f"(0..{num_classes - 1})")
        coords = np.array(values[1:])
        if coords.max() > 1.01 or coords.min() < -0.01:
            raise DatasetError(f"{where}: coordinates must be normalised to [0, 1] (by the image width and height), "
                               f"got {line.strip()!r}")
        if len(coords) == 4:
            box = coords
        else:
            xs, ys = coords[0::2], coords[1::2]
            box = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, xs.max() - xs.min(), ys.max() - ys.min()])
        rows.append([int(cls), *box])
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 4))
    table = np.array(rows, np.float64)
    _, first = np.unique(table, axis=0, return_index=True)
    table = table[np.sort(first)]
    return table[:, 0].astype(np.int64), table[:, 1:]


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def image_size(path: Path, exif_transpose: bool = False) -> tuple[int, int]:
    """(height, width) from the file's header (and EXIF orientation when applied)."""
    try:
        with preprocessing.open_image(path) as image:
            w, h = image.size
            preprocessing.check_image_size(path, image.size)
            if exif_transpose and image.getexif().get(0x0112) in (5, 6, 7, 8):
                w, h = h, w
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageLoadError(f"cannot read image {path}: {e}") from e
    return h, w


def _scan(paths: Sequence[Path], function, workers: int = 8) -> list:
    with concurrent.futures.ThreadPoolExecutor(min(workers, max(1, len(paths)))) as pool:
        return list(pool.map(function, paths))


class YoloDataset(SampleListDataset):
    """A split of a YOLO-format dataset, with every label parsed and every image header read up front
    (a malformed label or an unreadable image fails before any inference)."""

    def __init__(self, config: DataConfig, split: str = "val", exif_transpose: bool = False):
        self.config = config
        entries = config.splits.get(split)
        if entries is None:
            raise DatasetError(f"{config.yaml_file or config.name}: no '{split}:' split")
        images = list_images(entries)
        if not images:
            raise DatasetError(f"no images in {', '.join(map(str, entries))} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
        num_classes = len(config.names)

        def read(path: Path) -> tuple[tuple[int, int], tuple[np.ndarray, np.ndarray], bool]:
            labels = label_path(path)
            has_labels = labels.is_file()
            parsed = parse_label_file(labels, num_classes) if has_labels else (np.zeros(0, np.int64), np.zeros((0, 4)))
            return image_size(path, exif_transpose), parsed, has_labels

        samples = []
        self.missing_labels = 0
        for path, ((h, w), (classes, xywhn), has_labels) in zip(images, _scan(images, read)):
            self.missing_labels += not has_labels
            cx, cy, bw, bh = (xywhn * np.array([w, h, w, h])).T
            boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).reshape(-1, 4)
            samples.append(Sample(image_key(path), str(path), path.name, h, w, boxes, classes))
        super().__init__(config.name, dict(config.names), category_ids_for(config.names), samples)
