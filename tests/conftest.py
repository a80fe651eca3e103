"""Shared fixtures: the committed reference outputs and, when present, ../shared."""
from __future__ import annotations

import gc
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO / "tests" / "reference"
SHARED = Path(os.environ.get("NASJAX_SHARED", REPO.parent / "shared"))


def _load_by_path(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The same file make_reference.py loads in the super-gradients environment: cases, seeds, sampling.
sampling = _load_by_path("reference_sampling", REFERENCE_DIR / "sampling.py")


def read_listing(path: Path) -> dict[str, tuple[int, ...]]:
    """A `key<TAB>shape<TAB>dtype` listing as {key: shape}."""
    shapes = {}
    for line in path.read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def reference_keys(variant: str, form: str) -> dict[str, tuple[int, ...]]:
    return read_listing(REFERENCE_DIR / f"{variant}.{form}.keys.txt")


def reference_outputs(variant: str, case: str, form: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCE_DIR / f"{variant}_{case}_{form}.npz") as data:
        return dict(data)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a fresh clone elsewhere has no ../shared)")
    return SHARED


@pytest.fixture
def scored_dataset(tmp_path) -> tuple[Path, Path]:
    """(data YAML, COCO predictions file) of one 64x64 image with one box, detected exactly (mAP 1):
    validation without a model."""
    import json

    from PIL import Image

    root = tmp_path / "ds"
    (root / "images/val").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "images/val/a.jpg")
    (root / "labels/val/a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "data.yaml").write_text(f"path: {root}\nval: images/val\nnames: {{0: thing}}\n")
    predictions = tmp_path / "p.json"
    predictions.write_text(json.dumps([{"image_id": "a", "category_id": 1, "bbox": [16, 16, 32, 32], "score": 0.9}]))
    return root / "data.yaml", predictions


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty nasjax cache (NASJAX_HOME) for the test."""
    monkeypatch.setenv("NASJAX_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test file, drop what JAX compiled for it: a file compiles its own models once, and a
    test process (pytest-xdist runs two) would otherwise hold every file's programs to the end."""
    yield
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.clear_caches()
    gc.collect()
