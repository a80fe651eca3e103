"""The Detector object: input checks, compile-once, counts, info, class count, non-square inputs."""
from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import nasjax
from nasjax.configs import VARIANTS, get_config
from nasjax.model import box_decoding
from nasjax.model import yolo_nas as models
from nasjax.model.core import jit_forward

# (all parameters as super-gradients counts them, used in training form, fully fused): docs/architecture.md#parameter-counts
PARAMETERS = {
    "yolo_nas_s": (19_053_888, 12_878_304, 12_175_888),
    "yolo_nas_m": (51_182_658, 33_861_346, 31_906_578),
    "yolo_nas_l": (66_976_392, 44_529_448, 41_999_192),
}
QAREPVGG_BLOCKS = {"yolo_nas_s": (37, 32), "yolo_nas_m": (39, 34), "yolo_nas_l": (45, 40)}


@pytest.fixture(scope="module")
def detector():
    return nasjax.build("yolo_nas_s", form="training")


def _abstract(variant, form):
    return nnx.eval_shape(lambda: models.YoloNAS(get_config(variant), form, rngs=nnx.Rngs(0)))


def _count(model, kind=nnx.Param):
    return sum(int(np.prod(x.shape)) for x in __import__("jax").tree.leaves(nnx.state(model, kind)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_match_reference(variant):
    reference_total, used, fused = PARAMETERS[variant]
    training, full = _abstract(variant, "training"), _abstract(variant, "full")
    assert _count(training) == used
    assert _count(full) == fused
    blocks = [m for _, m in nnx.iter_modules(training) if isinstance(m, models.QARepVGGBlock)]
    placeholders = sum(m.out_channels * m.in_channels * 9 + m.out_channels for m in blocks)
    assert used + placeholders == reference_total
    assert (len(blocks), sum(m.use_residual_connection for m in blocks)) == QAREPVGG_BLOCKS[variant]


def test_info_reports_counts_and_gflops(detector, capsys):
    text = detector.info(imgsz=320)
    assert "12,878,304 used" in text and "19,053,888 as super-gradients counts them" in text
    assert "37 QARepVGG blocks" in text and text == capsys.readouterr().out.rstrip("\n")
    fused = detector.fuse("full")
    assert fused.num_parameters() == 12_175_888
    # Fusion removes work: two branches and a BatchNorm per block become one conv.
    assert 0 < fused.gflops(320) < detector.gflops(320)


def test_compiles_once_per_shape(detector):
    images = np.zeros((1, 64, 64, 3), np.float32)
    detector(images)
    size = jit_forward._cache_size()
    detector(images + 0.5)
    assert jit_forward._cache_size() == size
    detector(np.zeros((1, 64, 96, 3), np.float32))
    assert jit_forward._cache_size() == size + 1


@pytest.mark.parametrize("height,width", [(32, 32), (64, 96), (96, 32)])
def test_any_multiple_of_32(detector, height, width):
    out = detector.raw(np.full((2, height, width, 3), 0.5, np.float32))
    n = box_decoding.num_anchors(height, width)
    assert out.boxes.shape == (2, n, 4) and out.scores.shape == (2, n, 80)
    assert out.reg_distri.shape == (2, n, 68) and out.anchor_points.shape == (n, 2)
    scores = np.asarray(out.scores)
    assert np.all((scores >= 0) & (scores <= 1))
    # Identical images in a batch give identical outputs.
    np.testing.assert_array_equal(np.asarray(out.boxes)[0], np.asarray(out.boxes)[1])


@pytest.mark.parametrize(
    "images,error,message",
    [
        (np.zeros((64, 64, 3), np.float32), ValueError, r"rank 3 shape \(64, 64, 3\) \(add a batch axis"),
        (np.zeros((1, 3, 64, 64), np.float32), ValueError, r"looks like NCHW"),
        (np.zeros((1, 64, 64, 4), np.float32), ValueError, r"3 RGB channels last"),
        (np.zeros((1, 64, 64, 3), np.uint8), TypeError, r"divide uint8 pixels by 255"),
        (np.zeros((1, 100, 64, 3), np.float32), ValueError, r"multiples of 32, got 100x64; pad or resize to e\.g\. 128x64"),
        ([[1.0]], TypeError, r"expected an array"),
    ],
)
def test_bad_input_is_explained(detector, images, error, message):
    with pytest.raises(error, match=message):
        detector(images)


def test_fusion_cannot_be_undone(detector):
    with pytest.raises(ValueError, match="cannot un-fuse"):
        detector.fuse("full").fuse("training")


def test_build_is_deterministic():
    a = nasjax.build("yolo_nas_s", num_classes=5, seed=3)
    b = nasjax.build("yolo_nas_s", num_classes=5, seed=3)
    for (_, va), (_, vb) in zip(nnx.to_flat_state(a.variables), nnx.to_flat_state(b.variables)):
        np.testing.assert_array_equal(np.asarray(va.get_value()), np.asarray(vb.get_value()))
    assert a.num_classes == 5


def test_head_widths_follow_config():
    assert get_config("yolo_nas_s").head_inter_channels == (64, 128, 256)
    assert get_config("yolo_nas_m").head_inter_channels == (96, 192, 384)
    assert get_config("yolo_nas_l").head_inter_channels == (128, 256, 512)
    with pytest.raises(ValueError, match="unknown YOLO-NAS variant"):
        get_config("yolo_nas_xs")
