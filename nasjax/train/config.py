"""The settings of a training run, as data: `TrainConfig`.

A run is defined by its config (plus the data and the model it starts from), so the config is a frozen
dataclass that checks every field when it is made, round-trips through JSON (`to_dict` / `from_dict`,
what `run.json` stores), and is the one list of defaults that the Python API, `Detector.train` and the
`nasjax train` command share. `--resume` rebuilds the run from the saved config instead of from the
defaults (docs/training.md, "Resuming").

The defaults are super-gradients' YOLO-NAS recipe (recipes/training_hyperparams/
coco2017_yolo_nas_train_params.yaml, dataset_params/coco_detection_yolo_nas_dataset_params.yaml) and
Ultralytics' output layout (runs/detect/train, train2, ...).
"""
from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
from typing import Any, Mapping

from nasjax.data.augment import Augmentation
from nasjax.data.preprocessing import PREPROCESS_METHODS

# super-gradients' coco2017_yolo_nas_train_params.yaml
DEFAULT_LR = 2e-4
WARMUP_INITIAL_LR = 1e-6
WARMUP_STEPS = 1000
COSINE_FINAL_LR_RATIO = 0.1
WEIGHT_DECAY = 1e-5
EMA_DECAY = 0.9997

DEFAULT_PROJECT = "runs/detect"
DEFAULT_NAME = "train"
BEST_METRICS = ("map50_95", "val_loss")
DTYPES = ("float32", "bfloat16")
AUGMENTATIONS = ("recipe", "light", "none")

# What a resumed run may change (docs/training.md, "Resuming"); every other setting is the saved one.
# epochs extends the run; max_steps stops this call (it is never carried over); the rest only change
# how the run is watched or fed, not its result.
RESUME_OVERRIDABLE = ("epochs", "max_steps", "workers", "progress", "plot")
# Where the run is, not how it trains: used to find it, never compared.
LOCATION = ("project", "name", "exist_ok")


