"""Fixtures the export test files share (tests/export/*_test.py import them by name): YOLO-NAS S with
deterministic random weights, a folder for the module's exports, and six generated calibration images
of assorted sizes. Module-scoped: each file builds its model and exports once."""
from __future__ import annotations

import pytest
from conftest import REFERENCE_DIR, _load_by_path
from PIL import Image

cases = _load_by_path("predict_cases", REFERENCE_DIR / "predict_cases.py")


@pytest.fixture(scope="module")
def detector():
    import nasjax

    return nasjax.build("yolo_nas_s", seed=0)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory, request):
    """A folder for this test file's exports, named after it."""
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1].removesuffix("_test"))


@pytest.fixture(scope="module")
def calibration_dir(out_dir):
    directory = out_dir / "calibration"
    directory.mkdir()
    for i in range(6):
        Image.fromarray(cases.pattern_image(48 + 16 * i, 80 - 8 * i, i + 1)).save(directory / f"im{i}.png")
    return directory
