"""Where the pretrained YOLO-NAS weights were published, one `WeightEntry` per file (timm-style names).

Names are `<variant>.<tag>`: `yolo_nas_s.coco` is super-gradients' own checkpoint
(`yolo_nas_s_coco.pth`), `yolo_nas_s.coco_ultralytics` the whole pickled model Ultralytics published
as a GitHub release asset (`yolo_nas_s.pt`). Both hold the same COCO-trained training-form weights; a
bare variant name (`yolo_nas_s`) means its `.coco` entry, the one with a published SHA-256.

Licence: the pretrained YOLO-NAS weights are Deci's (now NVIDIA's), under the YOLO-NAS licence
(`LICENSE_NOTE`), which forbids redistributing them. nasjax therefore ships no weights and hosts no
mirror: it fetches the file from the publisher's address, or converts a copy the user already has,
on the user's own machine.
"""
from __future__ import annotations

import dataclasses

from nasjax.weights.coco import COCO_CLASS_NAMES

LICENSE_NOTE = (
    "YOLO-NAS pretrained weights (c) 2023 Deci.AI, Inc., under the YOLO-NAS licence "
    "(https://github.com/Deci-AI/super-gradients/blob/master/LICENSE.YOLONAS.md): no redistribution, "
    "no commercial use without Deci's written consent. nasjax ships no weights; it converts your own copy."
)

SOURCE_FORMATS = ("sg_checkpoint", "ultralytics_whole_model")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How the pretrained models expect their input (super-gradients' `default_yolo_nas_coco_processing_params`):
    RGB, longest side resized to `resize_longest_side`, centre-padded to `pad_to` with `pad_value`,
    divided by `divide_by`."""

    resize_longest_side: int = 636
    pad_to: tuple[int, int] = (640, 640)
    pad_value: int = 114
    divide_by: float = 255.0
    channel_order: str = "RGB"

    @property
    def input_size(self) -> int:
        """The square network input the weights were made for (640)."""
        return self.pad_to[0]

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "pad_to": list(self.pad_to)}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Preprocessing":
        """From `to_dict()` output (missing keys take the COCO defaults); None → the defaults."""
        if not data:
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "pad_to" in values:
            values["pad_to"] = tuple(int(v) for v in values["pad_to"])
        return cls(**values)


COCO_PREPROCESSING = Preprocessing()


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    """One published weight file and what nasjax needs to know to fetch and convert it."""

    name: str
    variant: str
    filename: str
    urls: tuple[str, ...]  # tried in order
    sha256: str | None  # None: not published; the file's hash is then recorded but not checked
    approx_size_mib: float | None  # as reported or measured on a re-creation; None when unknown
    source_format: str  # one of SOURCE_FORMATS
    form: str  # QARepVGG form of the tensors in the file
    class_names: tuple[str, ...]
    class_names_source: str
    coco_map: float  # published COCO val2017 mAP@0.5:0.95 at 640x640
    preprocessing: Preprocessing = Preprocessing()
    license: str = LICENSE_NOTE
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class UnknownWeightsError(ValueError):
    """A weight name that is not in the registry; the message lists the known names."""


_COCO_SOURCE = "COCO 2017 detection, 80 classes (super-gradients COCO_DETECTION_CLASSES_LIST)"
# Published by the LibreYOLO project, which pins these files; not re-checked here (no network).
_SG_SHA256 = {
    "s": "c1b1d9148ab8ae5d5984699547e850955ff9efccaf568c67b3d605acb4bfe1cb",
    "m": "b194fc7fa196f76161c6356558bedf04fb99a62325a74a36a4bec3ca8ba48250",
    "l": "91a06beaa1ce1a651d6691e3198061da996eafc8890503238dedacbd4c392a32",
}
_COCO_MAP = {"s": 47.5, "m": 51.55, "l": 52.22}
# Only S's sizes are known (docs/file_formats.md#published-files): the .pth holds one fp32 copy of the unfused state dict,
# the Ultralytics .pt one fp32 copy of the pickled unfused model.
_SG_SIZE_MIB = {"s": 73.1}
_ULTRALYTICS_SIZE_MIB = {"s": 83.3}


def _sg_entry(size: str) -> WeightEntry:
    filename = f"yolo_nas_{size}_coco.pth"
    return WeightEntry(
        name=f"yolo_nas_{size}.coco",
        variant=f"yolo_nas_{size}",
        filename=filename,
        urls=(
            f"https://sg-hub-nv.s3.amazonaws.com/models/{filename}",  # super-gradients master
            f"https://d2gjn4b69gu75n.cloudfront.net/models/{filename}",  # CloudFront mirror of the hub
            f"https://sghub.deci.ai/models/{filename}",  # super-gradients 3.7.1; the host no longer resolves
        ),
        sha256=_SG_SHA256[size],
        approx_size_mib=_SG_SIZE_MIB.get(size),
        source_format="sg_checkpoint",
        form="training",
        class_names=COCO_CLASS_NAMES,
        class_names_source=_COCO_SOURCE,
        coco_map=_COCO_MAP[size],
        description=f"YOLO-NAS {size.upper()} COCO, super-gradients checkpoint (weights under 'net')",
    )


def _ultralytics_entry(size: str) -> WeightEntry:
    filename = f"yolo_nas_{size}.pt"
    return WeightEntry(
        name=f"yolo_nas_{size}.coco_ultralytics",
        variant=f"yolo_nas_{size}",
        filename=filename,
        urls=(
            f"https://github.com/ultralytics/assets/releases/download/v8.1.0/{filename}",  # Ultralytics docs
            f"https://github.com/ultralytics/assets/releases/download/v0.0.0/{filename}",  # older docs
        ),
        sha256=None,
        approx_size_mib=_ULTRALYTICS_SIZE_MIB.get(size),
        source_format="ultralytics_whole_model",
        form="training",
        class_names=COCO_CLASS_NAMES,
        class_names_source=_COCO_SOURCE + ", also pickled in the file as _class_names",
        coco_map=_COCO_MAP[size],
        description=f"YOLO-NAS {size.upper()} COCO, Ultralytics asset: a pickled super-gradients nn.Module",
    )


_ENTRIES: dict[str, WeightEntry] = {
    entry.name: entry for size in "sml" for entry in (_sg_entry(size), _ultralytics_entry(size))
}
# A bare variant name means the publisher's own checkpoint, the one with a known SHA-256.
_DEFAULTS = {f"yolo_nas_{size}": f"yolo_nas_{size}.coco" for size in "sml"}


def list_weights() -> list[str]:
    """Every registered weight name, e.g. `yolo_nas_s.coco`."""
    return sorted(_ENTRIES)


def is_known(name: str) -> bool:
    return name in _ENTRIES or name in _DEFAULTS


def get_entry(name: str) -> WeightEntry:
    """The entry for a weight name, or for a bare variant name its default (`yolo_nas_s` → `yolo_nas_s.coco`)."""
    entry = _ENTRIES.get(_DEFAULTS.get(name, name))
    if entry is None:
        raise UnknownWeightsError(
            f"unknown YOLO-NAS weights {name!r}; known names: {', '.join(list_weights())} "
            f"(or a bare variant: {', '.join(sorted(_DEFAULTS))})"
        )
    return entry
