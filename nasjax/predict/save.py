"""Writing a prediction run folder (annotated images and videos, labels/, crops/ and predictions.json)
as one unit, in Ultralytics' layout:

    runs/detect/predict/bus.jpg, clip.mp4          annotated copies (a video: H.264 at the source rate)
    runs/detect/predict/labels/bus.txt, clip_1.txt save_txt: YOLO lines (a video: one file per frame, from 1)
    runs/detect/predict/crops/person/bus.jpg       save_crop: each detection's crop, by class name
    runs/detect/predict/predictions.json           every image and frame, with its detections

A run's files only appear in the folder when the whole run has succeeded: everything is written into a
hidden staging folder inside it first, then predictions.json is hard-linked into place (which fails if
another run put one there in the meantime) and the images are renamed beside it. So a full disk, a
read-only folder or an interrupted run leaves the folder as it was, with nothing half-written, and two
runs never mix their images under one predictions.json: a folder that already holds a predictions.json
is refused before any work is done (`nasjax predict` without exist_ok/save_dir always gets a new
numbered folder, as Ultralytics does). The writing runs outside the device code: `nasjax.predict.predict`
yields `Results`, this module only stores them.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from nasjax.predict.results import Results

PREDICTIONS_FILE = "predictions.json"
PARQUET_FILE = "predictions.parquet"  # engine=ray (nasjax/ray.py)
RUN_FILES = (PREDICTIONS_FILE, PARQUET_FILE)  # a folder holding one of these holds a finished run
# PIL writes these formats; an annotated copy of anything else is written as .png.
WRITABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass(frozen=True)
class SaveOptions:
    """What a run writes besides predictions.json (the `nasjax predict` keys of the same names)."""

    save: bool = True  # annotated images and videos
    save_txt: bool = False  # labels/<name>.txt (a video: labels/<name>_<k>.txt for its k-th predicted frame)
    save_conf: bool = False  # with save_txt: the confidence after the box
    save_crop: bool = False  # crops/<class name>/<name>.jpg
    line_width: int | None = None  # box line width of the annotated copies (default: from the image size)
    show_labels: bool = True  # draw 'name 0.87' labels
    show_conf: bool = True  # draw the confidence in the labels

    def plot_options(self) -> dict:
        return {"line_width": self.line_width, "labels": self.show_labels, "conf": self.show_conf}


class _Video:
    """One video's outputs in a run: its name, its writer (when saving) and how many frames it has had."""

    def __init__(self, name: str):
        self.name = name
        self.writer = None
        self.frames = 0


class SaveDirError(ValueError):
    """The output folder cannot take this run; the message says why and what to give instead."""


def check_save_dir(save_dir: Path) -> None:
    """Refuse a save_dir that is a file or already holds a prediction run, before any work is done."""
    if save_dir.exists() and not save_dir.is_dir():
        raise SaveDirError(f"save_dir {save_dir} is a file, not a folder; give a folder path (or leave save_dir out)")
    held = [name for name in RUN_FILES if (save_dir / name).exists()]
    if held:
        raise SaveDirError(
            f"{save_dir} already holds an earlier prediction run ({held[0]}) and was left as it is; "
            "give another name= or save_dir=, or leave out exist_ok to get a new numbered folder"
        )


