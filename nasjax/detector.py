"""The user-facing model: `nasjax.load`, `nasjax.build` and `nasjax.from_state_dict` return a `Detector`.

A `Detector` is the core `nasjax.model.core.Network` (variables, jitted forward, fuse, info) plus the
work one does with a model: `predict`, `val`, `export` and `train`. Each hands the network to its
pipeline (nasjax.predict, nasjax.validate, nasjax.export, nasjax.train), and no pipeline imports this
module, so there is no import cycle: this is Ultralytics' `Model` façade over its Predictor /
Validator / Exporter / Trainer. An exported model (TFLite, SavedModel) gets the same methods on top of
its runner (`ExportedModel`), through the same batch interface.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from nasjax.model.core import Network, check_images, forward, jit_forward  # noqa: F401  (public names)


class PipelineMethods:
    """predict / val / export / train for any model with the batch interface (`core.BatchDetector`)."""

    def predict(self, source, **options):
        """Detect objects in images (paths, folders, globs, PIL images, uint8 RGB arrays, or lists of
        them): a list of `nasjax.Results`. Options and defaults: `nasjax.predict.predict`."""
        from nasjax.predict import predict

        self.check_predict_options(options)
        return predict(self, source, **options)

    def track(self, source, tracker="bytetrack", persist: bool = False, **options):
        """Detect and track objects through video frames (or a sequence of images): `Results` with
        `boxes.id`, IDs from 1, one tracker per video. tracker: a name ("bytetrack", "botsort", "ocsort",
        "sort", ...), a YAML file or a dict (nasjax.predict.track). persist=True keeps the trackers on
        this model between calls (for calling it frame by frame, as Ultralytics' model.track); False
        starts fresh. conf defaults to 0.1; other options: `nasjax.predict.predict`."""
        from nasjax.predict.track import Tracking, track

        self.check_predict_options(options)
        tracking = getattr(self, "_tracking", None) if persist else None
        if tracking is None or tracking.tracker_option != tracker:
            tracking = Tracking(tracker)
        if persist:
            self._tracking = tracking
        return track(self, source, persist=tracking, **options)

    def check_predict_options(self, options: dict) -> None:
        """Options a model fixes (an exported runner: its size and dtype); the JAX network fixes none."""

    def val(self, data, **options):
        """Validate on a dataset: COCO mAP (pycocotools) and Ultralytics-style P / R, as a metrics dict
        (map50_95, map50, precision, recall, per_class, speed, ...); prints Ultralytics' table.

        data: an Ultralytics data YAML, a shipped name ("coco8", "coco128", "coco"), a dataset folder, a
        COCO JSON annotation file (images=its image folder), or "tfds:coco/2017". Options and defaults:
        `nasjax.validate.validate` (conf 0.001, iou 0.7, max_det 300, imgsz 640, batch_size 8, ...)."""
        from nasjax.validate import validate

        self.check_predict_options(options)  # an exported model: imgsz defaults to (and must be) its size
        return validate(self, data, **options)


class Detector(PipelineMethods, Network):
    """A YOLO-NAS model ready to run: `boxes, scores = detector(images)`, plus predict / val / export / train.

    images: (B, H, W, 3) float RGB in [0, 1], H and W multiples of 32.
    boxes: (B, N, 4) xyxy in input pixels; scores: (B, N, num_classes) after sigmoid.
    """

    @classmethod
    def from_network(cls, network: Network) -> "Detector":
        """The façade over an existing network (no copy of the variables)."""
        if isinstance(network, cls):
            return network
        detector = cls.__new__(cls)
        detector.__dict__.update(network.__dict__)
        return detector

    def train(self, data, **options):
        """Fine-tune from this detector's weights on `data`. Returns what `nasjax.train.train` returns
        (the run directory, per-epoch history, and `best` / `last` checkpoints for `nasjax.load`).
        Options and defaults: `nasjax.train.TrainConfig`."""
        from nasjax.train import train

        return train(data, self, **options)

    def export(self, format: str = "tflite", output=None, **options):
        """Export to a TFLite file ("tflite": float32, half=True float16, int8=True with data=... calibration
        images), a TensorFlow SavedModel ("saved_model"), an ONNX file ("onnx": float32 or half=True) or an
        OpenVINO directory ("openvino": float32, half=True, int8=True with data=...); the last three
        have a symbolic batch and, with nms=True, NMS in the graph. Returns the path written.
        Options and defaults: `nasjax.export.export`. Run the result with `nasjax.load(path)`."""
        from nasjax.export import export

        return export(self, format, output, **options)


_exported_classes: dict[type, type] = {}


def _as_model(loaded):
    """The façade for what `nasjax.loading` returns: a `Detector` for a network, and for an exported
    runner the same object with the pipeline methods added to its class."""
    if isinstance(loaded, Network):
        return Detector.from_network(loaded)
    cls = type(loaded)
    if not isinstance(loaded, PipelineMethods):
        if cls not in _exported_classes:
            # The runner's own methods first: its check_predict_options overrides the no-op here.
            _exported_classes[cls] = type(cls.__name__, (cls, PipelineMethods), {"__module__": cls.__module__,
                                                                               "__doc__": cls.__doc__})
        loaded.__class__ = _exported_classes[cls]
    return loaded


def load(name_or_path: str | os.PathLike, pretrained: bool = True, fuse: bool = True, trusted: bool = False):
    """A ready-to-run `Detector` (or, for an exported .tflite / SavedModel, a runner with the same
    interface). Sources and options (trusted: exported models from a source you trust, unchecked):
    `nasjax.loading.load_network`."""
    from nasjax.loading import load_network

    return _as_model(load_network(name_or_path, pretrained=pretrained, fuse=fuse, trusted=trusted))


def from_state_dict(
    state_dict: Mapping[str, Any],
    variant: str | None = None,
    *,
    form: str | None = "full",
    class_names: Sequence[str] | None = None,
) -> Detector:
    """A `Detector` from a super-gradients state dict (tensor name → array), in any QARepVGG form.

    The variant and class count are inferred from the tensor shapes unless `variant` is given. The
    model is fused to `form` ("full" by default, the fastest for inference; None keeps the form the
    state dict is in). Raises `nasjax.model.state_dict.StateDictError` naming every missing,
    unexpected or wrongly shaped tensor.
    """
    from nasjax.model.build import network_from_state_dict

    return Detector.from_network(network_from_state_dict(state_dict, variant, form=form, class_names=class_names))


def build(
    variant: str = "yolo_nas_s",
    *,
    form: str = "full",
    num_classes: int = 80,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
    init: str = "test",
) -> Detector:
    """A `Detector` with deterministic random weights (`nasjax.model.build.build_network`)."""
    from nasjax.model.build import build_network

    return Detector.from_network(build_network(variant, form=form, num_classes=num_classes, seed=seed,
                                               class_names=class_names, init=init))
