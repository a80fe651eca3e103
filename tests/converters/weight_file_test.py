"""read_weight_file on real files written by torch (tests/torch_files.py) and, when present, by
super-gradients itself: every format in every QARepVGG form gives exactly the tensors that went in,
and the model nasjax builds from them is the one built from the numpy tensors directly."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import nasjax
import torch_files
from conftest import REPO, reference_keys
from nasjax.model.state_dict import reference_key_shapes
from nasjax.converters.weight_file import UnsafeFileError, WeightFileError, read_weight_file
from nasjax.model.deterministic_weights import deterministic_state_dict, seeded_images
from nasjax.weights.coco import COCO_CLASS_NAMES

FORMS = ("training", "partial", "full")
ORACLE_DIR = Path(os.environ.get("NASJAX_ORACLE_ARTIFACTS", "/work/oracle_artifacts"))
IMAGES = seeded_images(seed=3, batch=1, height=64, width=64)
COCO_PROCESSING = [{"type": name, **params} for name, params in torch_files.COCO_PROCESSING]


def write_whole_model(path, state_dict, form):
    return torch_files.save_whole_model(path, "yolo_nas_s", state_dict, form)


def write_checkpoint(path, state_dict, form):
    return torch_files.save_checkpoint(path, state_dict)


def write_checkpoint_with_ema(path, state_dict, form):
    # `net` differs from `ema_net`: the reader must take the EMA weights, as super-gradients does.
    return torch_files.save_checkpoint(path, {k: np.zeros_like(v) for k, v in state_dict.items()}, ema_net=state_dict)


def write_state_dict(path, state_dict, form):
    return torch_files.save_state_dict(path, state_dict)


def write_data_parallel_state_dict(path, state_dict, form):
    return torch_files.save_state_dict(path, state_dict, prefix="module.")


def write_safetensors(path, state_dict, form):
    return torch_files.save_safetensors(path.with_suffix(".safetensors"), state_dict)


# writer → (function, source_format, whether the file keeps super-gradients' key order)
WRITERS = {
    "whole_model": (write_whole_model, "ultralytics_whole_model", True),
    "checkpoint": (write_checkpoint, "sg_checkpoint", True),
    "checkpoint_ema": (write_checkpoint_with_ema, "sg_checkpoint", True),
    "state_dict": (write_state_dict, "state_dict", True),
    "data_parallel": (write_data_parallel_state_dict, "state_dict", True),
    "safetensors": (write_safetensors, "safetensors", False),  # safetensors stores names sorted
}

_state_dicts: dict = {}
_detectors: dict = {}


def state_dict_for(variant: str, form: str) -> dict[str, np.ndarray]:
    """Deterministic weights generated directly in `form` (cached for the module)."""
    if (variant, form) not in _state_dicts:
        _state_dicts[variant, form] = deterministic_state_dict(reference_keys(variant, form), 0)
    return _state_dicts[variant, form]


def direct_detector(form: str) -> nasjax.Detector:
    """The model nasjax builds from the numpy tensors, without any file in between."""
    if form not in _detectors:
        _detectors[form] = nasjax.from_state_dict(state_dict_for("yolo_nas_s", form), form=None)
    return _detectors[form]


def assert_same_tensors(actual: dict, expected: dict, same_order: bool = True) -> None:
    assert list(actual) == list(expected) if same_order else sorted(actual) == sorted(expected)
    for name, array in expected.items():
        got = actual[name]
        assert isinstance(got, np.ndarray) and got.dtype == array.dtype and got.shape == array.shape, name
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(array).tobytes(), name


def assert_same_variables(detector: nasjax.Detector, reference: nasjax.Detector) -> None:
    assert detector.graphdef == reference.graphdef
    leaves = jax.tree.leaves(detector.variables)
    reference_leaves = jax.tree.leaves(reference.variables)
    assert len(leaves) == len(reference_leaves)
    for leaf, reference_leaf in zip(leaves, reference_leaves):
        assert leaf.dtype == reference_leaf.dtype
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(reference_leaf))


def assert_same_outputs(detector: nasjax.Detector, reference: nasjax.Detector) -> None:
    for got, expected in zip(detector(IMAGES), reference(IMAGES)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def read_and_check(path: Path, state_dict: dict, source_format: str, form: str, same_order: bool) -> nasjax.Detector:
    weight_file = read_weight_file(path)
    assert (weight_file.source_format, weight_file.form, weight_file.variant, weight_file.num_classes) == (
        source_format, form, "yolo_nas_s", 80
    )  # fmt: skip
    assert len(weight_file.sha256) == 64
    assert_same_tensors(weight_file.state_dict, state_dict, same_order)
    detector = nasjax.from_state_dict(weight_file.state_dict, form=None)
    assert_same_variables(detector, direct_detector(form))
    return detector


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_format_and_form_gives_the_same_model(tmp_path, writer, form):
    write, source_format, same_order = WRITERS[writer]
    state_dict = state_dict_for("yolo_nas_s", form)
    detector = read_and_check(write(tmp_path / "weights.pt", state_dict, form), state_dict, source_format, form, same_order)
    if form == "training":  # one compile per form: the fused forms' outputs are checked in the slow test below
        assert_same_outputs(detector, direct_detector(form))


@pytest.mark.slow
@pytest.mark.parametrize("form", ["partial", "full"])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_fused_forms_give_the_same_outputs(tmp_path, writer, form):
    write, source_format, same_order = WRITERS[writer]
    state_dict = state_dict_for("yolo_nas_s", form)
    detector = read_and_check(write(tmp_path / "weights.pt", state_dict, form), state_dict, source_format, form, same_order)
    assert_same_outputs(detector, direct_detector(form))


def test_whole_model_carries_names_processing_and_nms(tmp_path):
    path = write_whole_model(tmp_path / "yolo_nas_s.pt", state_dict_for("yolo_nas_s", "partial"), "partial")
    weight_file = read_weight_file(path)
    assert weight_file.class_names == list(COCO_CLASS_NAMES)
    metadata = weight_file.metadata
    assert metadata["root_class"].endswith("yolo_nas_variants.YoloNAS_S")
    assert metadata["nms"] == {
        "iou": 0.7, "conf": 0.25, "top_k": 1024, "max_predictions": 300, "multi_label_per_box": True,
        "class_agnostic_nms": False,
    }  # fmt: skip
    assert metadata["processing"] == COCO_PROCESSING
    assert metadata["head"] == {"fpn_strides": (8, 16, 32), "reg_max": 16, "grid_cell_offset": 0.5}
    flags = metadata["qarepvgg_flags"]
    assert len(flags) == 37
    assert all(f == {"partially_fused": True, "fully_fused": False} for f in flags.values())


def test_whole_model_state_dict_is_the_one_torch_computes(tmp_path):
    """The reader's nn.Module walk against torch's own `model.state_dict()` on the same pickle (with
    non-persistent buffers and plain tensor attributes that must stay out)."""
    tiny = torch_files.tiny_state_dict(state_dict_for("yolo_nas_s", "training"))
    path = torch_files.save_whole_model(tmp_path / "whole.pt", "yolo_nas_s", tiny, "training")
    expected = {k: v.numpy() for k, v in torch_files.load_whole_model_with_torch(path).state_dict().items()}
    assert_same_tensors(read_weight_file(path).state_dict, expected)


def test_whole_model_pickled_by_older_super_gradients(tmp_path):
    """The Ultralytics files lack attributes added after super-gradients 3.1 (NMS top-k etc., fusion flags)."""
    state_dict = state_dict_for("yolo_nas_s", "training")
    path = torch_files.save_whole_model(tmp_path / "old.pt", "yolo_nas_s", state_dict, "training", newer_sg=False)
    weight_file = read_weight_file(path)
    assert weight_file.form == "training" and weight_file.variant == "yolo_nas_s"
    assert weight_file.metadata["nms"] == torch_files.COCO_NMS
    assert "qarepvgg_flags" not in weight_file.metadata
    assert_same_tensors(weight_file.state_dict, state_dict)


def test_checkpoint_metadata_and_processing_params(tmp_path):
    state_dict = state_dict_for("yolo_nas_s", "training")
    path = torch_files.save_checkpoint(tmp_path / "ckpt.pth", state_dict, prefix="module.", processing_params=True)
    weight_file = read_weight_file(path)
    assert weight_file.class_names == list(COCO_CLASS_NAMES)
    checkpoint = weight_file.metadata["checkpoint"]
    assert checkpoint["weights_key"] == "net" and checkpoint["epoch"] == 299
    assert checkpoint["acc"] == pytest.approx(0.4751)
    assert "optimizer_state_dict" in checkpoint["keys"]
    assert weight_file.metadata["stripped_prefix"] == "module."
    assert weight_file.metadata["nms"] == torch_files.COCO_NMS
    assert weight_file.metadata["processing"] == COCO_PROCESSING
    assert_same_tensors(weight_file.state_dict, state_dict)


def test_safetensors_metadata_and_half_precision(tmp_path):
    state_dict = {
        k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in state_dict_for("yolo_nas_s", "full").items()
    }
    path = torch_files.save_safetensors(tmp_path / "w.safetensors", state_dict, metadata={"note": "fp16"})
    weight_file = read_weight_file(path)
    assert weight_file.metadata["safetensors_metadata"] == {"note": "fp16"}
    assert weight_file.form == "full" and weight_file.variant == "yolo_nas_s"
    assert_same_tensors(weight_file.state_dict, state_dict, same_order=False)


def test_other_class_count(tmp_path):
    shapes = reference_key_shapes("yolo_nas_s", "full", num_classes=3)
    path = torch_files.save_state_dict(tmp_path / "three.pt", deterministic_state_dict(shapes, 0))
    weight_file = read_weight_file(path)
    assert (weight_file.num_classes, weight_file.variant, weight_file.form) == (3, "yolo_nas_s", "full")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["yolo_nas_m", "yolo_nas_l"])
def test_medium_and_large_state_dicts(tmp_path, variant):
    state_dict = deterministic_state_dict(reference_keys(variant, "training"), 0)
    path = torch_files.save_state_dict(tmp_path / f"{variant}.pt", state_dict)
    weight_file = read_weight_file(path)
    assert (weight_file.variant, weight_file.form, weight_file.num_classes) == (variant, "training", 80)
    assert_same_tensors(weight_file.state_dict, state_dict)
    reference = nasjax.from_state_dict(state_dict, form=None)
    assert_same_variables(nasjax.from_state_dict(weight_file.state_dict, form=None), reference)


# ---------------------------------------------------------------------------------------------
# Files written by super-gradients itself (tests/reference/make_reference.py --whole-model-dir)


def oracle_file(name: str) -> Path:
    path = ORACLE_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (made by tests/reference/make_reference.py --whole-model-dir)")
    return path


ORACLE_VARIANTS = [
    "yolo_nas_s",
    pytest.param("yolo_nas_m", marks=pytest.mark.slow),
    pytest.param("yolo_nas_l", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("variant", ORACLE_VARIANTS)
def test_whole_model_saved_by_super_gradients(variant):
    weight_file = read_weight_file(oracle_file(f"{variant}_whole_training.pt"))
    expected = deterministic_state_dict(reference_key_shapes(variant, "training"), 0)
    assert_same_tensors(weight_file.state_dict, expected, same_order=False)  # nasjax lists keys in its own order
    assert list(weight_file.state_dict) == list(reference_keys(variant, "training"))  # super-gradients' order
    assert (weight_file.source_format, weight_file.variant, weight_file.form, weight_file.num_classes) == (
        "ultralytics_whole_model", variant, "training", 80
    )  # fmt: skip
    # make_reference.py builds models.get(variant, num_classes=80) without dataset processing params,
    # so the file carries super-gradients 3.7.1's bare defaults (docs/file_formats.md#recovered lists the COCO ones).
    assert weight_file.class_names is None
    metadata = weight_file.metadata
    assert metadata["sg_model_name"] == variant
    assert metadata["nms"] == {
        "iou": 0.7, "conf": 0.5, "top_k": 1024, "max_predictions": 300, "multi_label_per_box": True,
        "class_agnostic_nms": False,
    }  # fmt: skip
    assert metadata["head"]["fpn_strides"] == (8, 16, 32) and metadata["head"]["reg_max"] == 16
    assert metadata["head"]["grid_cell_offset"] == 0.5
    flags = metadata["qarepvgg_flags"].values()
    assert flags and all(f == {"partially_fused": False, "fully_fused": False} for f in flags)


def test_state_dict_saved_by_super_gradients():
    weight_file = read_weight_file(oracle_file("yolo_nas_s_state_dict_training.pt"))
    assert (weight_file.source_format, weight_file.variant, weight_file.form) == ("state_dict", "yolo_nas_s", "training")
    assert_same_tensors(weight_file.state_dict, state_dict_for("yolo_nas_s", "training"))


def test_whole_model_with_coco_processing_saved_by_super_gradients():
    """A real YoloNAS_S after set_dataset_processing_params(**default_yolo_nas_coco_processing_params()),
    the state the Ultralytics files were pickled in (docs/file_formats.md#recovered, docs/preprocessing.md#processing-params)."""
    weight_file = read_weight_file(oracle_file("yolo_nas_s_whole_coco_processing.pt"))
    assert weight_file.class_names == list(COCO_CLASS_NAMES)
    assert weight_file.metadata["processing"] == COCO_PROCESSING
    assert weight_file.metadata["nms"]["iou"] == 0.7 and weight_file.metadata["nms"]["conf"] == 0.25


# ---------------------------------------------------------------------------------------------
# Without torch


def test_reader_never_imports_torch(tmp_path):
    tiny = torch_files.tiny_state_dict(state_dict_for("yolo_nas_s", "training"))
    state_dict = state_dict_for("yolo_nas_s", "training")
    files = [
        torch_files.save_whole_model(tmp_path / "whole.pt", "yolo_nas_s", tiny, "training"),  # variant from the class
        torch_files.save_checkpoint(tmp_path / "ckpt.pth", state_dict, processing_params=True),
        torch_files.save_state_dict(tmp_path / "sd.pt", state_dict),
    ]
    script = (
        "import sys\n"
        "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
        "from converters.weight_file import read_weight_file\n"
        "for path in sys.argv[1:]:\n"
        "    wf = read_weight_file(path)\n"
        "    print(wf.source_format, wf.variant, wf.form, wf.num_classes, len(wf.state_dict))\n"
        "assert sys.modules['torch'] is None\n"
        "assert not any(name.startswith(('torch.', 'super_gradients')) for name in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, files)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "ultralytics_whole_model yolo_nas_s training 1 921",
        "sg_checkpoint yolo_nas_s training 80 921",
        "state_dict yolo_nas_s training 80 921",
    ]


# ---------------------------------------------------------------------------------------------
# Errors


def error_for(path) -> str:
    with pytest.raises(WeightFileError) as info:
        read_weight_file(path)
    assert not isinstance(info.value, UnsafeFileError)
    message = str(info.value)
    assert str(path) in message
    return message


def test_missing_file_and_directory(tmp_path):
    assert "No such file" in error_for(tmp_path / "absent.pt")
    assert "is a directory, not a weight file" in error_for(tmp_path)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "HTML page"),
        (b"\n  <html><head><title>Sign in</title>", "HTML page"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n", "Git LFS pointer"),
        (gzip.compress(b"weights"), "gzip"),
        (b'{"weights": [1, 2]}', "JSON"),
        (b"\x89HDF\r\n\x1a\n" + bytes(64), "HDF5"),
        (bytes(range(256)) * 4, "unrecognised content"),
    ],
    ids=["empty", "html", "html-indented", "lfs", "gzip", "json", "hdf5", "binary"],
)
def test_files_that_are_not_weights_say_what_they_are(tmp_path, content, expected):
    path = tmp_path / "yolo_nas_s.pt"
    path.write_bytes(content)
    assert expected in error_for(path)


