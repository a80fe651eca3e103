"""predict(): images and videos in (files, folders, globs, arrays, webcams, streams), `Results` out.

    results = nasjax.build("yolo_nas_s").predict("bus.jpg")        # or detector.predict([...])
    for r in detector.predict("clip.mp4", stream=True): ...        # one Results per frame, as decoded
    nasjax predict model=yolo_nas_s source=DIR            # the command: nasjax/cli.py

Host and device work overlap: a thread pool reads and pre-processes the next batch (PIL decoding and
numpy resizing release the GIL) while the device runs the current one. On the device, one jitted
pure function does forward + box decoding + NMS (`detect`), so only (B, max_det) rows come back. The
last batch is padded to the batch size (no recompilation), and the batch is split over
`jax.local_devices()` along a 1-D mesh (data parallel; the variables are replicated).

Video frames (nasjax/predict/video.py) are decoded in a thread per source and join the same batches as
images; a batch may hold frames of several videos. With a live source, a batch is sent as soon as no
further frame is ready, so a stream is not held back to fill a batch.

The defaults are super-gradients' `predict()` (docs/preprocessing.md#centre-pad, docs/postprocessing.md#settings): centre padding 636/640,
conf 0.25, IoU 0.7, top-k 1024, 300 detections, multi-label, class-aware. See nasjax/data/preprocessing.py
and nasjax/model/nms.py for what is reproduced exactly and the one known difference (score ties at
torch.topk).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
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
from nasjax.predict import video
from nasjax.predict.results import Boxes, Results
from nasjax.utils.progress import progress_bar

_GLOB_CHARS = set("*?[")


# --- sources ---------------------------------------------------------------------------------------


class Item(NamedTuple):
    """One image to read (a path, a PIL image or an array) or one video source (`video.Source`, or a
    list of them read together from a *.streams file), and how to name it in messages. A decoded video
    frame is an Item whose source is the frame's array, with its frame index, time and `VideoInfo`."""

    source: object
    path: str | None
    label: str
    frame: int | None = None
    timestamp: float | None = None
    video: video.VideoInfo | None = None


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in preprocessing.IMAGE_EXTENSIONS


def _is_media_file(path: Path) -> bool:
    return _is_image_file(path) or video.is_video_file(path)


def _file_item(path: Path) -> Item:
    if video.is_video_file(path):
        return Item(video.Source(str(path)), str(path), str(path))
    return Item(str(path), str(path), str(path))


def formats_read() -> str:
    return (f"nasjax reads images ({', '.join(preprocessing.IMAGE_EXTENSIONS)}) and videos "
            f"({', '.join(video.VIDEO_EXTENSIONS)}), webcams (a number), stream URLs and *.streams files")


def _glob(pattern: str) -> list[Path]:
    """The files matching `pattern`, `**` included. pathlib's `**` does not descend into linked folders,
    so a symbolic link loop cannot make the listing endless (glob.glob(recursive=True) follows it until
    the path is too long)."""
    parts = Path(pattern).parts
    first = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    base = Path(*parts[:first]) if first else Path(".")
    return list(base.glob(str(Path(*parts[first:]))))


def _expand_path(text: str) -> list[Item]:
    if text.isdigit() or (video.is_stream_url(text) and not video.is_video_file(text)):
        return [Item(video.Source(text), text, video.Source(text).label)]  # a webcam or a live stream
    if video.is_stream_url(text):
        return [Item(video.Source(text), text, text)]  # a video file over the network
    path = Path(text)
    if path.suffix.lower() == video.STREAMS_SUFFIX and path.is_file():
        sources = [video.Source(line) for line in video.read_streams_file(path)]
        return [Item(sources, str(path), str(path))]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_media_file(p))
        if not files:
            raise ValueError(f"no images or videos in directory {path}; {formats_read()}")
        return [_file_item(p) for p in files]
    if not path.exists() and _GLOB_CHARS & set(text):
        files = sorted(p for p in _glob(text) if p.is_file() and _is_media_file(p))
        if not files:
            raise ValueError(f"no image or video files match {text!r}")
        return [_file_item(p) for p in files]
    # A single file, even with an unusual extension (read as an image); a missing one is reported when
    # it is read.
    return [_file_item(path)]


def list_sources(source) -> list[Item]:
    """Every image and video in `source`: a path (file, directory, glob pattern; videos by extension), a
    webcam number, a stream URL, a *.streams file, a PIL image, an (H, W, 3) uint8 array, a (B, H, W, 3)
    uint8 array, or a list / tuple of any of these (sizes may differ). Videos are listed, not decoded."""
    if isinstance(source, (str, os.PathLike)):
        return _expand_path(os.fspath(source))
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return [Item(video.Source(int(source)), str(int(source)), video.Source(int(source)).label)]
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
        "video, webcam number, stream URL, PIL image, uint8 numpy array, or a list of these"
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


