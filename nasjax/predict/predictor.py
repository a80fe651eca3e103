"""predict(): images in (files, folders, globs, arrays), `Results` out.

    results = nasjax.build("yolo_nas_s").predict("bus.jpg")        # or detector.predict([...])
    nasjax predict model=yolo_nas_s source=DIR            # the command: nasjax/cli.py

Host and device work overlap: a thread pool reads and pre-processes the next batch (PIL decoding and
numpy resizing release the GIL) while the device runs the current one. On the device, one jitted
pure function does forward + box decoding + NMS (`detect`), so only (B, max_det) rows come back. The
last batch is padded to the batch size (no recompilation), and the batch is split over
`jax.local_devices()` along a 1-D mesh (data parallel; the variables are replicated).

The defaults are super-gradients' `predict()` (docs/preprocessing.md#centre-pad, docs/postprocessing.md#settings): centre padding 636/640,
conf 0.25, IoU 0.7, top-k 1024, 300 detections, multi-label, class-aware. See nasjax/data/preprocessing.py
and nasjax/model/nms.py for what is reproduced exactly and the one known difference (score ties at
torch.topk).
"""
from __future__ import annotations

import concurrent.futures
import os
import time
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image

from nasjax.model.nms import NMSSettings
from nasjax.data import preprocessing
from nasjax.model.core import BatchDetector
from nasjax.predict.results import Boxes, Results
from nasjax.utils.progress import progress_bar

_GLOB_CHARS = set("*?[")


# --- sources ---------------------------------------------------------------------------------------


class Item(NamedTuple):
    """One image to read: a path, a PIL image or an array, and how to name it in messages."""

    source: object
    path: str | None
    label: str


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in preprocessing.IMAGE_EXTENSIONS


def _glob(pattern: str) -> list[Path]:
    """The files matching `pattern`, `**` included. pathlib's `**` does not descend into linked folders,
    so a symbolic link loop cannot make the listing endless (glob.glob(recursive=True) follows it until
    the path is too long)."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    base = Path(*parts[:first]) if first else Path(".")
    return list(base.glob(str(Path(*parts[first:]))))


def _expand_path(text: str) -> list[Item]:
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_image_file(p))
        if not files:
            raise ValueError(
                f"no images in directory {path} (looked for {', '.join('.' + e for e in preprocessing.IMAGE_EXTENSIONS)})"
            )
        return [Item(str(p), str(p), str(p)) for p in files]
    if not path.exists() and _GLOB_CHARS & set(text):
        files = sorted(p for p in _glob(text) if p.is_file() and _is_image_file(p))
        if not files:
            raise ValueError(f"no image files match {text!r}")
        return [Item(str(p), str(p), str(p)) for p in files]
    # A single file, even with an unusual extension; a missing one is reported when it is read.
    return [Item(str(path), str(path), str(path))]


def list_sources(source) -> list[Item]:
    """Every image in `source`: a path (file, directory, glob pattern), a PIL image, an (H, W, 3) uint8
    array, a (B, H, W, 3) uint8 array, or a list / tuple of any of these (sizes may differ)."""
    if isinstance(source, (str, os.PathLike)):
        return _expand_path(os.fspath(source))
    if isinstance(source, Image.Image):
        return [Item(source, getattr(source, "filename", None) or None, "PIL image")]
    if isinstance(source, np.ndarray):
        if source.ndim == 4:
            return [Item(image, None, f"array[{i}]") for i, image in enumerate(source)]
        return [Item(source, None, "array")]
    if isinstance(source, (list, tuple)):
        items = []
        for i, element in enumerate(source):
            if isinstance(element, (list, tuple)):
                raise TypeError(f"source[{i}] is a nested {type(element).__name__}; pass a flat list of images")
            for item in list_sources(element):
                items.append(item if item.path else item._replace(label=f"source[{i}] ({item.label})"))
        if not items:
            raise ValueError("empty source: the list holds no images")
        return items
    raise TypeError(
        f"unsupported source of type {type(source).__name__}; expected a path, directory, glob pattern, "
        "PIL image, uint8 numpy array, or a list of these"
    )


# --- the pipeline ----------------------------------------------------------------------------------


class Prepared(NamedTuple):
    item: Item
    image: np.ndarray  # original (H, W, 3) uint8 RGB
    network_input: np.ndarray  # (S, S, 3) uint8
    transform: preprocessing.Transform
    seconds: float = 0.0  # time spent reading and pre-processing this image


def class_names_of(detector: BatchDetector) -> dict[int, str]:
    if detector.class_names is not None:
        return dict(enumerate(detector.class_names))
    from nasjax.weights.coco import COCO_CLASS_NAMES

    if detector.num_classes == len(COCO_CLASS_NAMES):
        return dict(enumerate(COCO_CLASS_NAMES))
    return {i: f"class{i}" for i in range(detector.num_classes)}


# --- shared with nasjax.ray: one image in, one image's detections out --------------------------------


def network_input_of(detector: BatchDetector, image: np.ndarray, preprocess: str = "centre_pad", imgsz: int = 640,
                     rounding: str = "round") -> tuple[np.ndarray, preprocessing.Transform]:
    """(network input (imgsz, imgsz, 3) uint8, transform) for an (H, W, 3) uint8 RGB image, with the
    weights' own pre-processing numbers (pad 114, resize margin 640 - 636 for the COCO models)."""
    weights = detector.preprocessing
    return preprocessing.preprocess(image, preprocess, imgsz, weights.pad_value,
                                    resize_margin=weights.input_size - weights.resize_longest_side, rounding=rounding)


