"""Inputs of the predict / pre-processing reference cases, shared by make_predict_reference.py (in the
super-gradients environment) and the tests (loaded by path on both sides, like sampling.py).

Images come from integer formulas, not from a random generator, so that both environments (different
numpy versions) make the very same pixels.
"""
from __future__ import annotations

import hashlib

import numpy as np

WEIGHT_SEED = 0
VARIANT = "yolo_nas_s"
# The predict parity weights: deterministic_state_dict(training-form keys, WEIGHT_SEED) updated with
# these tensors (calibrated BatchNorm statistics and class-prediction biases; see
# make_predict_reference.py).
WEIGHT_OVERRIDES = "predict_weights_overrides.npz"

# super-gradients predict() parameters of the reference run; nms_top_k / max_predictions / labels are
# its defaults (docs/postprocessing.md#settings).
PREDICT_CONF = 0.01
PREDICT_IOU = 0.7

# (height, width, pattern seed) of the images whose activations calibrate the BatchNorm statistics of
# the predict reference weights (make_predict_reference.py); none of them is a predict case.
CALIBRATION_IMAGES = [(480, 640, 11), (640, 480, 12), (400, 600, 13), (600, 600, 14)]

# (name, height, width, pattern seed) of the generated (non-square) predict cases.
GENERATED_IMAGES = [("generated_480x640", 480, 640, 1), ("generated_300x200", 300, 200, 2)]
# Real images, relative to ../shared/assets (skipped when absent).
REAL_IMAGES = [
    ("bus", "images/bus.jpg"),
    ("coco8_val_36", "coco8/images/val/000000000036.jpg"),
    ("coco8_val_42", "coco8/images/val/000000000042.jpg"),
    ("coco8_val_49", "coco8/images/val/000000000049.jpg"),
    ("coco8_val_61", "coco8/images/val/000000000061.jpg"),
]

# (source h, w, destination h, w) for cv2.resize(INTER_LINEAR); small destinations are stored as
# arrays, large ones as a sha256 of the bytes. Widths cover every SIMD tail length, up- and
# down-scaling, the exact 2x case OpenCV treats specially, and single rows / columns.
RESIZE_CASES = [
    (37, 53, 71, 101), (64, 64, 32, 32), (100, 60, 50, 30), (5, 7, 13, 3), (1, 9, 4, 20),
    (9, 1, 3, 5), (17, 29, 17, 31), (40, 30, 39, 29), (13, 11, 41, 37), (25, 70, 8, 23),
    (60, 45, 61, 47), (3, 3, 1, 1),
]
RESIZE_CASES_LARGE = [(1080, 810, 636, 477), (480, 640, 477, 636), (300, 200, 636, 424), (1272, 954, 636, 477),
                      (2000, 1500, 636, 477), (123, 457, 171, 636)]
RESIZE_STORED_MAX_PIXELS = 64 * 64


def noise_image(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 of hashed coordinates: every value 0..255, no spatial correlation."""
    y, x, c = np.meshgrid(np.arange(height, dtype=np.int64), np.arange(width, dtype=np.int64),
                          np.arange(3, dtype=np.int64), indexing="ij")
    h = (x * 73856093) ^ (y * 19349663) ^ ((c + 7 * seed + 1) * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h >> 7) & 255).astype(np.uint8)


def pattern_image(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 that looks a little like a picture: blocks of colour, gradients, some noise."""
    y, x, c = np.meshgrid(np.arange(height, dtype=np.int64), np.arange(width, dtype=np.int64),
                          np.arange(3, dtype=np.int64), indexing="ij")
    blocks = ((x // max(width // (5 + seed), 1)) * 37 + (y // max(height // (4 + seed), 1)) * 59 + c * 83) % 256
    gradient = (x * 255 // max(width - 1, 1) + y * 255 // max(height - 1, 1)) // 2
    noise = noise_image(height, width, seed).astype(np.int64) // 8
    return np.clip((blocks * 5 + gradient * 3) // 8 + noise - 16, 0, 255).astype(np.uint8)


def sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
