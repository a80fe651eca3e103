"""validate(): COCO mAP (pycocotools) and Ultralytics' P / R of a detector on a dataset.

    metrics = nasjax.validate.validate(detector, "coco8")               # or detector.val("coco8")
    metrics["map50_95"], metrics["map50"], metrics["precision"], metrics["recall"]
    metrics = validate(None, "coco8", predictions="predictions.json")   # score a file, no model

Data: see nasjax/data (a data YAML or a shipped name such as coco8 / coco128 / coco, a dataset folder,
a COCO JSON annotation file with its image folder, or `tfds:coco/2017`).

Pipeline: the dataset's labels are read and checked first (a malformed label, an unreadable image header
or a class-count mismatch fails before any inference); the jitted detect function is compiled on a
warm-up batch; then predict(stream=True) runs over the images (reading threads, sharded batches), and
each image's detections become COCO records on the host as they arrive (predictions.py), so memory
holds only the records, never all images. The metrics are computed from exactly these records, so
scoring a saved file with predictions= reproduces them. In a multi-host run each process predicts its
share and the results are gathered before scoring (multihost.py).

Settings (settings.py): Ultralytics' validation NMS over super-gradients' top 1000 candidates and the
model's own centre-pad pre-processing by default; reference_mode=True is super-gradients' COCO
evaluation of YOLO-NAS (score threshold 0.01, the truncating resize of
docs/preprocessing.md#validation-resize). The table in docs/postprocessing.md#settings compares them.
Differences from super-gradients that remain in reference mode are listed in
docs/preprocessing.md#validation-resize.

Metrics: pycocotools' 12 numbers (coco_metrics.py) and Ultralytics' P / R and its own AP beside
(ultralytics_metrics.py, which names the release it follows); what is printed: table.py.

Speed: "pre-process" is reading + resizing + padding per image (summed over the reading threads),
"inference" the device call (forward + NMS in one jitted function, and the transfer back) per image,
"post-process" mapping boxes back and making the COCO records; compilation is excluded (warm-up).
"""
from __future__ import annotations

import os
import time
import warnings
from typing import Any

import numpy as np

from nasjax.data import Dataset, DatasetError, load_dataset
from nasjax.utils.progress import progress_bar
from nasjax.validate import coco_metrics, multihost, table
from nasjax.validate import settings as run_settings
from nasjax.validate.predictions import (
    Collector,
    add_file_detections,
    check_image_size,
    check_unique_keys,
    internal_records,
    key_text,
    read_predictions,
    round_records,
    write_metrics,
    write_predictions,
)
from nasjax.validate.predictions import jsonable as _jsonable  # noqa: F401  (nasjax/cli.py)
from nasjax.validate.settings import ValidationSettings

# Old names, kept for their users (benchmarks/validate.py, the CLI): the flat settings as read-only
# mappings, and the record helpers now in predictions.py.
DEFAULT_SETTINGS = run_settings.as_mapping(ValidationSettings.DEFAULT)
REFERENCE_SETTINGS = run_settings.as_mapping(ValidationSettings.REFERENCE)
resolve_settings = run_settings.resolve
_Collector, _internal_records, _round_records = Collector, internal_records, round_records

METRIC_KEYS = coco_metrics.STAT_KEYS  # map50_95, map50, ... in every metrics dict


class ClassCountMismatchError(ValueError):
    """The model predicts a different number of classes than the dataset has."""


def check_classes(detector, dataset: Dataset) -> None:
    """Refuse a model whose class count differs from the dataset's; warn when the names differ."""
    if detector.num_classes != len(dataset.names):
        preview = ", ".join(list(dataset.names.values())[:5]) + (", ..." if len(dataset.names) > 5 else "")
        raise ClassCountMismatchError(
            f"the model predicts {detector.num_classes} classes but dataset {dataset.name} has "
            f"{len(dataset.names)} ({preview}); validate a model trained on this dataset's classes"
        )
    model_names = getattr(detector, "class_names", None)
    if model_names is not None and list(model_names) != list(dataset.names.values()):
        different = [(i, a, b) for i, (a, b) in enumerate(zip(model_names, dataset.names.values())) if a != b]
        warnings.warn(f"the model's class names differ from the dataset's (first: class {different[0][0]}: "
                      f"{different[0][1]!r} vs {different[0][2]!r}); scoring by index", stacklevel=3)


