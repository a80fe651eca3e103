"""Batch inference over a Ray Data dataset: `Predictor`, a callable class for `Dataset.map_batches`.

Needs the `ray` extra (`pip install -c constraints.txt -e ".[ray]"`, Ray 2.60 with Ray Data).

    import ray
    from nasjax.ray import Predictor

    ray.init()   # a local cluster on this machine; with RAY_ADDRESS=ray://head:10001 (or `ray.init(address=...)`)
                 # the same code joins an existing cluster, whose workers need nasjax installed
    (ray.data.read_images("images/", include_paths=True, mode="RGB")
        .map_batches(Predictor, fn_constructor_kwargs={"model": "yolo_nas_s", "conf": 0.25, "batch_size": 8},
                     concurrency=2, batch_size=64)          # 2 actors, 64 images per Ray batch
        .write_parquet("predictions/"))

Each actor loads the model once (`nasjax.load`) and compiles it once, on a padded dummy batch; every
device call then has that one shape: a Ray batch is cut into device batches of `batch_size` images and
the last one is padded. Ray Data's `batch_size` (images per call of the actor) and nasjax's
(`fn_constructor_kwargs={"batch_size": ...}`, images per device call) are separate settings.

Devices are requested with map_batches' own arguments, which Ray reserves for each actor: `num_gpus=1`
(Ray sets CUDA_VISIBLE_DEVICES for the actor; a CUDA build of jax then runs on that GPU), `num_cpus=`,
`resources=`, `concurrency=` (the number of actors). nasjax adds no device options of its own; each
actor runs on the devices JAX sees in it (nasjax's tests run CPU actors only).

Input columns (whatever comes first): "image" ((H, W, C) uint8 arrays, as `read_images` gives them:
pass mode="RGB", or grey / RGBA arrays are turned into RGB the way nasjax does for arrays), "bytes"
(encoded files, `read_binary_files`: decoded with Pillow exactly as nasjax reads a file), or only
"path" (a Parquet / CSV table of file paths: each file is read from disk). Every other input column
("path", an id, metadata) is passed through unchanged.

A call returns a pyarrow Table: the passed-through columns, then "width", "height" (int64, of the
original image), "boxes" (per image a list of [x1, y1, x2, y2] float32, in original-image pixels),
"scores" (float32), "classes" (int64), and "error" (string): null, or, with skip_errors=True, the
message of an image that could not be read (its width and height are null and its lists empty). The
types are fixed (`OUTPUT_TYPES`), so every block has one schema, detections or not. Without
skip_errors an unreadable image raises `ImageLoadError` naming the file. Detections are those of
`nasjax.predict` with the same settings (exif_transpose applies to "bytes" and "path"; Ray decodes
"image" itself).
"""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa

from nasjax.data import preprocessing
from nasjax.predict.predictor import (
    checked_settings,
    detections_in_original,
    network_input_of,
    padded_batch,
)

_DATA_COLUMNS = ("image", "bytes")
# The columns Predictor adds, and their Arrow types.
OUTPUT_TYPES = {"width": pa.int64(), "height": pa.int64(), "boxes": pa.list_(pa.list_(pa.float32(), 4)),
                "scores": pa.list_(pa.float32()), "classes": pa.list_(pa.int64()), "error": pa.string()}


class Predictor:
    """`ray.data.Dataset.map_batches(Predictor, fn_constructor_kwargs={...}, concurrency=N, ...)`: see
    the module docstring. Options as in `nasjax.predict.predict`; model, pretrained and trusted as in
    `nasjax.load`."""

    def __init__(self, model="yolo_nas_s", *, pretrained: bool = True, imgsz: int = 640, batch_size: int = 8,
                 conf: float = 0.25, iou: float = 0.7, max_det: int = 300, nms_top_k: int = 1024,
                 multi_label: bool = True, agnostic: bool = False, preprocess: str = "centre_pad",
                 resize_rounding: str = "round", exif_transpose: bool = False, dtype=None,
                 skip_errors: bool = False, trusted: bool = False):
        import nasjax

        self.settings = checked_settings(conf=conf, iou=iou, max_det=max_det, nms_top_k=nms_top_k,
                                         batch_size=batch_size, multi_label=multi_label, agnostic=agnostic,
                                         imgsz=imgsz, preprocess=preprocess, resize_rounding=resize_rounding)
        self.detector = nasjax.load(model, pretrained=pretrained, trusted=trusted)
        self.detector.check_predict_options({"imgsz": imgsz, "dtype": dtype})
        self.imgsz, self.preprocess, self.rounding = int(imgsz), preprocess, resize_rounding
        self.exif_transpose, self.dtype, self.skip_errors = exif_transpose, dtype, skip_errors
        self.batch_size = self.detector.batch_size_for(int(batch_size))
        # Compile now, once: every later call has this shape.
        self.detector.detect_batch(padded_batch([], self.batch_size, self.imgsz), self.settings, self.dtype)

    def _read(self, batch: dict, i: int) -> np.ndarray:
        path = batch["path"][i] if "path" in batch else None
        label = str(path) if path is not None else f"row {i} of the batch"
        if "image" in batch:
            try:
                return preprocessing.load_image(np.asarray(batch["image"][i]))
            except preprocessing.ImageLoadError as e:
                raise preprocessing.ImageLoadError(f"{label}: {e}") from e
        if "bytes" in batch:
            return preprocessing.read_image_file(io.BytesIO(bytes(batch["bytes"][i])), label, self.exif_transpose)
        if path is None:
            raise ValueError(f"a batch needs an 'image', 'bytes' or 'path' column; it has {sorted(batch)}")
        return preprocessing.load_image(str(path), self.exif_transpose)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        columns = [c for c in ("image", "bytes", "path") if c in batch]
        if not columns:
            raise ValueError(f"a batch needs an 'image', 'bytes' or 'path' column; it has {sorted(batch)}")
        rows = len(batch[columns[0]])
        width, height = [None] * rows, [None] * rows
        boxes, scores, classes = [[] for _ in range(rows)], [[] for _ in range(rows)], [[] for _ in range(rows)]
        error = [None] * rows
        prepared = []  # (row, network input, transform)
        for i in range(rows):
            try:
                image = self._read(batch, i)
            except preprocessing.ImageLoadError as e:
                if not self.skip_errors:
                    raise
                error[i] = str(e)
                continue
            height[i], width[i] = image.shape[:2]
            prepared.append((i, *network_input_of(self.detector, image, self.preprocess, self.imgsz, self.rounding)))
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start: start + self.batch_size]
            detections = self.detector.detect_batch(
                padded_batch([p[1] for p in chunk], self.batch_size, self.imgsz), self.settings, self.dtype)
            for k, (i, _, transform) in enumerate(chunk):
                xyxy, conf, cls = detections_in_original(detections, k, transform)
                boxes[i], scores[i], classes[i] = xyxy.tolist(), conf.tolist(), cls.tolist()
        # Every other input column passes through; the new ones have fixed Arrow types, so that blocks
        # without detections (or without readable images) have the same schema as the others.
        columns = {name: pa.array(np.asarray(values).tolist()) for name, values in batch.items()
                   if name not in _DATA_COLUMNS}
        for name, values in (("width", width), ("height", height), ("boxes", boxes), ("scores", scores),
                             ("classes", classes), ("error", error)):
            columns[name] = pa.array(values, OUTPUT_TYPES[name])
        return pa.table(columns)
