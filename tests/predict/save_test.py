"""A prediction run folder is written as a unit: a full disk, a read-only folder or a failure part-way
leaves no partial files and keeps earlier output; a folder that already holds a run, or a file where the
folder should be, is refused before any work; two runs never mix under one predictions.json. No model is
run here (Results are made directly); the command-line side is in tests/cli_test.py."""
from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from hostile import read_only_dir, small_disk
from nasjax.predict.results import Boxes, Results
from nasjax.predict.save import PREDICTIONS_FILE, PredictionRun, SaveDirError


def result(name: str, side: int = 32, seed: int = 0) -> Results:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (side, side, 3), np.uint8)
    boxes = Boxes(np.array([[1.0, 2.0, 10.0, 12.0]], np.float32), np.array([0.9], np.float32), np.array([3]),
                  image.shape[:2])
    return Results(image, boxes, {3: "car"}, f"/data/{name}")


def test_a_run_appears_only_when_finished(tmp_path):
    save_dir = tmp_path / "run"
    with PredictionRun(save_dir) as run:
        run.add(result("a.jpg"))
        run.add(result("b.tiff"))
        run.add(result("a.jpg", seed=1))  # the same name from another folder: a_2.jpg
        assert sorted(os.listdir(save_dir)) == [n for n in os.listdir(save_dir) if n.startswith(".")]  # only staging
        path = run.finish({"model": "m"})
    assert sorted(os.listdir(save_dir)) == ["a.jpg", "a_2.jpg", "b.tiff", PREDICTIONS_FILE]
    summary = json.loads(path.read_text())
    assert summary["model"] == "m" and [r["annotated"] for r in summary["images"]] == ["a.jpg", "b.tiff", "a_2.jpg"]
    assert summary["images"][0]["detections"][0]["name"] == "car"


def test_a_failure_part_way_leaves_nothing_and_removes_the_folder_it_made(tmp_path):
    save_dir = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with PredictionRun(save_dir) as run:
            run.add(result("a.jpg"))
            raise RuntimeError("interrupted")
    assert not save_dir.exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(RuntimeError):
        with PredictionRun(tmp_path / "mine") as run:
            run.add(result("a.jpg"))
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]  # a folder it did not make is kept, untouched


def test_a_folder_holding_a_run_is_refused_and_kept(tmp_path):
    with PredictionRun(tmp_path / "run") as run:
        run.add(result("a.jpg"))
        run.finish({"run": 1})
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(SaveDirError, match="already holds an earlier prediction run"):
        PredictionRun(tmp_path / "run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before


def test_two_runs_at_once_into_one_folder_never_mix(tmp_path):
    """Both start before either finishes: the second to finish is refused and its files discarded."""
    first, second = PredictionRun(tmp_path / "run"), PredictionRun(tmp_path / "run")
    with first, second:
        first.add(result("a.jpg"))
        second.add(result("b.jpg"))
        second.finish({"run": 2})
        with pytest.raises(SaveDirError, match="another run wrote"):
            first.finish({"run": 1})
    assert sorted(os.listdir(tmp_path / "run")) == ["b.jpg", PREDICTIONS_FILE]
    assert json.loads((tmp_path / "run" / PREDICTIONS_FILE).read_text())["run"] == 2


def test_a_file_where_the_folder_should_be(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(SaveDirError, match="is a file, not a folder"):
        PredictionRun(tmp_path / "out")
    assert (tmp_path / "out").read_text() == "a file"


def test_full_disk_leaves_no_partial_files_and_keeps_earlier_output(tmp_path):
    with small_disk(tmp_path, "160k") as disk:
        (disk / "earlier").mkdir()
        (disk / "earlier" / "keep.json").write_text("{}")
        with pytest.raises(OSError) as raised:
            with PredictionRun(disk / "run") as run:
                for i in range(20):
                    run.add(result(f"im{i}.png", side=128, seed=i))  # ~49 kB each as PNG: fills the disk
        assert raised.value.errno == errno.ENOSPC
        assert str(raised.value.filename).startswith(str(disk / "run" / "im"))  # the file the user asked for
        assert sorted(os.listdir(disk)) == ["earlier"] and (disk / "earlier" / "keep.json").read_text() == "{}"


def test_read_only_folder_fails_before_any_work(tmp_path):
    with read_only_dir(tmp_path, {"old/predictions.json": b"{}"}) as folder:
        with pytest.raises(OSError) as raised:
            PredictionRun(folder / "run")
        assert raised.value.errno == errno.EROFS
        with pytest.raises(SaveDirError):  # an earlier run there: refused, whatever the file system
            PredictionRun(folder / "old")


def test_a_glob_source_with_symlink_loops_ends(tmp_path):
    """`dir/**/*.jpg` over a folder with two links back to its parent: glob.glob(recursive=True) follows
    them for 2**40 paths; the listing must end at once with the one real image."""
    from hostile import run_bounded

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"")
    (tmp_path / "a" / "back1").symlink_to("..")
    (tmp_path / "a" / "back2").symlink_to("..")
    child = run_bounded(f"""
from nasjax.predict.predictor import list_sources
print([item.path for item in list_sources({str(tmp_path / '**' / '*.jpg')!r})])
""", memory_mib=16384, timeout_s=60)
    assert not child.timed_out and child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == repr([str(tmp_path / "a" / "x.jpg")])
