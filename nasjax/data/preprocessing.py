"""Host-side input work for predict(): reading images, resizing, padding, and mapping boxes back.

Two schemes (docs/preprocessing.md#centre-pad and #letterbox):

* "centre_pad" — super-gradients' `predict()` for the COCO models: scale = min(636 / H, 636 / W)
  (up or down), new size (round(H * scale), round(W * scale)), bilinear resize, centre padding to
  640 x 640 with 114. Boxes go back as (box - (left, top)) * float32(1 / scale), in float32 as
  super-gradients does, not clipped.
* "letterbox" — Ultralytics' `LetterBox(center=True, scaleup=True)`: r = min(S / H, S / W), new size
  (round(H * r), round(W * r)), centre padding with 114 split round(pad / 2 -+ 0.1), to S x S, or with
  auto=True only up to the next multiple of 32 per side. Boxes go back as Ultralytics' `scale_boxes`
  does, clipped to the image.

The resize is OpenCV's `cv2.resize(..., INTER_LINEAR)` on uint8, reproduced bit for bit in numpy:
half-pixel centres, 11-bit fixed-point weights (rounded to nearest even), an integer horizontal pass,
then the vertical pass with the rounding of OpenCV's SIMD kernel, ((S0 >> 4) * b0 >> 16) +
((S1 >> 4) * b1 >> 16) + 2 >> 2. Checked against cv2 5.0 (tests/reference/predict_reference.npz);
OpenCV itself is not needed, but where it imports (the video extra brings it) its resize is used:
the same pixels (tested against the same reference), 40-70x faster, which matters for video frames.

Reading (`load_image`) follows super-gradients too: files are opened with PIL and converted to RGB;
arrays are taken as RGB. Conversion rules, per PIL mode:
  RGB as is; L, P, PA, 1, CMYK, YCbCr, LAB, HSV, F: PIL's `convert("RGB")`; RGBA, LA: alpha dropped
  (PIL's conversion; no compositing); I;16, I;16B, I;16L, I (16-bit data): scaled to 8 bits as
  round(v / 257) after clipping to [0, 65535] — unlike super-gradients, where PIL clips every value
  above 255 to white.
  EXIF orientation is not applied by default (super-gradients does not apply it either: a phone photo
  stored sideways is detected sideways); `exif_transpose=True` applies it.
Arrays: (H, W, 3) uint8 RGB; (H, W) and (H, W, 1) grey and (H, W, 4) RGBA are accepted too.
Files over `limits.MAX_IMAGE_PIXELS` ($NASJAX_MAX_IMAGE_PIXELS) are refused from their header, before
decoding: a few kilobytes of PNG can decode to gigabytes (docs/datasets.md#limits).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from nasjax.data import limits

# The image files, by extension (lower case, no dot), wherever files are listed: predict's folder and
# glob sources, the images of a YOLO dataset split, export's calibration folders. super-gradients'
# IMG_EXTENSIONS: Ultralytics' IMG_FORMATS plus pgm and ppm, less heic (Pillow cannot read it without
# a plug-in). docs/preprocessing.md#reading
IMAGE_EXTENSIONS = ("bmp", "dng", "jpeg", "jpg", "mpo", "pfm", "pgm", "png", "ppm", "tif", "tiff", "webp")
PREPROCESS_METHODS = ("centre_pad", "letterbox")
STRIDE = 32

# uint8 → float32 in [0, 1] exactly as super-gradients' `(image / 255.0).astype(np.float32)`. A table,
# because XLA turns a division by the constant 255 into a multiplication by its reciprocal, which is
# off by one ulp for about half of the 256 values.
UNIT_SCALE_TABLE = (np.arange(256) / 255.0).astype(np.float32)

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageLoadError(ValueError):
    """An image source that cannot be read or understood; the message names it."""


class ImageTooLargeError(ImageLoadError):
    """An image over the pixel limit (nasjax's or Pillow's), refused from its header before decoding."""


def to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB, by the rules in the module docstring."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # round(v / 257) in integers: (v + 128) // 257 (v / 257 is never exactly half-way), in 32 bits
        # rather than int64 and float64 copies, which took 16 bytes per pixel.
        values = np.asarray(image)
        if values.dtype.kind == "i":
            values = np.clip(values, 0, 65535)
        grey = ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def check_image_size(path, size: tuple[int, int]) -> None:
    """Raise ImageLoadError when an image of `size` (width, height) exceeds the pixel limit in force
    (`nasjax.data.limits.max_image_pixels`): it is checked from the file's header, before decoding."""
    limit = limits.max_image_pixels()
    w, h = size
    if limit is not None and w * h > limit:
        raise ImageTooLargeError(
            f"{path}: the image is {w}x{h} = {w * h:,} pixels, over nasjax's limit of {limit:,} pixels per image "
            f"(at least {w * h * 3 / 2**30:.1f} GiB decoded); downscale it, or raise the limit with "
            f"${limits.MAX_IMAGE_PIXELS_ENV}=<pixels> (0: no limit)")


