"""The `nasjax` command: both argument forms, Ultralytics' run folders, one-line errors with exit 2,
--debug, and the module entry points that are shims over it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hostile import read_only_dir, small_disk
from nasjax import cli

REPO = Path(__file__).resolve().parents[1]
IMGSZ = 64


def run(argv) -> int:
    with pytest.raises(SystemExit) as exit:
        cli.main(list(argv))
    return exit.value.code


def error_line(capsys, argv, command: str) -> str:
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nasjax {command}: error: ") if command else err.startswith("nasjax: error: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 80, 3), np.uint8)).save(folder / f"im{i}.jpg")
    return folder


# --- parsing ---------------------------------------------------------------------------------------------


def test_both_forms_parse_to_the_same_settings():
    a, given_a = cli.parse("predict", ["model=yolo_nas_m", "source=x.jpg", "conf=0.3", "random_weights=true",
                                       "single_label=false", "imgsz=320"])
    b, given_b = cli.parse("predict", ["--model", "yolo_nas_m", "--source", "x.jpg", "--conf", "0.3",
                                       "--random-weights", "--no-single-label", "--imgsz=320"])
    assert a == b and given_a == given_b
    assert a["conf"] == 0.3 and a["imgsz"] == 320 and a["random_weights"] is True and a["single_label"] is False
    c, _ = cli.parse("predict", ["x.jpg", "--random-weights", "true"])  # source is positional
    assert c["source"] == "x.jpg" and c["random_weights"] is True
    assert c["model"] == "yolo_nas_s" and c["project"] == Path("runs/detect")  # the settings file's defaults


def test_only_given_keys_reach_the_functions():
    settings, given = cli.parse("train", ["data=coco8", "epochs=3", "augment=light"])
    assert given == {"data", "epochs", "augment"}
    assert cli._options("train", settings, given, ["epochs", "augment", "lr"]) == {"epochs": 3, "augmentation": "light"}


@pytest.mark.parametrize("argv, fragment", [
    (["predict", "source=a.jpg", "conff=0.3"], "unknown setting 'conff' for nasjax predict; did you mean conf?"),
    (["predict", "source=a.jpg", "conf=high"], "conf=high: expected a number"),
    (["predict", "source=a.jpg", "preprocess=crop"], "expected one of centre_pad, letterbox"),
    (["predict"], "source is required"),
    (["predict", "source=a.jpg", "--conf"], "--conf needs a value"),
    (["predict", "a.jpg", "b.jpg"], "unexpected argument 'b.jpg'"),
    (["val", "data=coco8", "save_json=true"], "unknown setting 'save_json'"),
    (["convert", "x.pt"], "output is required"),
])
def test_usage_errors_are_one_line_exit_2(capsys, argv, fragment):
    assert fragment in error_line(capsys, argv, argv[0])


def test_unknown_command(capsys):
    assert "did you mean predict?" in error_line(capsys, ["predcit"], None)


def test_help_lists_every_key_with_the_function_defaults(capsys):
    assert run(["predict", "--help"]) == 0
    out = capsys.readouterr().out
    for key in cli.command_keys()["predict"][1]:
        assert f"  {key}=" in out
    assert "conf=float (default 0.25)" in out and "batch=int (default 8)" in out  # nasjax.predict.predict's
    assert run([]) == 0 and "commands:" in capsys.readouterr().out


# --- running -----------------------------------------------------------------------------------------------


def test_predict_writes_ultralytics_run_folders(images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["predict", "model=yolo_nas_s", "random_weights=true", f"source={images}", f"imgsz={IMGSZ}", "conf=0.01"]
    assert run(argv) == 0
    assert "random weights" in capsys.readouterr().err
    first = tmp_path / "runs/detect/predict"
    summary = json.loads((first / "predictions.json").read_text())
    assert [Path(r["source"]).name for r in summary["images"]] == ["im0.jpg", "im1.jpg"]
    assert (first / "im0.jpg").is_file()
    assert summary["settings"] == {"conf": 0.01, "imgsz": IMGSZ, "dtype": "float32"}
    assert run([*argv, "save=false"]) == 0  # the next free name, as Ultralytics: predict2
    second = tmp_path / "runs/detect/predict2"
    again = json.loads((second / "predictions.json").read_text())["images"]
    assert [r["detections"] for r in again] == [r["detections"] for r in summary["images"]]
    assert {r["annotated"] for r in again} == {None}
    assert not (second / "im0.jpg").exists()
    (tmp_path / "runs/detect/mine").mkdir()
    assert cli._run_dir({"save_dir": None, "project": Path("runs/detect"), "name": "mine", "exist_ok": True}, "x") \
        == Path("runs/detect/mine")
    capsys.readouterr()


def test_missing_source_is_a_user_error(capsys, tmp_path):
    err = error_line(capsys, ["predict", "random_weights=true", f"source={tmp_path / 'nope.jpg'}",
                              f"save_dir={tmp_path / 'out'}"], "predict")
    assert "nope.jpg" in err and not (tmp_path / "out").exists()


def test_unreadable_image_is_a_user_error(capsys, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    err = error_line(capsys, ["predict", "random_weights=true", f"source={tmp_path / 'bad.jpg'}", f"imgsz={IMGSZ}",
                              f"save_dir={tmp_path / 'out'}"], "predict")
    assert "bad.jpg" in err


def test_predict_output_that_cannot_be_written(images, tmp_path, capsys):
    """A file where the run folder should be, an earlier run in it, a read-only or full disk: one line,
    exit 2, no partial files, the earlier output untouched."""
    argv = ["predict", "model=yolo_nas_s", "random_weights=true", f"source={images}", f"imgsz={IMGSZ}"]
    (tmp_path / "afile").write_text("mine")
    assert "is a file, not a folder" in error_line(capsys, [*argv, f"save_dir={tmp_path / 'afile'}"], "predict")
    assert (tmp_path / "afile").read_text() == "mine"
    assert run([*argv, f"save_dir={tmp_path / 'out'}"]) == 0
    capsys.readouterr()
    earlier = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert "already holds an earlier prediction run" in error_line(capsys, [*argv, f"save_dir={tmp_path / 'out'}"],
                                                                   "predict")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == earlier
    with read_only_dir(tmp_path) as folder:
        assert "read-only file system; write somewhere else" in error_line(capsys, [*argv, f"project={folder}"],
                                                                            "predict")
    with small_disk(tmp_path, "4k") as disk:
        err = error_line(capsys, [*argv, f"project={disk}", "name=full"], "predict")
        assert f"{disk}/full/im" in err and "no space left on device; free space" in err
        assert os.listdir(disk) == []  # neither the images nor the run folder it made


def test_val_checks_its_outputs_before_running(tmp_path, capsys, scored_dataset):
    data, predictions = scored_dataset
    with read_only_dir(tmp_path, {"m.json": b"earlier"}) as folder:
        err = error_line(capsys, ["val", f"data={data}", f"predictions={predictions}", f"json={folder / 'm.json'}",
                                  f"project={tmp_path / 'runs'}"], "val")
        assert f"{folder / 'm.json'}: read-only file system" in err and (folder / "m.json").read_bytes() == b"earlier"
    assert not (tmp_path / "runs").exists()


def test_random_weights_of_a_file_is_a_user_error(capsys, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert "registered name" in error_line(capsys, ["info", f"model={weights}", "random_weights=true"], "info")


def test_val_with_a_predictions_file_writes_metrics(tmp_path, capsys, monkeypatch, scored_dataset):
    """val scores a COCO predictions file (no model) on a generated dataset; metrics.json in runs/detect/val."""
    data, predictions = scored_dataset
    monkeypatch.chdir(tmp_path)
    assert run(["val", f"data={data}", f"predictions={predictions}", f"json={tmp_path / 'm.json'}"]) == 0
    metrics = json.loads((tmp_path / "runs/detect/val/metrics.json").read_text())
    assert metrics["map50"] == pytest.approx(1.0) and json.loads((tmp_path / "m.json").read_text()) == metrics
    capsys.readouterr()


def test_val_of_a_missing_dataset(capsys, tmp_path):
    assert "nonexistent" in error_line(capsys, ["val", "data=nonexistent", "download=false", "random_weights=true",
                                                f"save_dir={tmp_path}"], "val")


def test_export_rejects_bad_options_before_loading(capsys):
    assert "multiple of 32" in error_line(capsys, ["export", "model=yolo_nas_s", "random_weights=true", "imgsz=50"],
                                          "export")


def test_debug_shows_the_traceback(tmp_path):
    argv = ["convert", str(tmp_path / "nope.pt"), "-o", str(tmp_path / "out")]
    with pytest.raises(FileNotFoundError):  # the exception itself, not SystemExit
        cli.main([*argv, "--debug"])
    env = {**os.environ, "NASJAX_DEBUG": "1"}
    result = subprocess.run([sys.executable, "-m", "nasjax", *argv], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert result.returncode == 1 and "Traceback" in result.stderr and "nope.pt" in result.stderr


@pytest.mark.parametrize("command", ["predict", "val", "export", "train"])
def test_console_script_and_module_shims(tmp_path, command):
    """The installed `nasjax` script and `python -m nasjax.<command>` are the same command, outside the repo
    (the runs themselves are tested in-process above and in each stage's tests)."""
    script = Path(sys.executable).with_name("nasjax")
    if not script.exists():
        pytest.skip("the nasjax console script is not installed in this environment")
    module = {"val": "validate"}.get(command, command)
    for line in ([str(script), command, "--help"], [sys.executable, "-m", f"nasjax.{module}", "--help"]):
        result = subprocess.run(line, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: nasjax {command} ")
    bad = subprocess.run([str(script), command, "no_such_key=1"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no_such_key" in bad.stderr


def test_convert_names_what_the_source_is(capsys, tmp_path):
    """A FIFO (never opened: that would block), a symlink loop and a folder are named, not "not found"."""
    os.mkfifo(tmp_path / "pipe.pt")
    (tmp_path / "loop.pt").symlink_to(tmp_path / "loop.pt")
    cases = {"pipe.pt": "is a FIFO (named pipe), not a weight file", "loop.pt": "is a symlink loop",
             ".": "is a directory, not a weight file", "nope.pt": "not found"}
    for name, fragment in cases.items():
        assert fragment in error_line(capsys, ["convert", str(tmp_path / name), "-o", str(tmp_path / "out")], "convert")
    assert not (tmp_path / "out").exists()
