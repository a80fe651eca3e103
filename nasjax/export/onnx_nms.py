"""NMS at the end of an ONNX graph, in standard ONNX operators (docs/export.md#onnx-nms).

jax2onnx writes nasjax's greedy NMS loop (a `while_loop` over scatter updates) as a Loop that ONNX
Runtime runs slowly and that TensorRT and OpenVINO do not turn into their NMS kernels. So the ONNX
export ends in ONNX's own `NonMaxSuppression`, which every runtime implements natively, with the same
decisions as nasjax.model.nms (ties aside), for any batch size:

1. candidates as `select_candidates`: multi-label, every (anchor, class) score > conf, flattened as
   anchor * C + class; single-label, each anchor's first best class when its score >= conf. `TopK`
   keeps the `top_k` best; ONNX's TopK breaks ties by the lower index, as `lax.top_k` does.
2. `NonMaxSuppression` over the candidates: class-aware by giving each candidate a score only in its
   own class's row (so only boxes of one class suppress each other), class-agnostic with one row.
   The IoU threshold is the float32 from `iou_compare_threshold`; runtimes suppress when IoU > it.
3. the kept candidates are marked (`ScatterND`) and the `max_det` best taken in score order (`TopK`
   again): greedy NMS keeps candidates in score order, so the best max_det of all those kept are the
   first max_det nasjax keeps.

Outputs as the SavedModel's: `detection_boxes` (B, max_det, 4), `detection_scores` (B, max_det),
`detection_classes` (B, max_det) int32, `num_detections` (B,) int32; rows after the count are zeros.

Only rounding can differ: torchvision (and nasjax) shift boxes by class * (max coordinate + 1) when
there are at most 1000 candidates, and NonMaxSuppression computes IoU on the unshifted boxes, which
may change an IoU in the last bit; and runtimes may order exactly equal scores differently.
"""
from __future__ import annotations

import numpy as np

from nasjax.export.metadata import DECODED_OUTPUTS, DETECTION_OUTPUTS
from nasjax.model.nms import NMSSettings, iou_compare_threshold


