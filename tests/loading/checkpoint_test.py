"""Orbax checkpoints of detectors: exact round trips, atomic writes, and clear errors for damaged ones."""
from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

import nasjax
from nasjax.loading.checkpoint import METADATA_FILE, VARIABLES_DIR, CheckpointError, load_detector, read_metadata, save_detector
from nasjax.weights import COCO_CLASS_NAMES

@pytest.fixture(scope="module")
def detector():
    return nasjax.build("yolo_nas_s", form="partial", class_names=COCO_CLASS_NAMES)


@pytest.fixture(scope="module")
def saved(detector, tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt") / "yolo_nas_s"
    save_detector(detector, directory, {"source_sha256": "ab" * 32, "source_format": "state_dict"})
    return directory


def test_round_trip_is_exact(detector, saved):
    restored = load_detector(saved)
    assert (restored.config.name, restored.form, restored.num_classes) == ("yolo_nas_s", "partial", 80)
    assert restored.class_names == list(COCO_CLASS_NAMES)
    original = dict(nnx.to_flat_state(detector.variables))
    for path, variable in nnx.to_flat_state(restored.variables):
        value, expected = variable.get_value(), original[path].get_value()
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected), err_msg=str(path))
        assert variable.get_value().dtype == original[path].get_value().dtype
    assert len(original) == len(list(nnx.to_flat_state(restored.variables)))
    # Same structure and uncommitted arrays like a fresh conversion: both share compiled executables.
    assert restored.graphdef == detector.graphdef
    assert not any(leaf.committed for leaf in jax.tree.leaves(restored.variables))


def test_metadata(saved):
    info = read_metadata(saved)
    assert info["variant"] == "yolo_nas_s" and info["form"] == "partial" and info["num_classes"] == 80
    assert info["nasjax_version"] == nasjax.__version__
    assert info["source_sha256"] == "ab" * 32 and info["source_format"] == "state_dict"
    assert sorted(p.name for p in saved.iterdir()) == [METADATA_FILE, VARIABLES_DIR]
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]  # no staging directory left behind


def test_existing_directory_needs_overwrite(detector, saved, tmp_path):
    with pytest.raises(FileExistsError, match="already exists"):
        save_detector(detector, saved)
    target = tmp_path / "again"
    shutil.copytree(saved, target)
    save_detector(detector, target, {"note": "second"}, overwrite=True)
    assert read_metadata(target)["note"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["again"]


def test_metadata_cannot_override_model_fields(detector, tmp_path):
    with pytest.raises(ValueError, match="variant"):
        save_detector(detector, tmp_path / "x", {"variant": "yolo_nas_l"})
    assert not (tmp_path / "x").exists()


def _damaged(saved, tmp_path, **changes):
    target = tmp_path / "damaged"
    shutil.copytree(saved, target)
    info = json.loads((target / METADATA_FILE).read_text())
    info.update(changes)
    (target / METADATA_FILE).write_text(json.dumps(info))
    return target


def test_directory_without_metadata(saved, tmp_path):
    target = tmp_path / "bare"
    shutil.copytree(saved / VARIABLES_DIR, target / VARIABLES_DIR)
    with pytest.raises(CheckpointError, match=f"no {METADATA_FILE}"):
        load_detector(target)


def test_metadata_that_does_not_match_the_arrays(saved, tmp_path):
    expected = r"do not fit yolo_nas_s \(partial form, 10 classes\).*cls_pred.* has shape \(1, 1, 64, 80\), expected \(1, 1, 64, 10\)"
    with pytest.raises(CheckpointError, match=expected):
        load_detector(_damaged(saved, tmp_path, num_classes=10, class_names=None))


def test_metadata_of_another_form(saved, tmp_path):
    with pytest.raises(CheckpointError, match="missing .*branch_3x3"):
        load_detector(_damaged(saved, tmp_path, form="training"))


def test_invalid_metadata_fields(saved, tmp_path):
    with pytest.raises(CheckpointError, match="variant 'yolo_nas_xl'.*num_classes -1"):
        load_detector(_damaged(saved, tmp_path, variant="yolo_nas_xl", num_classes=-1))


def test_corrupt_json(saved, tmp_path):
    target = tmp_path / "corrupt"
    shutil.copytree(saved, target)
    (target / METADATA_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_detector(target)


def test_missing_arrays(saved, tmp_path):
    target = tmp_path / "no_arrays"
    shutil.copytree(saved, target)
    shutil.rmtree(target / VARIABLES_DIR)
    with pytest.raises(CheckpointError, match="cannot read the orbax checkpoint"):
        load_detector(target)
