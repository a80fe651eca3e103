"""Largest deviation of nasjax from super-gradients 3.7.1 on every committed reference case.

    python benchmarks/parity.py

Uses the same weights, inputs and comparisons as tests/model/model_parity_test.py (which asserts the
tolerances); this prints the measured maxima as a table for the README and the issue notes.
"""
from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "model")]

import model_parity_test as parity  # noqa: E402
from conftest import reference_outputs, sampling  # noqa: E402


def main() -> None:
    print("| variant | input | form | boxes px | scores | class logits | DFL logits |")
    print("|---|---|---|---|---|---|---|")
    for variant, case_name, case in parity.CASES:
        b, h, w = case["batch"], case["height"], case["width"]
        rows = [(form, form) for form in sampling.FORMS]
        rows += [(f"training_fused_{form}", f"training → {form} (nasjax fusion vs super-gradients fusion)")
                 for form in sampling.FUSED_FROM_TRAINING]
        for ref_name, label in rows:
            ref = reference_outputs(variant, case_name, ref_name)
            form = ref_name.rsplit("_", 1)[-1] if ref_name.startswith("training_fused") else ref_name
            source = parity.detector_for(variant, "training" if ref_name.startswith("training_fused") else form)
            detector = source.fuse(form) if ref_name.startswith("training_fused") else source
            e = parity.assert_outputs_match(detector.raw(parity.images_for(case, ref)), ref)
            print(f"| {variant} | {b}x{h}x{w} | {label} | {e['boxes_px']:.1e} | {max(e['scores'], e['scores_max']):.1e} "
                  f"| {e['cls_logits']:.1e} | {e['reg_distri']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
