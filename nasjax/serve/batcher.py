"""Dynamic batching for the server: concurrent requests' images coalesced into the compiled batch sizes,
one device step per batch. Nothing here knows about HTTP; the FastAPI app (app.py) and the Ray Serve
deployment (ray_serve.py) share it.

    batcher = Batcher(model, BatcherConfig(max_batch=8, max_wait_ms=5, max_queue=64))
    batcher.start()                                   # compiles every batch size, then serves
    future = batcher.submit(image, RequestSettings(conf=0.3))   # a concurrent.futures.Future[Results]

Why it is shaped this way:
- A jitted model runs a fixed batch shape per compile. The compiled sizes are the powers of two up to
  max_batch, all compiled before /health says ready, so no request ever waits on a compile. Requests
  are gathered for at most `max_wait_ms` after the oldest one arrived, or until `max_batch` are there;
  then the largest compiled size they fill runs (5 waiting: 4 now, 1 in the next step), so no device
  row is padding: on a CPU a padding row costs as much as a real one (measured: padding 3 and 5 up to
  4 and 8 wasted a third of the device time at concurrency 8).
- Requests only share a device step when they share what the compiled program and its traced scalars
  take: the image size and the NMS settings (conf and iou are traced; max_det is static, so a request's
  smaller max_det is taken from the server's NMS output on the host: NMS keeps boxes in score order,
  so the first k are what max_det=k gives, and no request can make the server compile). Different
  settings wait for their own batch.
- The queue is bounded (`max_queue` images waiting): `submit` raises `QueueFull` at once rather than
  letting latency grow without bound; the HTTP layer answers 503 with Retry-After.
- Pre-processing (decode, resize, pad) is done by the caller's thread pool before `submit`, so the
  device thread only stacks, runs and maps boxes back; results equal `predict()` on the same image
  (the same pre-processing and NMS functions).
- `close(drain=True)` answers every accepted request before the thread ends (graceful shutdown).
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import threading
import time

import numpy as np

from nasjax.model.nms import NMSSettings
from nasjax.predict.predictor import class_names_of, detections_in_original, network_input_of, padded_batch
from nasjax.predict.results import Boxes, Results


class QueueFull(RuntimeError):
    """The batcher holds `max_queue` images already; try again shortly."""


class Closed(RuntimeError):
    """The batcher is shutting down and takes no new requests."""


@dataclasses.dataclass(frozen=True)
class BatcherConfig:
    max_batch: int = 8  # the largest device batch; smaller powers of two are compiled too
    max_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 64  # images accepted but not yet run; beyond it submit raises QueueFull
    imgsz: tuple[int, ...] = (640,)  # the input sizes served (each compiled at start); the first is the default
    preprocess: str = "centre_pad"
    dtype: str | None = None  # compute dtype ("bfloat16"), None for the model's float32

    def __post_init__(self):
        for name in ("max_batch", "max_queue"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if not self.imgsz or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 32 or s % 32
                                 for s in self.imgsz):
            raise ValueError(f"imgsz must be multiples of 32, got {self.imgsz!r}")

    def batch_sizes(self, detector) -> tuple[int, ...]:
        """The compiled batch sizes: powers of two up to max_batch, as the model runs them."""
        sizes, size = set(), 1
        while size < self.max_batch:
            sizes.add(detector.batch_size_for(size))
            size *= 2
        sizes.add(detector.batch_size_for(self.max_batch))
        return tuple(sorted(sizes))


@dataclasses.dataclass(frozen=True)
class RequestSettings:
    """What one request may choose: NMS settings, one of the served sizes, and on the host a class filter
    and a smaller max_det. Requests share a device step when their `key` (what the compiled program and
    its traced scalars take) is equal."""

    nms: NMSSettings = NMSSettings()
    imgsz: int = 640
    classes: frozenset[int] | None = None
    max_det: int | None = None  # fewer than nms.max_det: the first max_det of NMS's output (the same boxes)

    @property
    def key(self) -> tuple:
        return self.nms, self.imgsz


class _Pending:
    __slots__ = ("image", "network_input", "transform", "settings", "future", "path", "queued")

    def __init__(self, image, network_input, transform, settings, path):
        self.image, self.network_input, self.transform = image, network_input, transform
        self.settings, self.path = settings, path
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.queued = time.perf_counter()


class Batcher:
    """One model's device thread and queue."""

    def __init__(self, detector, config: BatcherConfig = BatcherConfig()):
        self.detector = detector
        self.config = config
        self.names = class_names_of(detector)
        self.sizes = config.batch_sizes(detector)
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._closing = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = {"batches": 0, "images": 0}

    # --- life cycle ------------------------------------------------------------------------------------

    def start(self, warm: bool = True) -> "Batcher":
        """Compile every batch size at every served image size (warm), then start the device thread."""
        if warm:
            for imgsz in self.config.imgsz:
                for size in self.sizes:
                    self.detector.detect_batch(np.zeros((size, imgsz, imgsz, 3), np.uint8), NMSSettings(),
                                               self.config.dtype)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="nasjax-serve-device")
        self._thread.start()
        self._ready.set()
        return self

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._closing

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; with drain, answer every accepted one first, else fail them with Closed."""
        with self._cond:
            self._closing = True
            if not drain:
                while self._queue:
                    self._queue.popleft().future.set_exception(Closed("the server is shutting down"))
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- requests ---------------------------------------------------------------------------------------

    def prepare(self, image: np.ndarray, settings: RequestSettings, path: str | None = None) -> _Pending:
        """Pre-process one (H, W, 3) uint8 RGB image for `settings` (in the caller's thread); an image
        size that is not served is a ValueError (it would compile a program on the device thread)."""
        if settings.imgsz not in self.config.imgsz:
            raise ValueError(f"imgsz {settings.imgsz} is not served; served: {', '.join(map(str, self.config.imgsz))}")
        network_input, transform = network_input_of(self.detector, image, self.config.preprocess, settings.imgsz)
        return _Pending(image, network_input, transform, settings, path)

    def submit_prepared(self, pending: _Pending) -> concurrent.futures.Future:
        with self._cond:
            if self._closing:
                raise Closed("the server is shutting down")
            if len(self._queue) >= self.config.max_queue:
                raise QueueFull(f"{len(self._queue)} images are waiting (max_queue={self.config.max_queue})")
            self._queue.append(pending)
            self._cond.notify_all()
        return pending.future

    def submit(self, image: np.ndarray, settings: RequestSettings | None = None,
               path: str | None = None) -> concurrent.futures.Future:
        """A Future of the image's `Results`, as predict() gives them (settings: default NMS at the first
        served size). Raises QueueFull or Closed."""
        settings = settings or RequestSettings(imgsz=self.config.imgsz[0])
        return self.submit_prepared(self.prepare(image, settings, path))

    @property
    def queued(self) -> int:
        return len(self._queue)

    # --- the device thread --------------------------------------------------------------------------------

    def _take_batch(self) -> list[_Pending] | None:
        """The next batch: the oldest request and up to max_batch - 1 later ones with the same settings,
        gathered for at most max_wait_ms after the oldest arrived; None when closing with nothing left."""
        limit = self.sizes[-1]
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            first = self._queue[0]
            deadline = first.queued + self.config.max_wait_ms / 1000
            while not self._closing:
                same = sum(1 for p in self._queue if p.settings.key == first.settings.key)
                remaining = deadline - time.perf_counter()
                if same >= limit or remaining <= 0:
                    break
                self._cond.wait(remaining)
            # The largest compiled size that the waiting requests fill: no padding rows (on a CPU a
            # padded row costs a real one's time); the rest wait for the next step. Only fewer requests
            # than the smallest compiled size (an exported model's fixed batch) are padded.
            same = sum(1 for p in self._queue if p.settings.key == first.settings.key)
            take = max([s for s in self.sizes if s <= same], default=same)
            batch, rest = [], collections.deque()
            while self._queue:
                p = self._queue.popleft()
                (batch if len(batch) < take and p.settings.key == first.settings.key else rest).append(p)
            self._queue = rest
            return batch

    def _serve(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except BaseException as error:  # noqa: BLE001 — every waiting request gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(error)

    def _run(self, batch: list[_Pending]) -> None:
        settings = batch[0].settings
        size = next(s for s in self.sizes if s >= len(batch))
        inputs = padded_batch([p.network_input for p in batch], size, settings.imgsz)
        detections = self.detector.detect_batch(inputs, settings.nms, self.config.dtype)
        self.stats["batches"] += 1
        self.stats["images"] += len(batch)
        for i, p in enumerate(batch):
            boxes = Boxes(*detections_in_original(detections, i, p.transform), p.image.shape[:2])
            if p.settings.max_det is not None:
                boxes = boxes[: p.settings.max_det]
            if p.settings.classes is not None:
                boxes = boxes.of_classes(p.settings.classes)
            if p.future.set_running_or_notify_cancel():
                p.future.set_result(Results(p.image, boxes, self.names, p.path))
