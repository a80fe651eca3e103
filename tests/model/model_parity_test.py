"""nasjax against super-gradients 3.7.1 on the same deterministic weights and inputs.

The reference files were written by `tests/reference/make_reference.py` in the oracle environment.
Here the same weights are regenerated without torch (`nasjax.deterministic_weights`, keyed by tensor
name), loaded through `nasjax.from_state_dict` in the form they are in, and the forward is compared.
"""
from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

import nasjax
from nasjax.model import fusion
from nasjax.model.deterministic_weights import deterministic_state_dict, seeded_images

from conftest import reference_keys, reference_outputs, sampling

BOX_TOL_PX = 1e-3
SCORE_TOL = 1e-5
LOGIT_TOL = 1e-4

CASES = [(v, name, case) for v, cases in sampling.CASES.items() for name, case in cases]
IDS = [f"{v}-{name}" for v, name, _ in CASES]

_detectors: dict = {}


def detector_for(variant: str, form: str) -> nasjax.Detector:
    """Weights generated directly in `form` from the reference's own key list (cached per module)."""
    if (variant, form) not in _detectors:
        state_dict = deterministic_state_dict(reference_keys(variant, form), sampling.WEIGHT_SEED)
        _detectors[variant, form] = nasjax.from_state_dict(state_dict, form=None)
    return _detectors[variant, form]


def images_for(case: dict, ref: dict) -> np.ndarray:
    images = seeded_images(**case)
    assert tuple(ref["input_shape"]) == images.shape
    # The seeded input must be the one the reference saw (guards against numpy stream changes).
    np.testing.assert_allclose(images.sum(dtype=np.float64), ref["input_sum"], rtol=1e-12)
    return images


def assert_outputs_match(out, ref: dict) -> dict[str, float]:
    boxes = np.asarray(out.boxes)
    scores = np.asarray(out.scores)
    idx = ref["anchor_index"]
    errors = {
        "boxes_px": float(np.abs(boxes - ref["boxes"]).max()),
        "scores_max": float(np.abs(scores.max(-1) - ref["scores_max"]).max()),
        # Reference scores are sigmoid(reference logits); compare every class at the sampled anchors.
        "scores": float(np.abs(scores[:, idx] - 1 / (1 + np.exp(-ref["cls_logits"].astype(np.float64)))).max()),
        "cls_logits": float(np.abs(np.asarray(out.cls_logits)[:, idx] - ref["cls_logits"]).max()),
        "reg_distri": float(np.abs(np.asarray(out.reg_distri)[:, idx] - ref["reg_distri"]).max()),
    }
    assert errors["boxes_px"] <= BOX_TOL_PX, errors
    assert errors["scores_max"] <= SCORE_TOL, errors
    assert errors["scores"] <= SCORE_TOL, errors
    assert errors["cls_logits"] <= LOGIT_TOL, errors
    assert errors["reg_distri"] <= LOGIT_TOL, errors
    # The best class agrees wherever the reference's top two classes are not within rounding.
    top2 = np.sort(scores, axis=-1)[..., -2:]
    decided = (top2[..., 1] - top2[..., 0]) > 2 * SCORE_TOL
    assert np.array_equal(scores.argmax(-1)[decided], ref["scores_argmax"][decided])
    np.testing.assert_array_equal(np.asarray(out.anchor_points), ref["anchor_points"])
    np.testing.assert_array_equal(np.asarray(out.stride_tensor), ref["stride_tensor"])
    np.testing.assert_array_equal(np.asarray(out.anchors), ref["anchors"])
    assert np.asarray(out.boxes).shape[1] == ref["num_anchors_list"].sum()
    return errors


@pytest.mark.parametrize("form", sampling.FORMS)
@pytest.mark.parametrize("variant,case_name,case", CASES, ids=IDS)
def test_forward_matches_reference(variant, case_name, case, form):
    ref = reference_outputs(variant, case_name, form)
    detector = detector_for(variant, form)
    assert detector.form == form
    out, features = detector.features(images_for(case, ref))
    assert_outputs_match(out, ref)
    names = sorted(k.split("/", 1)[1] for k in ref if k.startswith("feat/"))
    assert len(names) == 18 and set(names) == set(features)
    for name in names:
        ours = np.asarray(features[name])
        expected = ref[f"feat/{name}"]
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(sampling.sample_feature(ours), expected, rtol=0, atol=1e-5 * scale, err_msg=name)
        np.testing.assert_allclose(ours.astype(np.float64).mean(axis=(0, 1, 2)), ref[f"featmean/{name}"], rtol=0, atol=1e-5 * scale, err_msg=name)


@pytest.mark.parametrize("form", sampling.FUSED_FROM_TRAINING)
@pytest.mark.parametrize("variant,case_name,case", CASES, ids=IDS)
def test_fusion_matches_reference_fusion(variant, case_name, case, form):
    """nasjax's fusion of the training-form weights against super-gradients' fusion of the same."""
    ref = reference_outputs(variant, case_name, f"training_fused_{form}")
    fused = detector_for(variant, "training").fuse(form)
    assert fused.form == form
    out = fused.raw(images_for(case, ref))
    assert_outputs_match(out, ref)


def test_fusion_variables_are_exact():
    """Fusing training → partial → full equals fusing training → full directly, to float rounding."""
    training = detector_for("yolo_nas_m", "training").model
    via_partial = fusion.fuse(fusion.fuse(training, "partial"), "full")
    direct = fusion.fuse(training, "full")
    a = dict(nnx.to_flat_state(nnx.state(via_partial)))
    b = dict(nnx.to_flat_state(nnx.state(direct)))
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_allclose(np.asarray(a[path].get_value()), np.asarray(b[path].get_value()), rtol=2e-6, atol=1e-6, err_msg=str(path))
