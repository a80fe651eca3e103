"""Conversions that meet another conversion or a full disk (issue 12): a second conversion into the same
directory fails instead of replacing the first, and a full disk gives one clear error, leaves nothing
partial and keeps the earlier good output."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import reference_keys
from hostile import small_disk
from nasjax.loading import checkpoint
from nasjax.loading.convert import convert
from nasjax.loading.hub import DiskFullError
from nasjax.weights import registry


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A yolo_nas_s training-form state dict in torch.save's format, constant values (cheap to make)."""
    from torch_files import save_state_dict

    shapes = reference_keys("yolo_nas_s", "training")  # the committed listing: no model to build
    state_dict = {k: np.zeros(s, np.int64) if k.endswith("num_batches_tracked") else np.full(s, 0.5, np.float32)
                  for k, s in shapes.items()}
    return save_state_dict(tmp_path_factory.mktemp("src") / "yolo_nas_s.pth", state_dict)


def tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_conversion_into_a_directory_that_appears_meanwhile_is_refused(source, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = checkpoint.ocp.StandardCheckpointer

    class OtherProcessFinishesFirst(real):
        def save(self, *args, **kwargs):
            super().save(*args, **kwargs)
            out.mkdir()
            (out / "theirs").write_text("the other conversion's output")

    monkeypatch.setattr(checkpoint.ocp, "StandardCheckpointer", OtherProcessFinishesFirst)
    with pytest.raises(FileExistsError, match=f"{out} was created by someone else .* pass overwrite=true"):
        convert(source, out)  # before: reported success, having replaced the other output
    assert tree(out) == {"theirs": hashlib.sha256(b"the other conversion's output").hexdigest()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging directory left


def test_disk_full_convert_is_one_line_and_keeps_the_earlier_output(source, tmp_path, capsys):
    from nasjax.cli import main

    first = tmp_path / "first"
    convert(source, first)
    used = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
    with small_disk(tmp_path, f"{used // (1 << 20) + 8}m") as disk:
        shutil.copytree(first, disk / "out")
        before = tree(disk / "out")
        with pytest.raises(SystemExit) as exit:
            main(["convert", str(source), "-o", str(disk / "out"), "overwrite=true"])
        assert exit.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "the disk is full" in err and str(disk / "out") in err, err
        assert tree(disk / "out") == before  # the earlier conversion is intact
        assert sorted(p.name for p in disk.iterdir()) == ["out"]  # and nothing partial beside it


def test_disk_full_while_caching_a_registered_conversion(source, tmp_path, monkeypatch):
    import nasjax

    size = source.stat().st_size
    with small_disk(tmp_path, f"{size // (1 << 20) + 8}m") as home:
        monkeypatch.setenv("NASJAX_HOME", str(home))
        (home / "downloads").mkdir()
        shutil.copyfile(source, home / "downloads" / "yolo_nas_s_coco.pth")
        earlier = home / "converted" / "yolo_nas_m.coco-0123456789ab-full"
        earlier.mkdir(parents=True)
        (earlier / "nasjax.json").write_text("{}")  # an earlier conversion of other weights
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{s.getsockname()[1]}/yolo_nas_s_coco.pth"
        entry = dataclasses.replace(registry.get_entry("yolo_nas_s.coco"), urls=(refused,),
                                    sha256=hashlib.sha256(source.read_bytes()).hexdigest())
        monkeypatch.setitem(registry._ENTRIES, "yolo_nas_s.coco", entry)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            detector = nasjax.load("yolo_nas_s")  # before: a ValueError from orbax (RESOURCE_EXHAUSTED) and noise
        assert detector.form == "full"
        messages = [str(w.message) for w in caught if "could not cache" in str(w.message)]
        assert len(messages) == 1 and "the disk is full" in messages[0], [str(w.message) for w in caught]
        left = sorted(p.name for p in (home / "converted").iterdir() if p.suffix != ".lock")
        assert left == [earlier.name] and (earlier / "nasjax.json").read_text() == "{}"
