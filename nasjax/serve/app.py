"""The HTTP detection API: FastAPI over the dynamic batcher (batcher.py), one per served model.

    POST /v1/detect      multipart field `file`, or the image bytes as the body (Content-Type image/* or
                         application/octet-stream); query conf, iou, classes (0,2), max_det, imgsz, model
                         → {"model", "width", "height", "detections": [{name, class, confidence, box}], "time_ms"}
    GET  /health         200 {"status": "ok"} once every model is compiled; 503 {"status": "starting"} before
    GET  /v1/models      name, classes, input sizes, batch sizes, backend of every model
    GET  /docs           OpenAPI (FastAPI's)

Why it is shaped this way:
- Every failure a client can cause is a 4xx JSON body {"error": {"status", "type", "message"}} that
  names the problem, and the server goes on serving: a body over `max_body_bytes` (413, refused from
  Content-Length or while reading, never held whole), an image over the pixel limit (413, from its
  header, before decoding), bytes that are not an image or are cut short (400), a wrong content type
  (415), a missing `file` field (422), out-of-range or malformed query values (422), an unknown model
  (404). A full queue is 503 with Retry-After; a request not answered within `request_timeout` is 504.
- Decoding and pre-processing run in a thread pool (PIL and the resize release the GIL), off the event
  loop; the device runs in the batcher's thread. The event loop only moves bytes and futures.
- The models are compiled in a background thread after the server starts listening, so /health can
  say "starting" (503) and orchestrators can wait on it; /v1/detect answers 503 until then.
- On shutdown (SIGTERM / Ctrl-C), uvicorn stops accepting, waits for the requests in flight, then the
  batchers answer everything they accepted before they stop.
"""
# No `from __future__ import annotations`: FastAPI reads the endpoint annotations (Request, Query) at definition.

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import io
import os
import threading
import time

from nasjax.data import preprocessing
from nasjax.model.nms import NMSSettings
from nasjax.serve.batcher import Batcher, BatcherConfig, Closed, QueueFull, RequestSettings

RAW_TYPES = ("image/", "application/octet-stream")


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """The server's settings (the `nasjax serve` keys)."""

    batcher: BatcherConfig = BatcherConfig()
    max_body_bytes: int = 20 * 2**20  # a request body over this is refused (413)
    request_timeout: float = 30.0  # seconds from arrival to answer before 504
    decode_workers: int | None = None  # threads decoding and pre-processing (default min(8, CPUs))
    retry_after: int = 1  # seconds, the Retry-After of a 503

    def __post_init__(self):
        if not self.max_body_bytes > 0:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes!r}")
        if not self.request_timeout > 0:
            raise ValueError(f"request_timeout must be positive, got {self.request_timeout!r}")


class APIError(Exception):
    """A client error: HTTP status, short type, message; optional headers."""

    def __init__(self, status: int, kind: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}


def backend_of(detector) -> str:
    return getattr(detector, "backend", None) or "jax"


