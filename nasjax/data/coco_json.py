"""COCO's own annotation format: an annotation file (`instances_val2017.json`: images, annotations
with bbox x y w h, area and iscrowd, categories) and its image folder (default: found beside it, e.g.
`../images/val2017` or `../val2017`). Classes are the file's categories sorted by id, with their
original ids."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from nasjax.data.base import (
    DatasetError,
    DatasetNotFoundError,
    Sample,
    SampleListDataset,
    read_json_file,
)


def _default_image_dir(annotation_file: Path) -> Path:
    split = annotation_file.stem.split("_", 1)[-1]  # instances_val2017 → val2017
    parent = annotation_file.resolve().parent
    for candidate in (parent.parent / "images" / split, parent.parent / split, parent / "images" / split,
                      parent / split, parent.parent / "images", parent / "images"):
        if candidate.is_dir():
            return candidate
    raise DatasetNotFoundError(
        f"no image folder found for {annotation_file} (looked for images/{split} and {split} beside it); "
        "pass the folder (images=... / --images DIR)"
    )


class CocoJsonDataset(SampleListDataset):
    """COCO's own format: images, annotations (bbox x y w h, area, iscrowd) and categories of a JSON
    file; class index i is the i-th category by id."""

    def __init__(self, annotation_file: str | os.PathLike, image_dir: str | os.PathLike | None = None):
        path = Path(annotation_file)
        data = read_json_file(path, "annotation file")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data, dict) or not isinstance(data.get(key), list):
                raise DatasetError(f"{path}: a COCO annotation file needs an '{key}' list")
        image_dir = Path(image_dir) if image_dir is not None else _default_image_dir(path)
        if not image_dir.is_dir():
            raise DatasetNotFoundError(f"image folder not found: {image_dir}")
        categories = [_category(c, f"{path}: 'categories' entry #{n}") for n, c in enumerate(data["categories"])]
        categories.sort(key=lambda c: c[0])
        if len({cid for cid, _ in categories}) != len(categories):
            repeated = next(a for a, b in zip(categories, categories[1:]) if a[0] == b[0])[0]
            raise DatasetError(f"{path}: category id {repeated} appears twice in 'categories'")
        names = {i: name for i, (_, name) in enumerate(categories)}
        category_ids = [cid for cid, _ in categories]
        index_of = {cid: i for i, cid in enumerate(category_ids)}
        per_image: dict[int, list[tuple]] = {}
        for n, ann in enumerate(data["annotations"]):
            where = f"{path}: annotation " + (f"id {_short(ann['id'])}" if isinstance(ann, dict) and "id" in ann else f"#{n}")
            image_id, cid, bbox, iscrowd, area = _annotation(ann, where)
            if cid not in index_of:
                raise DatasetError(f"{where} has category_id {cid}, which is not in 'categories'")
            per_image.setdefault(image_id, []).append((bbox, index_of[cid], iscrowd, area))
        samples = []
        entries = [_image(entry, f"{path}: 'images' entry #{n}") for n, entry in enumerate(data["images"])]
        for image_id, file_name, height, width in sorted(entries, key=lambda e: e[0]):
            anns = per_image.pop(image_id, [])
            xywh = np.array([a[0] for a in anns], np.float64).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            classes = np.array([a[1] for a in anns], np.int64)
            iscrowd = np.array([a[2] for a in anns], bool)
            area = np.array([w * h if a[3] is None else a[3] for a, (_, _, w, h) in zip(anns, xywh)], np.float64)
            samples.append(Sample(image_id, str(image_dir / file_name), file_name, height, width, boxes, classes,
                                  iscrowd, area))
        if per_image:
            raise DatasetError(f"{path}: annotations refer to image ids not in 'images': {sorted(per_image)[:5]}")
        missing = [s.source for s in samples if not os.path.isfile(s.source)]
        if missing:
            raise DatasetNotFoundError(f"{len(missing)} image(s) of {path} are missing from {image_dir}, e.g. {missing[0]}")
        super().__init__(path.stem, names, category_ids, samples)


# --- one entry each, every field checked: a wrong type or an impossible box is an error naming the entry
# (not a silently converted value: "12" or 1.5 as an id, a box as a string, a negative width, NaN).


def _field(entry, key: str, where: str):
    if not isinstance(entry, dict):
        raise DatasetError(f"{where} is a {type(entry).__name__}, not an object {{...}}")
    if key not in entry:
        raise DatasetError(f"{where} has no '{key}'")
    return entry[key]


def _integer(entry, key: str, where: str) -> int:
    value = _field(entry, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetError(f"{where}: '{key}' must be an integer, got {_short(value)}")
    return value


def _number(value, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DatasetError(f"{where}: {what} must be a finite number, got {_short(value)}")
    return float(value)


def _category(entry, where: str) -> tuple[int, str]:
    name = _field(entry, "name", where)
    if not isinstance(name, str):
        raise DatasetError(f"{where}: 'name' must be a string, got {_short(name)}")
    return _integer(entry, "id", where), name


def _image(entry, where: str) -> tuple[int, str, int, int]:
    image_id = _integer(entry, "id", where)
    file_name = _field(entry, "file_name", where)
    if not isinstance(file_name, str) or not file_name:
        raise DatasetError(f"{where}: 'file_name' must be a non-empty string, got {_short(file_name)}")
    height, width = _integer(entry, "height", where), _integer(entry, "width", where)
    if height < 1 or width < 1:
        raise DatasetError(f"{where}: the image size must be positive, got {width}x{height}")
    return image_id, file_name, height, width


def _annotation(entry, where: str) -> tuple[int, int, list[float], bool, float | None]:
    image_id, cid = _integer(entry, "image_id", where), _integer(entry, "category_id", where)
    bbox = box_xywh(_field(entry, "bbox", where), where)
    iscrowd = entry.get("iscrowd", 0)
    if iscrowd not in (0, 1) or isinstance(iscrowd, float):
        raise DatasetError(f"{where}: 'iscrowd' must be 0 or 1, got {_short(iscrowd)}")
    area = entry.get("area")
    if area is not None and _number(area, "'area'", where) < 0:
        raise DatasetError(f"{where}: 'area' must not be negative, got {area}")
    return image_id, cid, bbox, bool(iscrowd), None if area is None else float(area)


def box_xywh(value, where: str) -> list[float]:
    """A COCO [x, y, width, height] box: 4 finite numbers, width and height not negative."""
    if not isinstance(value, list) or len(value) != 4:
        raise DatasetError(f"{where}: 'bbox' must be a list of 4 numbers [x, y, width, height], got {_short(value)}")
    box = [_number(v, "'bbox'", where) for v in value]
    if box[2] < 0 or box[3] < 0:
        raise DatasetError(f"{where}: 'bbox' {value} has a negative width or height")
    return box


def _short(value) -> str:
    text = repr(value) if not isinstance(value, (list, dict)) or len(value) <= 8 else f"a {type(value).__name__} of {len(value)}"
    return text if len(text) <= 80 else text[:77] + "..."