def _run_detector(detector, dataset: Dataset, collector: Collector, bar, *, batch_size: int, predict_options: dict,
                  warmup: bool, timing: dict, timings: dict) -> None:
    """predict() over the dataset, streaming each image's detections into `collector`."""
    from nasjax.predict.predictor import predict

    start = time.perf_counter()
    if warmup:  # compile the detect function for this batch shape, outside the timings
        predict(detector, np.zeros((32, 32, 3), np.uint8), progress=False, batch_size=batch_size, **predict_options)
    timing["warmup"] = time.perf_counter() - start
    start = time.perf_counter()
    for chunk in dataset.chunks(batch_size * 8):
        results = predict(detector, [s.source for s in chunk], stream=True, progress=False, timings=timings,
                          batch_size=batch_size, **predict_options)
        for sample, result in zip(chunk, results):
            t = time.perf_counter()
            check_image_size(sample, result.orig_shape)
            xywh, scores = round_records(result.boxes.xyxy, result.boxes.conf)
            collector.add(sample, xywh, scores, result.boxes.cls)
            timings["postprocess"] += time.perf_counter() - t
            bar.update(1)
    timing["predict"] = time.perf_counter() - start


def _read_file(predictions, dataset: Dataset, collector: Collector, bar, *, batch_size: int, timing: dict) -> None:
    """The detections of a predictions file, image by image in the dataset's order, into `collector`."""
    start = time.perf_counter()
    grouped = read_predictions(predictions, dataset)
    seen = set()
    for chunk in dataset.chunks(batch_size * 8):
        for sample in chunk:
            key = key_text(sample.key)
            seen.add(key)
            add_file_detections(collector, sample, grouped.get(key))
            bar.update(1)
    unknown = sorted(set(grouped) - seen)
    # In a multi-host run each process holds only its share of the images, so it cannot judge.
    if unknown and multihost.process_count() == 1:
        raise DatasetError(f"{predictions}: {len(unknown)} image_id(s) are not images of {dataset.name}, "
                           f"e.g. {unknown[:3]}")
    timing["read_predictions"] = time.perf_counter() - start


