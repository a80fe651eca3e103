"""nasjax.loss against super-gradients 3.7.1 PPYoloELoss (tests/reference/make_loss_reference.py)."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nasjax.train.loss import (
    LossTargets,
    PPYoloELoss,
    num_anchors_list_from_strides,
    ppyoloe_loss,
    static_assigner_for_epoch,
    targets_from_flat,
)
from nasjax.model.yolo_nas import YoloNASOutput

REFERENCE = np.load(Path(__file__).resolve().parents[1] / "reference" / "loss_reference.npz")
BATCH = REFERENCE["cls_logits"].shape[0]
LEVELS = tuple(int(n) for n in REFERENCE["num_anchors_list"])
TERMS = ("loss_cls", "loss_iou", "loss_dfl", "loss")
MODES = {"static": True, "tal": False}
RTOL = 1e-4


def outputs(cls_logits=None, reg_distri=None) -> YoloNASOutput:
    r = REFERENCE
    cls_logits = jnp.asarray(r["cls_logits"]) if cls_logits is None else cls_logits
    reg_distri = jnp.asarray(r["reg_distri"]) if reg_distri is None else reg_distri
    anchors, points, strides = (jnp.asarray(r[k]) for k in ("anchors", "anchor_points", "stride_tensor"))
    return YoloNASOutput(None, None, cls_logits, reg_distri, anchors, points, strides)


def loss_and_grads(targets: LossTargets, use_static, **kwargs):
    def f(cls_logits, reg_distri):
        return ppyoloe_loss(outputs(cls_logits, reg_distri), targets, use_static_assigner=use_static, **kwargs)

    args = (jnp.asarray(REFERENCE["cls_logits"]), jnp.asarray(REFERENCE["reg_distri"]))
    (loss, terms), grads = jax.value_and_grad(f, argnums=(0, 1), has_aux=True)(*args)
    return loss, terms, grads


def relative_error(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.max(np.abs(want))
    return float(np.max(np.abs(got - want)) / scale) if scale > 0 else float(np.max(np.abs(got)))


@pytest.mark.parametrize("case", ["main", "empty"])
@pytest.mark.parametrize("mode", list(MODES))
def test_parity_with_super_gradients(mode, case):
    targets = targets_from_flat(REFERENCE[f"targets_{case}"], BATCH)
    loss, terms, (grad_cls, grad_reg) = loss_and_grads(targets, MODES[mode])
    want = REFERENCE[f"{mode}_{case}_terms"]  # cls, iou, dfl, total (weighted)
    for name, value in zip(TERMS, want):
        assert relative_error(terms[name], value) <= RTOL, (name, float(terms[name]), value)
    assert float(loss) == float(terms["loss"])
    # Gradients: relative to the largest entry of the reference gradient.
    assert relative_error(grad_cls, REFERENCE[f"{mode}_{case}_grad_cls"]) <= RTOL
    assert relative_error(grad_reg, REFERENCE[f"{mode}_{case}_grad_reg"]) <= RTOL


def test_reference_exercises_the_box_terms():
    for mode in MODES:
        cls_sum, iou_sum, dfl_sum, assigned = REFERENCE[f"{mode}_main_sums"]
        assert iou_sum > 0 and dfl_sum > 0 and assigned > 1  # positives were assigned
    assert len(REFERENCE["targets_main"]) and not len(REFERENCE["targets_empty"])


@pytest.mark.parametrize("mode", list(MODES))
def test_jit_padding_and_traced_assigner_switch(mode):
    """Extra padding rows change nothing; the PP-YOLOE epoch switch works as a traced boolean."""
    targets = targets_from_flat(REFERENCE["targets_main"], BATCH, max_boxes=9)
    end_epoch = 30
    epoch = 3 if MODES[mode] else 30  # ATSS before the end epoch, task-aligned from it on

    @jax.jit
    def f(out, targets, epoch):
        use_static = static_assigner_for_epoch(epoch, end_epoch)
        return ppyoloe_loss(out, targets, use_static_assigner=use_static, num_anchors_list=LEVELS)

    loss, terms = f(outputs(), targets, jnp.asarray(epoch))
    for name, value in zip(TERMS, REFERENCE[f"{mode}_main_terms"]):
        assert relative_error(terms[name], value) <= RTOL, name


@pytest.mark.parametrize("mode", list(MODES))
def test_gradients_finite(mode):
    targets = targets_from_flat(REFERENCE["targets_main"], BATCH)
    # Extreme logits: saturated sigmoids and peaked distributions must not produce inf/NaN.
    rng = np.random.default_rng(0)
    cls = jnp.asarray(rng.standard_normal(REFERENCE["cls_logits"].shape).astype(np.float32) * 40)
    reg = jnp.asarray(rng.standard_normal(REFERENCE["reg_distri"].shape).astype(np.float32) * 40)

    def f(c, g):
        return ppyoloe_loss(outputs(c, g), targets, use_static_assigner=MODES[mode])[0]

    for args in ((cls, reg), (jnp.asarray(REFERENCE["cls_logits"]), jnp.asarray(REFERENCE["reg_distri"]))):
        grads = jax.jit(jax.grad(f, argnums=(0, 1)))(*args)
        assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
        assert float(jnp.max(jnp.abs(grads[0]))) > 0 and float(jnp.max(jnp.abs(grads[1]))) > 0


@pytest.mark.parametrize("mode", list(MODES))
def test_empty_targets(mode):
    """No boxes anywhere: only the classification term (all negatives) remains, divided by 1."""
    for targets in (targets_from_flat(np.zeros((0, 6)), BATCH), targets_from_flat(np.zeros((0, 6)), BATCH, 5)):
        assert targets.boxes.shape[1] >= 1 and not bool(targets.mask.any())
        loss, terms, (grad_cls, grad_reg) = loss_and_grads(targets, MODES[mode])
        assert float(terms["loss_iou"]) == 0.0 and float(terms["loss_dfl"]) == 0.0
        assert relative_error(loss, REFERENCE[f"{mode}_empty_terms"][3]) <= RTOL
        assert not bool(jnp.any(grad_reg)) and bool(jnp.all(jnp.isfinite(grad_cls)))
    # Padding rows are ignored whatever they hold.
    junk = LossTargets(
        jnp.full((BATCH, 2, 4), 50.0).at[..., 2:].set(90.0), jnp.ones((BATCH, 2), jnp.int32), jnp.zeros((BATCH, 2), bool)
    )
    _, terms, _ = loss_and_grads(junk, MODES[mode])
    assert float(terms["loss_iou"]) == 0.0
    assert relative_error(terms["loss"], REFERENCE[f"{mode}_empty_terms"][3]) <= RTOL


def test_targets_from_flat():
    flat = np.array([[2, 5, 10, 20, 4, 6], [0, 1, 50, 50, 10, 10], [2, 3, 30, 30, 8, 8]], np.float32)
    t = targets_from_flat(flat, 3)
    assert t.boxes.shape == (3, 2, 4) and t.labels.shape == (3, 2) and t.mask.dtype == jnp.bool_
    np.testing.assert_allclose(t.boxes[2, 0], [8, 17, 12, 23])
    np.testing.assert_allclose(t.boxes[0, 0], [45, 45, 55, 55])
    assert t.labels[2].tolist() == [5, 3] and t.labels[0, 0] == 1
    assert t.mask.tolist() == [[True, False], [False, False], [True, True]]
    assert targets_from_flat(flat, 3, max_boxes=4).boxes.shape == (3, 4, 4)
    with pytest.raises(ValueError):
        targets_from_flat(flat, 3, max_boxes=1)


def test_num_anchors_list_and_wrapper():
    assert num_anchors_list_from_strides(REFERENCE["stride_tensor"]) == LEVELS
    targets = targets_from_flat(REFERENCE["targets_main"], BATCH)
    loss, terms = PPYoloELoss(use_static_assigner=True)(outputs(), targets)  # levels read off the strides
    assert relative_error(loss, REFERENCE["static_main_terms"][3]) <= RTOL
    loss, _ = PPYoloELoss()(outputs(), targets)  # the YOLO-NAS recipe: task-aligned
    assert relative_error(loss, REFERENCE["tal_main_terms"][3]) <= RTOL


def test_num_anchors_list_traced():
    @jax.jit
    def f(strides):
        assert num_anchors_list_from_strides(strides) == LEVELS
        return strides

    f(jnp.asarray(REFERENCE["stride_tensor"]))