def append_nms(model, settings: NMSSettings, num_anchors: int, num_classes: int):
    """Add the NMS nodes to `model` (an onnx.ModelProto with outputs `boxes` (B, N, 4) and `scores`
    (B, N, C) float32); the graph's outputs become boxes, scores and the four detection_* outputs."""
    from onnx import TensorProto, helper, numpy_helper

    boxes, scores = DECODED_OUTPUTS
    nodes, constants = [], []
    counter = iter(range(10**6))

    def const(value, dtype) -> str:
        name = f"nms/const_{next(counter)}"
        constants.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def node(op: str, inputs: list[str], outputs: int | list[str] = 1, **attributes) -> list[str] | str:
        index = next(counter)
        names = [f"nms/{op.lower()}_{index}_{i}" for i in range(outputs)] if isinstance(outputs, int) else outputs
        nodes.append(helper.make_node(op, inputs, names, name=f"nms/{op}_{index}", **attributes))
        return names[0] if len(names) == 1 else names

    neg_inf = const(-np.inf, np.float32)
    minus_one = const(-1.0, np.float32)
    zero_f = const(0.0, np.float32)
    conf = const(settings.conf, np.float32)
    if settings.multi_label:
        passed = node("Greater", [scores, conf])
        masked = node("Where", [passed, scores, neg_inf])
        flat = node("Reshape", [masked, const([0, -1], np.int64)])
        k = min(settings.top_k, num_anchors * num_classes)
        top_scores, flat_index = node("TopK", [flat, const([k], np.int64)], 2, axis=-1, largest=1, sorted=1)
        c = const(num_classes, np.int64)
        anchor, cls = node("Div", [flat_index, c]), node("Mod", [flat_index, c])
    else:
        best = node("ReduceMax", [scores], axes=[-1], keepdims=0)  # axes an attribute before opset 18
        best_class = node("ArgMax", [scores], axis=-1, keepdims=0, select_last_index=0)
        passed = node("GreaterOrEqual", [best, conf])
        masked = node("Where", [passed, best, neg_inf])
        k = min(settings.top_k, num_anchors)
        top_scores, anchor = node("TopK", [masked, const([k], np.int64)], 2, axis=-1, largest=1, sorted=1)
        cls = node("GatherElements", [best_class, anchor], axis=1)
    valid = node("Greater", [top_scores, neg_inf])  # (B, K): the first min(#passed, K) rows
    candidate_boxes = node("GatherND", [boxes, node("Unsqueeze", [anchor, const([2], np.int64)])], batch_dims=1)

    # NonMaxSuppression's scores (B, classes, K): -1 (below its score threshold) where not a candidate.
    row_scores = node("Unsqueeze", [node("Where", [valid, top_scores, minus_one]), const([1], np.int64)])
    if settings.agnostic:
        nms_scores = row_scores
    else:
        own_class = node("Equal", [node("Unsqueeze", [cls, const([1], np.int64)]),
                                   const(np.arange(num_classes).reshape(1, num_classes, 1), np.int64)])
        nms_scores = node("Where", [own_class, row_scores, minus_one])
    max_det = settings.max_det
    selected = node("NonMaxSuppression", [
        candidate_boxes, nms_scores, const([max_det], np.int64),
        const([iou_compare_threshold(settings.iou)], np.float32), const([-0.5], np.float32)], center_point_box=0)

    # Mark the kept candidates: keep (B, K) is 1 at each selected (batch, candidate).
    where = node("Gather", [selected, const([0, 2], np.int64)], axis=1)
    ones = node("ConstantOfShape", [node("Shape", [selected], start=0, end=1)],
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    zeros = node("ConstantOfShape", [node("Shape", [top_scores])],
                 value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    keep = node("ScatterND", [zeros, where, ones])
    kept_scores = node("Where", [node("Greater", [keep, const(0.5, np.float32)]), top_scores, minus_one])

    d = min(max_det, k)
    best_scores, best = node("TopK", [kept_scores, const([d], np.int64)], 2, axis=-1, largest=1, sorted=1)
    row = node("Greater", [best_scores, const(-0.5, np.float32)])  # a kept candidate (scores are >= 0)
    out_boxes = node("Where", [node("Unsqueeze", [row, const([2], np.int64)]),
                               node("GatherND", [candidate_boxes, node("Unsqueeze", [best, const([2], np.int64)])],
                                    batch_dims=1), zero_f])
    out_scores = node("Where", [row, best_scores, zero_f])
    out_classes = node("Where", [row, node("Cast", [node("GatherElements", [cls, best], axis=1)], to=TensorProto.INT32),
                                 const(0, np.int32)])
    count = node("Cast", [node("ReduceSum", [keep, const([1], np.int64)], keepdims=0)], to=TensorProto.INT32)
    count = node("Min", [count, const(max_det, np.int32)])
    if d < max_det:  # fewer candidates than max_det: pad the rows with zeros
        out_boxes = node("Pad", [out_boxes, const([0, 0, 0, 0, max_det - d, 0], np.int64)])
        out_scores = node("Pad", [out_scores, const([0, 0, 0, max_det - d], np.int64)])
        out_classes = node("Pad", [out_classes, const([0, 0, 0, max_det - d], np.int64)])
    for value, name in zip((out_boxes, out_scores, out_classes, count), DETECTION_OUTPUTS):
        nodes.append(helper.make_node("Identity", [value], [name], name=f"nms/{name}"))

    graph = model.graph
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    batch = graph.output[0].type.tensor_type.shape.dim[0]
    b = batch.dim_param or batch.dim_value
    graph.output.extend([
        helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, [b, max_det, 4]),
        helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, [b, max_det]),
        helper.make_tensor_value_info("detection_classes", TensorProto.INT32, [b, max_det]),
        helper.make_tensor_value_info("num_detections", TensorProto.INT32, [b]),
    ])
    return model
