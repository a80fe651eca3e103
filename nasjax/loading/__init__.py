"""Weights → model: the network for a registered weight name, a weight file, or a converted checkpoint.

`load_network` is what `nasjax.load` calls (which wraps the result in the `nasjax.Detector` façade);
the pipelines call it directly (train accepts every model source), so they never import the façade.

For a registered name the conversion happens once: the published file is downloaded into the cache
(`nasjax.hub`), read and converted, and the result saved as an orbax checkpoint under
`converted/<name>-<sha256[:12]>-<form>/`; every later load restores that checkpoint. A path is
converted on each call and never cached (a fine-tuned file per experiment would otherwise fill the
cache); for fast repeated loads of your own file, convert it once with `nasjax convert FILE -o DIR`
and load DIR.
"""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from nasjax.converters.torch_pickle import WeightFileError
from nasjax.loading import checkpoint
from nasjax.loading import hub
from nasjax.model.core import Network
from nasjax.weights import registry
from nasjax.weights.coco import COCO_CLASS_NAMES
from nasjax.weights.registry import COCO_PREPROCESSING, Preprocessing

if TYPE_CHECKING:
    from nasjax.converters.weight_file import WeightFile


def load_network(name_or_path: str | os.PathLike, pretrained: bool = True, fuse: bool = True, trusted: bool = False):
    """A ready-to-run `Network`.

    name_or_path: a registered weight name (`yolo_nas_s`, `yolo_nas_m.coco_ultralytics`, ... see
        `weights.list_weights()`), a weight file (`.pt`, `.pth`, `.safetensors`, a saved state dict), or a
        directory written by `nasjax convert` / `nasjax.loading.checkpoint.save_detector`, or a model written
        by `python -m nasjax.export` (a .tflite file or a SavedModel directory: a runner with the same
        interface, nasjax/export/runners.py; fuse does not apply). A string that
        is a registered name is taken as the name even if a file of that name exists (write `./name`).
    pretrained: False gives the architecture of a registered name with deterministic random weights
        (`nasjax.model.build.build_network`), without touching the network or the cache.
    fuse: True (default) fully fuses the QARepVGG blocks, the fastest form for inference; False keeps
        the form of the weights (the published files are in the training form).
    trusted: exported models only: True skips the check that the graph holds only what nasjax exports
        contain (a SavedModel is a program; docs/export.md#trusted). Only for files from a source you trust.
    """
    if isinstance(name_or_path, str) and registry.is_known(name_or_path):
        entry = registry.get_entry(name_or_path)
        if not pretrained:
            from nasjax.model.build import build_network

            network = build_network(entry.variant, form="full" if fuse else "training", class_names=entry.class_names)
            network.preprocessing = entry.preprocessing
            return network
        return _load_registered(entry, fuse)
    path = Path(name_or_path)
    if not path.exists():
        if os.path.lexists(path):  # a link that leads nowhere (a loop, a missing target): say which
            from nasjax.converters.torch_pickle import regular_file_size

            regular_file_size(path)  # raises a WeightFileError naming the loop or the missing target
        raise FileNotFoundError(
            f"{str(name_or_path)!r} is neither an existing file or directory nor a registered weight name; "
            f"known names: {', '.join(registry.list_weights())}"
        )
    if not pretrained:
        raise ValueError(
            "pretrained=False builds random weights for a registered name; a path always loads its weights"
        )
    from nasjax.export.loader import is_exported, load_exported  # exported: a runner with the same batch interface

    if is_exported(path):
        return load_exported(path, trusted=trusted)
    if path.is_dir():
        detector = checkpoint.load_detector(path)
        return detector.fuse("full") if fuse and detector.form != "full" else detector
    return convert_file(path, "full" if fuse else None)[0]