def open_image(path: Path) -> Image.Image:
    """Image.open without Pillow's DecompressionBombWarning: nasjax's own, lower, limit is checked next
    and names the file; Pillow's DecompressionBombError (twice its limit) is still raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def read_image_file(file, label, exif_transpose: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an encoded image file (a path or a binary file object, e.g.
    io.BytesIO of the bytes), named `label` in messages. The pixel limit is checked from the header before
    decoding; every failure of Pillow is an ImageLoadError naming `label`. A missing path or a folder
    raises FileNotFoundError / IsADirectoryError (load_image words them)."""
    try:
        with open_image(file) as image:
            check_image_size(label, image.size)
            image.load()
            return load_image(image, exif_transpose)
    except ImageLoadError as e:
        raise type(e)(e if str(label) in str(e) else f"{label}: {e}") from e
    except (FileNotFoundError, IsADirectoryError):
        raise
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"cannot read image {label}: {e} Pillow refuses it; to read it anyway raise "
                             f"PIL.Image.MAX_IMAGE_PIXELS and ${limits.MAX_IMAGE_PIXELS_ENV}") from e
    except MemoryError:
        raise ImageLoadError(f"cannot read image {label}: out of memory while decoding it") from None
    except UnidentifiedImageError as e:  # for a file object, Pillow's message names the object, not the file
        detail = e if isinstance(file, (str, os.PathLike)) else "cannot identify image file"
        raise ImageLoadError(f"cannot read image {label}: {detail}") from None
    except (OSError, SyntaxError, ValueError) as e:
        # PIL reports corrupt or truncated files as OSError / SyntaxError / ValueError.
        raise ImageLoadError(f"cannot read image {label}: {e}") from e


def load_image(source, exif_transpose: bool = False) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a path, a PIL image or a numpy array. Raises ImageLoadError, also for a
    file over the pixel limit (`check_image_size`), before decoding it."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            return read_image_file(path, path, exif_transpose)
        except FileNotFoundError:
            raise ImageLoadError(f"image file not found: {path}") from None
        except IsADirectoryError:
            raise ImageLoadError(f"{path} is a folder, not an image file") from None
    if isinstance(source, Image.Image):
        if exif_transpose:
            source = ImageOps.exif_transpose(source)
        return to_rgb_uint8(source)
    if isinstance(source, np.ndarray):
        return array_to_rgb_uint8(source)
    raise ImageLoadError(
        f"unsupported image source of type {type(source).__name__}; expected a path, a PIL image or "
        "an (H, W, 3) uint8 RGB numpy array"
    )


