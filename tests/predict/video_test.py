"""Video sources for predict (nasjax/predict/video.py): files of each container, exactness against the
same frames given as arrays, vid_stride, lazy streaming, folders mixing images and videos, files that
are not videos or fail part-way, live HTTP streams (unreachable, silent, dropping, several from a
*.streams file, real-time frame dropping), a missing webcam, and the annotated-video writer.

Every clip is made here with PyAV into tmp_path (nothing committed). The real random-weight
yolo_nas_s runs where the predictions are the point (imgsz 64, batch 8 everywhere: one compilation per
module); elsewhere a cheap fake detector whose score is the mean pixel value of the network input.
"""
from __future__ import annotations

import http.server
import re
import threading
import time
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from local_http import http_server, refused_url
from PIL import Image

import nasjax
from nasjax.data.preprocessing import ImageLoadError
from nasjax.model.core import COCO_PREPROCESSING
from nasjax.model.nms import Detections
from nasjax.predict import video
from nasjax.predict.predictor import predict
from nasjax.predict.video import VideoError

av = pytest.importorskip("av")

W, H, FPS = 96, 64, 25
IMGSZ, BATCH = 64, 8


# --- clips, models ---------------------------------------------------------------------------------


def pattern(i: int, w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    """Frame i of a clip: gradients, a colour that changes every frame and a moving red square."""
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // w, y * 255 // h, np.full_like(x, (i * 7 + seed * 50) % 256)], -1).astype(np.uint8)
    s = (i * 3 + seed * 11) % (w - 20)
    image[h // 3: h // 3 + 20, s: s + 20] = (250, 30, 30)
    return image


def write_clip(path: Path, frames: int = 24, codec: str = "libx264", fmt: str | None = None,
               options: dict | None = None, seed: int = 0, fps: int = FPS) -> Path:
    with av.open(str(path), "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pattern(i, seed=seed), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def decoded(path) -> tuple[list[np.ndarray], list[float]]:
    """Every frame of a clip and its time, decoded here with PyAV (not by nasjax)."""
    images, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                images.append(frame.to_ndarray(format="rgb24"))
                times.append(float(frame.time))
        except av.FFmpegError:
            pass
    return images, times


class FakeDetector:
    """The batch interface (nasjax.model.core.BatchDetector) without a network: one box per image whose
    score is the mean of the network input / 255, so equal scores mean equal images. `delay` seconds
    per batch makes a slow consumer."""

    config = None
    preprocessing = COCO_PREPROCESSING
    class_names = ("thing",)
    num_classes = 1

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.images = 0
        self.batches: list[int] = []  # the batch size of every call

    def batch_size_for(self, requested: int) -> int:
        return requested

    def detect_batch(self, images: np.ndarray, settings, dtype=None) -> Detections:
        time.sleep(self.delay)
        b = len(images)
        self.images += b
        self.batches.append(b)
        boxes = np.tile(np.array([[[4.0, 4.0, 40.0, 40.0]]], np.float32), (b, 1, 1))
        scores = images.reshape(b, -1).astype(np.float64).mean(1).astype(np.float32)[:, None] / 255
        return Detections(boxes, scores, np.zeros((b, 1), np.int32), np.ones(b, np.int32))


@pytest.fixture(scope="module")
def model():
    return nasjax.build("yolo_nas_s")


def fake_predict(source, **options):
    return predict(FakeDetector(), source, imgsz=IMGSZ, batch_size=BATCH, **options)


def real_predict(model, source, **options):
    return predict(model, source, imgsz=IMGSZ, batch_size=BATCH, conf=0.01, **options)


def assert_same_predictions(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert len(g.boxes) == len(w.boxes) > 0
        np.testing.assert_allclose(g.boxes.xyxy, w.boxes.xyxy, atol=1e-3, rtol=0)
        np.testing.assert_allclose(g.boxes.conf, w.boxes.conf, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(g.boxes.cls, w.boxes.cls)


def video_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nasjax-video") and t.is_alive()]


def wait_for_no_video_threads(seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while video_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not video_threads(), f"reader threads left running: {video_threads()}"


# --- reading files -----------------------------------------------------------------------------------


CONTAINERS = [("mp4", "libx264"), ("mkv", "libx264"), ("avi", "mpeg4"), ("mov", "libx264"), ("webm", "libvpx-vp9"),
              ("webm", "libvpx")]


@pytest.mark.parametrize("suffix, codec", CONTAINERS, ids=[f"{s}-{c}" for s, c in CONTAINERS])
def test_each_container_gives_every_frame_with_index_and_time(tmp_path, suffix, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV has no {codec} encoder")
    path = write_clip(tmp_path / f"clip.{suffix}", frames=20, codec=codec)
    images, times = decoded(path)
    assert len(images) == 20
    results = fake_predict(path)
    assert [r.frame for r in results] == list(range(20))
    np.testing.assert_allclose([r.timestamp for r in results], times, atol=1e-6)
    np.testing.assert_allclose([r.timestamp for r in results], np.arange(20) / FPS, atol=1e-3)
    for r, image in zip(results, images):
        assert r.path == str(path) and r.orig_shape == (H, W)
        np.testing.assert_array_equal(r.orig_img, image)
    info = results[0].video
    assert all(r.video is info for r in results)
    assert (info.path, info.index, info.width, info.height, info.live) == (str(path), 0, W, H, False)
    assert info.fps == pytest.approx(FPS) and info.frames == 20
    assert repr(results[3]).startswith(f"Results(clip.{suffix} frame 3 {W}x{H}")


def test_video_predictions_equal_predictions_on_the_decoded_frames(tmp_path, model):
    """The frames of a video go through exactly the image pipeline: the same detections as the same
    frames, decoded here, given as arrays (30 frames: the last batch of 8 is padded)."""
    path = write_clip(tmp_path / "clip.mp4", frames=30)
    images, times = decoded(path)
    got = real_predict(model, str(path))
    want = real_predict(model, images)
    assert [r.frame for r in got] == list(range(30))
    assert [r.timestamp for r in got] == pytest.approx(times)
    assert_same_predictions(got, want)


def test_vid_stride_predicts_every_nth_frame(tmp_path):
    path = write_clip(tmp_path / "clip.mp4", frames=20)
    images, times = decoded(path)
    results = fake_predict(path, vid_stride=3)
    assert [r.frame for r in results] == [0, 3, 6, 9, 12, 15, 18]
    assert [r.timestamp for r in results] == pytest.approx([times[i] for i in range(0, 20, 3)])
    for r in results:
        np.testing.assert_array_equal(r.orig_img, images[r.frame])
    assert results[0].video.vid_stride == 3 and results[0].video.output_fps == pytest.approx(FPS / 3)
    with pytest.raises(ValueError, match="vid_stride"):
        fake_predict(path, vid_stride=0)


def test_stream_true_is_lazy_and_closing_it_stops_the_reader(tmp_path, monkeypatch):
    """stream=True: the first Results comes while most of a 300-frame clip is still undecoded (the
    reader runs a bounded way ahead); closing the generator ends the reader thread."""
    path = write_clip(tmp_path / "long.mp4", frames=300)
    decoded_frames = []
    real_decode = video.decode

    def counting_decode(*args, **kwargs):
        for item in real_decode(*args, **kwargs):
            if isinstance(item, video.Frame):
                decoded_frames.append(item.index)
            yield item

    monkeypatch.setattr(video, "decode", counting_decode)
    detector = FakeDetector()
    results = predict(detector, str(path), imgsz=IMGSZ, batch_size=2, stream=True)
    assert not hasattr(results, "__len__") and detector.images == 0  # a generator: nothing done yet
    first = next(results)
    assert first.frame == 0
    time.sleep(0.3)  # let the reader run as far ahead as it may
    assert len(decoded_frames) < 100, f"{len(decoded_frames)} of 300 frames decoded for the first result"
    assert video_threads()
    results.close()
    wait_for_no_video_threads()
    assert len(decoded_frames) < 100


def test_a_folder_mixing_images_and_videos_and_a_glob(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    write_clip(folder / "a.mp4", frames=5)
    Image.fromarray(pattern(0, 50, 40, seed=1)).save(folder / "b.png")
    Image.fromarray(pattern(0, 30, 60, seed=2)).save(folder / "c.jpg")
    write_clip(folder / "d.mkv", frames=4, seed=3)
    (folder / "notes.txt").write_text("not media")
    results = fake_predict(folder)
    got = [(Path(r.path).name, r.frame) for r in results]
    a_frames, d_frames = [("a.mp4", i) for i in range(5)], [("d.mkv", i) for i in range(4)]
    assert got == a_frames + [("b.png", None), ("c.jpg", None)] + d_frames
    assert [r.video.index for r in results if r.video] == [0] * 5 + [1] * 4
    assert results[5].video is None and results[5].orig_shape == (40, 50)
    d_images, _ = decoded(folder / "d.mkv")
    for r, image in zip(results[7:], d_images):
        np.testing.assert_array_equal(r.orig_img, image)

    results = fake_predict(str(folder / "[ad]*"))
    assert [(Path(r.path).name, r.frame) for r in results] == a_frames + d_frames


# --- what is not a video -----------------------------------------------------------------------------


def test_an_unknown_container_lists_the_formats_read(tmp_path):
    path = tmp_path / "x.xyz"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError) as raised:  # ImageLoadError is a ValueError
        fake_predict(path)
    assert isinstance(raised.value, ImageLoadError)
    message = str(raised.value)
    assert "x.xyz" in message and "png" in message and "jpg" in message and "mp4" in message and "mkv" in message


def test_a_garbage_mp4_is_a_video_error_naming_file_and_formats(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\x00garbage, not a video" * 200)
    with pytest.raises(VideoError) as raised:
        fake_predict(path)
    message = str(raised.value)
    assert str(path) in message and "mp4" in message and "webm" in message and "mkv" in message


def test_a_missing_video_file_is_a_video_error(tmp_path):
    with pytest.raises(VideoError, match="not found.*gone.mp4"):
        fake_predict(tmp_path / "gone.mp4")


def test_an_mp4_cut_before_its_index_cannot_be_opened(tmp_path):
    """A normally written MP4 has its index (moov) at the end: cut short, it cannot be opened at all, an
    error naming it before anything is predicted."""
    intact = write_clip(tmp_path / "intact.mp4", frames=60)
    cut = tmp_path / "cut.mp4"
    data = intact.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    detector = FakeDetector()
    with pytest.raises(VideoError, match=re.escape(str(cut))):
        predict(detector, cut, imgsz=IMGSZ, batch_size=BATCH)
    assert detector.images == 0


def test_skip_errors_skips_a_video_that_cannot_be_opened(tmp_path):
    write_clip(tmp_path / "a.mp4", frames=5)
    (tmp_path / "b.mp4").write_bytes(b"\x00garbage, not a video" * 200)
    write_clip(tmp_path / "c.mp4", frames=4)
    with pytest.warns(UserWarning, match=r"skipped .*b\.mp4"):
        results = fake_predict(tmp_path, skip_errors=True)
    assert [(Path(r.path).name, r.frame) for r in results] == [("a.mp4", k) for k in range(5)] + [("c.mp4", k) for k in range(4)]


def corrupt_mp4(tmp_path, intact: Path) -> Path:
    data = bytearray(intact.read_bytes())
    middle = len(data) // 2
    data[middle: middle + 2000] = b"\xff" * 2000
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    return path


def truncated(tmp_path, intact: Path, name: str) -> Path:
    data = intact.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


FAULTS = {
    # (container of the intact clip, muxer options, how it is damaged, the warning expected)
    "mp4-overwritten": ("mp4", None, corrupt_mp4, r"decoding stopped at frame (\d+)"),
    "mkv-truncated": ("mkv", None, lambda tmp, p: truncated(tmp, p, "cut.mkv"),
                      r"ended at frame (\d+) of the 60 it declares"),
    "mp4-faststart-truncated": ("mp4", {"movflags": "+faststart"}, lambda tmp, p: truncated(tmp, p, "cut.mp4"),
                                r"(?:decoding stopped at|ended at) frame (\d+)"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_video_failing_part_way_keeps_every_frame_before_the_fault(tmp_path, model, fault):
    """Frames before the fault are all predicted, exactly as in the intact clip; a warning names the
    file and the frame; nothing is raised."""
    suffix, options, damage, warning = FAULTS[fault]
    intact = write_clip(tmp_path / f"intact.{suffix}", frames=60, options=options)
    damaged = damage(tmp_path, intact)
    with pytest.warns(UserWarning, match=warning) as record:
        got = real_predict(model, damaged)
    messages = [str(w.message) for w in record if re.search(warning, str(w.message))]
    assert len(messages) == 1 and str(damaged) in messages[0]
    n = int(re.search(warning, messages[0]).group(1))
    assert 0 < n < 60 and len(got) == n
    assert [r.frame for r in got] == list(range(n))
    want = real_predict(model, decoded(intact)[0][:n])
    assert_same_predictions(got, want)


def test_a_run_goes_on_after_a_video_that_fails_part_way(tmp_path):
    """In a folder, the files after a damaged video are predicted as usual."""
    folder = tmp_path / "media"
    folder.mkdir()
    intact = write_clip(tmp_path / "intact.mkv", frames=60)
    damaged = truncated(folder, intact, "a.mkv")
    Image.fromarray(pattern(0, seed=4)).save(folder / "b.png")
    write_clip(folder / "c.mp4", frames=6, seed=5)
    with pytest.warns(UserWarning, match=r"a\.mkv: the video ended at frame (\d+)"):
        results = fake_predict(folder)
    names = [Path(r.path).name for r in results]
    n = names.count("a.mkv")
    assert 0 < n < 60 and names == ["a.mkv"] * n + ["b.png"] + ["c.mp4"] * 6
    assert [r.frame for r in results[n + 1:]] == list(range(6)) and results[n + 1].video.index == 1
    assert str(damaged) == results[0].path


# --- live streams over HTTP ------------------------------------------------------------------------


def ts_clip(tmp_path, name: str, frames: int = 50, seed: int = 0) -> bytes:
    return write_clip(tmp_path / name, frames=frames, fmt="mpegts", seed=seed).read_bytes()


def serving(routes: dict[str, bytes], hang: threading.Event | None = None):
    """An HTTP handler serving each route's bytes, then closing; /hang accepts and never answers."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path == "/hang":
                hang.wait(20)
                return
            data = routes.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            self.wfile.write(data)

    return Handler


def frames_in(data: bytes, tmp_path, name: str) -> list[np.ndarray]:
    path = tmp_path / name
    path.write_bytes(data)
    return decoded(path)[0]


def test_an_unreachable_stream_is_an_error_naming_it_quickly():
    url = refused_url("live")
    start = time.monotonic()
    with pytest.raises(VideoError, match=re.escape(url)):
        next(fake_predict(url, stream=True, stream_timeout=2))
    assert time.monotonic() - start < 3
    wait_for_no_video_threads()


def test_a_stream_that_never_answers_is_an_error_after_the_timeout():
    hang = threading.Event()
    try:
        with http_server(serving({}, hang)) as base:
            url = f"{base}/hang"
            start = time.monotonic()
            with pytest.raises(VideoError, match=re.escape(url)):
                next(fake_predict(url, stream=True, stream_timeout=1))
            elapsed = time.monotonic() - start
    finally:
        hang.set()
    assert 0.8 < elapsed < 4, elapsed


def test_a_stream_that_keeps_dropping_is_reopened_a_bounded_number_of_times(tmp_path):
    data = ts_clip(tmp_path, "live.ts")
    part = data[: len(data) // 2 // 188 * 188]  # whole TS packets: each connection ends cleanly mid-clip
    per_connection = len(frames_in(part, tmp_path, "part.ts"))
    assert per_connection > 10
    with http_server(serving({"/live": part})) as base:
        url = f"{base}/live"
        start = time.monotonic()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            results = list(fake_predict(url, stream=True, stream_buffer=True, reconnects=2, stream_timeout=2))
        elapsed = time.monotonic() - start
    messages = [str(w.message) for w in record if url in str(w.message)]
    assert any("reconnecting (1 of 2)" in m for m in messages), messages
    assert any("reconnecting (2 of 2)" in m for m in messages), messages
    assert "was not back after 2 reconnects" in messages[-1], messages
    assert not any("reconnecting (3" in m for m in messages)
    # Every connection's frames, numbered on across reconnects, each a frame of the clip.
    assert [r.frame for r in results] == list(range(3 * per_connection))
    assert all(r.video.live and r.video.frames is None and r.path == url for r in results)
    assert [r.timestamp for r in results] == pytest.approx([r.frame / FPS for r in results])
    images = frames_in(part, tmp_path, "part.ts")
    for r in results:
        np.testing.assert_array_equal(r.orig_img, images[r.frame % per_connection])
    assert elapsed < 10
    wait_for_no_video_threads()


def test_a_streams_file_reads_its_streams_together(tmp_path):
    clips = {"/cam/a": ts_clip(tmp_path, "a.ts", frames=30, seed=1),
             "/cam/b": ts_clip(tmp_path, "b.ts", frames=20, seed=2)}
    with http_server(serving(clips)) as base:
        urls = [f"{base}/cam/a", f"{base}/cam/b"]
        streams = tmp_path / "cams.streams"
        streams.write_text(f"# two cameras\n{urls[0]}\n\n{urls[1]}  # the second\n")
        assert video.read_streams_file(streams) == urls
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            results = list(fake_predict(streams, stream=True, stream_buffer=True, reconnects=0, stream_timeout=2))
    assert {r.video.index for r in results} == {0, 1}
    ends = [str(w.message) for w in record if "was not back after 0 reconnects" in str(w.message)]
    assert [sum(m.startswith(url + ": ") for m in ends) for url in urls] == [1, 1], ends
    for index, (url, route) in enumerate(zip(urls, clips)):
        mine = [r for r in results if r.video.index == index]
        images = decoded(tmp_path / Path(route).with_suffix(".ts").name)[0]
        assert [r.frame for r in mine] == list(range(len(images))), url  # every frame, in order
        assert all(r.path == url and r.video.path == url for r in mine)
        for r in mine:
            np.testing.assert_array_equal(r.orig_img, images[r.frame])


def test_an_empty_streams_file_is_an_error(tmp_path):
    streams = tmp_path / "none.streams"
    streams.write_text("# nothing\n\n")
    with pytest.raises(VideoError, match="lists no streams"):
        fake_predict(streams)


def predict_live(tmp_path, detector, frames: int, batch_size: int) -> list:
    """`detector`'s results over a TS clip of `frames` served whole at a URL without a video extension
    (a live source: newest frame only), read once (reconnects=0)."""
    data = ts_clip(tmp_path, "live.ts", frames=frames)
    with http_server(serving({"/live": data})) as base, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(predict(detector, f"{base}/live", imgsz=IMGSZ, batch_size=batch_size, stream=True,
                            reconnects=0, stream_timeout=2))


def test_a_live_stream_without_buffer_keeps_the_newest_frame_for_a_slow_consumer(tmp_path):
    """The whole clip arrives at once; the model takes 0.1 s a frame: only a few frames are predicted,
    in order, each the newest at the time (real time, as Ultralytics)."""
    detector = FakeDetector(delay=0.1)
    results = predict_live(tmp_path, detector, frames=50, batch_size=1)
    frames = [r.frame for r in results]
    assert 0 < len(frames) < 25 and frames == sorted(set(frames)), frames


def test_short_batches_of_a_live_source_run_at_a_power_of_two(tmp_path):
    """A live source's batches are cut short rather than wait for frames; each runs at the next power of
    two, not padded to batch_size (a padded row costs a real one's compute on a CPU). Files keep the one
    compiled shape."""
    detector = FakeDetector(delay=0.01)
    results = predict_live(tmp_path, detector, frames=30, batch_size=8)
    assert results and set(detector.batches) <= {1, 2, 4, 8} and min(detector.batches) < 8, detector.batches
    detector = FakeDetector()
    predict(detector, write_clip(tmp_path / "file.mp4", frames=11), imgsz=IMGSZ, batch_size=8)
    assert detector.batches == [8, 8]


# --- webcams -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [9, "9"])
def test_a_missing_webcam_is_an_error_naming_it(source):
    if Path("/dev/video9").exists():
        pytest.skip("this machine has a /dev/video9")
    start = time.monotonic()
    with pytest.raises(VideoError, match="webcam 9"):
        next(fake_predict(source, stream=True, stream_timeout=2))
    assert time.monotonic() - start < 3
    with pytest.warns(UserWarning, match="stream=True"), pytest.raises(VideoError, match="webcam 9"):
        fake_predict(source)


# --- writing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [30, 30000 / 1001, 12.5])
def test_video_writer_writes_every_frame_at_the_given_rate(tmp_path, fps):
    path = tmp_path / "out.mp4"
    width, height = 97, 63  # odd: padded to 98x64 for yuv420p
    writer = video.VideoWriter(path, fps, width, height)
    frames = [pattern(i, width, height) for i in range(15)]
    for frame in frames:
        writer.write(frame)
    with pytest.raises(ValueError, match="96x64"):
        writer.write(pattern(0))
    writer.close()
    assert writer.frames == 15
    count, rate = video.count_frames(path)
    assert count == 15
    assert rate == pytest.approx(fps, rel=1e-9)
    images, _ = decoded(path)
    assert images[0].shape == (64, 98, 3)
    # Lossy, but the picture is there: top-left region close to what was written, the padding black.
    assert np.abs(images[5][:height, :width].astype(int) - frames[5]).mean() < 6
    assert images[5][height:, :].mean() < 20 and images[5][:, width:].mean() < 20


def test_video_options_are_checked():
    with pytest.raises(ValueError, match="reconnects"):
        video.VideoOptions(reconnects=-1)
    with pytest.raises(ValueError, match="stream_timeout"):
        video.VideoOptions(timeout=0)
    assert Fraction(30000, 1001) == Fraction(30000 / 1001).limit_denominator(1001 * 1000)
