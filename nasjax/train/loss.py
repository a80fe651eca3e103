"""The YOLO-NAS training loss: super-gradients' `PPYoloELoss` (3.7.1) in JAX, static shapes, jit-able.

    loss = w_cls * varifocal(cls) / S + w_iou * GIoU(boxes) / S + w_dfl * DFL(distributions) / S

where S = max(1, sum of the assigned scores), the box terms are summed over positive anchors and
weighted by each anchor's assigned score, and the anchors are assigned to ground-truth boxes either by
ATSS (`use_static_assigner=True`, super-gradients' default and PP-YOLOE's warm-up) or by the
task-aligned assigner (`False`, what the YOLO-NAS recipe `coco2017_yolo_nas_train_params.yaml` sets).
Weights are the super-gradients defaults the recipe keeps: classification 1.0, IoU 2.5, DFL 0.5; the
number of DFL bins (reg_max + 1 = 17) is inferred from `reg_distri` as super-gradients 3.7 does.

Targets (`LossTargets`) are padded to a fixed number of boxes per image, so that shapes are static:

- `boxes`  (B, M, 4) float32, xyxy in input pixels (the same pixel space as the anchors);
- `labels` (B, M)    int32 class indices in [0, num_classes);
- `mask`   (B, M)    bool, true for a real box; padding rows are ignored whatever they hold.

super-gradients' loss takes targets as (K, 6) rows `[image_index, class, cx, cy, w, h]` in pixels;
`targets_from_flat` converts that (numpy, outside jit) into `LossTargets`, keeping the order of the
boxes within each image (it matters for ties) and, like super-gradients, treating a box whose xyxy
coordinates sum to <= 0 as padding.

PP-YOLOE's schedule (ATSS for the first `static_assigner_end_epoch` epochs, then task-aligned; the
`PPYoloETrainingStageSwitchCallback`) is `use_static_assigner=static_assigner_for_epoch(epoch, end)`,
which may be a traced boolean: the loss then switches with `lax.cond`. The YOLO-NAS recipe does not use
it (task-aligned from the first epoch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from nasjax.data.targets import LossTargets
from nasjax.train.assigners import atss_assign, task_aligned_assign


@dataclass(frozen=True)
class PPYoloELossConfig:
    use_static_assigner: bool = False  # the YOLO-NAS recipe; super-gradients' own default is True
    use_varifocal_loss: bool = True
    classification_loss_weight: float = 1.0
    iou_loss_weight: float = 2.5
    dfl_loss_weight: float = 0.5
    atss_topk: int = 9
    tal_topk: int = 13
    tal_alpha: float = 1.0
    tal_beta: float = 6.0


def targets_from_flat(flat, batch_size: int, max_boxes: int | None = None) -> LossTargets:
    """super-gradients' (K, 6) `[image_index, class, cx, cy, w, h]` pixel rows -> padded `LossTargets`.

    max_boxes defaults to the largest count in the batch (at least 1, so shapes never vanish); pass a
    fixed value to keep jit from recompiling per batch. Raises if an image has more boxes than that.
    """
    flat = np.asarray(flat, np.float32).reshape(-1, 6)
    image_index = flat[:, 0].astype(np.int64)
    counts = np.bincount(image_index, minlength=batch_size)[:batch_size] if len(flat) else np.zeros(batch_size, int)
    needed = int(counts.max()) if len(counts) else 0
    if max_boxes is None:
        max_boxes = max(needed, 1)
    elif needed > max_boxes:
        raise ValueError(f"an image has {needed} boxes, more than max_boxes={max_boxes}")
    cx, cy, w, h = flat[:, 2], flat[:, 3], flat[:, 4], flat[:, 5]
    x1, y1 = cx - np.float32(0.5) * w, cy - np.float32(0.5) * h
    xyxy = np.stack([x1, y1, x1 + w, y1 + h], axis=-1)
    boxes = np.zeros((batch_size, max_boxes, 4), np.float32)
    labels = np.zeros((batch_size, max_boxes), np.int32)
    mask = np.zeros((batch_size, max_boxes), bool)
    for i in range(batch_size):
        rows = np.flatnonzero(image_index == i)
        boxes[i, : len(rows)] = xyxy[rows]
        labels[i, : len(rows)] = flat[rows, 1].astype(np.int32)
        mask[i, : len(rows)] = xyxy[rows].sum(axis=-1) > 0
    return LossTargets(jnp.asarray(boxes), jnp.asarray(labels), jnp.asarray(mask))


def static_assigner_for_epoch(epoch, static_assigner_end_epoch: int):
    """PP-YOLOE's switch: ATSS before `static_assigner_end_epoch`, task-aligned from it on."""
    return jnp.asarray(epoch) < static_assigner_end_epoch


