"""nasjax.input_pipeline: parity of the augmentations with super-gradients 3.7.1 (reference values from
tests/reference/make_augment_reference.py) and their behaviour on tiny generated YOLO datasets."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasjax import input_pipeline as ip
from nasjax.input_pipeline import Augmentation, Loader, load_split
from nasjax.preprocessing import load_image, make_transform, to_unit_float

REFERENCE = Path(__file__).resolve().parent / "reference" / "augment_reference.npz"

# Warped images: Pillow's bilinear weights are floats, OpenCV's warpAffine uses 1/32-pixel fixed point;
# with the border handled as OpenCV does, no pixel differs by more than 1 grey level.
WARP_MAX_DIFF, WARP_MEAN_DIFF = 1, 0.6

COLOURS = {0: (230, 40, 40), 1: (40, 200, 40), 2: (40, 60, 230), 3: (230, 220, 40)}
BACKGROUND = 128
SIZES = ((96, 128), (128, 96), (80, 80), (72, 120))  # (H, W) of the generated images


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REFERENCE))


# --- parity with super-gradients -------------------------------------------------------------------


def test_affine_matrix_boxes_and_filter_match_super_gradients(ref):
    image, boxes = ref["image"], ref["boxes"]
    for i in range(int(ref["affine_count"])):
        target = tuple(int(v) for v in ref[f"affine_{i}_target"])
        matrix = ip.affine_matrix(image.shape[:2], target, *ref[f"affine_{i}_values"])
        np.testing.assert_allclose(matrix, ref[f"affine_{i}_matrix"], rtol=0, atol=1e-12)
        moved = ip.apply_affine_to_boxes(boxes, ref[f"affine_{i}_matrix"], target)
        np.testing.assert_allclose(moved, ref[f"affine_{i}_boxes"], rtol=0, atol=1e-9)
        keep = ip.filter_box_candidates(boxes, moved, wh_thr=2, ar_thr=20, area_thr=0.1)
        np.testing.assert_array_equal(keep, ref[f"affine_{i}_keep"])
    # The cases exercise the filter both ways.
    keeps = np.concatenate([ref[f"affine_{i}_keep"] for i in range(int(ref["affine_count"]))])
    assert keeps.any() and not keeps.all()


def test_warp_matches_cv2_warp_affine(ref):
    image = ref["image"]
    for i in range(int(ref["affine_count"])):
        target = tuple(int(v) for v in ref[f"affine_{i}_target"])
        warped = ip.warp_affine(image, ref[f"affine_{i}_matrix"], target, 114)
        expected = ref[f"affine_{i}_warped"]
        assert warped.shape == expected.shape and warped.dtype == np.uint8
        diff = np.abs(warped.astype(np.int16) - expected)
        assert diff.max() <= WARP_MAX_DIFF and diff.mean() < WARP_MEAN_DIFF, (i, diff.max(), diff.mean())


def test_whole_random_affine_matches_super_gradients(ref):
    image, boxes, labels = ref["image"], ref["boxes"], ref["labels"]
    cases = [i for i in range(int(ref["affine_count"])) if f"raffine_{i}_boxes" in ref]
    assert len(cases) >= 3 and sum(len(ref[f"raffine_{i}_labels"]) < len(labels) for i in cases) >= 2
    for i in cases:
        target = tuple(int(v) for v in ref[f"affine_{i}_target"])
        matrix = ip.affine_matrix(image.shape[:2], target, *ref[f"affine_{i}_values"])
        warped, kept, classes = ip.affine_transform(image, boxes, labels, matrix, target, Augmentation())
        np.testing.assert_allclose(kept, ref[f"raffine_{i}_boxes"], rtol=0, atol=1e-4)  # theirs are float32
        np.testing.assert_array_equal(classes, ref[f"raffine_{i}_labels"])
        assert np.abs(warped.astype(np.int16) - ref[f"affine_{i}_warped"]).max() <= WARP_MAX_DIFF


def test_filter_box_candidates_matches_super_gradients(ref):
    for name in ("default", "strict"):
        wh, ar, area = ref[f"filter_{name}_thresholds"]
        keep = ip.filter_box_candidates(ref["filter_original"], ref["filter_transformed"], wh_thr=wh, ar_thr=ar,
                                        area_thr=area)
        np.testing.assert_array_equal(keep, ref[f"filter_{name}_keep"])


def test_mosaic_matches_super_gradients(ref):
    parts = [tuple(ref[f"mosaic_part{j}_{k}"] for k in ("image", "boxes", "labels")) for j in range(4)]
    for c in range(int(ref["mosaic_count"])):
        image, boxes, labels = ip.mosaic_canvas(parts, 48, tuple(ref[f"mosaic_{c}_centre"]), 114)
        np.testing.assert_array_equal(image, ref[f"mosaic_{c}_image"])  # OpenCV-exact resize: bit-identical
        np.testing.assert_allclose(boxes, ref[f"mosaic_{c}_boxes"], rtol=0, atol=1e-4)  # theirs are float32
        np.testing.assert_array_equal(labels, ref[f"mosaic_{c}_labels"])


def test_mixup_matches_super_gradients(ref):
    image, boxes, labels = ref["image"], ref["boxes"], ref["labels"]
    other = (ref["mixup_other_image"], ref["mixup_other_boxes"], ref["mixup_other_labels"])
    for m in range(int(ref["mixup_count"])):
        flip, scale, y, x = ref[f"mixup_{m}_draws"]
        out, out_boxes, out_labels = ip.mixup_blend(image, boxes, labels, other, flip=bool(flip), scale=float(scale),
                                                    offset=(int(y), int(x)), border_value=114)
        np.testing.assert_array_equal(out, ref[f"mixup_{m}_image"])
        np.testing.assert_allclose(out_boxes, ref[f"mixup_{m}_boxes"], rtol=0, atol=1e-4)
        np.testing.assert_array_equal(out_labels, ref[f"mixup_{m}_labels"])


def test_drawn_affine_uses_the_ranges_in_super_gradients_order():
    aug = Augmentation(degrees=(5.0, 5.0), scales=(0.8, 0.8), shear=(2.0, 2.0), translate=(0.4, 0.4))
    drawn = ip.draw_affine_matrix((48, 64), (64, 64), np.random.default_rng(0), aug)
    np.testing.assert_allclose(drawn, ip.affine_matrix((48, 64), (64, 64), 5.0, 0.8, 2.0, 2.0, 0.4, 0.4), atol=1e-12)
    # A number v is neutral ± v: translate 0.25 puts the image centre within [0.25, 0.75] of the output.
    rng = np.random.default_rng(1)
    for _ in range(50):
        m = ip.draw_affine_matrix((48, 64), (48, 64), rng, Augmentation())
        centre = m @ np.array([32.0, 24.0, 1.0])
        assert 0.25 * 64 <= centre[0] <= 0.75 * 64 and 0.25 * 48 <= centre[1] <= 0.75 * 48
        assert 0.5 <= m[0, 0] <= 1.5 and m[0, 1] == 0 and m[1, 0] == 0


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
        image, boxes, classes = ip.prepare(sample, 64, rng, augmentation=aug, pool=dataset.samples, method=method)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and classes.dtype == np.int32 and len(boxes) == len(classes)
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 2.0).all()
        checked += assert_boxes_follow_pixels(image, boxes, classes, min_fraction)
        # The same draws without any box filter: every coloured pixel is inside a box of its class.
        image, boxes, classes = ip.prepare(sample, 64, np.random.default_rng([7, position]), method=method,
                                           augmentation=dataclasses.replace(aug, filter_boxes=False),
                                           pool=dataset.samples, min_box_size=0.0)
        assert_pixels_inside_boxes(image, boxes, classes)
    assert checked >= 10


def test_mixup_boxes_follow_both_images(dataset):
    rng = np.random.default_rng(3)
    for i in range(6):
        main = ip._load_parts(dataset.samples[i], 64)
        other = ip._load_parts(dataset.samples[i + 1], 64)
        out, boxes, classes = ip.mixup(*main, other, rng, Augmentation())
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


def test_mixup_concatenates_labels():
    image = np.full((40, 50, 3), 100, np.uint8)
    other = (np.full((40, 50, 3), 200, np.uint8), np.array([[5.0, 5.0, 20.0, 20.0], [30.0, 10.0, 45.0, 35.0]]),
             np.array([7, 8]))
    out, boxes, classes = ip.mixup_blend(image, np.array([[1.0, 2.0, 11.0, 12.0]]), np.array([3]), other,
                                         flip=False, scale=1.0)
    np.testing.assert_array_equal(classes, [3, 7, 8])
    np.testing.assert_allclose(boxes, [[1, 2, 11, 12], [5, 5, 20, 20], [30, 10, 45, 35]])
    assert (out == 150).all()
    _, flipped, _ = ip.mixup_blend(image, np.zeros((0, 4)), np.zeros(0, int), other, flip=True, scale=1.0)
    np.testing.assert_allclose(flipped, [[30, 5, 45, 20], [5, 10, 20, 35]])
    # Scaled down: the uncovered part of the canvas is black (super-gradients), so half the image there.
    out, boxes, _ = ip.mixup_blend(image, np.zeros((0, 4)), np.zeros(0, int), other, flip=False, scale=0.5)
    assert (out[25:, :] == 50).all() and (out[:20, :25] == 150).all()
    np.testing.assert_allclose(boxes, [[2.5, 2.5, 10, 10], [15, 5, 22.5, 17.5]])


def test_mosaic_has_boxes_from_several_images(tmp_path):
    data = load_split(make_dataset(tmp_path, n=8, class_per_image=True), "train")
    parts = [ip._load_parts(s, 64) for s in data.samples[:4]]
    image, boxes, classes = ip.mosaic_canvas(parts, 64, (64, 64))
    assert image.shape == (128, 128, 3)
    assert set(classes.tolist()) == {0, 1, 2, 3} and len(boxes) == sum(len(p[1]) for p in parts)
    assert assert_boxes_follow_pixels(image, boxes, classes) == len(boxes)
    aug = Augmentation(mosaic_prob=1.0, mixup_prob=0.0, **NO_COLOUR)
    sources = []
    for position in range(6):
        _, _, classes = ip.prepare(data.samples[position], 64, np.random.default_rng([1, position]), augmentation=aug,
                                   pool=data.samples)
        sources.append(len(set(classes.tolist())))
    assert max(sources) >= 3, sources  # classes == source image (mod 4): boxes of 3+ images in one output


def test_affine_clips_and_drops_degenerate_boxes():
    image = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[10, 10, 30, 30],     # stays
                      [46, 5, 60, 35],      # pushed out but for 2 px: width not > wh_thr 2 → dropped
                      [0, 36, 46, 38.2],    # 46 x 2.2: aspect ratio 20.9, not < ar_thr 20 → dropped
                      [40, 2, 60, 8]], np.float64)  # clipped to 8 x 6: area ratio 0.4 → stays
    shift = np.array([[1.0, 0, 12.0], [0, 1.0, 0.0]])  # 12 px right
    _, moved, classes = ip.affine_transform(image, boxes, np.arange(4), shift, (40, 60), Augmentation())
    np.testing.assert_array_equal(classes, [0, 3])
    np.testing.assert_allclose(moved, [[22, 10, 42, 30], [52, 2, 60, 8]])
    _, unfiltered, _ = ip.affine_transform(image, boxes, np.arange(4), shift, (40, 60),
                                           Augmentation(filter_boxes=False))
    assert len(unfiltered) == 4 and (unfiltered[:, [0, 2]] <= 60).all()
    # Shrunk to a quarter: 1/16 of the area is below area_thr 0.1; at half, 1/4 is not.
    for scale, kept in ((0.25, []), (0.5, [0])):
        matrix = np.array([[scale, 0, 0], [0, scale, 0]])
        _, _, classes = ip.affine_transform(image, boxes[:1], np.arange(1), matrix, (40, 60), Augmentation())
        np.testing.assert_array_equal(classes, kept)
    # Zoom in 2.5x: whatever survives lies inside the image and is larger than wh_thr.
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, moved, _ = ip.random_affine(image, boxes, np.arange(4), rng, Augmentation(scales=(2.0, 3.0)))
        assert (moved[:, [0, 2]] >= 0).all() and (moved[:, [0, 2]] <= 60).all()
        assert (moved[:, [1, 3]] >= 0).all() and (moved[:, [1, 3]] <= 40).all()
        assert ((moved[:, 2:] - moved[:, :2]) > 2).all()


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
        assert ip.Augmentation.none().is_identity and not Augmentation.light().is_identity


def test_light_is_flip_and_hsv_only(dataset):
    aug = Augmentation.light()
    assert (aug.flip_prob, aug.hsv_prob, aug.mosaic_prob, aug.mixup_prob, aug.channel_swap_prob, aug.affine) == \
        (0.5, 1.0, 0.0, 0.0, 0.0, False)
    for position in range(4):
        sample = dataset.samples[position]
        image, boxes, classes = ip.prepare(sample, 64, np.random.default_rng(position), augmentation=aug)
        plain, plain_boxes, plain_classes = ip.prepare(sample, 64, None)
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
    assert Loader(data, 1, 32, augmentation=Augmentation(mosaic_prob=1.0)).max_boxes == ip.MAX_BOXES_CAP
    assert Loader(data, 1, 32, augment=False).max_boxes == 100


@pytest.mark.parametrize("kwargs, match", [
    (dict(mosaic_prob=1.5), "mosaic_prob is a probability"),
    (dict(flip_prob=-0.1), "flip_prob is a probability"),
    (dict(mixup_prob="0.5"), "mixup_prob is a probability"),
    (dict(hsv_prob=float("nan")), "hsv_prob is a probability"),
    (dict(scales=1.0), "scales must give positive scales"),
    (dict(scales=(0.0, 1.0)), "scales must give positive scales"),
    (dict(scales=(1.5, 0.5)), "low <= high"),
    (dict(degrees=-3), "non-negative"),
    (dict(translate=(0.1, 0.2, 0.3)), "number or a \\(low, high\\) pair"),
    (dict(shear=95.0), "shear must stay within"),
    (dict(border_value=300), "border_value"),
    (dict(border_value=1.5), "border_value"),
    (dict(wh_thr=-1), "wh_thr"),
    (dict(ar_thr=1.0), "ar_thr"),
    (dict(hsv_gains=(18, 30)), "hsv_gains"),
    (dict(mixup_scale=(0.0, 1.0)), "mixup_scale"),
    (dict(affine=1), "affine must be True or False"),
])
def test_augmentation_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augmentation(**kwargs)


def test_augmentation_accepts_lists_and_is_hashable():
    aug = Augmentation(scales=[0.5, 1.5], hsv_gains=[5, 30, 30], mixup_scale=[0.5, 1.5])
    assert aug == Augmentation(hsv_gains=(5, 30, 30)) and hash(aug) == hash(Augmentation(hsv_gains=(5, 30, 30)))
    assert aug.scale_range == (0.5, 1.5) and Augmentation(scales=0.25).scale_range == (0.75, 1.25)
    assert Augmentation().translate_range == (0.25, 0.75) and Augmentation(degrees=10).degrees_range == (-10.0, 10.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        aug.flip_prob = 0.0