def check_classes_filter(classes) -> frozenset[int] | None:
    """predict's `classes`: None, or a non-empty collection of class indices (an int is one class)."""
    if classes is None:
        return None
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        classes = [classes]
    try:
        values = [int(c) for c in classes]
        if any(isinstance(c, bool) or int(c) != c or c < 0 for c in classes) or not values:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"classes must be class indices (integers >= 0), e.g. classes=[0, 2], got {classes!r}") from None
    return frozenset(values)


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
    classes=None,
    vid_stride: int = 1,
    stream_buffer: bool = False,
    stream_timeout: float = 10.0,
    reconnects: int = 3,
) -> list[Results] | Iterator[Results]:
    """Detect objects in every image and video frame of `source`; a list of `Results` (a generator with
    stream=True, one Results per image or frame as soon as it is predicted).

    source: path, directory, glob pattern (images and videos by extension), video file, webcam number,
        stream URL (rtsp://, rtmp://, http://, ...), *.streams file (one source per line, read
        together), PIL image, (H, W, 3) uint8 RGB array, (B, H, W, 3) array, or a list mixing them.
    conf, iou, max_det, nms_top_k, multi_label, agnostic: NMS (nasjax/model/nms.py); changing conf or iou
        does not recompile.
    classes: keep only detections of these class indices (applied to NMS's output).
    preprocess: "centre_pad" (super-gradients: longest side imgsz - 4 (the detector config's
        input_size - resize_longest_side), centre padding to imgsz with the config's pad_value) or
        "letterbox" (Ultralytics, longest side imgsz, boxes clipped to the image); imgsz a multiple of 32.
    batch_size: images per device call, rounded up to a multiple of the device count; the last batch
        is padded.
    skip_errors: warn about and skip unreadable images and videos that cannot be opened, instead of
        raising `ImageLoadError` / `VideoError`.
    progress: a tqdm bar; None shows one for more than one batch when stderr is a terminal.
    dtype: compute dtype of the network, e.g. jnp.bfloat16 (default: the variables' float32).
    exif_transpose: apply EXIF orientation (super-gradients does not).
    workers: threads reading and pre-processing images (default min(8, CPU count)).
    resize_rounding: "round" (default) or "trunc", the int() resized size of super-gradients'
        validation pipeline (nasjax.data.preprocessing.make_transform).
    timings: a dict that receives running totals, in seconds, of "preprocess" (reading and
        pre-processing, summed over images), "inference" (device call: forward and NMS, and the
        transfer back) and "postprocess" (mapping boxes back, making Results), and "images" (count).
    vid_stride: predict every vid_stride-th video frame.
    stream_buffer: live sources (webcams, streams) keep every frame; by default only the newest is kept
        while the device is busy (real time).
    stream_timeout: seconds to wait when opening a video source, and for a live source's next data.
    reconnects: times a live source that drops is reopened before its frames end (with a warning).
    """
    settings = checked_settings(conf=conf, iou=iou, max_det=max_det, nms_top_k=nms_top_k, batch_size=batch_size,
                                multi_label=multi_label, agnostic=agnostic, imgsz=imgsz, preprocess=preprocess,
                                resize_rounding=resize_rounding)
    keep = check_classes_filter(classes)
    video_options = video.VideoOptions(vid_stride=vid_stride, stream_buffer=stream_buffer, timeout=stream_timeout,
                                       reconnects=reconnects)
    if timings is not None:
        for key in ("preprocess", "inference", "postprocess"):
            timings.setdefault(key, 0.0)
        timings.setdefault("images", 0)
    items = list_sources(source)
    if not stream and any(is_live(item) for item in items):
        warnings.warn("a live source never ends and its results are kept in memory: use stream=True (a generator) "
                      "for webcams and streams", stacklevel=2)
    generator = _run(detector, items, settings=settings, batch_size=int(batch_size), preprocess=preprocess,
                     imgsz=imgsz, skip_errors=skip_errors, progress=progress, dtype=dtype,
                     exif_transpose=exif_transpose, workers=workers, rounding=resize_rounding, timings=timings,
                     keep=keep, video_options=video_options)
    return generator if stream else list(generator)


def is_live(item: Item) -> bool:
    sources = item.source if isinstance(item.source, list) else [item.source]
    return any(isinstance(s, video.Source) and s.live for s in sources)


def is_video(item: Item) -> bool:
    return isinstance(item.source, (video.Source, list))


_IDLE = object()  # a live source has nothing ready: send the batch gathered so far


