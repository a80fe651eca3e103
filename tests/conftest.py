"""Shared fixtures: the committed reference outputs and, when present, ../shared."""
from __future__ import annotations

import importlib.util
import os
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