class Service:
    """The served models and what the endpoints do, without the web framework (the Ray Serve deployment
    wraps the same object)."""

    def __init__(self, models: dict, config: ServeConfig = ServeConfig()):
        if not models:
            raise ValueError("no model to serve")
        self.config = config
        self.default = next(iter(models))
        self.batchers: dict[str, Batcher] = {}
        for name, detector in models.items():
            fixed = getattr(detector, "imgsz", None)  # an exported model has one input size
            batcher_config = config.batcher
            if fixed is not None and not callable(fixed):
                batcher_config = dataclasses.replace(batcher_config, imgsz=(int(tuple(fixed)[0]),))
            self.batchers[name] = Batcher(detector, batcher_config)
        self._pool = concurrent.futures.ThreadPoolExecutor(config.decode_workers or min(8, os.cpu_count() or 1),
                                                           thread_name_prefix="nasjax-serve-decode")
        self._started = threading.Event()
        self.error: BaseException | None = None

    # --- life cycle -------------------------------------------------------------------------------------

    def start(self, background: bool = True) -> None:
        """Compile every model (in a background thread unless background=False)."""
        def warm():
            try:
                for batcher in self.batchers.values():
                    batcher.start()
            except BaseException as error:  # noqa: BLE001 — reported by /health
                self.error = error
            finally:
                self._started.set()

        if background:
            threading.Thread(target=warm, daemon=True, name="nasjax-serve-warmup").start()
        else:
            warm()

    @property
    def ready(self) -> bool:
        return self._started.is_set() and self.error is None and all(b.ready for b in self.batchers.values())

    def close(self) -> None:
        self._started.wait()
        for batcher in self.batchers.values():
            batcher.close(drain=True)
        self._pool.shutdown(wait=True)

    # --- endpoints -----------------------------------------------------------------------------------------

    def health(self) -> tuple[int, dict]:
        if self.error is not None:
            return 503, {"status": "failed", "error": f"{type(self.error).__name__}: {self.error}"}
        if not self.ready:
            return 503, {"status": "starting"}
        return 200, {"status": "ok", "models": list(self.batchers),
                     "queued": {name: b.queued for name, b in self.batchers.items()},
                "served": {name: dict(b.stats) for name, b in self.batchers.items()}}

    def models(self) -> dict:
        return {"models": [
            {"name": name, "backend": backend_of(b.detector), "classes": [b.names[i] for i in sorted(b.names)],
             "imgsz": list(b.config.imgsz), "batch_sizes": list(b.sizes), "ready": b.ready,
             "preprocess": b.config.preprocess}
            for name, b in self.batchers.items()]}

    def settings_for(self, model: str | None, conf, iou, classes, max_det, imgsz) -> tuple[Batcher, RequestSettings]:
        """The batcher and settings of one request; APIError 404 / 422 naming the bad value."""
        name = model or self.default
        batcher = self.batchers.get(name)
        if batcher is None:
            raise APIError(404, "unknown_model", f"unknown model {name!r}; this server serves "
                                                 f"{', '.join(self.batchers)} (GET /v1/models)")
        defaults = NMSSettings()
        try:
            nms = NMSSettings(conf=defaults.conf if conf is None else conf, iou=defaults.iou if iou is None else iou)
        except ValueError as error:
            raise APIError(422, "invalid_query", str(error)) from None
        if max_det is not None and not 1 <= max_det <= nms.max_det:
            raise APIError(422, "invalid_query", f"max_det must be between 1 and {nms.max_det}, got {max_det}")
        served = batcher.config.imgsz
        size = served[0] if imgsz is None else imgsz
        if size not in served:
            raise APIError(422, "invalid_query", f"imgsz must be one of {', '.join(map(str, served))} (the sizes "
                                                 f"compiled for {name}), got {imgsz}")
        keep = None
        if classes is not None and classes.strip():
            try:
                keep = frozenset(int(c) for c in classes.strip("[]").split(","))
                if any(c < 0 for c in keep):
                    raise ValueError
            except ValueError:
                raise APIError(422, "invalid_query", f"classes must be class indices separated by commas (e.g. "
                                                     f"classes=0,2), got {classes!r}") from None
        return batcher, RequestSettings(nms=nms, imgsz=size, classes=keep, max_det=max_det)

    async def detect(self, data: bytes, label: str, batcher: Batcher, settings: RequestSettings) -> dict:
        """Decode, pre-process, batch and answer one image."""
        if not self.ready:
            raise APIError(503, "not_ready", "the models are still compiling; retry shortly (GET /health)",
                           {"Retry-After": str(self.config.retry_after)})
        start = time.perf_counter()
        if not data:
            raise APIError(400, "empty_body", "the request has no image bytes")
        loop = asyncio.get_running_loop()
        try:
            pending = await loop.run_in_executor(self._pool, _decode_and_prepare, batcher, data, label, settings)
        except preprocessing.ImageTooLargeError as error:
            raise APIError(413, "image_too_large", str(error)) from None
        except preprocessing.ImageLoadError as error:
            raise APIError(400, "invalid_image", str(error)) from None
        decoded = time.perf_counter()
        try:
            future = batcher.submit_prepared(pending)
        except QueueFull as error:
            raise APIError(503, "busy", f"the server is at capacity ({error}); retry after "
                                        f"{self.config.retry_after} s", {"Retry-After": str(self.config.retry_after)})
        except Closed as error:
            raise APIError(503, "shutting_down", str(error), {"Retry-After": str(self.config.retry_after)})
        remaining = self.config.request_timeout - (time.perf_counter() - start)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), max(remaining, 0.001))
        except asyncio.TimeoutError:
            future.cancel()
            raise APIError(504, "timeout", f"no answer within request_timeout={self.config.request_timeout} s; "
                                           "the server is overloaded") from None
        done = time.perf_counter()
        h, w = result.orig_shape
        return {"model": next(n for n, b in self.batchers.items() if b is batcher), "width": w, "height": h,
                "detections": result.to_list(),
                "time_ms": {"decode": round((decoded - start) * 1e3, 2), "queue_and_device": round((done - decoded) * 1e3, 2),
                            "total": round((done - start) * 1e3, 2)}}


