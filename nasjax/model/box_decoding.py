"""Anchor grids and DFL box decoding (docs/decoding.md), shared by the model and export."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class AnchorGrid(NamedTuple):
    anchors: jax.Array  # (N, 4) xyxy pixel boxes of side grid_cell_scale * stride
    anchor_points: jax.Array  # (N, 2) cell centres in pixels, (x, y)
    stride_tensor: jax.Array  # (N, 1)


def make_anchors(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    grid_cell_offset: float = 0.5,
    grid_cell_scale: float = 5.0,
) -> AnchorGrid:
    """Anchors level by level, row-major within a level (y outer, x inner).

    Computed with numpy at trace time: they depend only on static shapes, so they become constants
    of the compiled graph.
    """
    anchors, points, stride_list = [], [], []
    for (h, w), stride in zip(sizes, strides):
        shift_y, shift_x = np.meshgrid(
            (np.arange(h, dtype=np.float32) + grid_cell_offset) * stride,
            (np.arange(w, dtype=np.float32) + grid_cell_offset) * stride,
            indexing="ij",
        )
        half = grid_cell_scale * stride * 0.5
        points.append(np.stack([shift_x, shift_y], axis=-1).reshape(-1, 2))
        anchors.append(np.stack([shift_x - half, shift_y - half, shift_x + half, shift_y + half], -1).reshape(-1, 4))
        stride_list.append(np.full((h * w, 1), stride, dtype=np.float32))
    return AnchorGrid(
        jnp.asarray(np.concatenate(anchors)),
        jnp.asarray(np.concatenate(points)),
        jnp.asarray(np.concatenate(stride_list)),
    )


def num_anchors(height: int, width: int, strides: Sequence[int] = (8, 16, 32)) -> int:
    """N for an input of this size (8400 at 640x640)."""
    return sum((height // s) * (width // s) for s in strides)


def dfl_distances(reg_distri: jax.Array, reg_max: int) -> jax.Array:
    """(B, N, 4*(reg_max+1)) DFL logits → (B, N, 4) distances (l, t, r, b) in grid units."""
    logits = reg_distri.reshape(*reg_distri.shape[:-1], 4, reg_max + 1)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return probs @ jnp.arange(reg_max + 1, dtype=jnp.float32)


def decode_dfl_boxes(
    reg_distri: jax.Array, anchor_points: jax.Array, stride_tensor: jax.Array, reg_max: int
) -> jax.Array:
    """DFL logits → (B, N, 4) xyxy boxes in input pixels, as super-gradients' `batch_distance2bbox`:
    in grid units around the cell centre, then multiplied by the stride. Not clipped."""
    distances = dfl_distances(reg_distri, reg_max)
    points = anchor_points / stride_tensor
    lt, rb = distances[..., :2], distances[..., 2:]
    return jnp.concatenate([points - lt, rb + points], axis=-1) * stride_tensor
