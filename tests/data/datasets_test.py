"""The datasets of nasjax.data, through its public names: data YAML resolution (config.py, Ultralytics'
rules), YOLO labels and their errors (yolo.py), downloads from a local HTTP server (download.py: zip,
extracted atomically) and the offline message, COCO JSON (coco_json.py), TFDS with mocked data
(tfds.py), and the real coco8 / coco128 / tinycoco from ../shared when present."""
from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from local_http import http_server, refused_url
from PIL import Image

pytest.importorskip("pycocotools", reason="validation needs the 'data' extra: pip install -e '.[data]'")
pytest.importorskip("yaml", reason="the 'data' extra")
import nasjax.data as datasets
from nasjax.data import COCO80_TO_91, DatasetError, DatasetNotFoundError, ImageLoadError
from nasjax.weights.coco import COCO_CLASS_NAMES


@pytest.fixture(autouse=True)
def isolated_datasets_dir(tmp_path, monkeypatch):
    """Every test gets its own datasets dir and working directory."""
    monkeypatch.setenv(datasets.DATASETS_DIR_ENV, str(tmp_path / "datasets"))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path / "datasets"


def make_yolo_dataset(root: Path, labels: dict[str, str | None], size=(40, 60), split="val", names=("a", "b", "c"),
                      yaml_path: str | None = None) -> Path:
    """Images root/images/<split>/<stem>.png (h x w = size) with label text (None: no label file)."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for stem, text in labels.items():
        Image.new("RGB", (size[1], size[0]), (90, 120, 150)).save(root / "images" / split / f"{stem}.png")
        if text is not None:
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    yaml_file = root / f"{root.name}.yaml"
    yaml_file.write_text(f"path: {yaml_path if yaml_path is not None else root}\nval: images/{split}\n"
                         f"names: {list(names)}\n")
    return yaml_file


# --- YAML resolution ---------------------------------------------------------------------------------


def test_yaml_paths_resolved_like_ultralytics(tmp_path, isolated_datasets_dir):
    # relative `path`: the working directory first, then the datasets directory
    make_yolo_dataset(isolated_datasets_dir / "tiny", {"1": "0 0.5 0.5 0.2 0.2\n"}, yaml_path="tiny")
    yaml_file = tmp_path / "tiny.yaml"
    yaml_file.write_text("path: tiny\nval: images/val\nnames: {0: a, 1: b, 2: c}\n")
    config = datasets.load_data_config(yaml_file)
    assert config.root == (isolated_datasets_dir / "tiny").resolve()
    assert config.splits["val"] == [(isolated_datasets_dir / "tiny/images/val").resolve()]
    assert config.names == {0: "a", 1: "b", 2: "c"} and config.splits["train"] is None
    make_yolo_dataset(Path.cwd() / "tiny", {"2": ""})
    assert datasets.load_data_config(yaml_file).root == (Path.cwd() / "tiny").resolve()
    # no `path`: the YAML's folder; '../x' falls back to 'x' when absent
    (tmp_path / "other").mkdir()
    (tmp_path / "other/images").mkdir()
    (tmp_path / "other/d.yaml").write_text("val: ../images\nnames: [x]\n")
    config = datasets.load_data_config(tmp_path / "other/d.yaml")
    assert config.root == (tmp_path / "other").resolve()
    assert config.splits["val"] == [(tmp_path / "other/images").resolve()]


def test_folder_passed_is_the_root(tmp_path):
    root = tmp_path / "mydata"
    make_yolo_dataset(root, {"1": "1 0.5 0.5 0.5 0.5\n"}, yaml_path="somewhere/else")
    config = datasets.load_data_config(root)
    assert config.root == root.resolve() and config.name == "mydata"
    assert len(datasets.load_dataset(root)) == 1


def test_shipped_names():
    assert {"coco", "coco8", "coco128"} <= set(datasets.shipped_dataset_names())
    for name in ("coco8", "coco128", "coco", "coco8.yaml"):
        config = datasets.load_data_config(name)
        assert config.names == dict(enumerate(COCO_CLASS_NAMES))
        assert config.root == (datasets.datasets_dir() / name.removesuffix(".yaml")).resolve()
    assert datasets.load_data_config("coco8").download.endswith("/coco8.zip")
    with pytest.raises(DatasetNotFoundError, match="shipped with nasjax \\(coco, coco128, coco8"):
        datasets.load_data_config("no_such_dataset")


def test_yaml_errors(tmp_path):
    def config(text):
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        return datasets.load_data_config(path)

    with pytest.raises(DatasetError, match=r"bad\.yaml: 'val:' missing"):
        config("path: .\ntrain: images\nnames: [a]\n")
    with pytest.raises(DatasetError, match="'names:' \\(or 'nc:'\\) missing"):
        config("val: images\n")
    with pytest.raises(DatasetError, match="'names' has 2 entries but 'nc: 3'"):
        config("val: images\nnames: [a, b]\nnc: 3\n")
    with pytest.raises(DatasetError, match="without gaps"):
        config("val: images\nnames: {0: a, 2: b}\n")
    with pytest.raises(DatasetError, match="not valid YAML"):
        config("val: [images\n")
    with pytest.warns(UserWarning, match="renaming 'validation:'"):
        assert config("validation: images\nnc: 2\n").names == {0: "class_0", 1: "class_1"}


# --- labels ------------------------------------------------------------------------------------------


def test_labels_backgrounds_polygons_duplicates(tmp_path):
    yaml_file = make_yolo_dataset(tmp_path / "d", {
        "000000000042": "0 0.5 0.5 0.5 0.5\n\n2 0.25 0.25 0.1 0.2\n0 0.5 0.5 0.5 0.5\n",  # a duplicate line
        "img_b": "1 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6\n",  # a polygon
        "img_c": "",  # empty label file: background
        "img_d": None,  # no label file: background
    }, size=(40, 60))
    ds = datasets.load_dataset(yaml_file)
    assert len(ds) == 4 and ds.missing_labels == 1
    by_key = {s.key: s for s in ds.samples}
    assert set(by_key) == {42, "img_b", "img_c", "img_d"}  # numeric stems become ints
    s = by_key[42]
    assert (s.height, s.width) == (40, 60) and s.file_name == "000000000042.png"
    np.testing.assert_array_equal(s.classes, [0, 2])
    np.testing.assert_allclose(s.boxes, [[15, 10, 45, 30], [12, 6, 18, 14]])
    np.testing.assert_allclose(by_key["img_b"].boxes, [[6, 8, 18, 24]])
    assert len(by_key["img_c"].boxes) == 0 and len(by_key["img_d"].boxes) == 0
    assert ds.category_ids == [1, 2, 3]


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.5", "expected 5 values"),
    ("0 0.5 0.5 0.5 0.5 0.5", "expected 5 values"),
    ("0 0.5 x 0.5 0.5", "'x' is not a number"),
    ("3 0.5 0.5 0.5 0.5", "class id 3 is outside the dataset's 3 names"),
    ("-1 0.5 0.5 0.5 0.5", "class id -1 is outside"),
    ("1.5 0.5 0.5 0.5 0.5", "class id '1.5' is not an integer"),
    ("1 0.5 0.5 1.5 0.5", "coordinates must be normalised to \\[0, 1\\]"),
    ("1 0.5 0.5 nan 0.5", "non-finite"),
])
def test_malformed_label_lines(tmp_path, line, message):
    yaml_file = make_yolo_dataset(tmp_path / "d", {"im": f"0 0.5 0.5 0.2 0.2\n{line}\n"})
    label = tmp_path / "d/labels/val/im.txt"
    with pytest.raises(DatasetError, match=f"{label}:2: {message}"):
        datasets.load_dataset(yaml_file)


def test_label_paths_and_image_lists(tmp_path):
    sep = os.sep
    assert datasets.label_path(Path(f"{sep}a{sep}images{sep}x{sep}images{sep}v{sep}1.jpg")) == \
        Path(f"{sep}a{sep}images{sep}x{sep}labels{sep}v{sep}1.txt")
    assert datasets.label_path(Path(f"{sep}a{sep}b{sep}1.x.jpg")) == Path(f"{sep}a{sep}b{sep}1.x.txt")
    root = tmp_path / "d"
    make_yolo_dataset(root, {"1": "0 0.5 0.5 0.2 0.2\n", "2": None, "3": None})
    (root / "images/val/notes.txt").write_text("not an image")
    (root / "val.txt").write_text("./images/val/2.png\nimages/val/1.png\n\n")
    (root / "d.yaml").write_text("val: val.txt\nnames: [a, b, c]\n")
    ds = datasets.load_dataset(root / "d.yaml")
    assert [s.key for s in ds.samples] == [1, 2]
    assert len(datasets.list_images([root / "images"])) == 3  # recursive, image extensions only


def test_unreadable_image_named_before_inference(tmp_path):
    yaml_file = make_yolo_dataset(tmp_path / "d", {"ok": None})
    (tmp_path / "d/images/val/broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        datasets.load_dataset(yaml_file)


def test_sharding(tmp_path):
    yaml_file = make_yolo_dataset(tmp_path / "d", {str(i): None for i in range(5)})
    parts = [datasets.load_dataset(yaml_file, process_index=i, process_count=2) for i in range(2)]
    # Contiguous blocks, so that results gathered in process order are in the dataset's order.
    assert [[s.key for s in p.samples] for p in parts] == [[0, 1], [2, 3, 4]]


# --- download ----------------------------------------------------------------------------------------


def zip_bytes(root: Path, top: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, f"{top}/{path.relative_to(root)}")
    return buffer.getvalue()


@contextlib.contextmanager
def serving(files: dict[str, bytes]):
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    with http_server(Handler) as base:
        yield base, requests


def test_download_zip_from_local_server(tmp_path, isolated_datasets_dir):
    source = tmp_path / "src"
    make_yolo_dataset(source, {"1": "0 0.5 0.5 0.2 0.2\n", "2": "1 0.2 0.2 0.1 0.1\n"})
    (source / "src.yaml").unlink()
    payload = zip_bytes(source, "tiny")
    with serving({"/tiny.zip": payload}) as (url, requests):
        yaml_file = tmp_path / "tiny.yaml"
        yaml_file.write_text(f"path: tiny\nval: images/val\nnames: [a, b, c]\ndownload: {url}/tiny.zip\n")
        ds = datasets.load_dataset(yaml_file)
        assert len(ds) == 2 and requests == ["/tiny.zip"]
        assert sorted(p.name for p in isolated_datasets_dir.iterdir()) == ["tiny"]  # zip removed, no staging left
        assert (isolated_datasets_dir / "tiny/labels/val/1.txt").is_file()
        datasets.load_dataset(yaml_file)  # present now: no second request
        assert requests == ["/tiny.zip"]


def test_download_list_into_dirs(tmp_path, isolated_datasets_dir):
    """coco.yaml's form: labels zip (holding the root folder) + images zip into <root>/images."""
    labels, images = tmp_path / "labels_src", tmp_path / "images_src"
    (labels / "labels/val2017").mkdir(parents=True)
    (labels / "labels/val2017/7.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (labels / "val2017.txt").write_text("./images/val2017/7.png\n")
    images.mkdir()
    Image.new("RGB", (32, 24)).save(images / "7.png")
    with serving({"/labels.zip": zip_bytes(labels, "cc"), "/val.zip": zip_bytes(images, "val2017")}) as (url, _):
        yaml_file = tmp_path / "cc.yaml"
        yaml_file.write_text(f"path: cc\nval: val2017.txt\nnames: [a]\ndownload:\n  - url: {url}/labels.zip\n"
                             f"  - url: {url}/val.zip\n    dir: images\n")
        ds = datasets.load_dataset(yaml_file)
    assert [s.key for s in ds.samples] == [7] and len(ds.samples[0].boxes) == 1


def test_offline_message(tmp_path, isolated_datasets_dir):
    url = refused_url("tiny.zip")
    yaml_file = tmp_path / "tiny.yaml"
    yaml_file.write_text(f"path: tiny\nval: images/val\nnames: [a]\ndownload: {url}\n")
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_dataset(yaml_file)
    message = str(info.value)
    assert "val images not found" in message and str(isolated_datasets_dir / "tiny/images/val") in message
    assert f"Download {url}" in message and f"unzip it into {isolated_datasets_dir}" in message
    assert "Downloading failed" in message and datasets.DATASETS_DIR_ENV in message
    assert not any(p.suffix == ".zip" for p in isolated_datasets_dir.rglob("*"))
    with pytest.raises(DatasetNotFoundError, match="Download http") as info:
        datasets.load_dataset(yaml_file, download=False)
    assert "Downloading failed" not in str(info.value)


def test_unsupported_downloads_and_unsafe_zip(tmp_path, isolated_datasets_dir):
    yaml_file = tmp_path / "s.yaml"
    yaml_file.write_text("path: s\nval: images\nnames: [a]\ndownload: |\n  import os\n")
    with pytest.raises(DatasetError, match="does not run download scripts"):
        datasets.load_dataset(yaml_file)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with serving({"/evil.zip": buffer.getvalue()}) as (url, _):
        yaml_file.write_text(f"path: s\nval: images\nnames: [a]\ndownload: {url}/evil.zip\n")
        with pytest.raises(DatasetError, match="unsafe path"):
            datasets.load_dataset(yaml_file)
    assert not (isolated_datasets_dir.parent / "evil.txt").exists()


# --- COCO JSON ---------------------------------------------------------------------------------------


def make_coco_json(tmp_path, annotations, categories=((1, "person"), (3, "car"))):
    (tmp_path / "images/val").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    for image_id in (5, 9):
        Image.new("RGB", (50, 40)).save(tmp_path / f"images/val/{image_id:012d}.jpg")
    data = {"images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 50, "height": 40} for i in (9, 5)],
            "annotations": annotations, "categories": [{"id": c, "name": n} for c, n in categories]}
    path = tmp_path / "annotations/instances_val.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_json(tmp_path):
    path = make_coco_json(tmp_path, [
        {"id": 1, "image_id": 9, "category_id": 3, "bbox": [1, 2, 10, 20], "area": 150.0, "iscrowd": 0},
        {"id": 2, "image_id": 9, "category_id": 1, "bbox": [0, 0, 40, 30], "area": 900.0, "iscrowd": 1},
    ])
    ds = datasets.load_dataset(path)  # images found at ../images/val
    assert ds.names == {0: "person", 1: "car"} and ds.category_ids == [1, 3]
    assert [s.key for s in ds.samples] == [5, 9]
    s = ds.samples[1]
    np.testing.assert_allclose(s.boxes, [[1, 2, 11, 22], [0, 0, 40, 30]])
    np.testing.assert_array_equal(s.classes, [1, 0])
    np.testing.assert_array_equal(s.iscrowd, [False, True])
    np.testing.assert_allclose(s.area, [150, 900])
    assert len(ds.samples[0].boxes) == 0


def test_coco_json_errors(tmp_path):
    path = make_coco_json(tmp_path, [{"id": 7, "image_id": 9, "category_id": 2, "bbox": [1, 2, 3, 4]}])
    with pytest.raises(DatasetError, match="annotation id 7 has category_id 2"):
        datasets.load_dataset(path)
    path.write_text("{]")
    with pytest.raises(DatasetError, match="not a valid JSON"):
        datasets.load_dataset(path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="'annotations' list"):
        datasets.load_dataset(path)
    with pytest.raises(DatasetNotFoundError, match="image folder not found"):
        datasets.CocoJsonDataset(make_coco_json(tmp_path / "x", []), tmp_path / "nowhere")


# --- TFDS --------------------------------------------------------------------------------------------


def tfds_examples():
    rng = np.random.default_rng(0)
    return [
        {"image": rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), "image/filename": "000000000007.jpg",
         "image/id": 7,
         "objects": {"id": np.array([1, 2]), "area": np.array([120, 30]),
                     "bbox": np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 0.25, 0.1]], np.float32),
                     "label": np.array([2, 0]), "is_crowd": np.array([False, True])}},
        {"image": rng.integers(0, 255, (30, 20, 3), dtype=np.uint8), "image/filename": "000000000011.jpg",
         "image/id": 11,
         "objects": {"id": np.zeros(0, np.int64), "area": np.zeros(0, np.int64), "bbox": np.zeros((0, 4), np.float32),
                     "label": np.zeros(0, np.int64), "is_crowd": np.zeros(0, bool)}},
    ]


