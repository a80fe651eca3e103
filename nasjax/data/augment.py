"""The training augmentations: the frozen dataclass `Augmentation` (every knob) and the transforms,
pure numpy / Pillow functions on (image, boxes, classes) with every random draw from a given
`np.random.Generator`. Reading the images and running the steps in order is `loader.py`'s `prepare`;
docs/training.md#augmentation summarises the recipe.

The transforms follow super-gradients 3.7.1 (`training/transforms/transforms.py`), with the knobs and
defaults of its YOLO-NAS recipe (`coco_detection_yolo_nas_dataset_params.yaml`). One training image
goes through, in this order:

1. load: read (`preprocessing.load_image`) and resize to fit S x S keeping the aspect ratio
   (super-gradients' dataset `input_dim` resize: r = min(S / H, S / W), size int(H r) x int(W r),
   OpenCV-exact bilinear, `fit_to_size`); boxes scaled by r.
2. mosaic (`mosaic_prob`, default 0.0 as in the YOLO-NAS recipe; super-gradients' other recipes and
   Ultralytics use 1.0): as DetectionMosaic, the image and 3 other images of the dataset (indices drawn
   from the image's rng) are placed around a centre (xc, yc) drawn uniform in [S/2, 3S/2) on a 2S x 2S
   canvas filled with `border_value`; the random affine then maps the canvas back to S x S.
3. random affine (`affine`, on): super-gradients' get_affine_matrix, M = T @ Sh @ R @ C: C moves the
   image centre (w // 2, h // 2) to the origin; R rotates by `degrees` (0) and scales by `scales`
   ([0.5, 1.5]); Sh shears by `shear` (0) degrees in x and y; T moves the origin to
   (tx * W', ty * H') of the W' x H' output, tx and ty drawn in 0.5 ± `translate` (0.25). A number v
   means uniform in [c - v, c + v] around the neutral value c (0 for degrees / shear, 1 for scales,
   0.5 for translate), a pair (a, b) uniform in [a, b]. The output is S x S after a mosaic, otherwise the
   size of the loaded image. The image is warped with Pillow's bilinear affine transform made to follow
   OpenCV's warpAffine (pixel centres at integer coordinates, `border_value` blended in at the edges;
   within 1 grey level of cv2); each box's four corners are transformed, their min / max taken and
   clipped to the output (apply_affine_to_bboxes), and with `filter_boxes` (on) super-gradients'
   _filter_box_candidates keeps the boxes with width and height > `wh_thr` (2 px), area > `area_thr`
   (0.1) of the area before the transform and aspect ratio < `ar_thr` (20).
   One deliberate difference: super-gradients scales the x translation by the output *height* and y by
   the width when its target_size is None (the YOLO-NAS recipe, non-square images); here x uses the
   width and y the height.
4. channel swap (`channel_swap_prob`, 0.5): DetectionRGB2BGR, the channel order reversed.
5. HSV jitter (`hsv_prob`, 0.5; `hsv_gains` (18, 30, 30)): DetectionHSV / augment_hsv: for each of H, S,
   V, with probability 1/2, an offset uniform in ±gain is added (hue in OpenCV's 0..180 units, wrapping;
   S and V clipped to 0..255; Pillow's HSV conversion, and the offsets are not truncated to integers).
6. horizontal flip (`flip_prob`, 0.5).
7. mixup (`mixup_prob`, 0.5): DetectionMixup: another image of the dataset (index from the image's rng;
   loaded as in step 1, none of the other transforms) is flipped with `mixup_flip_prob` (0.5), resized
   to fit the current image, placed top-left on a `border_value` canvas of the current image's size,
   that canvas rescaled by a factor drawn in `mixup_scale` ([0.5, 1.5]), put top-left on a zero (black)
   canvas at least as large as the current image and cropped to it at a random offset; the two images
   are blended 0.5 / 0.5 (truncated to uint8, as super-gradients) and the box lists concatenated.
8. final resize and pad to exactly S x S: `centre_pad` (the default; like super-gradients'
   DetectionPaddedRescale, but centred as its predict(); docs/preprocessing.md#centre-pad) or
   `letterbox` (docs/preprocessing.md#letterbox), pad value `border_value` (114).

Boxes are clipped to the image after every step, boxes with zero area are dropped after mosaic and
mixup (super-gradients' DetectionSample.sanitize_sample), and boxes narrower or shorter than
`min_box_size` (2) pixels at the end. `Augmentation.none()` skips every step but the last, giving
exactly the unaugmented image (resized and padded directly from the original); `Augmentation.light()`
is flip + HSV only (every image gets the HSV jitter; what the pipeline did before the recipe).

Parity with super-gradients (tests/data/augment_test.py against tests/reference/augment_reference.npz,
made by tests/reference/make_augment_reference.py): affine matrices, moved boxes, the box filter, mosaic
and mixup (images bit-identical) match; warped images are within 1 grey level of cv2.warpAffine.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Sequence, Union

import numpy as np
from PIL import Image

from nasjax.data.preprocessing import resize_linear

PAD_VALUE = 114
HSV_GAINS = (18.0, 30.0, 30.0)  # the YOLO-NAS recipe's DetectionHSV gains (OpenCV units: H 0..180)

Range = Union[float, tuple[float, float]]
Parts = tuple[np.ndarray, np.ndarray, np.ndarray]  # (image (H, W, 3) uint8, boxes (n, 4) xyxy, classes (n,))


# --- configuration ---------------------------------------------------------------------------------


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _as_range(name: str, value, centre: float) -> tuple[float, float]:
    """super-gradients' get_aug_params: a number v → [centre - v, centre + v]; a pair (a, b) → [a, b]."""
    if _is_number(value):
        if value < 0:
            raise ValueError(f"Augmentation.{name} must be non-negative (a half-width) or a (low, high) pair, "
                             f"got {value}")
        return centre - float(value), centre + float(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(v) for v in value):
        low, high = float(value[0]), float(value[1])
        if low > high:
            raise ValueError(f"Augmentation.{name} range must have low <= high, got {tuple(value)}")
        return low, high
    raise ValueError(f"Augmentation.{name} must be a number or a (low, high) pair of numbers, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Every augmentation knob; the defaults are super-gradients' YOLO-NAS recipe (see the module
    docstring for what each does). Ranges (degrees, translate, scales, shear) take a number v (uniform
    in neutral ± v) or a (low, high) pair, as super-gradients."""

    mosaic_prob: float = 0.0  # the YOLO-NAS recipe has no mosaic; super-gradients' other recipes use 1.0
    affine: bool = True
    degrees: Range = 0.0
    translate: Range = 0.25
    scales: Range = (0.5, 1.5)
    shear: Range = 0.0
    border_value: int = PAD_VALUE
    filter_boxes: bool = True
    wh_thr: float = 2.0
    area_thr: float = 0.1
    ar_thr: float = 20.0
    channel_swap_prob: float = 0.5
    hsv_prob: float = 0.5
    hsv_gains: tuple[float, float, float] = HSV_GAINS
    flip_prob: float = 0.5
    mixup_prob: float = 0.5
    mixup_scale: tuple[float, float] = (0.5, 1.5)
    mixup_flip_prob: float = 0.5

    def __post_init__(self):
        for name in ("mosaic_prob", "channel_swap_prob", "hsv_prob", "flip_prob", "mixup_prob", "mixup_flip_prob"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise ValueError(f"Augmentation.{name} is a probability and must be in [0, 1], got {value!r}")
        for name in ("affine", "filter_boxes"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"Augmentation.{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("degrees", "translate", "scales", "shear"):  # pairs given as lists become tuples
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        low, high = self.scale_range
        if low <= 0:
            raise ValueError(f"Augmentation.scales must give positive scales, got the range [{low}, {high}] "
                             f"(a single number must be below 1)")
        low, high = self.shear_range
        if low <= -90 or high >= 90:
            raise ValueError(f"Augmentation.shear must stay within (-90, 90) degrees, got [{low}, {high}]")
        _as_range("degrees", self.degrees, 0.0), _as_range("translate", self.translate, 0.5)  # validate
        if not isinstance(self.border_value, numbers.Integral) or isinstance(self.border_value, bool) \
                or not 0 <= self.border_value <= 255:
            raise ValueError(f"Augmentation.border_value must be an integer grey level in 0..255, "
                             f"got {self.border_value!r}")
        for name in ("wh_thr", "area_thr"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"Augmentation.{name} must be a non-negative number, got {getattr(self, name)!r}")
        if not _is_number(self.ar_thr) or self.ar_thr <= 1:
            raise ValueError(f"Augmentation.ar_thr must be a number above 1 (an aspect ratio is >= 1), "
                             f"got {self.ar_thr!r}")
        gains = self.hsv_gains
        if not (isinstance(gains, (tuple, list)) and len(gains) == 3 and all(_is_number(g) and g >= 0 for g in gains)):
            raise ValueError(f"Augmentation.hsv_gains must be three non-negative numbers (H, S, V), got {gains!r}")
        object.__setattr__(self, "hsv_gains", tuple(float(g) for g in gains))
        scale = self.mixup_scale
        if not (isinstance(scale, (tuple, list)) and len(scale) == 2 and all(_is_number(s) for s in scale)
                and 0 < scale[0] <= scale[1]):
            raise ValueError(f"Augmentation.mixup_scale must be a (low, high) pair with 0 < low <= high, got {scale!r}")
        object.__setattr__(self, "mixup_scale", (float(scale[0]), float(scale[1])))

    @classmethod
    def none(cls) -> "Augmentation":
        """No augmentation at all: the image is only resized and padded (exactly as for evaluation)."""
        return cls(mosaic_prob=0.0, affine=False, channel_swap_prob=0.0, hsv_prob=0.0, flip_prob=0.0, mixup_prob=0.0)

    @classmethod
    def light(cls) -> "Augmentation":
        """Horizontal flip (0.5) and HSV jitter on every image only: the pipeline before the recipe."""
        return dataclasses.replace(cls.none(), flip_prob=0.5, hsv_prob=1.0)

    @property
    def degrees_range(self) -> tuple[float, float]:
        return _as_range("degrees", self.degrees, 0.0)

    @property
    def translate_range(self) -> tuple[float, float]:
        return _as_range("translate", self.translate, 0.5)

    @property
    def scale_range(self) -> tuple[float, float]:
        return _as_range("scales", self.scales, 1.0)

    @property
    def shear_range(self) -> tuple[float, float]:
        return _as_range("shear", self.shear, 0.0)

    @property
    def is_identity(self) -> bool:
        return not (self.affine or self.mosaic_prob or self.channel_swap_prob or self.hsv_prob or self.flip_prob
                    or self.mixup_prob)

    @property
    def box_factor(self) -> int:
        """How many times the boxes of one source image an augmented image can hold (mosaic 4, mixup 2)."""
        return (4 if self.mosaic_prob > 0 else 1) * (2 if self.mixup_prob > 0 else 1)


def chance(rng: np.random.Generator, probability: float) -> bool:
    """True with `probability`; draws nothing when it is 0."""
    return probability > 0 and rng.random() < probability


# --- pixel transforms ------------------------------------------------------------------------------


def hsv_jitter(image: np.ndarray, rng: np.random.Generator, gains: Sequence[float] = HSV_GAINS) -> np.ndarray:
    """super-gradients' augment_hsv on an (H, W, 3) uint8 RGB image."""
    offsets = rng.uniform(-1, 1, 3) * np.asarray(gains) * rng.integers(0, 2, 3)
    if not offsets.any():
        return image
    hsv = np.asarray(Image.fromarray(image).convert("HSV")).astype(np.float32)
    hsv[..., 0] = np.mod(hsv[..., 0] + offsets[0] * (256.0 / 180.0), 256.0)  # PIL hue is 0..255
    hsv[..., 1:] = np.clip(hsv[..., 1:] + offsets[1:], 0, 255)
    hsv = (np.round(hsv) % 256).astype(np.uint8)
    return np.asarray(Image.frombytes("HSV", (hsv.shape[1], hsv.shape[0]), hsv.tobytes()).convert("RGB"))


