"""The training input pipeline: YOLO-format datasets → fixed-shape batches for `nasjax.train`.

Each image is read (`nasjax.preprocessing.load_image`), resized and padded to the square training size
(`centre_pad`, super-gradients' DetectionPaddedRescale-like default, or `letterbox`) with pad value
114, then augmented:

- random horizontal flip (probability `flip`, 0.5 as super-gradients' DetectionHorizontalFlip);
- HSV jitter as super-gradients' DetectionHSV(hgain=18, sgain=30, vgain=30): for each of H, S, V, with
  probability 1/2, an offset uniform in ±gain is added (hue in OpenCV's 0..180 units, wrapping; S and V
  clipped to 0..255).

A batch is `(images, targets)`: images float32 (B, S, S, 3) RGB in [0, 1]; targets a numpy
`LossTargets` padded to a fixed `max_boxes` (xyxy in input pixels), so that every batch has the same
shapes and the train step compiles once. Boxes are clipped to the image and boxes narrower or shorter
than `min_box_size` pixels after the transform are dropped.

Determinism: the order of the images in epoch e is `default_rng([seed, e]).permutation`, and image i of
that epoch is augmented with `default_rng([seed, e, i])`, so the batches do not depend on the number of
threads or on timing. A thread pool prepares the next `prefetch` batches while the step runs.

TODO (issue 7): mosaic, random affine (rotation / scale / shear / translation) and mixup of the
super-gradients recipe are not implemented yet; neither is multi-host sharding of the training set.
"""
from __future__ import annotations

import collections
import concurrent.futures
import math
from typing import Iterator, NamedTuple, Sequence

import numpy as np
from PIL import Image

from nasjax.datasets import DatasetError, Sample, SampleListDataset, load_dataset
from nasjax.loss import LossTargets
from nasjax.preprocessing import load_image, make_transform, to_unit_float

PAD_VALUE = 114
HSV_GAINS = (18.0, 30.0, 30.0)  # super-gradients' DetectionHSV defaults (OpenCV units: H 0..180)


class Batch(NamedTuple):
    images: np.ndarray  # (B, S, S, 3) float32 in [0, 1]
    targets: LossTargets  # numpy arrays, (B, M, 4) / (B, M) / (B, M)


def load_split(data, split: str, *, require_labels: bool = True) -> SampleListDataset:
    """A YOLO-format split for training (every label parsed up front); a split without a single box is
    an error when `require_labels` (nothing to learn from: usually the labels/ folder is misplaced)."""
    dataset = load_dataset(data, split, process_index=0, process_count=1, progress=False)
    if not isinstance(dataset, SampleListDataset):
        raise DatasetError(f"training needs a YOLO-format or COCO JSON dataset, not {dataset.describe()}")
    if require_labels and not any(len(s.boxes) for s in dataset.samples):
        missing = getattr(dataset, "missing_labels", None)
        detail = f" ({missing} of {len(dataset)} images have no label file)" if missing else ""
        raise DatasetError(
            f"the '{split}' split of {dataset.name} has no labelled boxes at all{detail}; YOLO labels go in a "
            f"'labels' folder beside 'images' (images/x.jpg -> labels/x.txt), one 'class cx cy w h' row per box"
        )
    return dataset


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, gains: Sequence[float] = HSV_GAINS) -> np.ndarray:
    """super-gradients' augment_hsv on an (H, W, 3) uint8 RGB image."""
    offsets = rng.uniform(-1, 1, 3) * np.asarray(gains) * rng.integers(0, 2, 3)
    if not offsets.any():
        return image
    hsv = np.asarray(Image.fromarray(image).convert("HSV")).astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0] + offsets[0] * (256.0 / 180.0), 256.0)  # PIL hue is 0..255
    hsv[..., 1:] = np.clip(hsv[..., 1:] + offsets[1:], 0, 255)
    hsv = (np.round(hsv) % 256).astype(np.uint8)
    return np.asarray(Image.frombytes("HSV", (hsv.shape[1], hsv.shape[0]), hsv.tobytes()).convert("RGB"))