@contextlib.contextmanager
def mocked_coco(examples, splits_seen=None):
    tf = pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")

    def as_dataset(self, split, **kwargs):
        if splits_seen is not None:
            splits_seen.append(split)
        return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=self.info.features.get_tensor_spec())

    with tfds.testing.mock_data(as_dataset_fn=as_dataset, policy=tfds.testing.MockPolicy.USE_CODE):
        yield


def test_tfds_coco_mocked():
    splits = []
    with mocked_coco(tfds_examples(), splits):
        ds = datasets.load_dataset("tfds:coco/2017", process_index=0, process_count=1)
        assert ds.names == dict(enumerate(COCO_CLASS_NAMES)) and ds.category_ids == list(COCO80_TO_91)
        chunks = list(ds.chunks(1))
        sharded = datasets.load_dataset("tfds:coco/2017", process_index=1, process_count=2)
        list(sharded.chunks(8))
    assert [len(c) for c in chunks] == [1, 1]
    first, second = chunks[0][0], chunks[1][0]
    assert first.key == 7 and first.file_name == "000000000007.jpg" and (first.height, first.width) == (40, 50)
    np.testing.assert_allclose(first.boxes, [[10, 4, 30, 20], [0, 0, 5, 10]], rtol=1e-6)
    np.testing.assert_array_equal(first.classes, [2, 0])
    np.testing.assert_array_equal(first.iscrowd, [False, True])
    np.testing.assert_allclose(first.area, [120, 30])
    assert second.key == 11 and second.boxes.shape == (0, 4) and isinstance(second.source, np.ndarray)
    assert str(splits[0]) == "validation"
    assert "validation" in str(splits[1]) and splits[1] != "validation"  # this process's sub-split