def convert_file(path: str | os.PathLike, form: str | None = "full") -> tuple[Network, WeightFile]:
    """Read and convert a weight file: (the detector in `form`, or in the file's own form for None,
    the `WeightFile`). Class names come from the file, else are the COCO names when there are 80 classes."""
    from nasjax.converters.weight_file import read_weight_file
    from nasjax.model.build import network_from_state_dict

    weight_file = read_weight_file(path)
    class_names = weight_file.class_names
    if class_names is None and weight_file.num_classes == len(COCO_CLASS_NAMES):
        class_names = COCO_CLASS_NAMES
    detector = network_from_state_dict(weight_file.state_dict, weight_file.variant, form=form, class_names=class_names)
    detector.preprocessing = preprocessing_of(weight_file.metadata.get("processing"))
    return detector, weight_file


def preprocessing_of(steps) -> Preprocessing:
    """The weights' pre-processing from a file's pickled super-gradients processing steps
    ([{'type': 'DetectionLongestMaxSizeRescale', 'output_shape': (636, 636)}, {'type':
    'DetectionCenterPadding', 'output_shape': (640, 640), 'pad_value': 114}, ...]); the COCO weights'
    when the file has none (docs/preprocessing.md#processing-params)."""
    values: dict = {}
    for step in steps or ():
        kind, shape = step.get("type"), step.get("output_shape")
        if kind == "DetectionLongestMaxSizeRescale" and shape:
            values["resize_longest_side"] = int(max(shape))
        elif kind == "DetectionCenterPadding" and shape:
            values["pad_to"] = (int(shape[0]), int(shape[1]))
            if step.get("pad_value") is not None:
                values["pad_value"] = int(step["pad_value"])
    return Preprocessing(**values) if values else COCO_PREPROCESSING


def source_metadata(weight_file: WeightFile, filename: str) -> dict[str, str]:
    """What a checkpoint's nasjax.json records about the file it was converted from."""
    return {
        "source_sha256": weight_file.sha256,
        "source_format": weight_file.source_format,
        "source_filename": filename,
    }


def _cached(directory: Path, discard: bool = True) -> Network | None:
    """The detector cached in `directory`; None when there is none or it is unreadable (then, with
    `discard`, which only the holder of the conversion lock may ask for, it is removed)."""
    if not directory.exists():
        return None
    try:
        return checkpoint.load_detector(directory)
    except checkpoint.CheckpointError as e:
        if not discard:
            return None
        message = f"discarding the unreadable cached conversion {directory} and converting again: {e}"
        warnings.warn(message, stacklevel=4)
        shutil.rmtree(directory, ignore_errors=True)
        return None


def _cached_registered(entry: registry.WeightEntry, form: str, home: Path, discard: bool) -> Network | None:
    downloaded = hub.downloads_dir(home) / entry.filename
    # Without a published hash the cache is keyed by the hash of the file actually downloaded.
    sha256 = entry.sha256 or (hub.sha256_file(downloaded) if downloaded.exists() else None)
    if sha256 is None:
        return None
    return _cached(hub.converted_dir(entry.name, sha256, form, home), discard)


def _load_registered(entry: registry.WeightEntry, fuse: bool) -> Network:
    home = hub.cache_home()
    form = "full" if fuse else entry.form
    if detector := _cached_registered(entry, form, home, discard=False):
        return detector
    # One process at a time downloads and converts an entry; the others then find its cached conversion.
    with hub.cache_lock(home / "locks" / f"{entry.name}-{form}"):
        if detector := _cached_registered(entry, form, home, discard=True):
            return detector
        source = hub.fetch(entry, home=home)
        try:
            detector, weight_file = convert_file(source, "full" if fuse else None)
        except WeightFileError as e:
            if entry.sha256 is not None:  # the file is the published one: downloading it again cannot help
                raise
            source.unlink(missing_ok=True)
            raise WeightFileError(
                f"{e}\nThe cached download {source} was removed: load {entry.name!r} again to download it anew."
            ) from e
        detector.preprocessing = entry.preprocessing  # the registry's word for a published file
        metadata = {**source_metadata(weight_file, entry.filename), "weights": entry.name}
        target = hub.converted_dir(entry.name, weight_file.sha256, detector.form, home)
        try:
            checkpoint.save_detector(detector, target, metadata, overwrite=True)
        except OSError as e:  # a read-only or full cache costs speed on the next load, not this load
            warnings.warn(f"could not cache the converted weights in {target}: {e}", stacklevel=3)
    return detector
