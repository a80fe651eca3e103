"""track(): tracking on top of predict (nasjax/predict/track.py), scored with motmetrics.

A generated H.264 clip (written into tmp_path with PyAV) holds three coloured rectangles on straight
paths, two of them passing each other 4 px apart; the ground-truth boxes are known per frame. A fake
detector (the batch interface predict calls, nasjax.model.core.BatchDetector) finds the rectangles in
the pre-processed network input by colour, so the whole video pipeline (decoding, letterbox, batching,
boxes mapped back, tracker per video) runs without a compiled network; random weights would detect
nothing meaningful. One test runs the real network (random weights) end to end.

The measured figures (ByteTrack, 75 frames, 3 objects), printed by
    .venv/bin/python -m pytest -q -s tests/predict/track_test.py -k metrics
clean detections: MOTA 0.9857, IDF1 0.9928, 0 ID switches (3 misses: each object's first frame, before
its track is confirmed); noisy (jitter, 6 % dropped, 20 % low-confidence, false positives): MOTA
0.9190, IDF1 0.9578, 0 ID switches. Ultralytics' own BYTETracker (bytetrack.yaml) on the same noisy
detections scores the same (it confirms tracks on the very first frame, so clean: MOTA 0.9952).
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")
mm = pytest.importorskip("motmetrics")

import nasjax
from nasjax.detector import PipelineMethods
from nasjax.model import nms
from nasjax.predict import predict
from nasjax.predict import track as track_module
from nasjax.predict.results import Boxes, Results
from nasjax.predict.track import Tracking, TrackerSpec, track
from nasjax.weights.registry import COCO_PREPROCESSING

WIDTH, HEIGHT, FPS, FRAMES = 160, 96, 30, 75
BACKGROUND = 100
COLOURS = [(225, 30, 30), (30, 200, 40), (40, 50, 225)]  # class 0 red, 1 green, 2 blue
NAMES = ["red", "green", "blue"]
OPTIONS = dict(imgsz=160, preprocess="letterbox", batch_size=8)


# --- the clip ----------------------------------------------------------------------------------------


def object_boxes(frame: int) -> dict[int, tuple[int, int, int, int]]:
    """Ground truth of one frame: {object id: (x1, y1, x2, y2)} (pixel edges, x2 / y2 exclusive)."""
    t = frame / (FRAMES - 1)
    boxes = {
        1: (round(4 + 130 * t), 18, 22, 14),  # red, left to right
        2: (round(134 - 130 * t), 36, 22, 14),  # green, right to left, 4 px below red: they pass
    }
    if frame >= 15:  # blue enters later, diagonally
        s = (frame - 15) / (FRAMES - 1 - 15)
        boxes[3] = (round(30 + 90 * s), round(74 - 16 * s), 16, 16)
    return {k: (x, y, x + w, y + h) for k, (x, y, w, h) in boxes.items()}


def clip_image(frame: int) -> np.ndarray:
    image = np.full((HEIGHT, WIDTH, 3), BACKGROUND, np.uint8)
    for object_id, (x1, y1, x2, y2) in object_boxes(frame).items():
        image[y1:y2, x1:x2] = COLOURS[object_id - 1]
    return image


def write_clip(path, frames: int = FRAMES) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(clip_image(i), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("track") / "clip.mp4"
    write_clip(path)
    return path


# --- a detector that sees colours ----------------------------------------------------------------------


class ColourDetector(PipelineMethods):
    """The batch interface of nasjax.model.core.BatchDetector: each rectangle found by its colour in the
    network input. With `noise`, boxes are jittered, some dropped, confidences spread (some below
    ByteTrack's high threshold) and low-confidence false positives added, from a seeded generator
    (batches come in frame order, so the noise is the same every run)."""

    class_names = NAMES
    num_classes = len(NAMES)
    preprocessing = COCO_PREPROCESSING

    def __init__(self, noise: bool = False, seed: int = 0):
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def batch_size_for(self, requested: int) -> int:
        return int(requested)

    def find(self, image: np.ndarray) -> list[tuple[list[float], float, int]]:
        found = []
        pixels = image.astype(np.int32)
        for cls, colour in enumerate(COLOURS):
            mask = np.abs(pixels - np.array(colour)).sum(-1) < 90
            rows, cols = np.flatnonzero(mask.sum(1) >= 3), np.flatnonzero(mask.sum(0) >= 3)
            if len(rows) and len(cols):
                found.append(([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], 0.9, cls))
        if not self.noise or not image.any():  # padding rows stay empty
            return found
        noisy = []
        for box, _, cls in found:
            if self.rng.random() < 0.06:
                continue  # missed
            box = np.asarray(box, float) + self.rng.uniform(-1.5, 1.5, 4)
            score = self.rng.uniform(0.12, 0.24) if self.rng.random() < 0.2 else self.rng.uniform(0.3, 0.95)
            noisy.append((box.tolist(), score, cls))
        if self.rng.random() < 0.1:  # a low-confidence false positive somewhere
            x, y = self.rng.uniform(0, WIDTH - 12), self.rng.uniform(40, 40 + HEIGHT - 12)
            noisy.append(([x, y, x + 10, y + 10], self.rng.uniform(0.11, 0.2), int(self.rng.integers(3))))
        return noisy

    def detect_batch(self, images: np.ndarray, settings: nms.NMSSettings, dtype=None) -> nms.Detections:
        self.calls += 1
        b, m = len(images), settings.max_det
        boxes, scores = np.zeros((b, m, 4), np.float32), np.zeros((b, m), np.float32)
        classes, count = np.zeros((b, m), np.int32), np.zeros(b, np.int32)
        for i, image in enumerate(images):
            found = sorted((d for d in self.find(image) if d[1] > settings.conf), key=lambda d: -d[1])[:m]
            for j, (box, score, cls) in enumerate(found):
                boxes[i, j], scores[i, j], classes[i, j] = box, score, cls
            count[i] = len(found)
        return nms.Detections(boxes, scores, classes, count)


# --- scoring --------------------------------------------------------------------------------------------


def iou_distances(truth: np.ndarray, hypotheses: np.ndarray, min_iou: float = 0.5) -> np.ndarray:
    """1 - IoU of xyxy boxes, NaN below min_iou (motmetrics' iou_matrix, which numpy 2 breaks)."""
    if not len(truth) or not len(hypotheses):
        return np.empty((len(truth), len(hypotheses)))
    lt = np.maximum(truth[:, None, :2], hypotheses[None, :, :2])
    rb = np.minimum(truth[:, None, 2:], hypotheses[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), -1)
    areas_truth, areas_hypotheses = (np.prod(b[:, 2:] - b[:, :2], -1) for b in (truth, hypotheses))
    iou = inter / (areas_truth[:, None] + areas_hypotheses[None, :] - inter)
    return np.where(iou >= min_iou, 1 - iou, np.nan)


def scores(results: list[Results]) -> dict:
    accumulator = mm.MOTAccumulator(auto_id=True)
    for result in results:
        truth = object_boxes(result.frame)
        ids = [] if result.boxes.id is None else result.boxes.id.tolist()
        accumulator.update(list(truth), ids, iou_distances(np.array(list(truth.values()), float).reshape(-1, 4),
                                                           result.boxes.xyxy.astype(float)))
    names = ["mota", "idf1", "num_switches", "num_misses", "num_false_positives", "num_unique_objects", "num_frames"]
    summary = mm.metrics.create().compute(accumulator, metrics=names, name="clip")
    return {name: summary[name].iloc[0].item() for name in names}


def report(label: str, figures: dict) -> None:
    print(f"\n{label}: MOTA {figures['mota']:.4f}  IDF1 {figures['idf1']:.4f}  ID switches {figures['num_switches']}  "
          f"misses {figures['num_misses']}  false positives {figures['num_false_positives']}  "
          f"frames {figures['num_frames']}")


# --- the metrics ---------------------------------------------------------------------------------------


def test_metrics_clean_clip(clip):
    results = track(ColourDetector(), clip, **OPTIONS)
    assert [r.frame for r in results] == list(range(FRAMES))
    assert len({id(r.video) for r in results}) == 1 and results[0].video.fps == FPS
    figures = scores(results)
    report("clean", figures)
    assert figures["num_switches"] == 0
    # Measured: MOTA 0.9857 (3 misses: each object's first frame, before its track is confirmed),
    # IDF1 0.9928.
    assert figures["mota"] >= 0.97 and figures["idf1"] >= 0.97
    assert sorted({int(i) for r in results for i in r.boxes.id}) == [1, 2, 3]
    # Each object keeps one ID throughout: red and green confirmed first, blue later.
    for r in results[2:]:
        classes_by_id = dict(zip(r.boxes.id.tolist(), r.boxes.cls.tolist()))
        assert all(classes_by_id[k] == k - 1 for k in classes_by_id)


def test_metrics_noisy_detections(clip):
    results = track(ColourDetector(noise=True, seed=1), clip, **OPTIONS)
    figures = scores(results)
    report("noisy", figures)
    assert figures["num_switches"] == 0
    assert figures["mota"] >= 0.85 and figures["idf1"] >= 0.9


@pytest.mark.parametrize("name", ["sort", "ocsort", "botsort"])  # botsort: with camera motion compensation
def test_metrics_other_trackers(clip, name):
    figures = scores(track(ColourDetector(), clip, tracker=name, **OPTIONS))
    report(name, figures)
    assert figures["num_switches"] == 0 and figures["mota"] >= 0.9 and figures["idf1"] >= 0.9


# --- behaviour -----------------------------------------------------------------------------------------


def test_stream_is_a_generator_and_predicts_in_batches(clip):
    detector = ColourDetector()
    results = track(detector, clip, stream=True, **OPTIONS)
    assert not isinstance(results, list)
    assert sum(1 for _ in results) == FRAMES
    assert detector.calls == -(-FRAMES // OPTIONS["batch_size"])  # batched, not one call per frame


def test_each_video_has_its_own_tracker(clip, tmp_path):
    short = tmp_path / "short.mp4"
    write_clip(short, frames=20)
    results = track(ColourDetector(), [clip, short], **OPTIONS)
    assert len(results) == FRAMES + 20
    first, second = results[:FRAMES], results[FRAMES:]
    assert first[0].video is not second[0].video
    # IDs start at 1 in each video (Ultralytics resets its tracker on a new video).
    assert sorted({int(i) for r in first for i in r.boxes.id}) == [1, 2, 3]
    assert sorted({int(i) for r in second for i in r.boxes.id}) == [1, 2, 3]
    assert second[1].boxes.id.tolist() and set(second[1].boxes.id.tolist()) <= {1, 2}


def test_persist_keeps_ids_frame_by_frame():
    detector = ColourDetector()
    frames = [clip_image(i) for i in range(0, 15, 2)]  # before blue enters
    tracked = [detector.track(frame, persist=True, **OPTIONS)[0] for frame in frames]
    assert len(tracked[0].boxes) == 0  # a track is confirmed on its second consecutive detection
    for r in tracked[1:]:
        assert sorted(zip(r.boxes.cls.tolist(), r.boxes.id.tolist())) == [(0, 1), (1, 2)]
    # Without persist every call starts a fresh tracker: nothing is ever confirmed.
    assert all(len(detector.track(frame, **OPTIONS)[0].boxes) == 0 for frame in frames[:3])
    # persist continues the tracks kept on the model; a different tracker starts over.
    again = detector.track(frames[-1], persist=True, **OPTIONS)[0]
    assert sorted(again.boxes.id.tolist()) == [1, 2]
    assert len(detector.track(frames[-1], persist=True, tracker="sort", **OPTIONS)[0].boxes) == 0


def test_live_source_steps_by_timestamp():
    """A live source drops frames when the device is behind: its tracker gets each frame's time."""
    from nasjax.predict.video import VideoInfo

    live = VideoInfo("rtsp://camera", 0, 30.0, WIDTH, HEIGHT, None, True)
    detector, tracking = ColourDetector(), Tracking()
    kept = [0, 1, 4, 5, 9, 10, 11]  # the frames that were not dropped
    tracked = []
    for i in kept:
        result = predict(detector, clip_image(i), conf=0.1, **OPTIONS)[0]
        result = Results(result.orig_img, result.boxes, result.names, "rtsp://camera", frame=i,
                         timestamp=i / 30, video=live)
        tracked.append(tracking.update(result))
    assert tracking.tracker_for(tracked[0])._last_timestamp == pytest.approx(11 / 30)
    assert all(sorted(r.boxes.id.tolist()) == [1, 2] for r in tracked[1:])


def test_persist_with_a_tracking_object(clip):
    tracking = Tracking()
    frames = [clip_image(i) for i in range(4)]
    first = track(ColourDetector(), frames[:2], persist=tracking, **OPTIONS)
    second = track(ColourDetector(), frames[2:], persist=tracking, **OPTIONS)
    assert first[1].boxes.id.tolist() and sorted(second[-1].boxes.id.tolist()) == [1, 2]
    tracking.reset()
    assert len(track(ColourDetector(), frames[:1], persist=tracking, **OPTIONS)[0].boxes) == 0


def test_tracked_boxes_sorted_and_text_lines_end_with_id(clip):
    results = track(ColourDetector(noise=True, seed=3), clip, **OPTIONS)
    r = next(r for r in results if len(r.boxes) >= 3)
    assert r.boxes.is_track and np.all(np.diff(r.boxes.conf) <= 0)
    lines = r.text_lines(save_conf=True)
    assert [int(line.split()[-1]) for line in lines] == r.boxes.id.tolist()
    assert [len(line.split()) for line in lines] == [7] * len(lines)  # class xywh conf id
    assert "id:" not in repr(r) and r.plot().shape == (HEIGHT, WIDTH, 3)


def test_supervision_round_trip_with_ids():
    image = clip_image(0)
    boxes = Boxes([[1, 2, 30, 40], [50, 10, 70, 30]], [0.9, 0.5], [2, 0], image.shape[:2], id=[7, 3])
    result = Results(image, boxes, dict(enumerate(NAMES)), "x.png")
    detections = result.to_supervision()
    assert detections.tracker_id.tolist() == [7, 3] and detections.data["class_name"].tolist() == ["blue", "red"]
    back = Results.from_supervision(detections, image, result.names, "x.png")
    np.testing.assert_array_equal(back.boxes.xyxy, boxes.xyxy)
    np.testing.assert_array_equal(back.boxes.conf, boxes.conf)
    assert back.boxes.cls.tolist() == [2, 0] and back.boxes.id.tolist() == [7, 3] and back.boxes.is_track
    plain = Boxes(boxes.xyxy, boxes.conf, boxes.cls, boxes.orig_shape)
    untracked = Results(image, plain, result.names).to_supervision()
    assert untracked.tracker_id is None and not Results.from_supervision(untracked, image, result.names).boxes.is_track


# --- tracker choice and errors -------------------------------------------------------------------------


def test_tracker_names_yaml_and_dict(tmp_path):
    assert {"bytetrack", "sort", "ocsort", "botsort"} <= set(track_module.tracker_names())
    spec = TrackerSpec()
    assert spec.name == "bytetrack" and spec.kwargs == track_module.THRESHOLD_DEFAULTS
    path = tmp_path / "tracker.yaml"
    path.write_text("tracker_type: ByteTrack\nlost_track_buffer: 10\nhigh_conf_det_threshold: 0.5\n")
    spec = TrackerSpec(path)
    assert spec.kwargs == {"track_activation_threshold": 0.25, "high_conf_det_threshold": 0.5, "lost_track_buffer": 10}
    assert TrackerSpec({"tracker_type": "sort", "minimum_iou_threshold": 0.2}).kwargs["minimum_iou_threshold"] == 0.2
    # The video's frame rate (over vid_stride) scales the lost-track buffer.
    assert spec.make(60.0).maximum_frames_without_update == 20 and spec.make().maximum_frames_without_update == 10


def test_tracker_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown tracker type 'bytrack'; valid names: .*bytetrack.*sort"):
        Tracking("bytrack")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tracker_type: bytetrack\ntrack_high_thresh: 0.5\n")  # an Ultralytics key
    with pytest.raises(ValueError, match=r"tracker file .*bad\.yaml: unknown argument 'track_high_thresh' for "
                                         r"tracker 'bytetrack'; it takes .*lost_track_buffer.*valid tracker names"):
        Tracking(bad)
    bad.write_text("tracker_type: [bytetrack\n")
    with pytest.raises(ValueError, match=r"tracker file .*bad\.yaml is not valid YAML"):
        Tracking(bad)
    bad.write_text("lost_track_buffer: 10\n")
    with pytest.raises(ValueError, match=r"tracker file .*bad\.yaml lacks tracker_type \(one of .*bytetrack"):
        Tracking(bad)
    with pytest.raises(ValueError, match=r"tracker file .*missing\.yaml not found"):
        Tracking(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"tracker 'bytetrack' with .*lost_track_buffer"):
        Tracking({"tracker_type": "bytetrack", "lost_track_buffer": -1})
    # The tracker is checked before any frame is read.
    detector = ColourDetector()
    with pytest.raises(ValueError, match="unknown tracker type"):
        detector.track(tmp_path / "not-read.mp4", tracker="nope")
    assert detector.calls == 0


def test_missing_trackers_package(monkeypatch):
    for name in ("trackers", "trackers.core", "trackers.core.base"):
        monkeypatch.setitem(__import__("sys").modules, name, None)
    with pytest.raises(ImportError, match=r"pip install 'nasjax\[video\]'"):
        Tracking()


# --- the real network ----------------------------------------------------------------------------------


def test_real_model_tracks_a_clip(tmp_path):
    path = tmp_path / "few.mp4"
    write_clip(path, frames=4)
    model = nasjax.build("yolo_nas_s")
    results = model.track(path, imgsz=64, batch_size=4)
    assert [r.frame for r in results] == [0, 1, 2, 3]
    assert all(r.boxes.is_track and len(r.boxes.id) == len(r.boxes) for r in results)
