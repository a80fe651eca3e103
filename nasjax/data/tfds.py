"""TFDS `coco/2017` (or another coco config): its split (default "validation"), images decoded by
tf.data and streamed in chunks, its own image ids, label i = the i-th COCO category, with per-process
sharding (`tfds.split_for_jax_process`) for multi-host runs. TensorFlow and tensorflow-datasets are
imported only when such a dataset is made (the 'data' extra)."""
from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

from nasjax.data.base import Dataset, DatasetNotFoundError, Sample, image_key
from nasjax.data.coco import COCO80_TO_91, category_ids_for, is_coco_names
from nasjax.weights.coco import COCO_CLASS_NAMES

TFDS_PREFIX = "tfds:"  # load_dataset("tfds:coco/2017")


class TfdsCocoDataset(Dataset):
    """TFDS `coco/2017` (or another coco config): images decoded by tf.data, streamed in chunks.

    process_index / process_count: this process's share (`tfds.split_for_jax_process`), default
    jax.process_index() / jax.process_count(). download: run `download_and_prepare` first (~25 GB for
    coco/2017); by default the dataset must already be prepared under data_dir."""

    def __init__(self, name: str = "coco/2017", split: str = "validation", data_dir: str | None = None, *,
                 process_index: int | None = None, process_count: int | None = None, download: bool = False):
        from nasjax.utils.optional import require

        tf = require("tensorflow", "tensorflow (tensorflow-cpu)")
        tfds = require("tensorflow_datasets", "tensorflow-datasets")
        try:  # keep TensorFlow off the accelerators: JAX owns them
            tf.config.set_visible_devices([], "GPU")
        except (RuntimeError, ValueError):
            pass
        if process_index is None or process_count is None:
            import jax

            process_index, process_count = jax.process_index(), jax.process_count()
        self.name, self.base_split = name, split
        self.process_index, self.process_count = process_index, process_count
        self.split = (tfds.split_for_jax_process(split, process_index=process_index, process_count=process_count)
                      if process_count > 1 else split)
        self.builder = tfds.builder(name, data_dir=data_dir)
        if download:
            self.builder.download_and_prepare()
        label = self.builder.info.features["objects"]["label"]
        label_names = list(label.names)
        if len(label_names) == len(COCO_CLASS_NAMES) and not is_coco_names(label_names):
            # TFDS names label i after the i-th COCO category; without the generated metadata (e.g. under
            # tfds.testing.mock_data) the names are just '0'..'79'.
            label_names = list(COCO_CLASS_NAMES) if all(n.isdigit() for n in label_names) else label_names
        self.names = dict(enumerate(label_names))
        self.category_ids = list(COCO80_TO_91) if len(label_names) == 80 else category_ids_for(self.names)
        self._data_dir = data_dir

    def __len__(self) -> int:
        try:
            return int(self.builder.info.splits[self.split].num_examples)
        except Exception:  # noqa: BLE001 - unknown (mocked or not prepared): no total for the progress bar
            return 0

    def describe(self) -> str:
        return f"tfds {self.name} {self.base_split} (process {self.process_index} of {self.process_count})"

    def _dataset(self):
        import tensorflow_datasets as tfds

        try:
            ds = self.builder.as_dataset(split=self.split, shuffle_files=False)
        except Exception as e:  # noqa: BLE001 - TFDS raises assorted errors for a dataset that is not there
            raise DatasetNotFoundError(
                f"TFDS dataset {self.name} split {self.base_split!r} is not available under "
                f"{self._data_dir or '~/tensorflow_datasets'}: {e}\nPrepare it once with "
                f"`tfds build {self.name} --data_dir DIR` (downloads the COCO zips, ~25 GB) or pass download=True "
                "(--tfds-download), then point data_dir (--tfds-data-dir) at DIR."
            ) from e
        return tfds.as_numpy(ds)

    def chunks(self, size: int) -> Iterator[list[Sample]]:
        chunk: list[Sample] = []
        for example in self._dataset():
            chunk.append(self.sample(example))
            if len(chunk) >= size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    @staticmethod
    def sample(example: Mapping) -> Sample:
        image = np.asarray(example["image"])
        if image.ndim == 3 and image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        h, w = image.shape[:2]
        objects = example["objects"]
        ymin, xmin, ymax, xmax = np.asarray(objects["bbox"], np.float64).reshape(-1, 4).T
        boxes = np.stack([xmin * w, ymin * h, xmax * w, ymax * h], axis=1)
        classes = np.asarray(objects["label"], np.int64).reshape(-1)
        iscrowd = np.asarray(objects.get("is_crowd", np.zeros(len(classes), bool)), bool).reshape(-1)
        area = np.asarray(objects["area"], np.float64).reshape(-1) if "area" in objects else None
        name = example.get("image/filename", b"")
        name = name.decode() if isinstance(name, bytes) else str(name)
        key = int(example["image/id"]) if "image/id" in example else image_key(name)
        return Sample(key, image, name, h, w, boxes, classes, iscrowd, area)
