"""track(): multi-object tracking on top of predict, shaped like Ultralytics' `model.track`.

    for r in detector.track("clip.mp4", stream=True): r.boxes.id        # track IDs, from 1
    detector.track(frame, persist=True)                                 # frame by frame, IDs kept
    detector.track("clip.mp4", tracker="botsort")                       # or a YAML file, or a dict
    nasjax.predict.track.track(detector, source, tracker="tracker.yaml")

Why it is shaped this way:
- The tracker is not ours: it is Roboflow's maintained `trackers` package (Apache-2.0; ByteTrack,
  SORT, OC-SORT, BoT-SORT, ... — the ByteTrack that supervision used to ship). Any name in its registry
  (`tracker_names()`) is accepted, or a YAML file / dict `{tracker_type: bytetrack, <keyword
  arguments of that tracker class>}`. Its two confidence thresholds default to Ultralytics'
  bytetrack.yaml (new_track_thresh = track_high_thresh = 0.25, `THRESHOLD_DEFAULTS`) instead of the
  package's 0.7 / 0.6, so that a detector at Ultralytics' usual confidences starts tracks; a YAML or
  dict that sets them wins.
- Ultralytics' behaviour otherwise: `conf` defaults to 0.1 (ByteTrack's second stage matches the
  low-confidence boxes to lost tracks); only confirmed tracks are returned (a new object gets its ID on
  its second consecutive detection); IDs start at 1; one tracker per video source, so every video's
  IDs start at 1 again (Ultralytics resets its tracker and ID counter on a new video); a list of
  images is one sequence (one tracker). The boxes are the detector's own (not the Kalman filter's),
  sorted by confidence like every `Boxes`. Association is class-agnostic, as Ultralytics'.
- Device vs host: predicting is unchanged — frames are decoded in threads and predicted in batches on
  the device (nasjax.predict.predict with stream=True, one jitted forward + NMS per batch); the tracker
  then runs on the host, in numpy, one frame at a time in each source's frame order, as the Results
  come out of the generator. Tracking adds no device work and does not shrink the batches.
- Files are tracked at a fixed frame step (the video's frame rate over vid_stride scales the lost-track
  buffer); live sources, which drop frames when the device is behind, pass each frame's timestamp so
  the Kalman filter steps by the real time elapsed.
"""
from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from nasjax.predict.results import Boxes, Results

DEFAULT_TRACKER = "bytetrack"
# Ultralytics' bytetrack.yaml / botsort.yaml thresholds (new_track_thresh, track_high_thresh), used for
# trackers that take these arguments unless the tracker's YAML / dict sets them.
THRESHOLD_DEFAULTS = {"track_activation_threshold": 0.25, "high_conf_det_threshold": 0.25}
_INSTALL = "pip install 'nasjax[video]'"


def _trackers_base():
    try:
        from trackers.core.base import BaseTracker
    except ImportError:
        raise ImportError(f"tracking needs Roboflow's trackers package: {_INSTALL}") from None
    return BaseTracker


def tracker_names() -> list[str]:
    """The names `tracker=` accepts (the trackers package's registry: bytetrack, sort, ocsort, botsort, ...)."""
    return list(_trackers_base()._registered_trackers())


def _read_spec(tracker) -> tuple[str, dict, str]:
    """(tracker name, keyword arguments, how to name the spec in messages) of a name, a YAML path or a
    dict."""
    if isinstance(tracker, Mapping):
        spec, where = dict(tracker), "the tracker dict"
    elif isinstance(tracker, (str, os.PathLike)) and Path(tracker).suffix.lower() in (".yaml", ".yml"):
        import yaml

        path = Path(tracker)
        where = f"tracker file {path}"
        if not path.is_file():
            raise ValueError(f"{where} not found; give a tracker name ({', '.join(tracker_names())}) or a YAML "
                             "file with tracker_type: <name> and that tracker's keyword arguments")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise ValueError(f"{where} is not valid YAML: {error}") from None
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where} must hold a mapping (tracker_type: <name> plus keyword arguments), "
                             f"got {type(spec).__name__}")
        spec = dict(spec)
    elif isinstance(tracker, str):
        return tracker.strip().lower(), {}, f"tracker {tracker!r}"
    else:
        raise TypeError(f"tracker must be a name, a YAML path or a dict, got {type(tracker).__name__}")
    name = spec.pop("tracker_type", None)
    if not isinstance(name, str):
        raise ValueError(f"{where} lacks tracker_type (one of {', '.join(tracker_names())})")
    return name.strip().lower(), spec, where


