"""Post-processing inside the jitted graph: confidence filter, top-k, greedy NMS, max_det.

Static shapes throughout: every image yields `max_det` padded rows plus a count, so the whole of
forward + decode + NMS compiles once per (batch, size) and runs on the device.

The decisions are those of super-gradients' `PPYoloEPostPredictionCallback` (docs/postprocessing.md#algorithm)
and `torchvision.ops.batched_nms` on CPU, computed in float32 exactly as torch computes them:

* multi-label: every (anchor, class) pair with score > conf is a candidate, in flat order
  anchor * C + class (torch `nonzero`); single-label: the first arg-max class per anchor, kept when its
  score >= conf. Thresholds are compared in float32 (torch casts the Python float to float32).
* top-k by score. The candidates are ordered by score, descending, ties by flat index. That equals
  torchvision's stable sort when there are at most `top_k` candidates. With more, super-gradients
  calls `torch.topk`, which is not stable: among exactly equal scores torch may keep or order other
  candidates than we do (only exact float32 ties are affected).
* class-aware NMS as `batched_nms` dispatches it on CPU: for at most 1000 candidates (4000 box
  coordinates) the coordinate trick — every box shifted by class * (max coordinate + 1), in float32,
  so that, with negative coordinates, boxes of different classes can still overlap and suppress each
  other, as they do in torchvision; above that, per-class NMS on the unshifted boxes.
  Class-agnostic: one NMS over the unshifted boxes.
* greedy NMS as torchvision's CPU kernel: areas without +1; IoU = inter / (area_i + area_j - inter)
  in float32; suppress when IoU > threshold with the threshold in float64. The last comparison is
  done in float32 against the largest float32 <= threshold, which gives the same decisions.
* keep the first `max_det` survivors (in score order).

XLA fuses elementwise ops and LLVM then contracts a multiply feeding an add into one fused
multiply-add, which rounds once instead of twice and so changes IoU values in the last bit. Every
product that feeds an addition (box areas, intersections, class offsets) therefore goes through a
data-dependent `jnp.where`, which the compiler cannot see through; tests/nms_test.py checks the
IoU decisions bit for bit against a numpy transcription of the torch kernel.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# torchvision.ops.batched_nms on CPU uses the coordinate trick up to this many box coordinates.
COORDINATE_TRICK_MAX_NUMEL = 4000


class Detections(NamedTuple):
    """Padded detections of a batch: rows at and after `count[b]` are zeros."""

    boxes: jax.Array  # (B, max_det, 4) xyxy, in the coordinates of the boxes given to NMS
    scores: jax.Array  # (B, max_det) float32
    classes: jax.Array  # (B, max_det) int32
    count: jax.Array  # (B,) int32


def iou_compare_threshold(iou_threshold: float) -> np.float32:
    """The float32 t with `x > t` <=> `float64(x) > iou_threshold` for every float32 x: the largest
    float32 not above the threshold (torchvision compares a float32 IoU with a float64 threshold)."""
    t = np.float32(iou_threshold)
    if float(t) > iou_threshold:
        t = np.nextafter(t, np.float32(-np.inf))
    return np.float32(t)


class Candidates(NamedTuple):
    boxes: jax.Array  # (K, 4)
    scores: jax.Array  # (K,)
    classes: jax.Array  # (K,) int32
    count: jax.Array  # () int32: the first `count` rows are candidates, the rest padding


def select_candidates(boxes: jax.Array, scores: jax.Array, conf: jax.Array, top_k: int, multi_label: bool) -> Candidates:
    """One image: (N, 4) boxes, (N, C) scores → at most `top_k` candidates, ordered by score
    (descending), ties by flat index (anchor * C + class in multi-label mode, anchor otherwise)."""
    num_classes = scores.shape[-1]
    if multi_label:
        passed = scores > conf
        flat = jnp.where(passed, scores, -jnp.inf).reshape(-1)
        k = min(top_k, flat.shape[0])
        top_scores, flat_index = jax.lax.top_k(flat, k)  # stable: equal values keep index order
        anchor, cls = flat_index // num_classes, flat_index % num_classes
    else:
        best = jnp.max(scores, axis=-1)
        best_class = jnp.argmax(scores, axis=-1)  # first maximum, as torch.max on CPU
        passed = best >= conf
        k = min(top_k, best.shape[0])
        top_scores, anchor = jax.lax.top_k(jnp.where(passed, best, -jnp.inf), k)
        cls = best_class[anchor]
    count = jnp.minimum(jnp.sum(passed, dtype=jnp.int32), k)
    valid = jnp.arange(k) < count
    return Candidates(
        boxes=jnp.where(valid[:, None], boxes[anchor], 0.0),
        scores=jnp.where(valid, top_scores, 0.0),
        classes=jnp.where(valid, cls, 0).astype(jnp.int32),
        count=count,
    )


def greedy_nms(
    candidates: Candidates, iou_threshold: jax.Array, max_det: int, agnostic: bool
) -> tuple[jax.Array, jax.Array]:
    """(kept, n_kept): indices (max_det,) int32 of the first `max_det` candidates kept, in score order
    (padding repeats index 0), and how many there are. `iou_threshold` is the float32 from
    `iou_compare_threshold`.

    Greedy as torchvision: the best remaining candidate is kept and suppresses the later ones it
    overlaps. The loop visits only kept candidates (it jumps to the next unsuppressed one), so it runs
    at most max_det times.
    """
    boxes, classes, count = candidates.boxes, candidates.classes, candidates.count
    k = boxes.shape[0]
    index = jnp.arange(k)
    valid = index < count
    if agnostic:
        use_offsets = jnp.array(False)
        same_class_only = jnp.array(False)
    else:
        use_offsets = count * 4 <= COORDINATE_TRICK_MAX_NUMEL
        same_class_only = ~use_offsets
    # Coordinate trick: offset = class * (max coordinate over the candidates + 1), all in float32.
    max_coordinate = jnp.max(jnp.where(valid[:, None], boxes, -jnp.inf))
    offsets = jnp.where(valid & use_offsets, classes.astype(boxes.dtype) * (max_coordinate + 1.0), 0.0)
    x1, y1, x2, y2 = (boxes[:, i] + offsets for i in range(4))
    areas = jnp.where(valid, (x2 - x1) * (y2 - y1), 0.0)

    def overlaps(i):
        """Which candidates box i suppresses (torchvision's CPU inner loop, one row)."""
        w = jnp.maximum(0.0, jnp.minimum(x2[i], x2) - jnp.maximum(x1[i], x1))
        h = jnp.maximum(0.0, jnp.minimum(y2[i], y2) - jnp.maximum(y1[i], y1))
        inter = jnp.where(valid, w * h, 0.0)
        iou = inter / (areas[i] + areas - inter)
        hit = (iou > iou_threshold) & (index > i)
        return jnp.where(same_class_only, hit & (classes == classes[i]), hit)

    def next_unsuppressed(suppressed, after):
        free = ~suppressed & (index > after)
        return jnp.where(jnp.any(free), jnp.argmax(free), k).astype(jnp.int32)

    def cond(state):
        i, _, _, n_kept = state
        return (i < k) & (n_kept < max_det)

    def body(state):
        i, suppressed, kept, n_kept = state
        kept = kept.at[n_kept].set(i)
        suppressed = suppressed | overlaps(i)
        return next_unsuppressed(suppressed, i), suppressed, kept, n_kept + 1

    suppressed = ~valid
    first = jnp.where(count > 0, 0, k).astype(jnp.int32)
    state = (first, suppressed, jnp.zeros((max_det,), jnp.int32), jnp.int32(0))
    _, _, kept, n_kept = jax.lax.while_loop(cond, body, state)
    return kept, n_kept


def non_max_suppression(
    boxes: jax.Array,
    scores: jax.Array,
    conf: jax.Array | float,
    iou_threshold: jax.Array | float,
    *,
    top_k: int = 1024,
    max_det: int = 300,
    multi_label: bool = True,
    agnostic: bool = False,
) -> Detections:
    """(B, N, 4) xyxy boxes and (B, N, C) scores → padded `Detections`; jittable.

    conf: scores must be above it (multi-label) or at least it (single-label), compared in float32.
    iou_threshold: the value from `iou_compare_threshold(iou)` (a float is converted here, so pass
    the converted value when calling under jit with a traced threshold).
    """
    if isinstance(iou_threshold, (float, int)):
        iou_threshold = iou_compare_threshold(iou_threshold)
    conf = jnp.asarray(conf, jnp.float32)
    iou_threshold = jnp.asarray(iou_threshold, jnp.float32)
    boxes = boxes.astype(jnp.float32)
    scores = scores.astype(jnp.float32)

    def one_image(image_boxes, image_scores):
        candidates = select_candidates(image_boxes, image_scores, conf, top_k, multi_label)
        kept, n_kept = greedy_nms(candidates, iou_threshold, max_det, agnostic)
        row_valid = jnp.arange(max_det) < n_kept
        return Detections(
            boxes=jnp.where(row_valid[:, None], candidates.boxes[kept], 0.0),
            scores=jnp.where(row_valid, candidates.scores[kept], 0.0),
            classes=jnp.where(row_valid, candidates.classes[kept], 0),
            count=n_kept,
        )

    return jax.vmap(one_image)(boxes, scores)


@dataclasses.dataclass(frozen=True)
class NMSSettings:
    """Every post-processing setting in one value: what predict, validate, the exported runners and an
    exported graph's own NMS share. `conf` and `iou` are traced (changing them does not recompile);
    the rest are static. Defaults are super-gradients' predict(); validation uses `VALIDATION_NMS`."""

    conf: float = 0.25
    iou: float = 0.7
    top_k: int = 1024
    max_det: int = 300
    multi_label: bool = True
    agnostic: bool = False

    def __post_init__(self):
        if not 0 <= self.conf <= 1:
            raise ValueError(f"conf must be in [0, 1], got {self.conf}")
        if not 0 <= self.iou <= 1:
            raise ValueError(f"iou must be in [0, 1], got {self.iou}")
        for name in ("top_k", "max_det"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def static(self) -> dict:
        """The settings that shape the compiled graph (jit static arguments)."""
        return dict(top_k=int(self.top_k), max_det=int(self.max_det), multi_label=bool(self.multi_label),
                    agnostic=bool(self.agnostic))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# super-gradients' / Ultralytics' validation settings: low confidence, IoU 0.7, 300 detections.
VALIDATION_NMS = NMSSettings(conf=0.001, iou=0.7, top_k=1000, max_det=300)
