"""State dict → variables: the key lists, form/variant/class-count inference and the errors."""
from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import nasjax
from nasjax.configs import VARIANTS
from nasjax.model.state_dict import StateDictError, detect_form, detect_variant, reference_key_shapes, variables_to_state_dict
from nasjax.model.deterministic_weights import deterministic_state_dict

from conftest import read_listing, reference_keys, sampling

SHARED_LISTING = {"training": "training", "partial": "partially_fused", "full": "fully_fused"}
ALL = [(v, f) for v in VARIANTS for f in sampling.FORMS]


@pytest.mark.parametrize("variant,form", ALL)
def test_key_list_equals_reference_listing(variant, form):
    """The tensors nasjax expects are exactly those super-gradients writes (names and shapes)."""
    assert reference_key_shapes(variant, form) == reference_keys(variant, form)


@pytest.mark.parametrize("variant,form", ALL)
def test_key_list_equals_shared_listing(variant, form, shared_dir):
    listing = shared_dir / "reference" / "state_dicts" / f"{variant}.{SHARED_LISTING[form]}.txt"
    assert reference_key_shapes(variant, form) == read_listing(listing)


@pytest.mark.parametrize("variant,form", ALL)
def test_form_and_variant_are_inferred(variant, form):
    shapes = reference_keys(variant, form)
    assert detect_form(shapes) == form
    assert detect_variant(shapes) == variant


@pytest.fixture(scope="module")
def s_training():
    return deterministic_state_dict(reference_keys("yolo_nas_s", "training"), seed=0)


def test_class_count_is_inferred():
    shapes = reference_key_shapes("yolo_nas_s", "full", num_classes=3)
    detector = nasjax.from_state_dict(deterministic_state_dict(shapes, seed=1))
    assert detector.num_classes == 3 and detector.config.name == "yolo_nas_s"
    boxes, scores = detector(np.zeros((1, 64, 96, 3), np.float32))
    assert boxes.shape == (1, 8 * 12 + 4 * 6 + 2 * 3, 4) and scores.shape == (1, 126, 3)


def test_rbr_reparam_placeholders_are_ignored(s_training):
    other = dict(s_training)
    for key in other:
        if key.endswith(("rbr_reparam.weight", "rbr_reparam.bias")):
            other[key] = np.full_like(other[key], 123.0)
    a = nasjax.from_state_dict(s_training, form=None)
    b = nasjax.from_state_dict(other, form=None)
    for (pa, va), (pb, vb) in zip(nnx.to_flat_state(a.variables), nnx.to_flat_state(b.variables)):
        assert pa == pb
        np.testing.assert_array_equal(np.asarray(va.get_value()), np.asarray(vb.get_value()))


def test_round_trip_to_reference_names(s_training):
    detector = nasjax.from_state_dict(s_training, form=None)
    back = variables_to_state_dict(detector.model)
    ignored = [k for k in s_training if k.endswith("num_batches_tracked") or ".rbr_reparam." in k]
    assert set(back) == set(s_training) - set(ignored)
    for key, value in back.items():
        np.testing.assert_array_equal(value, s_training[key], err_msg=key)


def test_missing_tensor_is_named(s_training):
    broken = dict(s_training)
    del broken["neck.neck2.upsample.weight"]
    with pytest.raises(StateDictError, match=r"missing neck\.neck2\.upsample\.weight"):
        nasjax.from_state_dict(broken, "yolo_nas_s")


def test_unexpected_tensor_is_named(s_training):
    broken = dict(s_training, **{"heads.head4.cls_pred.weight": np.zeros((80, 8, 1, 1), np.float32)})
    with pytest.raises(StateDictError, match=r"unexpected heads\.head4\.cls_pred\.weight"):
        nasjax.from_state_dict(broken, "yolo_nas_s")


def test_wrong_shape_is_named(s_training):
    broken = dict(s_training)
    broken["backbone.stem.conv.branch_1x1.weight"] = np.zeros((48, 3, 3, 3), np.float32)
    with pytest.raises(StateDictError, match=r"wrong shape backbone\.stem\.conv\.branch_1x1\.weight: expected \(48, 3, 1, 1\), got \(48, 3, 3, 3\)"):
        nasjax.from_state_dict(broken, "yolo_nas_s")


def test_variant_inference_explains_the_closest_match(s_training):
    broken = dict(s_training)
    del broken["backbone.stage4.blocks.bottlenecks.1.alpha"]
    with pytest.raises(StateDictError, match=r"matches no YOLO-NAS variant\. Closest is yolo_nas_s, with 1 differences: missing backbone\.stage4"):
        nasjax.from_state_dict(broken)


def test_state_dict_of_another_model_is_refused():
    resnet_like = {"conv1.weight": np.zeros((64, 3, 7, 7)), "fc.weight": np.zeros((1000, 2048))}
    with pytest.raises(StateDictError, match="not a YOLO-NAS state dict"):
        nasjax.from_state_dict(resnet_like)
    with pytest.raises(StateDictError, match="expected a mapping"):
        nasjax.from_state_dict([("a", np.zeros(1))])


def test_wrong_variant_given_explicitly(s_training):
    with pytest.raises(StateDictError, match="does not fit yolo_nas_m"):
        nasjax.from_state_dict(s_training, "yolo_nas_m")
    with pytest.raises(StateDictError, match="unknown variant 'yolo_nas_xl'"):
        nasjax.from_state_dict(s_training, "yolo_nas_xl")