def num_anchors_list_from_strides(stride_tensor) -> tuple[int, ...]:
    """Anchors per level, for ATSS.

    From a concrete (N, 1) stride tensor: the lengths of its runs. From a traced one (the model ran
    inside the same jit): YOLO-NAS's strides 8/16/32 on an input whose sides are multiples of 32 (what
    the model requires) give levels of N * 16/21, N * 4/21 and N / 21 anchors; pass num_anchors_list
    explicitly for anything else.
    """
    try:
        strides = np.asarray(stride_tensor).reshape(-1)
    except Exception:  # a tracer
        n = int(stride_tensor.shape[0])
        if n % 21:
            raise ValueError(f"{n} anchors do not split as strides 8/16/32; pass num_anchors_list") from None
        return (n // 21 * 16, n // 21 * 4, n // 21)
    boundaries = np.flatnonzero(np.diff(strides)) + 1
    return tuple(int(n) for n in np.diff(np.concatenate([[0], boundaries, [len(strides)]])))


def _decode(anchor_points_s, reg_distri):
    b, n, _ = reg_distri.shape
    logits = reg_distri.reshape(b, n, 4, -1)
    reg_max = logits.shape[-1] - 1
    proj = jnp.arange(reg_max + 1, dtype=logits.dtype)
    dist = jnp.sum(jax.nn.softmax(logits, axis=-1) * proj, axis=-1)
    boxes = jnp.concatenate([anchor_points_s - dist[..., :2], anchor_points_s + dist[..., 2:]], axis=-1)
    return boxes, logits, reg_max


def _bce_with_logits(x, z):
    return jnp.maximum(x, 0) - x * z + jnp.log1p(jnp.exp(-jnp.abs(x)))


def _varifocal(logits, gt_score, label, alpha=0.75, gamma=2.0):
    weight = alpha * jax.nn.sigmoid(logits) ** gamma * (1 - label) + gt_score * label
    return jnp.sum(weight * _bce_with_logits(logits, gt_score))


def _focal(logits, label, alpha, gamma=2.0):
    weight = (jax.nn.sigmoid(logits) - label) ** gamma
    weight = jnp.where(alpha > 0, weight * (alpha * label + (1 - alpha) * (1 - label)), weight)
    return jnp.sum(weight * _bce_with_logits(logits, label))


def _giou_loss(pred, target, eps=1e-10):
    x1, y1, x2, y2 = jnp.moveaxis(pred, -1, 0)
    x1g, y1g, x2g, y2g = jnp.moveaxis(target, -1, 0)
    overlap = jnp.clip(jnp.minimum(x2, x2g) - jnp.maximum(x1, x1g), 0) * jnp.clip(
        jnp.minimum(y2, y2g) - jnp.maximum(y1, y1g), 0
    )
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - overlap + eps
    area_c = (jnp.maximum(x2, x2g) - jnp.minimum(x1, x1g)) * (jnp.maximum(y2, y2g) - jnp.minimum(y1, y1g)) + eps
    return 1 - (overlap / union - (area_c - union) / area_c)


def _dfl(logits, target):
    """logits (..., 4, reg_max + 1), target (..., 4) in bins -> (...) mean over the four sides."""
    left = jnp.floor(target)
    weight_left = left + 1 - target
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    left_i = left.astype(jnp.int32)[..., None]
    lp_left = jnp.take_along_axis(log_probs, left_i, axis=-1)[..., 0]
    lp_right = jnp.take_along_axis(log_probs, left_i + 1, axis=-1)[..., 0]
    return jnp.mean(-lp_left * weight_left - lp_right * (1 - weight_left), axis=-1)


def ppyoloe_loss(
    outputs,
    targets: LossTargets,
    config: PPYoloELossConfig = PPYoloELossConfig(),
    *,
    use_static_assigner=None,
    num_anchors_list: Sequence[int] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """super-gradients' `PPYoloELoss.forward` (batched assignment).

    outputs: a `YoloNASOutput` (or anything with cls_logits (B, N, C), reg_distri (B, N, 4*(reg_max+1)),
    anchors (N, 4), anchor_points (N, 2), stride_tensor (N, 1)). num_anchors_list (anchors per level,
    needed by ATSS) is read off a concrete stride_tensor when not given. use_static_assigner overrides
    the config; it may be a traced boolean (see `static_assigner_for_epoch`).
    Returns (loss, {"loss_cls", "loss_iou", "loss_dfl", "loss"}) - super-gradients' component names,
    the three terms already weighted.
    """
    cls_logits, reg_distri = outputs.cls_logits, outputs.reg_distri
    anchors, anchor_points, stride_tensor = outputs.anchors, outputs.anchor_points, outputs.stride_tensor
    num_classes = cls_logits.shape[-1]
    if use_static_assigner is None:
        use_static_assigner = config.use_static_assigner

    anchor_points_s = anchor_points / stride_tensor
    pred_boxes, dist_logits, reg_max = _decode(anchor_points_s, reg_distri)
    pred_boxes_px = jax.lax.stop_gradient(pred_boxes) * stride_tensor
    gt_boxes = targets.boxes.astype(cls_logits.dtype)

    def static(_):
        levels = num_anchors_list if num_anchors_list is not None else num_anchors_list_from_strides(stride_tensor)
        return atss_assign(
            anchors, levels, targets.labels, gt_boxes, targets.mask, num_classes, pred_boxes_px, config.atss_topk
        )

    def aligned(_):
        return task_aligned_assign(
            jax.nn.sigmoid(jax.lax.stop_gradient(cls_logits)), pred_boxes_px, anchor_points,
            targets.labels, gt_boxes, targets.mask, num_classes, config.tal_topk, config.tal_alpha, config.tal_beta,
        )  # fmt: skip

    if isinstance(use_static_assigner, (bool, np.bool_)):
        labels, assigned_boxes, assigned_scores = (static if use_static_assigner else aligned)(None)
        alpha_l = 0.25 if use_static_assigner else -1.0
    else:
        labels, assigned_boxes, assigned_scores = jax.lax.cond(use_static_assigner, static, aligned, None)
        alpha_l = jnp.where(use_static_assigner, 0.25, -1.0)
    assigned_scores = jax.lax.stop_gradient(assigned_scores)
    assigned_boxes = jax.lax.stop_gradient(assigned_boxes) / stride_tensor

    if config.use_varifocal_loss:
        one_hot = jax.nn.one_hot(labels, num_classes + 1, dtype=cls_logits.dtype)[..., :num_classes]
        cls_sum = _varifocal(cls_logits, assigned_scores, one_hot)
    else:
        cls_sum = _focal(cls_logits, assigned_scores, alpha_l)

    positive = labels != num_classes  # (B, N)
    weight = jnp.where(positive, jnp.sum(assigned_scores, axis=-1), 0.0)
    # Background anchors get a harmless unit box so that nothing unmasked can produce inf/NaN gradients.
    safe_boxes = jnp.where(positive[..., None], assigned_boxes, jnp.asarray([0.0, 0.0, 1.0, 1.0], cls_logits.dtype))
    iou_sum = jnp.sum(jnp.where(positive, _giou_loss(pred_boxes, safe_boxes) * weight, 0.0))
    ltrb = jnp.concatenate([anchor_points_s - safe_boxes[..., :2], safe_boxes[..., 2:] - anchor_points_s], axis=-1)
    ltrb = jnp.clip(ltrb, 0, reg_max - 0.01)
    dfl_sum = jnp.sum(jnp.where(positive, _dfl(dist_logits, ltrb) * weight, 0.0))

    divisor = jnp.maximum(jnp.sum(assigned_scores), 1.0)
    loss_cls = config.classification_loss_weight * cls_sum / divisor
    loss_iou = config.iou_loss_weight * iou_sum / divisor
    loss_dfl = config.dfl_loss_weight * dfl_sum / divisor
    loss = loss_cls + loss_iou + loss_dfl
    return loss, {"loss_cls": loss_cls, "loss_iou": loss_iou, "loss_dfl": loss_dfl, "loss": loss}


class PPYoloELoss:
    """Callable wrapper: `PPYoloELoss(use_static_assigner=False)(outputs, targets)` -> (loss, terms)."""

    def __init__(self, **config):
        self.config = PPYoloELossConfig(**config)

    def __call__(self, outputs, targets: LossTargets, **kwargs):
        return ppyoloe_loss(outputs, targets, self.config, **kwargs)
