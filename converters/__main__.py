"""Convert a YOLO-NAS weight file into a nasjax checkpoint directory:

    python -m converters SRC -o OUT_DIR [--form full|partial|training] [--variant yolo_nas_s] [--overwrite]

SRC is an Ultralytics `.pt`, a super-gradients `.pth` checkpoint, a saved state dict or a `.safetensors`
file. OUT_DIR receives the orbax checkpoint of the Flax variables (fully fused unless --form says
otherwise) and `nasjax.json` (variant, classes, form, source SHA-256); load it with `nasjax.load(OUT_DIR)`.
Bad input ends with exit status 2 and a one-line message.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from configs import VARIANTS
from nasjax.models import FORMS  # in fusion order: a form converts only to itself or a later one

EXIT_BAD_INPUT = 2


class ConversionError(ValueError):
    """A conversion that cannot be done as asked."""


def convert(source: Path, output: Path, form: str = "full", variant: str | None = None, overwrite: bool = False) -> str:
    """Convert `source` into the checkpoint directory `output`; returns a one-line summary."""
    from nasjax.checkpoint import save_detector
    from nasjax.loading import convert_file, source_metadata

    if output.exists() and not overwrite:
        raise ConversionError(f"{output} already exists; remove it or pass --overwrite")
    detector, weight_file = convert_file(source, form=None)
    if variant and variant != detector.config.name:
        raise ConversionError(f"{source} holds {detector.config.name} weights, not {variant}")
    if FORMS.index(form) < FORMS.index(detector.form):
        raise ConversionError(
            f"{source} holds {detector.form}-form (fused) weights, which cannot become the {form} form: "
            f"fusion cannot be undone; choose --form {' or '.join(FORMS[FORMS.index(detector.form):])}"
        )
    if form != detector.form:
        detector = detector.fuse(form)
    save_detector(detector, output, source_metadata(weight_file, source.name), overwrite=overwrite)
    return (
        f"wrote {output}: {detector.config.name}, {detector.form} form, {detector.num_classes} classes, "
        f"from {source.name} ({weight_file.source_format}, sha256 {weight_file.sha256})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m converters",
        description="Convert a YOLO-NAS weight file (.pt, .pth, state dict, .safetensors) into a nasjax checkpoint.",
    )
    parser.add_argument("source", type=Path, metavar="SRC", help="the weight file to convert")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR", help="checkpoint directory to create")
    parser.add_argument("--form", choices=FORMS, default="full", help="QARepVGG form to write (default: full)")
    parser.add_argument("--variant", choices=VARIANTS, help="expected variant (default: inferred from the tensors)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    args = parser.parse_args(argv)

    from converters.state_dict import StateDictError
    from converters.weight_file import WeightFileError  # UnsafeFileError is one too

    if not args.source.is_file():
        what = "a directory" if args.source.is_dir() else "not found"
        print(f"error: {args.source}: {what}; expected a weight file", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        print(convert(args.source, args.output, args.form, args.variant, args.overwrite))
    except (ConversionError, WeightFileError, StateDictError, OSError) as e:
        message = " ".join(str(e).split())  # one line, however the error formats itself
        print(f"error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