def channel_swap(image: np.ndarray) -> np.ndarray:
    """super-gradients' DetectionRGB2BGR: the channel order reversed."""
    return np.ascontiguousarray(image[..., ::-1])


def horizontal_flip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The image mirrored left-right and its xyxy boxes with it."""
    width = image.shape[1]
    boxes = np.asarray(boxes).reshape(-1, 4)
    flipped = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
    return np.ascontiguousarray(image[:, ::-1]), flipped.astype(boxes.dtype)


def _sanitize(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> Parts:
    """super-gradients' DetectionSample.sanitize_sample: clip to the image, drop boxes of zero area."""
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
    keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
    return image, boxes[keep], np.asarray(classes).reshape(-1)[keep]


def fit_to_size(image: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """super-gradients' dataset `input_dim` resize: scale r = min(size / H, size / W), new size
    int(H r) x int(W r) (OpenCV-exact bilinear), boxes times r."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_h, new_w = max(1, int(h * r)), max(1, int(w * r))
    if (new_h, new_w) != (h, w):
        image = resize_linear(image, new_h, new_w)
    return image, np.asarray(boxes, np.float64).reshape(-1, 4) * r


# --- random affine ---------------------------------------------------------------------------------


def affine_matrix(input_shape: tuple[int, int], target_shape: tuple[int, int], angle: float = 0.0,
                  scale: float = 1.0, shear_x: float = 0.0, shear_y: float = 0.0, translate_x: float = 0.5,
                  translate_y: float = 0.5) -> np.ndarray:
    """super-gradients' get_affine_matrix for drawn values: (2, 3) float64 mapping input (x, y) to output.

    input_shape / target_shape: (H, W). angle, shear_x, shear_y in degrees; translate_x / _y: where the
    input centre lands, as fractions of the output width / height."""
    h, w = input_shape
    target_h, target_w = target_shape
    centre = np.eye(3)
    centre[0, 2], centre[1, 2] = -(w // 2), -(h // 2)
    radians = angle * math.pi / 180  # cv2.getRotationMatrix2D(center=(0, 0), angle, scale)
    alpha, beta = math.cos(radians) * scale, math.sin(radians) * scale
    rotation = np.array([[alpha, beta, 0.0], [-beta, alpha, 0.0], [0.0, 0.0, 1.0]])
    shear = np.eye(3)
    shear[0, 1] = math.tan(shear_x * math.pi / 180)
    shear[1, 0] = math.tan(shear_y * math.pi / 180)
    translation = np.eye(3)
    translation[0, 2], translation[1, 2] = translate_x * target_w, translate_y * target_h
    return (translation @ shear @ rotation @ centre)[:2]


def draw_affine_matrix(input_shape: tuple[int, int], target_shape: tuple[int, int], rng: np.random.Generator,
                       augmentation: Augmentation = Augmentation()) -> np.ndarray:
    """A random `affine_matrix`, its values drawn in super-gradients' order: angle, scale, shear x,
    shear y, translate x, translate y."""
    a = augmentation
    angle = rng.uniform(*a.degrees_range)
    scale = rng.uniform(*a.scale_range)
    shear_x, shear_y = rng.uniform(*a.shear_range), rng.uniform(*a.shear_range)
    translate_x, translate_y = rng.uniform(*a.translate_range), rng.uniform(*a.translate_range)
    return affine_matrix(input_shape, target_shape, angle, scale, shear_x, shear_y, translate_x, translate_y)


def warp_affine(image: np.ndarray, matrix: np.ndarray, target_shape: tuple[int, int],
                border_value: int = PAD_VALUE) -> np.ndarray:
    """cv2.warpAffine(image, matrix, (W, H), INTER_LINEAR, borderValue=border_value) with Pillow.

    OpenCV puts pixel centres at integer coordinates, Pillow at +0.5: the inverse map is shifted to
    match. Pillow clamps to the edge pixel where OpenCV blends it with the border value: a 1-pixel frame
    of border_value around the image makes Pillow blend too. What remains are the bilinear weights
    (OpenCV's 1/32-pixel fixed point against Pillow's floats): at most 1 grey level apart
    (tests/data/augment_test.py)."""
    target_h, target_w = target_shape
    framed = np.pad(np.ascontiguousarray(image), ((1, 1), (1, 1), (0, 0)), constant_values=border_value)
    full = np.vstack([np.asarray(matrix, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(full)[:2]
    linear, offset = inverse[:, :2], inverse[:, 2] + 1.0  # + 1: the frame
    offset = offset + 0.5 - linear @ np.array([0.5, 0.5])
    data = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    warped = Image.fromarray(framed).transform(
        (int(target_w), int(target_h)), Image.Transform.AFFINE, data=data, resample=Image.Resampling.BILINEAR,
        fillcolor=(int(border_value),) * 3)
    return np.asarray(warped)


def apply_affine_to_boxes(boxes: np.ndarray, matrix: np.ndarray, target_shape: tuple[int, int]) -> np.ndarray:
    """super-gradients' apply_affine_to_bboxes: each xyxy box's four corners through `matrix`, their
    min / max, clipped to the (H, W) target. float64 (n, 4)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return boxes.copy()
    corners = np.ones((len(boxes) * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(-1, 2)  # x1y1, x2y2, x1y2, x2y1
    corners = (corners @ np.asarray(matrix, np.float64).T).reshape(len(boxes), 8)
    xs, ys = corners[:, 0::2], corners[:, 1::2]
    out = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    target_h, target_w = target_shape
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, target_w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, target_h)
    return out


def filter_box_candidates(original: np.ndarray, transformed: np.ndarray, wh_thr: float = 2.0, ar_thr: float = 20.0,
                          area_thr: float = 0.1) -> np.ndarray:
    """super-gradients' _filter_box_candidates: (n,) bool, True for transformed boxes with width and
    height > wh_thr, area > area_thr of the original area and aspect ratio < ar_thr."""
    original = np.asarray(original, np.float64).reshape(-1, 4).T
    transformed = np.asarray(transformed, np.float64).reshape(-1, 4).T
    w1, h1 = original[2] - original[0], original[3] - original[1]
    w2, h2 = transformed[2] - transformed[0], transformed[3] - transformed[1]
    ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (ar < ar_thr)


def affine_transform(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, matrix: np.ndarray,
                     target_shape: tuple[int, int], augmentation: Augmentation = Augmentation()) -> Parts:
    """super-gradients' random_affine for a given matrix: warp, move the boxes, filter them."""
    a = augmentation
    warped = warp_affine(image, matrix, target_shape, a.border_value)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    moved = apply_affine_to_boxes(boxes, matrix, target_shape)
    if a.filter_boxes and len(boxes):
        keep = filter_box_candidates(boxes, moved, wh_thr=a.wh_thr, ar_thr=a.ar_thr, area_thr=a.area_thr)
        moved, classes = moved[keep], classes[keep]
    return warped, moved, classes


def random_affine(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, rng: np.random.Generator,
                  augmentation: Augmentation = Augmentation(), target_shape: tuple[int, int] | None = None) -> Parts:
    """super-gradients' DetectionRandomAffine: a drawn `affine_matrix` applied by `affine_transform`.
    target_shape (H, W): the output size, default the image's own (the YOLO-NAS recipe's target_size None)."""
    target_shape = tuple(image.shape[:2]) if target_shape is None else tuple(target_shape)
    matrix = draw_affine_matrix(image.shape[:2], target_shape, rng, augmentation)
    return affine_transform(image, boxes, classes, matrix, target_shape, augmentation)


# --- mosaic and mixup ------------------------------------------------------------------------------


def mosaic_canvas(parts: Sequence[Parts], size: int, centre: tuple[int, int], border_value: int = PAD_VALUE) -> Parts:
    """super-gradients' DetectionMosaic for a given centre (xc, yc): the four (image, boxes, classes)
    parts, each resized to fit size x size, around the centre of a 2 size x 2 size canvas (top-left,
    top-right, bottom-left, bottom-right)."""
    if len(parts) != 4:
        raise ValueError(f"a mosaic takes 4 images, got {len(parts)}")
    xc, yc = int(centre[0]), int(centre[1])
    canvas = np.full((2 * size, 2 * size, 3), border_value, np.uint8)
    all_boxes, all_classes = [], []
    for index, (image, boxes, classes) in enumerate(parts):
        h0, w0 = image.shape[:2]
        scale = min(size / h0, size / w0)
        h, w = max(1, int(h0 * scale)), max(1, int(w0 * scale))
        if (h, w) != (h0, w0):
            image = resize_linear(image, h, w)
        if index == 0:
            (x1, y1, x2, y2) = max(xc - w, 0), max(yc - h, 0), xc, yc
            (sx1, sy1, sx2, sy2) = w - (x2 - x1), h - (y2 - y1), w, h
        elif index == 1:
            (x1, y1, x2, y2) = xc, max(yc - h, 0), min(xc + w, 2 * size), yc
            (sx1, sy1, sx2, sy2) = 0, h - (y2 - y1), min(w, x2 - x1), h
        elif index == 2:
            (x1, y1, x2, y2) = max(xc - w, 0), yc, xc, min(2 * size, yc + h)
            (sx1, sy1, sx2, sy2) = w - (x2 - x1), 0, w, min(y2 - y1, h)
        else:
            (x1, y1, x2, y2) = xc, yc, min(xc + w, 2 * size), min(2 * size, yc + h)
            (sx1, sy1, sx2, sy2) = 0, 0, min(w, x2 - x1), min(y2 - y1, h)
        canvas[y1:y2, x1:x2] = image[sy1:sy2, sx1:sx2]
        pad_x, pad_y = x1 - sx1, y1 - sy1
        all_boxes.append(np.asarray(boxes, np.float64).reshape(-1, 4) * scale + np.array([pad_x, pad_y, pad_x, pad_y]))
        all_classes.append(np.asarray(classes).reshape(-1))
    return _sanitize(canvas, np.concatenate(all_boxes), np.concatenate(all_classes))


def mosaic(parts: Sequence[Parts], size: int, rng: np.random.Generator, border_value: int = PAD_VALUE) -> Parts:
    """`mosaic_canvas` around a random centre: yc, then xc, each int(uniform(size / 2, 3 size / 2))."""
    yc = int(rng.uniform(0.5 * size, 1.5 * size))
    xc = int(rng.uniform(0.5 * size, 1.5 * size))
    return mosaic_canvas(parts, size, (xc, yc), border_value)


def mixup_blend(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, other: Parts, *, flip: bool, scale: float,
                offset: tuple[int, int] = (0, 0), border_value: int = PAD_VALUE) -> Parts:
    """super-gradients' DetectionMixup for given draws: `other` (image, boxes, classes), mirrored if
    `flip`, fitted into a border_value canvas of the image's size, that canvas rescaled by `scale`,
    pasted top-left on a black canvas at least the image's size and cropped at `offset` (y, x); the
    images blended 0.5 / 0.5 and the boxes concatenated."""
    other_image, other_boxes, other_classes = other
    other_boxes = np.asarray(other_boxes, np.float64).reshape(-1, 4)
    if flip:
        other_image, other_boxes = horizontal_flip(other_image, other_boxes)
    target_h, target_w = image.shape[:2]
    cp = np.full((target_h, target_w, 3), border_value, np.uint8)
    ratio = min(target_h / other_image.shape[0], target_w / other_image.shape[1])
    resized = resize_linear(other_image, max(1, int(other_image.shape[0] * ratio)),
                            max(1, int(other_image.shape[1] * ratio)))
    cp[:resized.shape[0], :resized.shape[1]] = resized
    cp = resize_linear(cp, max(1, int(target_h * scale)), max(1, int(target_w * scale)))
    ratio *= scale
    origin_h, origin_w = cp.shape[:2]
    padded = np.zeros((max(origin_h, target_h), max(origin_w, target_w), 3), np.uint8)
    padded[:origin_h, :origin_w] = cp
    y_offset, x_offset = int(offset[0]), int(offset[1])
    crop = padded[y_offset:y_offset + target_h, x_offset:x_offset + target_w]
    if crop.shape[:2] != (target_h, target_w):
        raise ValueError(f"mixup offset {offset} out of range for a {padded.shape[:2]} canvas and a "
                         f"{(target_h, target_w)} image")
    moved = other_boxes * ratio
    moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, origin_w)
    moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, origin_h)
    moved -= np.array([x_offset, y_offset, x_offset, y_offset])
    blended = (0.5 * image + 0.5 * crop).astype(np.uint8)
    return _sanitize(blended, np.concatenate([np.asarray(boxes, np.float64).reshape(-1, 4), moved]),
                     np.concatenate([np.asarray(classes).reshape(-1), np.asarray(other_classes).reshape(-1)]))


def mixup(image: np.ndarray, boxes: np.ndarray, classes: np.ndarray, other: Parts, rng: np.random.Generator,
          augmentation: Augmentation = Augmentation()) -> Parts:
    """`mixup_blend` with super-gradients' draws: flip (mixup_flip_prob), scale (uniform in
    mixup_scale), then the crop offset, y then x, uniform over the canvas overhang."""
    a = augmentation
    flip = chance(rng, a.mixup_flip_prob)
    scale = rng.uniform(*a.mixup_scale)
    target_h, target_w = image.shape[:2]
    padded_h, padded_w = max(max(1, int(target_h * scale)), target_h), max(max(1, int(target_w * scale)), target_w)
    # random.randint(0, overhang - 1) in super-gradients, when there is an overhang.
    y_offset = int(rng.integers(0, padded_h - target_h)) if padded_h > target_h else 0
    x_offset = int(rng.integers(0, padded_w - target_w)) if padded_w > target_w else 0
    return mixup_blend(image, boxes, classes, other, flip=flip, scale=scale, offset=(y_offset, x_offset),
                       border_value=a.border_value)
