"""Reference values of super-gradients 3.7.1's detection augmentations for tests/data/augment_test.py.

Runs only in the separate super-gradients environment (see /work/shared/oracle/README.md):

    CRASH_HANDLER=FALSE SUPER_GRADIENTS_LOG_DIR=$(mktemp -d) \
        /work/oracle_venv/bin/python tests/reference/make_augment_reference.py

and writes tests/reference/augment_reference.npz (committed, a few tens of KB).

Random draws are replaced by explicit values so that both sides see the same ones: super-gradients'
`get_aug_params` is swapped for a function that returns the listed values (order: angle, scale,
shear x, shear y, translate x, translate y), and the `random` module its transforms use for a stub
that returns listed values (mosaic centre; mixup flip, scale and crop offset).

Saved, on a seeded synthetic 48 x 64 image (gradients, solid rectangles, noise) with seven boxes:
- affine_*: for each case, get_affine_matrix (target_size given as (H, W), so that x translates by a
  fraction of the width; see nasjax/data/augment.py on super-gradients' swap), cv2.warpAffine
  (INTER_LINEAR, border 114), apply_affine_to_bboxes and _filter_box_candidates (2, 20, 0.1);
- raffine_*: the whole random_affine (square targets only, where the swap does not matter): warped
  image, kept boxes and classes;
- filter_*: _filter_box_candidates on hand-made box pairs (thresholds hit exactly, thin, shrunk, ...);
- mosaic_*: DetectionMosaic(input_dim=48) of four images of different sizes for fixed centres;
- mixup_*: DetectionMixup(input_dim=None, mixup_scale=(0.5, 1.5)) for fixed flip / scale / offsets.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import oracle_env  # noqa: F401  (imports tv_cpu_shim before torch/torchvision)
import cv2
import super_gradients.training.transforms.transforms as T
from super_gradients.training.samples import DetectionSample

OUT = Path(__file__).resolve().parent / "augment_reference.npz"
SEED = 20260315


class ScriptedRandom:
    """Stands in for the `random` module: each call returns the next listed value (checked in range)."""

    def __init__(self, values):
        self.values = list(values)

    def _next(self, kind):
        got_kind, value = self.values.pop(0)
        assert got_kind == kind, (got_kind, kind)
        return value

    def random(self):
        return self._next("random")

    def uniform(self, a, b):
        value = self._next("uniform")
        assert min(a, b) <= value <= max(a, b), (a, b, value)
        return value

    def randint(self, a, b):
        value = self._next("randint")
        assert a <= value <= b, (a, b, value)
        return value


def synthetic_image(rng: np.random.Generator, h: int, w: int,
                    noise: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (h + w - 2)], -1)
    image = image.astype(np.uint8)
    boxes, labels = [], []
    for label in range(3):
        bw, bh = int(rng.integers(w // 6, w // 2)), int(rng.integers(h // 6, h // 2))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        image[y0:y0 + bh, x0:x0 + bw] = rng.integers(0, 256, 3)
        boxes.append([x0, y0, x0 + bw, y0 + bh])
        labels.append(label)
    if noise:  # so that the bilinear weights matter everywhere (the mosaic and mixup parts go without: smaller file)
        image = np.clip(image.astype(np.int16) + rng.integers(-6, 7, image.shape), 0, 255).astype(np.uint8)
    return image, np.asarray(boxes, np.float32), np.asarray(labels, np.int64)


def affine_matrix_sg(input_hw, target_hw, values):
    queue = list(values)
    original = T.get_aug_params
    T.get_aug_params = lambda value, center=0: queue.pop(0)
    try:
        return T.get_affine_matrix(input_hw, target_hw, 0, 0, 0, 0)
    finally:
        T.get_aug_params = original


def main() -> None:
    rng = np.random.default_rng(SEED)
    out: dict[str, np.ndarray] = {}
    image, boxes, labels = synthetic_image(rng, 48, 64)
    # Boxes for the affine: the three rectangles plus fractional, edge-touching, thin and tiny ones.
    boxes = np.concatenate([boxes, np.array([[0.5, 3.25, 20.75, 17.5], [50.0, 0.0, 64.0, 48.0],
                                             [10.0, 30.0, 40.0, 31.5], [30.0, 20.0, 31.0, 21.0]], np.float32)])
    labels = np.concatenate([labels, np.array([3, 4, 5, 6])])
    out["image"], out["boxes"], out["labels"] = image, boxes, labels

    # (target (H, W), [angle, scale, shear x, shear y, translate x, translate y])
    cases = [
        ((48, 64), [0.0, 1.0, 0.0, 0.0, 0.5, 0.5]),      # the identity (even sizes)
        ((48, 64), [0.0, 0.73, 0.0, 0.0, 0.31, 0.66]),   # the YOLO-NAS recipe's kind: scale + translate
        ((48, 64), [0.0, 1.41, 0.0, 0.0, 0.62, 0.27]),   # zoom in: boxes clipped / filtered
        ((64, 64), [12.5, 0.9, 3.0, -2.0, 0.45, 0.55]),  # rotation + shear, square target
        ((40, 56), [-7.0, 1.2, 1.5, 1.5, 0.5, 0.4]),     # non-square smaller target
        ((64, 64), [170.0, 0.5, 0.0, 0.0, 0.74, 0.26]),  # upside down, small
        ((48, 48), [0.0, 1.37, 0.0, 0.0, 0.29, 0.71]),   # the recipe's kind on a square target: some boxes dropped
    ]
    targets = np.concatenate([boxes, labels[:, None].astype(np.float32)], axis=1)
    for i, (target_hw, values) in enumerate(cases):
        th, tw = target_hw
        matrix = affine_matrix_sg(image.shape[:2], target_hw, values)
        warped = cv2.warpAffine(image, matrix, dsize=(tw, th), borderValue=(114, 114, 114))
        no_segments = np.zeros((len(targets), 0))
        moved = T.apply_affine_to_bboxes(targets.astype(np.float64).copy(), no_segments, (tw, th), matrix)
        keep = T._filter_box_candidates(targets[:, :4], moved[:, :4], wh_thr=2, ar_thr=20, area_thr=0.1)
        out[f"affine_{i}_target"] = np.asarray(target_hw)
        out[f"affine_{i}_values"] = np.asarray(values, np.float64)
        out[f"affine_{i}_matrix"] = matrix
        out[f"affine_{i}_warped"] = warped
        out[f"affine_{i}_boxes"] = moved[:, :4]
        out[f"affine_{i}_keep"] = keep
        if th == tw:  # the whole random_affine
            queue = list(values)
            original = T.get_aug_params
            T.get_aug_params = lambda value, center=0: queue.pop(0)
            try:
                warped2, kept = T.random_affine(image, targets.copy(), None, (tw, th), 0, 0, 0, 0,
                                                filter_box_candidates=True, wh_thr=2, ar_thr=20, area_thr=0.1,
                                                border_value=114)
            finally:
                T.get_aug_params = original
            assert np.array_equal(warped2, warped)
            out[f"raffine_{i}_boxes"] = kept[:, :4].astype(np.float64)
            out[f"raffine_{i}_labels"] = kept[:, 4].astype(np.int64)
    out["affine_count"] = np.asarray(len(cases))

    # _filter_box_candidates on hand-made pairs.
    original = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 100, 10], [0, 0, 100, 10],
                         [5, 5, 25, 45], [0, 0, 10, 10], [0, 0, 0, 10], [0, 0, 40, 40], [0, 0, 40, 40]], np.float64)
    transformed = np.array([[0, 0, 10, 10], [0, 0, 2, 10], [0, 0, 2.01, 10], [0, 0, 100, 5], [0, 0, 100, 4.9],
                            [5, 5, 11.3, 18], [0, 0, 3.1, 3.1], [0, 0, 5, 10], [1, 1, 13.5, 13.5], [1, 1, 13.7, 13.7]],
                           np.float64)
    out["filter_original"], out["filter_transformed"] = original, transformed
    for name, (wh, ar, area) in {"default": (2, 20, 0.1), "strict": (3, 10, 0.2)}.items():
        out[f"filter_{name}_thresholds"] = np.asarray([wh, ar, area], np.float64)
        out[f"filter_{name}_keep"] = T._filter_box_candidates(original, transformed, wh_thr=wh, ar_thr=ar,
                                                              area_thr=area)

    # Mosaic of four images of different sizes (input_dim 48: canvas 96 x 96).
    parts = [synthetic_image(rng, h, w, noise=False) for h, w in ((40, 56), (48, 36), (30, 30), (60, 20))]
    for i, (h, w) in enumerate(((40, 56), (48, 36), (30, 30), (60, 20))):
        out[f"mosaic_part{i}_image"], out[f"mosaic_part{i}_boxes"], out[f"mosaic_part{i}_labels"] = parts[i]
    centres = [(50.7, 41.2), (24.0, 71.9), (71.5, 24.3)]  # (yc, xc) draws, as floats (super-gradients truncates)
    for c, (yc, xc) in enumerate(centres):
        samples = [DetectionSample(image=p[0].copy(), bboxes_xyxy=p[1].copy(), labels=p[2].copy()) for p in parts]
        sample = samples[0]
        sample.additional_samples = samples[1:]
        T.random = ScriptedRandom([("uniform", yc), ("uniform", xc)])
        try:
            result = T.DetectionMosaic(input_dim=48, prob=1.0).apply_to_sample(sample)
        finally:
            T.random = __import__("random")
        out[f"mosaic_{c}_centre"] = np.asarray([int(xc), int(yc)])
        out[f"mosaic_{c}_image"] = result.image
        out[f"mosaic_{c}_boxes"] = result.bboxes_xyxy.astype(np.float64)
        out[f"mosaic_{c}_labels"] = result.labels.astype(np.int64)
    out["mosaic_count"] = np.asarray(len(centres))

    # Mixup of the 48 x 64 image with a 40 x 30 one.
    other = synthetic_image(rng, 40, 30, noise=False)
    out["mixup_other_image"], out["mixup_other_boxes"], out["mixup_other_labels"] = other
    mixups = [(0.9, 1.3, 7, 12), (0.1, 1.3, 0, 18), (0.2, 0.7, None, None), (0.8, 1.0, None, None), (0.4, 1.49, 20, 2)]
    for m, (flip_draw, scale, y_offset, x_offset) in enumerate(mixups):
        script = [("random", flip_draw), ("uniform", scale)]
        script += [("randint", y_offset), ("randint", x_offset)] if y_offset is not None else []
        sample = DetectionSample(image=image.copy(), bboxes_xyxy=boxes.copy(), labels=labels.copy())
        sample.additional_samples = [DetectionSample(image=other[0].copy(), bboxes_xyxy=other[1].copy(),
                                                     labels=other[2].copy())]
        T.random = ScriptedRandom(script)
        try:
            mixer = T.DetectionMixup(input_dim=None, mixup_scale=(0.5, 1.5), prob=1.0, flip_prob=0.5)
            result = mixer.apply_to_sample(sample)
            assert not T.random.values, T.random.values
        finally:
            T.random = __import__("random")
        out[f"mixup_{m}_draws"] = np.asarray([flip_draw < 0.5, scale, y_offset or 0, x_offset or 0], np.float64)
        out[f"mixup_{m}_image"] = result.image
        out[f"mixup_{m}_boxes"] = result.bboxes_xyxy.astype(np.float64)
        out[f"mixup_{m}_labels"] = result.labels.astype(np.int64)
    out["mixup_count"] = np.asarray(len(mixups))

    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} arrays)")


if __name__ == "__main__":
    main()
