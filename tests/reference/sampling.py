"""What the reference files hold and how features are sub-sampled for them.

Pure numpy on purpose: `make_reference.py` loads this file by path inside the super-gradients
environment (no jax there), and the nasjax tests load it by path too, so both sides sample the very
same elements and describe the very same cases.
"""
from __future__ import annotations

import numpy as np

# Seed of `deterministic_state_dict` used for every reference file.
WEIGHT_SEED = 0

# Model forms: as built ("training", three-branch QARepVGG), QARepVGG branches fused with post_bn
# kept ("partial"), and everything folded into one conv per block ("full").
FORMS = ("training", "partial", "full")
# Forms that are also produced by super-gradients' own fusion of the training-form weights.
FUSED_FROM_TRAINING = ("partial", "full")

# variant -> [(case name, keyword arguments of `seeded_images`)]
CASES = {
    "yolo_nas_s": [
        ("640", dict(seed=1, batch=1, height=640, width=640)),
        ("nonsquare", dict(seed=2, batch=2, height=320, width=480)),
    ],
    "yolo_nas_m": [("small", dict(seed=3, batch=2, height=128, width=192))],
    "yolo_nas_l": [("small", dict(seed=3, batch=2, height=128, width=192))],
}


def sample_feature(x: np.ndarray) -> np.ndarray:
    """A strided sub-sample of an NHWC feature map (B, H, W, C): about 8x8 positions, <= ~64 channels."""
    _, h, w, c = x.shape
    sy = max(1, h // 8)
    sx = max(1, w // 8)
    sc = max(1, c // 64)
    return x[:, ::sy, ::sx, ::sc]


def anchor_stride(num_anchors: int) -> int:
    """Every how many anchors per-class outputs (class and DFL logits) are stored; boxes and the
    per-anchor max score are stored for every anchor."""
    return 15 if num_anchors > 4000 else 7