def _decode_and_prepare(batcher: Batcher, data: bytes, label: str, settings: RequestSettings):
    image = preprocessing.read_image_file(io.BytesIO(data), label)
    return batcher.prepare(image, settings, None)


# --- FastAPI ---------------------------------------------------------------------------------------------


def create_app(service: Service, *, manage: bool = True):
    """The FastAPI app of `service`. manage: start (compile) the service when the app starts and close it
    (answering what was accepted) when it stops."""
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if manage:
            service.start(background=True)
        yield
        if manage:
            await asyncio.get_running_loop().run_in_executor(None, service.close)

    app = FastAPI(title="nasjax", summary="YOLO-NAS object detection (JAX)", lifespan=lifespan)

    def error(status: int, kind: str, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": {"status": status, "type": kind, "message": message}}, status, headers=headers)

    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return error(exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
                 + (f" (got {e['input']!r})" if e.get("input") is not None else "") for e in exc.errors()]
        return error(422, "invalid_query", "; ".join(parts))

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        return error(exc.status_code, "http_error", str(exc.detail), getattr(exc, "headers", None))

    @app.get("/health")
    async def health():
        status, body = service.health()
        return JSONResponse(body, status, headers=None if status == 200 else {"Retry-After": str(service.config.retry_after)})

    @app.get("/v1/models")
    async def models():
        return service.models()

    @app.post("/v1/detect")
    async def detect(request: Request,
                     conf: float | None = Query(None, ge=0, le=1, description="confidence threshold"),
                     iou: float | None = Query(None, ge=0, le=1, description="NMS IoU threshold"),
                     classes: str | None = Query(None, description="class indices to keep, e.g. 0,2"),
                     max_det: int | None = Query(None, description="detections per image (at most 300)"),
                     imgsz: int | None = Query(None, description="one of the served input sizes"),
                     model: str | None = Query(None, description="a served model's name (default: the first)")):
        batcher, settings = service.settings_for(model, conf, iou, classes, max_det, imgsz)
        data, label = await read_image_body(request, service.config.max_body_bytes)
        return await service.detect(data, label, batcher, settings)

    return app


async def read_image_body(request, limit: int) -> tuple[bytes, str]:
    """(image bytes, a label for messages) of a multipart `file` field or a raw image body, read with the
    size limit enforced from Content-Length and while reading (a body over it is never held whole)."""
    content_type = request.headers.get("content-type", "").lower()
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith(RAW_TYPES):
        raise APIError(415, "unsupported_media_type",
                       f"unsupported Content-Type {content_type or '(none)'!r}; send multipart/form-data with a "
                       "'file' field, or the image bytes with Content-Type image/* or application/octet-stream")
    declared = request.headers.get("content-length")
    too_large = APIError(413, "body_too_large", f"the request body is over the server's limit of {limit:,} bytes "
                                                "(max_body_mb); send a smaller image")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not multipart:
        return body, "request body"
    request._body = body  # Starlette's form() reads the cached body
    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=limit)
    except Exception as error:  # noqa: BLE001 — python-multipart's parse errors
        raise APIError(400, "invalid_multipart", f"the multipart body cannot be parsed: {error}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise APIError(422, "missing_file", "the multipart body has no file field named 'file' (e.g. curl -F "
                                            "file=@bus.jpg)")
    try:
        return await upload.read(), f"upload {upload.filename or 'file'!r}"
    finally:
        await upload.close()
        await form.close()
