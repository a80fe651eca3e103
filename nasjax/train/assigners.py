"""Label assigners of super-gradients' PPYoloELoss (3.7.1, `training/losses/ppyolo_loss.py`), in JAX.

Both work on padded targets with static shapes (jit-able, no data-dependent branches):

- `gt_boxes`  (B, M, 4) float, xyxy in input pixels;
- `gt_labels` (B, M)    int class indices;
- `gt_mask`   (B, M)    bool/float, true for a real box (padding rows may hold anything).

Both return `(assigned_labels (B, L) int32, assigned_boxes (B, L, 4), assigned_scores (B, L, C))` where
a background anchor has label `num_classes` (super-gradients' `bg_index`) and an all-zero score row,
exactly as the torch code does. Where super-gradients branches on data (`if mask_positive_sum.max() > 1`)
the JAX code applies the branch unconditionally: it is a no-op when the condition is false.
Both are meant to be called on `jax.lax.stop_gradient` inputs (super-gradients runs them under
`torch.no_grad`).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def _pairwise_iou(gt: jax.Array, boxes: jax.Array, eps: float) -> jax.Array:
    """IoU of (B, M, 4) against (B, L, 4) or (L, 4) boxes -> (B, M, L). `(x).clip(0)` areas as in SG."""
    if boxes.ndim == 2:
        boxes = boxes[None]
    g = gt[:, :, None, :]
    p = boxes[:, None, :, :]
    x1y1 = jnp.maximum(g[..., 0:2], p[..., 0:2])
    x2y2 = jnp.minimum(g[..., 2:4], p[..., 2:4])
    overlap = jnp.prod(jnp.clip(x2y2 - x1y1, 0), axis=-1)
    area_g = jnp.prod(jnp.clip(g[..., 2:4] - g[..., 0:2], 0), axis=-1)
    area_p = jnp.prod(jnp.clip(p[..., 2:4] - p[..., 0:2], 0), axis=-1)
    return overlap / (area_g + area_p - overlap + eps)


def _points_inside(points: jax.Array, gt: jax.Array, eps: float = 1e-9) -> jax.Array:
    """(L, 2) points strictly inside (B, M, 4) boxes -> (B, M, L) float."""
    x, y = points[:, 0], points[:, 1]
    g = gt[:, :, None, :]
    delta = jnp.stack([x - g[..., 0], y - g[..., 1], g[..., 2] - x, g[..., 3] - y], axis=-1)
    return (jnp.min(delta, axis=-1) > eps).astype(gt.dtype)


def _resolve_multiple(mask_positive: jax.Array, ious: jax.Array) -> tuple[jax.Array, jax.Array]:
    """An anchor claimed by several boxes goes to the box of highest IoU (`compute_max_iou_anchor`)."""
    num_boxes = ious.shape[-2]
    multiple = (jnp.sum(mask_positive, axis=-2) > 1)[:, None, :]
    is_max_iou = jax.nn.one_hot(jnp.argmax(ious, axis=-2), num_boxes, dtype=ious.dtype)  # (B, L, M)
    mask_positive = jnp.where(multiple, jnp.swapaxes(is_max_iou, 1, 2), mask_positive)
    return mask_positive, jnp.sum(mask_positive, axis=-2)


def _gather_targets(mask_positive, mask_positive_sum, gt_labels, gt_boxes, num_classes):
    assigned_gt_index = jnp.argmax(mask_positive, axis=-2)  # (B, L), first max like torch
    labels = jnp.take_along_axis(gt_labels.astype(jnp.int32), assigned_gt_index, axis=1)
    labels = jnp.where(mask_positive_sum > 0, labels, num_classes)
    boxes = jnp.take_along_axis(gt_boxes, assigned_gt_index[..., None], axis=1)
    scores = jax.nn.one_hot(labels, num_classes + 1, dtype=gt_boxes.dtype)[..., :num_classes]
    return labels, boxes, scores


def atss_assign(
    anchor_boxes: jax.Array,
    num_anchors_list: Sequence[int],
    gt_labels: jax.Array,
    gt_boxes: jax.Array,
    gt_mask: jax.Array,
    num_classes: int,
    pred_boxes: jax.Array | None = None,
    topk: int = 9,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """super-gradients' `ATSSAssigner` (topk 9, no forced gt matching), the "static" assigner.

    anchor_boxes (L, 4) xyxy pixels; num_anchors_list the anchors per level (static ints); pred_boxes
    (B, L, 4) xyxy pixels: when given, the scores of positives are their IoU with the assigned box.
    """
    batch, num_boxes = gt_boxes.shape[:2]
    num_anchors = anchor_boxes.shape[0]
    pad = gt_mask.astype(gt_boxes.dtype)[..., None]  # (B, M, 1)
    if num_boxes == 0:
        return _empty(batch, num_anchors, num_classes, gt_boxes.dtype)

    ious = _pairwise_iou(gt_boxes, anchor_boxes, eps=1e-10)  # (B, M, L)
    gt_centers = (gt_boxes[..., 0:2] + gt_boxes[..., 2:4]) / 2
    anchor_centers = (anchor_boxes[:, 0:2] + anchor_boxes[:, 2:4]) / 2
    distances = jnp.sqrt(jnp.sum((gt_centers[:, :, None, :] - anchor_centers[None, None]) ** 2, axis=-1))

    in_topk_levels, idx_levels, start = [], [], 0
    for count in num_anchors_list:
        # A level with fewer than topk anchors (inputs under 96 px) takes all of them; the reference's
        # torch.topk raises there instead.
        _, idx = jax.lax.top_k(-distances[..., start : start + count], min(topk, count))  # k smallest distances
        in_topk_levels.append(jnp.sum(jax.nn.one_hot(idx, count, dtype=gt_boxes.dtype), axis=-2) * pad)
        idx_levels.append(idx + start)
        start += count
    is_in_topk = jnp.concatenate(in_topk_levels, axis=-1)
    topk_idxs = jnp.concatenate(idx_levels, axis=-1)

    iou_candidates = ious * is_in_topk
    candidates = jnp.take_along_axis(iou_candidates, topk_idxs, axis=-1)
    threshold = jnp.mean(candidates, axis=-1, keepdims=True) + jnp.std(candidates, axis=-1, keepdims=True, ddof=1)
    is_in_topk = jnp.where(iou_candidates > threshold, is_in_topk, 0.0)

    mask_positive = is_in_topk * _points_inside(anchor_centers, gt_boxes) * pad
    mask_positive, mask_positive_sum = _resolve_multiple(mask_positive, ious)
    labels, boxes, scores = _gather_targets(mask_positive, mask_positive_sum, gt_labels, gt_boxes, num_classes)
    if pred_boxes is not None:
        pred_ious = _pairwise_iou(gt_boxes, pred_boxes, eps=1e-9) * mask_positive
        scores = scores * jnp.max(pred_ious, axis=-2)[..., None]
    return labels, boxes, scores


def task_aligned_assign(
    pred_scores: jax.Array,
    pred_boxes: jax.Array,
    anchor_points: jax.Array,
    gt_labels: jax.Array,
    gt_boxes: jax.Array,
    gt_mask: jax.Array,
    num_classes: int,
    topk: int = 13,
    alpha: float = 1.0,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """super-gradients' `TaskAlignedAssigner` (TOOD; topk 13, alpha 1, beta 6), the YOLO-NAS assigner.

    pred_scores (B, L, C) probabilities (sigmoid of the logits); pred_boxes (B, L, 4) xyxy pixels;
    anchor_points (L, 2) pixels.
    """
    batch, num_anchors, _ = pred_scores.shape
    num_boxes = gt_boxes.shape[1]
    pad = gt_mask.astype(gt_boxes.dtype)[..., None]
    if num_boxes == 0:
        return _empty(batch, num_anchors, num_classes, gt_boxes.dtype)

    ious = _pairwise_iou(gt_boxes, pred_boxes, eps=1e-9)  # (B, M, L)
    box_cls_scores = jnp.take_along_axis(
        jnp.swapaxes(pred_scores, 1, 2), gt_labels.astype(jnp.int32)[..., None], axis=1
    )  # (B, M, L)
    alignment = box_cls_scores**alpha * ious**beta

    is_in_gts = _points_inside(anchor_points, gt_boxes)
    _, idx = jax.lax.top_k(alignment * is_in_gts, topk)
    is_in_topk = jnp.sum(jax.nn.one_hot(idx, num_anchors, dtype=gt_boxes.dtype), axis=-2) * pad

    mask_positive = is_in_topk * is_in_gts * pad
    mask_positive, mask_positive_sum = _resolve_multiple(mask_positive, ious)
    labels, boxes, scores = _gather_targets(mask_positive, mask_positive_sum, gt_labels, gt_boxes, num_classes)

    alignment = alignment * mask_positive
    max_metrics = jnp.max(alignment, axis=-1, keepdims=True)
    max_ious = jnp.max(ious * mask_positive, axis=-1, keepdims=True)
    alignment = jnp.max(alignment / (max_metrics + eps) * max_ious, axis=-2)[..., None]
    return labels, boxes, scores * alignment


def _empty(batch, num_anchors, num_classes, dtype):
    return (
        jnp.full((batch, num_anchors), num_classes, jnp.int32),
        jnp.zeros((batch, num_anchors, 4), dtype),
        jnp.zeros((batch, num_anchors, num_classes), dtype),
    )
