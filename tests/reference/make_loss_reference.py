"""Reference values of super-gradients 3.7.1 `PPYoloELoss` for tests/loss_test.py.

Runs only in the separate super-gradients environment (see /work/shared/oracle/README.md):

    CRASH_HANDLER=FALSE SUPER_GRADIENTS_LOG_DIR=$(mktemp -d) \
        /work/oracle_venv/bin/python tests/reference/make_loss_reference.py

and writes tests/reference/loss_reference.npz (committed, a few hundred KB).

Seeded predictions (random class logits and DFL logits, batch 3, 10 classes) on the anchor grid of a
96x128 input (strides 8/16/32: 12x16 + 6x8 + 3x4 = 252 anchors, from super-gradients' own
`generate_anchors_for_grid_cell`) and seeded targets in super-gradients' flat format
(rows [image_index, class, cx, cy, w, h], pixels): image 0 has four boxes, image 1 none, image 2
three boxes of which two overlap heavily (so anchors claimed by several boxes get resolved). Box
coordinates are random floats so that no centre distance or alignment metric ties (torch.topk and
lax.top_k break ties differently).

For each assigner (`use_static_assigner` True: ATSS, False: task-aligned, the YOLO-NAS recipe) and for
two target sets ("main" above and "empty": no boxes at all) it saves the loss, its three weighted
terms, the unweighted sums and the assigned-scores sum (`_forward_batched`), and the gradients of
the loss with respect to the class logits and the DFL logits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import oracle_env  # noqa: F401  (imports tv_cpu_shim before torch/torchvision)
import torch
from super_gradients.training.losses.ppyolo_loss import PPYoloELoss
from super_gradients.training.models.detection_models.pp_yolo_e.pp_yolo_head import generate_anchors_for_grid_cell

OUT = Path(__file__).resolve().parent / "loss_reference.npz"
SEED = 20261121
BATCH, NUM_CLASSES, REG_MAX = 3, 10, 16
HEIGHT, WIDTH = 96, 128
STRIDES = (8, 16, 32)


def make_targets(rng: np.random.Generator) -> np.ndarray:
    rows = []
    for image, count in ((0, 4), (2, 1)):
        for _ in range(count):
            w, h = rng.uniform(12.0, 70.0), rng.uniform(12.0, 60.0)
            cx, cy = rng.uniform(w / 2 + 1, WIDTH - w / 2 - 1), rng.uniform(h / 2 + 1, HEIGHT - h / 2 - 1)
            rows.append([image, rng.integers(NUM_CLASSES), cx, cy, w, h])
    # Two heavily overlapping boxes in image 2, different classes.
    cx, cy, w, h = rng.uniform(50, 70), rng.uniform(40, 55), rng.uniform(40, 55), rng.uniform(35, 45)
    rows.append([2, 3, cx, cy, w, h])
    rows.append([2, 7, cx + rng.uniform(2, 6), cy - rng.uniform(2, 6), w * rng.uniform(0.8, 0.95), h * rng.uniform(1.0, 1.15)])
    return np.asarray(rows, dtype=np.float32)


def main() -> None:
    rng = np.random.default_rng(SEED)
    feats = [torch.zeros(BATCH, 1, HEIGHT // s, WIDTH // s) for s in STRIDES]
    anchors, anchor_points, num_anchors_list, stride_tensor = generate_anchors_for_grid_cell(feats, STRIDES, 5.0, 0.5)
    n = int(sum(num_anchors_list))
    cls_logits = (rng.standard_normal((BATCH, n, NUM_CLASSES)) * 1.5 - 2.0).astype(np.float32)
    reg_distri = (rng.standard_normal((BATCH, n, 4 * (REG_MAX + 1))) * 2.0).astype(np.float32)
    targets = {"main": make_targets(rng), "empty": np.zeros((0, 6), np.float32)}

    out = {
        "cls_logits": cls_logits,
        "reg_distri": reg_distri,
        "anchors": anchors.numpy(),
        "anchor_points": anchor_points.numpy(),
        "stride_tensor": stride_tensor.numpy(),
        "num_anchors_list": np.asarray(num_anchors_list, np.int64),
        "targets_main": targets["main"],
        "targets_empty": targets["empty"],
    }
    for mode, static in (("static", True), ("tal", False)):
        criterion = PPYoloELoss(num_classes=NUM_CLASSES, use_static_assigner=static)
        for case, flat in targets.items():
            logits = torch.tensor(cls_logits, requires_grad=True)
            distri = torch.tensor(reg_distri, requires_grad=True)
            predictions = (logits, distri, anchors, anchor_points, num_anchors_list, stride_tensor)
            loss, terms = criterion(predictions, torch.tensor(flat))
            loss.backward()
            with torch.no_grad():
                sums = criterion._forward_batched(predictions, torch.tensor(flat))
            key = f"{mode}_{case}"
            out[f"{key}_terms"] = terms.numpy().astype(np.float64)  # cls, iou, dfl, total
            out[f"{key}_sums"] = np.asarray([float(s) for s in sums], np.float64)  # cls, iou, dfl, assigned
            out[f"{key}_grad_cls"] = logits.grad.numpy()
            out[f"{key}_grad_reg"] = distri.grad.numpy()
            print(key, out[f"{key}_terms"], out[f"{key}_sums"])
    np.savez_compressed(OUT, **out)
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
