"""The entry points: a dataset from what the user names.

    ds = load_dataset("coco8")                      # configs/coco8.yaml; data under the datasets dir
    ds = load_dataset("path/to/data.yaml")          # any Ultralytics data YAML
    ds = load_dataset("path/to/coco8")              # a dataset folder holding its YAML: that folder is the root
    ds = load_dataset("instances_val2017.json", images="val2017/")   # COCO JSON + image folder
    ds = load_dataset("tfds:coco/2017", tfds_data_dir="~/tensorflow_datasets")
    train = load_split("coco128", "train")          # for training: every label parsed, crowd boxes left out

A data YAML is resolved by `config.py` (Ultralytics' rules) and its missing images fetched by
`download.py`; the formats are read by `yolo.py`, `coco_json.py` and `tfds.py`.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from nasjax.data.base import Dataset, DatasetError, Sample, SampleListDataset
from nasjax.data.coco_json import CocoJsonDataset
from nasjax.data.config import load_data_config
from nasjax.data.download import check_det_dataset
from nasjax.data.tfds import TFDS_PREFIX, TfdsCocoDataset
from nasjax.data.yolo import YoloDataset


def load_dataset(data, split: str = "val", *, images: str | os.PathLike | None = None, download: bool = True,
                 exif_transpose: bool = False, tfds_data_dir: str | None = None, tfds_download: bool = False,
                 process_index: int | None = None, process_count: int | None = None,
                 progress: bool = True) -> Dataset:
    """A validation dataset from `data` (see the module docstring for the forms it takes).

    split: the YAML key ("val" by default; for TFDS "val" means "validation"). images: the image folder
    of a COCO JSON file. download: fetch a YOLO dataset's `download` zips when its images are missing.
    process_index / process_count: this process's share of the images in a multi-host run (default
    the JAX process); every process then holds the full label set of file datasets but reads only its
    images."""
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if isinstance(data, str) and data.startswith(TFDS_PREFIX):
        tfds_split = "validation" if split == "val" else split
        return TfdsCocoDataset(data[len(TFDS_PREFIX):], tfds_split, tfds_data_dir, process_index=process_index,
                               process_count=process_count, download=tfds_download)
    if isinstance(data, (str, os.PathLike)) and Path(data).suffix.lower() == ".json":
        dataset: SampleListDataset = CocoJsonDataset(data, images)
    else:
        config = check_det_dataset(data, split=split, download=download, progress=progress)
        dataset = YoloDataset(config, split, exif_transpose=exif_transpose)
    return dataset.shard(process_index, process_count) if process_count > 1 else dataset


def load_split(data, split: str, *, require_labels: bool = True) -> SampleListDataset:
    """A split for training, every label parsed up front: a YOLO data YAML / folder / shipped name, a COCO
    JSON file (the same file for every split), or a data YAML whose `train:` / `val:` entry is a COCO JSON
    file (its images found beside it as for validation). Crowd boxes of COCO files are left out, as
    super-gradients' training sets do (with_crowd False). A split without a single box is an error when
    `require_labels` (nothing to learn from: usually the labels/ folder is misplaced)."""
    dataset = None
    if not (isinstance(data, (str, os.PathLike)) and Path(data).suffix.lower() == ".json"):
        entries = None
        if not (isinstance(data, str) and data.startswith(TFDS_PREFIX)):
            entries = load_data_config(data).splits.get(split)
        if entries and len(entries) == 1 and entries[0].suffix.lower() == ".json":
            dataset = CocoJsonDataset(entries[0])
    if dataset is None:
        dataset = load_dataset(data, split, process_index=0, process_count=1, progress=False)
    if not isinstance(dataset, SampleListDataset):
        raise DatasetError(f"training needs a YOLO-format or COCO JSON dataset, not {dataset.describe()}")
    if any(s.iscrowd is not None and s.iscrowd.any() for s in dataset.samples):
        dataset.samples = [_without_crowd(s) for s in dataset.samples]
    if require_labels and not any(len(s.boxes) for s in dataset.samples):
        missing = getattr(dataset, "missing_labels", None)
        detail = f" ({missing} of {len(dataset)} images have no label file)" if missing else ""
        raise DatasetError(
            f"the '{split}' split of {dataset.name} has no labelled boxes at all{detail}; YOLO labels go in a "
            f"'labels' folder beside 'images' (images/x.jpg -> labels/x.txt), one 'class cx cy w h' row per box"
        )
    return dataset


def _without_crowd(sample: Sample) -> Sample:
    if sample.iscrowd is None or not sample.iscrowd.any():
        return sample
    keep = ~sample.iscrowd
    return dataclasses.replace(sample, boxes=sample.boxes[keep], classes=sample.classes[keep], iscrowd=None,
                               area=None if sample.area is None else sample.area[keep])
