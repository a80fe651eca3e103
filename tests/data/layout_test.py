"""The shape of nasjax.data: every public name resolves to the module that defines it, the old module
names (`nasjax.datasets`, `nasjax.input_pipeline`) are the package, and one list of image extensions
decides which files are images for dataset splits and predict's folder sources alike."""
from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest

import nasjax
import nasjax.data
from nasjax.data import preprocessing


def test_public_names_resolve_to_their_defining_module():
    for name in nasjax.data.__all__:
        value = getattr(nasjax.data, name)
        module = importlib.import_module(nasjax.data._PUBLIC[name])
        assert getattr(module, name) is value, name
        if hasattr(value, "__module__") and callable(value):
            assert value.__module__ == module.__name__, (name, value.__module__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nasjax.data.nope  # noqa: B018


@pytest.mark.parametrize("old, names", [
    ("nasjax.datasets", ("load_dataset", "check_det_dataset", "list_images", "DatasetError", "CocoJsonDataset",
                         "TfdsCocoDataset", "DATASETS_DIR_ENV", "read_json_file", "Sample", "IMAGE_EXTENSIONS")),
    ("nasjax.input_pipeline", ("Augmentation", "Loader", "load_split", "prepare", "affine_matrix", "mixup_blend",
                               "MAX_BOXES_CAP", "PAD_VALUE", "LossTargets")),
])
def test_old_module_names_are_the_package(monkeypatch, old, names):
    monkeypatch.delitem(sys.modules, old, raising=False)
    monkeypatch.delattr(nasjax, old.rpartition(".")[2], raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is nasjax.data
    assert any(issubclass(w.category, DeprecationWarning) and "nasjax.data" in str(w.message) for w in caught)
    for name in names:
        assert getattr(module, name) is getattr(nasjax.data, name)


def test_one_image_extension_list_for_datasets_and_predict(tmp_path):
    from nasjax.data import yolo
    from nasjax.predict.predictor import list_sources

    assert yolo.IMAGE_EXTENSIONS is preprocessing.IMAGE_EXTENSIONS  # imported, not a second list
    # super-gradients' list: Ultralytics' formats (less heic) plus pgm and ppm.
    assert set(preprocessing.IMAGE_EXTENSIONS) == {"bmp", "dng", "jpeg", "jpg", "mpo", "pfm", "pgm", "png", "ppm",
                                                   "tif", "tiff", "webp"}
    folder = tmp_path / "images"
    folder.mkdir()
    images = {f"a_{ext}.{ext}" for ext in preprocessing.IMAGE_EXTENSIONS} | {"upper.JPG"}
    for name in images | {"notes.txt", "movie.gif", "phone.heic", "labels.json", "no_suffix"}:
        (folder / name).write_bytes(b"")  # listing reads names only
    assert {p.name for p in yolo.list_images([folder])} == images
    assert {Path(item.path).name for item in list_sources(str(folder))} == images
