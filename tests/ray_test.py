"""nasjax.ray.Predictor through Ray Data on a local 2-CPU cluster: every image once, the detections of
single-process nasjax.predict, from read_images, read_binary_files and a table of paths."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import nasjax
from compilation_cache import shared_compilation_cache
from nasjax.data.preprocessing import ImageLoadError
from nasjax.ray import OUTPUT_TYPES, Predictor

IMGSZ, CONF, BATCH = 64, 0.01, 4
OPTIONS = {"model": "yolo_nas_s", "pretrained": False, "imgsz": IMGSZ, "conf": CONF, "batch_size": BATCH}
SIZES = [(64, 64), (120, 80), (72, 110), (96, 96), (100, 64), (64, 117)]  # (width, height)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Workers share JAX's persistent compilation cache: each new actor (and a restarted one) loads the
    # compiled detector instead of compiling it again (docs/scale_out.md#compilation-cache).
    # This process (the engine=local runs) too, for the module's duration.
    with shared_compilation_cache(tmp_path_factory.mktemp("jax_cache")) as cache:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": cache})
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
        Predictor, fn_constructor_kwargs=OPTIONS, compute=ray.data.ActorPoolStrategy(size=1), batch_size=BATCH)
    dataset.write_parquet(str(tmp_path / "out"))  # the columns are Arrow types
    table = pq.read_table(str(tmp_path / "out"))
    assert {name: table.schema.field(name).type for name in OUTPUT_TYPES} == OUTPUT_TYPES
    check_rows(table.to_pylist(), expected)


def test_read_binary_files_and_unreadable_file(cluster, images, expected, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    dataset = ray.data.read_binary_files(images + [str(broken)], include_paths=True).map_batches(
        Predictor, fn_constructor_kwargs={**OPTIONS, "skip_errors": True}, compute=ray.data.ActorPoolStrategy(size=1), batch_size=3)
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


# --- the driver side: nasjax predict|val engine=ray, and a worker that dies -------------------------------

def cli(argv) -> int:
    """`nasjax ARGV` in this process (which holds the test cluster: the command joins it); the exit status."""
    from nasjax import cli as command

    with pytest.raises(SystemExit) as exit:
        command.main(list(argv))
    return exit.value.code


MODEL_ARGS = ["model=yolo_nas_s", "random_weights=true", f"imgsz={IMGSZ}", f"conf={CONF}", f"batch={BATCH}"]


def test_cli_predict_on_two_workers_writes_what_local_predict_writes(cluster, images, tmp_path, capsys):
    """engine=ray workers=2 save_json=true: predictions.json identical in content to engine=local's
    (image order, sizes, classes, names; boxes 1e-3 px, scores 1e-5), every image once, and the same
    annotated images; an unreadable file with skip_errors is a Parquet row with its error and absent
    from predictions.json."""
    folder = Path(images[0]).parent
    broken = folder / "zz_broken.png"
    broken.write_bytes(b"not an image")
    try:
        local = tmp_path / "local"
        assert cli(["predict", *MODEL_ARGS, f"source={folder}", f"save_dir={local}", "skip_errors=true"]) == 0
        on_ray = tmp_path / "ray"
        assert cli(["predict", *MODEL_ARGS, f"source={folder}", f"save_dir={on_ray}", "engine=ray", "workers=2",
                    "save_json=true", "skip_errors=true"]) == 0
    finally:
        broken.unlink()
    pictures = sorted(Path(p).name for p in images)
    assert sorted(p.name for p in on_ray.iterdir()) == pictures + ["predictions.json", "predictions.parquet"]
    for name in pictures:  # drawn by the workers: the annotated images of engine=local, pixel for pixel
        np.testing.assert_array_equal(np.asarray(Image.open(on_ray / name)), np.asarray(Image.open(local / name)))
    want, got = (json.loads((d / "predictions.json").read_text())["images"] for d in (local, on_ray))
    assert [r["source"] for r in got] == [r["source"] for r in want] == sorted(images)
    for a, b in zip(got, want):
        assert (a["width"], a["height"], a["annotated"]) == (b["width"], b["height"], b["annotated"])
        assert [d["class"] for d in a["detections"]] == [d["class"] for d in b["detections"]]
        assert [d["name"] for d in a["detections"]] == [d["name"] for d in b["detections"]]
        for name, tolerance in (("box", 1e-3), ("confidence", 1e-5)):
            values = [[list(d[name].values()) if name == "box" else d[name] for d in r["detections"]] for r in (a, b)]
            np.testing.assert_allclose(*values, atol=tolerance, rtol=0)
    table = pq.read_table(on_ray / "predictions.parquet")
    assert sorted(table.column("path").to_pylist()) == sorted(images + [str(broken)])
    assert json.loads(table.schema.metadata[b"nasjax.names"])["0"] == "person"
    errors = {row["path"]: row["error"] for row in table.to_pylist() if row["error"]}
    assert list(errors) == [str(broken)] and str(broken) in errors[str(broken)]
    out = capsys.readouterr()
    assert (f"{len(images)} images → {on_ray} (annotated images, predictions.parquet and predictions.json; "
            "2 Ray workers)") in out.out


def test_cli_unreadable_image_stops_the_run_and_writes_nothing(cluster, images, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for path in images[:3]:
        (folder / Path(path).name).write_bytes(Path(path).read_bytes())
    (folder / "img1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    save_dir = tmp_path / "run"
    assert cli(["predict", *MODEL_ARGS, f"source={folder}", f"save_dir={save_dir}", "engine=ray"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("nasjax predict: error: cannot read image") and "img1.png" in error, error
    assert error.count("\n") == 1, error
    assert not save_dir.exists() or not any(save_dir.iterdir())


def test_cli_val_on_ray_equals_local_val(cluster, images, tmp_path):
    """One metric computation over detections made on 2 Ray workers: the detections file (rounded
    as Ultralytics writes it) and the metrics of engine=local, exactly. (Random weights score 0 mAP:
    the detections file is the comparison that can fail.)"""
    root = tmp_path / "data"
    (root / "images" / "val").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    for k, path in enumerate(images):
        name = Path(path).name
        (root / "images" / "val" / name).write_bytes(Path(path).read_bytes())
        (root / "labels" / "val" / f"{Path(name).stem}.txt").write_text(f"{k} 0.5 0.4 0.3 0.2\n")
    names = list(nasjax.load("yolo_nas_s", pretrained=False).class_names)
    (root / "data.yaml").write_text(f"path: {root}\nval: images/val\nnames: {json.dumps(names)}\n")
    metrics, detections = {}, {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        assert cli(["val", str(root / "data.yaml"), *MODEL_ARGS[:3], f"batch={BATCH}", f"save_dir={out}",
                    f"engine={engine}", "workers=2", f"save_predictions={out}.json"]) == 0
        metrics[engine] = json.loads((out / "metrics.json").read_text())
        detections[engine] = json.loads(Path(f"{out}.json").read_text())
    assert len(detections["ray"]) > 100 and {d["image_id"] for d in detections["ray"]} == {f"img{k}" for k in range(len(images))}
    assert detections["ray"] == detections["local"]
    for key in ("map50_95", "map50", "precision", "recall", "ultralytics_map50_95", "images", "instances"):
        assert metrics["ray"][key] == metrics["local"][key], key
    assert metrics["ray"]["settings"]["engine"] == "ray"


def test_a_worker_killed_mid_run_loses_and_repeats_nothing(cluster, images, expected, tmp_path):
    """A worker process dies (SIGKILL) in its second batch: Ray starts a new one and runs the batch
    again; every image comes back exactly once, with the detections of single-process predict."""
    from nasjax.ray import predict_files

    marker = tmp_path / "killed"

    class DiesOnce(Predictor):
        calls = 0

        def __call__(self, batch):
            type(self).calls += 1
            if type(self).calls == 2 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            return super().__call__(batch)

    paths = images * 3  # 18 rows in 5 batches of 4: the kill lands mid-run
    options = {k: v for k, v in OPTIONS.items()}
    tables = list(predict_files(paths, options, workers=1, calls_per_worker=1, predictor=DiesOnce))
    assert marker.exists(), "the worker was not killed"
    rows = [row for table in tables for row in table.to_pylist()]
    assert sorted(row["index"] for row in rows) == list(range(len(paths)))
    check_rows([row for row in rows if row["index"] < len(images)], expected)
    check_rows([row for row in rows if row["index"] >= 2 * len(images)], expected)


def test_coco128_on_two_workers_equals_predict(cluster, shared_dir, tmp_path):
    """The issue's check on real photographs: COCO128 (from ../shared when present) through
    `nasjax predict engine=ray workers=2` is single-process predict's output, every image once."""
    folder = shared_dir / "assets" / "coco128" / "images" / "train2017"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    args = ["model=yolo_nas_s", "random_weights=true", "imgsz=128", "conf=0.3", "batch=8", f"source={folder}",
            "save=false"]
    assert cli(["predict", *args, f"save_dir={tmp_path / 'local'}"]) == 0
    assert cli(["predict", *args, f"save_dir={tmp_path / 'ray'}", "engine=ray", "workers=2", "save_json=true"]) == 0
    want, got = (json.loads((tmp_path / d / "predictions.json").read_text())["images"] for d in ("local", "ray"))
    assert len(got) == 128 and len({r["source"] for r in got}) == 128
    assert [r["source"] for r in got] == [r["source"] for r in want]
    assert sum(len(r["detections"]) for r in got) > 0
    for a, b in zip(got, want):
        assert (a["width"], a["height"]) == (b["width"], b["height"])
        assert [d["class"] for d in a["detections"]] == [d["class"] for d in b["detections"]]
        for name, tolerance in (("box", 1e-3), ("confidence", 1e-5)):
            values = [[list(d[name].values()) if name == "box" else d[name] for d in r["detections"]] for r in (a, b)]
            np.testing.assert_allclose(*values, atol=tolerance, rtol=0)
