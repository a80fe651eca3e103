"""Weight file → nasjax checkpoint folder, once, so that later loads skip reading and converting.

    nasjax convert yolo_nas_s.pt -o converted/yolo_nas_s [form=full|partial|training] [variant=...]

The folder holds the orbax checkpoint of the Flax variables (fully fused unless `form` says otherwise)
and `nasjax.json` (variant, classes, form, source SHA-256); `nasjax.load(folder)` reads it.
"""
from __future__ import annotations

from pathlib import Path

from nasjax.model.yolo_nas import FORMS  # in fusion order: a form converts only to itself or a later one


class ConversionError(ValueError):
    """A conversion that cannot be done as asked."""


def convert(source: Path, output: Path, form: str = "full", variant: str | None = None, overwrite: bool = False) -> str:
    """Convert `source` into the checkpoint directory `output`; returns a one-line summary."""
    from nasjax.loading.checkpoint import save_detector
    from nasjax.loading import convert_file, source_metadata

    if output.exists() and not overwrite:
        raise ConversionError(f"{output} already exists; remove it or pass overwrite=true")
    detector, weight_file = convert_file(source, form=None)
    if variant and variant != detector.config.name:
        raise ConversionError(f"{source} holds {detector.config.name} weights, not {variant}")
    if FORMS.index(form) < FORMS.index(detector.form):
        raise ConversionError(
            f"{source} holds {detector.form}-form (fused) weights, which cannot become the {form} form: "
            f"fusion cannot be undone; choose form={' or '.join(FORMS[FORMS.index(detector.form):])}"
        )
    if form != detector.form:
        detector = detector.fuse(form)
    save_detector(detector, output, source_metadata(weight_file, source.name), overwrite=overwrite)
    return (
        f"wrote {output}: {detector.config.name}, {detector.form} form, {detector.num_classes} classes, "
        f"from {source.name} ({weight_file.source_format}, sha256 {weight_file.sha256})"
    )
