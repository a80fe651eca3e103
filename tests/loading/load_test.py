"""`nasjax.load`: registered names (download → convert → cache → orbax), paths, and random weights.

Registered names are pointed at a local HTTP server on 127.0.0.1 that serves a `torch.save` state dict
of deterministic weights; nothing leaves the machine.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import shutil
import time

import numpy as np
import pytest

import local_http
from local_http import http_server
import torch
from flax import nnx

import nasjax
from nasjax.converters import weight_file
from nasjax.model.state_dict import reference_key_shapes
from nasjax.loading import checkpoint
from nasjax.loading import hub
from nasjax.model.deterministic_weights import deterministic_state_dict
from nasjax.weights import COCO_CLASS_NAMES, registry

IMAGES = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
NAME = "yolo_nas_s.coco"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(URL, SHA-256, path) of a training-form yolo_nas_s state dict served over local HTTP."""
    root = tmp_path_factory.mktemp("served")
    state_dict = deterministic_state_dict(reference_key_shapes("yolo_nas_s", "training"), 0)
    path = root / "yolo_nas_s_coco.pth"
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
    handler = functools.partial(QuietHandler, directory=str(root))
    with http_server(handler) as base:
        yield f"{base}/{path.name}", hashlib.sha256(path.read_bytes()).hexdigest(), path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def refused_url() -> str:
    return local_http.refused_url("yolo_nas_s_coco.pth")


def register(monkeypatch, **changes) -> registry.WeightEntry:
    entry = dataclasses.replace(registry.get_entry(NAME), **changes)
    monkeypatch.setitem(registry._ENTRIES, NAME, entry)
    return entry


def forbid_conversion(monkeypatch):
    def fail(path):
        raise AssertionError(f"converted {path} again instead of reading the cached checkpoint")

    monkeypatch.setattr(weight_file, "read_weight_file", fail)


def outputs(detector) -> list[np.ndarray]:
    return [np.asarray(x) for x in detector.raw(IMAGES)]


def assert_same_variables(a, b):
    flat_b = dict(nnx.to_flat_state(b.variables))
    flat_a = dict(nnx.to_flat_state(a.variables))
    assert flat_a.keys() == flat_b.keys()
    for path, variable in flat_a.items():
        value, expected = variable.get_value(), flat_b[path].get_value()
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected), err_msg=str(path))


def test_first_load_converts_and_caches_then_orbax(served, home, monkeypatch, capsys):
    url, sha256, _ = served
    register(monkeypatch, urls=(refused_url(), url), sha256=sha256)

    started = time.perf_counter()
    first = nasjax.load("yolo_nas_s")
    first_seconds = time.perf_counter() - started
    cached = home / "converted" / f"{NAME}-{sha256[:12]}-full"
    assert (home / "downloads" / "yolo_nas_s_coco.pth").is_file()
    info = checkpoint.read_metadata(cached)
    assert (info["variant"], info["form"], info["num_classes"]) == ("yolo_nas_s", "full", 80)
    assert info["source_sha256"] == sha256 and info["source_format"] == "state_dict" and info["weights"] == NAME

    register(monkeypatch, urls=(refused_url(),), sha256=sha256)  # no network from here on
    forbid_conversion(monkeypatch)
    started = time.perf_counter()
    second = nasjax.load(NAME)
    second_seconds = time.perf_counter() - started

    assert first.form == second.form == "full"
    assert first.class_names == second.class_names == list(COCO_CLASS_NAMES)
    assert_same_variables(first, second)
    for a, b in zip(outputs(first), outputs(second)):
        np.testing.assert_array_equal(a, b)
    with capsys.disabled():
        print(f"\nyolo_nas_s load: first (download + convert + cache) {first_seconds:.2f} s, "
              f"second (orbax) {second_seconds:.2f} s")


def test_unfused_load_keeps_the_training_form(served, home, monkeypatch):
    url, sha256, _ = served
    register(monkeypatch, urls=(url,), sha256=sha256)
    detector = nasjax.load(NAME, fuse=False)
    assert detector.form == "training"
    assert (home / "converted" / f"{NAME}-{sha256[:12]}-training" / checkpoint.METADATA_FILE).is_file()
    forbid_conversion(monkeypatch)
    assert nasjax.load(NAME, fuse=False).form == "training"


@pytest.fixture(scope="module")
def primed_home(served, tmp_path_factory):
    """A cache holding the served file, downloaded and converted (fully fused) once for the module."""
    url, sha256, _ = served
    primed = tmp_path_factory.mktemp("primed")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NASJAX_HOME", str(primed))
        register(patch, urls=(url,), sha256=sha256)
        nasjax.load(NAME)
    return primed