def array_to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageLoadError(
            f"expected a uint8 image array, got dtype {array.dtype}; convert it first "
            "(e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1])"
        )
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        hint = " (this looks like CHW: use array.transpose(1, 2, 0))" if array.ndim == 3 and array.shape[0] in (1, 3) else ""
        raise ImageLoadError(f"expected an (H, W, 3) RGB image array, got shape {array.shape}{hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageLoadError(f"empty image array of shape {array.shape}")
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


# --- OpenCV INTER_LINEAR -------------------------------------------------------------------------

_COEF_BITS = 11  # INTER_RESIZE_COEF_BITS
_COEF_ONE = 1 << _COEF_BITS


def _linear_taps(src: int, dst: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source index and the two fixed-point weights per destination index, as cv::resize computes
    them: fx = float((d + 0.5) * scale - 0.5) with scale = 1 / (dst / src) in double, sx = floor(fx),
    fx -= sx in float; weights cvRound((1 - fx) * 2048), cvRound(fx * 2048). Along x, positions
    outside the image are clamped (fx = 0); along y OpenCV keeps fy and clamps the row indices."""
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp:
        low = s < 0
        f[low], s[low] = 0, 0
        high = s >= src - 1
        f[high], s[high] = 0, src - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(_COEF_ONE)).astype(np.int32)
    w1 = np.rint(f * np.float32(_COEF_ONE)).astype(np.int32)
    return s, w0, w1


def _opencv_resize():
    """cv2.resize when OpenCV imports (not a dependency of nasjax itself), else None; decided once."""
    global _cv2_resize
    if _cv2_resize is _UNSET:
        try:
            import cv2

            _cv2_resize = cv2.resize if hasattr(cv2, "INTER_LINEAR") else None
        except (ImportError, OSError):  # absent, or opencv-python without the system's libGL
            _cv2_resize = None
    return _cv2_resize


_UNSET = object()
_cv2_resize = _UNSET


def resize_linear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)` for (H, W, C) uint8: OpenCV's
    own where it imports, else the same in numpy (`resize_linear_numpy`)."""
    resize = _opencv_resize()
    if resize is None or image.ndim != 3 or image.dtype != np.uint8 or image.shape[2] not in (1, 3, 4):
        return resize_linear_numpy(image, height, width)
    if image.shape[:2] == (height, width):
        return image.copy()
    out = resize(np.ascontiguousarray(image), (int(width), int(height)), interpolation=1)  # cv2.INTER_LINEAR
    return out.reshape(height, width, image.shape[2])


def resize_linear_numpy(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)` for (H, W, C) uint8, in numpy.

    OpenCV switches an exact 2x downscale to its INTER_AREA fast path; that 2x2 average,
    (a + b + c + d + 2) >> 2, is what the formula below gives there too (weights 1024 / 1024)."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image.copy()
    sx, a0, a1 = _linear_taps(w, width, clamp=True)
    sy, b0, b1 = _linear_taps(h, height, clamp=False)
    sx1 = np.minimum(sx + 1, w - 1)
    r0, r1 = np.clip(sy, 0, h - 1), np.clip(sy + 1, 0, h - 1)
    # Horizontal pass (exact integers) on the source rows the output needs only.
    rows, inverse = np.unique(np.concatenate([r0, r1]), return_inverse=True)
    src = image[rows].astype(np.int32)
    horizontal = src[:, sx] * a0[None, :, None] + src[:, sx1] * a1[None, :, None]
    s0, s1 = horizontal[inverse[:height]], horizontal[inverse[height:]]
    b0, b1 = b0[:, None, None], b1[:, None, None]
    out = (((s0 >> 4) * b0 >> 16) + ((s1 >> 4) * b1 >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


# --- geometry --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Transform:
    """How one original image becomes a network input, and how boxes go back."""

    method: str  # "centre_pad" or "letterbox"
    orig_shape: tuple[int, int]  # (H, W) of the original image
    resized_shape: tuple[int, int]  # (h, w) after the resize
    input_shape: tuple[int, int]  # (H', W') after padding: what the network sees
    pad: tuple[int, int, int, int]  # (top, left, bottom, right)
    scale: float  # resized / original

    def apply(self, image: np.ndarray, pad_value: int = 114) -> np.ndarray:
        """The padded network input, (H', W', 3) uint8."""
        if image.shape[:2] != self.orig_shape:
            raise ValueError(f"image of shape {image.shape[:2]} given to a transform for {self.orig_shape}")
        resized = image if self.resized_shape == self.orig_shape else resize_linear(image, *self.resized_shape)
        top, left, bottom, right = self.pad
        return np.pad(resized, ((top, bottom), (left, right), (0, 0)), constant_values=pad_value)

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) xyxy boxes in network-input pixels → original-image pixels, float32."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if self.method == "centre_pad":
            # super-gradients: shift by the padding, then multiply by float32(1 / scale), in float32.
            top, left = self.pad[:2]
            shifted = boxes - np.array([left, top, left, top], dtype=np.float32)
            return shifted * np.float32(1.0 / self.scale)
        # Ultralytics `scale_boxes`: gain and padding recomputed from the shapes, then clipped.
        (h0, w0), (h1, w1) = self.orig_shape, self.input_shape
        gain = min(h1 / h0, w1 / w0)
        pad_x = round((w1 - w0 * gain) / 2 - 0.1)
        pad_y = round((h1 - h0 * gain) / 2 - 0.1)
        out = (boxes - np.array([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)) / np.float32(gain)
        return np.clip(out, 0, np.array([w0, h0, w0, h0], dtype=np.float32))


RESIZE_ROUNDINGS = ("round", "trunc")


def _scaled(size: int, scale: float, rounding: str) -> int:
    """round(size * scale) (super-gradients' predict, Ultralytics) or int(size * scale), the truncation
    of super-gradients' COCO validation pipeline (docs/preprocessing.md#validation-resize). At least 1:
    the short side of an extreme aspect ratio (a 1 x 60000 strip) keeps one pixel instead of none."""
    if rounding == "round":
        return max(1, int(round(size * scale)))
    if rounding == "trunc":
        return max(1, int(size * scale))
    raise ValueError(f"unknown resize rounding {rounding!r}; expected one of {', '.join(RESIZE_ROUNDINGS)}")


def centre_pad_transform(orig_shape: tuple[int, int], input_size: int = 640, resize_longest_side: int = 636,
                         rounding: str = "round") -> Transform:
    """super-gradients' DetectionLongestMaxSizeRescale + DetectionCenterPadding. rounding="trunc" gives
    the int() new size of its validation pipeline: 480x640 -> 477x636 either way, but 500x640 -> 497x636
    with "round" and 496x636 with "trunc"."""
    h, w = orig_shape
    scale = min(resize_longest_side / h, resize_longest_side / w)
    new_h, new_w = (_scaled(h, scale, rounding), _scaled(w, scale, rounding)) if scale != 1.0 else (h, w)
    pad_h, pad_w = input_size - new_h, input_size - new_w
    top, left = pad_h // 2, pad_w // 2
    return Transform("centre_pad", (h, w), (new_h, new_w), (input_size, input_size),
                     (top, left, pad_h - top, pad_w - left), scale)


def letterbox_transform(orig_shape: tuple[int, int], imgsz: int = 640, auto: bool = False, stride: int = STRIDE,
                        rounding: str = "round") -> Transform:
    """Ultralytics' LetterBox(new_shape=(imgsz, imgsz), auto, scaleup=True, center=True)."""
    h, w = orig_shape
    r = min(imgsz / h, imgsz / w)
    new_h, new_w = _scaled(h, r, rounding), _scaled(w, r, rounding)
    dh, dw = imgsz - new_h, imgsz - new_w
    if auto:
        dh, dw = dh % stride, dw % stride
    dh, dw = dh / 2, dw / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return Transform("letterbox", (h, w), (new_h, new_w), (new_h + top + bottom, new_w + left + right),
                     (top, left, bottom, right), r)


def make_transform(orig_shape: tuple[int, int], method: str = "centre_pad", imgsz: int = 640, *,
                   resize_margin: int = 4, auto: bool = False, rounding: str = "round") -> Transform:
    """The transform of `method` for a network input of `imgsz` (a multiple of 32). centre_pad resizes
    the longest side to imgsz - resize_margin (636 for 640, as super-gradients). rounding: how the
    resized size is made an integer, "round" (default) or "trunc" (super-gradients' validation)."""
    if imgsz <= 0 or imgsz % STRIDE:
        raise ValueError(f"imgsz must be a positive multiple of {STRIDE}, got {imgsz}")
    if rounding not in RESIZE_ROUNDINGS:
        raise ValueError(f"unknown resize rounding {rounding!r}; expected one of {', '.join(RESIZE_ROUNDINGS)}")
    if method == "centre_pad":
        return centre_pad_transform(orig_shape, imgsz, imgsz - resize_margin, rounding)
    if method == "letterbox":
        return letterbox_transform(orig_shape, imgsz, auto=auto, rounding=rounding)
    raise ValueError(f"unknown preprocess method {method!r}; expected one of {', '.join(PREPROCESS_METHODS)}")


def preprocess(image: np.ndarray, method: str = "centre_pad", imgsz: int = 640, pad_value: int = 114,
               **transform_options) -> tuple[np.ndarray, Transform]:
    """(network input (H', W', 3) uint8, transform) for an (H, W, 3) uint8 RGB image."""
    transform = make_transform(image.shape[:2], method, imgsz, **transform_options)
    return transform.apply(image, pad_value), transform


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels → float32 in [0, 1], bit-identical to super-gradients' StandardizeImage(255)."""
    return UNIT_SCALE_TABLE[images]