def frames_of(items: list[Item], options: video.VideoOptions, skip_errors: bool = False) -> Iterator[Item]:
    """`items` with each video source replaced by its frames, decoded in a thread per source (one video
    after another; the sources of a *.streams file together). Reader warnings are raised here, in the
    caller's thread. Yields `_IDLE` when a live source has no frame ready yet. A source that cannot be
    opened raises `VideoError`, or with skip_errors is skipped with a warning."""
    opened = 0
    for item in items:
        if not is_video(item):
            yield item
            continue
        sources = item.source if isinstance(item.source, list) else [item.source]
        for source in sources:
            source.index, opened = opened, opened + 1  # VideoInfo.index: the run's video sources in order
        try:
            reader = video.FrameReader(sources, options)
        except video.VideoError as error:
            if not skip_errors:
                raise
            warnings.warn(f"skipped {error}", stacklevel=2)
            continue
        for frame in reader.iter(idle=_IDLE):
            if frame is _IDLE:
                yield frame
            elif isinstance(frame, video.Notice):
                warnings.warn(frame.message, stacklevel=2)
            else:
                info = frame.video
                yield Item(frame.image, info.path, f"{info.path} frame {frame.index}", frame.index, frame.timestamp, info)


def _chunks(units: Iterator, batch_size: int) -> Iterator[list[Item]]:
    """Batches of at most batch_size items; a batch is cut short when a live source has nothing ready."""
    chunk: list[Item] = []
    for unit in units:
        if unit is _IDLE:
            if chunk:
                yield chunk
                chunk = []
            continue
        chunk.append(unit)
        if len(chunk) == batch_size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _run(detector, items, *, settings: NMSSettings, batch_size, preprocess, imgsz,
         skip_errors, progress, dtype, exif_transpose, workers, rounding="round",
         timings=None, keep=None, video_options=video.VideoOptions()) -> Iterator[Results]:
    # The JAX network and the exported runners share one batch interface (nasjax.model.core.BatchDetector).
    batch_size = detector.batch_size_for(batch_size)
    names = class_names_of(detector)

    def prepare(item: Item) -> Prepared:
        start = time.perf_counter()
        try:
            image = preprocessing.load_image(item.source, exif_transpose)
        except preprocessing.ImageLoadError as e:
            if item.path and not _is_media_file(Path(item.path)) and Path(item.path).is_file():
                raise preprocessing.ImageLoadError(f"{e}; {formats_read()}") from None
            raise
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

    live = any(is_live(item) for item in items)

    def device_batch(n: int) -> int:
        """The compiled batch a call of n images runs at: batch_size; with a live source, whose batches
        are cut short so as not to wait for frames, the next power of two (at most log2(batch_size) + 1
        shapes, compiled as they are first met), as on a CPU a padded row costs as much as a real one."""
        if not live or n >= batch_size:
            return batch_size
        return min(batch_size, max(detector.batch_size_for(1 << (n - 1).bit_length()), n))

    has_video = any(is_video(item) for item in items)
    total = None if has_video else len(items)
    bar = progress_bar(progress, total, "predict", unit="frame" if has_video else "image",
                       batches=None if has_video else -(-len(items) // batch_size))
    workers = workers or min(8, os.cpu_count() or 1)
    chunks = _chunks(frames_of(items, video_options, skip_errors), batch_size)
    with contextlib.closing(chunks), concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="nasjax-read") as pool:
        def submit(chunk):
            return [(item, pool.submit(prepare, item)) for item in chunk]

        chunk = next(chunks, None)
        pending = submit(chunk or [])
        while chunk is not None:
            prepared = collect(pending)
            # Start reading the next batch now, so that it overlaps with this batch's device work.
            following = next(chunks, None)
            pending = submit(following or [])
            if prepared:
                batch = padded_batch([p.network_input for p in prepared], device_batch(len(prepared)), imgsz)
                start = time.perf_counter()
                detections = detector.detect_batch(batch, settings, dtype)
                if timings is not None:
                    timings["inference"] += time.perf_counter() - start
                    timings["preprocess"] += sum(p.seconds for p in prepared)
                    timings["images"] += len(prepared)
                for i, p in enumerate(prepared):
                    start = time.perf_counter()
                    boxes = Boxes(*detections_in_original(detections, i, p.transform), p.image.shape[:2])
                    if keep is not None:
                        boxes = boxes.of_classes(keep)
                    result = Results(p.image, boxes, names, p.item.path, frame=p.item.frame,
                                     timestamp=p.item.timestamp, video=p.item.video)
                    if timings is not None:
                        timings["postprocess"] += time.perf_counter() - start
                    yield result
            bar.update(len(chunk))
            chunk = following
    bar.close()
