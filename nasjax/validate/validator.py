"""validate(): COCO mAP (pycocotools) and Ultralytics-style P / R of a detector on a dataset.

    metrics = nasjax.validate.validate(detector, "coco8")               # or detector.val("coco8")
    metrics["map50_95"], metrics["map50"], metrics["precision"], metrics["recall"]

    python -m nasjax.validate --data coco128 --model yolo_nas_s [--batch 8 --imgsz 640 --conf 0.001
        --iou 0.7 --max-det 300 --json metrics.json --save-predictions predictions.json --verbose]
    python -m nasjax.validate --data coco8 --predictions predictions.json       # score a file, no model
    python -m nasjax.validate --data instances_val2017.json --images val2017/ --model yolo_nas_s --reference-mode
    python -m nasjax.validate --data tfds:coco/2017 --tfds-data-dir ~/tensorflow_datasets --model yolo_nas_s

Data: see nasjax/datasets.py (a data YAML or a shipped name such as coco8 / coco128 / coco, a dataset
folder, a COCO JSON annotation file with its image folder, or `tfds:coco/2017`).

Pipeline: the dataset's labels are read and checked first (a malformed label, an unreadable image header
or a class-count mismatch fails before any inference); the jitted detect function is compiled on a
warm-up batch; then predict(stream=True) runs over the images (reading threads, sharded batches), and
each image's detections are turned into COCO records on the host as they arrive, so memory holds only
the records, never all images. The records follow Ultralytics' predictions.json: image_id = the file
stem (an int when numeric; the COCO image id for COCO JSON and TFDS), category_id = COCO's original
id when the names are COCO's (else 1..nc; a COCO JSON's own ids), bbox = [x, y, w, h] in
original-image pixels rounded to 3 decimals, score rounded to 5. Metrics are computed from exactly
these records, so scoring a saved file with --predictions reproduces them.

Default settings: conf 0.001, IoU 0.7, max_det 300 (Ultralytics' validation), multi-label, class-aware
NMS over the top 1000 candidates (super-gradients' top-k; a static shape on the device), the model's
own centre-pad pre-processing (YOLO_NAS_SPEC.md 6.1) at imgsz.

Reference mode (reference_mode=True, --reference-mode): super-gradients' COCO evaluation settings for
YOLO-NAS (recipe coco2017_yolo_nas_s, YOLO_NAS_SPEC.md 6.2): score threshold 0.01, IoU 0.7, top-k 1000,
300 detections, multi-label, class-aware; pre-processing longest side 636 with the new size truncated
by int() (not rounded, as in predict), centre padding to 640 with 114. conf / iou / max_det / nms_top_k
/ multi_label / agnostic / preprocess cannot be combined with it; imgsz can (640 is the recipe's).
Differences that remain: super-gradients decodes with OpenCV (nasjax with PIL: both libjpeg, usually
identical pixels), OpenCV's imread applies EXIF orientation (pass exif_transpose=True for that), and it
scores with its own DetectionMetrics at network-input scale, where nasjax maps boxes back to the
original image (dividing by the min ratio, which int() truncation makes differ from the per-axis ratio
by under a pixel) and scores with pycocotools.

Speed: "pre-process" is reading + resizing + padding per image (summed over the reading threads),
"inference" the device call (forward + NMS in one jitted function, and the transfer back) per image,
"post-process" mapping boxes back and making the COCO records; compilation is excluded (warm-up).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nasjax.validate import coco_metrics
from nasjax.data.datasets import (
    Dataset,
    DatasetError,
    DatasetNotFoundError,
    Sample,
    load_dataset,
    read_json_file,
)
from nasjax.data.preprocessing import ImageLoadError
from nasjax.utils.atomic_files import write_atomic

DEFAULT_SETTINGS = {
    "conf": 0.001, "iou": 0.7, "max_det": 300, "nms_top_k": 1000, "multi_label": True, "agnostic": False,
    "preprocess": "centre_pad", "resize_rounding": "round",
}  # fmt: skip
REFERENCE_SETTINGS = {
    "conf": 0.01, "iou": 0.7, "max_det": 300, "nms_top_k": 1000, "multi_label": True, "agnostic": False,
    "preprocess": "centre_pad", "resize_rounding": "trunc",
}  # fmt: skip
METRIC_KEYS = coco_metrics.STAT_KEYS  # map50_95, map50, ... in every metrics dict


class ClassCountMismatchError(ValueError):
    """The model predicts a different number of classes than the dataset has."""


def resolve_settings(reference_mode: bool = False, **overrides) -> dict:
    """The NMS / pre-processing settings: the defaults or reference mode's, with `overrides` (None = unset)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(DEFAULT_SETTINGS)
    if unknown:
        raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
    if reference_mode:
        conflicting = {k: v for k, v in given.items() if v != REFERENCE_SETTINGS[k]}
        if conflicting:
            raise ValueError(
                "reference mode fixes super-gradients' evaluation settings "
                + ", ".join(f"{k}={REFERENCE_SETTINGS[k]!r}" for k in REFERENCE_SETTINGS)
                + f"; drop {', '.join(f'{k}={v!r}' for k, v in conflicting.items())} or leave reference mode"
            )
        return dict(REFERENCE_SETTINGS)
    return {**DEFAULT_SETTINGS, **given}


