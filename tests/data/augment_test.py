"""nasjax.data.augment: parity of the augmentations with super-gradients 3.7.1 (reference values from
tests/reference/make_augment_reference.py), the transforms on hand-made inputs, and the checks of
`Augmentation`. Their use on whole datasets (prepare, Loader) is tests/data/loader_test.py."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from nasjax.data import augment
from nasjax.data.augment import Augmentation

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "augment_reference.npz"

# Warped images: Pillow's bilinear weights are floats, OpenCV's warpAffine uses 1/32-pixel fixed point;
# with the border handled as OpenCV does, no pixel differs by more than 1 grey level.
WARP_MAX_DIFF, WARP_MEAN_DIFF = 1, 0.6


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(REFERENCE))


# --- parity with super-gradients -------------------------------------------------------------------


def test_affine_matrix_boxes_and_filter_match_super_gradients(ref):
    image, boxes = ref["image"], ref["boxes"]
    for i in range(int(ref["affine_count"])):
        target = tuple(int(v) for v in ref[f"affine_{i}_target"])
        matrix = augment.affine_matrix(image.shape[:2], target, *ref[f"affine_{i}_values"])
        np.testing.assert_allclose(matrix, ref[f"affine_{i}_matrix"], rtol=0, atol=1e-12)
        moved = augment.apply_affine_to_boxes(boxes, ref[f"affine_{i}_matrix"], target)
        np.testing.assert_allclose(moved, ref[f"affine_{i}_boxes"], rtol=0, atol=1e-9)
        keep = augment.filter_box_candidates(boxes, moved, wh_thr=2, ar_thr=20, area_thr=0.1)
        np.testing.assert_array_equal(keep, ref[f"affine_{i}_keep"])
    # The cases exercise the filter both ways.
    keeps = np.concatenate([ref[f"affine_{i}_keep"] for i in range(int(ref["affine_count"]))])
    assert keeps.any() and not keeps.all()


def test_warp_matches_cv2_warp_affine(ref):
    image = ref["image"]
    for i in range(int(ref["affine_count"])):
        target = tuple(int(v) for v in ref[f"affine_{i}_target"])
        warped = augment.warp_affine(image, ref[f"affine_{i}_matrix"], target, 114)
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
        matrix = augment.affine_matrix(image.shape[:2], target, *ref[f"affine_{i}_values"])
        warped, kept, classes = augment.affine_transform(image, boxes, labels, matrix, target, Augmentation())
        np.testing.assert_allclose(kept, ref[f"raffine_{i}_boxes"], rtol=0, atol=1e-4)  # theirs are float32
        np.testing.assert_array_equal(classes, ref[f"raffine_{i}_labels"])
        assert np.abs(warped.astype(np.int16) - ref[f"affine_{i}_warped"]).max() <= WARP_MAX_DIFF


def test_filter_box_candidates_matches_super_gradients(ref):
    for name in ("default", "strict"):
        wh, ar, area = ref[f"filter_{name}_thresholds"]
        keep = augment.filter_box_candidates(ref["filter_original"], ref["filter_transformed"], wh_thr=wh,
                                             ar_thr=ar, area_thr=area)
        np.testing.assert_array_equal(keep, ref[f"filter_{name}_keep"])


def test_mosaic_matches_super_gradients(ref):
    parts = [tuple(ref[f"mosaic_part{j}_{k}"] for k in ("image", "boxes", "labels")) for j in range(4)]
    for c in range(int(ref["mosaic_count"])):
        image, boxes, labels = augment.mosaic_canvas(parts, 48, tuple(ref[f"mosaic_{c}_centre"]), 114)
        np.testing.assert_array_equal(image, ref[f"mosaic_{c}_image"])  # OpenCV-exact resize: bit-identical
        np.testing.assert_allclose(boxes, ref[f"mosaic_{c}_boxes"], rtol=0, atol=1e-4)  # theirs are float32
        np.testing.assert_array_equal(labels, ref[f"mosaic_{c}_labels"])


def test_mixup_matches_super_gradients(ref):
    image, boxes, labels = ref["image"], ref["boxes"], ref["labels"]
    other = (ref["mixup_other_image"], ref["mixup_other_boxes"], ref["mixup_other_labels"])
    for m in range(int(ref["mixup_count"])):
        flip, scale, y, x = ref[f"mixup_{m}_draws"]
        out, out_boxes, out_labels = augment.mixup_blend(image, boxes, labels, other, flip=bool(flip),
                                                         scale=float(scale), offset=(int(y), int(x)),
                                                         border_value=114)
        np.testing.assert_array_equal(out, ref[f"mixup_{m}_image"])
        np.testing.assert_allclose(out_boxes, ref[f"mixup_{m}_boxes"], rtol=0, atol=1e-4)
        np.testing.assert_array_equal(out_labels, ref[f"mixup_{m}_labels"])


def test_drawn_affine_uses_the_ranges_in_super_gradients_order():
    aug = Augmentation(degrees=(5.0, 5.0), scales=(0.8, 0.8), shear=(2.0, 2.0), translate=(0.4, 0.4))
    drawn = augment.draw_affine_matrix((48, 64), (64, 64), np.random.default_rng(0), aug)
    expected = augment.affine_matrix((48, 64), (64, 64), 5.0, 0.8, 2.0, 2.0, 0.4, 0.4)
    np.testing.assert_allclose(drawn, expected, atol=1e-12)
    # A number v is neutral ± v: translate 0.25 puts the image centre within [0.25, 0.75] of the output.
    rng = np.random.default_rng(1)
    for _ in range(50):
        m = augment.draw_affine_matrix((48, 64), (48, 64), rng, Augmentation())
        centre = m @ np.array([32.0, 24.0, 1.0])
        assert 0.25 * 64 <= centre[0] <= 0.75 * 64 and 0.25 * 48 <= centre[1] <= 0.75 * 48
        assert 0.5 <= m[0, 0] <= 1.5 and m[0, 1] == 0 and m[1, 0] == 0


# --- transforms on hand-made inputs --------------------------------------------------------------


def test_mixup_concatenates_labels():
    image = np.full((40, 50, 3), 100, np.uint8)
    other = (np.full((40, 50, 3), 200, np.uint8), np.array([[5.0, 5.0, 20.0, 20.0], [30.0, 10.0, 45.0, 35.0]]),
             np.array([7, 8]))
    out, boxes, classes = augment.mixup_blend(image, np.array([[1.0, 2.0, 11.0, 12.0]]), np.array([3]), other,
                                              flip=False, scale=1.0)
    np.testing.assert_array_equal(classes, [3, 7, 8])
    np.testing.assert_allclose(boxes, [[1, 2, 11, 12], [5, 5, 20, 20], [30, 10, 45, 35]])
    assert (out == 150).all()
    _, flipped, _ = augment.mixup_blend(image, np.zeros((0, 4)), np.zeros(0, int), other, flip=True, scale=1.0)
    np.testing.assert_allclose(flipped, [[30, 5, 45, 20], [5, 10, 20, 35]])
    # Scaled down: the uncovered part of the canvas is black (super-gradients), so half the image there.
    out, boxes, _ = augment.mixup_blend(image, np.zeros((0, 4)), np.zeros(0, int), other, flip=False, scale=0.5)
    assert (out[25:, :] == 50).all() and (out[:20, :25] == 150).all()
    np.testing.assert_allclose(boxes, [[2.5, 2.5, 10, 10], [15, 5, 22.5, 17.5]])


def test_affine_clips_and_drops_degenerate_boxes():
    image = np.zeros((40, 60, 3), np.uint8)
    boxes = np.array([[10, 10, 30, 30],     # stays
                      [46, 5, 60, 35],      # pushed out but for 2 px: width not > wh_thr 2 → dropped
                      [0, 36, 46, 38.2],    # 46 x 2.2: aspect ratio 20.9, not < ar_thr 20 → dropped
                      [40, 2, 60, 8]], np.float64)  # clipped to 8 x 6: area ratio 0.4 → stays
    shift = np.array([[1.0, 0, 12.0], [0, 1.0, 0.0]])  # 12 px right
    _, moved, classes = augment.affine_transform(image, boxes, np.arange(4), shift, (40, 60), Augmentation())
    np.testing.assert_array_equal(classes, [0, 3])
    np.testing.assert_allclose(moved, [[22, 10, 42, 30], [52, 2, 60, 8]])
    _, unfiltered, _ = augment.affine_transform(image, boxes, np.arange(4), shift, (40, 60),
                                                Augmentation(filter_boxes=False))
    assert len(unfiltered) == 4 and (unfiltered[:, [0, 2]] <= 60).all()
    # Shrunk to a quarter: 1/16 of the area is below area_thr 0.1; at half, 1/4 is not.
    for scale, kept in ((0.25, []), (0.5, [0])):
        matrix = np.array([[scale, 0, 0], [0, scale, 0]])
        _, _, classes = augment.affine_transform(image, boxes[:1], np.arange(1), matrix, (40, 60), Augmentation())
        np.testing.assert_array_equal(classes, kept)
    # Zoom in 2.5x: whatever survives lies inside the image and is larger than wh_thr.
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, moved, _ = augment.random_affine(image, boxes, np.arange(4), rng, Augmentation(scales=(2.0, 3.0)))
        assert (moved[:, [0, 2]] >= 0).all() and (moved[:, [0, 2]] <= 60).all()
        assert (moved[:, [1, 3]] >= 0).all() and (moved[:, [1, 3]] <= 40).all()
        assert ((moved[:, 2:] - moved[:, :2]) > 2).all()


# --- Augmentation ----------------------------------------------------------------------------------


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
