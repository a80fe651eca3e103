"""Video in and out for predict and track: files, webcams and network streams decoded by PyAV (FFmpeg),
annotated H.264 video written by PyAV. Nothing here touches the device.

    nasjax predict model=yolo_nas_s source=clip.mp4                  # annotated clip.mp4 in the run folder
    nasjax predict source=rtsp://cam/1 vid_stride=2 stream_timeout=5 # a live stream, every 2nd frame
    nasjax predict source=cams.streams                               # several streams, one line each

Why it is shaped this way:
- Each source is decoded in its own thread (`FrameReader`), a few frames ahead of the device, so the
  device never waits on the decoder; FFmpeg's decoders and PyAV's conversion release the GIL.
- A file is read whole: its reader blocks when it is ahead. A live source (webcam, stream) is read in
  real time: without `stream_buffer` only its newest frame is kept, older ones are dropped, as
  Ultralytics does, so a slow device shows the present rather than a growing backlog.
- A file that fails part-way (truncated, corrupt) ends with a warning that names the frame; the frames
  before it are predicted and written as usual. A live source that drops is reopened `reconnects`
  times, then ends the same way. Opening a source that cannot be read is an error (`VideoError`) after
  at most `stream_timeout` seconds.
- The annotated video is encoded in a thread of its own (`VideoWriter`) at the source frame rate (over
  `vid_stride`), one output frame per prediction, so its frame count is the number of frames predicted.

docs/video.md says what is read and written, and how each fault ends.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import queue
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

# What `nasjax predict` reads as video, by extension (Ultralytics' list less gif, which is read as an image).
VIDEO_EXTENSIONS = ("asf", "avi", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "webm", "wmv")
# URLs read as live streams (a URL ending in a video extension is read as a file).
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "rtmps://", "http://", "https://", "tcp://", "udp://", "srt://")
STREAMS_SUFFIX = ".streams"  # a text file of sources, one per line, read together (Ultralytics' *.streams)


class VideoError(ValueError):
    """A video source that cannot be opened or read; the message names it and says what to do."""


@dataclasses.dataclass(frozen=True)
class VideoOptions:
    """How video sources are read (predict's vid_stride, stream_buffer, stream_timeout, reconnects)."""

    vid_stride: int = 1  # predict every vid_stride-th frame
    stream_buffer: bool = False  # live sources: keep every frame (True) or only the newest (False)
    timeout: float = 10.0  # seconds to open a source, and to wait for a live source's next data
    reconnects: int = 3  # times a live source that drops is reopened before the run ends it

    def __post_init__(self):
        if not isinstance(self.vid_stride, (int, np.integer)) or self.vid_stride < 1:
            raise ValueError(f"vid_stride must be a positive integer, got {self.vid_stride!r}")
        if not isinstance(self.reconnects, (int, np.integer)) or self.reconnects < 0:
            raise ValueError(f"reconnects must be a non-negative integer, got {self.reconnects!r}")
        if not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ValueError(f"stream_timeout must be a positive number of seconds, got {self.timeout!r}")


def _av():
    try:
        import av
    except ImportError:
        raise ImportError("reading and writing video needs PyAV: pip install 'nasjax[video]'") from None
    return av


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(str(path).split("?")[0]).suffix.lower().lstrip(".") in VIDEO_EXTENSIONS


def is_stream_url(text: str) -> bool:
    return text.lower().startswith(STREAM_SCHEMES)


@dataclasses.dataclass(frozen=True, eq=False)
class VideoInfo:
    """One opened video source, as `Results.video` gives it (None for images). Compared by identity: the
    same file listed twice is two videos."""

    path: str  # the file, URL or webcam as given
    index: int  # the source's position in the run (outputs and trackers are kept per source)
    fps: float  # frames per second of the source
    width: int
    height: int
    frames: int | None  # frames the file declares (None for live sources or when unknown)
    live: bool  # a webcam or network stream
    vid_stride: int = 1

    @property
    def output_fps(self) -> float:
        """Frame rate of the annotated video: one output frame per predicted frame, same duration."""
        return self.fps / self.vid_stride


class Source:
    """A video file, a webcam (an integer index) or a network stream URL; `open()` gives a PyAV container."""

    def __init__(self, spec: str | int, index: int = 0):
        self.index = index
        if isinstance(spec, (int, np.integer)) or (isinstance(spec, str) and spec.isdigit()):
            self.kind, self.path = "webcam", str(int(spec))
        elif isinstance(spec, str) and is_stream_url(spec) and not is_video_file(spec):
            self.kind, self.path = "stream", spec
        else:
            self.kind, self.path = "file", os.fspath(spec)
        self.live = self.kind != "file"

    @property
    def label(self) -> str:
        return f"webcam {self.path}" if self.kind == "webcam" else self.path

    def __repr__(self) -> str:
        return f"Source({self.label})"

    def open(self, options: VideoOptions):
        av = _av()
        kwargs: dict = {}
        if self.kind == "webcam":
            if sys.platform.startswith("linux"):
                target, kwargs["format"] = f"/dev/video{self.path}", "v4l2"
            elif sys.platform == "darwin":
                target, kwargs["format"] = self.path, "avfoundation"
            else:
                raise VideoError(f"a webcam by number is read on Linux and macOS only; on {sys.platform} give the "
                                 "camera's stream URL or a video file instead")
        else:
            target = self.path
            if self.kind == "file" and not Path(target).is_file() and not is_stream_url(target):
                raise VideoError(f"video file not found: {target}")
        if self.kind != "file" or is_stream_url(target):
            kwargs["timeout"] = (options.timeout, options.timeout)
            if target.lower().startswith(("rtsp://", "rtsps://")):
                kwargs["options"] = {"rtsp_transport": "tcp"}
        try:
            container = av.open(target, **kwargs)
        except av.FFmpegError as error:
            raise VideoError(self._explain(error)) from None
        except OSError as error:
            raise VideoError(f"cannot open {self.label}: {error.strerror or error}") from None
        if not container.streams.video:
            container.close()
            raise VideoError(f"{self.label} holds no video stream; nasjax reads videos "
                             f"({', '.join(VIDEO_EXTENSIONS)}), webcams and stream URLs")
        return container

    def _explain(self, error) -> str:
        text = f"{type(error).__name__}: {getattr(error, 'strerror', None) or error}"
        if self.kind == "webcam":
            return f"cannot open webcam {self.path}: {text}; check that the camera is connected and free"
        if self.kind == "stream" or is_stream_url(self.path):
            return f"cannot open stream {self.path} (waited up to the stream_timeout): {text}; check the URL and the network"
        return (f"cannot read video {self.path}: {text}; the file is truncated or not a video nasjax reads "
                f"({', '.join(VIDEO_EXTENSIONS)}, any codec FFmpeg decodes)")

    def info(self, container, options: VideoOptions) -> VideoInfo:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or 30
        frames = int(stream.frames or 0)
        if not frames and not self.live:
            seconds = (float(container.duration) / 1e6 if container.duration else
                       float(stream.duration * stream.time_base) if stream.duration else 0.0)
            frames = round(seconds * float(rate))
        return VideoInfo(self.path, self.index, float(rate), stream.codec_context.width, stream.codec_context.height,
                         frames or None if not self.live else None, self.live, options.vid_stride)


class Frame(NamedTuple):
    """One decoded frame: (H, W, 3) uint8 RGB, its 0-based index in the source, its time in seconds."""

    image: np.ndarray
    index: int
    timestamp: float
    video: VideoInfo


class Notice(NamedTuple):
    """A warning from a reader thread, given to the caller's thread to raise (warnings are per thread)."""

    message: str


def _decoded(container, stream) -> Iterator:
    """The frames of `stream`; when reading fails (a file cut short or corrupt, a stream that drops),
    first the frames the decoder still holds (a threaded decoder holds a few), then the error."""
    av = _av()
    try:
        yield from container.decode(stream)
    except (av.FFmpegError, OSError):
        try:
            yield from stream.decode(None)  # flush: frames of packets read before the fault
        except (av.FFmpegError, OSError):
            pass  # a decoder that failed itself has nothing more to give
        raise


def decode(source: Source, options: VideoOptions, container=None) -> Iterator[Frame | Notice]:
    """Every vid_stride-th frame of `source`, reopening a live source that drops `options.reconnects`
    times; a fault after the first frame ends it with a `Notice` instead of an error."""
    av = _av()
    container = container or source.open(options)
    info = source.info(container, options)
    index, reconnects = 0, 0  # index counts every decoded frame, across reconnects
    while True:
        error = None
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in _decoded(container, stream):
                if index % options.vid_stride == 0:
                    timestamp = float(frame.time) if frame.time is not None and not source.live else index / info.fps
                    yield Frame(frame.to_ndarray(format="rgb24"), index, timestamp, info)
                index += 1
        except (av.FFmpegError, OSError) as e:
            error = f"{type(e).__name__}: {getattr(e, 'strerror', None) or e}"
        finally:
            container.close()
        if not source.live:
            if error:
                yield Notice(f"{source.label}: decoding stopped at frame {index} ({error}); the {index} frames "
                             "before it were predicted and written")
            elif info.frames and index < info.frames - 1:
                yield Notice(f"{source.label}: the video ended at frame {index} of the {info.frames} it declares "
                             "(truncated or corrupt); the frames before it were predicted and written")
            return
        while True:  # a live source ended or failed: reopen it, a bounded number of times
            if reconnects >= options.reconnects:
                yield Notice(f"{source.label}: the stream dropped ({error or 'no more data'}) and was not back after "
                             f"{reconnects} reconnects; stopped after frame {index}, outputs finalised")
                return
            reconnects += 1
            yield Notice(f"{source.label}: the stream dropped ({error or 'no more data'}) after frame {index}; "
                         f"reconnecting ({reconnects} of {options.reconnects})")
            time.sleep(min(1.0, options.timeout))
            try:
                container = source.open(options)
                break
            except VideoError as e:
                error = str(e)


_DONE = object()


class FrameReader:
    """Frames of one or more sources, each decoded in its own thread. Files are read whole, a few frames
    ahead; live sources keep only their newest frame unless options.stream_buffer. Frames of several
    sources come as they are ready (each source's in order). Iterate once; `close()` stops the threads."""

    def __init__(self, sources: list[Source], options: VideoOptions, ahead: int = 16):
        self._options = options
        self._cond = threading.Condition()
        self._queues = [collections.deque() for _ in sources]
        self._limits = [1 if s.live and not options.stream_buffer else max(ahead, 1) for s in sources]
        self._drop = [s.live and not options.stream_buffer for s in sources]
        self._live = any(s.live for s in sources)
        self._done = [False] * len(sources)
        self._stop = False
        self._next = 0
        # Every source is opened here, in the caller's thread, so a source that cannot be opened is an
        # error before any frame is predicted.
        containers = []
        try:
            for source in sources:
                containers.append(source.open(options))
        except BaseException:
            for container in containers:
                container.close()
            raise
        self._threads = [threading.Thread(target=self._read, args=(i, s, c), daemon=True, name=f"nasjax-video{i}")
                         for i, (s, c) in enumerate(zip(sources, containers))]
        for thread in self._threads:
            thread.start()

    def _read(self, i: int, source: Source, container) -> None:
        try:
            for item in decode(source, self._options, container):
                with self._cond:
                    while not self._drop[i] and len(self._queues[i]) >= self._limits[i] and not self._stop:
                        self._cond.wait()
                    if self._stop:
                        return
                    if self._drop[i] and isinstance(item, Frame):
                        frames = [x for x in self._queues[i] if isinstance(x, Frame)]
                        if len(frames) >= self._limits[i]:
                            self._queues[i].remove(frames[0])
                    self._queues[i].append(item)
                    self._cond.notify_all()
        except BaseException as error:  # noqa: BLE001 — handed to the caller's thread
            with self._cond:
                self._queues[i].append(error)
        finally:
            with self._cond:
                self._done[i] = True
                self._cond.notify_all()

    def __iter__(self) -> Iterator[Frame | Notice]:
        return self.iter()

    def iter(self, idle=None) -> Iterator:
        """The frames and notices; with `idle` given, yields it once whenever a live source has nothing
        ready after something was delivered (the caller can send what it has instead of waiting)."""
        delivered = False
        try:
            while True:
                with self._cond:
                    ready = [k for k in range(len(self._queues)) if self._queues[k]]
                    if not ready and idle is not None and delivered and self._live and not all(self._done):
                        delivered = False
                        item = idle
                    else:
                        while not ready and not all(self._done):
                            self._cond.wait()
                            ready = [k for k in range(len(self._queues)) if self._queues[k]]
                        if not ready:
                            return
                        # Round robin over the sources that have something, so one fast stream cannot starve the rest.
                        k = min(ready, key=lambda j: (j - self._next) % len(self._queues))
                        self._next = k + 1
                        item = self._queues[k].popleft()
                        delivered = True
                        self._cond.notify_all()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()


def read_streams_file(path: str | os.PathLike) -> list[str]:
    """The sources listed in a *.streams file: one per line; blank lines and # comments skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise VideoError(f"cannot read the streams file {path}: {error}") from None
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    sources = [line for line in lines if line]
    if not sources:
        raise VideoError(f"{path} lists no streams; write one URL, webcam number or video file per line")
    return sources


# --- writing -----------------------------------------------------------------------------------------


class VideoWriter:
    """An H.264 MP4 written frame by frame in a thread of its own; `close()` finishes the file. Frames are
    (H, W, 3) uint8 RGB of one size; odd sides get one black row or column (yuv420p needs even sides)."""

    def __init__(self, path: str | os.PathLike, fps: float, width: int, height: int, codec: str = "libx264",
                 options: dict | None = None, ahead: int = 8):
        av = _av()
        self.path = Path(path)
        self.frames = 0
        self._size = (height, width)
        self._even = (height + height % 2, width + width % 2)
        self._container = av.open(str(self.path), "w", format="mp4")
        try:
            rate = Fraction(fps).limit_denominator(1001 * 1000)
            self._stream = self._container.add_stream(codec, rate=rate)
            self._stream.height, self._stream.width = self._even
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"preset": "veryfast", "crf": "23", **(options or {})}
            self._stream.codec_context.time_base = 1 / rate
        except BaseException:
            self._container.close()
            raise
        self._queue: queue.Queue = queue.Queue(maxsize=ahead)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encode, daemon=True, name="nasjax-video-writer")
        self._thread.start()

    def _encode(self) -> None:
        av = _av()
        pts = 0
        while True:
            image = self._queue.get()
            if image is _DONE:
                break
            if self._error is not None:
                continue  # keep draining, so that write() never blocks on a dead writer
            try:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = pts
                pts += 1
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            except BaseException as error:  # noqa: BLE001 — raised again by write() / close()
                self._error = error

    def write(self, image: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        if image.shape[:2] != self._size:
            raise ValueError(f"frame of {image.shape[1]}x{image.shape[0]} written to a {self._size[1]}x{self._size[0]} video {self.path}")
        if self._even != self._size:
            padded = np.zeros((*self._even, 3), np.uint8)
            padded[: image.shape[0], : image.shape[1]] = image
            image = padded
        self._queue.put(np.ascontiguousarray(image))
        self.frames += 1

    def close(self) -> None:
        """Encode what is queued, flush the encoder and write the MP4's index; raises a failure of any
        of it (the file is then incomplete and the caller discards it)."""
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        try:
            if self._error is None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        except BaseException as error:  # noqa: BLE001
            self._error = error
        finally:
            self._container.close()
        if self._error is not None:
            raise self._error


def count_frames(path: str | os.PathLike) -> tuple[int, float]:
    """(frames decoded, frames per second) of a video file: what tests and users check an output with."""
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for _ in container.decode(stream)), float(stream.average_rate or 0)