def padded_batch(inputs: list[np.ndarray], batch_size: int, imgsz: int) -> np.ndarray:
    """(batch_size, imgsz, imgsz, 3) uint8: `inputs` (at most batch_size), then zero rows, so that every
    device call has the one compiled shape."""
    batch = np.zeros((batch_size, imgsz, imgsz, 3), np.uint8)
    for i, network_input in enumerate(inputs):
        batch[i] = network_input
    return batch


def detections_in_original(detections, i: int, transform: preprocessing.Transform
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyxy in original-image pixels, scores, classes) of row i of padded `nms.Detections`."""
    n = int(detections.count[i])
    return transform.boxes_to_original(detections.boxes[i, :n]), detections.scores[i, :n], detections.classes[i, :n]


def checked_settings(*, conf, iou, max_det, nms_top_k, batch_size, multi_label, agnostic, imgsz, preprocess,
                     resize_rounding) -> NMSSettings:
    """predict()'s options checked before any image is read (a ValueError naming the bad one); the NMS
    settings they make."""
    for name, value in (("max_det", max_det), ("nms_top_k", nms_top_k), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    settings = NMSSettings(conf=conf, iou=iou, top_k=int(nms_top_k), max_det=int(max_det),
                           multi_label=multi_label, agnostic=agnostic)  # checks conf and iou
    preprocessing.make_transform((imgsz, imgsz), preprocess, imgsz, rounding=resize_rounding)
    return settings


def predict(
    detector: BatchDetector,
    source,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 300,
    nms_top_k: int = 1024,
    batch_size: int = 8,
    multi_label: bool = True,
    agnostic: bool = False,
    preprocess: str = "centre_pad",
    imgsz: int = 640,
    stream: bool = False,
    skip_errors: bool = False,
    progress: bool | None = None,
    dtype=None,
    exif_transpose: bool = False,
    workers: int | None = None,
    resize_rounding: str = "round",
    timings: dict | None = None,
) -> list[Results] | Iterator[Results]:
    """Detect objects in every image of `source`; a list of `Results` (a generator with stream=True).

    source: path, directory, glob pattern, PIL image, (H, W, 3) uint8 RGB array, (B, H, W, 3) array,
        or a list mixing them (any sizes).
    conf, iou, max_det, nms_top_k, multi_label, agnostic: NMS (nasjax/model/nms.py); changing conf or iou
        does not recompile.
    preprocess: "centre_pad" (super-gradients: longest side imgsz - 4 (the detector config's
        input_size - resize_longest_side), centre padding to imgsz with the config's pad_value) or
        "letterbox" (Ultralytics, longest side imgsz, boxes clipped to the image); imgsz a multiple of 32.
    batch_size: images per device call, rounded up to a multiple of the device count; the last batch
        is padded.
    skip_errors: warn about and skip unreadable images instead of raising `ImageLoadError`.
    progress: a tqdm bar; None shows one for more than one batch when stderr is a terminal.
    dtype: compute dtype of the network, e.g. jnp.bfloat16 (default: the variables' float32).
    exif_transpose: apply EXIF orientation (super-gradients does not).
    workers: threads reading and pre-processing images (default min(8, CPU count)).
    resize_rounding: "round" (default) or "trunc", the int() resized size of super-gradients'
        validation pipeline (nasjax.data.preprocessing.make_transform).
    timings: a dict that receives running totals, in seconds, of "preprocess" (reading and
        pre-processing, summed over images), "inference" (device call: forward and NMS, and the
        transfer back) and "postprocess" (mapping boxes back, making Results), and "images" (count).
    """
    settings = checked_settings(conf=conf, iou=iou, max_det=max_det, nms_top_k=nms_top_k, batch_size=batch_size,
                                multi_label=multi_label, agnostic=agnostic, imgsz=imgsz, preprocess=preprocess,
                                resize_rounding=resize_rounding)
    if timings is not None:
        for key in ("preprocess", "inference", "postprocess"):
            timings.setdefault(key, 0.0)
        timings.setdefault("images", 0)
    items = list_sources(source)
    generator = _run(detector, items, settings=settings, batch_size=int(batch_size), preprocess=preprocess,
                     imgsz=imgsz, skip_errors=skip_errors, progress=progress, dtype=dtype,
                     exif_transpose=exif_transpose, workers=workers, rounding=resize_rounding, timings=timings)
    return generator if stream else list(generator)


def _run(detector, items, *, settings: NMSSettings, batch_size, preprocess, imgsz,
         skip_errors, progress, dtype, exif_transpose, workers, rounding="round",
         timings=None) -> Iterator[Results]:
    # The JAX network and the exported runners share one batch interface (nasjax.model.core.BatchDetector).
    batch_size = detector.batch_size_for(batch_size)
    names = class_names_of(detector)

    def prepare(item: Item) -> Prepared:
        start = time.perf_counter()
        image = preprocessing.load_image(item.source, exif_transpose)
        network_input, transform = network_input_of(detector, image, preprocess, imgsz, rounding)
        return Prepared(item, image, network_input, transform, time.perf_counter() - start)

    def collect(futures) -> list[Prepared]:
        prepared = []
        for item, future in futures:
            try:
                prepared.append(future.result())
            except preprocessing.ImageLoadError as e:
                if not skip_errors:
                    if item.path:
                        raise  # the message names the file already
                    raise preprocessing.ImageLoadError(f"{item.label}: {e}") from e
                warnings.warn(f"skipped {e if item.path else f'{item.label}: {e}'}", stacklevel=4)
        return prepared

    chunks = [items[i: i + batch_size] for i in range(0, len(items), batch_size)]
    bar = progress_bar(progress, len(items), "predict", batches=len(chunks))
    workers = workers or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="nasjax-read") as pool:
        def submit(chunk):
            return [(item, pool.submit(prepare, item)) for item in chunk]

        pending = submit(chunks[0])
        for k in range(len(chunks)):
            prepared = collect(pending)
            # Start reading the next batch now, so that it overlaps with this batch's device work.
            pending = submit(chunks[k + 1]) if k + 1 < len(chunks) else []
            if prepared:
                batch = padded_batch([p.network_input for p in prepared], batch_size, imgsz)
                start = time.perf_counter()
                detections = detector.detect_batch(batch, settings, dtype)
                if timings is not None:
                    timings["inference"] += time.perf_counter() - start
                    timings["preprocess"] += sum(p.seconds for p in prepared)
                    timings["images"] += len(prepared)
                for i, p in enumerate(prepared):
                    start = time.perf_counter()
                    boxes = Boxes(*detections_in_original(detections, i, p.transform), p.image.shape[:2])
                    result = Results(p.image, boxes, names, p.item.path)
                    if timings is not None:
                        timings["postprocess"] += time.perf_counter() - start
                    yield result
            bar.update(len(chunks[k]))
    bar.close()