@pytest.mark.parametrize("damage", ["metadata", "arrays"])
def test_damaged_cache_entry_is_converted_again(served, primed_home, home, monkeypatch, damage):
    _, sha256, _ = served
    shutil.copytree(primed_home, home)
    register(monkeypatch, urls=(refused_url(),), sha256=sha256)  # the downloaded file is reused
    cached = home / "converted" / f"{NAME}-{sha256[:12]}-full"
    if damage == "metadata":
        (cached / checkpoint.METADATA_FILE).unlink()
    else:
        shutil.rmtree(cached / checkpoint.VARIABLES_DIR)
    with pytest.warns(UserWarning, match="discarding the unreadable cached conversion"):
        detector = nasjax.load(NAME)
    assert detector.form == "full"
    assert checkpoint.load_detector(cached).form == "full"


def test_entry_without_published_hash_is_cached_by_the_file_hash(served, home, monkeypatch):
    url, sha256, _ = served
    register(monkeypatch, urls=(url,), sha256=None)
    nasjax.load(NAME)
    assert (home / "converted" / f"{NAME}-{sha256[:12]}-full").is_dir()
    forbid_conversion(monkeypatch)
    nasjax.load(NAME)


def test_offline_error_says_where_to_put_the_file(home, monkeypatch):
    url = refused_url()
    register(monkeypatch, urls=(url,))
    with pytest.raises(hub.WeightsUnavailableError) as info:
        nasjax.load(NAME)
    message = str(info.value)
    assert url in message and str(home / "downloads" / "yolo_nas_s_coco.pth") in message
    assert not (home / "converted").exists()


def test_path_to_a_weight_file_and_to_a_converted_directory(served, home, tmp_path):
    _, sha256, path = served
    detector = nasjax.load(path)
    assert detector.form == "full" and detector.class_names == list(COCO_CLASS_NAMES)
    unfused = nasjax.load(str(path), fuse=False)
    assert unfused.form == "training"
    assert not home.exists()  # paths are converted in memory, never cached

    directory = checkpoint.save_detector(unfused, tmp_path / "converted", {"source_sha256": sha256})
    assert nasjax.load(directory, fuse=False).form == "training"
    assert_same_variables(nasjax.load(directory), detector)  # fused on load


def test_not_pretrained_equals_build(home):
    assert_same_variables(nasjax.load("yolo_nas_s", pretrained=False), nasjax.build("yolo_nas_s"))
    unfused = nasjax.load("yolo_nas_s.coco_ultralytics", pretrained=False, fuse=False)
    assert unfused.form == "training" and unfused.class_names == list(COCO_CLASS_NAMES)
    assert not home.exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither an existing file or directory nor a registered.*yolo_nas_s.coco,"):
        nasjax.load("yolo_nas_xl")
    with pytest.raises(checkpoint.CheckpointError, match="no nasjax.json"):
        nasjax.load(tmp_path)
    (tmp_path / "w.pth").write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError, match="pretrained=False"):
        nasjax.load(tmp_path / "w.pth", pretrained=False)
    with pytest.raises(weight_file.WeightFileError, match="HTML page"):
        nasjax.load(tmp_path / "w.pth")


def test_training_starts_from_the_downloaded_weights(served, home, monkeypatch):
    """`nasjax.train --pretrained true`: the published file is fetched (local HTTP here), converted in the
    training form, and every tensor but the class head (2 classes instead of 80) is copied in."""
    from nasjax.train.initial import initial_model

    url, sha256, _ = served
    register(monkeypatch, urls=(url,), sha256=sha256)
    module = initial_model("yolo_nas_s", 2, pretrained=True, seed=3)
    got = dict(nnx.to_flat_state(nnx.state(module)))
    published = dict(nnx.to_flat_state(nasjax.load("yolo_nas_s", fuse=False).variables))
    scratch = dict(nnx.to_flat_state(nasjax.build("yolo_nas_s", form="training", num_classes=2, seed=3,
                                                  init="scratch").variables))
    for path, leaf in got.items():
        expected = scratch[path] if path[-2] == "cls_pred" else published[path]
        np.testing.assert_array_equal(np.asarray(leaf[...]), np.asarray(expected[...]), err_msg=str(path))
    assert got[("heads", "head1", "cls_pred", "kernel")][...].shape[-1] == 2


def test_training_offline_with_pretrained_is_a_clear_error(home, monkeypatch, tmp_path, capsys):
    from nasjax.cli import main

    url = refused_url()
    register(monkeypatch, urls=(url,))
    data = tmp_path / "d"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(data / "images" / "a.png")
    (data / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (data / "data.yaml").write_text(f"path: {data}\ntrain: images\nval: images\nnames: {{0: thing}}\n")
    with pytest.raises(SystemExit) as exit:
        main(["train", "--data", str(data / "data.yaml"), "--pretrained", "true", "--batch", "1", "--imgsz", "64",
              "--project", str(tmp_path / "runs")])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nasjax train: error: ") and url in err and str(home / "downloads") in err
    assert err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing written for a run that could not start
