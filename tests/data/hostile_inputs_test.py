"""Hostile and malformed dataset inputs (issue 12), each generated here, small and cheap: a data YAML
"billion laughs", image bombs and extreme aspect ratios, COCO ground truth with wrong types, impossible
boxes or absurd nesting, YOLO label lines of every shape, symlink loops in an image folder, and a disk
that fills up during a dataset download. Every one must end in a clear error naming the file (and line
or entry) within bounded memory and time; the bombs run in a bounded child (tests/hostile.py) so that a
regression ends the child, not the test run."""
from __future__ import annotations

import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("yaml", reason="the 'data' extra")
from datasets_test import make_coco_json, serving
from hostile import run_bounded, small_disk

import nasjax.data as datasets
from nasjax.data import DatasetError, ImageLoadError, limits, preprocessing
from nasjax.loading import hub


@pytest.fixture(autouse=True)
def isolated_datasets_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATASETS_DIR_ENV, str(tmp_path / "datasets"))
    monkeypatch.delenv(limits.MAX_IMAGE_PIXELS_ENV, raising=False)
    return tmp_path / "datasets"


def png_bytes(width: int, height: int, bit_depth: int = 1, colour_type: int = 0) -> bytes:
    """A valid all-zero PNG of any size, written with zlib (Pillow would need the pixels in memory):
    a 30000 x 30000 1-bit one is ~110 KB."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    block = (b"\0" * (1 + (width * channels * bit_depth + 7) // 8)) * 64
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(block) for _ in range(height // 64))
    data += compressor.compress(block[:len(block) // 64 * (height % 64)]) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def yolo_dataset(root: Path, images: dict[str, bytes], labels: dict[str, str]) -> Path:
    (root / "images/val").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    for name, data in images.items():
        (root / "images/val" / name).write_bytes(data)
    for stem, text in labels.items():
        (root / "labels/val" / f"{stem}.txt").write_text(text)
    (root / "data.yaml").write_text(f"path: {root}\nval: images/val\nnames: [a, b]\n")
    return root / "data.yaml"


# --- data YAML: aliases ------------------------------------------------------------------------------


def billion_laughs(key: str) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    lines += [f"{key}: *a9", "val: images/val"] + (["names: [a]"] if key != "names" else [])
    return "\n".join(lines) + "\n"


def test_yaml_billion_laughs_is_refused(tmp_path):
    """10^10 values from 300 bytes, in names, val or nc: a timeout at 1.7 GB before; now refused at the
    line of the alias that passes the bound, within the child's memory and time."""
    paths = []
    for key in ("names", "val", "nc"):
        paths.append(tmp_path / f"laughs_{key}.yaml")
        paths[-1].write_text(billion_laughs(key))
    child = run_bounded(f"""
        import nasjax.data as d
        for path in {[str(p) for p in paths]!r}:
            try:
                d.load_data_config(path)
            except d.DatasetError as e:
                print("refused:", e)
    """, memory_mib=4096, timeout_s=60)  # the child imports jax (address space, not memory)
    assert not child.timed_out and child.returncode == 0, child.stderr[-2000:]
    assert child.peak_rss_mib < 1024
    lines = child.stdout.splitlines()
    assert len(lines) == 3
    for path, line in zip(paths, lines):
        assert line.startswith(f"refused: {path}:4: aliases") and "billion laughs" in line


