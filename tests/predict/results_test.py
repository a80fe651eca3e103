"""nasjax.results: box views, summary, JSON, drawing, atomic saving."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from nasjax.utils.atomic_files import write_atomic
from nasjax.predict.results import Boxes, Results

NAMES = {0: "person", 5: "bus", 7: "glass"}


def make_result(path="photos/bus.jpg"):
    image = np.full((100, 200, 3), 40, np.uint8)
    boxes = Boxes(
        xyxy=[[10, 20, 50, 80], [100, 10, 190, 90], [5, 5, 30, 30], [120, 40, 160, 60]],
        conf=[0.9, 0.8, 0.5, 0.3],
        cls=[0, 5, 0, 7],
        orig_shape=image.shape[:2],
    )
    return Results(image, boxes, NAMES, path)


def test_box_views():
    b = make_result().boxes
    assert len(b) == 4 and b.xyxy.dtype == np.float32 and b.cls.dtype == np.int64
    np.testing.assert_allclose(b.xywh[0], [30, 50, 40, 60])
    np.testing.assert_allclose(b.xyxyn[1], [0.5, 0.1, 0.95, 0.9])
    np.testing.assert_allclose(b.xywhn[0], [0.15, 0.5, 0.2, 0.6])
    with pytest.raises(ValueError, match="differ in length"):
        Boxes([[0, 0, 1, 1]], [0.5, 0.6], [0], (10, 10))


def test_summary_and_repr():
    r = make_result()
    assert r.summary() == "2 persons, 1 bus, 1 glass"
    assert repr(r) == "Results(bus.jpg 200x100: 2 persons, 1 bus, 1 glass)"
    empty = Results(np.zeros((4, 6, 3), np.uint8), Boxes(np.zeros((0, 4)), [], [], (4, 6)), NAMES)
    assert len(empty) == 0 and repr(empty) == "Results(image 6x4: (no detections))"
    two_buses = Results(np.zeros((4, 6, 3), np.uint8), Boxes([[0, 0, 1, 1]] * 2, [0.5, 0.4], [5, 5], (4, 6)), NAMES)
    assert two_buses.summary() == "2 buses"
    unnamed = Results(np.zeros((4, 6, 3), np.uint8), Boxes([[0, 0, 1, 1]], [0.5], [3], (4, 6)), NAMES)
    assert unnamed.summary() == "1 class3"


def test_json():
    records = json.loads(make_result().to_json())
    assert records[1] == {"name": "bus", "class": 5, "confidence": pytest.approx(0.8),
                          "box": {"x1": 100.0, "y1": 10.0, "x2": 190.0, "y2": 90.0}}


def test_plot_draws_boxes_and_labels():
    r = make_result()
    plotted = r.plot()
    assert plotted.shape == r.orig_img.shape and plotted.dtype == np.uint8
    assert (r.orig_img == 40).all()  # the original is untouched
    changed = (plotted != 40).any(-1)
    assert changed[20, 10:50].all() and changed[10, 100:190].all()  # box top edges
    assert changed[8:18, 33:48].any()  # the label above the first box
    bare = r.plot(labels=False)
    assert not (bare != 40).any(-1)[8:18, 33:48].any()  # no label without labels=True


def test_save_is_atomic(tmp_path):
    r = make_result()
    out = r.save(tmp_path / "sub" / "annotated.png")
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["annotated.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(out)), r.plot())
    with pytest.raises(ValueError, match="image format"):
        r.save(tmp_path / "annotated.unknown")

    def failing(tmp):
        tmp.write_text("partial")
        raise RuntimeError("disk full")

    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        write_atomic(target, failing)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "sub"]