def prepare(sample: Sample, imgsz: int, rng: np.random.Generator | None, *, method: str = "centre_pad",
            flip: float = 0.5, hsv: bool = True, min_box_size: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (S, S, 3) uint8, boxes (n, 4) xyxy input pixels float32, classes (n,) int32) for one sample;
    rng None: no augmentation."""
    image = load_image(sample.source)
    transform = make_transform(image.shape[:2], method, imgsz)
    image = transform.apply(image, PAD_VALUE)
    top, left = transform.pad[:2]
    boxes = np.asarray(sample.boxes, np.float32).reshape(-1, 4) * np.float32(transform.scale)
    boxes = boxes + np.array([left, top, left, top], np.float32)
    classes = np.asarray(sample.classes, np.int32).reshape(-1)
    if rng is not None:
        if flip and rng.random() < flip:
            image = image[:, ::-1]
            boxes = np.stack([imgsz - boxes[:, 2], boxes[:, 1], imgsz - boxes[:, 0], boxes[:, 3]], axis=1)
        if hsv:
            image = hsv_jitter(np.ascontiguousarray(image), rng)
    boxes = np.clip(boxes, 0, imgsz)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_box_size)
    return np.ascontiguousarray(image), boxes[keep], classes[keep]


class Loader:
    """Batches of a dataset, epoch by epoch; `loader.epoch(e)` iterates one epoch.

    shuffle / augment: training (True) or evaluation (False). drop_last: only full batches (the default
    when shuffling, so that the shapes never change); otherwise the last batch is smaller.
    max_boxes: the padded number of boxes per image (default: the most any image has, at least 1); an
    image with more boxes keeps the first max_boxes.
    """

    def __init__(self, dataset: SampleListDataset, batch_size: int, imgsz: int, *, seed: int = 0,
                 shuffle: bool = True, augment: bool = True, drop_last: bool | None = None,
                 max_boxes: int | None = None, method: str = "centre_pad", flip: float = 0.5, hsv: bool = True,
                 workers: int = 4, prefetch: int = 2):
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        if len(dataset) == 0:
            raise DatasetError(f"{dataset.name}: no images")
        self.samples = list(dataset.samples)
        self.batch_size, self.imgsz, self.seed = batch_size, imgsz, seed
        self.shuffle, self.augment = shuffle, augment
        self.drop_last = shuffle if drop_last is None else drop_last
        if self.drop_last and len(self.samples) < batch_size:
            raise DatasetError(f"{dataset.name}: {len(self.samples)} images, fewer than one batch of {batch_size}; "
                               f"lower the batch size")
        self.max_boxes = max_boxes or max(1, max(len(s.boxes) for s in self.samples))
        self.method, self.flip, self.hsv = method, flip, hsv
        self.workers, self.prefetch = max(1, workers), max(1, prefetch)

    def __len__(self) -> int:
        n = len(self.samples) / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)

    def _order(self, epoch: int) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))
        return np.arange(len(self.samples))

    def _batch(self, epoch: int, positions: np.ndarray, order: np.ndarray) -> Batch:
        b, m = len(positions), self.max_boxes
        images = np.empty((b, self.imgsz, self.imgsz, 3), np.float32)
        boxes = np.zeros((b, m, 4), np.float32)
        labels = np.zeros((b, m), np.int32)
        mask = np.zeros((b, m), bool)
        for row, position in enumerate(positions):
            rng = np.random.default_rng([self.seed, epoch, int(position)]) if self.augment else None
            image, image_boxes, classes = prepare(self.samples[order[position]], self.imgsz, rng,
                                                  method=self.method, flip=self.flip, hsv=self.hsv)
            images[row] = to_unit_float(image)
            n = min(len(image_boxes), m)
            boxes[row, :n], labels[row, :n], mask[row, :n] = image_boxes[:n], classes[:n], True
        return Batch(images, LossTargets(boxes, labels, mask))

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        order = self._order(epoch)
        starts = range(0, len(self) * self.batch_size, self.batch_size)
        groups = [np.arange(s, min(s + self.batch_size, len(order))) for s in starts]
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            pending: collections.deque = collections.deque()
            for group in groups:
                pending.append(pool.submit(self._batch, epoch, group, order))
                if len(pending) > self.prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
