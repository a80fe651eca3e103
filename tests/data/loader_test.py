"""nasjax.data.loader: `prepare` (the augmentations of nasjax.data.augment run in order on a sample)
and the `Loader`, on tiny generated YOLO datasets whose boxes are solid rectangles of their class's
colour, so that the boxes can be checked against the pixels."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasjax.data import Augmentation, Loader, augment, load_split, loader
from nasjax.data.preprocessing import load_image, make_transform, to_unit_float

COLOURS = {0: (230, 40, 40), 1: (40, 200, 40), 2: (40, 60, 230), 3: (230, 220, 40)}
BACKGROUND = 128
SIZES = ((96, 128), (128, 96), (80, 80), (72, 120))  # (H, W) of the generated images


# --- generated datasets ----------------------------------------------------------------------------


def make_dataset(root: Path, n: int = 8, seed: int = 0, class_per_image: bool = False) -> Path:
    """n images of SIZES on grey, each with 2-3 non-overlapping solid rectangles (one per quadrant) in
    the colour of their class; YOLO labels. class_per_image: every box of image i has class i % 4."""
    rng = np.random.default_rng(seed)
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for i in range(n):
        h, w = SIZES[i % len(SIZES)]
        image = np.full((h, w, 3), BACKGROUND, np.uint8)
        rows = []
        for quadrant in rng.permutation(4)[: rng.integers(2, 4)]:
            cls = i % 4 if class_per_image else int(rng.integers(0, 4))
            qy, qx = divmod(int(quadrant), 2)
            bw, bh = int(rng.integers(w // 6, w // 2 - 6)), int(rng.integers(h // 6, h // 2 - 6))
            x0 = qx * (w // 2) + int(rng.integers(2, w // 2 - bw - 2))
            y0 = qy * (h // 2) + int(rng.integers(2, h // 2 - bh - 2))
            image[y0:y0 + bh, x0:x0 + bw] = COLOURS[cls]
            rows.append(f"{cls} {(x0 + bw / 2) / w:.6f} {(y0 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
        Image.fromarray(image).save(root / "images" / "train" / f"{i}.png")
        (root / "labels" / "train" / f"{i}.txt").write_text("\n".join(rows) + "\n")
    yaml = root / "data.yaml"
    names = "".join(f"  {k}: c{k}\n" for k in COLOURS)
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n{names}")
    return yaml


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return load_split(make_dataset(tmp_path_factory.mktemp("data")), "train")


def box_colour_fraction(image: np.ndarray, box: np.ndarray, colour) -> float | None:
    """The share of the pixels inside `box` (shrunk by 1 pixel) within 40 grey levels of `colour`;
    None when less than 3 x 3 pixels are left inside."""
    x0, y0 = int(np.ceil(box[0] + 1)), int(np.ceil(box[1] + 1))
    x1, y1 = int(np.floor(box[2] - 1)), int(np.floor(box[3] - 1))
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    patch = image[y0:y1, x0:x1].astype(np.int16)
    return float((np.abs(patch - np.asarray(colour)).max(-1) <= 40).mean())


def assert_boxes_follow_pixels(image, boxes, classes, min_fraction=0.75):
    checked = 0
    for box, cls in zip(boxes, classes):
        fraction = box_colour_fraction(image, box, COLOURS[int(cls)])
        if fraction is not None:
            assert fraction >= min_fraction, (box, cls, fraction)
            checked += 1
    return checked


def assert_pixels_inside_boxes(image, boxes, classes, min_share=0.97):
    """The converse: the pixels of each class colour lie inside (1 pixel dilated) boxes of that class
    (with nothing filtered out)."""
    for cls, colour in COLOURS.items():
        coloured = np.abs(image.astype(np.int16) - np.asarray(colour)).max(-1) <= 40
        if not coloured.any():
            continue
        covered = np.zeros_like(coloured)
        for box in boxes[classes == cls]:
            x0, y0 = max(int(np.floor(box[0])) - 1, 0), max(int(np.floor(box[1])) - 1, 0)
            covered[y0:int(np.ceil(box[3])) + 1, x0:int(np.ceil(box[2])) + 1] = True
        share = (coloured & covered).sum() / coloured.sum()
        assert share >= min_share, (cls, share, coloured.sum())


NO_COLOUR = dict(channel_swap_prob=0.0, hsv_prob=0.0)  # colours stay put, for the pixel checks


@pytest.mark.parametrize("aug", [
    Augmentation(mixup_prob=0.0, **NO_COLOUR),  # recipe affine + flip
    Augmentation(mixup_prob=0.0, flip_prob=1.0, **NO_COLOUR),
    Augmentation(mosaic_prob=1.0, mixup_prob=0.0, **NO_COLOUR),  # mosaic + affine back to S
    Augmentation(mosaic_prob=1.0, affine=False, mixup_prob=0.0, **NO_COLOUR),
    Augmentation(mixup_prob=0.0, degrees=15.0, shear=5.0, scales=(0.6, 1.8), **NO_COLOUR),
], ids=["affine", "flip", "mosaic_affine", "mosaic_only", "rotate_shear_zoom"])
@pytest.mark.parametrize("method", ["centre_pad", "letterbox"])
def test_boxes_follow_the_pixels(dataset, aug, method):
    # Rotated / sheared rectangles fill less of their (axis-aligned) boxes.
    min_fraction = 0.75 if aug.degrees == 0 and aug.shear == 0 else 0.4
    checked = 0
    for position in range(10):
        sample = dataset.samples[position % len(dataset.samples)]
        rng = np.random.default_rng([7, position])
        image, boxes, classes = loader.prepare(sample, 64, rng, augmentation=aug, pool=dataset.samples, method=method)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and classes.dtype == np.int32 and len(boxes) == len(classes)
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 2.0).all()
        checked += assert_boxes_follow_pixels(image, boxes, classes, min_fraction)
        # The same draws without any box filter: every coloured pixel is inside a box of its class.
        image, boxes, classes = loader.prepare(sample, 64, np.random.default_rng([7, position]), method=method,
                                               augmentation=dataclasses.replace(aug, filter_boxes=False),
                                               pool=dataset.samples, min_box_size=0.0)
        assert_pixels_inside_boxes(image, boxes, classes)
    assert checked >= 10


def test_mixup_boxes_follow_both_images(dataset):
    rng = np.random.default_rng(3)
    for i in range(6):
        main = loader._load_parts(dataset.samples[i], 64)
        other = loader._load_parts(dataset.samples[i + 1], 64)
        out, boxes, classes = augment.mixup(*main, other, rng, Augmentation())
        assert out.shape == main[0].shape
        n = len(main[1])
        # The boxes of the first image come first and unchanged; the other image's follow.
        np.testing.assert_array_equal(classes[:n], main[2])
        np.testing.assert_allclose(boxes[:n], main[1])
        assert set(classes[n:].tolist()) <= set(other[2].tolist())
        # out = trunc(0.5 a + 0.5 b): the other image, recovered as 2 out - a (within 1), shows its boxes.
        recovered = np.clip(2 * out.astype(np.int16) - main[0], 0, 255).astype(np.uint8)
        assert_boxes_follow_pixels(recovered, boxes[n:], classes[n:], min_fraction=0.7)
        assert assert_boxes_follow_pixels(main[0], boxes[:n], classes[:n]) == n


def test_mosaic_has_boxes_from_several_images(tmp_path):
    data = load_split(make_dataset(tmp_path, n=8, class_per_image=True), "train")
    parts = [loader._load_parts(s, 64) for s in data.samples[:4]]
    image, boxes, classes = augment.mosaic_canvas(parts, 64, (64, 64))
    assert image.shape == (128, 128, 3)
    assert set(classes.tolist()) == {0, 1, 2, 3} and len(boxes) == sum(len(p[1]) for p in parts)
    assert assert_boxes_follow_pixels(image, boxes, classes) == len(boxes)
    aug = Augmentation(mosaic_prob=1.0, mixup_prob=0.0, **NO_COLOUR)
    sources = []
    for position in range(6):
        _, _, classes = loader.prepare(data.samples[position], 64, np.random.default_rng([1, position]),
                                       augmentation=aug, pool=data.samples)
        sources.append(len(set(classes.tolist())))
    assert max(sources) >= 3, sources  # classes == source image (mod 4): boxes of 3+ images in one output


# --- the Loader ------------------------------------------------------------------------------------


def test_loader_is_deterministic_across_workers_and_varies_with_epoch(dataset):
    aug = Augmentation(mosaic_prob=0.5)  # every step on some images
    a = list(Loader(dataset, 4, 64, seed=3, augmentation=aug, workers=1).epoch(1))
    b = list(Loader(dataset, 4, 64, seed=3, augmentation=aug, workers=3, prefetch=3).epoch(1))
    assert len(a) == 2
    for x, y in zip(a, b):
        assert x.images.shape == (4, 64, 64, 3) and x.images.dtype == np.float32
        assert 0.0 <= x.images.min() and x.images.max() <= 1.0
        np.testing.assert_array_equal(x.images, y.images)
        np.testing.assert_array_equal(x.targets.boxes, y.targets.boxes)
        np.testing.assert_array_equal(x.targets.labels, y.targets.labels)
        np.testing.assert_array_equal(x.targets.mask, y.targets.mask)
        boxes = x.targets.boxes[x.targets.mask]
        assert (boxes >= 0).all() and (boxes <= 64).all() and (x.targets.boxes[~x.targets.mask] == 0).all()
    other = list(Loader(dataset, 4, 64, seed=3, augmentation=aug, workers=2).epoch(2))
    assert not np.array_equal(a[0].images, other[0].images)
    reseeded = list(Loader(dataset, 4, 64, seed=4, augmentation=aug, workers=2).epoch(1))
    assert not np.array_equal(a[0].images, reseeded[0].images)


def test_none_gives_exactly_the_unaugmented_image(dataset):
    for method in ("centre_pad", "letterbox"):
        plain = next(Loader(dataset, 4, 64, shuffle=False, augment=False, method=method).epoch(0))
        none = next(Loader(dataset, 4, 64, shuffle=False, augmentation=Augmentation.none(), method=method).epoch(5))
        np.testing.assert_array_equal(plain.images, none.images)
        np.testing.assert_array_equal(plain.targets.boxes, none.targets.boxes)
        for row, sample in enumerate(dataset.samples[:4]):
            original = load_image(sample.source)
            expected = make_transform(original.shape[:2], method, 64).apply(original, 114)
            np.testing.assert_array_equal(none.images[row], to_unit_float(expected))
        assert Augmentation.none().is_identity and not Augmentation.light().is_identity


def test_light_is_flip_and_hsv_only(dataset):
    aug = Augmentation.light()
    assert (aug.flip_prob, aug.hsv_prob, aug.mosaic_prob, aug.mixup_prob, aug.channel_swap_prob, aug.affine) == \
        (0.5, 1.0, 0.0, 0.0, 0.0, False)
    for position in range(4):
        sample = dataset.samples[position]
        image, boxes, classes = loader.prepare(sample, 64, np.random.default_rng(position), augmentation=aug)
        plain, plain_boxes, plain_classes = loader.prepare(sample, 64, None)
        np.testing.assert_array_equal(classes, plain_classes)
        mirrored = np.stack([64 - plain_boxes[:, 2], plain_boxes[:, 1], 64 - plain_boxes[:, 0], plain_boxes[:, 3]], 1)
        assert np.abs(boxes - plain_boxes).max() < 1.5 or np.abs(boxes - mirrored).max() < 1.5


def test_loader_defaults_and_legacy_keywords(dataset):
    most = max(len(s.boxes) for s in dataset.samples)
    recipe = Loader(dataset, 2, 64)
    assert recipe.augmentation == Augmentation() and recipe.max_boxes == 2 * most
    assert Loader(dataset, 2, 64, augment=False).augmentation == Augmentation.none()
    assert Loader(dataset, 2, 64, augment=False).max_boxes == most
    assert Loader(dataset, 2, 64, augmentation=Augmentation(mosaic_prob=1.0)).max_boxes == 8 * most
    assert Loader(dataset, 2, 64, augmentation=Augmentation.light(), max_boxes=5).max_boxes == 5
    legacy = Loader(dataset, 2, 64, flip=0.0, hsv=False).augmentation
    assert legacy == dataclasses.replace(Augmentation(), flip_prob=0.0, hsv_prob=0.0)
    with pytest.raises(ValueError, match="contradicts"):
        Loader(dataset, 2, 64, augment=False, augmentation=Augmentation())
    batch = next(Loader(dataset, 2, 64, max_boxes=1).epoch(0))
    assert batch.targets.boxes.shape == (2, 1, 4)


def test_max_boxes_cap(tmp_path):
    root = tmp_path / "many"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(root / "images" / "train" / "0.png")
    rows = "".join(f"0 {0.1 + i / 200:.4f} 0.5 0.1 0.1\n" for i in range(100))  # distinct: duplicates are dropped
    (root / "labels" / "train" / "0.txt").write_text(rows)
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/train\nnames:\n  0: a\n")
    data = load_split(root / "data.yaml", "train")
    assert Loader(data, 1, 32, augmentation=Augmentation(mosaic_prob=1.0)).max_boxes == loader.MAX_BOXES_CAP
    assert Loader(data, 1, 32, augment=False).max_boxes == 100