# --- COCO-format records -----------------------------------------------------------------------------


def _round_records(boxes_xyxy: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xywh rounded to 3 decimals and scores to 5, as Ultralytics' pred_to_json writes them."""
    xywh = coco_metrics.xyxy_to_xywh(boxes_xyxy)
    return np.round(xywh, 3), np.round(np.asarray(scores, np.float64), 5)


class _Collector:
    """Turns each image's detections into COCO records and `EvalImage`s as they arrive."""

    def __init__(self, dataset: Dataset):
        self.category_ids = dataset.category_ids
        self.num_classes = len(dataset.names)
        self.images: list[coco_metrics.EvalImage] = []
        self.records: list[list[dict]] = []  # per image; image_id = the sample's key (the file convention)

    def add(self, sample: Sample, xywh: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> None:
        """xywh / scores already rounded as in the file; classes are indices."""
        xywh = np.asarray(xywh, np.float64).reshape(-1, 4)
        self.records.append([
            {"image_id": sample.key, "category_id": self.category_ids[int(cls)], "bbox": box, "score": score}
            for box, score, cls in zip(xywh.tolist(), np.asarray(scores).tolist(), np.asarray(classes).tolist())
        ])
        det_boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        self.images.append(coco_metrics.EvalImage(
            image_id=len(self.images), height=sample.height, width=sample.width,
            gt_boxes=sample.boxes, gt_classes=sample.classes, gt_iscrowd=sample.iscrowd, gt_area=sample.area,
            det_boxes=det_boxes, det_scores=scores, det_classes=classes, file_name=sample.file_name, key=sample.key,
        ))


def _internal_records(images: Sequence[coco_metrics.EvalImage], records: Sequence[list[dict]]) -> list[dict]:
    """The per-image records with image_id replaced by the EvalImage ids of the in-memory ground truth."""
    return [{**r, "image_id": im.image_id} for im, rows in zip(images, records) for r in rows]


def _key_text(key) -> str:
    return str(key)


def read_predictions(path: str | os.PathLike, dataset: Dataset) -> dict[str, list[dict]]:
    """A COCO-format predictions file grouped by image key; checks every entry."""
    path = Path(path)
    data = read_json_file(path, "predictions file")
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON list of detections (COCO results format)")
    known_categories = {int(c): i for i, c in enumerate(dataset.category_ids)}
    grouped: dict[str, list[dict]] = {}
    for n, entry in enumerate(data):
        try:
            bbox = [float(v) for v in entry["bbox"]]
            category, score = int(entry["category_id"]), float(entry["score"])
            key = entry["image_id"]
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{path}: detection #{n} is malformed (needs image_id, category_id, bbox, score): "
                               f"{e}") from e
        if len(bbox) != 4 or not all(math.isfinite(v) for v in [*bbox, score]):
            raise DatasetError(f"{path}: detection #{n} has a bad bbox {entry['bbox']!r} or score")
        if category not in known_categories:
            raise DatasetError(f"{path}: detection #{n} has category_id {category}, which is not one of the dataset's "
                               f"category ids ({min(known_categories)}..{max(known_categories)})")
        grouped.setdefault(_key_text(key), []).append({"bbox": bbox, "cls": known_categories[category], "score": score})
    return grouped


# --- multi-host ----------------------------------------------------------------------------------------


def _allgather(obj) -> list:
    """Every process's `obj` (pickled through process_allgather); [obj] in a single process."""
    import jax

    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    payload = np.frombuffer(pickle.dumps(obj), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([payload.size], np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: payload.size] = payload
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [pickle.loads(gathered[i, : int(sizes[i])].tobytes()) for i in range(len(sizes))]


# --- the run -------------------------------------------------------------------------------------------


def _progress_bar(progress: bool | None, total: int):
    from tqdm import tqdm

    if progress is None:
        progress = sys.stderr.isatty()
    return tqdm(total=total or None, unit="image", desc="validate", disable=not progress, leave=False)


def _check_classes(detector, dataset: Dataset) -> None:
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
) -> dict[str, Any]:
    """Validate `detector` on `data`; the metrics dict.

    data: a data YAML, a shipped name (coco8, coco128, coco), a dataset folder, a COCO JSON file (with
        `images`, its image folder, unless found beside it), "tfds:coco/2017", or a nasjax Dataset.
    conf, iou, max_det, nms_top_k, multi_label, agnostic, preprocess: NMS and pre-processing (None: the
        defaults in the module docstring); reference_mode: super-gradients' COCO evaluation settings.
    predictions: score this COCO-format detections file instead of running the detector (which may
        then be None). save_predictions: write the detections there (Ultralytics' predictions.json).
    save_json: write the metrics there (atomically). verbose: per-class rows in the table.
    print_results: print the table, the speed line and pycocotools' summary.

    Returns map50_95, map50 and the other 10 COCOeval numbers (STAT_KEYS), precision and recall (at
    the max mean-F1 confidence, as Ultralytics), ultralytics_map50 / ultralytics_map50_95 (its
    101-point AP, for comparison), images, instances, per_class (one dict per class with instances),
    speed (ms per image), timing_s (dataset, warm-up, predict, metrics seconds) and the settings.
    """
    settings = resolve_settings(reference_mode, conf=conf, iou=iou, max_det=max_det, nms_top_k=nms_top_k,
                                multi_label=multi_label, agnostic=agnostic, preprocess=preprocess)
    if predictions is None and detector is None:
        raise ValueError("a detector is needed unless predictions= gives a file to score")
    timing = {}
    start = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else load_dataset(
        data, split, images=images, download=download, exif_transpose=exif_transpose, tfds_data_dir=tfds_data_dir,
        tfds_download=tfds_download, progress=print_results)
    timing["dataset"] = time.perf_counter() - start
    if predictions is None:
        _check_classes(detector, dataset)
    collector = _Collector(dataset)
    timings: dict = {}
    predict_options = dict(batch_size=batch_size, imgsz=imgsz, dtype=dtype, workers=workers,
                           exif_transpose=exif_transpose, conf=settings["conf"], iou=settings["iou"],
                           max_det=settings["max_det"], nms_top_k=settings["nms_top_k"],
                           multi_label=settings["multi_label"], agnostic=settings["agnostic"],
                           preprocess=settings["preprocess"], resize_rounding=settings["resize_rounding"])
    bar = _progress_bar(progress, len(dataset))
    try:
        if predictions is None:
            from nasjax.predict.predictor import predict

            start = time.perf_counter()
            if warmup:  # compile the detect function for this batch shape, outside the timings
                predict(detector, np.zeros((32, 32, 3), np.uint8), progress=False, **predict_options)
            timing["warmup"] = time.perf_counter() - start
            start = time.perf_counter()
            for chunk in dataset.chunks(batch_size * 8):
                results = predict(detector, [s.source for s in chunk], stream=True, progress=False, timings=timings,
                                  **predict_options)
                for sample, result in zip(chunk, results):
                    t = time.perf_counter()
                    if tuple(result.orig_shape) != (sample.height, sample.width):
                        raise DatasetError(
                            f"{sample.path or sample.file_name}: the image is {result.orig_shape[1]}x"
                            f"{result.orig_shape[0]} but its annotations are for {sample.width}x{sample.height}")
                    xywh, scores = _round_records(result.boxes.xyxy, result.boxes.conf)
                    collector.add(sample, xywh, scores, result.boxes.cls)
                    timings["postprocess"] += time.perf_counter() - t
                    bar.update(1)
            timing["predict"] = time.perf_counter() - start
        else:
            start = time.perf_counter()
            grouped = read_predictions(predictions, dataset)
            seen = set()
            for chunk in dataset.chunks(batch_size * 8):
                for sample in chunk:
                    key = _key_text(sample.key)
                    seen.add(key)
                    # in score order, as NMS outputs them (Ultralytics' matching favours earlier rows)
                    rows = sorted(grouped.get(key, []), key=lambda r: -r["score"])
                    xywh = np.array([r["bbox"] for r in rows], np.float64).reshape(-1, 4)
                    collector.add(sample, xywh, np.array([r["score"] for r in rows]),
                                  np.array([r["cls"] for r in rows], np.int64))
                    bar.update(1)
            unknown = sorted(set(grouped) - seen)
            import jax

            if unknown and jax.process_count() == 1:
                raise DatasetError(f"{predictions}: {len(unknown)} image_id(s) are not images of {dataset.name}, "
                                   f"e.g. {unknown[:3]}")
            timing["read_predictions"] = time.perf_counter() - start
    finally:
        bar.close()

    keys = [_key_text(im.key) for im in collector.images]
    if (save_predictions or predictions) and len(set(keys)) != len(keys):
        duplicate = next(k for k in keys if keys.count(k) > 1)
        raise DatasetError(f"two images of {dataset.name} share the image_id {duplicate!r} (the file stem), so a "
                           "predictions file cannot tell them apart")
    # Multi-host: every process contributes its share of images and records.
    gathered = _allgather((collector.images, collector.records, timings))
    eval_images = [im for part in gathered for im in part[0]]
    per_image_records = [rows for part in gathered for rows in part[1]]
    records = [r for rows in per_image_records for r in rows]
    for i, im in enumerate(eval_images):
        im.image_id = i

    start = time.perf_counter()
    evaluation = coco_metrics.evaluate(eval_images, dataset.names, dataset.category_ids,
                                       records=_internal_records(eval_images, per_image_records))
    timing["metrics"] = time.perf_counter() - start

    n = max(1, timings.get("images", 0))
    speed = {f"{k}_ms": 1000 * timings[k] / n for k in ("preprocess", "inference", "postprocess") if k in timings}
    metrics = {
        **evaluation.to_dict(),
        "speed": speed,
        "timing_s": timing,
        "dataset": dataset.describe(),
        "settings": {**settings, "imgsz": imgsz, "batch_size": batch_size, "reference_mode": reference_mode,
                     "split": split},
    }
    import jax

    primary = jax.process_index() == 0
    if save_predictions and primary:
        write_atomic(save_predictions, lambda tmp: tmp.write_text(json.dumps(records) + "\n"))
    if save_json and primary:
        write_atomic(save_json, lambda tmp: tmp.write_text(json.dumps(_jsonable(metrics), indent=1) + "\n"))
    if print_results and primary:
        print(coco_metrics.format_table(evaluation, verbose))
        if speed:
            print(f"Speed: {speed['preprocess_ms']:.1f}ms pre-process, {speed['inference_ms']:.1f}ms inference, "
                  f"{speed['postprocess_ms']:.1f}ms post-process per image at shape ({batch_size}, {imgsz}, {imgsz}, 3)")
        print(evaluation.summary.rstrip())
        if save_predictions:
            print(f"wrote {len(records)} detections to {save_predictions}")
        if save_json:
            print(f"wrote metrics to {save_json}")
    return metrics


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


# --- command line ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nasjax.validate",
        description="COCO mAP (pycocotools) and Ultralytics-style P/R of a YOLO-NAS model on a dataset.",
    )
    parser.add_argument("--data", required=True,
                        help="data YAML, shipped name (coco8, coco128, coco), dataset folder, COCO JSON file, or tfds:coco/2017")
    parser.add_argument("--model", default="yolo_nas_s", help="registered weight name or weight file / directory")
    parser.add_argument("--random-weights", action="store_true",
                        help="the architecture of --model with deterministic random weights (no download)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--conf", type=float, help=f"score threshold (default {DEFAULT_SETTINGS['conf']})")
    parser.add_argument("--iou", type=float, help=f"NMS IoU threshold (default {DEFAULT_SETTINGS['iou']})")
    parser.add_argument("--max-det", type=int, help=f"detections per image (default {DEFAULT_SETTINGS['max_det']})")
    parser.add_argument("--nms-top-k", type=int, help=f"candidates into NMS (default {DEFAULT_SETTINGS['nms_top_k']})")
    parser.add_argument("--single-label", action="store_true", help="one class per box (the best)")
    parser.add_argument("--agnostic", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--preprocess", choices=("centre_pad", "letterbox"), help="default centre_pad")
    parser.add_argument("--reference-mode", action="store_true",
                        help="super-gradients' COCO evaluation settings (conf 0.01, top-k 1000, int() resize)")
    parser.add_argument("--json", type=Path, help="write the metrics to this JSON file")
    parser.add_argument("--save-predictions", type=Path, help="write COCO-format detections (predictions.json)")
    parser.add_argument("--predictions", type=Path, help="score this COCO-format detections file (no inference)")
    parser.add_argument("--verbose", action="store_true", help="per-class rows")
    parser.add_argument("--images", help="image folder of a COCO JSON --data")
    parser.add_argument("--no-download", action="store_true", help="never download a missing dataset")
    parser.add_argument("--tfds-data-dir", help="TFDS data_dir for tfds:... data")
    parser.add_argument("--tfds-download", action="store_true", help="let TFDS download and prepare the dataset")
    parser.add_argument("--exif-transpose", action="store_true", help="apply EXIF orientation to images")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--workers", type=int, help="image reading threads")
    args = parser.parse_args(argv)

    import nasjax
    from nasjax.loading.hub import WeightsUnavailableError

    try:
        # The dataset first: a missing or malformed dataset fails before any weights are fetched.
        dataset = load_dataset(args.data, args.split, images=args.images, download=not args.no_download,
                               exif_transpose=args.exif_transpose, tfds_data_dir=args.tfds_data_dir,
                               tfds_download=args.tfds_download)
        detector = None
        if args.predictions is None:
            if args.random_weights:
                print(f"warning: {args.model} with random weights (seed 0): the metrics are meaningless",
                      file=sys.stderr)
                detector = nasjax.load(args.model, pretrained=False)
            else:
                detector = nasjax.load(args.model)
        metrics = validate(
            detector, dataset, split=args.split, batch_size=args.batch, imgsz=args.imgsz, conf=args.conf,
            iou=args.iou, max_det=args.max_det, nms_top_k=args.nms_top_k,
            multi_label=False if args.single_label else None, agnostic=True if args.agnostic else None,
            preprocess=args.preprocess, reference_mode=args.reference_mode, predictions=args.predictions,
            save_predictions=args.save_predictions, verbose=args.verbose, images=args.images,
            download=not args.no_download, tfds_data_dir=args.tfds_data_dir, tfds_download=args.tfds_download,
            exif_transpose=args.exif_transpose, workers=args.workers,
            dtype=None if args.dtype == "float32" else args.dtype,
        )
    except (DatasetError, DatasetNotFoundError, ImageLoadError, ClassCountMismatchError, WeightsUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    if args.json:
        record = {**metrics, "model": None if args.predictions else args.model, "random_weights": args.random_weights,
                  "data": args.data, "predictions": str(args.predictions) if args.predictions else None}
        write_atomic(args.json, lambda tmp: tmp.write_text(json.dumps(_jsonable(record), indent=1) + "\n"))
        print(f"wrote metrics to {args.json}")


if __name__ == "__main__":
    main()