def validate(
    detector,
    data,
    *,
    split: str = "val",
    batch_size: int = 8,
    imgsz: int = 640,
    conf: float | None = None,
    iou: float | None = None,
    max_det: int | None = None,
    nms_top_k: int | None = None,
    multi_label: bool | None = None,
    agnostic: bool | None = None,
    preprocess: str | None = None,
    reference_mode: bool = False,
    predictions: str | os.PathLike | None = None,
    save_predictions: str | os.PathLike | None = None,
    save_json: str | os.PathLike | None = None,
    verbose: bool = False,
    print_results: bool = True,
    progress: bool | None = None,
    dtype=None,
    workers: int | None = None,
    exif_transpose: bool = False,
    images: str | os.PathLike | None = None,
    download: bool = True,
    tfds_data_dir: str | None = None,
    tfds_download: bool = False,
    warmup: bool = True,
    settings: ValidationSettings | None = None,
) -> dict[str, Any]:
    """Validate `detector` on `data`; the metrics dict.

    settings: a `ValidationSettings` (NMS + pre-processing as one value) to start from instead of
        `ValidationSettings.DEFAULT`; the keyword settings below override it.
    data: a data YAML, a shipped name (coco8, coco128, coco), a dataset folder, a COCO JSON file (with
        `images`, its image folder, unless found beside it), "tfds:coco/2017", or a nasjax Dataset.
        Several processes: a name is loaded as this process's share (`load_dataset`); a Dataset given
        is taken to be this process's share already (`dataset.shard(jax.process_index(), ...)`).
    conf, iou, max_det, nms_top_k, multi_label, agnostic, preprocess: NMS and pre-processing (None:
        `ValidationSettings.DEFAULT`'s); reference_mode: super-gradients' COCO evaluation settings
        (`ValidationSettings.REFERENCE`), which the others may only repeat.
    predictions: score this COCO-format detections file instead of running the detector (which may
        then be None). save_predictions: write the detections there (Ultralytics' predictions.json).
    save_json: write the metrics there (atomically). verbose: per-class rows in the table.
    print_results: print the table, the speed line and pycocotools' summary.
    progress: a progress bar over the images; None shows one when stderr is a terminal.

    Returns map50_95, map50 and the other 10 COCOeval numbers (STAT_KEYS), precision and recall (at
    the max mean-F1 confidence, as Ultralytics), ultralytics_map50 / ultralytics_map50_95 (its
    101-point AP, for comparison), images, instances, per_class (one dict per class with instances),
    speed (ms per image), timing_s (dataset, warm-up, predict, metrics seconds) and the settings.
    """
    overrides = dict(conf=conf, iou=iou, max_det=max_det, nms_top_k=nms_top_k, multi_label=multi_label,
                     agnostic=agnostic, preprocess=preprocess)
    if settings is not None and reference_mode:
        raise ValueError("give settings= or reference_mode=True, not both (ValidationSettings.REFERENCE is a settings value)")
    settings = (settings.replace(**overrides) if settings is not None
                else run_settings.resolve(reference_mode, **overrides))
    if predictions is None and detector is None:
        raise ValueError("a detector is needed unless predictions= gives a file to score")
    timing: dict[str, float] = {}
    start = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else load_dataset(
        data, split, images=images, download=download, exif_transpose=exif_transpose, tfds_data_dir=tfds_data_dir,
        tfds_download=tfds_download, progress=print_results)
    timing["dataset"] = time.perf_counter() - start
    if predictions is None:
        check_classes(detector, dataset)
    collector = Collector(dataset)
    timings: dict = {}  # predict()'s running totals
    bar = progress_bar(progress, len(dataset), "validate", leave=False)
    try:
        if predictions is None:
            predict_options = dict(imgsz=imgsz, dtype=dtype, workers=workers, exif_transpose=exif_transpose,
                                   **settings.predict_options())
            _run_detector(detector, dataset, collector, bar, batch_size=batch_size, predict_options=predict_options,
                          warmup=warmup, timing=timing, timings=timings)
        else:
            _read_file(predictions, dataset, collector, bar, batch_size=batch_size, timing=timing)
    finally:
        bar.close()

    if save_predictions or predictions:
        check_unique_keys(collector.images, dataset.name)
    # Multi-host: every process contributes its share of images and records.
    gathered = multihost.allgather((collector.images, collector.records, timings))
    eval_images = [im for part in gathered for im in part[0]]
    per_image_records = [rows for part in gathered for rows in part[1]]
    records = [r for rows in per_image_records for r in rows]
    for i, im in enumerate(eval_images):
        im.image_id = i

    start = time.perf_counter()
    evaluation = coco_metrics.evaluate(eval_images, dataset.names, dataset.category_ids,
                                       records=internal_records(eval_images, per_image_records))
    timing["metrics"] = time.perf_counter() - start

    n = max(1, timings.get("images", 0))
    speed = {f"{k}_ms": 1000 * timings[k] / n for k in ("preprocess", "inference", "postprocess") if k in timings}
    metrics = {
        **evaluation.to_dict(),
        "speed": speed,
        "timing_s": timing,
        "dataset": dataset.describe(),
        "settings": {**settings.to_dict(), "imgsz": imgsz, "batch_size": batch_size, "reference_mode": reference_mode,
                     "split": split},
    }
    primary = multihost.is_primary()
    if save_predictions and primary:
        write_predictions(save_predictions, records)
    if save_json and primary:
        write_metrics(save_json, metrics)
    if print_results and primary:
        print(table.format_table(evaluation, verbose))
        if speed:
            print(table.format_speed(speed, batch_size, imgsz))
        print(evaluation.summary.rstrip())
        if save_predictions:
            print(f"wrote {len(records)} detections to {save_predictions}")
        if save_json:
            print(f"wrote metrics to {save_json}")
    return metrics


# --- command line ------------------------------------------------------------------------------------