class PredictionRun:
    """The output folder of one prediction run. Use as a context manager:

        with PredictionRun(save_dir, created=False) as run:
            for result in predict(...):
                run.add(result, save_image=True)
            run.finish(meta)

    A run without images (nasjax.ray) adds records with `add_record`, and may stage other files
    (`stage`) that are moved in with predictions.json; finish(meta, json=False) writes no
    predictions.json, and the first staged file then marks the run. Leaving the block without `finish` (an error, an interrupt) removes the staged files, and the
    folder itself when this run created it. created: the caller made `save_dir` for this run (an
    increment_path claim), so it is removed again on failure.
    """

    def __init__(self, save_dir: str | os.PathLike, created: bool = False):
        self.save_dir = Path(save_dir)
        check_save_dir(self.save_dir)
        self._created = created or not self.save_dir.exists()
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=".predict.", suffix=".tmp", dir=self.save_dir))
        self.records: list[dict] = []
        self._used: set[str] = set()
        self._images: list[str] = []  # staged files, moved into place by finish
        self._videos: dict = {}  # VideoInfo → _Video
        self._finished = False

    def __enter__(self) -> "PredictionRun":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if not self._finished:
            for video in self._videos.values():  # stop the encoder threads; the files are discarded below
                if video.writer is not None:
                    try:
                        video.writer.close()
                    except Exception:  # noqa: BLE001 — already failing: the first error is the one reported
                        pass
        shutil.rmtree(self._staging, ignore_errors=True)
        if not self._finished and self._created:
            try:
                self.save_dir.rmdir()  # only when empty: never anything but this run's own folder
            except OSError:
                pass

    def _name(self, source: str | None, i: int) -> str:
        """The source's file name (.png when PIL cannot write its format; image<i>.png for arrays), with
        _<i> added where two sources share a name."""
        path = Path(source) if source else Path(f"image{i}.png")
        suffix = path.suffix if path.suffix.lower() in WRITABLE_SUFFIXES else ".png"
        name = path.stem + suffix
        if name.lower() in self._used:
            name = f"{path.stem}_{i}{suffix}"
        self._used.add(name.lower())
        return name

    def add(self, result: Results, save_image: bool | None = None, options: SaveOptions | None = None) -> dict:
        """Stage one result (an image, or a video frame): its annotated copy, label file and crops as
        `options` say (save_image overrides options.save), and its record."""
        options = options or SaveOptions()
        if save_image is not None:
            options = dataclasses.replace(options, save=save_image)
        if result.video is not None:
            return self._add_frame(result, options)
        name = self._name(result.path, len(self.records))
        if options.save:
            staged = self._staging / name
            try:
                result.save(staged, **options.plot_options())
            except OSError as error:
                raise _about(error, self.save_dir / name) from None
            self._images.append(name)
        self._save_labels(result, Path(name).stem, options)
        h, w = result.orig_shape
        return self.add_record(result.path, (h, w), result.to_list(), name if options.save else None)

    def _add_frame(self, result: Results, options: SaveOptions) -> dict:
        from nasjax.predict.video import VideoWriter

        video = self._videos.get(result.video)
        if video is None:
            stem = Path(self._name(result.path or f"video{result.video.index}", len(self.records))).stem
            video = self._videos[result.video] = _Video(stem + ".mp4")
        video.frames += 1
        if options.save:
            if video.writer is None:
                h, w = result.orig_shape
                try:
                    video.writer = VideoWriter(self._staging / video.name, result.video.output_fps, w, h)
                except OSError as error:
                    raise _about(error, self.save_dir / video.name) from None
                self._images.append(video.name)
            video.writer.write(result.plot(**options.plot_options()))
        self._save_labels(result, f"{Path(video.name).stem}_{video.frames}", options)
        h, w = result.orig_shape
        record = self.add_record(result.path, (h, w), result.to_list(), video.name if options.save else None)
        record.update(frame=int(result.frame), timestamp=round(float(result.timestamp), 6))
        if result.boxes.id is not None:
            for detection, track_id in zip(record["detections"], result.boxes.id):
                detection["track_id"] = int(track_id)
        return record

    def _save_labels(self, result: Results, base: str, options: SaveOptions) -> None:
        try:
            if options.save_txt:
                result.save_txt(self._staging / "labels" / f"{base}.txt", save_conf=options.save_conf)
            if options.save_crop:
                result.save_crop(self._staging / "crops", file_name=f"{base}.jpg")
        except OSError as error:
            raise _about(error, self.save_dir / "labels") from None

    def add_record(self, source: str | None, orig_shape: tuple[int, int], detections: list[dict],
                   annotated: str | None = None) -> dict:
        """Add one image's record: detections as `Results.to_list` gives them."""
        h, w = orig_shape
        record = {"source": source, "annotated": annotated, "width": int(w), "height": int(h), "detections": detections}
        self.records.append(record)
        return record

    def reserve(self, sources: list[str]) -> list[Path]:
        """Where the annotated images of `sources` (image files, in the run's order) are to be written by
        someone else (nasjax.ray's workers), in the staging folder: the names `add` would give them.
        Their records then name them (add_record's `annotated`)."""
        names = [self._name(source, i) for i, source in enumerate(sources)]
        return [self.stage(name) for name in names]

    def stage(self, name: str) -> Path:
        """Where to write the run's file `name` (in the staging folder); finish moves it into save_dir."""
        self._images.append(name)
        return self._staging / name

    def finish(self, meta: dict, json_file: bool = True) -> Path:
        """Finish the videos, write predictions.json ({**meta, "images": records}) and move the run's files
        into place; the path of the file that marks the run (predictions.json, or without json_file the
        first staged)."""
        for video in self._videos.values():
            if video.writer is not None:
                writer, video.writer = video.writer, None
                try:
                    writer.close()
                except Exception as error:  # noqa: BLE001 — the encoder's error, about the user's file
                    raise OSError(errno.EIO, f"cannot write the video: {error}", str(self.save_dir / video.name)) from None
        names = list(self._images)
        if json_file:
            try:
                (self._staging / PREDICTIONS_FILE).write_text(json.dumps({**meta, "images": self.records}, indent=1) + "\n")
            except OSError as error:
                raise _about(error, self.save_dir / PREDICTIONS_FILE) from None
            names.insert(0, PREDICTIONS_FILE)
        # The run files are hard-linked (atomic: fails if another run got there first), the rest renamed.
        marker = [n for n in names if n in RUN_FILES] or names[:1]
        if not marker:  # nothing but labels / crops
            marker = sorted(str(f.relative_to(self._staging)) for f in self._staging.rglob("*") if f.is_file())[:1]
        for name in marker:
            self._link(self._staging / name, self.save_dir / name)
        # Then everything else staged: the images and videos, labels/ and crops/.
        for staged in sorted(f for f in self._staging.rglob("*") if f.is_file()):
            target = self.save_dir / staged.relative_to(self._staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
        self._finished = True
        return self.save_dir / (marker[0] if marker else PREDICTIONS_FILE)

    @staticmethod
    def _link(staged: Path, target: Path) -> None:
        taken = SaveDirError(f"another run wrote {target} while this one ran; this run's output was discarded and "
                             "the other run's kept: give each run its own name= or save_dir=")
        try:
            os.link(staged, target)
        except FileExistsError:
            raise taken from None
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise _about(error, target) from None
            if target.exists():  # a file system without hard links: check, then rename
                raise taken from None
            os.replace(staged, target)
            return
        staged.unlink()


def _about(error: OSError, path: Path) -> OSError:
    """The same OSError, naming the file the user asked for instead of the staging file."""
    return type(error)(error.errno, error.strerror or str(error), str(path))
