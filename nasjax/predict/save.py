"""Writing a prediction run folder (annotated images and predictions.json) as one unit.

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
        self._finished = False

    def __enter__(self) -> "PredictionRun":
        return self

    def __exit__(self, kind, error, traceback) -> None:
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

    def add(self, result: Results, save_image: bool = True) -> dict:
        """Stage one result: its annotated image (when save_image) and its record."""
        name = self._name(result.path, len(self.records))
        if save_image:
            staged = self._staging / name
            try:
                result.save(staged)
            except OSError as error:
                raise _about(error, self.save_dir / name) from None
            self._images.append(name)
        h, w = result.orig_shape
        return self.add_record(result.path, (h, w), result.to_list(), name if save_image else None)

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
        """Write predictions.json ({**meta, "images": records}) and move the run's files into place; the
        path of the file that marks the run (predictions.json, or without json_file the first staged)."""
        names = list(self._images)
        if json_file:
            try:
                (self._staging / PREDICTIONS_FILE).write_text(json.dumps({**meta, "images": self.records}, indent=1) + "\n")
            except OSError as error:
                raise _about(error, self.save_dir / PREDICTIONS_FILE) from None
            names.insert(0, PREDICTIONS_FILE)
        # The run files are hard-linked (atomic: fails if another run got there first), the rest renamed.
        for name in [n for n in names if n in RUN_FILES] or names[:1]:
            self._link(self._staging / name, self.save_dir / name)
        for name in names:
            if (self._staging / name).exists():  # reserved images of skipped sources were never written
                os.replace(self._staging / name, self.save_dir / name)
        self._finished = True
        return self.save_dir / names[0]

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