class TrackerSpec:
    """A checked tracker choice: the class from the trackers registry and its keyword arguments.
    `make(frame_rate)` builds a fresh tracker."""

    def __init__(self, tracker=DEFAULT_TRACKER):
        base = _trackers_base()
        name, kwargs, where = _read_spec(tracker)
        info = base._lookup_tracker(name)
        if info is None:
            raise ValueError(f"{where}: unknown tracker type {name!r}; valid names: {', '.join(tracker_names())}")
        parameters = dict(info.parameters)
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown:
            plural = "s" if len(unknown) > 1 else ""
            raise ValueError(f"{where}: unknown argument{plural} {', '.join(map(repr, unknown))} for tracker "
                             f"{name!r}; it takes {', '.join(sorted(parameters))} "
                             f"(valid tracker names: {', '.join(tracker_names())})")
        self.name = name
        self.cls = info.tracker_class
        self.kwargs = {**{k: v for k, v in THRESHOLD_DEFAULTS.items() if k in parameters}, **kwargs}
        self.takes_frame_rate = "frame_rate" in parameters
        self.make()  # a bad value (a negative buffer, a wrong type) fails here, before any frame is read

    def make(self, frame_rate: float | None = None):
        kwargs = dict(self.kwargs)
        if frame_rate and self.takes_frame_rate and "frame_rate" not in self.kwargs:
            kwargs["frame_rate"] = float(frame_rate)
        try:
            return self.cls(**kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"tracker {self.name!r} with {kwargs}: {error}") from None

    def __repr__(self) -> str:
        return f"TrackerSpec({self.name}, {self.kwargs})"


class Tracking:
    """Tracker state per source: one tracker per video (`Results.video`, a new `VideoInfo` is a new
    video) and one shared by all plain images (a list of images, or frames given one call at a time,
    is one sequence). Keep one across `track(..., persist=tracking)` calls to keep the IDs."""

    def __init__(self, tracker=DEFAULT_TRACKER):
        self.spec = tracker if isinstance(tracker, TrackerSpec) else TrackerSpec(tracker)
        self.tracker_option = tracker
        # A video's tracker lives as long as its VideoInfo (the decoder and its Results hold it).
        self._videos: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
        self._images = None

    def tracker_for(self, result: Results):
        info = result.video
        if info is None:
            if self._images is None:
                self._images = self.spec.make()
            return self._images
        tracker = self._videos.get(info)
        if tracker is None:
            tracker = self._videos[info] = self.spec.make(getattr(info, "output_fps", None))
        return tracker

    def update(self, result: Results) -> Results:
        """The tracked `result`: only confirmed tracks, with `boxes.id` (from 1), by confidence."""
        tracker = self.tracker_for(result)
        detections = result.to_supervision()
        detections.tracker_id = None
        kwargs = {}
        if getattr(tracker, "enable_cmc", False):
            kwargs["frame"] = np.ascontiguousarray(result.orig_img[..., ::-1])  # camera motion compensation, BGR
        if result.video is not None and getattr(result.video, "live", False) and result.timestamp is not None:
            kwargs["timestamp"] = float(result.timestamp)  # frames dropped: step by the real time
        tracked = tracker.update(detections, **kwargs)
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.full(len(tracked), -1)
        confirmed = tracked[np.asarray(ids) >= 0] if len(tracked) else tracked
        boxes = Boxes.from_supervision(confirmed, result.orig_shape) if len(confirmed) else None
        if boxes is None:
            boxes = Boxes(np.zeros((0, 4)), np.zeros(0), np.zeros(0), result.orig_shape, np.zeros(0, np.int64))
        else:
            boxes = Boxes(boxes.xyxy, boxes.conf, boxes.cls, boxes.orig_shape, boxes.id + 1)
            boxes = boxes[np.argsort(-boxes.conf, kind="stable")]
        return result.with_boxes(boxes)

    def reset(self) -> None:
        """Forget every track (the next IDs start at 1 again)."""
        self._videos.clear()
        self._images = None


def track(detector, source, tracker=DEFAULT_TRACKER, persist: Tracking | None = None, conf: float = 0.1,
          stream: bool = False, **predict_options) -> list[Results] | Iterator[Results]:
    """Detect and track objects through the frames of `source`: a list of `Results` whose `boxes.id`
    holds the track IDs (a generator with stream=True, one Results per frame as it is tracked).

    source: as `nasjax.predict.predict` (videos, webcams, streams, *.streams files, images, arrays); each
        video source gets its own tracker (IDs from 1); plain images are one sequence.
    tracker: a name from the trackers package ("bytetrack", "botsort", "ocsort", "sort", ...), a YAML
        file or a dict with tracker_type and that tracker's keyword arguments, or a `TrackerSpec`.
    persist: a `Tracking` whose trackers carry on (frame-by-frame calls keep their IDs); None starts
        fresh.
    conf: 0.1, as Ultralytics' track (ByteTrack's second stage needs the low-confidence boxes).
    predict_options: every other option of `nasjax.predict.predict` (iou, imgsz, vid_stride, classes, ...).

    Predicting is batched on the device as in predict (batch_size frames per call); the trackers update
    on the host, one frame at a time in frame order, as the batch's Results come out.
    """
    from nasjax.predict.predictor import predict

    tracking = persist if persist is not None else Tracking(tracker)
    results = predict(detector, source, conf=conf, stream=True, **predict_options)
    generator = (tracking.update(result) for result in results)
    return generator if stream else list(generator)