def test_yaml_recursive_and_modest_aliases(tmp_path):
    path = tmp_path / "recursive.yaml"
    path.write_text("val: images/val\nnames: &n [a, *n]\n")
    with pytest.raises(DatasetError, match=r"recursive.yaml:2: alias \*n refers to a collection from inside it"):
        datasets.load_data_config(path)
    path.write_text("val: &v images/val\ntest: *v\nnames: &n [a, b]\nextra: [*n, *n]\n")  # a few aliases are fine
    config = datasets.load_data_config(path)
    assert config.names == {0: "a", 1: "b"} and config.splits["test"] == config.splits["val"]
    path.write_text("val: x\nnames: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(DatasetError, match="nested too deeply"):
        datasets.load_data_config(path)


# --- images ------------------------------------------------------------------------------------------


def test_image_bombs_are_refused_from_the_header(tmp_path):
    """A 12000 x 12000 PNG took 1.6 GB (8-bit) and 3.7 GB (16-bit) before; 30000 x 30000 was refused only
    by Pillow's limit. Now each is refused from its header, in a child limited to 512 MiB."""
    files = {"big8.png": png_bytes(12000, 12000, 8), "big16.png": png_bytes(9000, 9000, 16),
             "bomb.png": png_bytes(30000, 30000, 1)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    child = run_bounded(f"""
        import warnings
        warnings.simplefilter("error")  # no DecompressionBombWarning on the way
        from nasjax.data import preprocessing
        for name in {sorted(files)!r}:
            try:
                preprocessing.load_image({str(tmp_path)!r} + "/" + name)
            except preprocessing.ImageLoadError as e:
                print("refused:", e)
    """, memory_mib=512, timeout_s=60)
    assert not child.timed_out and child.returncode == 0, child.stderr[-2000:]
    lines = dict(zip(sorted(files), child.stdout.splitlines()))
    assert len(lines) == 3 and all(line.startswith("refused: ") for line in lines.values())
    assert f"{tmp_path}/big8.png: the image is 12000x12000 = 144,000,000 pixels, over nasjax's limit of 67,108,864" \
        in lines["big8.png"] and limits.MAX_IMAGE_PIXELS_ENV in lines["big8.png"]
    assert "big16.png" in lines["big16.png"] and "81,000,000 pixels" in lines["big16.png"]
    assert "bomb.png" in lines["bomb.png"] and "PIL.Image.MAX_IMAGE_PIXELS" in lines["bomb.png"]


def test_image_limit_is_configurable_and_checked_up_front(tmp_path, monkeypatch):
    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    monkeypatch.setenv(limits.MAX_IMAGE_PIXELS_ENV, "199")
    with pytest.raises(ImageLoadError, match=r"a.png: the image is 20x10 = 200 pixels, over nasjax's limit of 199"):
        preprocessing.load_image(tmp_path / "a.png")
    # validation and training read every header first: the dataset fails before any inference
    data = yolo_dataset(tmp_path / "ds", {"a.png": (tmp_path / "a.png").read_bytes()}, {})
    with pytest.raises(ImageLoadError, match="over nasjax's limit of 199"):
        datasets.load_dataset(data, process_index=0, process_count=1, progress=False)
    monkeypatch.setenv(limits.MAX_IMAGE_PIXELS_ENV, "0")  # no limit
    assert preprocessing.load_image(tmp_path / "a.png").shape == (10, 20, 3)
    monkeypatch.setenv(limits.MAX_IMAGE_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match="NASJAX_MAX_IMAGE_PIXELS='lots' is not a number"):
        preprocessing.load_image(tmp_path / "a.png")


def test_sixteen_bit_conversion_is_unchanged():
    """round(v / 257) computed in uint32 (16 -> 4 bytes per pixel of temporaries): the same 8-bit values."""
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.rint(values / 257.0).astype(np.uint8)
    for image in (Image.fromarray(values.astype(np.int32)), Image.fromarray(values)):
        assert image.mode in ("I", "I;16")
        np.testing.assert_array_equal(preprocessing.to_rgb_uint8(image)[..., 0], expected)
    assert preprocessing.to_rgb_uint8(Image.fromarray(np.array([[-5, 70000]], np.int32))).tolist() == \
        [[[0, 0, 0], [255, 255, 255]]]


@pytest.mark.parametrize("method", preprocessing.PREPROCESS_METHODS)
@pytest.mark.parametrize("rounding", preprocessing.RESIZE_ROUNDINGS)
@pytest.mark.parametrize("shape", [(1, 60000), (60000, 1), (3, 100000)])
def test_extreme_aspect_ratios_keep_one_pixel(shape, method, rounding):
    """A 1 x 60000 image raised ZeroDivisionError (the short side resized to 0); now it keeps 1 pixel and
    boxes map back along the long side (the short one is as coarse as one input pixel)."""
    image = np.full((*shape, 3), 200, np.uint8)
    network_input, transform = preprocessing.preprocess(image, method, 640, rounding=rounding)
    assert network_input.shape == (640, 640, 3) and min(transform.resized_shape) == 1
    h, w = shape
    top, left, bottom, right = transform.pad
    whole = np.array([[left, top, 640 - right, 640 - bottom]], np.float32)
    back = transform.boxes_to_original(whole)[0]
    assert np.isfinite(back).all()
    long = (0, 2) if w > h else (1, 3)
    np.testing.assert_allclose(back[list(long)], [0, max(h, w)], rtol=0.02, atol=1)


def test_extreme_aspect_ratio_file_for_training(tmp_path):
    """The training path (loader.prepare, with and without augmentation) takes the strip too."""
    from nasjax.data import Augmentation, prepare

    data = yolo_dataset(tmp_path / "ds", {"strip.png": png_bytes(60000, 1, 8, 2)}, {"strip": "0 0.5 0.5 0.5 1\n"})
    dataset = datasets.load_split(data, "val")
    sample = dataset.samples[0]
    assert (sample.height, sample.width) == (1, 60000)
    for rng in (None, np.random.default_rng(0)):
        image, _, _ = prepare(sample, 64, rng, augmentation=Augmentation())
        assert image.shape == (64, 64, 3)


# --- COCO JSON ground truth --------------------------------------------------------------------------


@pytest.mark.parametrize("annotation, message", [
    ({"bbox": [1, 2, -3, 4]}, r"annotation id 7: 'bbox' \[1, 2, -3, 4\] has a negative width or height"),
    ({"bbox": [1, 2, 3, float("nan")]}, "annotation id 7: 'bbox' must be a finite number, got nan"),
    ({"bbox": [1, 2, 3, float("inf")]}, "annotation id 7: 'bbox' must be a finite number, got inf"),
    ({"bbox": "1234"}, r"annotation id 7: 'bbox' must be a list of 4 numbers \[x, y, width, height\], got '1234'"),
    ({"bbox": ["1", 2, 3, 4]}, "annotation id 7: 'bbox' must be a finite number, got '1'"),
    ({"bbox": [1, 2, 3]}, "annotation id 7: 'bbox' must be a list of 4 numbers"),
    ({"image_id": 9.0}, "annotation id 7: 'image_id' must be an integer, got 9.0"),
    ({"category_id": "3"}, "annotation id 7: 'category_id' must be an integer, got '3'"),
    ({"category_id": True}, "annotation id 7: 'category_id' must be an integer, got True"),
    ({"area": "big"}, "annotation id 7: 'area' must be a finite number"),
    ({"iscrowd": "0"}, "annotation id 7: 'iscrowd' must be 0 or 1, got '0'"),
])
def test_coco_ground_truth_with_impossible_values(tmp_path, annotation, message):
    """Negative widths, NaN, strings and floats as ids were all scored without complaint before."""
    path = make_coco_json(tmp_path, [{"id": 7, "image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4], **annotation}])
    with pytest.raises(DatasetError, match=f"instances_val.json: {message}"):
        datasets.load_dataset(path, process_index=0, process_count=1)


def test_coco_json_structure_errors(tmp_path):
    path = make_coco_json(tmp_path, [])
    good = json.loads(path.read_text())
    cases = [
        ({**good, "images": [1, 2]}, "'images' entry #0 is a int, not an object"),
        ({**good, "images": [{"id": 5, "file_name": "5.png", "height": 30}]}, "'images' entry #0 has no 'width'"),
        ({**good, "images": [{"id": "5", "file_name": "5.png", "height": 30, "width": 40}]}, "'images' entry #0: 'id' must be an integer, got '5'"),
        ({**good, "images": [{"id": 5, "file_name": "5.png", "height": 0, "width": 40}]}, "'images' entry #0: the image size must be positive"),
        ({**good, "categories": [{"id": 1, "name": ["x"]}]}, "'categories' entry #0: 'name' must be a string"),
        ({**good, "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}, "category id 1 appears twice"),
        ({**good, "annotations": [[1, 2]]}, "annotation #0 is a list, not an object"),
    ]
    for content, message in cases:
        path.write_text(json.dumps(content))
        with pytest.raises(DatasetError, match=f"instances_val.json: {message}"):
            datasets.load_dataset(path, process_index=0, process_count=1)
    path.write_text("[" * 100_000 + "]" * 100_000)  # json: RecursionError before
    with pytest.raises(DatasetError, match="instances_val.json: not a valid JSON annotation file: arrays or objects "
                                           "nested too deeply"):
        datasets.load_dataset(path, process_index=0, process_count=1)
    path.write_text('{"images": [], "annotations": [], "categories": [], "x": ' + "1" * 5000 + "}")
    with pytest.raises(DatasetError, match="not a valid JSON annotation file"):  # int too long: a bare ValueError
        datasets.load_dataset(path, process_index=0, process_count=1)


# --- YOLO labels ---------------------------------------------------------------------------------------


def test_label_lines_boxes_polygons_and_errors(tmp_path):
    """class + 4 values: a box; class + 2k values, k >= 3: a polygon (Ultralytics' segment label), read as
    its bounding box; anything else is an error naming file and line."""
    path = tmp_path / "x.txt"
    path.write_text("0 0.5 0.5 0.2 0.4\n1 0.1 0.2 0.5 0.2 0.3 0.6\n")
    classes, boxes = datasets.parse_label_file(path, 2)
    np.testing.assert_array_equal(classes, [0, 1])
    np.testing.assert_allclose(boxes, [[0.5, 0.5, 0.2, 0.4], [0.3, 0.4, 0.4, 0.4]])
    for line, message in [
        ("0 0.1 0.2 0.3 0.4 0.5", "got 6"),  # class + 5 values: neither box nor polygon
        ("0 0.1 0.2 0.3 0.4 0.5 0.6 0.7", "got 8"),
        ("0 0.1 0.2", "got 3"),
        ("0 0.5 0.5 nan 0.2", "non-finite"),
        ("0 0.5 0.5 x 0.2", "'x' is not a number"),
        ("2 0.5 0.5 0.2 0.2", "class id 2 is outside"),
        ("0.5 0.5 0.5 0.2 0.2", "is not an integer"),
        ("0 0.5 0.5 1.5 0.2", "normalised"),
    ]:
        path.write_text("0 0.5 0.5 0.2 0.4\n" + line + "\n")
        with pytest.raises(DatasetError, match=f"x.txt:2: .*{message}"):
            datasets.parse_label_file(path, 2)
    path.write_bytes(b"0 0.5 0.5 0.2 \xff\xfe\n")
    with pytest.raises(DatasetError, match="x.txt: not a UTF-8 text label file"):
        datasets.parse_label_file(path, 2)


# --- symlink loops -----------------------------------------------------------------------------------------


def test_symlink_loops_in_an_image_folder(tmp_path):
    """Two links back to the folder: glob followed them 2^40 ways (a hang); now the first loop is named."""
    root = tmp_path / "ds"
    yolo_dataset(root, {"a.png": png_bytes(8, 8, 8)}, {})
    (root / "images/val/sub").mkdir()
    os.symlink(root / "images/val", root / "images/val/sub/loop1")
    os.symlink(root / "images", root / "images/val/sub/loop2")
    os.symlink(root / "labels", root / "images/val/linked")  # a link to a folder that is no loop: followed
    (root / "labels/x.png").write_bytes(png_bytes(8, 8, 8))
    child = run_bounded(f"""
        from pathlib import Path
        from nasjax.data import list_images, DatasetError
        try:
            list_images([Path({str(root / 'images/val')!r})])
        except DatasetError as e:
            print("refused:", e)
    """, memory_mib=4096, timeout_s=60)
    assert not child.timed_out and child.returncode == 0, child.stderr[-2000:]
    assert f"refused: {root}/images/val/sub/loop1 is a symbolic link loop" in child.stdout
    (root / "images/val/sub/loop1").unlink()
    (root / "images/val/sub/loop2").unlink()
    assert [p.relative_to(root) for p in datasets.list_images([root / "images/val"])] == \
        [Path("images/val/a.png"), Path("images/val/linked/x.png")]
    os.symlink("self", root / "images/val/self.png")  # a link to itself (ELOOP): listed, then unreadable
    with pytest.raises(ImageLoadError, match="self.png"):
        datasets.load_dataset(root / "data.yaml", process_index=0, process_count=1, progress=False)


# --- a full disk during a dataset download ---------------------------------------------------------------------


@pytest.mark.parametrize("where", ["download", "extract"])
def test_disk_full_during_dataset_download(tmp_path, monkeypatch, where):
    """A 2 MiB zip for a 1 MiB disk (refused by the download), or a 25 KB zip holding 24 MiB for a 20 MiB
    disk (the download's 16 MiB free-space margin passes; the extraction fills the disk). Before: the
    extraction's OSError with the .zip and the datasets folder left; now one DiskFullError naming the
    folder, and the disk as it was."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("tiny/images/val/1.png", png_bytes(8, 8, 8))
        if where == "download":
            zf.writestr("tiny/noise.bin", np.random.default_rng(0).bytes(2 << 20), zipfile.ZIP_STORED)
        else:
            zf.writestr("tiny/zeros.bin", bytes(24 << 20))
    with small_disk(tmp_path, "1m" if where == "download" else "20m") as disk, \
            serving({"/tiny.zip": buffer.getvalue()}) as (url, _):
        monkeypatch.setenv(datasets.DATASETS_DIR_ENV, str(disk / "datasets"))
        yaml_file = tmp_path / "tiny.yaml"
        yaml_file.write_text(f"path: tiny\nval: images/val\nnames: [a]\ndownload: {url}/tiny.zip\n")
        doing = "the download of" if where == "download" else "the files of tiny.zip"
        with pytest.raises(hub.DiskFullError, match=f"no space left for {doing} .* at {disk}/datasets"):
            datasets.load_dataset(yaml_file, process_index=0, process_count=1, progress=False)
        assert list(disk.iterdir()) == []  # no .zip, .part, staging folder, nor the datasets folder made for it


# --- the command line: one line, exit 2 ------------------------------------------------------------------------


def _cli_error(capsys, argv) -> str:
    from nasjax import cli

    with pytest.raises(SystemExit) as exit:
        cli.main(list(argv))
    err = capsys.readouterr().err
    assert exit.value.code == 2, err
    assert err.startswith(f"nasjax {argv[0]}: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def _broken_dataset(tmp_path: Path, case: str) -> tuple[Path, str]:
    """(data argument, what the error must say) for one broken dataset."""
    if case == "coco wrong types":
        path = make_coco_json(tmp_path, [{"id": 7, "image_id": 9, "category_id": 3, "bbox": ["1", 2, 3, 4]}])
        return path, "instances_val.json: annotation id 7: 'bbox' must be a finite number"
    if case == "coco nesting":
        path = make_coco_json(tmp_path, [])
        path.write_text("[" * 100_000)
        return path, "instances_val.json: not a valid JSON annotation file: arrays or objects nested too deeply"
    if case == "unreadable label":
        data = yolo_dataset(tmp_path / "ds", {"a.png": png_bytes(8, 8, 8)}, {})
        (tmp_path / "ds/labels/val/a.txt").write_bytes(b"\xff\xfe\x00 0 0.5")
        return data, "a.txt: not a UTF-8 text label file"
    if case == "label columns":
        data = yolo_dataset(tmp_path / "ds", {"a.png": png_bytes(8, 8, 8)}, {"a": "0 0.5 0.5 0.2 0.2\n1 0.1 0.2 0.3 0.4 0.5\n"})
        return data, "a.txt:2: expected 5 values"
    if case == "yaml bomb":
        path = tmp_path / "laughs.yaml"
        path.write_text(billion_laughs("names"))
        return path, "laughs.yaml:4: aliases"
    if case == "image bomb":
        return yolo_dataset(tmp_path / "ds", {"a.png": png_bytes(30000, 30000)}, {}), "a.png"
    if case == "big image":
        return yolo_dataset(tmp_path / "ds", {"a.png": png_bytes(9000, 9000)}, {}), "a.png: the image is 9000x9000"
    if case == "symlink loop":
        data = yolo_dataset(tmp_path / "ds", {"a.png": png_bytes(8, 8, 8)}, {})
        os.symlink(tmp_path / "ds/images", tmp_path / "ds/images/val/up")
        os.symlink(tmp_path / "ds/images/val", tmp_path / "ds/images/val/here")
        return data, "is a symbolic link loop"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["coco wrong types", "coco nesting", "unreadable label", "label columns", "yaml bomb",
                                  "image bomb", "big image", "symlink loop"])
def test_cli_val_on_broken_datasets(tmp_path, capsys, monkeypatch, case):
    """`nasjax val` reads the dataset before any weights: each broken one is one line and exit 2. The
    bombs run in a bounded child (before the fixes, the YAML one filled the machine's memory)."""
    data, message = _broken_dataset(tmp_path, case)
    predictions = tmp_path / "p.json"
    predictions.write_text("[]")
    argv = ["val", f"data={data}", f"predictions={predictions}"]
    if case in ("yaml bomb", "symlink loop"):
        child = run_bounded(f"from nasjax import cli; cli.main({argv!r})", memory_mib=4096, timeout_s=60, cwd=tmp_path)
        assert not child.timed_out and child.returncode == 2, child.stderr[-2000:]
        err = child.stderr.strip()
        assert err.startswith("nasjax val: error: ") and "\n" not in err, err
    else:
        monkeypatch.chdir(tmp_path)
        err = _cli_error(capsys, argv)
    assert message in err


def test_bad_image_files_are_image_load_errors(tmp_path):
    """Missing, truncated, empty, a folder, a bomb: each an ImageLoadError (a ValueError: one line and exit
    2 in the CLI, skipped with --skip-errors) naming the file."""
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "whole.jpg")
    data = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "folder.png").mkdir()
    images = {"truncated.jpg": data[: len(data) // 2], "empty.png": b"", "bomb.png": png_bytes(30000, 30000),
              "big.png": png_bytes(9000, 9000), "garbage.png": b"\x89PNG\r\n\x1a\n" + bytes(100)}
    for name, content in images.items():
        (tmp_path / name).write_bytes(content)
    for name in [*images, "missing.jpg", "folder.png"]:
        with pytest.raises(ImageLoadError, match=f"{tmp_path}/{name}"):
            preprocessing.load_image(tmp_path / name)


def test_cli_predict_on_a_big_image(tmp_path, capsys, monkeypatch):
    """`nasjax predict` on an image over the pixel limit: one line, exit 2, nothing written (the other bad
    files take the same path: test_bad_image_files_are_image_load_errors, tests/cli_test.py)."""
    (tmp_path / "big.png").write_bytes(png_bytes(9000, 9000))
    monkeypatch.chdir(tmp_path)
    err = _cli_error(capsys, ["predict", "random_weights=true", f"source={tmp_path / 'big.png'}", "imgsz=64",
                              f"save_dir={tmp_path / 'out'}"])
    assert "big.png: the image is 9000x9000" in err and limits.MAX_IMAGE_PIXELS_ENV in err
    assert not (tmp_path / "out").exists()
