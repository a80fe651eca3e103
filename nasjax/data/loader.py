"""The training input pipeline: a `SampleListDataset` (`load.load_split`) → fixed-shape batches for
`nasjax.train`. `prepare` makes one training image: it reads the sample and runs the augmentations of
`augment.py` in the order given there, then the final resize and pad to S x S (`preprocessing.py`).

A batch is `(images, targets)`: images float32 (B, S, S, 3) RGB in [0, 1]; targets a numpy
`LossTargets` padded to a fixed `max_boxes` (xyxy in input pixels), so that every batch has the same
shapes and the train step compiles once. Mosaic and mixup add boxes: the default `max_boxes` is the
most boxes any image has, times 4 when mosaic may run and times 2 when mixup may run, capped at
`MAX_BOXES_CAP` (256) unless one image alone has more; an image with more boxes keeps the first
`max_boxes`.

Determinism: the order of the images in epoch e is `default_rng([seed, e]).permutation`, and the image
at position i of that epoch is augmented with `default_rng([seed, e, i])` alone — every random draw,
including the indices of the other images that mosaic and mixup use, comes from that generator — so
the batches depend only on (seed, epoch, position), never on the number of threads or on timing. A
thread pool prepares the next `prefetch` batches while the step runs.

Several processes (multi-host): every process walks the same global batches (the order and each
image's augmentation depend only on (seed, epoch, position)), but reads and augments only its own
contiguous block of rows (`process_index` / `process_count`, the block `nasjax.utils.distributed.
process_rows` defines), which `shard_batch` (nasjax/train/step.py) places on its devices.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from nasjax.data.augment import (
    Augmentation,
    Parts,
    chance,
    channel_swap,
    fit_to_size,
    horizontal_flip,
    hsv_jitter,
    mixup,
    mosaic,
    random_affine,
)
from nasjax.data.base import DatasetError, Sample, SampleListDataset
from nasjax.data.preprocessing import load_image, make_transform, to_unit_float
from nasjax.data.targets import LossTargets
from nasjax.utils.distributed import process_rows

MAX_BOXES_CAP = 256  # the default max_boxes grows with mosaic / mixup up to this (see the module docstring)


class Batch(NamedTuple):
    images: np.ndarray  # (B, S, S, 3) float32 in [0, 1]
    targets: LossTargets  # numpy arrays, (B, M, 4) / (B, M) / (B, M)


# --- one sample ------------------------------------------------------------------------------------


def _load_parts(sample: Sample, size: int) -> Parts:
    image, boxes = fit_to_size(load_image(sample.source), sample.boxes, size)
    return image, boxes, np.asarray(sample.classes, np.int32).reshape(-1)


def prepare(sample: Sample, imgsz: int, rng: np.random.Generator | None = None, *,
            augmentation: Augmentation | None = None, pool: Sequence[Sample] = (), method: str = "centre_pad",
            min_box_size: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (S, S, 3) uint8, boxes (n, 4) xyxy input pixels float32, classes (n,) int32) for one sample.

    rng None or `Augmentation.none()`: no augmentation. Otherwise the steps of augment.py's docstring with
    `augmentation` (default: the YOLO-NAS recipe), every draw from `rng`; mosaic and mixup take their
    other images from `pool` (the dataset; default: the sample itself)."""
    aug = Augmentation() if augmentation is None else augmentation
    border = aug.border_value
    if rng is None or aug.is_identity:
        image = load_image(sample.source)
        boxes = np.asarray(sample.boxes, np.float64).reshape(-1, 4)
        classes = np.asarray(sample.classes, np.int32).reshape(-1)
    else:
        pool = pool if len(pool) else [sample]
        image, boxes, classes = _load_parts(sample, imgsz)
        mosaicked = False
        if chance(rng, aug.mosaic_prob):
            others = [_load_parts(pool[int(i)], imgsz) for i in rng.integers(0, len(pool), 3)]
            image, boxes, classes = mosaic([(image, boxes, classes)] + others, imgsz, rng, border)
            mosaicked = True
        if aug.affine:
            target = (imgsz, imgsz) if mosaicked else image.shape[:2]
            image, boxes, classes = random_affine(image, boxes, classes, rng, aug, target)
        if chance(rng, aug.channel_swap_prob):
            image = channel_swap(image)
        if chance(rng, aug.hsv_prob):
            image = hsv_jitter(np.ascontiguousarray(image), rng, aug.hsv_gains)
        if chance(rng, aug.flip_prob):
            image, boxes = horizontal_flip(image, boxes)
        if chance(rng, aug.mixup_prob):
            other = _load_parts(pool[int(rng.integers(0, len(pool)))], imgsz)
            image, boxes, classes = mixup(image, boxes, classes, other, rng, aug)
    transform = make_transform(image.shape[:2], method, imgsz)
    image = transform.apply(np.ascontiguousarray(image), border)
    top, left = transform.pad[:2]
    boxes = boxes.astype(np.float32) * np.float32(transform.scale) + np.array([left, top, left, top], np.float32)
    boxes = np.clip(boxes, 0, imgsz)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_box_size)
    return np.ascontiguousarray(image), boxes[keep], classes[keep].astype(np.int32)


