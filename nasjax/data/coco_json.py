"""COCO's own annotation format: an annotation file (`instances_val2017.json`: images, annotations
with bbox x y w h, area and iscrowd, categories) and its image folder (default: found beside it, e.g.
`../images/val2017` or `../val2017`). Classes are the file's categories sorted by id, with their
original ids."""
from __future__ import annotations

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
        try:
            categories = sorted(data["categories"], key=lambda c: int(c["id"]))
            names = {i: str(c["name"]) for i, c in enumerate(categories)}
            category_ids = [int(c["id"]) for c in categories]
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{path}: malformed 'categories' entry: {e}") from e
        index_of = {cid: i for i, cid in enumerate(category_ids)}
        per_image: dict[int, list[dict]] = {}
        for n, ann in enumerate(data["annotations"]):
            try:
                image_id, cid, bbox = int(ann["image_id"]), int(ann["category_id"]), [float(v) for v in ann["bbox"]]
            except (KeyError, TypeError, ValueError) as e:
                raise DatasetError(f"{path}: annotation #{n} (id {ann.get('id') if isinstance(ann, dict) else '?'}) "
                                   f"is malformed: {e}") from e
            if cid not in index_of:
                raise DatasetError(f"{path}: annotation id {ann.get('id')} has category_id {cid}, which is not in "
                                   "'categories'")
            if len(bbox) != 4:
                raise DatasetError(f"{path}: annotation id {ann.get('id')} has a bbox of {len(bbox)} values, expected 4")
            per_image.setdefault(image_id, []).append({**ann, "bbox": bbox, "category_id": cid})
        samples = []
        for entry in sorted(data["images"], key=lambda im: int(im["id"])):
            try:
                image_id, file_name = int(entry["id"]), str(entry["file_name"])
                height, width = int(entry["height"]), int(entry["width"])
            except (KeyError, TypeError, ValueError) as e:
                raise DatasetError(f"{path}: malformed 'images' entry {entry!r}: {e}") from e
            anns = per_image.pop(image_id, [])
            xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            classes = np.array([index_of[a["category_id"]] for a in anns], np.int64)
            iscrowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
            area = np.array([float(a.get("area", w * h)) for a, (_, _, w, h) in zip(anns, xywh)], np.float64)
            samples.append(Sample(image_id, str(image_dir / file_name), file_name, height, width, boxes, classes,
                                  iscrowd, area))
        if per_image:
            raise DatasetError(f"{path}: annotations refer to image ids not in 'images': {sorted(per_image)[:5]}")
        missing = [s.source for s in samples if not os.path.isfile(s.source)]
        if missing:
            raise DatasetNotFoundError(f"{len(missing)} image(s) of {path} are missing from {image_dir}, e.g. {missing[0]}")
        super().__init__(path.stem, names, category_ids, samples)
