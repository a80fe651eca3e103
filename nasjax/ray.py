"""Batch inference over a Ray Data dataset: `Predictor`, a callable class for `Dataset.map_batches`.

Needs the `ray` extra (`pip install -c constraints.txt -e ".[ray]"`, Ray 2.60 with Ray Data).

    import ray
    from nasjax.ray import Predictor

    ray.init()   # a local cluster on this machine; with RAY_ADDRESS=ray://head:10001 (or `ray.init(address=...)`)
                 # the same code joins an existing cluster, whose workers need nasjax installed
    (ray.data.read_images("images/", include_paths=True, mode="RGB")
        .map_batches(Predictor, fn_constructor_kwargs={"model": "yolo_nas_s", "conf": 0.25, "batch_size": 8},
                     compute=ray.data.ActorPoolStrategy(size=2), batch_size=64)  # 2 actors, 64 images a call
        .write_parquet("predictions/"))

The `nasjax predict ... engine=ray` and `nasjax val ... engine=ray` commands run this for you
(`predict_files` below; docs/scale_out.md).

Each actor loads the model once (`nasjax.load`) and compiles it once, on a padded dummy batch; every
device call then has that one shape: a Ray batch is cut into device batches of `batch_size` images and
the last one is padded. Ray Data's `batch_size` (images per call of the actor) and nasjax's
(`fn_constructor_kwargs={"batch_size": ...}`, images per device call) are separate settings.

Devices are requested with map_batches' own arguments, which Ray reserves for each actor: `num_gpus=1`
(Ray sets CUDA_VISIBLE_DEVICES for the actor; a CUDA build of jax then runs on that GPU), `num_cpus=`,
`resources=`, `compute=ActorPoolStrategy(size=N)` (the number of actors). nasjax adds no device options of its own; each
actor runs on the devices JAX sees in it (nasjax's tests run CPU actors only).

Input columns (whatever comes first): "image" ((H, W, C) uint8 arrays, as `read_images` gives them:
pass mode="RGB", or grey / RGBA arrays are turned into RGB the way nasjax does for arrays), "bytes"
(encoded files, `read_binary_files`: decoded with Pillow exactly as nasjax reads a file), or only
"path" (a Parquet / CSV table of file paths: each file is read from disk). Every other input column
("path", an id, metadata) is passed through unchanged. An optional "annotated" column names, per row,
a file to write the annotated image to (as `Results.save`; null: none).

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

import concurrent.futures
import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa

from nasjax.data import preprocessing
from nasjax.predict.predictor import (
    checked_settings,
    class_names_of,
    detections_in_original,
    network_input_of,
    padded_batch,
)
from nasjax.predict.results import Boxes, Results

_DATA_COLUMNS = ("image", "bytes")
# The columns Predictor adds, and their Arrow types.
OUTPUT_TYPES = {"width": pa.int64(), "height": pa.int64(), "boxes": pa.list_(pa.list_(pa.float32(), 4)),
                "scores": pa.list_(pa.float32()), "classes": pa.list_(pa.int64()), "error": pa.string()}


class Predictor:
    """`ray.data.Dataset.map_batches(Predictor, fn_constructor_kwargs={...}, compute=ActorPoolStrategy(size=N), ...)`: see
    the module docstring. Options as in `nasjax.predict.predict`; model, pretrained and trusted as in
    `nasjax.load`."""

    def __init__(self, model="yolo_nas_s", *, pretrained: bool = True, imgsz: int = 640, batch_size: int = 8,
                 conf: float = 0.25, iou: float = 0.7, max_det: int = 300, nms_top_k: int = 1024,
                 multi_label: bool = True, agnostic: bool = False, preprocess: str = "centre_pad",
                 resize_rounding: str = "round", exif_transpose: bool = False, dtype=None,
                 skip_errors: bool = False, trusted: bool = False, workers: int | None = None):
        import nasjax

        self.settings = checked_settings(conf=conf, iou=iou, max_det=max_det, nms_top_k=nms_top_k,
                                         batch_size=batch_size, multi_label=multi_label, agnostic=agnostic,
                                         imgsz=imgsz, preprocess=preprocess, resize_rounding=resize_rounding)
        self.detector = nasjax.load(model, pretrained=pretrained, trusted=trusted)
        self.detector.check_predict_options({"imgsz": imgsz, "dtype": dtype})
        self.imgsz, self.preprocess, self.rounding = int(imgsz), preprocess, resize_rounding
        self.exif_transpose, self.dtype, self.skip_errors = exif_transpose, dtype, skip_errors
        self.batch_size = self.detector.batch_size_for(int(batch_size))
        self.names = class_names_of(self.detector)
        # Images of a call are read and pre-processed by these threads (as predict's `workers`).
        self.pool = concurrent.futures.ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1),
                                                          thread_name_prefix="nasjax-read")
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

        annotate = batch.get("annotated")  # where to write each annotated image (None: nowhere)

        def prepare(i: int):
            image = self._read(batch, i)
            network_input, transform = network_input_of(self.detector, image, self.preprocess, self.imgsz, self.rounding)
            return image, network_input, transform

        prepared = []  # (row, image, network input, transform)
        for i, future in enumerate([self.pool.submit(prepare, i) for i in range(rows)]):
            try:
                image, network_input, transform = future.result()
            except preprocessing.ImageLoadError as e:
                if not self.skip_errors:
                    raise
                error[i] = str(e)
                continue
            height[i], width[i] = image.shape[:2]
            prepared.append((i, image if annotate is not None and annotate[i] else None, network_input, transform))
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start: start + self.batch_size]
            detections = self.detector.detect_batch(
                padded_batch([p[2] for p in chunk], self.batch_size, self.imgsz), self.settings, self.dtype)
            for k, (i, image, _, transform) in enumerate(chunk):
                xyxy, conf, cls = detections_in_original(detections, k, transform)
                boxes[i], scores[i], classes[i] = xyxy.tolist(), conf.tolist(), cls.tolist()
                if image is not None:
                    Results(image, Boxes(xyxy, conf, cls, image.shape[:2]), self.names).save(str(annotate[i]))
        # Every other input column passes through; the new ones have fixed Arrow types, so that blocks
        # without detections (or without readable images) have the same schema as the others.
        columns = {name: pa.array(np.asarray(values).tolist()) for name, values in batch.items()
                   if name not in _DATA_COLUMNS}
        for name, values in (("width", width), ("height", height), ("boxes", boxes), ("scores", scores),
                             ("classes", classes), ("error", error)):
            columns[name] = pa.array(values, OUTPUT_TYPES[name])
        return pa.table(columns)


# --- the driver side: what `nasjax predict|val engine=ray` runs ----------------------------------------

@contextlib.contextmanager
def session(progress: bool = False):
    """Joins the Ray cluster at RAY_ADDRESS (`ray.init`'s own rule), or starts a local one on this
    machine that is stopped again on leaving; a session already started by the caller is used as is.
    Ray's own notices (token authentication, execution plans) are kept off stderr for
    its duration, so that a command's output is its own: errors still show."""
    import ray
    import ray.data  # first: importing it configures its loggers

    quiet = logging.getLogger("ray"), logging.getLogger("ray.data")
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    started = not ray.is_initialized()
    try:
        if started:
            with warnings.catch_warnings():
                # Ray starts its processes with fork + exec, which is safe with JAX's threads.
                warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
                ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = progress
        yield
    finally:
        if started:
            ray.shutdown()
        for logger, level in zip(quiet, levels):
            logger.setLevel(level)


def predict_files(paths: Sequence[str], options: dict, *, workers: int = 1, num_gpus: float | None = None,
                  calls_per_worker: int = 2, batches_per_call: int = 4, predictor: type = None,
                  annotated: Sequence[str] | None = None, **ray_remote_args) -> Iterator[pa.Table]:
    """Detect objects in the image files `paths` with `workers` Predictor actors on the Ray cluster of
    this session (`session()`); yields Predictor's tables, with "index" (the position in `paths`) and
    "path" first, in the order Ray finishes them. options: Predictor's keywords (model, imgsz, conf,
    ...); skip_errors is always on here, so an unreadable file is a row with "error" set, and the
    caller decides whether that stops the run. The files must be readable by every worker (one
    machine, or a file system the cluster shares). annotated: per path, where the worker writes the
    annotated image (the "annotated" column; a place every worker can write to).

    Each path comes back exactly once: Ray restarts a worker that dies and retries its batches
    (map_batches' defaults max_restarts=-1, max_task_retries=-1), each block is one call of a worker
    (`batches_per_call` device batches) so that a retry repeats little, a row that comes back a second time (a retried batch whose first
    results had already arrived) is dropped, and a path missing at the end raises RuntimeError:
    nothing lost, nothing twice, never a silent gap. calls_per_worker: Ray batches an actor runs at once
    (threads), so that reading one overlaps the device work of another. num_gpus and ray_remote_args
    (resources=..., accelerator_type=...) are map_batches' own, reserved for each worker. predictor:
    the actor class (default Predictor; a subclass for tests)."""
    import ray

    options = {**options, "skip_errors": True}
    batch_size = int(options.get("batch_size", 8))
    items = [{"index": i, "path": str(path)} for i, path in enumerate(paths)]
    if annotated is not None:
        for item, target in zip(items, annotated, strict=True):
            item["annotated"] = str(target)
    if not items:
        return
    call = batch_size * int(batches_per_call)  # images per call of a worker: amortises Ray's cost per call
    blocks = -(-len(items) // call)
    dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        predictor or Predictor, fn_constructor_kwargs=options, batch_size=call, num_gpus=num_gpus,
        compute=ray.data.ActorPoolStrategy(size=int(workers), max_concurrent_calls_per_actor=calls_per_worker,
                                           enable_true_multi_threading=calls_per_worker > 1),
        **ray_remote_args)
    seen = np.zeros(len(items), bool)
    for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        index = np.asarray(table.column("index").to_numpy(), np.int64)
        first = np.zeros(len(index), bool)
        first[np.unique(index, return_index=True)[1]] = True
        new = first & ~seen[index]
        seen[index] = True
        if not new.all():
            table = table.filter(pa.array(new))
        if table.num_rows:
            yield table
    if not seen.all():
        missing = [items[i]["path"] for i in np.flatnonzero(~seen)[:3]]
        raise RuntimeError(f"Ray returned no row for {int((~seen).sum())} image(s), e.g. {missing}")


def worker_path(path: str) -> str:
    """A path that names the same file from a worker's working folder."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def _stopped_by(row: dict, skip_errors: bool) -> bool:
    """Whether `row` is an unreadable image: raises ImageLoadError (naming the file) unless skip_errors,
    when it warns as single-process predict does."""
    if row["error"] is None:
        return False
    if not skip_errors:
        raise preprocessing.ImageLoadError(row["error"])
    warnings.warn(f"skipped {row['error']}", stacklevel=3)
    return True


def predict_run(run, sources: Sequence[str], options: dict, *, names: dict[int, str], workers: int = 1,
                skip_errors: bool = False, save_json: bool = False, save_images: bool = False,
                meta: dict | None = None, num_gpus: float | None = None, echo=None) -> int:
    """`nasjax predict engine=ray`: detections of the image files `sources` into the run folder `run`
    (a nasjax.predict.save.PredictionRun): predictions.parquet (Predictor's columns, rows in the order
    they finished, class names in the file's metadata "nasjax.names") and with save_json the
    predictions.json a single-process run writes (images in `sources` order; skipped images left out);
    with save_images the annotated images too, with the names single-process predict gives them,
    written by the workers into the run's staging folder (which they must be able to reach).
    options: Predictor's keywords, model included. An unreadable image stops the run with
    ImageLoadError naming the file (nothing is written), or with skip_errors is warned about and
    kept in the Parquet file with its "error". echo(line) is called once per image. Returns the number
    of images predicted (skipped ones not counted)."""
    import json

    import pyarrow.parquet as pq

    from nasjax.predict.results import Boxes, detection_list, summary_of
    from nasjax.predict.save import PARQUET_FILE

    writer, records, predicted = None, {}, 0
    targets = run.reserve(list(sources)) if save_images else None
    try:
        for table in predict_files([worker_path(p) for p in sources], options, workers=workers, num_gpus=num_gpus,
                                   annotated=None if targets is None else [str(t.resolve()) for t in targets]):
            rows = table.to_pylist()
            for row in rows:
                if _stopped_by(row, skip_errors):
                    continue
                predicted += 1
                source = sources[row["index"]]
                if save_json:
                    boxes = Boxes(np.asarray(row["boxes"], np.float32).reshape(-1, 4), row["scores"], row["classes"],
                                  (row["height"], row["width"]))
                    records[row["index"]] = (source, (row["height"], row["width"]), detection_list(boxes, names),
                                             None if targets is None else targets[row["index"]].name)
                if echo is not None:
                    echo(f"{source}: {summary_of(np.asarray(row['classes'], np.int64), names)}")
            table = table.drop_columns([c for c in ("index", "annotated") if c in table.column_names]).set_column(
                0, "path", pa.array([sources[i] for i in table.column("index").to_pylist()], pa.string()))
            if writer is None:
                schema = table.schema.with_metadata({"nasjax.names": json.dumps({str(k): v for k, v in names.items()})})
                writer = pq.ParquetWriter(run.stage(PARQUET_FILE), schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    for index in sorted(records):
        run.add_record(*records[index])
    run.finish(meta or {}, json_file=save_json)
    return predicted


def validation_predictions(dataset, options: dict, path, *, workers: int = 1, num_gpus: float | None = None) -> int:
    """`nasjax val engine=ray`: the COCO-format detections file (nasjax.validate's predictions=) of
    every image of `dataset`, predicted on Ray with Predictor's keywords `options`, written to `path`;
    rounded as the single-process validator rounds them, so scoring the file gives its metrics. An
    unreadable image or one whose size differs from its annotations raises, naming the file. Returns
    the number of detections."""
    from nasjax.validate.predictions import Collector, check_image_size, round_records, write_predictions

    samples = []
    for chunk in dataset.chunks(1024):
        if any(sample.path is None for sample in chunk):  # checked before a decoded dataset is read whole
            raise ValueError(f"engine=ray reads image files, and {dataset.name} gives decoded images (tfds); "
                             "use engine=local")
        samples += chunk
    sources = [sample.path for sample in samples]
    found: dict[int, tuple] = {}
    for table in predict_files([worker_path(p) for p in sources], options, workers=workers, num_gpus=num_gpus):
        for row in table.to_pylist():
            _stopped_by(row, skip_errors=False)
            check_image_size(samples[row["index"]], (row["height"], row["width"]))
            found[row["index"]] = row
    collector = Collector(dataset)
    for i, sample in enumerate(samples):  # the dataset's order, as the single-process validator adds them
        row = found[i]
        xywh, scores = round_records(np.asarray(row["boxes"], np.float32).reshape(-1, 4),
                                     np.asarray(row["scores"], np.float32))
        collector.add(sample, xywh, scores, np.asarray(row["classes"], np.int64))
    records = [r for rows in collector.records for r in rows]
    write_predictions(path, records)
    return len(records)
