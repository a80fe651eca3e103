"""nasjax.ray.Predictor through Ray Data on a local 2-CPU cluster: every image once, the detections of
single-process nasjax.predict, from read_images, read_binary_files and a table of paths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import nasjax
from nasjax.data.preprocessing import ImageLoadError
from nasjax.ray import OUTPUT_TYPES, Predictor

IMGSZ, CONF, BATCH = 64, 0.01, 4
OPTIONS = {"model": "yolo_nas_s", "pretrained": False, "imgsz": IMGSZ, "conf": CONF, "batch_size": BATCH}
SIZES = [(64, 64), (120, 80), (72, 110), (96, 96), (100, 64), (64, 117)]  # (width, height)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for k, (w, h) in enumerate(SIZES):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[h // 4: h // 2, w // 3: 2 * w // 3] = (200, 30, 30)  # a block, so there is structure
        path = folder / f"img{k}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def expected(images) -> dict[str, nasjax.Results]:
    model = nasjax.load("yolo_nas_s", pretrained=False)
    results = model.predict(images, imgsz=IMGSZ, conf=CONF, batch_size=BATCH)
    assert all(len(r.boxes) for r in results), "the comparison needs detections"
    return {r.path: r for r in results}


def check_rows(rows: list[dict], expected: dict) -> None:
    assert sorted(row["path"] for row in rows) == sorted(expected)  # every image exactly once
    for row in rows:
        want = expected[row["path"]]
        assert row["error"] is None
        assert (row["height"], row["width"]) == want.orig_shape
        boxes = np.asarray([list(b) for b in row["boxes"]], np.float32).reshape(-1, 4)
        np.testing.assert_allclose(boxes, want.boxes.xyxy, atol=1e-3, rtol=0)
        np.testing.assert_allclose(np.asarray(row["scores"], np.float32), want.boxes.conf, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(np.asarray(row["classes"], np.int64), want.boxes.cls)


def test_read_images_matches_predict(cluster, images, expected, tmp_path):
    folder = str(Path(images[0]).parent)
    dataset = ray.data.read_images(folder, include_paths=True, mode="RGB").map_batches(
        Predictor, fn_constructor_kwargs=OPTIONS, concurrency=1, batch_size=BATCH)
    dataset.write_parquet(str(tmp_path / "out"))  # the columns are Arrow types
    table = pq.read_table(str(tmp_path / "out"))
    assert {name: table.schema.field(name).type for name in OUTPUT_TYPES} == OUTPUT_TYPES
    check_rows(table.to_pylist(), expected)


def test_read_binary_files_and_unreadable_file(cluster, images, expected, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    dataset = ray.data.read_binary_files(images + [str(broken)], include_paths=True).map_batches(
        Predictor, fn_constructor_kwargs={**OPTIONS, "skip_errors": True}, concurrency=1, batch_size=3)
    rows = dataset.take_all()
    bad = [row for row in rows if row["path"] == str(broken)]
    assert len(bad) == 1 and bad[0]["error"] == f"cannot read image {broken}: cannot identify image file"
    assert bad[0]["width"] is None and len(bad[0]["boxes"]) == 0
    check_rows([row for row in rows if row["path"] != str(broken)], expected)


def test_in_process_paths_column_and_errors(images, expected, tmp_path):
    """A table of paths only (read from disk), called directly; an unreadable file raises by default."""
    predictor = Predictor(**OPTIONS)
    rows = predictor({"path": np.array(images), "id": np.arange(len(images))}).to_pylist()
    assert [row["id"] for row in rows] == list(range(len(images)))
    check_rows(rows, expected)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    # A batch with nothing readable has the same column types as any other.
    table = Predictor(**OPTIONS, skip_errors=True)({"path": np.array([str(broken)])})
    assert table.schema.names == ["path", *OUTPUT_TYPES]
    assert {name: table.schema.field(name).type for name in OUTPUT_TYPES} == OUTPUT_TYPES
    assert str(broken) in table.column("error")[0].as_py() and table.column("width")[0].as_py() is None
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        predictor({"path": np.array([images[0], str(broken)])})
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        predictor({"bytes": np.array([broken.read_bytes()], dtype=object), "path": np.array([str(broken)])})
