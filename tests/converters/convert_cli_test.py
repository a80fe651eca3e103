"""`nasjax convert SRC -o OUT_DIR` (and `python -m nasjax.converters`): end to end in a subprocess, and
its errors (exit status 2, one line, no traceback)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from flax import nnx

import nasjax
from nasjax.cli import main as cli_main
from nasjax.model.state_dict import reference_key_shapes
from nasjax.loading.checkpoint import METADATA_FILE
from nasjax.model.deterministic_weights import deterministic_state_dict
from nasjax.weights import COCO_CLASS_NAMES

REPO = Path(__file__).resolve().parents[2]


def save_state_dict(path: Path, variant: str, form: str) -> Path:
    state_dict = deterministic_state_dict(reference_key_shapes(variant, form), 0)
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)
    return path


@pytest.fixture(scope="module")
def training_file(tmp_path_factory):
    return save_state_dict(tmp_path_factory.mktemp("src") / "yolo_nas_s.pth", "yolo_nas_s", "training")


@pytest.fixture(scope="module")
def fused_file(tmp_path_factory):
    return save_state_dict(tmp_path_factory.mktemp("src") / "yolo_nas_s_fused.pth", "yolo_nas_s", "full")


def main(argv) -> int:
    try:
        cli_main(["convert", *argv])
    except SystemExit as exit:
        return exit.code
    raise AssertionError("the CLI returned without SystemExit")


def run_cli(*args: str, module: str = "nasjax") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "nasjax", "convert"] if module == "nasjax" else [sys.executable, "-m", module]
    return subprocess.run([*command, *args], capture_output=True, text=True, cwd=REPO.parent, timeout=300)


def test_end_to_end(training_file, tmp_path):
    out = tmp_path / "yolo_nas_s_full"
    result = run_cli(str(training_file), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "yolo_nas_s, full form, 80 classes" in result.stdout

    info = json.loads((out / METADATA_FILE).read_text())
    assert (info["variant"], info["form"], info["num_classes"]) == ("yolo_nas_s", "full", 80)
    assert info["class_names"] == list(COCO_CLASS_NAMES)
    assert info["source_sha256"] == hashlib.sha256(training_file.read_bytes()).hexdigest()
    assert info["source_format"] == "state_dict" and info["source_filename"] == training_file.name

    converted, direct = nasjax.load(out, fuse=False), nasjax.load(training_file)
    assert converted.form == "full"
    direct_flat = dict(nnx.to_flat_state(direct.variables))
    for path, variable in nnx.to_flat_state(converted.variables):
        np.testing.assert_array_equal(np.asarray(variable.get_value()), np.asarray(direct_flat[path].get_value()))


def test_bad_input_is_one_line_without_traceback(tmp_path):
    html = tmp_path / "yolo_nas_s.pt"
    html.write_text("<!DOCTYPE html><html><body>Not Found</body></html>")
    result = run_cli(str(html), "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith("nasjax convert: error: ") and "HTML page" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def error_of(capsys, *args) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.startswith("nasjax convert: error: ") and err.count("\n") == 1
    return err


def test_missing_source(capsys, tmp_path):
    assert "not found" in error_of(capsys, str(tmp_path / "nope.pth"), "-o", str(tmp_path / "out"))
    assert "a directory" in error_of(capsys, str(tmp_path), "-o", str(tmp_path / "out"))


def test_fusion_cannot_be_undone(capsys, fused_file, tmp_path):
    err = error_of(capsys, str(fused_file), "-o", str(tmp_path / "out"), "--form", "training")
    assert "full-form" in err and "fusion cannot be undone" in err and "form=full" in err
    assert not (tmp_path / "out").exists()


def test_variant_mismatch(capsys, fused_file, tmp_path):
    err = error_of(capsys, str(fused_file), "-o", str(tmp_path / "out"), "--variant", "yolo_nas_m")
    assert "holds yolo_nas_s weights, not yolo_nas_m" in err


def test_existing_output_needs_overwrite(capsys, fused_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert "already exists" in error_of(capsys, str(fused_file), "-o", str(out))
    assert main([str(fused_file), "-o", str(out), "--overwrite", "--variant", "yolo_nas_s"]) == 0
    assert nasjax.load(out, fuse=False).form == "full"


def test_training_form_on_request(capsys, training_file, tmp_path):
    assert main([str(training_file), "-o", str(tmp_path / "out"), "--form", "training"]) == 0
    assert json.loads((tmp_path / "out" / METADATA_FILE).read_text())["form"] == "training"


def test_unknown_form_is_a_usage_error(tmp_path, training_file):
    assert main([str(training_file), "-o", str(tmp_path / "out"), "--form", "fused"]) == 2


def test_module_entry_point_is_the_same_command(training_file, tmp_path):
    """`python -m nasjax.converters` (the old `python -m converters`) runs `nasjax convert`."""
    out = tmp_path / "out"
    result = run_cli(str(training_file), "-o", str(out), "form=training", module="nasjax.converters")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / METADATA_FILE).read_text())["form"] == "training"