class TrainingError(ValueError):
    """A training run cannot start or go on; the message says what to change."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run except the data and the starting model.

    pretrained: a registered model name starts from its published weights (other sources always carry
        their own weights). augmentation: "recipe" (super-gradients' YOLO-NAS augmentations), "light"
        (flip + HSV), "none", or an `Augmentation`; mosaic / mixup override its probabilities.
    close_augmentation: the last N epochs train with "light" augmentation (Ultralytics' close_mosaic).
    static_assigner_epochs: the first N epochs assign targets with ATSS, then the task-aligned assigner
        (PP-YOLOE's static_assigner_epoch; the YOLO-NAS recipe uses the task-aligned assigner throughout).
    dtype: "float32" or "bfloat16" (mixed precision with float32 master weights).
    max_steps: stop after this many optimizer steps in all (smoke runs); the schedule still spans epochs.
    best_metric: what picks best/: "map50_95" (COCO mAP on the validation split) or "val_loss".
    val: evaluate on the validation split after every epoch. method: the final resize ("centre_pad",
        super-gradients', or "letterbox").
    project / name / exist_ok: the run directory project/name; name "train", then "train2", ... unless
        exist_ok (which replaces that run's training state).
    """

    pretrained: bool = False
    epochs: int = 10
    batch: int = 16
    imgsz: int = 640
    lr: float = DEFAULT_LR
    weight_decay: float = WEIGHT_DECAY
    warmup_steps: int = WARMUP_STEPS
    warmup_initial_lr: float = WARMUP_INITIAL_LR
    final_lr_ratio: float = COSINE_FINAL_LR_RATIO
    ema_decay: float = EMA_DECAY
    augmentation: "str | Augmentation" = "recipe"
    mosaic: float | None = None
    mixup: float | None = None
    close_augmentation: int = 0
    static_assigner_epochs: int = 0
    dtype: str = "float32"
    seed: int = 0
    max_steps: int | None = None
    best_metric: str = "map50_95"
    val: bool = True
    method: str = "centre_pad"
    project: str = DEFAULT_PROJECT
    name: str | None = None
    exist_ok: bool = False
    workers: int = 4
    plot: bool = True
    progress: bool = True

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("pretrained", "val", "exist_ok", "plot", "progress"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TrainingError(f"{name} must be true or false, got {value!r}")
        for name, low in (("epochs", 1), ("batch", 1), ("warmup_steps", 0), ("close_augmentation", 0),
                          ("static_assigner_epochs", 0), ("workers", 1), ("seed", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < low:
                raise TrainingError(f"{name} must be an integer >= {low}, got {value!r}")
            put(name, int(value))
        if not _is_int(self.imgsz) or self.imgsz < 32 or self.imgsz % 32:
            raise TrainingError(f"imgsz must be a positive multiple of 32 (the network's largest stride), "
                                f"got {self.imgsz!r}")
        put("imgsz", int(self.imgsz))
        if self.max_steps is not None:
            if not _is_int(self.max_steps) or self.max_steps < 1:
                raise TrainingError(f"max_steps must be a positive integer or None, got {self.max_steps!r}")
            put("max_steps", int(self.max_steps))
        for name, low, high, what in (("lr", 0.0, None, "a positive number"),
                                      ("weight_decay", 0.0, None, "a number >= 0"),
                                      ("warmup_initial_lr", 0.0, None, "a number >= 0"),
                                      ("final_lr_ratio", 0.0, 1.0, "a number in [0, 1]"),
                                      ("ema_decay", 0.0, 1.0, "a number in [0, 1)")):
            value = getattr(self, name)
            ok = _is_number(value) and value >= low and (high is None or value <= high)
            ok = ok and not (name == "lr" and value == 0) and not (name == "ema_decay" and value == 1)
            if not ok:
                raise TrainingError(f"{name} must be {what}, got {value!r}")
            put(name, float(value))
        for name in ("mosaic", "mixup"):
            value = getattr(self, name)
            if value is not None:
                if not _is_number(value) or not 0.0 <= value <= 1.0:
                    raise TrainingError(f"{name} is a probability and must be in [0, 1] (or None), got {value!r}")
                put(name, float(value))
        augmentation = self.augmentation
        if isinstance(augmentation, Mapping):
            try:
                augmentation = Augmentation(**augmentation)
            except (TypeError, ValueError) as error:
                raise TrainingError(f"augmentation: {error}") from error
        if augmentation is None:
            augmentation = "recipe"
        if not isinstance(augmentation, Augmentation) and augmentation not in AUGMENTATIONS:
            raise TrainingError(f"augmentation must be one of {', '.join(AUGMENTATIONS)} or an Augmentation, "
                                f"got {augmentation!r}")
        put("augmentation", augmentation)
        for name, choices in (("dtype", DTYPES), ("best_metric", BEST_METRICS), ("method", PREPROCESS_METHODS)):
            if getattr(self, name) not in choices:
                raise TrainingError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if not isinstance(self.project, (str, os.PathLike)) or not str(self.project):
            raise TrainingError(f"project must be a folder path, got {self.project!r}")
        put("project", os.fspath(self.project))
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()
                                      or os.sep in self.name or self.name in (".", "..")):
            raise TrainingError(f"name must be a folder name under project (no {os.sep}), or None, got {self.name!r}")

    # ---- serialisation -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; an `Augmentation` becomes the dict of its fields."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(self.augmentation, Augmentation):
            out["augmentation"] = _plain(dataclasses.asdict(self.augmentation))
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """The config for `to_dict`'s output (missing keys take the defaults; unknown keys are an error)."""
        check_names(values, "setting")
        return cls(**values)

    def replace(self, **overrides) -> "TrainConfig":
        """This config with some settings changed (checked like a new config)."""
        check_names(overrides, "setting")
        return dataclasses.replace(self, **overrides)

    # ---- derived values ------------------------------------------------------------------------------

    def resolved_augmentation(self) -> Augmentation:
        """The `Augmentation` the loader uses: the preset (or instance) with mosaic / mixup applied."""
        return resolve_augmentation(self.augmentation, self.mosaic, self.mixup)

    def recipe_dict(self) -> dict[str, Any]:
        """What must be the same to continue a run: every setting but the resumable ones and the location."""
        return {k: v for k, v in self.to_dict().items() if k not in RESUME_OVERRIDABLE + LOCATION}


def resumed_config(saved: TrainConfig, given: Mapping[str, Any], where: str) -> TrainConfig:
    """The config a resumed run continues with: the saved one, with only the RESUME_OVERRIDABLE settings
    taken from `given` (what the caller set explicitly). Any other setting given with a value different
    from the saved one is a TrainingError naming it; max_steps is never carried over (it stops a call)."""
    saved_values = saved.to_dict()
    changes = {}
    for key, value in given.items():
        if key in LOCATION:
            continue
        if key in RESUME_OVERRIDABLE:
            changes[key] = value
            continue
        wanted = saved.replace(**{key: value}).to_dict()[key]  # normalised as the saved value was
        if wanted != saved_values[key]:
            raise TrainingError(
                f"resume: {key} cannot change on resume ({where} was started with {key}={saved_values[key]!r}, "
                f"got {value!r}); a resumed run continues with its saved settings. On resume you may change only "
                f"{', '.join(RESUME_OVERRIDABLE)}; to change {key}, start a new run from this run's weights "
                f"(model='{where}/last')")
    return dataclasses.replace(saved, max_steps=None).replace(**changes)


def setting_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(TrainConfig))


def check_names(values: Mapping[str, Any], what: str = "setting") -> None:
    """A clear error for a misspelled setting (with the nearest known name)."""
    known = setting_names()
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise TrainingError(f"unknown training {what} {key!r}{hint}")


def resolve_augmentation(augmentation: "Augmentation | str | None", mosaic: float | None = None,
                         mixup: float | None = None) -> Augmentation:
    """An `Augmentation` from a preset name ("recipe": super-gradients' YOLO-NAS recipe, the default;
    "light": flip and HSV only; "none") or an instance, with the mosaic / mixup probabilities overridden."""
    if augmentation is None or isinstance(augmentation, str):
        name = augmentation or "recipe"
        if name not in AUGMENTATIONS:
            raise TrainingError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {name!r}")
        augmentation = {"recipe": Augmentation, "light": Augmentation.light, "none": Augmentation.none}[name]()
    overrides = {k: v for k, v in (("mosaic_prob", mosaic), ("mixup_prob", mixup)) if v is not None}
    return dataclasses.replace(augmentation, **overrides) if overrides else augmentation


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