@pytest.mark.parametrize("writer", [torch_files.save_state_dict, torch_files.save_safetensors])
def test_truncated_downloads(tmp_path, writer):
    source = writer(tmp_path / "full", torch_files.tiny_state_dict(state_dict_for("yolo_nas_s", "training")))
    data = source.read_bytes()
    for fraction in (0.1, 0.5, 0.99):
        path = tmp_path / f"cut{fraction}"
        path.write_bytes(data[: int(len(data) * fraction)])
        assert "truncated" in error_for(path)


def test_another_models_state_dict(tmp_path):
    resnet_like = {"conv1.weight": np.ones((64, 3, 7, 7), np.float32), "fc.weight": np.ones((10, 512), np.float32)}
    message = error_for(torch_files.save_state_dict(tmp_path / "resnet.pt", resnet_like))
    assert "does not hold YOLO-NAS" in message and "conv1.weight" in message


def test_yolo_nas_state_dict_with_a_wrong_tensor(tmp_path):
    state_dict = dict(state_dict_for("yolo_nas_s", "training"))
    del state_dict["neck.neck2.upsample.bias"]
    state_dict["heads.head3.reg_pred.weight"] = np.zeros((68, 3, 1, 1), np.float32)
    message = error_for(torch_files.save_state_dict(tmp_path / "broken.pt", state_dict))
    assert "neck.neck2.upsample.bias" in message and "heads.head3.reg_pred.weight" in message


def test_dict_that_is_neither_checkpoint_nor_state_dict(tmp_path):
    path = torch_files.save_state_dict(tmp_path / "x.pt", {})  # an empty OrderedDict
    assert "not a YOLO-NAS model, not a checkpoint" in error_for(path)


def test_fusion_flags_contradicting_the_tensors(tmp_path):
    tiny = torch_files.tiny_state_dict(state_dict_for("yolo_nas_s", "training"))
    path = torch_files.save_whole_model(tmp_path / "odd.pt", "yolo_nas_s", tiny, "full")  # flags say full
    assert "inconsistent" in error_for(path)