class Loader:
    """Batches of a dataset, epoch by epoch; `loader.epoch(e)` iterates one epoch.

    shuffle / augment: training (True) or evaluation (False). augmentation: the `Augmentation` when
    augmenting (default: super-gradients' YOLO-NAS recipe, `Augmentation()`); augment=False means
    `Augmentation.none()`. flip (a probability) and hsv (on / off), when given, override the
    augmentation's flip_prob and hsv_prob. drop_last: only full batches (the default when shuffling, so
    that the shapes never change); otherwise the last batch is smaller.
    max_boxes: the padded number of boxes per image; default the most any image has (at least 1) times
    `augmentation.box_factor` (4 with mosaic, 2 with mixup), capped at MAX_BOXES_CAP unless one image
    alone has more. An image with more boxes keeps the first max_boxes.
    process_index / process_count: a multi-process run's share; each batch then holds only this
    process's rows of the global batch of batch_size.
    """

    def __init__(self, dataset: SampleListDataset, batch_size: int, imgsz: int, *, seed: int = 0,
                 shuffle: bool = True, augment: bool = True, augmentation: Augmentation | None = None,
                 drop_last: bool | None = None, max_boxes: int | None = None, method: str = "centre_pad",
                 flip: float | None = None, hsv: bool | None = None, workers: int = 4, prefetch: int = 2,
                 process_index: int = 0, process_count: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        if len(dataset) == 0:
            raise DatasetError(f"{dataset.name}: no images")
        if augmentation is not None and not isinstance(augmentation, Augmentation):
            raise TypeError(f"augmentation must be an Augmentation, got {type(augmentation).__name__}")
        if not augment and augmentation is not None and not augmentation.is_identity:
            raise ValueError("augment=False contradicts the augmentation given; pass one or the other")
        self.samples = list(dataset.samples)
        self.batch_size, self.imgsz, self.seed = batch_size, imgsz, seed
        self.shuffle, self.augment = shuffle, augment
        aug = (augmentation or Augmentation()) if augment else Augmentation.none()
        if augment and flip is not None:
            aug = dataclasses.replace(aug, flip_prob=float(flip))
        if augment and hsv is not None:
            aug = dataclasses.replace(aug, hsv_prob=(aug.hsv_prob or 0.5) if hsv else 0.0)
        self.augmentation = aug
        self.drop_last = shuffle if drop_last is None else drop_last
        if self.drop_last and len(self.samples) < batch_size:
            raise DatasetError(f"{dataset.name}: {len(self.samples)} images, fewer than one batch of {batch_size}; "
                               f"lower the batch size")
        most = max(1, max(len(s.boxes) for s in self.samples))
        self.max_boxes = max_boxes or min(most * aug.box_factor, max(most, MAX_BOXES_CAP))
        self.method = method
        self.workers, self.prefetch = max(1, workers), max(1, prefetch)
        self.process_index, self.process_count = process_index, process_count

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
                                                  augmentation=self.augmentation, pool=self.samples,
                                                  method=self.method)
            images[row] = to_unit_float(image)
            n = min(len(image_boxes), m)
            boxes[row, :n], labels[row, :n], mask[row, :n] = image_boxes[:n], classes[:n], True
        return Batch(images, LossTargets(boxes, labels, mask))

    def epoch(self, epoch: int = 0) -> Iterator[Batch]:
        order = self._order(epoch)
        starts = range(0, len(self) * self.batch_size, self.batch_size)
        groups = [np.arange(s, min(s + self.batch_size, len(order))) for s in starts]
        if self.process_count > 1:
            groups = [group[process_rows(len(group), self.process_index, self.process_count)] for group in groups]
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            pending: collections.deque = collections.deque()
            for group in groups:
                pending.append(pool.submit(self._batch, epoch, group, order))
                if len(pending) > self.prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