def test_tfds_not_prepared(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tensorflow_datasets")
    ds = datasets.TfdsCocoDataset("coco/2017", "validation", str(tmp_path / "tfds"), process_index=0, process_count=1)
    with pytest.raises(DatasetNotFoundError, match="tfds build coco/2017"):
        next(ds.chunks(4))


# --- the real data in ../shared -----------------------------------------------------------------------


def test_shared_coco8_and_coco128(shared_dir, monkeypatch):
    assets = shared_dir / "assets"
    monkeypatch.setenv(datasets.DATASETS_DIR_ENV, str(assets))
    coco8 = datasets.load_dataset("coco8")
    assert len(coco8) == 4 and sum(len(s.classes) for s in coco8.samples) == 17
    assert datasets.load_dataset(assets / "coco8").names == coco8.names  # the folder itself
    coco128 = datasets.load_dataset("coco128")
    assert len(coco128) == 128 and coco128.missing_labels == 2
    assert sum(len(s.boxes) == 0 for s in coco128.samples) == 2
    assert all(isinstance(s.key, int) for s in coco128.samples)


def test_shared_tinycoco(shared_dir):
    ds = datasets.load_dataset(shared_dir / "assets/tinycoco/annotations/instances_train2017.json")
    assert len(ds) == 32 and ds.category_ids == list(COCO80_TO_91) and ds.names == dict(enumerate(COCO_CLASS_NAMES))
    assert sum(len(s.boxes) for s in ds.samples) == 288 and sum(int(s.iscrowd.sum()) for s in ds.samples) == 4
