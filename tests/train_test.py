"""nasjax.train on a tiny generated YOLO-format dataset: the loss falls, checkpoints load, bad data fails clearly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from PIL import Image

import nasjax
from nasjax.datasets import DatasetError
from nasjax.input_pipeline import Loader, load_split
from nasjax.train import train

COLOURS = [(230, 40, 40), (40, 60, 230)]


def make_dataset(root: Path, n: int = 8, size: int = 64, seed: int = 0, labels: bool = True,
                 bad_class: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n if split == "train" else 4):
            image = np.full((size, size, 3), 128, np.uint8)
            rows = []
            for _ in range(rng.integers(1, 3)):
                cls = int(rng.integers(0, 2))
                w, h = rng.integers(12, 30, 2)
                x0, y0 = rng.integers(0, size - w), rng.integers(0, size - h)
                image[y0:y0 + h, x0:x0 + w] = COLOURS[cls]
                rows.append(f"{5 if bad_class else cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} "
                            f"{w / size:.6f} {h / size:.6f}")
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            if labels:
                (root / "labels" / split / f"{i}.txt").write_text("\n".join(rows) + "\n")
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: red\n  1: blue\n")
    return yaml


def test_loader_is_deterministic_and_fixed_shape(tmp_path):
    data = make_dataset(tmp_path)
    dataset = load_split(data, "train")
    a = list(Loader(dataset, 4, 64, seed=3).epoch(1))
    b = list(Loader(dataset, 4, 64, seed=3, workers=1).epoch(1))
    assert len(a) == 2
    for x, y in zip(a, b):
        assert x.images.shape == (4, 64, 64, 3) and x.images.dtype == np.float32
        assert 0.0 <= x.images.min() and x.images.max() <= 1.0
        assert x.targets.boxes.shape == (4, 2, 4) and x.targets.mask.any(axis=1).all()
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.targets.boxes, y.targets.boxes)
    other = list(Loader(dataset, 4, 64, seed=3).epoch(2))
    assert not np.array_equal(a[0].images, other[0].images)


def test_train_loss_falls_and_checkpoints_load(tmp_path):
    # One epoch of 12 steps: compiling the step (~30 s on 2 cores) dominates, the steps take ~0.1 s each.
    data = make_dataset(tmp_path / "data", n=24)
    project = tmp_path / "run"
    result = train(data, "yolo_nas_s", pretrained=False, epochs=1, batch=2, imgsz=64, lr=1e-3, warmup_steps=0,
                   project=project, seed=0, workers=2, progress=False)
    losses = result["step_losses"]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < losses[0], losses
    for name in ("last", "best"):
        assert (project / name / "nasjax.json").is_file()
    assert (project / "results.json").is_file() and (project / "state").is_dir()
    assert "val_loss" in result["history"][-1]
    detector = nasjax.load(project / "last")
    assert detector.form == "full" and detector.num_classes == 2 and detector.class_names == ["red", "blue"]
    boxes, scores = detector(np.zeros((1, 64, 64, 3), np.float32))
    assert boxes.shape[-1] == 4 and scores.shape[-1] == 2 and np.isfinite(np.asarray(scores)).all()


def test_no_labels_is_a_clear_error(tmp_path):
    data = make_dataset(tmp_path, labels=False)
    with pytest.raises(DatasetError, match="no labelled boxes"):
        train(data, epochs=1, batch=2, imgsz=64, project=tmp_path / "run", progress=False)


def test_class_beyond_names_is_a_clear_error(tmp_path):
    data = make_dataset(tmp_path, bad_class=True)
    with pytest.raises(DatasetError, match="class id 5 is outside"):
        train(data, epochs=1, batch=2, imgsz=64, project=tmp_path / "run", progress=False)


def test_pretrained_transfer_keeps_only_mismatched_head():
    from nasjax.train import transfer_matching

    source = nasjax.build("yolo_nas_s", form="training", num_classes=80, seed=1)
    target = nasjax.build("yolo_nas_s", form="training", num_classes=2, seed=0)
    variables, kept = transfer_matching(source.variables, target.variables)
    assert sorted(kept) == sorted(f"heads/head{i}/cls_pred/{n}" for i in (1, 2, 3) for n in ("bias", "kernel"))
    copied = dict(nnx.to_flat_state(variables))
    path = ("backbone", "stem", "conv", "branch_3x3", "conv", "kernel")
    np.testing.assert_array_equal(copied[path][...], dict(nnx.to_flat_state(source.variables))[path][...])
